//! [`Host`] for this machine: the PVE files under a root, `zfs`, `lxc-*`, `vzdump` and
//! `fuse-overlayfs` through the runner.
//!
//! A run lives in `<run base>/<pid>` (default `/run/proxborg`): clones and overlay mounts
//! are mounted there, vzdump's scratch files go there, and `frozen-<vmid>` says the run has
//! frozen that container and not yet thawed it (`agent-frozen-<vmid>`: a VM's filesystems,
//! through its guest agent). A directory whose pid is gone belongs to a dead run:
//! `remove_leftovers` thaws its guests, unmounts its overlays and removes it.

use super::runner::{FeedChild, StreamChild};
use super::{
    guest, overlay, zfs as hzfs, CtState, GuestInput, GuestStream, Host, HostError, Taken,
};
use crate::pve::{PveState, Vmid};
use crate::zfs::argv::Destroyable;
use crate::zfs::zvol::{BookmarkName, Point};
use crate::zfs::{DatasetName, SnapshotName, ZfsListEntry};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Run directories live here unless told otherwise.
pub const RUN_BASE: &str = "/run/proxborg";
/// In a run directory, `frozen-<vmid>` marks a container frozen and not yet thawed.
const FROZEN_MARKER: &str = "frozen-";
/// In a run directory, `agent-frozen-<vmid>` marks a VM whose guest agent froze its
/// filesystems for this run and has not thawed them yet.
const AGENT_FROZEN_MARKER: &str = "agent-frozen-";
/// Overlay mounts in a run directory are named `ovl<n>` (so cleanup knows to unmount them).
const OVERLAY_PREFIX: &str = "ovl";

pub struct RealHost {
    pve_root: PathBuf,
    run_base: PathBuf,
    host_name: String,
    run: Mutex<Option<Run>>,
}

struct Run {
    id: String,
    dir: PathBuf,
    overlays: usize,
}

impl RealHost {
    pub fn new(pve_root: PathBuf) -> RealHost {
        RealHost {
            pve_root,
            run_base: PathBuf::from(RUN_BASE),
            host_name: crate::repo::lock::host_name(),
            run: Mutex::new(None),
        }
    }

    /// The current run's id and directory; an error before `begin_run`.
    fn run(&self) -> Result<(String, PathBuf), HostError> {
        let run = self.run.lock().unwrap_or_else(|e| e.into_inner());
        run.as_ref()
            .map(|r| (r.id.clone(), r.dir.clone()))
            .ok_or_else(|| HostError::io("run directory", std::io::Error::other("no run begun")))
    }

    fn marker(&self, vmid: Vmid) -> Result<PathBuf, HostError> {
        Ok(self.run()?.1.join(format!("{FROZEN_MARKER}{}", vmid.0)))
    }

    fn agent_marker(&self, vmid: Vmid) -> Result<PathBuf, HostError> {
        Ok(self
            .run()?
            .1
            .join(format!("{AGENT_FROZEN_MARKER}{}", vmid.0)))
    }
}

impl Host for RealHost {
    fn pve_state(&self) -> Result<PveState, HostError> {
        PveState::load(&self.pve_root)
            .map_err(|e| HostError::Pve(format!("under {}: {e}", self.pve_root.display())))
    }

    fn datasets(&self) -> Result<Vec<ZfsListEntry>, HostError> {
        Ok(hzfs::list()?)
    }

    fn dataset_guid(&self, dataset: &DatasetName) -> Result<String, HostError> {
        Ok(hzfs::guid(dataset)?)
    }

    fn container_state(&self, vmid: Vmid) -> Result<CtState, HostError> {
        Ok(guest::ct_state(vmid.0)?)
    }

    fn remove_leftovers(&self) -> Result<Vec<String>, HostError> {
        // Thaw first: a container frozen by a killed run is down for its users right now.
        let mut done = remove_dead_run_dirs(&self.run_base);
        done.extend(
            hzfs::cleanup_dead_runs(&self.host_name)?
                .into_iter()
                .map(|r| format!("removed {r}")),
        );
        // Emptied only now: a clone mounted in a run directory kept it until its destroy.
        done.extend(remove_dead_run_dirs(&self.run_base));
        Ok(done)
    }

