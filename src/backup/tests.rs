//! The engine's orchestration through a recording host: for every step of a container,
//! dataset and VM job, a failure or a signal there must leave exactly the undo calls the
//! rules demand, and the run's status must say what happened.
//!
//! The rules, checked on the recorded calls without looking at how the engine keeps them:
//! - everything made (freeze, snapshot, clone, overlay mount, vzdump, run directory) is
//!   released exactly once; a release that fails is not retried (the thaw's marker, the
//!   run id on snapshots and clones, leave it to `proxborg cleanup`);
//! - a frozen container is thawed before anything else is released;
//! - otherwise releases run in reverse order of making (unmount before its clone, the clone
//!   before its snapshot, the run directory last);
//! - after a failed step or a signal, nothing new is made.

use super::recording::{Fault, RecordingHost};
use super::*;
use crate::host::CtState;
use crate::plan::{DatasetJob, FilesJob, ImageJob, PlannedVolume};
use crate::pve::{GuestKind, IdMap, Vmid};
use crate::repo::test_support::unencrypted;
use crate::zfs::{DatasetName, SnapshotName};
use std::path::Path;
use std::sync::Mutex;

#[derive(Default)]
struct Events(Mutex<Vec<String>>);

impl Sink for Events {
    fn event(&self, event: Event<'_>) {
        if let Event::Warning { message, .. } = event {
            self.0.lock().unwrap().push(message.to_string());
        }
    }
}

const SNAP: &str = "proxborg-20261206T120000Z";

fn snap(ds: &str) -> SnapshotName {
    SnapshotName::new(&format!("{ds}@{SNAP}")).unwrap()
}

fn volume(key: &str, mp: &str, ds: &str) -> PlannedVolume {
    PlannedVolume {
        key: key.into(),
        mp: mp.into(),
        archive_path: mp.trim_start_matches('/').into(),
        dataset: DatasetName::new(ds).unwrap(),
        mountpoint: Some(format!("/{ds}").into()),
        snapshot: snap(ds),
    }
}

/// CT 100, unprivileged, rootfs on one pool and mp0 on another (two snapshot calls).
fn container_plan() -> BackupPlan {
    plan_of(Job::ContainerFiles(FilesJob {
        vmid: Vmid(100),
        hostname: Some("tank".into()),
        archive: "dump-100-test".into(),
        all_mountpoints: false,
        unprivileged: true,
        idmap: IdMap::default_unprivileged(),
        volumes: vec![
            volume("rootfs", "/", "rpool/data/subvol-100-disk-0"),
            volume("mp0", "/srv/data", "tank/subvol-100-disk-1"),
        ],
        skipped: Vec::new(),
        running: None,
        pct_conf: "arch: amd64\nhostname: tank\n".into(),
        pct_fw: String::new(),
        has_firewall: false,
        requested_by: vec!["100:".into()],
    }))
}

fn dataset_plan() -> BackupPlan {
    plan_of(Job::Dataset(DatasetJob {
        path: "/rpool/data/share".into(),
        dataset: DatasetName::new("rpool/data/share").unwrap(),
        archive: "dataset-rpool-data-share--test".into(),
        snapshot: snap("rpool/data/share"),
        requested_by: vec!["/rpool/data/share".into()],
    }))
}

fn image_plan() -> BackupPlan {
    plan_of(Job::Image(ImageJob {
        vmid: Vmid(200),
        guest_kind: GuestKind::Qemu,
        hostname: Some("db".into()),
        archive: "vzdump-qemu-200-test.vma".into(),
        requested_by: vec!["200".into()],
    }))
}

fn plan_of(job: Job) -> BackupPlan {
    BackupPlan {
        node: "pve1".into(),
        snapshot: SNAP.into(),
        jobs: vec![job],
        warnings: Vec::new(),
        errors: Vec::new(),
    }
}

/// What the engine reads from a snapshot: a few files.
fn tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/hostname"), b"tank\n").unwrap();
    std::fs::write(dir.join("data.bin"), vec![7u8; 300 << 10]).unwrap();
}

