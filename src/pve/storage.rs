//! `storage.cfg` (PVE SectionConfig grammar, PVE-FACTS §5.4) and the volume → ZFS dataset
//! mapping of `ZFSPoolPlugin` (§5.5). Every storage type is parsed; only `zfspool` is
//! interpreted, the rest is enough to say "not ZFS" in a warning.

use super::ConfigError;
use serde::Serialize;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    ZfsPool,
    Dir,
    LvmThin,
    Lvm,
    Nfs,
    Cifs,
    Pbs,
    Rbd,
    CephFs,
    Zfs,
    Other(String),
}

impl StorageType {
    fn from_str(s: &str) -> StorageType {
        match s {
            "zfspool" => StorageType::ZfsPool,
            "dir" => StorageType::Dir,
            "lvmthin" => StorageType::LvmThin,
            "lvm" => StorageType::Lvm,
            "nfs" => StorageType::Nfs,
            "cifs" => StorageType::Cifs,
            "pbs" => StorageType::Pbs,
            "rbd" => StorageType::Rbd,
            "cephfs" => StorageType::CephFs,
            // ZFS over iSCSI: remote, not a local pool we can snapshot.
            "zfs" => StorageType::Zfs,
            o => StorageType::Other(o.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            StorageType::ZfsPool => "zfspool",
            StorageType::Dir => "dir",
            StorageType::LvmThin => "lvmthin",
            StorageType::Lvm => "lvm",
            StorageType::Nfs => "nfs",
            StorageType::Cifs => "cifs",
            StorageType::Pbs => "pbs",
            StorageType::Rbd => "rbd",
            StorageType::CephFs => "cephfs",
            StorageType::Zfs => "zfs",
            StorageType::Other(s) => s,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Storage {
    pub id: String,
    pub kind: StorageType,
    /// Properties in file order; a flag without a value is stored as `1`.
    pub props: Vec<(String, String)>,
}

impl Storage {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.props
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The ZFS pool/dataset under which this storage's volumes live (`zfspool` only).
    pub fn zfs_pool(&self) -> Option<&str> {
        (self.kind == StorageType::ZfsPool)
            .then(|| self.get("pool"))
            .flatten()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StorageConfig {
    pub storages: Vec<Storage>,
}

/// Where a guest volume lives, as far as ZFS is concerned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VolumeDataset {
    /// A filesystem dataset (`subvol-*`/`basevol-*`), e.g. `rpool/data/subvol-100-disk-0`.
    Subvol { dataset: String },
    /// A zvol (`vm-*`/`base-*`).
    Zvol { dataset: String },
}

/// Why a volume is not on a ZFS dataset proxborg can snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum NotZfs {
    #[error("storage '{0}' is not defined in storage.cfg")]
    UnknownStorage(String),
    #[error("storage '{id}' is of type {kind}, not zfspool")]
    OtherType { id: String, kind: String },
    #[error("storage '{0}' (zfspool) has no pool property")]
    NoPool(String),
    #[error("volume name '{0}' is not a PVE ZFS volume name")]
    BadVolname(String),
}

impl StorageConfig {
    pub fn get(&self, id: &str) -> Option<&Storage> {
        self.storages.iter().find(|s| s.id == id)
    }

    /// `ZFSPoolPlugin::parse_volname` + `<pool>/<name>`: a linked clone `base-100-disk-0/vm-..`
    /// lives under its last component.
    pub fn volume_dataset(&self, storage: &str, volname: &str) -> Result<VolumeDataset, NotZfs> {
        let s = self
            .get(storage)
            .ok_or_else(|| NotZfs::UnknownStorage(storage.to_string()))?;
        if s.kind != StorageType::ZfsPool {
            return Err(NotZfs::OtherType {
                id: s.id.clone(),
                kind: s.kind.as_str().to_string(),
            });
        }
        let pool = s.zfs_pool().ok_or_else(|| NotZfs::NoPool(s.id.clone()))?;
        let bad = || NotZfs::BadVolname(volname.to_string());
        let (base, name) = match volname.split_once('/') {
            Some((b, n)) => (Some(b), n),
            None => (None, volname),
        };
        let prefix_ok = |n: &str, kinds: &[&str]| -> Option<bool> {
            let (kind, rest) = n.split_once('-')?;
            let (id, tail) = rest.split_once('-')?;
            let ok = kinds.contains(&kind)
                && !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_digit())
                && !tail.is_empty()
                && !tail.contains(char::is_whitespace);
            ok.then_some(kind == "subvol" || kind == "basevol")
        };
        if let Some(b) = base {
            prefix_ok(b, &["base", "basevol"]).ok_or_else(bad)?;
        }
        let is_fs = prefix_ok(name, &["base", "basevol", "vm", "subvol"]).ok_or_else(bad)?;
        let dataset = format!("{pool}/{name}");
        Ok(if is_fs {
            VolumeDataset::Subvol { dataset }
        } else {
            VolumeDataset::Zvol { dataset }
        })
    }
}

fn valid_storeid(s: &str) -> bool {
    crate::pve::volume::split_volid(&format!("{s}:x")).is_some()
}

pub fn parse_storage_cfg(file: &Path, text: &str) -> Result<StorageConfig, ConfigError> {
    let mut cfg = StorageConfig::default();
    let mut current: Option<usize> = None;
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        if raw.trim().is_empty() {
            current = None;
            continue;
        }
        if raw.trim_start().starts_with('#') {
            continue;
        }
        if raw.starts_with(|c: char| c.is_whitespace()) {
            let Some(i) = current else {
                return Err(ConfigError::syntax(
                    file,
                    line,
                    format!("property outside a section: '{}'", raw.trim()),
                ));
            };
            let t = raw.trim();
            let (k, v) = t
                .split_once(char::is_whitespace)
                .map(|(k, v)| (k, v.trim()))
                .unwrap_or((t, "1"));
            let s = &mut cfg.storages[i];
            if s.get(k).is_some() {
                return Err(ConfigError::syntax(
                    file,
                    line,
                    format!("duplicate attribute '{k}' in storage '{}'", s.id),
                ));
            }
            s.props.push((k.to_string(), v.to_string()));
            continue;
        }
        let Some((t, id)) = raw.split_once(':') else {
            return Err(ConfigError::syntax(
                file,
                line,
                format!("unable to parse section header '{raw}'"),
            ));
        };
        let (t, id) = (t.trim(), id.trim());
        if t.is_empty() || t.contains(char::is_whitespace) || !valid_storeid(id) {
            return Err(ConfigError::syntax(
                file,
                line,
                format!("invalid section header '{raw}'"),
            ));
        }
        if cfg.get(id).is_some() {
            return Err(ConfigError::syntax(
                file,
                line,
                format!("duplicate storage id '{id}'"),
            ));
        }
        cfg.storages.push(Storage {
            id: id.to_string(),
            kind: StorageType::from_str(&t.to_ascii_lowercase()),
            props: Vec::new(),
        });
        current = Some(cfg.storages.len() - 1);
    }
    Ok(cfg)
}

impl StorageConfig {
    /// PVE's `parse_config` always has `dir: local` with `path /var/lib/vz`.
    pub fn ensure_local_dir(&mut self) {
        if self.get("local").is_none() {
            self.storages.push(Storage {
                id: "local".into(),
                kind: StorageType::Dir,
                props: vec![("path".into(), "/var/lib/vz".into())],
            });
        }
    }
}
