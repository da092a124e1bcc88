//! Running a plan's jobs against the host and the repository.

use super::guard::Guards;
use super::Args;
use crate::cli::create_tree::{ingest_dir, TreeSource};
use crate::cli::progress::Progress;
use crate::cli::{access, warn, Global, Outcome};
use crate::files_cache::FilesCache;
use crate::host::interrupt;
use crate::host::runner::StreamChild;
use crate::host::{guest, zfs as hzfs};
use crate::ingest::ArchiveBuilder;
use crate::item::{Item, Kind, Timestamp};
use crate::plan::{BackupPlan, DatasetJob, FilesJob, ImageJob, Job};
use crate::repo::Repository;
use crate::zfs::argv::Destroyable;
use crate::zfs::SnapshotName;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// vzdump's default excludes (PVE-FACTS §2.4) and `lost+found`.
const VZDUMP_EXCLUDES: [&str; 4] = ["/tmp/?*", "/var/tmp/?*", "/var/run/?*.pid", "lost+found"];

/// Run directories live in `RUN_BASE/<pid>`: a directory whose process is gone is a dead run's.
pub(super) const RUN_BASE: &str = "/run/proxborg";

struct Ctx<'a> {
    args: &'a Args,
    repo: &'a Repository,
    run_id: String,
    run_dir: PathBuf,
    excludes: Vec<String>,
    progress: Progress,
}

pub fn execute(global: &Global, args: &Args, plan: &BackupPlan) -> Result<Outcome> {
    interrupt::install().context("installing signal handlers")?;
    let host = crate::repo::lock::host_name();
    let mut warnings = 0u64;
    let mut errors = 0u64;
    for e in &plan.errors {
        eprintln!("proxborg: error: {}: {}", e.target, e.message);
        errors += 1;
    }
    for w in &plan.warnings {
        warn(format!("{}: {}", w.target, w.message));
        warnings += 1;
    }
    if errors > 0 && args.exit_on_error {
        bail!("stopping: {errors} targets cannot be backed up (--exit-on-error)");
    }
    match hzfs::cleanup_dead_runs(&host) {
        Ok(removed) => {
            for r in removed {
                warn(format!("removed a leftover of an earlier, killed run: {r}"));
            }
        }
        Err(e) => warn(format!("could not look for leftovers of killed runs: {e}")),
    }
    let (mut repo, _lock, damaged) = access::open_locked(global, "backup")?;
    warnings += damaged;
    for r in remove_dead_run_dirs(Path::new(RUN_BASE)) {
        warn(format!("after an earlier, killed run: {r}"));
    }
    let run_dir = Path::new(RUN_BASE).join(std::process::id().to_string());
    std::fs::create_dir_all(&run_dir).with_context(|| run_dir.display().to_string())?;
    let _run_dir_guard = RemoveDir(run_dir.clone());
    let conf = access::settings()?;
    let excludes: Vec<String> = VZDUMP_EXCLUDES
        .iter()
        .map(|s| s.to_string())
        .chain(conf.excludes.iter().cloned())
        .chain(args.exclude.iter().cloned())
        .collect();
    let mut results = Vec::new();
    for job in &plan.jobs {
        let ctx = Ctx {
            args,
            repo: &repo,
            run_id: hzfs::run_id(&host),
            run_dir: run_dir.clone(),
            excludes: excludes.clone(),
            progress: Progress::new(args.progress),
        };
        eprintln!(
            "proxborg: backing up {} ({})",
            job.archive(),
            job.requested_by().join(", ")
        );
        let outcome = match job {
            Job::Image(j) => image(&ctx, j),
            Job::ContainerFiles(j) => container_files(&ctx, j, &plan.snapshot),
            Job::Dataset(j) => dataset(&ctx, j),
        };
        ctx.progress.finish();
        match outcome {
            Ok(w) => {
                warnings += w;
                results
                    .push(serde_json::json!({"archive": job.archive(), "ok": true, "warnings": w}));
                repo.reload_index()?;
                if interrupt::interrupted() {
                    bail!("interrupted");
                }
                prune_after(args, &repo, job, w)?;
            }
            Err(e) => {
                errors += 1;
                eprintln!(
                    "proxborg: error: {}: {}",
                    job.archive(),
                    super::super::one_line(&e)
                );
                results.push(serde_json::json!({"archive": job.archive(), "ok": false, "error": format!("{e:#}")}));
                if interrupt::interrupted() {
                    bail!("interrupted; snapshots, clones and freezes were undone");
                }
                if args.exit_on_error {
                    break;
                }
            }
        }
    }
    // One line per target, whatever happened, for the task log.
    for r in &results {
        let status = match (r["ok"].as_bool(), r["warnings"].as_u64()) {
            (Some(true), Some(0)) => "ok      ".to_string(),
            (Some(true), Some(n)) => format!("warnings ({n})"),
            _ => "FAILED  ".to_string(),
        };
        eprintln!(
            "proxborg: {status} {}",
            r["archive"].as_str().unwrap_or_default()
        );
    }
    for e in &plan.errors {
        eprintln!("proxborg: FAILED   {} ({})", e.target, e.message);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    if errors > 0 {
        bail!(
            "{errors} of {} backups failed",
            plan.jobs.len() + plan.errors.len()
        );
    }
    Ok(if warnings > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    })
}

