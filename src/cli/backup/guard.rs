//! Undo actions that run however a job ends: error, panic (unwinding), or a signal (the
//! loops fail with "interrupted" and unwinding reaches here). Run in reverse order of
//! registration: thaw before destroying, clone before its snapshot.

type Undo = Box<dyn FnOnce() -> Result<(), String>>;

pub struct Guards {
    actions: Vec<(String, Undo)>,
}

impl Guards {
    pub fn new() -> Self {
        Guards {
            actions: Vec::new(),
        }
    }

    /// Registers an undo action; `what` names it in a warning if it fails.
    pub fn push(
        &mut self,
        what: impl Into<String>,
        f: impl FnOnce() -> Result<(), String> + 'static,
    ) {
        self.actions.push((what.into(), Box::new(f)));
    }

    /// Runs the most recent action now (e.g. thaw right after the snapshot).
    pub fn run_last(&mut self) -> Result<(), String> {
        match self.actions.pop() {
            Some((what, f)) => f().map_err(|e| format!("{what}: {e}")),
            None => Ok(()),
        }
    }

    /// Runs everything now, returning the failures.
    pub fn run_all(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        while let Some((what, f)) = self.actions.pop() {
            if let Err(e) = f() {
                failed.push(format!("{what}: {e}"));
            }
        }
        failed
    }
}

impl Drop for Guards {
    fn drop(&mut self) {
        for failure in self.run_all() {
            super::super::warn(format!("cleanup failed: {failure}"));
        }
    }
}
