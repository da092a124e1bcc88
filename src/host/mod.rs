//! The seam to the machine. Two layers:
//! - `runner` runs one program (argv, `LC_ALL=C`, stderr tail, argv logging); the wrappers
//!   `zfs`, `guest` and `overlay` build argv from the pure `zfs`/`pve` layers and call it;
//! - [`Host`] is the semantic interface the backup engine talks to: read the PVE state, list
//!   datasets, snapshot several datasets atomically, clone and mount read-only, freeze/thaw,
//!   spawn vzdump as a reader. [`RealHost`] implements it once for this machine; the engine's
//!   tests implement it with a recording stand-in.
//!
//! Nothing outside this module runs a program or mounts anything. Everything a run creates
//! (snapshots, clones, mounts, freezes, its run directory) carries the run's id or lives in
//! its run directory, so `remove_leftovers` can find what a killed run left.
//! `interrupt` turns SIGINT/SIGTERM/SIGHUP into a flag; `memory` tunes malloc for long tree
//! backups.

pub mod fuse;
pub mod guest;
pub mod interrupt;
pub mod memory;
pub mod overlay;
mod real;
pub mod runner;
pub mod zfs;

pub use guest::CtState;
pub use real::RealHost;
pub use runner::FeedChild;

use crate::pve::{PveState, Vmid};
use crate::zfs::argv::Destroyable;
use crate::zfs::zvol::{BookmarkName, Point};
use crate::zfs::{DatasetName, SnapshotName, ZfsListEntry};
use std::io::Read;
use std::path::{Path, PathBuf};
pub use zfs::ZvolSnapshot;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Zfs(#[from] zfs::ZfsHostError),
    #[error(transparent)]
    Run(#[from] runner::RunError),
    #[error(transparent)]
    Guest(#[from] guest::GuestError),
    #[error("reading the PVE state: {0}")]
    Pve(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl HostError {
    pub fn io(what: impl std::fmt::Display, source: std::io::Error) -> HostError {
        HostError::Io {
            what: what.to_string(),
            source,
        }
    }
}

/// Whether a set of snapshots was taken in one call (atomic within the pool) or one by one
/// (zfs-fuse takes one name per call).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    Atomically,
    OneByOne,
}

/// A program's output as it is being written (vzdump --stdout, zfs send): read it to the end, then
/// `finish` says whether the program succeeded. Dropped unfinished, the program is stopped.
pub trait GuestStream: Read + Send {
    fn finish(self: Box<Self>) -> Result<(), HostError>;
}

/// A guest restore being fed (`pct restore -`, `qmrestore -`): write the archive, then
/// `finish` says whether the program succeeded. Dropped unfinished, its input is closed (the
/// program sees a truncated archive and cleans up, as after any failed restore).
pub trait GuestInput: std::io::Write + Send {
    fn finish(self: Box<Self>) -> Result<(), HostError>;
}

/// What the backup engine asks of the machine. Every method that creates something has its
/// undo here too (`freeze`/`thaw`, `snapshot`/`destroy`, `clone_readonly`/`destroy`,
/// `mount_idmapped`/`unmount`, `begin_run`/`end_run`); the engine's guards pair them.
pub trait Host {
    /// The guests, storages and pools this node's `/etc/pve` describes.
    fn pve_state(&self) -> Result<PveState, HostError>;
    /// Every ZFS filesystem and volume with its mountpoint.
    fn datasets(&self) -> Result<Vec<ZfsListEntry>, HostError>;
    /// A dataset's identity across runs and renames (the files cache key).
    fn dataset_guid(&self, dataset: &DatasetName) -> Result<String, HostError>;
    fn container_state(&self, vmid: Vmid) -> Result<CtState, HostError>;

    /// Removes what killed runs on this host left: thaws the containers they froze, unmounts
    /// their mounts, destroys their clones and snapshots. Returns one line per thing done.
    fn remove_leftovers(&self) -> Result<Vec<String>, HostError>;
    /// Starts this run: its id (stamped on every snapshot and clone) and its directory.
    fn begin_run(&self) -> Result<(), HostError>;
    /// Removes the run directory (after everything mounted in it was released).
    fn end_run(&self);

    /// Freezes a running container (the cgroup freezer). A marker in the run directory says
    /// so until `thaw`, so that a later cleanup thaws it if this process dies.
    fn freeze(&self, vmid: Vmid) -> Result<(), HostError>;
    fn thaw(&self, vmid: Vmid) -> Result<(), HostError>;
    /// Flushes dirty data to disk (between freeze and snapshot).
    fn sync(&self);
    /// Snapshots of one pool, in one call where the `zfs` can (atomic), each tagged with the
    /// run's id. On an error none of them is left.
    fn snapshot(&self, snaps: &[SnapshotName]) -> Result<Taken, HostError>;
    /// Where a snapshot's files can be read without a clone (`<mountpoint>/.zfs/snapshot`).
    fn snapshot_dir(&self, mountpoint: &Path, snap: &SnapshotName) -> Option<PathBuf>;
    /// A read-only clone of `snap` named `clone`, mounted in the run directory; returns the
    /// mountpoint.
    fn clone_readonly(
        &self,
        snap: &SnapshotName,
        clone: &DatasetName,
    ) -> Result<PathBuf, HostError>;
    /// Destroys a proxborg snapshot or clone (only those names can be expressed).
    fn destroy(&self, target: &Destroyable) -> Result<(), HostError>;
    /// `lower` seen through fuse-overlayfs with the given id mapping; returns the mountpoint.
    fn mount_idmapped(&self, lower: &Path, mapping: &str) -> Result<PathBuf, HostError>;
    fn unmount(&self, mountpoint: &Path) -> Result<(), HostError>;
    /// Whether a VM runs (`qm status`).
    fn vm_running(&self, vmid: Vmid) -> Result<bool, HostError>;
    /// Whether a running VM's guest agent has its filesystems frozen (`fsfreeze-status`); an
    /// error when the agent does not answer.
    fn agent_frozen(&self, vmid: Vmid) -> Result<bool, HostError>;
    /// Freezes a running VM's filesystems through its guest agent. A marker in the run
    /// directory says so until `agent_thaw`, so that a later cleanup thaws it if this process
    /// dies.
    fn agent_freeze(&self, vmid: Vmid) -> Result<(), HostError>;
    fn agent_thaw(&self, vmid: Vmid) -> Result<(), HostError>;
    /// A zvol snapshot's size and guid.
    fn zvol_snapshot(&self, snap: &SnapshotName) -> Result<ZvolSnapshot, HostError>;
    /// A zvol's snapshots and bookmarks.
    fn zvol_points(&self, dataset: &DatasetName) -> Result<Vec<Point>, HostError>;
    /// Marks `snap` with a bookmark, which outlives the snapshot.
    fn bookmark(&self, snap: &SnapshotName, bookmark: &BookmarkName) -> Result<(), HostError>;
    fn destroy_bookmark(&self, bookmark: &BookmarkName) -> Result<(), HostError>;
    /// `zfs send [-i bookmark] snap`, read as it is written.
    fn zfs_send(
        &self,
        snap: &SnapshotName,
        from: Option<&BookmarkName>,
    ) -> Result<Box<dyn GuestStream>, HostError>;
    /// `vzdump VMID --stdout` (uncompressed, snapshot mode), read as it is written.
    fn spawn_vzdump(&self, vmid: Vmid) -> Result<Box<dyn GuestStream>, HostError>;

    /// `pct restore VMID SOURCE ARGS...`: SOURCE is `-` (the tar is written to the returned
    /// input) or a tar file (the input is then left empty).
    fn pct_restore(
        &self,
        vmid: Vmid,
        source: &str,
        args: &[String],
    ) -> Result<Box<dyn GuestInput>, HostError>;
    /// `qmrestore ARGS...` with the VMA written to the returned input (`ARGS` start `- VMID`).
    fn qmrestore(&self, args: &[String]) -> Result<Box<dyn GuestInput>, HostError>;

    /// A signal asked the run to stop: the engine stops at its next step and undoes.
    fn interrupted(&self) -> bool;
}