struct Run {
    result: Result<RunOutcome, BackupError>,
    calls: Vec<String>,
    archives: usize,
    warnings: Vec<String>,
}

fn run(plan: &BackupPlan, options: &Options, host: RecordingHost, tmp: &Path) -> Run {
    let repo_dir = tempfile::tempdir_in(tmp).unwrap();
    let mut repo = unencrypted(&repo_dir.path().join("repo"));
    let events = Events::default();
    let result = run_plan(&host, &mut repo, plan, options, &events);
    let archives = repo.archives().unwrap().0.len();
    Run {
        result,
        calls: host.calls(),
        archives,
        warnings: events.0.into_inner().unwrap(),
    }
}

fn options(overlay: bool) -> Options {
    Options {
        files_cache: CacheOptions {
            mode: FilesCacheMode::Off,
            ttl: 20,
        },
        idmap_via_overlay: overlay,
        ..Options::default()
    }
}

/// The calls that release what `call` made, in the order they were made.
fn made_by(call: &str) -> Vec<String> {
    let words: Vec<&str> = call.split(' ').collect();
    match words.as_slice() {
        ["begin", "run"] => vec!["end run".into()],
        ["freeze", vmid] => vec![format!("thaw {vmid}")],
        ["snapshot", snaps @ ..] => snaps
            .iter()
            .map(|s| format!("destroy snapshot {s}"))
            .collect(),
        ["clone", _, "as", clone] => vec![format!("destroy clone {clone}")],
        ["mount", "overlay", "on", lower] => vec![format!("unmount {lower}")],
        ["spawn", "vzdump", vmid] => vec![format!("kill vzdump {vmid}")],
        _ => Vec::new(),
    }
}

/// `vzdump N exited` ends a spawn as its kill would, without being an undo.
fn releases(call: &str) -> Option<String> {
    match call
        .strip_prefix("vzdump ")
        .and_then(|r| r.strip_suffix(" exited"))
    {
        Some(vmid) => Some(format!("kill vzdump {vmid}")),
        None => ["thaw ", "destroy ", "unmount ", "kill ", "end run"]
            .iter()
            .any(|p| call.starts_with(p))
            .then(|| call.to_string()),
    }
}

/// Checks the rules of this module's header on one run's calls; `fault` is the step told to
/// fail or interrupted. Returns the releases left undone (only a failed thaw may be).
fn check_discipline(calls: &[String], fault: Option<(usize, Fault)>) -> Vec<String> {
    let mut open: Vec<String> = Vec::new();
    let mut stopped = false;
    for (i, call) in calls.iter().enumerate() {
        let failed = fault == Some((i, Fault::Fail));
        if let Some(undo) = releases(call) {
            let Some(pos) = open.iter().rposition(|o| *o == undo) else {
                panic!("step {i} `{call}` releases what is not held (undone twice?): {calls:#?}");
            };
            let frozen = open.iter().any(|o| o.starts_with("thaw "));
            if !undo.starts_with("thaw ") {
                assert!(
                    !frozen,
                    "step {i} `{call}` runs while the container is frozen: {calls:#?}"
                );
                assert_eq!(
                    pos,
                    open.len() - 1,
                    "step {i} `{call}` out of reverse order (still held: {open:?}): {calls:#?}"
                );
            }
            open.remove(pos);
            if failed && undo.starts_with("thaw ") {
                // Not retried: the marker lets `cleanup` thaw it.
                open.insert(0, "left frozen".into());
            }
        } else {
            let made = made_by(call);
            assert!(
                made.is_empty() || !stopped,
                "step {i} `{call}` makes something after the run was told to stop: {calls:#?}"
            );
            if !failed {
                open.extend(made);
            }
        }
        if fault == Some((i, Fault::Interrupt)) || (failed && aborts(call)) {
            stopped = true;
        }
    }
    open
}

