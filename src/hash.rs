//! A fast, seeded hasher for the crate's own maps of ids and keys (the de-duplication windows, the
//! outcomes of acknowledged sends): one folded multiply per word, with a seed drawn per map, so that a peer
//! cannot choose keys that collide. About a third of std's SipHash on these paths; not for untrusted input
//! of unbounded length (it is not a cryptographic hash, and the seed is not secret from the process).

use std::hash::{BuildHasher, Hasher};

/// Builds [`FoldHasher`]s with this map's seed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FoldHash {
    seed: u64,
}

impl Default for FoldHash {
    fn default() -> Self {
        Self {
            seed: fastrand::u64(..),
        }
    }
}

impl BuildHasher for FoldHash {
    type Hasher = FoldHasher;

    fn build_hasher(&self) -> FoldHasher {
        FoldHasher {
            seed: self.seed,
            hash: 0,
        }
    }
}

/// The hasher of [`FoldHash`].
pub(crate) struct FoldHasher {
    seed: u64,
    hash: u64,
}

/// The two halves of a 128-bit product folded together: every input bit reaches the high and low bits.
#[inline]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let product = u128::from(a).wrapping_mul(u128::from(b));
    (product as u64) ^ ((product >> 64) as u64)
}

impl FoldHasher {
    #[inline]
    fn mix(&mut self, value: u64) {
        self.hash = folded_multiply(value ^ self.seed ^ self.hash, 0x9E37_79B9_7F4A_7C15);
    }
}

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        // The length too, so that "ab" + "c" and "a" + "bc" differ.
        self.mix(bytes.len() as u64);
    }

    #[inline]
    fn write_u8(&mut self, value: u8) {
        self.mix(u64::from(value));
    }

    #[inline]
    fn write_u16(&mut self, value: u16) {
        self.mix(u64::from(value));
    }

    #[inline]
    fn write_u32(&mut self, value: u32) {
        self.mix(u64::from(value));
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.mix(value);
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.mix(value as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        // A second round, so that keys differing only in a few high bits spread over the low ones too.
        folded_multiply(self.hash ^ self.seed.rotate_left(32), 0xF39C_C060_5CED_C835)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    use super::FoldHash;

    #[test]
    fn keys_spread_over_the_buckets_and_seeds_differ() {
        let hash = FoldHash::default();
        // Sequential keys, and keys that differ only in their high bits, land as random keys would: 10,000
        // into 4096 buckets fill about 3,740 of them.
        let low: HashSet<u64> = (0..10_000u64).map(|key| hash.hash_one(key) & 0xfff).collect();
        let high: HashSet<u64> = (0..10_000u64).map(|key| hash.hash_one(key << 40) & 0xfff).collect();
        assert!(
            low.len() > 3_600 && high.len() > 3_600,
            "{} and {} of 4096 buckets",
            low.len(),
            high.len()
        );
        let other = FoldHash::default();
        assert_ne!(hash.hash_one(7u64), other.hash_one(7u64), "a seed per map");
        assert_ne!(hash.hash_one(("ab", "c")), hash.hash_one(("a", "bc")));
    }
}
