//! `proxborg [backup] TARGET...`: the main job's command line. Merges flags with the
//! settings file, plans through the engine (`--dry-run` prints the plan), runs the plan with
//! the real host and shows what happens (`report`). Exit 0 all fine, 1 warnings, 2 errors
//! (per target; the run goes on unless `--exit-on-error`), 130 interrupted.

mod report;

use super::prune::KeepArgs;
use super::{access, Global, Outcome};
use crate::backup::{self, CacheOptions, Options, PruneOptions, Status, Stop};
use crate::files_cache::Mode as FilesCacheMode;
use crate::host::RealHost;
use crate::plan::{render_plan, BackupPlan, Job, PlanOptions};
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
    /// How VMs are read: auto (with `zfs send` from their zvols when every disk is a zvol on
    /// zfspool storage, through vzdump otherwise), zvol, or vzdump
    #[arg(long, value_enum, default_value = "auto")]
    pub vm_mode: VmModeArg,
    /// Show progress (on a terminal only)
    #[arg(long)]
    pub progress: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum VmModeArg {
    #[default]
    Auto,
    Zvol,
    Vzdump,
}

impl From<VmModeArg> for crate::plan::VmMode {
    fn from(m: VmModeArg) -> Self {
        match m {
            VmModeArg::Auto => crate::plan::VmMode::Auto,
            VmModeArg::Zvol => crate::plan::VmMode::Zvol,
            VmModeArg::Vzdump => crate::plan::VmMode::Vzdump,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum IdmapVia {
    #[default]
    InProcess,
    Overlay,
}

pub(super) fn pve_root() -> Result<PathBuf> {
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
    let host = RealHost::new(pve_root()?);
    let plan = backup::plan(
        &host,
        &args.targets,
        &PlanOptions {
            now: jiff::Zoned::now(),
            hostname_in_name: args.hostname_in_name || conf.hostname_in_name,
            vm_mode: args.vm_mode.into(),
        },
    )?;
    if args.dry_run {
        return print_plan(&plan, args.json);
    }
    let options = options(&args)?;
    crate::host::interrupt::install().context("installing signal handlers")?;
    let (mut repo, _lock, damaged) = access::open_for_backup(global, "backup")?;
    let console = report::Console::new(args.progress);
    let outcome = backup::run_plan(&host, &mut repo, &plan, &options, &console)?;
    if outcome.stopped == Some(Stop::ExitOnError) && outcome.jobs.is_empty() {
        bail!(
            "stopping: {} targets cannot be backed up (--exit-on-error)",
            plan.errors.len()
        );
    }
    report::summary(&outcome, &plan);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome.jobs)?);
    }
    match outcome.status() {
        Status::Interrupted => bail!("interrupted; snapshots, clones and freezes were undone"),
        Status::Failed => bail!(
            "{} of {} backups failed",
            outcome.errors,
            outcome.attempted(plan.errors.len())
        ),
        Status::Warnings => Ok(Outcome::Warnings),
        Status::Success if damaged > 0 => Ok(Outcome::Warnings),
        Status::Success => Ok(Outcome::Success),
    }
}

/// The engine's options: flags first, then the settings file.
fn options(args: &Args) -> Result<Options> {
    let conf = access::settings()?;
    let prune = if args.prune || conf.prune {
        let mut rules = args.keep.rules();
        if rules.is_empty() {
            rules = conf.keep.clone();
        }
        if rules.is_empty() {
            bail!("--prune needs keep rules (--keep-daily etc., or keep-* in the settings file)");
        }
        Some(PruneOptions {
            rules,
            on_warnings: args.prune_on_warnings || conf.prune_on_warnings,
        })
    } else {
        None
    };
    Ok(Options {
        compression: args.compression.or(conf.compression),
        excludes: conf.excludes.iter().chain(&args.exclude).cloned().collect(),
        files_cache: CacheOptions {
            mode: args.files_cache,
            ttl: args.files_cache_ttl,
        },
        idmap_via_overlay: args.idmap_via == IdmapVia::Overlay,
        prune,
        exit_on_error: args.exit_on_error,
    })
}

/// `proxborg cleanup`: leftovers of dead runs on this host, nothing else.
pub fn cleanup() -> Result<Outcome> {
    let removed = backup::cleanup(&RealHost::new(pve_root()?))?;
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