/// A failure of this step stops the job (the others are warnings or ignored).
fn aborts(call: &str) -> bool {
    [
        "state ",
        "freeze ",
        "snapshot ",
        "clone ",
        "mount overlay",
        "guid ",
        "spawn vzdump",
        "begin run",
    ]
    .iter()
    .any(|p| call.starts_with(p))
        || (call.starts_with("vzdump ") && call.ends_with(" exited"))
        || call.starts_with("thaw ")
}

/// Runs the plan once cleanly, then once per step with that step failing and once with a
/// signal arriving during it, and checks every run.
fn sweep(plan: &BackupPlan, options: &Options, state: CtState) -> Vec<String> {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    tree(&src);
    let clean = run(plan, options, RecordingHost::new(&src, state), tmp.path());
    let outcome = clean.result.as_ref().expect("a clean run");
    assert_eq!(outcome.status(), Status::Success, "{:?}", clean.warnings);
    assert_eq!(clean.archives, 1);
    assert!(check_discipline(&clean.calls, None).is_empty());
    for step in 0..clean.calls.len() {
        for fault in [Fault::Fail, Fault::Interrupt] {
            let host = RecordingHost::new(&src, state).with_fault(step, fault);
            let r = run(plan, options, host, tmp.path());
            let call = &clean.calls[step];
            let what = format!("{fault:?} at step {step} `{call}`");
            assert_eq!(&r.calls[..=step], &clean.calls[..=step], "{what}");
            let left = check_discipline(&r.calls, Some((step, fault)));
            let thaw_failed = fault == Fault::Fail && call.starts_with("thaw ");
            let expected_left: Vec<String> = if thaw_failed {
                vec!["left frozen".into()]
            } else {
                Vec::new()
            };
            assert_eq!(left, expected_left, "{what}: not released: {:#?}", r.calls);
            check_status(&r, fault, call, &what);
        }
    }
    clean.calls
}

/// The run's status and archive for a fault at `call`.
fn check_status(r: &Run, fault: Fault, call: &str, what: &str) {
    if fault == Fault::Fail && call == "begin run" {
        assert!(r.result.is_err(), "{what}");
        assert_eq!(r.archives, 0, "{what}");
        return;
    }
    let outcome = r.result.as_ref().unwrap_or_else(|e| panic!("{what}: {e}"));
    let job_ok = outcome.jobs.first().is_some_and(|j| j.ok);
    assert_eq!(
        r.archives,
        usize::from(job_ok),
        "{what}: archive written iff the job is ok"
    );
    let expected = match fault {
        // The signal came after the last job: nothing was left to stop.
        Fault::Interrupt if call == "end run" => Status::Success,
        Fault::Interrupt => Status::Interrupted,
        Fault::Fail if aborts(call) => Status::Failed,
        Fault::Fail
            if call == "remove leftovers"
                || releases(call).is_some_and(|u| !u.starts_with("kill ") && u != "end run") =>
        {
            Status::Warnings
        }
        // sync, the .zfs lookup, the kill of an unfinished vzdump, the run directory.
        Fault::Fail => Status::Success,
    };
    assert_eq!(
        outcome.status(),
        expected,
        "{what}: {:?} {:?}",
        outcome,
        r.warnings
    );
    if expected == Status::Failed {
        assert!(!job_ok && outcome.errors == 1, "{what}");
    }
}

