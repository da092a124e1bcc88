//! Repository locks: small JSON objects under `locks/`, written through the backend so they
//! work wherever the repository lives (no flock, no rename tricks).
//!
//! Two kinds:
//! - `shared`: taken by every command that writes archives or relies on the index staying
//!   valid while it runs (`create`, `prune`, `delete`). Any number may coexist.
//! - `exclusive`: taken by the deletion phase of `compact`. It is written *before* waiting for
//!   shared holders to finish, so it also stops new shared holders from starting: a compact
//!   waiting for the lock is never starved by a loop of backups.
//!
//! The protocol relies only on "a write is visible to a later list": a shared taker writes its
//! lock, then lists; if it sees any exclusive lock it removes its own and retries. An exclusive
//! taker writes its lock, then lists until no other lock is left. Whatever the interleaving, the
//! two never both proceed.
//!
//! The rule that makes `compact` safe next to running backups lives in `compact.rs`: packs are
//! deleted only under the exclusive lock, after re-marking every archive written since the mark
//! started, so a blob a running `create` deduplicated against survives.
//!
//! Stale locks: a lock whose holder is a dead pid on this host, or that has not been refreshed
//! for `STALE_AFTER` (holders refresh every `REFRESH_EVERY`), is broken with a message.
//!
//! Lock objects are untrusted input: at most `MAX_LOCK` bytes are decoded, and their times may
//! be any `i64` (arithmetic on them saturates).

use super::backend::Backend;
use super::error::{RepoError, Result};
use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const REFRESH_EVERY: Duration = Duration::from_secs(60);
pub const STALE_AFTER: Duration = Duration::from_secs(15 * 60);
const POLL: Duration = Duration::from_millis(200);
/// Largest lock object decoded (a real one is about 150 bytes).
pub const MAX_LOCK: usize = 64 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    Shared,
    Exclusive,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub kind: LockKind,
    pub host: String,
    pub pid: u32,
    /// What the holder is doing (`create`, `compact`, ...), for messages.
    pub command: String,
    /// Unix seconds.
    pub created: i64,
    pub refreshed: i64,
}

