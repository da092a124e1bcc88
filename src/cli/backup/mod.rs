//! `proxborg [backup] TARGET...`: the main job. Reads the PVE state, plans (pure, `plan`),
//! prints the plan with `--dry-run`, or runs each job with guards that undo snapshots, clones
//! and freezes on every exit path. Exit 0 all fine, 1 warnings, 2 errors (per target; the run
//! goes on unless `--exit-on-error`).

mod guard;
mod jobs;

use super::prune::KeepArgs;
use super::{access, Global, Outcome};
use crate::files_cache::Mode as FilesCacheMode;
use crate::plan::{build_plan, render_plan, BackupPlan, Job, PlanOptions};
use crate::pve::PveState;
use crate::repo::Compression;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Default)]
pub struct Args {
    /// What to back up: 100 (vzdump image), tank (by hostname), @pool, 100: (container files
    /// from ZFS snapshots), tank:! (every volume), /rpool/data/ds (a dataset). Default: the
    /// `targets:` line of the settings file
    pub targets: Vec<String>,
    /// Print the plan and touch nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Print the plan (with --dry-run) or the results as JSON
    #[arg(long)]
    pub json: bool,
    /// Put the guest's hostname first in archive names
    #[arg(long)]
    pub hostname_in_name: bool,
    /// Stop at the first failed target
    #[arg(long)]
    pub exit_on_error: bool,
    /// Compression for new data: none, zstd,N or auto,zstd,N
    #[arg(long)]
    pub compression: Option<Compression>,
    /// Leave out paths matching PATTERN (on top of vzdump's default excludes)
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// See `create --files-cache`
    #[arg(long, value_name = "MODE", default_value = "ctime,size,inode")]
    pub files_cache: FilesCacheMode,
    #[arg(long, value_name = "RUNS", default_value_t = 20)]
    pub files_cache_ttl: u32,
    /// Prune each series after its successful backups (keep rules from the flags or the
    /// settings file)
    #[arg(long)]
    pub prune: bool,
    /// Prune even when the backup finished with warnings
    #[arg(long)]
    pub prune_on_warnings: bool,
    #[command(flatten)]
    pub keep: KeepArgs,
    /// How container ids are recorded: translated in-process (default), or read through a
    /// fuse-overlayfs mount with uidmapping/gidmapping
    #[arg(long, value_enum, default_value = "in-process")]
    pub idmap_via: IdmapVia,
    /// Show progress (on a terminal only)
    #[arg(long)]
    pub progress: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum IdmapVia {
    #[default]
    InProcess,
    Overlay,
}

pub fn pve_root() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("PROXBORG_PVE_ROOT") {
        return Ok(PathBuf::from(p));
    }
    Ok(access::settings()?
        .pve_root
        .clone()
        .unwrap_or_else(|| PathBuf::from("/etc/pve")))
}

pub fn run(global: &Global, mut args: Args) -> Result<Outcome> {
    let conf = access::settings()?;
    if args.targets.is_empty() {
        args.targets = conf.targets.clone();
    }
    if args.targets.is_empty() {
        bail!(
            "no targets: give some (e.g. `proxborg 100:`) or set targets: in {}",
            crate::settings::default_path().display()
        );
    }
    let root = pve_root()?;
    let state = PveState::load(&root)
        .with_context(|| format!("reading the PVE state under {}", root.display()))?;
    let datasets = crate::host::zfs::list().context("listing ZFS datasets")?;
    let plan = build_plan(
        &state,
        &datasets,
        &args.targets,
        &PlanOptions {
            now: jiff::Zoned::now(),
            hostname_in_name: args.hostname_in_name || conf.hostname_in_name,
        },
    );
    if args.dry_run {
        return print_plan(&plan, args.json);
    }
    jobs::execute(global, &args, &plan)
}

/// `proxborg cleanup`: leftovers of dead runs on this host, nothing else.
pub fn cleanup() -> Result<Outcome> {
    // Thaw first: a container frozen by a killed run is down for its users right now.
    let mut removed = jobs::remove_dead_run_dirs(std::path::Path::new(jobs::RUN_BASE));
    removed.extend(
        crate::host::zfs::cleanup_dead_runs(&crate::repo::lock::host_name())?
            .into_iter()
            .map(|r| format!("removed {r}")),
    );
    // Emptied only now: a clone mounted in a run directory kept it until its destroy.
    jobs::remove_dead_run_dirs(std::path::Path::new(jobs::RUN_BASE));
    for r in &removed {
        eprintln!("proxborg: {r}");
    }
    if removed.is_empty() {
        eprintln!("proxborg: nothing to clean up");
    }
    Ok(Outcome::Success)
}

fn print_plan(plan: &BackupPlan, json: bool) -> Result<Outcome> {
    if json {
        println!("{}", serde_json::to_string_pretty(plan)?);
    } else {
        print!("{}", render_plan(plan));
    }
    if !plan.errors.is_empty() {
        if !json {
            for e in &plan.errors {
                eprintln!("proxborg: error: {}: {}", e.target, e.message);
            }
        }
        bail!("{} targets cannot be backed up", plan.errors.len());
    }
    let skipped_warnings = plan.jobs.iter().any(|j| match j {
        Job::ContainerFiles(f) => f
            .skipped
            .iter()
            .any(|s| !matches!(s.reason, crate::plan::SkipReason::BackupDisabled)),
        _ => false,
    });
    Ok(if plan.warnings.is_empty() && !skipped_warnings {
        Outcome::Success
    } else {
        Outcome::Warnings
    })
}
