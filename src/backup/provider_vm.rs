//! A VM archive from the disks PVE's backup-provider API hands over (`file-handle`
//! mechanism): vzdump has set up QEMU's backup access and gives, per drive, a file on the
//! device's frozen state and, when its dirty bitmap is reused, the regions written since the
//! previous backup. The archive has the shape `proxborg VMID` gives a VMA (`drives.rs`):
//! `qemu-server.conf`, `qemu-server.fw` when present, one sparse `drive-<dev>.raw` per drive
//! in fixed, aligned 4 MiB chunks. With dirty regions only the chunks they touch are read;
//! every other chunk is the previous archive's, taken over unread. A drive whose previous
//! entry is missing or cut differently is read whole (with a warning), never patched blindly.
//! This module never talks to QEMU or changes a disk: that is vzdump's part.

use super::create::ensure_new_archive_name;
use super::drives::{add_config, drives_metadata};
use super::events::{Event, Sink};
use super::{base_metadata, BackupError, Created};
use crate::ingest::disk::{chunks_by_index, ingest_image_incremental, plan_incremental};
use crate::ingest::ArchiveBuilder;
use crate::item::{ChunkRef, Extent, Item, Timestamp};
use crate::pve::conf::parse_guest_config;
use crate::pve::{GuestKind, Vmid};
use crate::repo::item_stream::ItemStreamReader;
use crate::repo::{Compression, Repository};
use std::collections::HashMap;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub struct VmDrive {
    /// The device name (`drive-scsi0`); the entry is `<name>.raw`.
    pub name: String,
    /// A file or block device with the drive's content (PVE: the nbdfuse file).
    pub path: PathBuf,
    /// The device size (PVE's `size`); by default the file's.
    pub size: Option<u64>,
    /// The regions written since the previous archive; `None`: read everything.
    pub dirty: Option<Vec<Extent>>,
}

pub struct VmImagesRequest {
    pub name: String,
    pub vmid: Vmid,
    /// `qemu-server.conf` as vzdump assembled it (with its `#qmdump#map:` lines).
    pub qemu_conf: String,
    pub qemu_fw: Option<String>,
    pub drives: Vec<VmDrive>,
    /// The archive the dirty regions are relative to.
    pub previous: Option<String>,
    pub compression: Option<Compression>,
}

pub fn vm_from_images(
    repo: &Repository,
    request: VmImagesRequest,
    sink: &dyn Sink,
) -> Result<Created, BackupError> {
    ensure_new_archive_name(repo, &request.name)?;
    let conf = parse_guest_config(
        GuestKind::Qemu,
        request.vmid,
        Path::new("qemu-server.conf"),
        &request.qemu_conf,
    )
    .map_err(|e| BackupError::Refused(format!("guest config: {e}")))?;
    let mut warnings = 0u64;
    let mut warn = |message: String| {
        warnings += 1;
        sink.event(Event::Warning {
            archive: Some(&request.name),
            message: &message,
        });
    };
    let previous = match &request.previous {
        Some(p) if request.drives.iter().any(|d| d.dirty.is_some()) => previous_drives(repo, p)?,
        _ => HashMap::new(),
    };
    let now = jiff::Timestamp::now();
    let mtime = Timestamp {
        secs: now.as_second(),
        nanos: now.subsec_nanosecond() as u32,
    };
    let mut builder = ArchiveBuilder::new(repo, request.compression);
    add_config(
        &mut builder,
        "qemu-server.conf",
        request.qemu_conf.as_bytes(),
        mtime,
    )?;
    if let Some(fw) = request.qemu_fw.as_deref().filter(|f| !f.is_empty()) {
        add_config(&mut builder, "qemu-server.fw", fw.as_bytes(), mtime)?;
    }
    let mut stats = Vec::new();
    for drive in &request.drives {
        let io = |what: &str, e: std::io::Error| {
            BackupError::Refused(format!(
                "{}: {what} {}: {e}",
                drive.name,
                drive.path.display()
            ))
        };
        let mut file = std::fs::File::open(&drive.path).map_err(|e| io("opening", e))?;
        let size = match drive.size {
            Some(s) => s,
            // a block device's size is where its end is, not its stat size
            None => file.seek(SeekFrom::End(0)).map_err(|e| io("sizing", e))?,
        };
        let reusable = drive.dirty.as_ref().and_then(|_| {
            let why = match previous.get(&drive.name) {
                None => "it has no such drive".to_string(),
                Some(item) => match chunks_by_index(item, size) {
                    Ok(chunks) if builder.has_blobs(&item.chunks) => return Some(chunks),
                    Ok(_) => "some of its chunks are gone".to_string(),
                    Err(e) => e,
                },
            };
            warn(format!(
                "{}: the previous archive {:?} cannot be reused ({why}): reading all of it",
                drive.name,
                request.previous.as_deref().unwrap_or("")
            ));
            None
        });
        let dirty = reusable.as_ref().and(drive.dirty.as_deref());
        let plan = plan_incremental(size, dirty);
        let previous_chunks: Vec<Option<ChunkRef>> = reusable.unwrap_or_default();
        let (item, s) = ingest_image_incremental(
            &mut builder,
            &file,
            &drive.name,
            size,
            &plan,
            &previous_chunks,
            mtime,
        )?;
        builder.add_stored(item)?;
        stats.push(s);
        if crate::host::interrupt::interrupted() {
            return Err(BackupError::Interrupted);
        }
    }
    let mut meta = base_metadata("qemu", format!("qemu-{}", request.vmid.0));
    meta.insert("vmid".into(), request.vmid.0.into());
    meta.insert(
        "hostname".into(),
        conf.hostname().unwrap_or_default().into(),
    );
    meta.insert("format".into(), "drives".into());
    meta.insert("drives".into(), drives_metadata(&stats));
    meta.insert("source".into(), "pve-backup-provider".into());
    if let Some(p) = &request.previous {
        meta.insert("previous".into(), p.clone().into());
    }
    let (id, manifest) = builder.finish(&request.name, meta)?;
    Ok(Created {
        id,
        manifest,
        warnings,
    })
}

/// The drive entries (`drive-*.raw`) of archive `name`, by drive name; metadata only.
pub(super) fn previous_drives(
    repo: &Repository,
    name: &str,
) -> Result<HashMap<String, Item>, BackupError> {
    let (_, manifest) = repo.find_archive(name)?;
    let mut out = HashMap::new();
    let items = ItemStreamReader::new(manifest.item_stream.clone(), |id| repo.read_blob(id))
        .expect_items(manifest.stats.items);
    for item in items {
        let item = item?;
        let path = String::from_utf8_lossy(&item.path).into_owned();
        if let Some(drive) = path
            .strip_suffix(".raw")
            .filter(|d| d.starts_with("drive-"))
        {
            out.insert(drive.to_string(), item);
        }
    }
    Ok(out)
}
