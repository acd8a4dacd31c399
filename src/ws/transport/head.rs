//! Finding the end of the upgrade's response head, so that the bytes after it are kept for the connection.

/// Finds the end of an HTTP response head, only for a `101 Switching Protocols` (other responses keep their
/// body as tungstenite reads it, for the error).
#[derive(Debug, Default)]
pub(crate) struct HeadScan {
    /// The first bytes, up to the status code.
    start: Vec<u8>,
    /// The last bytes seen, to find `\r\n\r\n` (or `\n\n`) across reads.
    tail: [u8; 3],
}

/// `HTTP/1.1 101` is 12 bytes.
const STATUS_END: usize = 12;

impl HeadScan {
    /// Scans `bytes`, just read; returns how many belong to the head if its end is among them.
    pub(crate) fn end_in(&mut self, bytes: &[u8]) -> Option<usize> {
        for (i, &byte) in bytes.iter().enumerate() {
            if self.start.len() < STATUS_END {
                self.start.push(byte);
            }
            let [a, b, c] = self.tail;
            let end = (c == b'\n' && byte == b'\n') || (a == b'\r' && b == b'\n' && c == b'\r' && byte == b'\n');
            self.tail = [b, c, byte];
            if end {
                return Some(i + 1);
            }
        }
        None
    }

    /// Whether the response is (still possibly) a `101`: only then is the head's end guarded.
    pub(crate) fn may_switch(&self) -> bool {
        let start = &self.start[..];
        let version_end = start.iter().position(|&b| b == b' ');
        match version_end {
            None => true,
            Some(space) => {
                let code = &start[space + 1..];
                b"101".starts_with(&code[..code.len().min(3)])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HeadScan;

    #[test]
    fn the_head_of_a_101_ends_at_the_blank_line_even_across_reads() {
        let response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi";
        let head = response.len() - 4;
        for split in 1..response.len() {
            let mut scan = HeadScan::default();
            let found = match scan.end_in(&response[..split]) {
                Some(end) => end,
                None => split + scan.end_in(&response[split..]).expect("the head ends"),
            };
            assert_eq!(found, head, "split at {split}");
            assert!(scan.may_switch());
        }
    }

    #[test]
    fn other_statuses_are_not_guarded() {
        let mut scan = HeadScan::default();
        assert_eq!(scan.end_in(b"HTTP/1.1 4"), None);
        assert!(!scan.may_switch());
        let mut scan = HeadScan::default();
        assert_eq!(scan.end_in(b"HTTP/1.1 10"), None);
        assert!(scan.may_switch(), "still possibly a 101");
        assert_eq!(scan.end_in(b"1 OK\n\nbody"), Some(6));
    }
}