/// In a run directory, `frozen-<vmid>` says the run has frozen container <vmid> and not yet
/// thawed it.
const FROZEN_MARKER: &str = "frozen-";

/// Run directories of killed runs: containers they left frozen are thawed, their overlay
/// mounts unmounted, and only empty directories are removed (a clone still mounted there keeps
/// its directory until its dataset is destroyed). Returns what was done, for the log.
pub(super) fn remove_dead_run_dirs(base: &Path) -> Vec<String> {
    let mut done = Vec::new();
    let Ok(entries) = std::fs::read_dir(base) else {
        return done;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Ok(subs) = std::fs::read_dir(e.path()) {
            for sub in subs.flatten() {
                let sub_name = sub.file_name().to_string_lossy().into_owned();
                if let Some(vmid) = sub_name
                    .strip_prefix(FROZEN_MARKER)
                    .and_then(|v| v.parse::<u32>().ok())
                {
                    if guest::ct_state(vmid).ok() == Some(guest::CtState::Frozen) {
                        match guest::thaw(vmid) {
                            Ok(()) => done.push(format!("thawed container {vmid}")),
                            Err(e) => {
                                done.push(format!("could not thaw container {vmid}: {e}"));
                                continue;
                            }
                        }
                    }
                    let _ = std::fs::remove_file(sub.path());
                    continue;
                }
                if sub_name.starts_with("ovl") {
                    let _ = crate::host::overlay::unmount_once(&sub.path());
                    let _ = std::fs::remove_dir_all(sub.path().join("upper"));
                    let _ = std::fs::remove_dir_all(sub.path().join("work"));
                }
                let _ = std::fs::remove_dir(sub.path());
            }
        }
        let _ = std::fs::remove_dir(e.path());
    }
    done
}

struct RemoveDir(PathBuf);
impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn files_cache(ctx: &Ctx) -> FilesCache {
    crate::cli::create::files_cache(ctx.repo, ctx.args.files_cache, ctx.args.files_cache_ttl)
}

fn compression(ctx: &Ctx) -> Result<Option<crate::repo::Compression>> {
    Ok(ctx.args.compression.or(access::settings()?.compression))
}

fn base_metadata(kind: &str, series: String) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    m.insert("kind".into(), kind.into());
    m.insert("series".into(), series.into());
    m
}

