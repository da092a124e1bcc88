//! A [`Host`] that records every call, for the engine's tests. It can be told to fail its
//! N-th call, or to behave as if SIGTERM arrived during its N-th call (the call completes,
//! then `interrupted()` is true, as with the real signal handler). Clones and overlay mounts
//! are a small directory tree it makes; vzdump is a byte string.

use crate::host::{CtState, GuestInput, GuestStream, Host, HostError, Taken, ZvolSnapshot};
use crate::pve::{PveState, Vmid};
use crate::zfs::argv::Destroyable;
use crate::zfs::send::test_support::StreamWriter;
use crate::zfs::zvol::{BookmarkName, Point};
use crate::zfs::{DatasetName, SnapshotName, ZfsListEntry};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The call returns an error.
    Fail,
    /// The call succeeds; a signal arrives while it runs.
    Interrupt,
}

pub struct RecordingHost {
    calls: Arc<Mutex<Vec<String>>>,
    fault: Option<(usize, Fault)>,
    interrupted: Arc<AtomicBool>,
    state: CtState,
    /// What clones and overlays show.
    tree: PathBuf,
    vzdump: Vec<u8>,
    points: Vec<Point>,
}

/// Every zvol of the recording host: 1 MiB, its snapshots all of this guid.
pub const ZVOL_SIZE: u64 = 1 << 20;
pub const ZVOL_GUID: u64 = 0x2222;

impl RecordingHost {
    pub fn new(tree: &Path, state: CtState) -> Self {
        RecordingHost {
            calls: Arc::default(),
            fault: None,
            interrupted: Arc::default(),
            state,
            tree: tree.to_path_buf(),
            vzdump: sample_vma(),
            points: Vec::new(),
        }
    }

    pub fn with_fault(mut self, step: usize, fault: Fault) -> Self {
        self.fault = Some((step, fault));
        self
    }

    /// The snapshots and bookmarks every zvol has.
    pub fn with_points(mut self, points: Vec<Point>) -> Self {
        self.points = points;
        self
    }

