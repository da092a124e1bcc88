//! Plan tests on the fixture node (tests/fixtures/pve/node1) and the OpenZFS-style dataset list
//! (tests/fixtures/zfs/openzfs-list.txt).
use super::*;
use crate::pve::{PveState, Vmid};
use crate::zfs::{parse_list, ZfsListEntry};

fn state() -> PveState {
    PveState::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pve/node1"
    )))
    .unwrap()
}

fn datasets() -> Vec<ZfsListEntry> {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/zfs/openzfs-list.txt"
    );
    parse_list(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn opts(hostname_in_name: bool) -> PlanOptions {
    PlanOptions {
        now: "2026-11-23T07:19:00[UTC]".parse().unwrap(),
        hostname_in_name,
        vm_mode: VmMode::Auto,
    }
}

fn plan_with(words: &[&str], ds: &[ZfsListEntry], st: &PveState) -> BackupPlan {
    let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    build_plan(st, ds, &words, &opts(false))
}

fn plan(words: &[&str]) -> BackupPlan {
    plan_with(words, &datasets(), &state())
}

fn archives(p: &BackupPlan) -> Vec<&str> {
    p.jobs.iter().map(Job::archive).collect()
}

fn files(p: &BackupPlan, i: usize) -> &FilesJob {
    match &p.jobs[i] {
        Job::ContainerFiles(j) => j,
        other => panic!("job {i} is {other:?}"),
    }
}

fn errors(p: &BackupPlan) -> Vec<(String, String)> {
    p.errors
        .iter()
        .map(|e| (e.target.clone(), e.error.to_string()))
        .collect()
}

#[test]
fn vmid_and_hostname_images_are_merged() {
    let p = plan(&["100", "tank", "200"]);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(
        archives(&p),
        [
            "vzdump-lxc-100-2026_11_23-07_19_00.tar",
            "vzdump-qemu-200-2026_11_23-07_19_00.vma"
        ]
    );
    assert_eq!(p.jobs[0].requested_by(), ["100", "tank"]);
    assert_eq!(p.snapshot, "proxborg-20261123T071900Z");
}

#[test]
fn file_level_container_100() {
    let p = plan(&["100:"]);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(archives(&p), ["dump-100-2026_11_23-07_19_00"]);
    let j = files(&p, 0);
    assert!(!j.all_mountpoints && j.unprivileged && j.running.is_none());
    assert_eq!(j.idmap, crate::pve::IdMap::default_unprivileged());
    let v: Vec<_> = j
        .volumes
        .iter()
        .map(|v| (v.key.as_str(), v.archive_path.as_str(), v.snapshot.as_str()))
        .collect();
    assert_eq!(
        v,
        [
            (
                "rootfs",
                "",
                "rpool/data/subvol-100-disk-0@proxborg-20261123T071900Z"
            ),
            (
                "mp0",
                "srv/data",
                "rpool/data/subvol-100-disk-1@proxborg-20261123T071900Z"
            ),
        ]
    );
    assert_eq!(
        j.volumes[1].mountpoint.as_deref(),
        Some(std::path::Path::new("/rpool/data/subvol-100-disk-1"))
    );
    assert_eq!(
        j.skipped,
        [
            SkippedMount {
                key: "mp1".into(),
                mp: "/srv/scratch".into(),
                reason: SkipReason::BackupDisabled
            },
            SkippedMount {
                key: "mp2".into(),
                mp: "/media".into(),
                reason: SkipReason::BindMount {
                    path: "/mnt/host-media".into()
                }
            },
            SkippedMount {
                key: "mp3".into(),
                mp: "/mnt/usb".into(),
                reason: SkipReason::DeviceMount {
                    path: "/dev/sdb1".into()
                }
            },
        ]
    );
    // backup=0 is the normal case and no warning; bind and device mounts are warned about.
    let w: Vec<_> = p.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(
        w,
        [
            "container 100: mp2 (/media) skipped: bind mount of host path /mnt/host-media is never backed up",
            "container 100: mp3 (/mnt/usb) skipped: device mount /dev/sdb1 is never backed up",
        ]
    );
    let expected = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pve/expected/100-pct.conf"
    ))
    .unwrap();
    assert_eq!(j.pct_conf, expected);
    assert!(j.has_firewall && j.pct_fw.contains("IN ACCEPT -p tcp -dport 22"));
    assert_eq!(j.snapshots().len(), 2);
    assert_eq!(
        j.snapshots_by_pool().len(),
        1,
        "both volumes on rpool: one atomic call"
    );
    assert_eq!(j.vzdump_file_owner(), (65534, 65534));
}

