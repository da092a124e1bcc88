//! A VM archive (config entries and `drive-*.raw` images, as `proxborg VMID` stores a VMA)
//! back as a VMA stream that `qmrestore -` accepts: the config blobs and devices in the
//! header, then every cluster of every drive, holes as zero clusters. A first pass over the
//! item stream (metadata only) finds the configs and the drive sizes the header needs.

use super::{ArchiveReader, WithHoles};
use crate::item::filter::Selection;
use crate::item::Kind;
use crate::repo::item_stream::ItemStreamReader;
use crate::repo::{Manifest, RepoError, Repository};
use crate::vma::writer::{VmaWriter, WriteError};
use std::io::{Read, Write};

#[derive(Debug, thiserror::Error)]
pub enum VmaExportError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Vma(#[from] WriteError),
    #[error("archive {archive:?}: {reason}")]
    NotAVm { archive: String, reason: String },
}

/// The largest config file a VMA can carry (a 2-byte blob length).
const MAX_CONFIG: u64 = 65535;

/// Writes `manifest` as a VMA to `out`; returns `out`.
pub fn export_vma<W: Write>(
    repo: &Repository,
    manifest: &Manifest,
    out: W,
) -> Result<W, VmaExportError> {
    let not_a_vm = |reason: String| VmaExportError::NotAVm {
        archive: manifest.name.clone(),
        reason,
    };
    let mut config_names = Vec::new();
    let mut devices = Vec::new();
    for item in ItemStreamReader::new(manifest.item_stream.clone(), |id| repo.read_blob(id)) {
        let item = item?;
        if item.kind != Kind::File {
            return Err(not_a_vm(format!(
                "{} is not a regular file",
                crate::item::display_path(&item.path)
            )));
        }
        let name = String::from_utf8_lossy(&item.path).into_owned();
        match name.strip_suffix(".raw") {
            Some(dev) if dev.starts_with("drive-") => devices.push((dev.to_string(), item.size)),
            _ if item.size <= MAX_CONFIG => config_names.push(name),
            _ => return Err(not_a_vm(format!("{name} is too large for a VMA config"))),
        }
    }
    if devices.is_empty() && config_names.is_empty() {
        return Err(not_a_vm("no drives and no config".into()));
    }
    let mut configs = Vec::new();
    let wanted = |names: Vec<Vec<u8>>| Selection {
        includes: names,
        ..Default::default()
    };
    let config_paths = config_names.iter().map(|n| n.as_bytes().to_vec()).collect();
    for entry in ArchiveReader::open(repo, manifest, wanted(config_paths)) {
        let mut entry = entry?;
        let mut data = Vec::new();
        (&mut entry.content)
            .take(MAX_CONFIG)
            .read_to_end(&mut data)
            .map_err(|e| not_a_vm(format!("reading a config: {e}")))?;
        configs.push((String::from_utf8_lossy(&entry.item.path).into_owned(), data));
    }
    let uuid: [u8; 16] = crate::repo::key::random_bytes()?;
    let ctime = manifest
        .start
        .parse::<jiff::Timestamp>()
        .map_or(0, |t| t.as_second());
    let drive_paths = devices
        .iter()
        .map(|(d, _)| format!("{d}.raw").into_bytes())
        .collect();
    let mut writer = VmaWriter::new(out, uuid, ctime, &configs, devices)?;
    for entry in ArchiveReader::open(repo, manifest, wanted(drive_paths)) {
        let entry = entry?;
        let mut logical = WithHoles::new(entry.content, &entry.item);
        writer.write_device(&mut logical)?;
    }
    Ok(writer.finish()?)
}
