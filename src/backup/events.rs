//! What the engine tells its front end: events as they happen (a [`Sink`]), and a typed
//! [`RunOutcome`] at the end. The front end (the CLI, later a PVE plugin or a server) turns
//! them into text, JSON, progress bars and exit codes; nothing in the engine prints.

use crate::plan::TargetError;
use crate::repo::ArchiveStats;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// Receives events on the thread that runs the engine (and, for ingest warnings, on the
/// thread that adds entries: hence `Sync`).
pub trait Sink: Sync {
    fn event(&self, event: Event<'_>);
}

#[derive(Debug)]
pub enum Event<'a> {
    /// A target that the plan could not turn into a job.
    TargetFailed(&'a TargetError),
    /// Something a killed run had left was removed (or could not be).
    Leftover(&'a str),
    JobStarted {
        archive: &'a str,
        requested_by: &'a [String],
    },
    /// A soft problem: the job goes on and ends "with warnings" (exit 1). `archive` is the
    /// job's, or `None` for the run as a whole.
    Warning {
        archive: Option<&'a str>,
        message: &'a str,
    },
    /// Worth knowing, not a problem (the exit status stays 0).
    Note {
        archive: Option<&'a str>,
        message: &'a str,
    },
    Progress {
        archive: &'a str,
        stats: &'a ArchiveStats,
    },
    JobFinished(&'a JobResult),
    /// An archive deleted by `--prune` after its series' backup.
    Pruned {
        archive: &'a str,
    },
    /// Pruning after a successful backup failed (the backup itself stands).
    PruneFailed {
        archive: &'a str,
        error: &'a str,
    },
}

/// How one job ended.
#[derive(Clone, Debug, Serialize)]
pub struct JobResult {
    pub archive: String,
    pub ok: bool,
    /// Soft problems of this job (each was also sent as an `Event::Warning`).
    pub warnings: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<ArchiveStats>,
}

/// Why a run stopped before its last job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// A signal: everything the run had created was undone.
    Interrupted,
    /// `--exit-on-error` and a target or job failed.
    ExitOnError,
}

#[derive(Debug, Default)]
pub struct RunOutcome {
    pub jobs: Vec<JobResult>,
    /// Failed targets and jobs (prune failures included).
    pub errors: u64,
    /// Soft problems of the whole run, jobs' included.
    pub warnings: u64,
    pub stopped: Option<Stop>,
}

/// How a run ended, in the order that decides the exit status: an interrupt beats errors,
/// errors beat warnings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    Warnings,
    Failed,
    Interrupted,
}

impl RunOutcome {
    /// Jobs planned plus targets that could not be planned: "N of M backups failed".
    pub fn attempted(&self, plan_errors: usize) -> usize {
        self.jobs.len() + plan_errors
    }

    pub fn status(&self) -> Status {
        if self.stopped == Some(Stop::Interrupted) {
            Status::Interrupted
        } else if self.errors > 0 {
            Status::Failed
        } else if self.warnings > 0 {
            Status::Warnings
        } else {
            Status::Success
        }
    }
}

/// An error and its causes on one line, without repeating a cause the message already has
/// (the typed errors below the CLI often include their source in their own message).
pub fn one_line(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out.replace('\n', " ")
}

/// One job's reporting: forwards to the sink with the job's archive name and counts the
/// warnings, so every warning reaches the exit status.
pub(super) struct JobReport<'a> {
    sink: &'a dyn Sink,
    archive: &'a str,
    warnings: AtomicU64,
}

impl<'a> JobReport<'a> {
    pub fn new(sink: &'a dyn Sink, archive: &'a str) -> Self {
        JobReport {
            sink,
            archive,
            warnings: AtomicU64::new(0),
        }
    }

    pub fn warn(&self, message: impl AsRef<str>) {
        self.warnings.fetch_add(1, Ordering::Relaxed);
        self.sink.event(Event::Warning {
            archive: Some(self.archive),
            message: message.as_ref(),
        });
    }

    pub fn note(&self, message: impl AsRef<str>) {
        self.sink.event(Event::Note {
            archive: Some(self.archive),
            message: message.as_ref(),
        });
    }

    pub fn warnings(&self) -> u64 {
        self.warnings.load(Ordering::Relaxed)
    }
}

impl crate::ingest::Observer for JobReport<'_> {
    fn warning(&self, message: String) {
        self.warn(message);
    }

    fn progress(&self, stats: &ArchiveStats) {
        self.sink.event(Event::Progress {
            archive: self.archive,
            stats,
        });
    }
}
