//! How a backup run looks on the console: one line per event on stderr, a progress line on
//! a terminal, and the closing summary (one line per target, for the task log).

use super::super::progress::{progress_line, Progress};
use crate::backup::{Event, RunOutcome, Sink};
use crate::plan::BackupPlan;
use std::sync::Mutex;

pub struct Console {
    progress: bool,
    bar: Mutex<Option<Progress>>,
}

impl Console {
    pub fn new(progress: bool) -> Self {
        Console {
            progress,
            bar: Mutex::new(None),
        }
    }

    fn bar(&self) -> std::sync::MutexGuard<'_, Option<Progress>> {
        self.bar.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Sink for Console {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::TargetFailed(e) => eprintln!("proxborg: error: {}: {}", e.target, e.message),
            Event::Leftover(what) => eprintln!("proxborg: after an earlier, killed run: {what}"),
            Event::JobStarted {
                archive,
                requested_by,
            } => {
                eprintln!(
                    "proxborg: backing up {archive} ({})",
                    requested_by.join(", ")
                );
                *self.bar() = Some(Progress::new(self.progress));
            }
            Event::Warning { message, .. } => super::super::warn(message),
            Event::Note { message, .. } => eprintln!("proxborg: note: {message}"),
            Event::Progress { stats, .. } => {
                if let Some(bar) = self.bar().as_ref() {
                    bar.set(|| progress_line(stats));
                }
            }
            Event::JobFinished(r) => {
                if let Some(bar) = self.bar().take() {
                    bar.finish();
                }
                match (&r.stats, &r.error) {
                    (Some(s), _) => eprintln!(
                        "proxborg: {}: {} files, {} read, {} added",
                        r.archive,
                        s.files,
                        bytesize::ByteSize(s.original_size),
                        bytesize::ByteSize(s.added_size)
                    ),
                    (None, Some(e)) => eprintln!("proxborg: error: {}: {e}", r.archive),
                    (None, None) => {}
                }
            }
            Event::Pruned { archive } => eprintln!("proxborg: pruned {archive}"),
            Event::PruneFailed { archive, error } => {
                eprintln!("proxborg: error: pruning after {archive}: {error}")
            }
        }
    }
}

/// One line per target, whatever happened, for the task log.
pub fn summary(outcome: &RunOutcome, plan: &BackupPlan) {
    for r in &outcome.jobs {
        let status = match (r.ok, r.warnings) {
            (true, 0) => "ok      ".to_string(),
            (true, n) => format!("warnings ({n})"),
            (false, _) => "FAILED  ".to_string(),
        };
        eprintln!("proxborg: {status} {}", r.archive);
    }
    for e in &plan.errors {
        eprintln!("proxborg: FAILED   {} ({})", e.target, e.message);
    }
}