    /// The same host, for a stream that records into it.
    fn stream(&self, label: String, data: Vec<u8>) -> RecordedDump {
        RecordedDump {
            label,
            data: std::io::Cursor::new(data),
            host: RecordingHost {
                calls: self.calls.clone(),
                fault: self.fault,
                interrupted: self.interrupted.clone(),
                state: self.state,
                tree: self.tree.clone(),
                vzdump: Vec::new(),
                points: Vec::new(),
            },
            finished: false,
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Records one call; `Err` if this is the call told to fail.
    fn call(&self, what: String) -> Result<(), HostError> {
        let mut calls = self.calls.lock().unwrap();
        calls.push(what.clone());
        match self.fault {
            Some((n, Fault::Fail)) if n == calls.len() - 1 => {
                Err(HostError::io(what, std::io::Error::other("told to fail")))
            }
            Some((n, Fault::Interrupt)) if n == calls.len() - 1 => {
                self.interrupted.store(true, Ordering::SeqCst);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl Host for RecordingHost {
    fn pve_state(&self) -> Result<PveState, HostError> {
        Err(HostError::Pve("not recorded".into()))
    }

    fn datasets(&self) -> Result<Vec<ZfsListEntry>, HostError> {
        Ok(Vec::new())
    }

    fn dataset_guid(&self, dataset: &DatasetName) -> Result<String, HostError> {
        self.call(format!("guid {dataset}"))?;
        Ok(format!("guid-of-{dataset}"))
    }

    fn container_state(&self, vmid: Vmid) -> Result<CtState, HostError> {
        self.call(format!("state {vmid}"))?;
        Ok(self.state)
    }

    fn remove_leftovers(&self) -> Result<Vec<String>, HostError> {
        self.call("remove leftovers".into())?;
        Ok(Vec::new())
    }

    fn begin_run(&self) -> Result<(), HostError> {
        self.call("begin run".into())
    }

    fn end_run(&self) {
        let _ = self.call("end run".into());
    }

    fn freeze(&self, vmid: Vmid) -> Result<(), HostError> {
        self.call(format!("freeze {vmid}"))
    }

    fn thaw(&self, vmid: Vmid) -> Result<(), HostError> {
        self.call(format!("thaw {vmid}"))
    }

    fn sync(&self) {
        let _ = self.call("sync".into());
    }

    fn snapshot(&self, snaps: &[SnapshotName]) -> Result<Taken, HostError> {
        let names: Vec<&str> = snaps.iter().map(|s| s.as_str()).collect();
        self.call(format!("snapshot {}", names.join(" ")))?;
        Ok(Taken::Atomically)
    }

    fn snapshot_dir(&self, _mountpoint: &Path, snap: &SnapshotName) -> Option<PathBuf> {
        // Like zfs-fuse: no `.zfs` directory, so every snapshot is read through a clone.
        let _ = self.call(format!("look for {snap} in .zfs"));
        None
    }

    fn clone_readonly(
        &self,
        snap: &SnapshotName,
        clone: &DatasetName,
    ) -> Result<PathBuf, HostError> {
        self.call(format!("clone {snap} as {clone}"))?;
        Ok(self.tree.clone())
    }

    fn destroy(&self, target: &Destroyable) -> Result<(), HostError> {
        match target {
            Destroyable::Snapshot(s) => self.call(format!("destroy snapshot {s}")),
            Destroyable::Clone(c) => self.call(format!("destroy clone {c}")),
        }
    }

    fn mount_idmapped(&self, lower: &Path, _mapping: &str) -> Result<PathBuf, HostError> {
        self.call(format!("mount overlay on {}", lower.display()))?;
        Ok(self.tree.clone())
    }

    fn unmount(&self, mountpoint: &Path) -> Result<(), HostError> {
        self.call(format!("unmount {}", mountpoint.display()))
    }

    fn vm_running(&self, vmid: Vmid) -> Result<bool, HostError> {
        self.call(format!("vm status {vmid}"))?;
        Ok(self.state == CtState::Running)
    }

    fn agent_frozen(&self, vmid: Vmid) -> Result<bool, HostError> {
        self.call(format!("agent status {vmid}"))?;
        Ok(false)
    }

    fn agent_freeze(&self, vmid: Vmid) -> Result<(), HostError> {
        self.call(format!("agent freeze {vmid}"))
    }

    fn agent_thaw(&self, vmid: Vmid) -> Result<(), HostError> {
        self.call(format!("agent thaw {vmid}"))
    }

    fn zvol_snapshot(&self, snap: &SnapshotName) -> Result<ZvolSnapshot, HostError> {
        self.call(format!("zvol size {snap}"))?;
        Ok(ZvolSnapshot {
            volsize: ZVOL_SIZE,
            guid: ZVOL_GUID,
        })
    }

    fn zvol_points(&self, dataset: &DatasetName) -> Result<Vec<Point>, HostError> {
        self.call(format!("points {dataset}"))?;
        let mine = |p: &&Point| {
            p.name
                .strip_prefix(dataset.as_str())
                .is_some_and(|r| r.starts_with('@') || r.starts_with('#'))
        };
        Ok(self.points.iter().filter(mine).cloned().collect())
    }

    fn bookmark(&self, snap: &SnapshotName, bookmark: &BookmarkName) -> Result<(), HostError> {
        self.call(format!("bookmark {snap} as {}", masked(bookmark.mark())))
    }

    fn destroy_bookmark(&self, bookmark: &BookmarkName) -> Result<(), HostError> {
        self.call(format!("destroy bookmark {}", masked(bookmark.as_str())))
    }

    fn zfs_send(
        &self,
        snap: &SnapshotName,
        from: Option<&BookmarkName>,
    ) -> Result<Box<dyn GuestStream>, HostError> {
        let from_guid = match from {
            Some(b) => {
                self.call(format!("zfs send -i {} {snap}", masked(b.mark())))?;
                self.points
                    .iter()
                    .find(|p| p.name == b.as_str())
                    .map_or(0, |p| p.guid)
            }
            None => {
                self.call(format!("zfs send {snap}"))?;
                0
            }
        };
        let mut w = StreamWriter::new(snap.as_str(), from_guid, ZVOL_GUID);
        w.object(1, 16384, ZVOL_SIZE / 16384 - 1)
            .write(1, 0, &[0xA5; 16384]);
        Ok(Box::new(self.stream(format!("zfs send {snap}"), w.end())))
    }

    fn spawn_vzdump(&self, vmid: Vmid) -> Result<Box<dyn GuestStream>, HostError> {
        self.call(format!("spawn vzdump {vmid}"))?;
        Ok(Box::new(
            self.stream(format!("vzdump {vmid}"), self.vzdump.clone()),
        ))
    }

    fn pct_restore(
        &self,
        vmid: Vmid,
        source: &str,
        _args: &[String],
    ) -> Result<Box<dyn GuestInput>, HostError> {
        self.call(format!("pct restore {vmid} {source}"))?;
        Ok(Box::new(Discard))
    }

    fn qmrestore(&self, args: &[String]) -> Result<Box<dyn GuestInput>, HostError> {
        self.call(format!("qmrestore {}", args.join(" ")))?;
        Ok(Box::new(Discard))
    }

    fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }
}

/// A bookmark name with the repository's random id (`proxborg-<8 hex>-`) shown as
/// `proxborg-ID-`, so that runs on different test repositories record the same calls.
pub fn masked(name: &str) -> String {
    match name.split_once("proxborg-") {
        Some((head, tail)) if tail.len() > 9 && tail.as_bytes()[8] == b'-' => {
            format!("{head}proxborg-ID-{}", &tail[9..])
        }
        _ => name.to_string(),
    }
}

/// A restore that takes everything and keeps nothing.
struct Discard;

impl std::io::Write for Discard {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl GuestInput for Discard {
    fn finish(self: Box<Self>) -> Result<(), HostError> {
        Ok(())
    }
}

/// What the recording vzdump emits: a VMA of one 1 MiB disk with a config.
fn sample_vma() -> Vec<u8> {
    use crate::vma::writer::VmaWriter;
    let disk: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let configs = [("qemu-server.conf".to_string(), b"name: db\n".to_vec())];
    let devices = vec![("drive-scsi0".to_string(), disk.len() as u64)];
    let mut w = VmaWriter::new(Vec::new(), [1; 16], 0, &configs, devices).expect("a valid VMA");
    w.write_device(&mut disk.as_slice()).expect("a valid VMA");
    w.finish().expect("a valid VMA")
}

/// A program's output being read (vzdump, zfs send): reads fail once a signal arrived (the
/// real one is killed by the signal handler); dropped unfinished, it is killed.
struct RecordedDump {
    /// `vzdump 200`, `zfs send pool/vol@snap`.
    label: String,
    data: std::io::Cursor<Vec<u8>>,
    host: RecordingHost,
    finished: bool,
}

impl Read for RecordedDump {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.host.interrupted() {
            return Err(std::io::Error::other("interrupted by a signal"));
        }
        self.data.read(buf)
    }
}

impl GuestStream for RecordedDump {
    fn finish(mut self: Box<Self>) -> Result<(), HostError> {
        self.finished = true;
        self.host.call(format!("{} exited", self.label))
    }
}

impl Drop for RecordedDump {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.host.call(format!("kill {}", self.label));
        }
    }
}
