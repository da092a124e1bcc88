//! Background puts for backends whose every put is a network round trip (S3): `submit` queues
//! an object for a small pool of threads and returns, `settle` waits until all are stored and
//! gives the first error. Memory is bounded: at most `workers + queue` objects are held, and
//! `submit` waits when the queue is full.

use crate::repo::error::{RepoError, Result};
use crossbeam_channel::{bounded, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// What a worker runs for each object: the backend's ordinary `put`.
pub type PutFn = Arc<dyn Fn(&str, &[u8]) -> Result<bool> + Send + Sync>;

#[derive(Default)]
struct State {
    pending: usize,
    error: Option<RepoError>,
    /// The first error's text, kept after `settle` took the error itself, so later submits
    /// still refuse until the caller has seen it.
    failed: Option<String>,
}

pub struct PutPool {
    tx: Option<Sender<(String, Vec<u8>)>>,
    state: Arc<(Mutex<State>, Condvar)>,
    threads: Vec<JoinHandle<()>>,
}

impl PutPool {
    pub fn new(workers: usize, queue: usize, put: PutFn) -> Self {
        let (tx, rx) = bounded::<(String, Vec<u8>)>(queue);
        let state = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let threads = (0..workers.max(1))
            .map(|_| {
                let rx = rx.clone();
                let state = state.clone();
                let put = put.clone();
                std::thread::spawn(move || {
                    for (key, data) in rx {
                        let outcome = put(&key, &data);
                        let (lock, done) = &*state;
                        let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
                        if let Err(e) = outcome {
                            if s.failed.is_none() {
                                s.failed = Some(e.to_string());
                                s.error = Some(e);
                            }
                        }
                        s.pending -= 1;
                        done.notify_all();
                    }
                })
            })
            .collect();
        PutPool {
            tx: Some(tx),
            state,
            threads,
        }
    }

    /// Queues `data` under `key`. Refuses once any earlier put failed, so a dead endpoint does
    /// not make the caller queue (and retry) everything it still has.
    pub fn submit(&self, key: &str, data: &[u8]) -> Result<()> {
        {
            let mut s = self.lock();
            if let Some(why) = &s.failed {
                return Err(RepoError::Worker(why.clone()));
            }
            s.pending += 1;
        }
        let sent = self
            .tx
            .as_ref()
            .map(|tx| tx.send((key.to_string(), data.to_vec())).is_ok());
        if sent != Some(true) {
            self.lock().pending -= 1;
            return Err(RepoError::Worker("the upload threads are gone".into()));
        }
        Ok(())
    }

    /// Waits for every submitted put; the first error of any (reported once).
    pub fn settle(&self) -> Result<()> {
        let (lock, done) = &*self.state;
        let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
        while s.pending > 0 {
            s = done.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        match s.error.take() {
            Some(e) => Err(e),
            None => match &s.failed {
                Some(why) => Err(RepoError::Worker(why.clone())),
                None => Ok(()),
            },
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for PutPool {
    fn drop(&mut self) {
        drop(self.tx.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn settles_all_and_reports_the_first_error_then_refuses() {
        let stored = Arc::new(AtomicUsize::new(0));
        let s2 = stored.clone();
        let pool = PutPool::new(
            3,
            2,
            Arc::new(move |key: &str, _: &[u8]| {
                if key == "bad" {
                    return Err(RepoError::Invalid("no".into()));
                }
                s2.fetch_add(1, Ordering::SeqCst);
                Ok(true)
            }),
        );
        for i in 0..20 {
            pool.submit(&format!("k{i}"), b"x").unwrap();
        }
        pool.settle().unwrap();
        assert_eq!(stored.load(Ordering::SeqCst), 20);
        pool.submit("bad", b"x").unwrap();
        assert!(matches!(pool.settle(), Err(RepoError::Invalid(_))));
        assert!(pool.submit("k99", b"x").is_err(), "a failed pool refuses");
        assert!(pool.settle().is_err(), "and keeps saying so");
    }
}
