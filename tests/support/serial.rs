//! For test binaries whose tests run on real time: one test at a time, so that the timing bounds and the
//! resource figures of one are not disturbed by another.

#![allow(dead_code, unreachable_pub)]

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Holds the binary's one lock for the duration of a test (a panicked test does not poison it for the others).
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
