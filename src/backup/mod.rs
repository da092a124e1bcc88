//! The backup engine: runs a [`BackupPlan`] (or a single source for `create` and the vzdump
//! hook) through a [`Host`] and a [`Repository`], reporting through a [`Sink`] and returning
//! a typed outcome. Every front end (the CLI's `proxborg 100:`, `create`, `vzdump-hook`, and
//! later a PVE storage plugin or a server) calls these functions; none of them prints, reads
//! settings or maps exit codes: that is the front end's job.
//!
//! Host side effects are paired with undo actions in [`guards`]: whatever ends a job (an
//! error, an interrupt noticed at a checkpoint, a panic), the container is thawed first, then
//! mounts, clones and snapshots are released in reverse order, each once.

mod container;
mod create;
mod dataset;
mod drives;
mod dump;
pub mod events;
mod guards;
mod image;
mod provider;
mod provider_vm;
mod prune;
mod volumes;
mod zvol;

#[cfg(test)]
mod recording;
#[cfg(test)]
mod tests;

pub use create::{create, CreateRequest, CreateSource, Created};
pub use dump::{archive_dump, DumpRequest, DumpResult};
pub use events::{Event, JobResult, RunOutcome, Sink, Status, Stop};
pub use provider::{container_from_directory, ContainerDirRequest};
pub use provider_vm::{vm_from_images, VmDrive, VmImagesRequest};

use crate::files_cache::{FilesCache, Mode as FilesCacheMode};
use crate::host::{Host, HostError};
use crate::ingest::tree::TreeError;
use crate::ingest::IngestError;
use crate::item::Timestamp;
use crate::plan::{build_plan, BackupPlan, Job, PlanOptions};
use crate::repo::{Compression, Manifest, RepoError, Repository};
use crate::retention::Rules;
use events::JobReport;

/// vzdump's default excludes for container files (PVE-FACTS §2.4) and `lost+found`.
pub const VZDUMP_EXCLUDES: [&str; 4] = ["/tmp/?*", "/var/tmp/?*", "/var/run/?*.pid", "lost+found"];

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error(transparent)]
    Disk(#[from] crate::ingest::disk::DiskError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Name(#[from] crate::zfs::ZfsError),
    #[error(transparent)]
    Retention(#[from] crate::retention::UnreadableTime),
    #[error("interrupted")]
    Interrupted,
    /// The source or request cannot make an archive (said in the message).
    #[error("{0}")]
    Refused(String),
}

impl From<crate::vma::reader::ReadError> for BackupError {
    fn from(e: crate::vma::reader::ReadError) -> Self {
        BackupError::Refused(format!("vzdump's VMA stream: {e}"))
    }
}

/// How the files cache is used for this run (`--files-cache`, `--files-cache-ttl`).
#[derive(Clone, Copy, Debug)]
pub struct CacheOptions {
    pub mode: FilesCacheMode,
    pub ttl: u32,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            mode: FilesCacheMode::default(),
            ttl: 20,
        }
    }
}

/// Prune each series after its successful backup.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    pub rules: Rules,
    /// Prune even after a backup with warnings.
    pub on_warnings: bool,
}

/// Everything a guest backup run needs besides the plan (settings already merged).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub compression: Option<Compression>,
    /// The user's excludes (settings file and command line); container jobs add vzdump's.
    pub excludes: Vec<String>,
    pub files_cache: CacheOptions,
    /// Read containers through a fuse-overlayfs id-mapping mount instead of translating ids
    /// in-process.
    pub idmap_via_overlay: bool,
    pub prune: Option<PruneOptions>,
    pub exit_on_error: bool,
}

/// Plans a backup of `targets` from the host's PVE state and datasets (`--dry-run` prints
/// this and stops).
pub fn plan(
    host: &dyn Host,
    targets: &[String],
    options: &PlanOptions,
) -> Result<BackupPlan, HostError> {
    let state = host.pve_state()?;
    let datasets = host.datasets()?;
    Ok(build_plan(&state, &datasets, targets, options))
}

/// Removes what killed runs left on this host (also done at the start of every run).
pub fn cleanup(host: &dyn Host) -> Result<Vec<String>, HostError> {
    host.remove_leftovers()
}

/// What every job gets: the host, the repository, the options and its report.
struct JobCtx<'a> {
    host: &'a dyn Host,
    repo: &'a Repository,
    options: &'a Options,
    report: &'a JobReport<'a>,
}

impl JobCtx<'_> {
    /// Stops the job (its guards undo everything) once a signal has arrived.
    fn checkpoint(&self) -> Result<(), BackupError> {
        if self.host.interrupted() {
            Err(BackupError::Interrupted)
        } else {
            Ok(())
        }
    }

    fn files_cache(&self) -> FilesCache {
        files_cache(self.repo, self.options.files_cache)
    }
}