/// `vzdump --stdout` streamed into one entry.
fn image(ctx: &Ctx, job: &ImageJob) -> Result<u64> {
    let argv: Vec<String> = [
        "vzdump",
        &job.vmid.0.to_string(),
        "--stdout",
        "--compress",
        "0",
        "--mode",
        "snapshot",
        "--dumpdir",
        &ctx.run_dir.to_string_lossy(),
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut child = StreamChild::spawn(&argv)?;
    let mut builder = ArchiveBuilder::new(ctx.repo, compression(ctx)?);
    let mut item = Item::new(job.archive.as_bytes().to_vec(), Kind::File);
    let now = jiff::Timestamp::now();
    item.mode = 0o600;
    item.mtime = Timestamp {
        secs: now.as_second(),
        nanos: now.subsec_nanosecond() as u32,
    };
    item.atime = item.mtime;
    item.ctime = item.mtime;
    let stored = builder.add(item, Some(&mut child), false)?;
    child.finish().context("vzdump")?;
    if stored.size == 0 {
        bail!("vzdump produced no output; no archive written");
    }
    let kind = job.guest_kind.as_str();
    let mut meta = base_metadata(kind, format!("{kind}-{}", job.vmid.0));
    meta.insert("vmid".into(), job.vmid.0.into());
    meta.insert(
        "hostname".into(),
        job.hostname.clone().unwrap_or_default().into(),
    );
    meta.insert("format".into(), "vzdump".into());
    let (_, m) = builder.finish(&job.archive, meta)?;
    eprintln!(
        "proxborg: {}: {} read, {} added",
        job.archive,
        bytesize::ByteSize(m.stats.original_size),
        bytesize::ByteSize(m.stats.added_size)
    );
    Ok(m.stats.warnings)
}

/// Where a snapshot can be read: its `.zfs/snapshot` directory where the dataset has one,
/// else a read-only clone mounted in the run directory (destroyed by the guards).
fn readable(
    ctx: &Ctx,
    guards: &mut Guards,
    snap: &SnapshotName,
    mountpoint: Option<&Path>,
    n: usize,
) -> Result<PathBuf> {
    if let Some(mp) = mountpoint {
        let dir = mp.join(".zfs/snapshot").join(snap.snap());
        if dir.is_dir() {
            return Ok(dir);
        }
    }
    let ds = snap.dataset();
    let parent = ds.parent().unwrap_or_else(|| ds.clone());
    let clone_name = format!(
        "{}{}-{}",
        crate::zfs::CLONE_PREFIX,
        ds.leaf(),
        snap.snap().trim_start_matches(crate::zfs::SNAPSHOT_PREFIX)
    );
    let clone = parent.child(&clone_name)?;
    let mount = ctx.run_dir.join(format!("vol{n}"));
    std::fs::create_dir_all(&mount)?;
    hzfs::clone_readonly(snap, &clone, &mount, &ctx.run_id)?;
    let c = clone.clone();
    guards.push(format!("destroy clone {clone}"), move || {
        hzfs::destroy(&Destroyable::Clone(c)).map_err(|e| e.to_string())
    });
    Ok(mount)
}

fn snapshot_guard(guards: &mut Guards, snaps: &[SnapshotName]) {
    for s in snaps {
        let s = s.clone();
        guards.push(format!("destroy snapshot {s}"), move || {
            hzfs::destroy(&Destroyable::Snapshot(s)).map_err(|e| e.to_string())
        });
    }
}

fn dataset(ctx: &Ctx, job: &DatasetJob) -> Result<u64> {
    let mut guards = Guards::new();
    let snaps = [job.snapshot.clone()];
    hzfs::snapshot_set(&snaps, &ctx.run_id)?;
    snapshot_guard(&mut guards, &snaps);
    let path = readable(ctx, &mut guards, &job.snapshot, Some(&job.path), 0)?;
    let mut builder = ArchiveBuilder::new(ctx.repo, compression(ctx)?);
    let mut cache = files_cache(ctx);
    let guid = hzfs::guid(&job.dataset)?;
    let no_excludes: Vec<String> = access::settings()?
        .excludes
        .iter()
        .chain(&ctx.args.exclude)
        .cloned()
        .collect();
    ingest_dir(
        &mut builder,
        &TreeSource {
            root: &path,
            source_id: format!("zfs-guid:{guid}"),
            prefix: Vec::new(),
            excludes: &no_excludes,
            one_file_system: true,
            idmap: None,
            lower: None,
        },
        &mut cache,
        &ctx.progress,
    )?;
    let mut meta = base_metadata("dataset", format!("dataset-{}", job.dataset));
    meta.insert("datasets".into(), vec![job.dataset.to_string()].into());
    meta.insert("snapshot".into(), job.snapshot.to_string().into());
    meta.insert("path".into(), job.path.to_string_lossy().into());
    let (_, m) = builder.finish(&job.archive, meta)?;
    if let Err(e) = cache.save() {
        warn(format!("files cache not saved: {e}"));
    }
    report(&m);
    Ok(m.stats.warnings)
}

fn report(m: &crate::repo::Manifest) {
    eprintln!(
        "proxborg: {}: {} files, {} read, {} added",
        m.name,
        m.stats.files,
        bytesize::ByteSize(m.stats.original_size),
        bytesize::ByteSize(m.stats.added_size)
    );
}

fn container_files(ctx: &Ctx, job: &FilesJob, snapshot: &str) -> Result<u64> {
    let mut guards = Guards::new();
    // Skipped mountpoints were reported (and counted) with the plan's warnings.
    let warnings = 0;
    // Freeze, sync, snapshot every volume (one call per pool), thaw at once.
    let running = guest::ct_state(job.vmid.0)? == guest::CtState::Running;
    if running {
        let vmid = job.vmid.0;
        // The marker outlives a SIGKILL: `cleanup` (or the next run) thaws a container that a
        // dead run left frozen. Written before the freeze so that no kill can come between.
        let marker = ctx.run_dir.join(format!("{FROZEN_MARKER}{vmid}"));
        std::fs::write(&marker, b"").with_context(|| marker.display().to_string())?;
        if let Err(e) = guest::freeze(vmid) {
            let _ = std::fs::remove_file(&marker);
            return Err(e.into());
        }
        guards.push(format!("thaw container {vmid}"), move || {
            guest::thaw(vmid).map_err(|e| e.to_string())?;
            let _ = std::fs::remove_file(&marker);
            Ok(())
        });
    }
    rustix::fs::sync();
    let mut taken = Vec::new();
    let mut result = Ok(());
    for group in job.snapshots_by_pool() {
        match hzfs::snapshot_set(&group, &ctx.run_id) {
            Ok(atomic) => {
                if !atomic && group.len() > 1 {
                    warn(format!(
                        "container {}: this zfs takes one snapshot per call: the {} snapshots were taken one by one while the container was frozen, not atomically",
                        job.vmid.0,
                        group.len()
                    ));
                }
                taken.extend(group);
            }
            Err(e) => {
                result = Err(anyhow!(e));
                break;
            }
        }
    }
    // Snapshot guards go below the thaw guard so the thaw happens first, now.
    if running {
        guards.run_last().map_err(|e| anyhow!(e))?;
    }
    snapshot_guard(&mut guards, &taken);
    result?;
    if interrupt::interrupted() {
        bail!("interrupted");
    }
    let mut builder = ArchiveBuilder::new(ctx.repo, compression(ctx)?);
    add_vzdump_files(&mut builder, job)?;
    let mut cache = files_cache(ctx);
    let overlay = match ctx.args.idmap_via {
        super::IdmapVia::Overlay => job.idmap.fuse_overlayfs_options(),
        super::IdmapVia::InProcess => None,
    };
    for (n, vol) in job.volumes.iter().enumerate() {
        let mut path = readable(
            ctx,
            &mut guards,
            &vol.snapshot,
            vol.mountpoint.as_deref(),
            n,
        )?;
        let mut lower = None;
        if let Some(mapping) = &overlay {
            lower = Some(path.clone());
            let mnt = ctx.run_dir.join(format!("ovl{n}"));
            let scratch = ctx.run_dir.join(format!("ovl{n}-scratch"));
            crate::host::overlay::mount_idmapped(&path, &scratch, &mnt, mapping)?;
            let m = mnt.clone();
            guards.push(format!("unmount {}", mnt.display()), move || {
                crate::host::overlay::unmount(&m).map_err(|e| e.to_string())
            });
            path = mnt;
        }
        let guid = hzfs::guid(&vol.dataset)?;
        ingest_dir(
            &mut builder,
            &TreeSource {
                root: &path,
                source_id: format!("zfs-guid:{guid}"),
                prefix: vol.archive_path.as_bytes().to_vec(),
                excludes: &ctx.excludes,
                one_file_system: true,
                idmap: Some(&job.idmap),
                lower: lower.as_deref(),
            },
            &mut cache,
            &ctx.progress,
        )?;
    }
    let mut meta = base_metadata("lxc", format!("lxc-{}-files", job.vmid.0));
    meta.insert("vmid".into(), job.vmid.0.into());
    meta.insert(
        "hostname".into(),
        job.hostname.clone().unwrap_or_default().into(),
    );
    meta.insert("unprivileged".into(), job.unprivileged.into());
    meta.insert(
        "datasets".into(),
        job.volumes
            .iter()
            .map(|v| v.dataset.to_string())
            .collect::<Vec<_>>()
            .into(),
    );
    meta.insert("snapshot".into(), snapshot.into());
    let (_, m) = builder.finish(&job.archive, meta)?;
    if let Err(e) = cache.save() {
        warn(format!("files cache not saved: {e}"));
    }
    report(&m);
    Ok(warnings + m.stats.warnings)
}

/// `./etc/vzdump/pct.conf` and `./etc/vzdump/pct.fw` lead the archive as in vzdump's,
/// owned as vzdump's tar records them.
fn add_vzdump_files(builder: &mut ArchiveBuilder, job: &FilesJob) -> Result<()> {
    let (uid, gid) = job.vzdump_file_owner();
    let now = jiff::Timestamp::now();
    let t = Timestamp {
        secs: now.as_second(),
        nanos: 0,
    };
    for (name, text) in [
        ("etc/vzdump/pct.conf", &job.pct_conf),
        ("etc/vzdump/pct.fw", &job.pct_fw),
    ] {
        let mut item = Item::new(name.as_bytes().to_vec(), Kind::File);
        item.mode = 0o644;
        item.uid = uid;
        item.gid = gid;
        item.mtime = t;
        item.atime = t;
        item.ctime = t;
        builder.add(item, Some(&mut text.as_bytes()), false)?;
    }
    Ok(())
}

fn prune_after(args: &Args, repo: &Repository, job: &Job, warnings: u64) -> Result<()> {
    let conf = access::settings()?;
    if !(args.prune || conf.prune) {
        return Ok(());
    }
    if warnings > 0 && !(args.prune_on_warnings || conf.prune_on_warnings) {
        warn(format!(
            "{}: not pruning after a backup with warnings (--prune-on-warnings)",
            job.archive()
        ));
        return Ok(());
    }
    let mut rules = args.keep.rules();
    if rules.is_empty() {
        rules = conf.keep.clone();
    }
    if rules.is_empty() {
        bail!("--prune needs keep rules (--keep-daily etc., or keep-* in the settings file)");
    }
    let (archives, _) = repo.archives()?;
    let Some((_, me)) = archives.iter().find(|(_, m)| m.name == job.archive()) else {
        return Ok(());
    };
    let series = crate::retention::series_key(&me.name, &me.metadata);
    let members: Vec<_> = archives
        .iter()
        .filter(|(_, m)| crate::retention::series_key(&m.name, &m.metadata) == series)
        .collect();
    // The same rules and decisions as `proxborg prune`, on this archive's series alone.
    let decisions = crate::cli::prune::decide(&members, &rules, true)?;
    for ((id, m), d) in members.iter().zip(decisions) {
        if !d.keep {
            repo.delete_archive(id)?;
            eprintln!("proxborg: pruned {}", m.name);
        }
    }
    Ok(())
}
