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
use crate::plan::{DatasetJob, FilesJob, ImageJob, PlannedVolume, ZvolDisk, ZvolJob};
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

/// VM 200 with two zvols on one pool and the guest agent on, snapshots `@<stamp>`.
fn zvol_plan(stamp: &str, archive: &str) -> BackupPlan {
    let disk = |key: &str, ds: &str| ZvolDisk {
        key: key.into(),
        storage: "local-zfs".into(),
        dataset: DatasetName::new(ds).unwrap(),
        snapshot: SnapshotName::new(&format!("{ds}@{stamp}")).unwrap(),
    };
    let mut plan = plan_of(Job::Zvol(ZvolJob {
        vmid: Vmid(200),
        hostname: Some("db".into()),
        archive: archive.into(),
        disks: vec![
            disk("scsi0", "rpool/data/vm-200-disk-0"),
            disk("virtio1", "rpool/data/vm-200-disk-1"),
        ],
        agent: true,
        freeze_fs: true,
        qemu_conf: "name: db\nagent: 1\n#qmdump#map:scsi0:drive-scsi0:local-zfs:raw:\n".into(),
        qemu_fw: None,
        requested_by: vec!["200".into()],
    }));
    plan.snapshot = stamp.into();
    plan
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
        ["agent", "freeze", vmid] => vec![format!("agent thaw {vmid}")],
        ["zfs", "send", .., snap] => vec![format!("kill zfs send {snap}")],
        _ => Vec::new(),
    }
}

/// `vzdump N exited` ends a spawn as its kill would, without being an undo; so does `zfs send
/// S exited`. Removing an earlier run's bookmark is not an undo either.
fn releases(call: &str) -> Option<String> {
    if let Some(prog) = call.strip_suffix(" exited") {
        return Some(format!("kill {prog}"));
    }
    if call.starts_with("destroy bookmark ") {
        return None;
    }
    [
        "thaw ",
        "agent thaw ",
        "destroy ",
        "unmount ",
        "kill ",
        "end run",
    ]
    .iter()
    .any(|p| call.starts_with(p))
    .then(|| call.to_string())
}