/// The files cache of this repository, loaded for a backup starting now.
fn files_cache(repo: &Repository, options: CacheOptions) -> FilesCache {
    let now = jiff::Timestamp::now();
    let start = Timestamp {
        secs: now.as_second(),
        nanos: now.subsec_nanosecond() as u32,
    };
    let path = crate::files_cache::cache_dir(&repo.config().id).join("files");
    FilesCache::load(path, options.mode, options.ttl, start)
}

/// Saves the files cache; a failure costs the next run time, not data: a warning.
fn save_files_cache(cache: FilesCache, report: &JobReport) {
    if let Err(e) = cache.save() {
        report.warn(format!(
            "files cache not saved (the next backup reads everything): {e}"
        ));
    }
}

/// Runs every job of `plan`, in order. A failed job does not stop the others unless
/// `exit_on_error`; an interrupt stops the run after undoing the current job. The repository
/// must be open with a shared lock held for the whole run.
pub fn run_plan(
    host: &dyn Host,
    repo: &mut Repository,
    plan: &BackupPlan,
    options: &Options,
    sink: &dyn Sink,
) -> Result<RunOutcome, BackupError> {
    let mut outcome = RunOutcome::default();
    for e in &plan.errors {
        sink.event(Event::TargetFailed(e));
        outcome.errors += 1;
    }
    for w in &plan.warnings {
        let message = format!("{}: {}", w.target, w.message);
        sink.event(Event::Warning {
            archive: None,
            message: &message,
        });
        outcome.warnings += 1;
    }
    if outcome.errors > 0 && options.exit_on_error {
        outcome.stopped = Some(Stop::ExitOnError);
        return Ok(outcome);
    }
    match host.remove_leftovers() {
        Ok(done) => done.iter().for_each(|d| sink.event(Event::Leftover(d))),
        Err(e) => {
            let message = format!("could not look for leftovers of killed runs: {e}");
            sink.event(Event::Warning {
                archive: None,
                message: &message,
            });
            outcome.warnings += 1;
        }
    }
    if host.interrupted() {
        outcome.stopped = Some(Stop::Interrupted);
        return Ok(outcome);
    }
    host.begin_run()?;
    let _run = EndRun(host);
    for job in &plan.jobs {
        if host.interrupted() {
            outcome.stopped = Some(Stop::Interrupted);
            break;
        }
        sink.event(Event::JobStarted {
            archive: job.archive(),
            requested_by: job.requested_by(),
        });
        let report = JobReport::new(sink, job.archive());
        let ctx = JobCtx {
            host,
            repo,
            options,
            report: &report,
        };
        let result = match job {
            Job::Image(j) => image::run(&ctx, j),
            Job::Zvol(j) => zvol::run(&ctx, j),
            Job::ContainerFiles(j) => container::run(&ctx, j, &plan.snapshot),
            Job::Dataset(j) => dataset::run(&ctx, j),
        };
        let warnings = report.warnings();
        outcome.warnings += warnings;
        let done = JobResult {
            archive: job.archive().to_string(),
            ok: result.is_ok(),
            warnings,
            error: result.as_ref().err().map(|e| events::one_line(e)),
            stats: result.as_ref().ok().map(|m| m.stats.clone()),
        };
        sink.event(Event::JobFinished(&done));
        outcome.jobs.push(done);
        match result {
            Ok(manifest) => {
                repo.reload_index()?;
                if host.interrupted() {
                    outcome.stopped = Some(Stop::Interrupted);
                    break;
                }
                if let Some(p) = &options.prune {
                    if let Err(e) = prune::after_backup(repo, &manifest, warnings, p, sink) {
                        let error = e.to_string();
                        sink.event(Event::PruneFailed {
                            archive: &manifest.name,
                            error: &error,
                        });
                        outcome.errors += 1;
                    }
                }
            }
            Err(_) => {
                outcome.errors += 1;
                if host.interrupted() {
                    outcome.stopped = Some(Stop::Interrupted);
                    break;
                }
                if options.exit_on_error {
                    outcome.stopped = Some(Stop::ExitOnError);
                    break;
                }
            }
        }
    }
    Ok(outcome)
}

/// Ends the host's run (removes its directory) however `run_plan` returns.
struct EndRun<'a>(&'a dyn Host);

impl Drop for EndRun<'_> {
    fn drop(&mut self) {
        self.0.end_run();
    }
}

/// The archive file's metadata every guest job starts from.
fn base_metadata(
    kind: &str,
    series: String,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut m = std::collections::BTreeMap::new();
    m.insert("kind".into(), kind.into());
    m.insert("series".into(), series.into());
    m
}

/// Keeps `Manifest` in the engine's vocabulary for the job modules.
type JobResultOf = Result<Manifest, BackupError>;