#[test]
fn bang_includes_backup0_volumes_and_wins_over_plain_colon() {
    let p = plan(&["tank:!"]);
    let keys: Vec<_> = files(&p, 0)
        .volumes
        .iter()
        .map(|v| v.key.as_str())
        .collect();
    assert_eq!(keys, ["rootfs", "mp0", "mp1"]);
    assert!(files(&p, 0).all_mountpoints);

    let p = plan(&["100:", "100:!", "tank:"]);
    assert_eq!(p.jobs.len(), 1);
    assert!(files(&p, 0).all_mountpoints);
    assert_eq!(p.jobs[0].requested_by(), ["100:", "100:!", "tank:"]);

    let p = plan(&["100", "100:"]);
    assert_eq!(
        archives(&p),
        [
            "vzdump-lxc-100-2026_11_23-07_19_00.tar",
            "dump-100-2026_11_23-07_19_00"
        ]
    );
}

#[test]
fn qemu_colon_means_image() {
    let p = plan(&["200:", "200", "200:!"]);
    assert_eq!(archives(&p), ["vzdump-qemu-200-2026_11_23-07_19_00.vma"]);
    assert_eq!(p.jobs[0].requested_by(), ["200:", "200", "200:!"]);
}

#[test]
fn pools_expand_per_member() {
    let p = plan(&["@prod"]);
    assert_eq!(
        archives(&p),
        [
            "vzdump-lxc-100-2026_11_23-07_19_00.tar",
            "vzdump-lxc-101-2026_11_23-07_19_00.tar",
            "vzdump-qemu-200-2026_11_23-07_19_00.vma"
        ]
    );
    assert_eq!(p.jobs[0].requested_by(), ["@prod (100)"]);

    let p = plan(&["@prod:", "101:"]);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(
        archives(&p),
        [
            "dump-100-2026_11_23-07_19_00",
            "dump-101-2026_11_23-07_19_00",
            "vzdump-qemu-200-2026_11_23-07_19_00.vma"
        ]
    );
    assert!(
        files(&p, 1).idmap.is_identity() && !files(&p, 1).unprivileged,
        "101 is privileged"
    );
    assert_eq!(p.jobs[1].requested_by(), ["@prod: (101)", "101:"]);

    // Nested pools are separate pools: @prod does not include prod/sub's 102.
    let p = plan(&["@prod/sub:!"]);
    let j = files(&p, 0);
    assert_eq!(j.vmid, Vmid(102));
    assert_eq!(
        j.idmap.entries.len(),
        6,
        "custom lxc.idmap replaces the default"
    );

    let p = plan(&["@empty"]);
    assert!(p.jobs.is_empty() && p.errors.is_empty());
    assert_eq!(p.warnings[0].message, "pool 'empty' has no guests");
}

#[test]
fn other_zfs_pool_through_storage_cfg() {
    let p = plan(&["dup:"]);
    assert_eq!(p.errors.len(), 1, "dup is ambiguous");
    let p = plan(&["103:"]);
    assert_eq!(
        files(&p, 0).volumes[0].dataset.as_str(),
        "tank/ct/subvol-103-disk-0"
    );
}

#[test]
fn datasets_by_mountpoint() {
    let p = plan(&[
        "/rpool/data/subvol-101-disk-0",
        "/rpool/data/subvol-101-disk-0/",
        "/srv/media files",
        "/",
    ]);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(
        archives(&p),
        [
            "dataset-rpool-data-subvol-101-disk-0--2026_11_23-07_19_00",
            "dataset-srv-media-files--2026_11_23-07_19_00",
            "dataset---2026_11_23-07_19_00"
        ]
    );
    match &p.jobs[0] {
        Job::Dataset(d) => {
            assert_eq!(d.dataset.as_str(), "rpool/data/subvol-101-disk-0");
            assert_eq!(
                d.snapshot.as_str(),
                "rpool/data/subvol-101-disk-0@proxborg-20261123T071900Z"
            );
            assert_eq!(
                d.requested_by,
                [
                    "/rpool/data/subvol-101-disk-0",
                    "/rpool/data/subvol-101-disk-0/"
                ]
            );
        }
        o => panic!("{o:?}"),
    }
}