    fn begin_run(&self) -> Result<(), HostError> {
        let dir = self.run_base.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).map_err(|e| HostError::io(dir.display(), e))?;
        *self.run.lock().unwrap_or_else(|e| e.into_inner()) = Some(Run {
            id: hzfs::run_id(&self.host_name),
            dir,
            overlays: 0,
        });
        Ok(())
    }

    fn end_run(&self) {
        if let Some(run) = self.run.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = std::fs::remove_dir_all(&run.dir);
        }
    }

    fn freeze(&self, vmid: Vmid) -> Result<(), HostError> {
        // The marker outlives a SIGKILL: `cleanup` (or the next run) thaws a container that a
        // dead run left frozen. Written before the freeze so that no kill can come between.
        let marker = self.marker(vmid)?;
        std::fs::write(&marker, b"").map_err(|e| HostError::io(marker.display(), e))?;
        guest::freeze(vmid.0).map_err(|e| {
            let _ = std::fs::remove_file(&marker);
            HostError::from(e)
        })
    }

    fn thaw(&self, vmid: Vmid) -> Result<(), HostError> {
        guest::thaw(vmid.0)?;
        if let Ok(marker) = self.marker(vmid) {
            let _ = std::fs::remove_file(marker);
        }
        Ok(())
    }

    fn sync(&self) {
        rustix::fs::sync();
    }

    fn snapshot(&self, snaps: &[SnapshotName]) -> Result<Taken, HostError> {
        let (id, _) = self.run()?;
        Ok(match hzfs::snapshot_set(snaps, &id)? {
            true => Taken::Atomically,
            false => Taken::OneByOne,
        })
    }

    fn snapshot_dir(&self, mountpoint: &Path, snap: &SnapshotName) -> Option<PathBuf> {
        let dir = mountpoint.join(".zfs/snapshot").join(snap.snap());
        dir.is_dir().then_some(dir)
    }

    fn clone_readonly(
        &self,
        snap: &SnapshotName,
        clone: &DatasetName,
    ) -> Result<PathBuf, HostError> {
        let (id, dir) = self.run()?;
        let mount = dir.join(clone.leaf());
        std::fs::create_dir_all(&mount).map_err(|e| HostError::io(mount.display(), e))?;
        hzfs::clone_readonly(snap, clone, &mount, &id)?;
        Ok(mount)
    }

    fn destroy(&self, target: &Destroyable) -> Result<(), HostError> {
        Ok(hzfs::destroy(target)?)
    }

    fn mount_idmapped(&self, lower: &Path, mapping: &str) -> Result<PathBuf, HostError> {
        let n = {
            let mut run = self.run.lock().unwrap_or_else(|e| e.into_inner());
            let run = run.as_mut().ok_or_else(|| {
                HostError::io("run directory", std::io::Error::other("no run begun"))
            })?;
            run.overlays += 1;
            run.overlays
        };
        let dir = self.run()?.1;
        let mnt = dir.join(format!("{OVERLAY_PREFIX}{n}"));
        let scratch = dir.join(format!("{OVERLAY_PREFIX}{n}-scratch"));
        overlay::mount_idmapped(lower, &scratch, &mnt, mapping)?;
        Ok(mnt)
    }

    fn unmount(&self, mountpoint: &Path) -> Result<(), HostError> {
        Ok(overlay::unmount(mountpoint)?)
    }

    fn vm_running(&self, vmid: Vmid) -> Result<bool, HostError> {
        Ok(guest::vm_running(vmid.0)?)
    }

    fn agent_frozen(&self, vmid: Vmid) -> Result<bool, HostError> {
        Ok(guest::agent_frozen(vmid.0)?)
    }

    fn agent_freeze(&self, vmid: Vmid) -> Result<(), HostError> {
        // As for containers: the marker first, so that no kill comes between.
        let marker = self.agent_marker(vmid)?;
        std::fs::write(&marker, b"").map_err(|e| HostError::io(marker.display(), e))?;
        guest::agent_fsfreeze(vmid.0, true).map_err(|e| {
            // a freeze that failed half-way may have frozen some filesystems: thaw them
            let _ = guest::agent_fsfreeze(vmid.0, false);
            let _ = std::fs::remove_file(&marker);
            HostError::from(e)
        })
    }

    fn agent_thaw(&self, vmid: Vmid) -> Result<(), HostError> {
        guest::agent_fsfreeze(vmid.0, false)?;
        if let Ok(marker) = self.agent_marker(vmid) {
            let _ = std::fs::remove_file(marker);
        }
        Ok(())
    }

    fn zvol_snapshot(&self, snap: &SnapshotName) -> Result<super::ZvolSnapshot, HostError> {
        Ok(hzfs::zvol_snapshot(snap)?)
    }

    fn zvol_points(&self, dataset: &DatasetName) -> Result<Vec<Point>, HostError> {
        Ok(hzfs::zvol_points(dataset)?)
    }

    fn bookmark(&self, snap: &SnapshotName, bookmark: &BookmarkName) -> Result<(), HostError> {
        Ok(hzfs::bookmark(snap, bookmark)?)
    }

    fn destroy_bookmark(&self, bookmark: &BookmarkName) -> Result<(), HostError> {
        Ok(hzfs::destroy_bookmark(bookmark)?)
    }

    fn zfs_send(
        &self,
        snap: &SnapshotName,
        from: Option<&BookmarkName>,
    ) -> Result<Box<dyn GuestStream>, HostError> {
        Ok(Box::new(hzfs::send(snap, from)?))
    }

    fn spawn_vzdump(&self, vmid: Vmid) -> Result<Box<dyn GuestStream>, HostError> {
        let (_, dir) = self.run()?;
        let argv: Vec<String> = [
            "vzdump",
            &vmid.0.to_string(),
            "--stdout",
            "--compress",
            "0",
            "--mode",
            "snapshot",
            "--dumpdir",
            &dir.to_string_lossy(),
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        Ok(Box::new(StreamChild::spawn(&argv)?))
    }

    fn pct_restore(
        &self,
        vmid: Vmid,
        source: &str,
        args: &[String],
    ) -> Result<Box<dyn GuestInput>, HostError> {
        let mut argv = vec![
            "pct".to_string(),
            "restore".to_string(),
            vmid.0.to_string(),
            source.to_string(),
        ];
        argv.extend_from_slice(args);
        Ok(Box::new(FeedChild::spawn(&argv)?))
    }

    fn qmrestore(&self, args: &[String]) -> Result<Box<dyn GuestInput>, HostError> {
        let mut argv = vec!["qmrestore".to_string()];
        argv.extend_from_slice(args);
        Ok(Box::new(FeedChild::spawn(&argv)?))
    }

    fn interrupted(&self) -> bool {
        super::interrupt::interrupted()
    }
}

