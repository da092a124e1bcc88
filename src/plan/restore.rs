//! Planning a restore into a new guest (pure): from a container's stored `pct.conf`, the
//! arguments `pct restore` needs, which it does not read from a piped archive (PVE-FACTS
//! §1.5): `--rootfs STORAGE:GiB[,options]`, one `--mpN STORAGE:GiB,mp=PATH[,options]` per
//! volume mount point, `--unprivileged 1`; bind and device mounts are left out with a note.
//! A container with its own `lxc.idmap` is restored from a file instead of a pipe: only from a
//! file does `pct restore` read the map before extracting (§1.4), so owners land right.

use crate::pve::conf::{parse_guest_config, GuestKind};
use crate::pve::volume::{lxc_mounts, MountSource};
use crate::pve::Vmid;
use std::path::Path;

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Put every volume on this storage instead of the one it came from.
    pub storage: Option<String>,
    /// Overwrite an existing guest of that id.
    pub force: bool,
    /// New MAC addresses (and, for VMs, smbios uuid).
    pub unique: bool,
}

/// How to restore a container archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRestore {
    /// Everything after `pct restore VMID SOURCE`.
    pub args: Vec<String>,
    /// Restore from a tar file rather than a pipe (a custom `lxc.idmap`).
    pub via_file: bool,
    /// What is not restored, and why (bind and device mounts).
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestorePlanError {
    #[error("the archive's pct.conf: {0}")]
    Config(String),
    #[error("the archive's pct.conf gives {key} no size=; pct restore needs one")]
    NoSize { key: String },
}

/// The `pct restore` arguments for the container whose backed-up config is `pct_conf`.
pub fn container_restore(
    pct_conf: &str,
    vmid: Vmid,
    options: &RestoreOptions,
) -> Result<ContainerRestore, RestorePlanError> {
    let file = Path::new("etc/vzdump/pct.conf");
    let conf = parse_guest_config(GuestKind::Lxc, vmid, file, pct_conf)
        .map_err(|e| RestorePlanError::Config(e.to_string()))?;
    let mounts = lxc_mounts(&conf, file).map_err(|e| RestorePlanError::Config(e.to_string()))?;
    let mut args = Vec::new();
    let mut notes = Vec::new();
    for m in &mounts {
        let storage = match &m.source {
            MountSource::Volume { storage, .. } => options.storage.as_deref().unwrap_or(storage),
            MountSource::Bind { path } => {
                notes.push(format!(
                    "{} (bind mount of {path} at {}) is not restored: add it back with `pct set {} -{} {path},mp={}`",
                    m.key, m.mp, vmid, m.key, m.mp
                ));
                continue;
            }
            MountSource::Device { path } => {
                notes.push(format!(
                    "{} (device {path} at {}) is not restored: add it back with `pct set`",
                    m.key, m.mp
                ));
                continue;
            }
        };
        let size = m
            .size
            .ok_or_else(|| RestorePlanError::NoSize { key: m.key.clone() })?;
        if !m.is_rootfs() && m.backup != Some(true) {
            notes.push(format!(
                "{} ({}) has no backup=1: it is created, and comes back empty unless the backup was made with `!` (`{vmid}:!`)",
                m.key, m.mp
            ));
        }
        let mut spec = format!("{storage}:{}", gib(size));
        // Every option but the volume and its size (which the new volume replaces): mp=,
        // backup=, acl=, quota=, ro=, replicate=, shared=, mountoptions=.
        for (k, v) in &m.options {
            if k != "volume" && k != "size" {
                spec.push_str(&format!(",{k}={v}"));
            }
        }
        args.push(format!("--{}", m.key));
        args.push(spec);
    }
    if conf.unprivileged() {
        args.extend(["--unprivileged".to_string(), "1".to_string()]);
    }
    args.extend(flags(options, false));
    let via_file = conf.main.lxc_values("lxc.idmap").next().is_some();
    Ok(ContainerRestore {
        args,
        via_file,
        notes,
    })
}

/// `qmrestore - VMID` and its options (the archive comes on stdin).
pub fn vm_restore_args(vmid: Vmid, options: &RestoreOptions) -> Vec<String> {
    let mut args = vec!["-".to_string(), vmid.0.to_string()];
    args.extend(flags(options, true));
    args
}