#[test]
fn every_refusal_is_collected_and_others_still_plan() {
    let p = plan(&[
        "999",
        "300:",
        "@nope",
        "dup",
        "nosuch:",
        "/rpool/data/subvol-100-disk-0/etc",
        "/nowhere",
        "/rpool/../x",
        "rel/x",
        "99",
        "104:",
        "101",
    ]);
    assert_eq!(archives(&p), ["vzdump-lxc-101-2026_11_23-07_19_00.tar"]);
    let json = serde_json::to_value(&p).expect("every error variant serializes");
    assert_eq!(
        json["errors"][3]["error"]["detail"]["matches"][1],
        serde_json::json!([201, "qemu"])
    );
    assert_eq!(json["errors"][8]["error"]["kind"], "syntax");
    assert_eq!(
        errors(&p),
        [
            ("999".into(), "no guest 999 in this cluster".into()),
            ("300:".into(), "guest 300 is on node pve2, not this node; run proxborg there".into()),
            ("@nope".into(), "no pool 'nope' (pool names are case-sensitive; known: prod, prod/sub, test, empty)".into()),
            ("dup".into(), "hostname 'dup' is ambiguous, matching 103 (lxc), 201 (qemu); use the vmid".into()),
            ("nosuch:".into(), "no guest on this node has the hostname 'nosuch'".into()),
            (
                "/rpool/data/subvol-100-disk-0/etc".into(),
                "/rpool/data/subvol-100-disk-0/etc is not the mountpoint of a ZFS filesystem (it lies inside rpool/data/subvol-100-disk-0 mounted at /rpool/data/subvol-100-disk-0)".into()
            ),
            ("/nowhere".into(), "/nowhere is not the mountpoint of a ZFS filesystem (it lies inside rpool/ROOT/pve-1 mounted at /)".into()),
            ("/rpool/../x".into(), "/rpool/../x is not the mountpoint of a ZFS filesystem (use a clean absolute path)".into()),
            ("rel/x".into(), "'rel/x' is not a vmid, hostname, @pool or /path".into()),
            ("99".into(), "'99': vmids start at 100".into()),
            (
                "104:".into(),
                "container 104: rootfs local-lvm:vm-104-disk-0 cannot be read from a ZFS snapshot: storage 'local-lvm' is of type lvmthin, not zfspool; back it up as an image with `104`".into()
            ),
        ]
    );
}

#[test]
fn pool_members_fail_one_by_one() {
    let p = plan(&["@test:"]);
    assert_eq!(archives(&p), ["dump-103-2026_11_23-07_19_00"]);
    assert_eq!(errors(&p)[0].0, "@test: (104)");
}

#[test]
fn missing_dataset_and_broken_config() {
    let ds: Vec<ZfsListEntry> = datasets()
        .into_iter()
        .filter(|e| e.name != "rpool/data/subvol-100-disk-1")
        .collect();
    let st = state();
    let p = plan_with(&["100:", "100"], &ds, &st);
    assert_eq!(
        archives(&p),
        ["vzdump-lxc-100-2026_11_23-07_19_00.tar"],
        "the image does not need the dataset list"
    );
    assert_eq!(errors(&p), [("100:".into(), "container 100: mp0 should be dataset rpool/data/subvol-100-disk-1, which `zfs list` does not show".into())]);

    let mut st = state();
    st.guests
        .get_mut(&Vmid(100))
        .unwrap()
        .config
        .as_mut()
        .unwrap()
        .warnings
        .push("lxc/100.conf:9: invalid key 'X'".into());
    st.guests.get_mut(&Vmid(101)).unwrap().config = Err("lxc/101.conf:3: invalid key 'X'".into());
    let p = plan_with(&["101:", "100:"], &datasets(), &st);
    assert_eq!(archives(&p), ["dump-100-2026_11_23-07_19_00"]);
    assert_eq!(
        errors(&p),
        [(
            "101:".into(),
            "guest 101: lxc/101.conf:3: invalid key 'X'".into()
        )]
    );
}

