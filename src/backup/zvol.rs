//! A VM read from its zvols (`--vm-mode`, docs/ZVOL.md): if it runs with the guest agent on,
//! its filesystems are frozen through the agent; one `zfs snapshot` per pool takes all its
//! disks; the thaw follows at once. Each disk is then read with `zfs send`: incrementally from
//! this repository's bookmark when the archive that bookmark marks is still here and fits,
//! in full otherwise (with a warning when an incremental was due). The archive has the shape
//! of a VMA-made one (`drives.rs`), so `export-vma`, `restore`, `mount` and the plugin's
//! restore work on it. Once the archive is stored, each snapshot becomes the disk's new
//! bookmark (unless PVE snapshots forbid it, `zfs::zvol`) and the snapshots are destroyed.

use super::drives::{add_config, drives_metadata};
use super::guards::Guards;
use super::provider_vm::previous_drives;
use super::volumes::{snapshot_groups, thaw_and_hold};
use super::{base_metadata, BackupError, JobCtx, JobResultOf};
use crate::host::ZvolSnapshot;
use crate::ingest::disk::{chunks_by_index, DiskStats};
use crate::ingest::zvol::{ingest_send_stream, SendBase, SendFigures, ZvolError};
use crate::ingest::ArchiveBuilder;
use crate::item::{ChunkRef, Item, Timestamp};
use crate::plan::{ZvolDisk, ZvolJob};
use crate::pve::vzdump::vma_device_name;
use crate::zfs::zvol::{
    base_is_usable, bookmark_for, bookmark_prefix, bookmarks_to_remove, may_move_bookmark,
    rollback_blockers, BookmarkName, Point,
};
use serde::{Deserialize, Serialize};

/// What an archive records per zvol, so that the next run can start from it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(super) struct ZvolRecord {
    /// `drive-scsi0`.
    pub drive: String,
    pub dataset: String,
    /// The guid of the snapshot read: a bookmark made from it has the same guid.
    pub guid: u64,
    /// The bookmark left after this archive, `None` when it could not move (PVE snapshots).
    pub bookmark: Option<String>,
    /// The bookmark this run read from; `None`: a full read.
    pub incremental_from: Option<String>,
    pub stream_bytes: u64,
    pub written: u64,
    pub touched_chunks: u64,
    pub block_size: u32,
}

/// Where an incremental starts: the bookmark and the archive it marks.
struct Base {
    bookmark: BookmarkName,
    guid: u64,
    chunks: Vec<Option<ChunkRef>>,
}

