//! Undo actions that run however a job ends: an error, a panic (unwinding) or a signal (the
//! engine's checkpoints fail with "interrupted" and unwinding reaches here). They run in
//! reverse order of registration, each exactly once: thaw before destroying, unmount before
//! destroying the clone, the clone before its snapshot. A failed undo is a warning naming
//! what was left; `proxborg cleanup` finds it by its run id.

use super::events::JobReport;
use crate::host::HostError;

type Undo<'a> = Box<dyn FnOnce() -> Result<(), HostError> + 'a>;

pub(super) struct Guards<'a> {
    actions: Vec<(String, Undo<'a>)>,
    report: &'a JobReport<'a>,
}

impl<'a> Guards<'a> {
    pub fn new(report: &'a JobReport<'a>) -> Self {
        Guards {
            actions: Vec::new(),
            report,
        }
    }

    /// Registers an undo action; `what` names it in a warning if it fails.
    pub fn push(
        &mut self,
        what: impl Into<String>,
        f: impl FnOnce() -> Result<(), HostError> + 'a,
    ) {
        self.actions.push((what.into(), Box::new(f)));
    }

    /// Runs the most recent action now (the thaw, right after the snapshots).
    pub fn run_last(&mut self) -> Result<(), HostError> {
        match self.actions.pop() {
            Some((_, f)) => f(),
            None => Ok(()),
        }
    }
}

impl Drop for Guards<'_> {
    fn drop(&mut self) {
        while let Some((what, f)) = self.actions.pop() {
            if let Err(e) = f() {
                self.report.warn(format!("cleanup failed: {what}: {e}"));
            }
        }
    }
}