impl LockInfo {
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} lock of `{}` (pid {} on {}, since {})",
            match self.kind {
                LockKind::Shared => "a shared",
                LockKind::Exclusive => "an exclusive",
            },
            self.command,
            self.pid,
            self.host,
            jiff::Timestamp::from_second(self.created)
                .map(|t| t.to_string())
                .unwrap_or_default()
        )
    }

    /// Why this lock is stale, if it is. The times come from storage: any `i64` is handled,
    /// and a refresh time further in the future than `STALE_AFTER` (no clock is that far off)
    /// makes the lock stale rather than binding forever.
    pub fn stale_reason(&self, this_host: &str, now: i64) -> Option<String> {
        if self.host == this_host && !pid_alive(self.pid) {
            return Some(format!("process {} no longer runs", self.pid));
        }
        let limit = STALE_AFTER.as_secs() as i64;
        let age = now.saturating_sub(self.refreshed);
        if age > limit {
            return Some(format!("not refreshed for {age} s"));
        }
        if age < -limit {
            return Some(format!(
                "refreshed {} s in the future",
                age.saturating_neg()
            ));
        }
        None
    }

    /// Decodes a lock object; larger than `MAX_LOCK` bytes is not a lock.
    pub fn decode(bytes: &[u8]) -> std::result::Result<LockInfo, String> {
        if bytes.len() > MAX_LOCK {
            return Err(format!(
                "{} bytes, over the {MAX_LOCK}-byte limit",
                bytes.len()
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// A held lock; released (its object deleted) on drop.
pub struct Lock {
    backend: Arc<dyn Backend>,
    key: String,
    /// Dropping it wakes the refresher at once (a polling sleep made every command wait up
    /// to 250 ms for it on exit).
    stop: Option<Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

impl Lock {
    /// Takes a lock, waiting up to `wait` for conflicting holders. `warn` receives one line per
    /// stale lock broken.
    pub fn acquire(
        backend: Arc<dyn Backend>,
        kind: LockKind,
        command: &str,
        wait: Duration,
        warn: &mut dyn FnMut(String),
    ) -> Result<Lock> {
        let host = host_name();
        let t = now();
        let info = LockInfo {
            kind,
            host: host.clone(),
            pid: std::process::id(),
            command: command.to_string(),
            created: t,
            refreshed: t,
        };
        let nonce: [u8; 8] = super::key::random_bytes()?;
        let key = format!(
            "locks/{}-{}",
            match kind {
                LockKind::Shared => "shared",
                LockKind::Exclusive => "exclusive",
            },
            super::id::hex(&nonce)
        );
        let deadline = Instant::now() + wait;
        loop {
            write_info(backend.as_ref(), &key, &info)?;
            let conflict = first_conflict(backend.as_ref(), &key, kind, &host, warn)?;
            let Some(other) = conflict else {
                return Ok(Lock::held(backend, key, info));
            };
            // A shared taker steps back so a waiting exclusive taker can proceed; an
            // exclusive taker keeps its lock in place so no new shared holder starts.
            if kind == LockKind::Shared {
                let _ = backend.delete(&key);
            }
            if Instant::now() >= deadline {
                let _ = backend.delete(&key);
                return Err(RepoError::Locked(format!(
                    "{}; gave up after waiting {} s (--lock-wait)",
                    other.describe(),
                    wait.as_secs()
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    fn held(backend: Arc<dyn Backend>, key: String, info: LockInfo) -> Lock {
        let (stop, stopped) = bounded::<()>(0);
        let refresher = {
            let (backend, key) = (backend.clone(), key.clone());
            std::thread::spawn(move || {
                let mut info = info;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH_EVERY) {
                    info.refreshed = now();
                    let _ = write_info(backend.as_ref(), &key, &info);
                }
            })
        };
        Lock {
            backend,
            key,
            stop: Some(stop),
            refresher: Some(refresher),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(r) = self.refresher.take() {
            let _ = r.join();
        }
        let _ = self.backend.discard(&self.key);
    }
}

fn write_info(backend: &dyn Backend, key: &str, info: &LockInfo) -> Result<()> {
    let bytes = serde_json::to_vec(info).map_err(|e| RepoError::Invalid(e.to_string()))?;
    backend.replace(key, &bytes)
}

/// The first live lock that conflicts with ours; stale ones are broken on the way.
fn first_conflict(
    backend: &dyn Backend,
    own: &str,
    kind: LockKind,
    host: &str,
    warn: &mut dyn FnMut(String),
) -> Result<Option<LockInfo>> {
    for key in backend.list("locks")? {
        if key == own {
            continue;
        }
        let info: LockInfo = match backend.get(&key) {
            Ok(bytes) => match LockInfo::decode(&bytes) {
                Ok(i) => i,
                Err(e) => {
                    warn(format!("removing unreadable lock {key}: {e}"));
                    let _ = backend.delete(&key);
                    continue;
                }
            },
            Err(RepoError::NotFound(_)) => continue, // released meanwhile
            Err(e) => return Err(e),
        };
        if let Some(why) = info.stale_reason(host, now()) {
            warn(format!("{} is stale ({why}); breaking it", info.describe()));
            let _ = backend.delete(&key);
            continue;
        }
        let conflicts = kind == LockKind::Exclusive || info.kind == LockKind::Exclusive;
        if conflicts {
            return Ok(Some(info));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::backend::local::LocalDir;

    fn backend() -> (tempfile::TempDir, Arc<dyn Backend>) {
        let d = tempfile::tempdir().unwrap();
        let b: Arc<dyn Backend> = Arc::new(LocalDir::new(d.path()));
        (d, b)
    }

    fn take(b: &Arc<dyn Backend>, kind: LockKind, wait_ms: u64) -> Result<Lock> {
        Lock::acquire(
            b.clone(),
            kind,
            "test",
            Duration::from_millis(wait_ms),
            &mut |_| {},
        )
    }

    #[test]
    fn shared_locks_coexist_and_exclusive_waits_for_them() {
        let (_d, b) = backend();
        let s1 = take(&b, LockKind::Shared, 0).unwrap();
        let _s2 = take(&b, LockKind::Shared, 0).unwrap();
        let err = take(&b, LockKind::Exclusive, 300).err().unwrap();
        assert!(err.to_string().contains("shared lock"), "{err}");
        assert!(err.to_string().contains("--lock-wait"), "{err}");
        drop(s1);
        drop(_s2);
        let x = take(&b, LockKind::Exclusive, 0).unwrap();
        assert!(take(&b, LockKind::Shared, 300).is_err());
        drop(x);
        assert!(b.list("locks").unwrap().is_empty(), "locks left behind");
    }

    #[test]
    fn a_waiting_exclusive_blocks_new_shared_takers() {
        let (_d, b) = backend();
        let s = take(&b, LockKind::Shared, 0).unwrap();
        let b2 = b.clone();
        let waiter = std::thread::spawn(move || take(&b2, LockKind::Exclusive, 5000).map(|_| ()));
        std::thread::sleep(Duration::from_millis(400));
        assert!(
            take(&b, LockKind::Shared, 0).is_err(),
            "new shared lock got past a waiting exclusive"
        );
        drop(s);
        waiter.join().unwrap().unwrap();
    }

    #[test]
    fn crafted_lock_times_do_not_overflow() {
        let info = |created, refreshed| LockInfo {
            kind: LockKind::Exclusive,
            host: "elsewhere".into(),
            pid: 1,
            command: "x".into(),
            created,
            refreshed,
        };
        for t in [i64::MIN, i64::MAX] {
            let l = info(t, t);
            assert!(l.stale_reason("here", now()).is_some(), "{t}");
            let _ = l.stale_reason("here", i64::MAX);
            let _ = l.stale_reason("here", i64::MIN);
            let _ = l.describe();
        }
        assert!(info(0, now()).stale_reason("here", now()).is_none());
        assert!(LockInfo::decode(&vec![b' '; MAX_LOCK + 1]).is_err());
    }

    #[test]
    fn stale_locks_are_broken_with_a_message() {
        let (_d, b) = backend();
        let dead = LockInfo {
            kind: LockKind::Exclusive,
            host: host_name(),
            pid: 999_999_999,
            command: "compact".into(),
            created: now(),
            refreshed: now(),
        };
        write_info(b.as_ref(), "locks/exclusive-dead", &dead).unwrap();
        let old = LockInfo {
            host: "elsewhere".into(),
            pid: 1,
            refreshed: now() - 3600,
            ..dead.clone()
        };
        write_info(b.as_ref(), "locks/exclusive-old", &old).unwrap();
        let mut msgs = Vec::new();
        let l = Lock::acquire(b.clone(), LockKind::Shared, "t", Duration::ZERO, &mut |m| {
            msgs.push(m)
        })
        .unwrap();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs.iter().any(|m| m.contains("no longer runs")));
        assert!(msgs.iter().any(|m| m.contains("not refreshed")));
        drop(l);
    }
}