pub(super) fn run(ctx: &JobCtx, job: &ZvolJob) -> JobResultOf {
    let host = ctx.host;
    let vmid = job.vmid;
    let prefix = bookmark_prefix(&ctx.repo.config().id);
    let mut guards = Guards::new(ctx.report);
    let running = host.vm_running(vmid)?;
    ctx.checkpoint()?;
    let frozen = running && freeze(ctx, job);
    if frozen {
        guards.push(
            format!("thaw the filesystems of VM {}", vmid.0),
            move || host.agent_thaw(vmid),
        );
    }
    let snapped = snapshot_groups(ctx, job.snapshots_by_pool(), &format!("VM {}", vmid.0));
    thaw_and_hold(ctx, &mut guards, frozen, snapped)?;

    let mut builder = ArchiveBuilder::new(ctx.repo, ctx.options.compression);
    let now = now();
    add_config(
        &mut builder,
        "qemu-server.conf",
        job.qemu_conf.as_bytes(),
        now,
    )?;
    if let Some(fw) = job.qemu_fw.as_deref().filter(|f| !f.is_empty()) {
        add_config(&mut builder, "qemu-server.fw", fw.as_bytes(), now)?;
    }
    let previous = zvol_archives(ctx, job)?;
    let mut stats = Vec::new();
    let mut records = Vec::new();
    let mut moves = Vec::new();
    for disk in &job.disks {
        ctx.checkpoint()?;
        let info = host.zvol_snapshot(&disk.snapshot)?;
        let points = host.zvol_points(&disk.dataset)?;
        ctx.checkpoint()?;
        let base = find_base(ctx, &builder, &previous, disk, &points, info.volsize)?;
        let (item, s, figures, from) = read_disk(ctx, &mut builder, disk, info, base)?;
        builder.add_stored(item)?;
        let bookmark = if may_move_bookmark(&points) {
            let b = bookmark_for(&disk.snapshot, &prefix)?;
            moves.push((disk, Some(b.clone()), points));
            Some(b.to_string())
        } else {
            ctx.report.note(format!(
                "{}: {} has snapshots of its own: proxborg keeps its bookmark older than them, so that `qm rollback` works; the next backup reads what changed since {}",
                disk.key,
                disk.dataset,
                from.as_deref().unwrap_or("a full read")
            ));
            moves.push((disk, None, points));
            None
        };
        records.push(ZvolRecord {
            drive: vma_device_name(&disk.key),
            dataset: disk.dataset.to_string(),
            guid: info.guid,
            bookmark,
            incremental_from: from,
            stream_bytes: figures.stream_bytes,
            written: figures.written,
            touched_chunks: figures.touched_chunks,
            block_size: figures.block_size,
        });
        stats.push(s);
        ctx.checkpoint()?;
    }
    let mut meta = base_metadata("qemu", format!("qemu-{}", vmid.0));
    meta.insert("vmid".into(), vmid.0.into());
    meta.insert(
        "hostname".into(),
        job.hostname.clone().unwrap_or_default().into(),
    );
    meta.insert("format".into(), "drives".into());
    meta.insert("drives".into(), drives_metadata(&stats));
    meta.insert("source".into(), "zvol".into());
    meta.insert(
        "zvols".into(),
        serde_json::to_value(&records).unwrap_or_default(),
    );
    let (_, manifest) = builder.finish(&job.archive, meta)?;
    // The archive is stored: only now may the bookmarks move (a bookmark must always mark
    // an archive that exists). A failure here costs the next run a full read, not data.
    for (disk, bookmark, points) in moves {
        move_bookmark(ctx, disk, bookmark.as_ref(), &points, &prefix);
    }
    Ok(manifest)
}

/// Freezes a running VM's filesystems through its guest agent when its config allows; says
/// why not otherwise. Like vzdump (`qga_fs_freeze`, docs/QM-GUEST.md §2): an agent that does
/// not answer or a guest someone else froze is left alone, and a failed freeze is a warning,
/// not the end of the backup. Returns whether this run froze it (and must thaw it).
fn freeze(ctx: &JobCtx, job: &ZvolJob) -> bool {
    let vmid = job.vmid.0;
    let crash = "the disks are crash-consistent, as after a power cut";
    if !job.agent {
        ctx.report
            .note(format!("VM {vmid}: no guest agent (agent: 1): {crash}"));
        return false;
    }
    if !job.freeze_fs {
        ctx.report.note(format!(
            "VM {vmid}: freeze-fs=0 in its agent option: {crash}"
        ));
        return false;
    }
    match ctx.host.agent_frozen(job.vmid) {
        Err(e) => {
            ctx.report.note(format!(
                "VM {vmid}: the guest agent does not answer ({e}): {crash}"
            ));
            false
        }
        Ok(true) => {
            ctx.report.note(format!(
                "VM {vmid}: its filesystems are already frozen (by someone else): left as they are"
            ));
            false
        }
        // a signal meanwhile: freeze nothing, the snapshot step stops the job
        Ok(false) if ctx.host.interrupted() => false,
        Ok(false) => match ctx.host.agent_freeze(job.vmid) {
            Ok(()) => true,
            Err(e) => {
                ctx.report.warn(format!(
                    "VM {vmid}: the guest agent could not freeze its filesystems ({e}): {crash}"
                ));
                false
            }
        },
    }
}

