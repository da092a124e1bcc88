//! `--bwlimit`: a backend wrapper that holds transfers to a rate with a token bucket, so no
//! caller needs a special case. Writes (`put`, `put_pipelined`) always count; reads (`get`,
//! `get_range`) count when the wrapper is made with `reads` (sync reads its source at the
//! limit too). Mutable names (`config`, lock objects via `replace`) and listings are not
//! throttled: they are small, and a lock refresh must never wait behind a pack.
//!
//! The bucket lets a transfer go at once and then owes its size: the next one waits until the
//! debt is paid at the rate, so a 32 MiB pack under a 1 MiB/s limit is followed by ~32 s of
//! waiting, and the average over any long run is the rate. Credit is capped at one second of
//! transfer, so an idle pause does not buy a burst. Arithmetic is exact (byte·nanoseconds in
//! integers); the clock is a value, so the unit tests run without sleeping.

use super::Backend;
use crate::repo::error::Result;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NANOS: i128 = 1_000_000_000;

/// A token bucket in byte·nanoseconds: `rate` bytes per second, at most one second of credit.
#[derive(Debug)]
pub struct Bucket {
    rate: u64,
    /// Credit (negative: debt) in bytes × 10⁹.
    credit: i128,
    last: Duration,
}

impl Bucket {
    /// `rate` bytes per second (at least 1); starts with one second of credit at `now`.
    pub fn new(rate: u64, now: Duration) -> Self {
        let rate = rate.max(1);
        Bucket {
            rate,
            credit: rate as i128 * NANOS,
            last: now,
        }
    }

    /// Takes `bytes` at time `now` (monotonic); returns how long the caller must wait before
    /// going on (zero while there is credit).
    pub fn take(&mut self, now: Duration, bytes: u64) -> Duration {
        let elapsed = now.saturating_sub(self.last).as_nanos() as i128;
        self.last = self.last.max(now);
        let cap = self.rate as i128 * NANOS;
        self.credit = (self.credit + elapsed * self.rate as i128).min(cap);
        self.credit -= bytes as i128 * NANOS;
        if self.credit >= 0 {
            return Duration::ZERO;
        }
        // ceil(debt / rate) nanoseconds
        let rate = self.rate as i128;
        let wait = (-self.credit + rate - 1) / rate;
        Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX))
    }
}

/// Time for the limiter: the real monotonic clock, or a test's.
pub trait Clock: Send + Sync {
    fn now(&self) -> Duration;
    fn sleep(&self, d: Duration);
}

pub struct RealClock(Instant);

impl Default for RealClock {
    fn default() -> Self {
        RealClock(Instant::now())
    }
}

impl Clock for RealClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}

/// One rate, shared by every backend wrapped with the same limiter.
pub struct Limiter {
    bucket: Mutex<Bucket>,
    clock: Arc<dyn Clock>,
}

impl Limiter {
    /// `kib_per_s` KiB/s on the real clock.
    pub fn new(kib_per_s: u64) -> Arc<Self> {
        Self::with_clock(
            kib_per_s.saturating_mul(1024),
            Arc::new(RealClock::default()),
        )
    }

    pub fn with_clock(bytes_per_s: u64, clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Limiter {
            bucket: Mutex::new(Bucket::new(bytes_per_s, clock.now())),
            clock,
        })
    }

    /// Accounts `bytes` and waits (outside the lock) for as long as the bucket says.
    fn pass(&self, bytes: usize) {
        let wait = {
            let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
            b.take(self.clock.now(), bytes as u64)
        };
        if !wait.is_zero() {
            self.clock.sleep(wait);
        }
    }
}

pub struct Throttled {
    inner: Arc<dyn Backend>,
    limiter: Arc<Limiter>,
    reads: bool,
}

impl Throttled {
    pub fn wrap(inner: Arc<dyn Backend>, limiter: Arc<Limiter>, reads: bool) -> Arc<dyn Backend> {
        Arc::new(Throttled {
            inner,
            limiter,
            reads,
        })
    }
}

