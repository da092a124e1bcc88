//! Backup planning: target words + PVE state + the host's ZFS datasets → a [`BackupPlan`]
//! (DESIGN "Proxmox orchestration"; zrepl-style plan, then execute). Pure: the inputs are
//! values, nothing is run, read or mounted here, so `--dry-run` prints exactly what a real run
//! would do. Problems with one target are collected in the plan and never stop the others.

pub mod build;
pub mod names;
pub mod render;
pub mod restore;
pub mod target;

pub use build::{build_plan, PlanOptions, VmMode};
pub use names::{dataset_archive_name, files_archive_name, image_archive_name, snapshot_name};
pub use render::render_plan;
pub use target::{parse_target, GuestSelector, Mode, Target, TargetSyntaxError};

use crate::pve::{GuestKind, IdMap, Vmid};
use crate::zfs::{DatasetName, SnapshotName};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Clone, Debug, Serialize)]
pub struct BackupPlan {
    pub node: String,
    /// The snapshot part used for every snapshot of this run (`proxborg-<UTC ts>`).
    pub snapshot: String,
    pub jobs: Vec<Job>,
    pub warnings: Vec<PlanWarning>,
    pub errors: Vec<TargetError>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// `vzdump --stdout` of a guest (QEMU always; LXC without `:`).
    Image(ImageJob),
    /// A VM whose disks are all zvols, read with `zfs send` from its snapshots.
    Zvol(ZvolJob),
    /// An LXC container's files from ZFS snapshots of its volumes.
    ContainerFiles(FilesJob),
    /// One mounted ZFS dataset, not recursive.
    Dataset(DatasetJob),
}

impl Job {
    pub fn archive(&self) -> &str {
        match self {
            Job::Image(j) => &j.archive,
            Job::Zvol(j) => &j.archive,
            Job::ContainerFiles(j) => &j.archive,
            Job::Dataset(j) => &j.archive,
        }
    }