#[test]
fn hostname_in_name() {
    let words: Vec<String> = ["100", "100:", "200", "/rpool/data"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let p = build_plan(&state(), &datasets(), &words, &opts(true));
    assert_eq!(
        archives(&p),
        [
            "tank-lxc-100-2026_11_23-07_19_00.tar",
            "tank-100-2026_11_23-07_19_00",
            "winvm-qemu-200-2026_11_23-07_19_00.vma",
            "pve1-rpool-data--2026_11_23-07_19_00"
        ]
    );
}

fn plan_mode(words: &[&str], vm_mode: VmMode) -> BackupPlan {
    let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    let mut o = opts(false);
    o.vm_mode = vm_mode;
    build_plan(&state(), &datasets(), &words, &o)
}

#[test]
fn a_vm_on_zvols_is_read_from_them_unless_told_otherwise() {
    let p = plan_mode(&["200"], VmMode::Auto);
    let Job::Zvol(j) = &p.jobs[0] else {
        panic!("{:?}", p.jobs)
    };
    // efidisk0 (no OVMF) and scsi1 (backup=0) are left out, as vzdump does; cdroms too
    let keys: Vec<&str> = j.disks.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["scsi0"]);
    assert_eq!(j.disks[0].dataset.as_str(), "rpool/data/vm-200-disk-0");
    assert_eq!(
        j.disks[0].snapshot.as_str(),
        "rpool/data/vm-200-disk-0@proxborg-20261123T071900Z"
    );
    assert!(!j.agent && !j.freeze_fs);
    assert!(j
        .qemu_conf
        .starts_with("#Windows build VM\nbios: seabios\n"));
    assert!(!j.qemu_conf.contains("parent:") && !j.qemu_conf.contains("[clean]"));
    assert!(j.qemu_conf.ends_with("vmgenid: 8a2f7c34-0c55-4d0b-8d55-e3a0d8a4f0d1\n\n#qmdump#map:scsi0:drive-scsi0:local-zfs:raw:\n"));
    assert_eq!(j.archive, "vzdump-qemu-200-2026_11_23-07_19_00.vma");
    assert_eq!(j.snapshots_by_pool().len(), 1);

    let p = plan_mode(&["200"], VmMode::Vzdump);
    assert!(matches!(&p.jobs[0], Job::Image(_)), "{:?}", p.jobs);
    let p = plan_mode(&["200"], VmMode::Zvol);
    assert!(matches!(&p.jobs[0], Job::Zvol(_)));
}

#[test]
fn the_agent_and_its_freeze_fs_option_as_pve_reads_them() {
    use super::build::agent_freeze;
    assert_eq!(agent_freeze(None), (false, false));
    assert_eq!(agent_freeze(Some("1")), (true, true));
    assert_eq!(agent_freeze(Some("0")), (false, false));
    assert_eq!(agent_freeze(Some("enabled=1,type=virtio")), (true, true));
    assert_eq!(agent_freeze(Some("1,freeze-fs=0")), (true, false));
    assert_eq!(agent_freeze(Some("1,freeze-fs-on-backup=0")), (true, false));
    assert_eq!(agent_freeze(Some("enabled=0,freeze-fs=1")), (false, false));
}

#[test]
fn zvol_mode_refuses_a_vm_with_a_disk_elsewhere() {
    let mut st = state();
    let g = st.guests.get_mut(&Vmid(201)).unwrap();
    g.conf_text = "scsi0: local:201/vm-201-disk-0.raw,size=8G\n".into();
    g.config = crate::pve::conf::parse_guest_config(
        GuestKind::Qemu,
        Vmid(201),
        std::path::Path::new("201.conf"),
        &g.conf_text,
    )
    .map_err(|e| e.to_string());
    let mut o = opts(false);
    o.vm_mode = VmMode::Zvol;
    let p = build_plan(&st, &datasets(), &["201".to_string()], &o);
    assert!(p.jobs.is_empty());
    assert!(
        p.errors[0]
            .message
            .contains("VM 201: --vm-mode zvol needs every disk")
            && p.errors[0].message.contains("scsi0"),
        "{}",
        p.errors[0].message
    );
    o.vm_mode = VmMode::Auto;
    let p = build_plan(&st, &datasets(), &["201".to_string()], &o);
    assert!(matches!(&p.jobs[0], Job::Image(_)), "auto: through vzdump");
}

