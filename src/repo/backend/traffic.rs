//! Bytes this process sent to and received from remote storage (ssh, S3), for `--stats`,
//! `--json` and the benchmarks: how much an unchanged backup costs on the wire.

use std::sync::atomic::{AtomicU64, Ordering};

static SENT: AtomicU64 = AtomicU64::new(0);
static RECEIVED: AtomicU64 = AtomicU64::new(0);

pub fn sent(bytes: u64) {
    SENT.fetch_add(bytes, Ordering::Relaxed);
}

pub fn received(bytes: u64) {
    RECEIVED.fetch_add(bytes, Ordering::Relaxed);
}

/// `(sent, received)` so far.
pub fn totals() -> (u64, u64) {
    (
        SENT.load(Ordering::Relaxed),
        RECEIVED.load(Ordering::Relaxed),
    )
}
