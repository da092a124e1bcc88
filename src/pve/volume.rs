//! Volume property strings of guest configs: LXC `rootfs`/`mpN` (PVE-FACTS §5.2) and QEMU
//! disks `ideN/sataN/scsiN/virtioN/efidisk0/tpmstate0` (§5.3), with the rules that decide what a
//! backup includes (§2.1, §4.1). Mapping a volume to a ZFS dataset is `storage`'s job.

use super::conf::{GuestConfig, Section};
use super::text::{parse_size, PropertyString};
use super::ConfigError;
use serde::Serialize;
use std::path::Path;

/// Where a mount point's data comes from (`classify_mountpoint`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MountSource {
    /// `storage:volname`, e.g. `local-zfs:subvol-100-disk-0`.
    Volume { storage: String, volname: String },
    /// An absolute host path bind-mounted into the container.
    Bind { path: String },
    /// A host block device (`/dev/...`).
    Device { path: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LxcMount {
    /// `rootfs` or `mpN`.
    pub key: String,
    pub source: MountSource,
    /// Path inside the container; `/` for rootfs.
    pub mp: String,
    /// The `backup=` option as written; `None` when absent.
    pub backup: Option<bool>,
    /// `size=` in bytes.
    pub size: Option<u64>,
    pub acl: Option<bool>,
    pub ro: Option<bool>,
    pub quota: Option<bool>,
    pub replicate: Option<bool>,
    pub shared: Option<bool>,
    /// Every option as written, for whatever the typed fields do not cover.
    pub options: Vec<(String, String)>,
}

impl LxcMount {
    pub fn is_rootfs(&self) -> bool {
        self.key == "rootfs"
    }

    /// vzdump's `mountpoint_backup_enabled`: rootfs always, volume mps only with `backup=1`,
    /// bind and device mounts never.
    pub fn vzdump_includes(&self) -> bool {
        self.is_rootfs()
            || (matches!(self.source, MountSource::Volume { .. }) && self.backup == Some(true))
    }
}

/// Splits a volume id `storage:volname`; `None` for anything without a valid storage id.
pub fn split_volid(v: &str) -> Option<(&str, &str)> {
    let (s, name) = v.split_once(':')?;
    let b = s.as_bytes();
    let ok = b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c));
    (ok && !name.is_empty()).then_some((s, name))
}

fn classify(v: &str) -> Option<MountSource> {
    if v.starts_with("/dev/") {
        Some(MountSource::Device {
            path: v.to_string(),
        })
    } else if v.starts_with('/') {
        Some(MountSource::Bind {
            path: v.to_string(),
        })
    } else {
        split_volid(v).map(|(s, n)| MountSource::Volume {
            storage: s.to_string(),
            volname: n.to_string(),
        })
    }
}

fn mount_index(key: &str) -> Option<u32> {
    if key == "rootfs" {
        return Some(0);
    }
    let n: u32 = key.strip_prefix("mp")?.parse().ok()?;
    (n < 256 && key == format!("mp{n}")).then_some(n + 1)
}

fn parse_mount(
    file: &Path,
    section: &Section,
    key: &str,
    value: &str,
) -> Result<LxcMount, ConfigError> {
    let line = section.line_of(key);
    let err = |msg: String| ConfigError::syntax(file, line, format!("{key}: {msg}"));
    let p = PropertyString::parse(value).map_err(&err)?;
    let vol = p
        .default
        .clone()
        .or_else(|| p.get("volume").map(str::to_string));
    let vol = vol.ok_or_else(|| err("no volume".into()))?;
    let source = classify(&vol).ok_or_else(|| {
        err(format!(
            "'{vol}' is neither storage:volume nor an absolute path"
        ))
    })?;
    let mp = if key == "rootfs" {
        "/".to_string()
    } else {
        let mp = p.get("mp").ok_or_else(|| err("missing mp=".into()))?;
        if !mp.starts_with('/') || mp.split('/').any(|c| c == ".." || c == ".") {
            return Err(err(format!("mp={mp} is not a clean absolute path")));
        }
        mp.trim_end_matches('/').to_string()
    };
    let b = |k: &str| p.get_bool(k).map_err(&err);
    let size = match p.get("size") {
        Some(s) => Some(parse_size(s).ok_or_else(|| err(format!("size={s} is not a size")))?),
        None => None,
    };
    Ok(LxcMount {
        key: key.to_string(),
        source,
        mp,
        backup: b("backup")?,
        size,
        acl: b("acl")?,
        ro: b("ro")?,
        quota: b("quota")?,
        replicate: b("replicate")?,
        shared: b("shared")?,
        options: p.props,
    })
}