#[test]
fn json_and_human_renderings() {
    let p = plan(&["100:", "200", "/rpool/data", "999"]);
    let v: serde_json::Value = serde_json::to_value(&p).unwrap();
    assert_eq!(v["jobs"][0]["kind"], "container_files");
    assert_eq!(v["jobs"][0]["volumes"][1]["archive_path"], "srv/data");
    assert_eq!(
        v["jobs"][0]["skipped"][0]["reason"]["why"],
        "backup_disabled"
    );
    assert_eq!(v["jobs"][0]["idmap"]["entries"][0]["kind"], "u");
    assert_eq!(v["jobs"][0]["running"], serde_json::Value::Null);
    assert_eq!(
        v["jobs"][1]["kind"], "zvol",
        "auto: every disk of VM 200 is a zvol"
    );
    assert_eq!(v["jobs"][1]["disks"][0]["key"], "scsi0");
    assert_eq!(v["jobs"][2]["dataset"], "rpool/data");
    assert_eq!(v["errors"][0]["error"]["kind"], "unknown_vmid");
    assert_eq!(v["errors"][0]["error"]["detail"], 999);
    assert_eq!(v["errors"][0]["message"], "no guest 999 in this cluster");

    let text = render_plan(&p);
    let expected = "\
Backup plan for node pve1 (snapshots @proxborg-20261123T071900Z)
  dump-100-2026_11_23-07_19_00
    files of container 100 (tank), id map u 0 100000 65536, g 0 100000 65536  [from 100:]
    ./etc/vzdump/pct.conf, ./etc/vzdump/pct.fw
    rootfs   /                    <- rpool/data/subvol-100-disk-0@proxborg-20261123T071900Z
    mp0      /srv/data            <- rpool/data/subvol-100-disk-1@proxborg-20261123T071900Z
    mp1      /srv/scratch         skipped: backup is not enabled (add ! to the target to include it)
    mp2      /media               skipped: bind mount of host path /mnt/host-media is never backed up
    mp3      /mnt/usb             skipped: device mount /dev/sdb1 is never backed up
  vzdump-qemu-200-2026_11_23-07_19_00.vma
    zvols of VM 200 (winvm) (no guest agent: crash-consistent)  [from 200]
    scsi0    <- zfs send rpool/data/vm-200-disk-0@proxborg-20261123T071900Z
  dataset-rpool-data--2026_11_23-07_19_00
    dataset rpool/data at /rpool/data (not recursive)  [from /rpool/data]
Warnings:
  container 100: mp2 (/media) skipped: bind mount of host path /mnt/host-media is never backed up  [from 100:]
  container 100: mp3 (/mnt/usb) skipped: device mount /dev/sdb1 is never backed up  [from 100:]
Errors:
  no guest 999 in this cluster  [from 999]
";
    assert_eq!(text, expected);
}

#[test]
fn dataset_target_on_captured_zfs_fuse_list() {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/zfs/zfs-fuse-list.txt"
    );
    let ds = parse_list(&std::fs::read_to_string(p).unwrap()).unwrap();
    let p = plan_with(
        &[
            "/tmp/pvefix-mnt/srv",
            "/tmp/pvefix-mnt/data/subvol-100-disk-1",
        ],
        &ds,
        &state(),
    );
    assert_eq!(
        archives(&p),
        ["dataset-tmp-pvefix-mnt-srv--2026_11_23-07_19_00"]
    );
    assert_eq!(
        errors(&p),
        [(
            "/tmp/pvefix-mnt/data/subvol-100-disk-1".into(),
            "/tmp/pvefix-mnt/data/subvol-100-disk-1 is not the mountpoint of a ZFS filesystem (it lies inside pvefix/data mounted at /tmp/pvefix-mnt/data)".into()
        )]
    );
}