impl GuestInput for FeedChild {
    fn finish(self: Box<Self>) -> Result<(), HostError> {
        Ok(FeedChild::finish(*self)?)
    }
}

impl GuestStream for StreamChild {
    fn finish(self: Box<Self>) -> Result<(), HostError> {
        Ok(StreamChild::finish(*self)?)
    }
}

/// Run directories of killed runs: containers they left frozen are thawed, their overlay
/// mounts unmounted, and only empty directories are removed (a clone still mounted there keeps
/// its directory until its dataset is destroyed). Returns what was done, for the log.
fn remove_dead_run_dirs(base: &Path) -> Vec<String> {
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
                    if guest::ct_state(vmid).ok() == Some(CtState::Frozen) {
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
                if let Some(vmid) = sub_name
                    .strip_prefix(AGENT_FROZEN_MARKER)
                    .and_then(|v| v.parse::<u32>().ok())
                {
                    // a thaw of filesystems that are not frozen is harmless; a guest that
                    // stopped meanwhile has nothing frozen
                    if guest::vm_running(vmid).unwrap_or(false) {
                        match guest::agent_fsfreeze(vmid, false) {
                            Ok(()) => done.push(format!("thawed the filesystems of VM {vmid}")),
                            Err(e) => {
                                done.push(format!(
                                    "could not thaw the filesystems of VM {vmid}: {e}"
                                ));
                                continue;
                            }
                        }
                    }
                    let _ = std::fs::remove_file(sub.path());
                    continue;
                }
                if sub_name.starts_with(OVERLAY_PREFIX) {
                    let _ = overlay::unmount_once(&sub.path());
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