fn is_thaw(call: &str) -> bool {
    call.starts_with("thaw ") || call.starts_with("agent thaw ")
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
            let frozen = open.iter().any(|o| is_thaw(o));
            if !is_thaw(&undo) {
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
            if failed && is_thaw(&undo) {
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
        "vm status ",
        "zvol size ",
        "points ",
        "zfs send ",
    ]
    .iter()
    .any(|p| call.starts_with(p))
        || call.ends_with(" exited")
        || is_thaw(call)
}

/// A failure of this step is a warning and the job goes on (crash-consistent without the
/// freeze; the next run reads in full without the bookmark).
fn warns(call: &str) -> bool {
    ["agent freeze ", "bookmark ", "destroy bookmark "]
        .iter()
        .any(|p| call.starts_with(p))
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
            let thaw_failed = fault == Fault::Fail && is_thaw(call);
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
        Fault::Fail if warns(call) => Status::Warnings,
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

#[test]
fn a_vm_on_zvols_is_frozen_through_its_agent_snapshotted_at_once_sent_then_bookmarked() {
    let calls = sweep(
        &zvol_plan(SNAP, "vzdump-qemu-200-test.vma"),
        &options(false),
        CtState::Running,
    );
    let (d0, d1) = ("rpool/data/vm-200-disk-0", "rpool/data/vm-200-disk-1");
    let expected = vec![
        "remove leftovers".to_string(),
        "begin run".into(),
        "vm status 200".into(),
        "agent status 200".into(),
        "agent freeze 200".into(),
        format!("snapshot {d0}@{SNAP} {d1}@{SNAP}"),
        "agent thaw 200".into(),
        format!("zvol size {d0}@{SNAP}"),
        format!("points {d0}"),
        format!("zfs send {d0}@{SNAP}"),
        format!("zfs send {d0}@{SNAP} exited"),
        format!("zvol size {d1}@{SNAP}"),
        format!("points {d1}"),
        format!("zfs send {d1}@{SNAP}"),
        format!("zfs send {d1}@{SNAP} exited"),
        format!("bookmark {d0}@{SNAP} as proxborg-ID-20261206T120000Z"),
        format!("bookmark {d1}@{SNAP} as proxborg-ID-20261206T120000Z"),
        format!("destroy snapshot {d1}@{SNAP}"),
        format!("destroy snapshot {d0}@{SNAP}"),
        "end run".into(),
    ];
    assert_eq!(calls, expected);
}

#[test]
fn a_stopped_vm_is_not_frozen() {
    let calls = sweep(
        &zvol_plan(SNAP, "vzdump-qemu-200-test.vma"),
        &options(false),
        CtState::Stopped,
    );
    assert!(!calls.iter().any(|c| c.starts_with("agent ")), "{calls:#?}");
}

/// Runs `plan` on `repo` with a host whose zvols have `points`; the calls and warnings.
fn run_on(
    repo: &mut Repository,
    plan: &BackupPlan,
    points: Vec<crate::zfs::zvol::Point>,
) -> (Vec<String>, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let host = RecordingHost::new(tmp.path(), CtState::Running).with_points(points);
    let events = Events::default();
    let outcome = run_plan(&host, repo, plan, &options(false), &events).unwrap();
    assert!(outcome.jobs[0].ok, "{outcome:?}");
    (host.calls(), events.0.into_inner().unwrap())
}

#[test]
fn the_next_run_sends_from_the_bookmark_and_moves_it_unless_pve_snapshots_forbid() {
    use crate::backup::recording::ZVOL_GUID;
    use crate::zfs::zvol::Point;
    let dir = tempfile::tempdir().unwrap();
    let mut repo = unencrypted(&dir.path().join("repo"));
    let (calls, _) = run_on(&mut repo, &zvol_plan(SNAP, "a1"), Vec::new());
    assert!(calls.contains(&format!(
        "bookmark rpool/data/vm-200-disk-0@{SNAP} as proxborg-ID-20261206T120000Z"
    )));
    let (_, m) = repo.find_archive("a1").unwrap();
    let full = m.metadata["zvols"][0]["bookmark"]
        .as_str()
        .unwrap()
        .to_string();
    let mark = full.split_once('#').unwrap().1.to_string();
    let masked = crate::backup::recording::masked;
    let point = |ds: &str, mark: &str, guid: u64, txg: u64| Point {
        name: format!("{ds}{mark}"),
        bookmark: mark.starts_with('#'),
        guid,
        createtxg: txg,
    };
    let ours = |guid| {
        vec![
            point("rpool/data/vm-200-disk-0", &format!("#{mark}"), guid, 10),
            point("rpool/data/vm-200-disk-1", &format!("#{mark}"), guid, 10),
        ]
    };
    // the bookmark is there with the recorded guid: incremental, then moved forward
    let snap2 = "proxborg-20261207T120000Z";
    let (calls, warnings) = run_on(&mut repo, &zvol_plan(snap2, "a2"), ours(ZVOL_GUID));
    let d0 = "rpool/data/vm-200-disk-0";
    assert!(
        calls.contains(&format!("zfs send -i {} {d0}@{snap2}", masked(&mark))),
        "{calls:#?}"
    );
    assert!(
        calls.contains(&format!("destroy bookmark {d0}#{}", masked(&mark))),
        "{calls:#?}"
    );
    assert!(calls
        .iter()
        .any(|c| c.starts_with(&format!("bookmark {d0}@{snap2} as "))));
    assert!(warnings.is_empty(), "{warnings:?}");
    let (_, m) = repo.find_archive("a2").unwrap();
    assert_eq!(
        m.metadata["zvols"][0]["incremental_from"],
        format!("{d0}#{mark}")
    );

    // a PVE snapshot exists: the read is incremental from the older bookmark, which stays
    // (it is older than the snapshot), and no newer one is made
    let mark2 = format!(
        "{}20261207T120000Z",
        &mark[..mark.len() - "20261206T120000Z".len()]
    );
    let mut pts = vec![
        point(d0, &format!("#{mark2}"), ZVOL_GUID, 20),
        point(d0, "@before-upgrade", 77, 25),
    ];
    pts.push(point(
        "rpool/data/vm-200-disk-1",
        &format!("#{mark2}"),
        ZVOL_GUID,
        20,
    ));
    let snap3 = "proxborg-20261208T120000Z";
    let (calls, warnings) = run_on(&mut repo, &zvol_plan(snap3, "a3"), pts.clone());
    assert!(
        calls.contains(&format!("zfs send -i {} {d0}@{snap3}", masked(&mark2))),
        "{calls:#?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with(&format!("bookmark {d0}@"))),
        "{calls:#?}"
    );
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with(&format!("destroy bookmark {d0}#"))),
        "{calls:#?}"
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let (_, m) = repo.find_archive("a3").unwrap();
    assert_eq!(m.metadata["zvols"][0]["bookmark"], serde_json::Value::Null);
    // the next run still finds the base through the older archive a2
    let snap4 = "proxborg-20261209T120000Z";
    let (calls, _) = run_on(&mut repo, &zvol_plan(snap4, "a4"), pts);
    assert!(
        calls.contains(&format!("zfs send -i {} {d0}@{snap4}", masked(&mark2))),
        "{calls:#?}"
    );

    // the bookmark was destroyed (or has another guid): a full read, with a warning
    let snap5 = "proxborg-20261210T120000Z";
    let (calls, warnings) = run_on(
        &mut repo,
        &zvol_plan(snap5, "a5"),
        vec![point(d0, &format!("#{mark2}"), 999, 20)],
    );
    assert!(
        calls.contains(&format!("zfs send {d0}@{snap5}")),
        "{calls:#?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("cannot read incrementally") && w.contains("reading all of it")),
        "{warnings:?}"
    );
}
