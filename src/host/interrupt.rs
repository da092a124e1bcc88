//! SIGINT, SIGTERM and SIGHUP become a flag: long loops (the walker, content reads, vzdump
//! streams) check it and fail with "interrupted", so every guard on the way out runs
//! (thaw, destroy clone, destroy snapshot) before the process exits with 130. Registered
//! child programs (vzdump) get SIGTERM at once so a blocked read returns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Starts the watcher thread (idempotent enough: call once from main).
pub fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::spawn(move || {
        for sig in signals.forever() {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                // A second signal: the user insists. Leave now; `proxborg cleanup` (run at
                // the start of every backup) removes what the guards did not get to.
                std::process::exit(128 + sig);
            }
            eprintln!("proxborg: interrupted, cleaning up (signal again to quit at once)");
            for pid in CHILDREN.lock().map(|c| c.clone()).unwrap_or_default() {
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
            }
        }
    });
    Ok(())
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` once a signal arrived, for use inside `Read` implementations.
pub fn check_io() -> std::io::Result<()> {
    if interrupted() {
        // Not ErrorKind::Interrupted: std's read loops retry that kind forever.
        Err(std::io::Error::other("interrupted by a signal"))
    } else {
        Ok(())
    }
}

pub fn register_child(pid: u32) {
    if let Ok(mut c) = CHILDREN.lock() {
        c.push(pid);
    }
}

pub fn unregister_child(pid: u32) {
    if let Ok(mut c) = CHILDREN.lock() {
        c.retain(|&p| p != pid);
    }
}

/// A reader that stops with an error once the process is interrupted.
pub struct Interruptible<R>(pub R);

impl<R: std::io::Read> std::io::Read for Interruptible<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        check_io()?;
        self.0.read(buf)
    }
}
