//! A container archive from a directory someone else prepared: the PVE backup-provider
//! plugin's case, where vzdump has already snapshotted and mounted the volumes under
//! `/mnt/vzsnap0` and hands over that directory, the `sources` below it, the config text and
//! its exclude list. The archive is the one `proxborg 100:` makes (`container::run`):
//! `./etc/vzdump/pct.conf` and `pct.fw` first, every source at its path, owners as the
//! container sees them through the config's id map, vzdump's excludes. This module never
//! snapshots, mounts or freezes anything: that is vzdump's part.

use super::container::add_vzdump_files;
use super::create::ensure_new_archive_name;
use super::events::JobReport;
use super::{
    base_metadata, files_cache, save_files_cache, BackupError, CacheOptions, Created, Sink,
    VZDUMP_EXCLUDES,
};
use crate::ingest::tree::{ingest_dir, TreeSource};
use crate::ingest::ArchiveBuilder;
use crate::pve::conf::parse_guest_config;
use crate::pve::idmap::{IdKind, IdMap};
use crate::pve::{GuestKind, Vmid};
use crate::repo::{Compression, Repository};
use std::path::{Path, PathBuf};

pub struct ContainerDirRequest {
    pub name: String,
    pub vmid: Vmid,
    /// The composed tree (`/mnt/vzsnap0`): rootfs at `./`, each mountpoint at its path.
    pub directory: PathBuf,
    /// `./` and `./<mp>` as vzdump passes them, rootfs first.
    pub sources: Vec<String>,
    /// `pct.conf` as vzdump assembled it; its id map decides the recorded owners.
    pub pct_conf: String,
    pub pct_fw: String,
    /// The job's `exclude-path` list in PVE glob syntax (a leading `/` anchors at the root).
    pub excludes: Vec<String>,
    pub compression: Option<Compression>,
    pub files_cache: CacheOptions,
}

pub fn container_from_directory(
    repo: &Repository,
    request: ContainerDirRequest,
    sink: &dyn Sink,
) -> Result<Created, BackupError> {
    ensure_new_archive_name(repo, &request.name)?;
    let conf = parse_guest_config(
        GuestKind::Lxc,
        request.vmid,
        Path::new("pct.conf"),
        &request.pct_conf,
    )
    .map_err(|e| BackupError::Refused(format!("guest config: {e}")))?;
    let idmap = IdMap::from_config(&conf, Path::new("pct.conf"))
        .map_err(|e| BackupError::Refused(format!("guest config: {e}")))?;
    let mut prefixes = Vec::new();
    for s in &request.sources {
        prefixes.push(archive_prefix(s).ok_or_else(|| {
            BackupError::Refused(format!("source {s:?}: not ./ or ./<path> without .."))
        })?);
    }
    let report = JobReport::new(sink, &request.name);
    let mut builder = ArchiveBuilder::new(repo, request.compression);
    let owner = (
        idmap.host_to_ct_or_overflow(IdKind::Uid, 0),
        idmap.host_to_ct_or_overflow(IdKind::Gid, 0),
    );
    add_vzdump_files(&mut builder, owner, &request.pct_conf, &request.pct_fw)?;
    let excludes: Vec<String> = VZDUMP_EXCLUDES
        .iter()
        .map(|s| s.to_string())
        .chain(request.excludes.iter().cloned())
        .collect();
    let mut cache = files_cache(repo, request.files_cache);
    for (source, prefix) in request.sources.iter().zip(prefixes) {
        let root = request.directory.join(source);
        ingest_dir(
            &mut builder,
            &TreeSource {
                root: &root,
                source_id: format!("pve-provider:{}:{prefix}", request.vmid.0),
                prefix: prefix.into_bytes(),
                excludes: &excludes,
                one_file_system: true,
                idmap: Some(&idmap),
                lower: None,
            },
            &mut cache,
            &report,
        )?;
        if crate::host::interrupt::interrupted() {
            return Err(BackupError::Interrupted);
        }
    }
    let mut meta = base_metadata("lxc", format!("lxc-{}-files", request.vmid.0));
    meta.insert("vmid".into(), request.vmid.0.into());
    meta.insert(
        "hostname".into(),
        conf.hostname().unwrap_or_default().into(),
    );
    meta.insert("unprivileged".into(), conf.unprivileged().into());
    meta.insert("source".into(), "pve-backup-provider".into());
    let (id, manifest) = builder.finish(&request.name, meta)?;
    save_files_cache(cache, &report);
    Ok(Created {
        id,
        manifest,
        warnings: report.warnings(),
    })
}

/// `./` → `""`, `./srv/data` → `"srv/data"` (item paths have no leading `./`).
fn archive_prefix(source: &str) -> Option<String> {
    let rest = source
        .strip_prefix("./")
        .or_else(|| (source == ".").then_some(""))?;
    let rest = rest.trim_end_matches('/');
    if rest.split('/').any(|c| c == ".." || c == ".") || rest.starts_with('/') {
        return None;
    }
    Some(rest.to_string())
}

#[cfg(test)]
mod tests {
    use super::archive_prefix;

    #[test]
    fn sources_become_archive_prefixes() {
        assert_eq!(archive_prefix("./").as_deref(), Some(""));
        assert_eq!(archive_prefix(".").as_deref(), Some(""));
        assert_eq!(archive_prefix("./srv/data").as_deref(), Some("srv/data"));
        assert_eq!(archive_prefix("./a/../b"), None);
        assert_eq!(archive_prefix("/etc"), None);
    }
}