#[test]
fn a_running_container_is_frozen_snapshotted_per_pool_thawed_then_read() {
    let calls = sweep(&container_plan(), &options(false), CtState::Running);
    let rootfs = "rpool/data/subvol-100-disk-0";
    let mp0 = "tank/subvol-100-disk-1";
    let expected = vec![
        "remove leftovers".to_string(),
        "begin run".into(),
        "state 100".into(),
        "freeze 100".into(),
        "sync".into(),
        format!("snapshot {rootfs}@{SNAP}"),
        format!("snapshot {mp0}@{SNAP}"),
        "thaw 100".into(),
        format!("look for {rootfs}@{SNAP} in .zfs"),
        format!(
            "clone {rootfs}@{SNAP} as rpool/data/proxborg-clone-subvol-100-disk-0-20261206T120000Z"
        ),
        format!("guid {rootfs}"),
        format!("look for {mp0}@{SNAP} in .zfs"),
        format!("clone {mp0}@{SNAP} as tank/proxborg-clone-subvol-100-disk-1-20261206T120000Z"),
        format!("guid {mp0}"),
        "destroy clone tank/proxborg-clone-subvol-100-disk-1-20261206T120000Z".into(),
        "destroy clone rpool/data/proxborg-clone-subvol-100-disk-0-20261206T120000Z".into(),
        format!("destroy snapshot {mp0}@{SNAP}"),
        format!("destroy snapshot {rootfs}@{SNAP}"),
        "end run".into(),
    ];
    assert_eq!(calls, expected);
}

#[test]
fn an_overlay_is_unmounted_before_its_clone_is_destroyed() {
    let calls = sweep(&container_plan(), &options(true), CtState::Running);
    let mounts = calls
        .iter()
        .filter(|c| c.starts_with("mount overlay"))
        .count();
    let unmounts = calls.iter().filter(|c| c.starts_with("unmount ")).count();
    assert_eq!((mounts, unmounts), (2, 2), "{calls:#?}");
}

#[test]
fn a_stopped_container_is_not_frozen() {
    let calls = sweep(&container_plan(), &options(false), CtState::Stopped);
    assert!(!calls
        .iter()
        .any(|c| c.starts_with("freeze") || c.starts_with("thaw")));
}

#[test]
fn a_dataset_is_snapshotted_cloned_read_and_released() {
    let calls = sweep(&dataset_plan(), &options(false), CtState::Stopped);
    let ds = "rpool/data/share";
    assert_eq!(
        calls,
        vec![
            "remove leftovers".to_string(),
            "begin run".into(),
            format!("snapshot {ds}@{SNAP}"),
            format!("look for {ds}@{SNAP} in .zfs"),
            format!("clone {ds}@{SNAP} as rpool/data/proxborg-clone-share-20261206T120000Z"),
            format!("guid {ds}"),
            "destroy clone rpool/data/proxborg-clone-share-20261206T120000Z".into(),
            format!("destroy snapshot {ds}@{SNAP}"),
            "end run".into(),
        ]
    );
}

#[test]
fn a_vm_dump_is_read_to_its_end_and_killed_when_abandoned() {
    let calls = sweep(&image_plan(), &options(false), CtState::Stopped);
    assert_eq!(
        calls,
        vec![
            "remove leftovers",
            "begin run",
            "spawn vzdump 200",
            "vzdump 200 exited",
            "end run"
        ]
    );
}

#[test]
fn the_discipline_check_catches_a_dropped_or_reordered_undo() {
    let good: Vec<String> = [
        "freeze 100",
        "snapshot a@s b@s",
        "thaw 100",
        "clone a@s as x",
        "destroy clone x",
        "destroy snapshot b@s",
        "destroy snapshot a@s",
    ]
    .map(String::from)
    .to_vec();
    assert!(check_discipline(&good, None).is_empty());
    // Dropped: the snapshot a@s is never destroyed.
    assert_eq!(
        check_discipline(&good[..6], None),
        vec!["destroy snapshot a@s"]
    );
    // Reordered: a snapshot before its clone.
    let mut swapped = good.clone();
    swapped.swap(4, 5);
    assert!(std::panic::catch_unwind(|| check_discipline(&swapped, None)).is_err());
    // Destroyed while frozen.
    let frozen: Vec<String> = [
        "freeze 100",
        "snapshot a@s",
        "destroy snapshot a@s",
        "thaw 100",
    ]
    .map(String::from)
    .to_vec();
    assert!(std::panic::catch_unwind(|| check_discipline(&frozen, None)).is_err());
    // Undone twice.
    let mut twice = good.clone();
    twice.push("destroy snapshot a@s".into());
    assert!(std::panic::catch_unwind(|| check_discipline(&twice, None)).is_err());
}