/// `--storage S` (where the tool takes it as the target of every volume), `--force 1`,
/// `--unique 1`: the same spelling for `pct restore` and `qmrestore`.
pub fn flags(options: &RestoreOptions, with_storage: bool) -> Vec<String> {
    let mut args = Vec::new();
    if let (true, Some(s)) = (with_storage, &options.storage) {
        args.extend(["--storage".to_string(), s.clone()]);
    }
    if options.force {
        args.extend(["--force".to_string(), "1".to_string()]);
    }
    if options.unique {
        args.extend(["--unique".to_string(), "1".to_string()]);
    }
    args
}

/// Bytes as the GiB number `pct restore` allocates (PVE's `size / 1024^3`, fractions kept).
fn gib(bytes: u64) -> String {
    let whole = bytes >> 30;
    let rest = bytes & ((1 << 30) - 1);
    if rest == 0 {
        return whole.to_string();
    }
    // Three decimals, rounded up so the new volume is never smaller than the old one.
    let thousandths = (rest * 1000).div_ceil(1 << 30);
    let (whole, thousandths) = if thousandths == 1000 {
        (whole + 1, 0)
    } else {
        (whole, thousandths)
    };
    if thousandths == 0 {
        return whole.to_string();
    }
    format!("{whole}.{thousandths:03}")
        .trim_end_matches('0')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT100: &str = "arch: amd64\nhostname: tank\nmemory: 512\nmp0: local-zfs:subvol-100-disk-1,mp=/srv/data,backup=1,size=2G\nmp1: /mnt/host/share,mp=/mnt/share\nmp2: other:subvol-100-disk-2,mp=/var/cache/big,acl=1,size=512M\nrootfs: local-zfs:subvol-100-disk-0,size=8G\nunprivileged: 1\n";

    #[test]
    fn a_container_gets_its_volumes_sizes_options_and_privilege_back() {
        let r = container_restore(CT100, Vmid(120), &RestoreOptions::default()).unwrap();
        assert_eq!(
            r.args,
            [
                "--rootfs",
                "local-zfs:8",
                "--mp0",
                "local-zfs:2,mp=/srv/data,backup=1",
                "--mp2",
                "other:0.5,mp=/var/cache/big,acl=1",
                "--unprivileged",
                "1"
            ]
        );
        assert!(!r.via_file);
        assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
        assert!(r.notes[0].contains("mp1") && r.notes[0].contains("/mnt/host/share"));
        assert!(r.notes[1].contains("mp2") && r.notes[1].contains("no backup=1"));
    }

    #[test]
    fn storage_force_and_unique_are_passed_on() {
        let o = RestoreOptions {
            storage: Some("tank".into()),
            force: true,
            unique: true,
        };
        let r = container_restore(CT100, Vmid(120), &o).unwrap();
        assert_eq!(r.args[1], "tank:8");
        assert_eq!(r.args[3], "tank:2,mp=/srv/data,backup=1");
        assert!(r
            .args
            .ends_with(&["--force", "1", "--unique", "1"].map(String::from)));
        assert_eq!(
            vm_restore_args(Vmid(220), &o),
            [
                "-",
                "220",
                "--storage",
                "tank",
                "--force",
                "1",
                "--unique",
                "1"
            ]
        );
    }

    #[test]
    fn a_custom_idmap_restores_from_a_file_and_a_missing_size_is_an_error() {
        let conf = "rootfs: local-zfs:subvol-102-disk-0,size=4G\nunprivileged: 1\nlxc.idmap: u 0 200000 1000\n";
        assert!(
            container_restore(conf, Vmid(122), &RestoreOptions::default())
                .unwrap()
                .via_file
        );
        let e = container_restore(
            "rootfs: local-zfs:subvol-1-disk-0\n",
            Vmid(122),
            &RestoreOptions::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("rootfs"), "{e}");
    }

    #[test]
    fn sizes_become_gib_never_smaller() {
        assert_eq!(gib(8 << 30), "8");
        assert_eq!(gib(512 << 20), "0.5");
        assert_eq!(gib(0), "0");
        assert_eq!(gib((1 << 30) + 1), "1.001");
        assert_eq!(gib((2 << 30) - 1), "2");
    }
}