    /// The target words that asked for this job (several when repeated or reached via pools).
    pub fn requested_by(&self) -> &[String] {
        match self {
            Job::Image(j) => &j.requested_by,
            Job::Zvol(j) => &j.requested_by,
            Job::ContainerFiles(j) => &j.requested_by,
            Job::Dataset(j) => &j.requested_by,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ImageJob {
    pub vmid: Vmid,
    pub guest_kind: GuestKind,
    pub hostname: Option<String>,
    pub archive: String,
    pub requested_by: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ZvolJob {
    pub vmid: Vmid,
    pub hostname: Option<String>,
    pub archive: String,
    /// The disks vzdump would back up, in PVE's bus order.
    pub disks: Vec<ZvolDisk>,
    /// `agent: 1`: the VM has a guest agent.
    pub agent: bool,
    /// ... and its `freeze-fs` option lets backups freeze its filesystems around the snapshot.
    pub freeze_fs: bool,
    /// `qemu-server.conf` as vzdump embeds it in a VMA (with `#qmdump#map:` lines).
    #[serde(skip)]
    pub qemu_conf: String,
    /// `firewall/<vmid>.fw`, when there is one.
    #[serde(skip)]
    pub qemu_fw: Option<String>,
    pub requested_by: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ZvolDisk {
    /// `scsi0`; the entry is `drive-scsi0.raw`.
    pub key: String,
    pub storage: String,
    pub dataset: DatasetName,
    pub snapshot: SnapshotName,
}

impl ZvolJob {
    /// The snapshots grouped by pool: one atomic `zfs snapshot` call each.
    pub fn snapshots_by_pool(&self) -> Vec<Vec<SnapshotName>> {
        group_by_pool(self.disks.iter().map(|d| d.snapshot.clone()))
    }
}

/// Snapshot names grouped by pool, in the given order (atomicity only holds within a pool).
fn group_by_pool(snaps: impl Iterator<Item = SnapshotName>) -> Vec<Vec<SnapshotName>> {
    let mut groups: Vec<Vec<SnapshotName>> = Vec::new();
    for s in snaps {
        match groups
            .iter_mut()
            .find(|g| g[0].dataset().pool() == s.dataset().pool())
        {
            Some(g) => g.push(s),
            None => groups.push(vec![s]),
        }
    }
    groups
}

#[derive(Clone, Debug, Serialize)]
pub struct FilesJob {
    pub vmid: Vmid,
    pub hostname: Option<String>,
    pub archive: String,
    /// `:!`: volume mountpoints without `backup=1` are included too.
    pub all_mountpoints: bool,
    pub unprivileged: bool,
    /// Host → container id translation for every recorded item (identity when privileged).
    pub idmap: IdMap,
    /// rootfs first, then the included mountpoints by index.
    pub volumes: Vec<PlannedVolume>,
    pub skipped: Vec<SkippedMount>,
    /// Whether the container runs (and must be frozen) is not in the config files; the
    /// executor asks the host. Always `None` in a plan.
    pub running: Option<bool>,
    /// `./etc/vzdump/pct.conf` as vzdump would write it.
    #[serde(skip)]
    pub pct_conf: String,
    /// `./etc/vzdump/pct.fw`: the firewall file, or empty when there is none (as vzdump).
    #[serde(skip)]
    pub pct_fw: String,
    pub has_firewall: bool,
    pub requested_by: Vec<String>,
}

impl FilesJob {
    /// Every snapshot of this job, for one atomic `zfs snapshot` per pool.
    pub fn snapshots(&self) -> Vec<SnapshotName> {
        self.volumes.iter().map(|v| v.snapshot.clone()).collect()
    }

    /// The snapshots grouped by pool, in volume order: one atomic `zfs snapshot` call each
    /// (atomicity only holds within a pool).
    pub fn snapshots_by_pool(&self) -> Vec<Vec<SnapshotName>> {
        group_by_pool(self.snapshots().into_iter())
    }

    /// Owner of `./etc/vzdump/pct.conf` and `pct.fw` as vzdump's tar records them: host root
    /// seen through the container's map, i.e. 65534:65534 when unprivileged, 0:0 when not.
    pub fn vzdump_file_owner(&self) -> (u32, u32) {
        use crate::pve::idmap::IdKind;
        (
            self.idmap.host_to_ct_or_overflow(IdKind::Uid, 0),
            self.idmap.host_to_ct_or_overflow(IdKind::Gid, 0),
        )
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct PlannedVolume {
    /// `rootfs` or `mpN`.
    pub key: String,
    /// Path inside the container (`/` for rootfs).
    pub mp: String,
    /// Where the volume's tree goes in the archive: `""` for rootfs, `srv/data` for
    /// `mp=/srv/data` (no leading `/`, as item paths).
    pub archive_path: String,
    pub dataset: DatasetName,
    /// The dataset's current mountpoint, when mounted at a path.
    pub mountpoint: Option<PathBuf>,
    pub snapshot: SnapshotName,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedMount {
    pub key: String,
    pub mp: String,
    pub reason: SkipReason,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "why", rename_all = "snake_case")]
pub enum SkipReason {
    /// A volume without `backup=1`, and the target had no `!`.
    BackupDisabled,
    BindMount {
        path: String,
    },
    DeviceMount {
        path: String,
    },
    NotZfs {
        storage: String,
        detail: String,
    },
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::BackupDisabled => write!(
                f,
                "backup is not enabled (add ! to the target to include it)"
            ),
            SkipReason::BindMount { path } => {
                write!(f, "bind mount of host path {path} is never backed up")
            }
            SkipReason::DeviceMount { path } => write!(f, "device mount {path} is never backed up"),
            SkipReason::NotZfs { detail, .. } => write!(f, "not on ZFS: {detail}"),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct DatasetJob {
    pub path: PathBuf,
    pub dataset: DatasetName,
    pub archive: String,
    pub snapshot: SnapshotName,
    pub requested_by: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlanWarning {
    pub target: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TargetError {
    /// The word as typed, with the pool member when reached through a pool (`@prod (300)`).
    pub target: String,
    pub error: PlanError,
    /// `error` as a sentence, for JSON readers.
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum PlanError {
    #[error("{0}")]
    Syntax(TargetSyntaxError),
    #[error("no guest {0} in this cluster")]
    UnknownVmid(Vmid),
    #[error("guest {vmid} is on node {node}, not this node; run proxborg there")]
    OtherNode { vmid: Vmid, node: String },
    #[error("no pool '{pool}' (pool names are case-sensitive; known: {})", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    UnknownPool { pool: String, known: Vec<String> },
    #[error("no guest on this node has the hostname '{0}'")]
    UnknownHostname(String),
    #[error("hostname '{hostname}' is ambiguous, matching {}; use the vmid", matches.iter().map(|(v, k)| format!("{v} ({})", k.as_str())).collect::<Vec<_>>().join(", "))]
    AmbiguousHostname {
        hostname: String,
        matches: Vec<(Vmid, GuestKind)>,
    },
    #[error("{path} is not the mountpoint of a ZFS filesystem{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    NotADatasetMountpoint { path: String, hint: Option<String> },
    #[error("guest {vmid}: {error}")]
    BrokenConfig { vmid: Vmid, error: String },
    #[error("container {vmid}: rootfs {volume} cannot be read from a ZFS snapshot: {detail}; back it up as an image with `{vmid}`")]
    RootfsNotZfs {
        vmid: Vmid,
        volume: String,
        detail: String,
    },
    #[error("VM {vmid}: --vm-mode zvol needs every disk it backs up on a zvol: {reason}")]
    NotAllZvols { vmid: Vmid, reason: String },
    #[error("container {vmid}: {key} should be dataset {dataset}, which `zfs list` does not show")]
    DatasetNotFound {
        vmid: Vmid,
        key: String,
        dataset: String,
    },
}

#[cfg(test)]
mod tests;