fn now() -> Timestamp {
    let now = jiff::Timestamp::now();
    Timestamp {
        secs: now.as_second(),
        nanos: now.subsec_nanosecond() as u32,
    }
}

/// This VM's zvol-mode archives, newest first, with what they recorded per zvol.
fn zvol_archives(
    ctx: &JobCtx,
    job: &ZvolJob,
) -> Result<Vec<(String, Vec<ZvolRecord>)>, BackupError> {
    let series = format!("qemu-{}", job.vmid.0);
    let (archives, _) = ctx.repo.archives()?;
    let mut out: Vec<(String, Vec<ZvolRecord>)> = archives
        .into_iter()
        .filter(|(_, m)| {
            m.metadata.get("series").and_then(|v| v.as_str()) == Some(series.as_str())
                && m.metadata.get("source").and_then(|v| v.as_str()) == Some("zvol")
        })
        .map(|(_, m)| {
            let records = m
                .metadata
                .get("zvols")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            (m.name, records)
        })
        .collect();
    out.reverse();
    Ok(out)
}

/// The base of an incremental read of `disk`: the newest archive that left a bookmark for
/// it, if that bookmark is still there with its guid and the archive's entry fits. Says why
/// when an incremental was due and cannot be done.
fn find_base(
    ctx: &JobCtx,
    builder: &ArchiveBuilder,
    previous: &[(String, Vec<ZvolRecord>)],
    disk: &ZvolDisk,
    points: &[Point],
    volsize: u64,
) -> Result<Option<Base>, BackupError> {
    let drive = vma_device_name(&disk.key);
    let last = previous.iter().find_map(|(archive, records)| {
        records
            .iter()
            .find(|r| r.drive == drive && r.dataset == disk.dataset.as_str())
            .and_then(|r| r.bookmark.clone().map(|b| (archive, b, r.guid)))
    });
    let Some((archive, name, guid)) = last else {
        return Ok(None); // the first zvol-mode backup of this disk
    };
    let full = |why: String| {
        ctx.report.warn(format!(
            "{}: cannot read incrementally from {name} ({why}): reading all of it",
            disk.key
        ));
        Ok(None)
    };
    if !base_is_usable(points, &name, guid) {
        return full(format!(
            "it is gone or is not the one archive {archive} left: destroyed, or the zvol was rolled back or replaced"
        ));
    }
    let Ok(bookmark) = BookmarkName::parse(&name) else {
        return full("not a proxborg bookmark name".into());
    };
    let entries = match previous_drives(ctx.repo, archive) {
        Ok(e) => e,
        Err(e) => return full(format!("archive {archive}: {e}")),
    };
    let Some(item) = entries.get(&drive) else {
        return full(format!("archive {archive} has no {drive}"));
    };
    let chunks = match chunks_by_index(item, volsize) {
        Ok(c) => c,
        Err(e) => {
            return full(format!(
                "archive {archive}'s {drive}: {e} (volsize changed?)"
            ))
        }
    };
    if !builder.has_blobs(&item.chunks) {
        return full(format!("archive {archive}'s {drive} lost chunks"));
    }
    Ok(Some(Base {
        bookmark,
        guid,
        chunks,
    }))
}

/// Reads one disk from its snapshot: from `base` if given, falling back to a full read when
/// the incremental stream or the base cannot be used.
fn read_disk(
    ctx: &JobCtx,
    builder: &mut ArchiveBuilder,
    disk: &ZvolDisk,
    info: ZvolSnapshot,
    base: Option<Base>,
) -> Result<(Item, DiskStats, SendFigures, Option<String>), BackupError> {
    if let Some(b) = base {
        match send_once(ctx, builder, disk, info, Some(&b)) {
            Ok((item, stats, figures)) => {
                return Ok((item, stats, figures, Some(b.bookmark.to_string())))
            }
            Err(ZvolError::Stream(why) | ZvolError::Base(why)) => {
                ctx.checkpoint()?;
                ctx.report.warn(format!(
                    "{}: the incremental read from {} failed ({why}): reading all of it",
                    disk.key, b.bookmark
                ));
            }
            Err(e) => return Err(zvol_error(e)),
        }
    }
    let (item, stats, figures) = send_once(ctx, builder, disk, info, None).map_err(zvol_error)?;
    Ok((item, stats, figures, None))
}