impl Backend for Throttled {
    fn put(&self, key: &str, data: &[u8]) -> Result<bool> {
        self.limiter.pass(data.len());
        self.inner.put(key, data)
    }
    fn put_pipelined(&self, key: &str, data: &[u8]) -> Result<()> {
        self.limiter.pass(data.len());
        self.inner.put_pipelined(key, data)
    }
    fn settle(&self) -> Result<()> {
        self.inner.settle()
    }
    fn replace(&self, key: &str, data: &[u8]) -> Result<()> {
        self.inner.replace(key, data)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let data = self.inner.get(key)?;
        if self.reads {
            self.limiter.pass(data.len());
        }
        Ok(data)
    }
    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let data = self.inner.get_range(key, offset, len)?;
        if self.reads {
            self.limiter.pass(data.len());
        }
        Ok(data)
    }
    fn size(&self, key: &str) -> Result<u64> {
        self.inner.size(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }
    fn discard(&self, key: &str) -> Result<()> {
        self.inner.discard(key)
    }
    fn exists(&self, key: &str) -> Result<bool> {
        self.inner.exists(key)
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn canonical_location(&self) -> String {
        self.inner.canonical_location()
    }
    fn append_only(&self) -> bool {
        self.inner.append_only()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn credit_then_debt_paid_at_the_rate() {
        let mut b = Bucket::new(1000, Duration::ZERO);
        // one second of credit goes at once
        assert_eq!(b.take(Duration::ZERO, 1000), Duration::ZERO);
        // then 500 bytes owe half a second
        assert_eq!(b.take(Duration::ZERO, 500), S / 2);
        // the caller slept it: the debt is paid, the next 250 owe a quarter
        assert_eq!(b.take(S / 2, 250), S / 4);
        // a transfer far larger than the burst owes its whole size
        let mut b = Bucket::new(1000, Duration::ZERO);
        b.take(Duration::ZERO, 1000);
        assert_eq!(b.take(Duration::ZERO, 32_000), 32 * S);
    }

    #[test]
    fn idle_time_buys_at_most_one_second_of_credit() {
        let mut b = Bucket::new(1000, Duration::ZERO);
        b.take(Duration::ZERO, 1000);
        assert_eq!(b.take(100 * S, 1000), Duration::ZERO);
        assert_eq!(b.take(100 * S, 1), Duration::from_millis(1));
    }

    #[test]
    fn waits_round_up_and_a_clock_going_back_adds_nothing() {
        let mut b = Bucket::new(3, Duration::ZERO);
        b.take(Duration::ZERO, 3);
        // 1 byte at 3 B/s: 333_333_333.3 ns, rounded up
        assert_eq!(b.take(Duration::ZERO, 1), Duration::from_nanos(333_333_334));
        let mut b = Bucket::new(1000, 10 * S);
        b.take(10 * S, 1000);
        assert_eq!(b.take(5 * S, 1000), S);
    }

    /// A clock that advances only when slept on, recording the sleeps.
    #[derive(Default)]
    struct FakeClock(Mutex<(Duration, Vec<Duration>)>);
    impl Clock for FakeClock {
        fn now(&self) -> Duration {
            self.0.lock().unwrap().0
        }
        fn sleep(&self, d: Duration) {
            let mut g = self.0.lock().unwrap();
            g.0 += d;
            g.1.push(d);
        }
    }

    #[test]
    fn the_wrapper_counts_writes_and_reads_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(FakeClock::default());
        let limiter = Limiter::with_clock(100, clock.clone());
        let local: Arc<dyn Backend> = Arc::new(super::super::local::LocalDir::new(dir.path()));
        let writes_only = Throttled::wrap(local.clone(), limiter.clone(), false);
        writes_only.put("a", &[0; 100]).unwrap(); // the burst
        writes_only.put_pipelined("b", &[0; 50]).unwrap();
        writes_only.settle().unwrap();
        writes_only.get("a").unwrap(); // not counted
        assert_eq!(clock.0.lock().unwrap().1, [S / 2]);
        let both = Throttled::wrap(local, limiter, true);
        both.get_range("a", 0, 20).unwrap();
        assert_eq!(clock.0.lock().unwrap().1, [S / 2, S / 5]);
        assert_eq!(clock.now(), S / 2 + S / 5);
    }
}