/// The container's `rootfs` and `mpN` entries from the main section, rootfs first, then by
/// index (the order vzdump uses).
pub fn lxc_mounts(conf: &GuestConfig, file: &Path) -> Result<Vec<LxcMount>, ConfigError> {
    let mut out: Vec<(u32, LxcMount)> = Vec::new();
    for (k, v) in &conf.main.entries {
        if let Some(i) = mount_index(k) {
            out.push((i, parse_mount(file, &conf.main, k, v)?));
        }
    }
    if !out.iter().any(|(i, _)| *i == 0) {
        return Err(ConfigError::invalid(file, "container config has no rootfs"));
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out.into_iter().map(|(_, m)| m).collect())
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QemuDisk {
    /// `scsi0`, `efidisk0`, ...
    pub key: String,
    /// The volume as written: a volid, an absolute path, `none` or `cdrom`.
    pub volume: String,
    pub storage: Option<String>,
    pub cdrom: bool,
    /// `backup=0` turns this off.
    pub backup: bool,
    pub size: Option<u64>,
}

impl QemuDisk {
    /// `get_backup_volumes` minus the `bios: ovmf` check for efidisks, which the caller has
    /// the config for (see [`qemu_disks`]).
    pub fn vzdump_includes(&self) -> bool {
        !self.cdrom && self.backup && self.volume != "none"
    }
}

fn qemu_disk_order(key: &str) -> Option<(u8, u32)> {
    const BUSES: [&str; 6] = ["ide", "sata", "scsi", "virtio", "efidisk", "tpmstate"];
    let digits = key.find(|c: char| c.is_ascii_digit())?;
    let (bus, n) = key.split_at(digits);
    let pos = BUSES.iter().position(|b| *b == bus)? as u8;
    let n: u32 = n.parse().ok()?;
    let max = [4, 6, 31, 16, 1, 1][pos as usize];
    (n < max && key == format!("{bus}{n}")).then_some((pos, n))
}

/// The VM's disks from the main section, in PVE's bus order.
pub fn qemu_disks(conf: &GuestConfig, file: &Path) -> Result<Vec<QemuDisk>, ConfigError> {
    let mut out = Vec::new();
    for (k, v) in &conf.main.entries {
        let Some(order) = qemu_disk_order(k) else {
            continue;
        };
        let line = conf.main.line_of(k);
        let err = |msg: String| ConfigError::syntax(file, line, format!("{k}: {msg}"));
        let p = PropertyString::parse(v).map_err(&err)?;
        let volume = p
            .default
            .clone()
            .or_else(|| p.get("file").map(str::to_string));
        let volume = volume.ok_or_else(|| err("no volume".into()))?;
        let cdrom = p.get("media") == Some("cdrom") || volume == "cdrom";
        let size = p
            .get("size")
            .map(|s| parse_size(s).ok_or_else(|| err(format!("size={s} is not a size"))))
            .transpose()?;
        let mut backup = p.get_bool("backup").map_err(&err)?.unwrap_or(true);
        if k.starts_with("efidisk") && conf.main.get("bios") != Some("ovmf") {
            backup = false;
        }
        out.push((
            order,
            QemuDisk {
                key: k.clone(),
                storage: split_volid(&volume).map(|(s, _)| s.to_string()),
                volume,
                cdrom,
                backup,
                size,
            },
        ));
    }
    out.sort_by_key(|(o, _)| *o);
    Ok(out.into_iter().map(|(_, d)| d).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pve::conf::{parse_guest_config, GuestKind};
    use crate::pve::Vmid;

    fn lxc(text: &str) -> Result<Vec<LxcMount>, ConfigError> {
        let f = Path::new("lxc/100.conf");
        lxc_mounts(&parse_guest_config(GuestKind::Lxc, Vmid(100), f, text)?, f)
    }

    #[test]
    fn classifies_volumes_binds_and_devices() {
        let m = lxc("mp1: /dev/sdb1,mp=/mnt/dev\nrootfs: local-zfs:subvol-100-disk-0,size=8G\nmp0: /srv/host,mp=/mnt/host/,ro=1\nmp10: local-zfs:subvol-100-disk-1,mp=/data,backup=1,acl=0,quota=1,replicate=0,shared=0\n").unwrap();
        assert_eq!(
            m.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(),
            ["rootfs", "mp0", "mp1", "mp10"]
        );
        assert_eq!(
            m[0].source,
            MountSource::Volume {
                storage: "local-zfs".into(),
                volname: "subvol-100-disk-0".into()
            }
        );
        assert_eq!(m[0].size, Some(8 << 30));
        assert_eq!(
            m[1].source,
            MountSource::Bind {
                path: "/srv/host".into()
            }
        );
        assert_eq!(m[1].mp, "/mnt/host");
        assert_eq!(m[1].ro, Some(true));
        assert_eq!(
            m[2].source,
            MountSource::Device {
                path: "/dev/sdb1".into()
            }
        );
        assert_eq!(
            (m[3].acl, m[3].quota, m[3].replicate, m[3].shared),
            (Some(false), Some(true), Some(false), Some(false))
        );
        assert_eq!(
            m.iter().map(LxcMount::vzdump_includes).collect::<Vec<_>>(),
            [true, false, false, true]
        );
    }

    #[test]
    fn refuses_broken_mounts_with_line() {
        let e = lxc("rootfs: local-zfs:subvol-100-disk-0\nmp0: local-zfs:subvol-100-disk-1\n")
            .unwrap_err();
        assert_eq!(e.to_string(), "lxc/100.conf:2: mp0: missing mp=");
        let e = lxc("rootfs: local-zfs:x\nmp0: local-zfs:y,mp=/a/../etc\n").unwrap_err();
        assert!(e.to_string().contains(":2: mp0: mp=/a/../etc"), "{e}");
        let e = lxc("rootfs: junk\n").unwrap_err();
        assert!(e.to_string().contains(":1: rootfs: 'junk'"), "{e}");
        assert!(lxc("arch: amd64\n")
            .unwrap_err()
            .to_string()
            .contains("no rootfs"));
    }
}