fn zvol_error(e: ZvolError) -> BackupError {
    match e {
        ZvolError::Store(d) => BackupError::Disk(d),
        ZvolError::Interrupted => BackupError::Interrupted,
        e => BackupError::Refused(e.to_string()),
    }
}

/// One `zfs send` of `disk`'s snapshot, read to its end; `zfs send` must then exit 0.
fn send_once(
    ctx: &JobCtx,
    builder: &mut ArchiveBuilder,
    disk: &ZvolDisk,
    info: ZvolSnapshot,
    base: Option<&Base>,
) -> Result<(Item, DiskStats, SendFigures), ZvolError> {
    if ctx.host.interrupted() {
        return Err(ZvolError::Interrupted);
    }
    let mut stream = ctx
        .host
        .zfs_send(&disk.snapshot, base.map(|b| &b.bookmark))
        .map_err(|e| ZvolError::Stream(e.to_string()))?;
    let send_base = base.map(|b| SendBase {
        from_guid: b.guid,
        chunks: &b.chunks,
    });
    let repo = ctx.repo;
    let mut fetch = |r: &ChunkRef| repo.read_blob(&r.id).map_err(|e| e.to_string());
    let name = format!("{}.raw", vma_device_name(&disk.key));
    let out = ingest_send_stream(
        builder,
        &mut fetch,
        &mut stream,
        &name,
        info.volsize,
        info.guid,
        send_base.as_ref(),
        now(),
    )?;
    stream
        .finish()
        .map_err(|e| ZvolError::Stream(format!("zfs send: {e}")))?;
    Ok(out)
}

/// Leaves `bookmark` (when given) on the disk's snapshot and removes this repository's other
/// bookmarks of the disk (`points`, listed before the read), and any that a foreign
/// snapshot predates. Failures are warnings: the next run then reads the disk in full. A
/// PVE snapshot taken during this run leaves the new bookmark newer than it; the next run
/// removes it (its `points` show the snapshot).
fn move_bookmark(
    ctx: &JobCtx,
    disk: &ZvolDisk,
    bookmark: Option<&BookmarkName>,
    points: &[Point],
    prefix: &str,
) {
    let host = ctx.host;
    if let Some(b) = bookmark {
        if let Err(e) = host.bookmark(&disk.snapshot, b) {
            ctx.report.warn(format!(
                "{}: could not leave bookmark {b} (the next backup reads all of it): {e}",
                disk.key
            ));
            return;
        }
    }
    // Without a new bookmark the newest of ours stays: the base of the next incremental.
    let keep = match bookmark {
        Some(b) => Some(b.to_string()),
        None => points
            .iter()
            .filter(|p| p.bookmark && p.short().starts_with(prefix))
            .max_by_key(|p| p.createtxg)
            .map(|p| p.name.clone()),
    };
    for old in bookmarks_to_remove(points, prefix, keep.as_deref()) {
        if let Err(e) = host.destroy_bookmark(&old) {
            ctx.report.warn(format!(
                "{}: could not remove bookmark {old}: {e}",
                disk.key
            ));
        }
    }
    let others: Vec<String> = rollback_blockers(points)
        .into_iter()
        .filter(|p| !p.short().starts_with(prefix))
        .map(|p| p.name.clone())
        .collect();
    if !others.is_empty() {
        ctx.report.note(format!(
            "{}: bookmarks newer than a snapshot make `qm rollback` to it fail; not proxborg's: {}",
            disk.key,
            others.join(", ")
        ));
    }
}
