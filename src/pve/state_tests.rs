//! Golden tests on the fixture node `tests/fixtures/pve/node1` (an `/etc/pve`-shaped tree).
use super::*;
use crate::pve::idmap::{IdKind, IdMap};
use crate::pve::storage::{NotZfs, StorageType, VolumeDataset};
use crate::pve::volume::{lxc_mounts, qemu_disks, MountSource};
use crate::pve::vzdump_pct_conf;

fn root() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/pve/node1"
    ))
}

fn expected(name: &str) -> String {
    let p = format!(
        "{}/tests/fixtures/pve/expected/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn state() -> PveState {
    PveState::load(&root()).unwrap()
}

fn config(s: &PveState, vmid: u32) -> &GuestConfig {
    s.guests[&Vmid(vmid)].config.as_ref().unwrap()
}

#[test]
fn loads_the_node() {
    let s = state();
    assert_eq!(s.node, "pve1");
    assert_eq!(
        s.guests.keys().map(|v| v.0).collect::<Vec<_>>(),
        [100, 101, 102, 103, 104, 200, 201]
    );
    assert_eq!(
        s.vmlist.ids[&Vmid(300)].node,
        "pve2",
        "other nodes' guests stay in the vmlist only"
    );
    assert_eq!(s.guests[&Vmid(200)].kind, GuestKind::Qemu);
    assert_eq!(s.guests[&Vmid(100)].hostname(), Some("tank"));
    assert_eq!(s.guests[&Vmid(201)].hostname(), Some("dup"));
    assert!(s.guests[&Vmid(100)]
        .firewall
        .as_deref()
        .unwrap()
        .starts_with("[OPTIONS]\nenable: 1\n"));
    assert!(s.guests[&Vmid(101)].firewall.is_none());
    assert!(s.guests[&Vmid(100)]
        .conf_path
        .ends_with("nodes/pve1/lxc/100.conf"));
}

#[test]
fn ct100_unprivileged_with_mounts() {
    let s = state();
    let c = config(&s, 100);
    let f = Path::new("100.conf");
    assert!(c.unprivileged());
    assert_eq!(
        c.main.description.as_deref(),
        Some("Main file server: tank\n\nowner: ops team, 100% critical\n")
    );
    assert_eq!(c.main.get("parent"), Some("before-upgrade"));
    assert_eq!(c.pending.as_ref().unwrap().get("memory"), Some("4096"));
    assert_eq!(c.snapshots.len(), 1);
    assert_eq!(c.snapshots[0].name, "before-upgrade");
    assert_eq!(c.snapshots[0].section.get("snaptime"), Some("1700000000"));
    assert_eq!(c.main.lxc.len(), 2);
    let m = lxc_mounts(c, f).unwrap();
    let keys: Vec<_> = m
        .iter()
        .map(|m| (m.key.as_str(), m.mp.as_str(), m.backup, m.vzdump_includes()))
        .collect();
    assert_eq!(
        keys,
        [
            ("rootfs", "/", None, true),
            ("mp0", "/srv/data", Some(true), true),
            ("mp1", "/srv/scratch", Some(false), false),
            ("mp2", "/media", None, false),
            ("mp3", "/mnt/usb", None, false),
        ]
    );
    assert_eq!(
        m[2].source,
        MountSource::Volume {
            storage: "local-zfs".into(),
            volname: "subvol-100-disk-2".into()
        }
    );
    assert_eq!(
        m[3].source,
        MountSource::Bind {
            path: "/mnt/host-media".into()
        }
    );
    assert_eq!(
        m[4].source,
        MountSource::Device {
            path: "/dev/sdb1".into()
        }
    );
    assert_eq!(m[1].size, Some(32 << 30));
    assert_eq!(
        IdMap::from_config(c, f).unwrap(),
        IdMap::default_unprivileged()
    );
}

#[test]
fn ct101_privileged_and_ct102_custom_map() {
    let s = state();
    let f = Path::new("x.conf");
    let c101 = config(&s, 101);
    assert!(!c101.unprivileged());
    assert!(IdMap::from_config(c101, f).unwrap().is_identity());
    let m = IdMap::from_config(config(&s, 102), f).unwrap();
    assert_eq!(m.entries.len(), 6);
    assert_eq!(m.host_to_ct(IdKind::Uid, 1005), Some(1005));
    assert_eq!(m.host_to_ct(IdKind::Gid, 101_008), Some(1008));
}

#[test]
fn vm200_disks() {
    let s = state();
    let d = qemu_disks(config(&s, 200), Path::new("200.conf")).unwrap();
    let v: Vec<_> = d
        .iter()
        .map(|d| (d.key.as_str(), d.cdrom, d.vzdump_includes()))
        .collect();
    assert_eq!(
        v,
        [
            ("ide2", true, false),
            ("scsi0", false, true),
            ("scsi1", false, false),
            ("efidisk0", false, false)
        ]
    );
    assert_eq!(d[1].storage.as_deref(), Some("local-zfs"));
    assert_eq!(d[2].size, Some(100 << 30));
    let c = config(&s, 200);
    assert_eq!(c.pending.as_ref().unwrap().get("cores"), Some("8"));
    assert_eq!(
        c.snapshots[0].section.get("vmstate"),
        Some("local-zfs:vm-200-state-clean")
    );
    assert_eq!(c.main.description.as_deref(), Some("Windows build VM\n"));
}

#[test]
fn storage_cfg_golden() {
    let st = &state().storage;
    let kinds: Vec<_> = st
        .storages
        .iter()
        .map(|s| (s.id.as_str(), s.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("local", "dir"),
            ("local-zfs", "zfspool"),
            ("tank-ct", "zfspool"),
            ("local-lvm", "lvmthin"),
            ("backup", "pbs"),
            ("nas", "nfs")
        ]
    );
    let z = st.get("local-zfs").unwrap();
    assert_eq!(z.zfs_pool(), Some("rpool/data"));
    assert_eq!(z.get("sparse"), Some("1"), "a bare flag means 1");
    assert_eq!(z.get("content"), Some("images,rootdir"));
    assert_eq!(
        st.get("tank-ct").unwrap().get("mountpoint"),
        Some("/tank/ct")
    );
    assert_eq!(st.get("backup").unwrap().kind, StorageType::Pbs);
    assert_eq!(st.get("nas").unwrap().get("options"), Some("vers=4.2"));
    assert_eq!(
        st.volume_dataset("local-zfs", "subvol-100-disk-0"),
        Ok(VolumeDataset::Subvol {
            dataset: "rpool/data/subvol-100-disk-0".into()
        })
    );
    assert_eq!(
        st.volume_dataset("local-zfs", "vm-200-disk-0"),
        Ok(VolumeDataset::Zvol {
            dataset: "rpool/data/vm-200-disk-0".into()
        })
    );
    assert_eq!(
        st.volume_dataset("local-zfs", "basevol-900-disk-0/subvol-105-disk-0"),
        Ok(VolumeDataset::Subvol {
            dataset: "rpool/data/subvol-105-disk-0".into()
        })
    );
    assert_eq!(
        st.volume_dataset("local-lvm", "vm-104-disk-0"),
        Err(NotZfs::OtherType {
            id: "local-lvm".into(),
            kind: "lvmthin".into()
        })
    );
    assert_eq!(
        st.volume_dataset("nope", "x"),
        Err(NotZfs::UnknownStorage("nope".into()))
    );
    assert_eq!(
        st.volume_dataset("local-zfs", "disk.raw"),
        Err(NotZfs::BadVolname("disk.raw".into()))
    );
}

#[test]
fn storage_cfg_errors_name_line() {
    let f = Path::new("storage.cfg");
    let e = crate::pve::parse_storage_cfg(f, "dir: local\n\tpath /a\n\tpath /b\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "storage.cfg:3: duplicate attribute 'path' in storage 'local'"
    );
    let e = crate::pve::parse_storage_cfg(f, "\tpath /a\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("storage.cfg:1: property outside a section"),
        "{e}"
    );
    let e = crate::pve::parse_storage_cfg(f, "# c\ndir: 1bad\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("storage.cfg:2: invalid section header"),
        "{e}"
    );
}

#[test]
fn user_cfg_pools_golden() {
    let p = state().pools;
    let v: Vec<_> = p
        .iter()
        .map(|p| {
            (
                p.id.as_str(),
                p.vmids.iter().map(|v| v.0).collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(
        v,
        [
            ("prod", vec![100, 101, 200]),
            ("prod/sub", vec![102]),
            ("test", vec![103, 104]),
            ("empty", vec![])
        ]
    );
    assert_eq!(p[0].comment, "Production guests: critical");
    assert_eq!(p[1].storages, ["local-zfs"]);
    let e = crate::pve::parse_user_cfg_pools(
        Path::new("user.cfg"),
        "user:root@pam:1:0:::\npool:bad pool::::\n",
    )
    .unwrap_err()
    .to_string();
    assert_eq!(e, "user.cfg:2: invalid pool id 'bad pool'");
    let e = crate::pve::parse_user_cfg_pools(Path::new("user.cfg"), "pool:p::12x::\n")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "user.cfg:1: pool 'p': invalid vmid '12x'");
}

#[test]
fn vzdump_pct_conf_golden() {
    let s = state();
    assert_eq!(
        vzdump_pct_conf(&s.guests[&Vmid(100)].conf_text).unwrap(),
        expected("100-pct.conf")
    );
    assert_eq!(
        vzdump_pct_conf(&s.guests[&Vmid(101)].conf_text).unwrap(),
        expected("101-pct.conf")
    );
    let out = vzdump_pct_conf(&s.guests[&Vmid(102)].conf_text).unwrap();
    assert!(out.ends_with("unprivileged: 1\nlxc.idmap: u 0 100000 1005\nlxc.idmap: g 0 100000 1007\nlxc.idmap: u 1005 1005 1\nlxc.idmap: g 1007 1007 1\nlxc.idmap: u 1006 101006 64530\nlxc.idmap: g 1008 101008 64528\n"), "{out}");
    assert!(vzdump_pct_conf("a: 1\na: 2\n").is_err());
    assert_eq!(
        vzdump_pct_conf("junk line\nb: 2\na: 1\n").unwrap(),
        "a: 1\nb: 2\n",
        "PVE drops what it cannot parse"
    );
}

#[test]
fn load_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = PveState::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains(".vmlist") && e.contains("missing"), "{e}");
    std::fs::write(
        dir.path().join(".vmlist"),
        r#"{"version":1,"ids":{"100":{"node":"n1","type":"lxc","version":1}}}"#,
    )
    .unwrap();
    let e = PveState::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("local"), "{e}");
    std::os::unix::fs::symlink("nodes/n1", dir.path().join("local")).unwrap();
    std::fs::create_dir_all(dir.path().join("nodes/n1/lxc")).unwrap();
    std::fs::write(
        dir.path().join("nodes/n1/lxc/100.conf"),
        "rootfs: local-zfs:subvol-100-disk-0\nrootfs: local-zfs:subvol-100-disk-1\n",
    )
    .unwrap();
    let s = PveState::load(dir.path()).unwrap();
    let err = s.guests[&Vmid(100)].config.as_ref().unwrap_err();
    assert!(
        err.ends_with("nodes/n1/lxc/100.conf:2: duplicate key 'rootfs'"),
        "{err}"
    );
    assert_eq!(
        s.storage.get("local").unwrap().kind,
        StorageType::Dir,
        "dir: local always exists"
    );
}

#[test]
fn an_oversized_file_is_refused_not_read() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("storage.cfg");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(MAX_FILE + 1).unwrap();
    let err = read_opt(&p).unwrap_err().to_string();
    assert!(err.contains("larger than"), "{err}");
    f.set_len(3).unwrap();
    assert_eq!(read_opt(&p).unwrap().as_deref(), Some("\0\0\0"));
    assert!(read_opt(&d.path().join("missing")).unwrap().is_none());
}
