//! Pure readers of Proxmox VE state: guest configs (`lxc/<vmid>.conf`, `qemu-server/<vmid>.conf`),
//! `storage.cfg`, `user.cfg` pools, `.vmlist`, and the container id map. Text goes in, typed
//! structs come out; every error names the file and line at fault. This module never runs a
//! command and never mounts anything; the one function allowed to read files is
//! [`state::PveState::load`], which reads the `/etc/pve`-shaped tree it is pointed at.
//! Grammar and semantics follow shared/PVE-FACTS.md §2, §5, §6 and §8.

pub mod conf;
pub mod idmap;
pub mod pools;
pub mod state;
pub mod storage;
pub mod text;
pub mod vmlist;
pub mod volume;
pub mod vzdump;

use std::path::PathBuf;

pub use conf::{parse_guest_config, GuestConfig, GuestKind, Section, Snapshot};
pub use idmap::{
    translate_capability, translate_item, IdKind, IdMap, IdMapEntry, TranslateWarning, OVERFLOW_ID,
};
pub use pools::{parse_user_cfg_pools, Pool};
pub use state::{Guest, PveState};
pub use storage::{parse_storage_cfg, NotZfs, Storage, StorageConfig, StorageType, VolumeDataset};
pub use vmlist::{parse_vmlist, VmList, VmListEntry};
pub use volume::{lxc_mounts, qemu_disks, LxcMount, MountSource, QemuDisk};
pub use vzdump::vzdump_pct_conf;

/// A container or VM id: PVE allows 100..=999_999_999; ids below 100 are reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct Vmid(pub u32);

impl Vmid {
    /// Parses the decimal form PVE uses in file names and target words (no sign, no leading 0).
    pub fn parse(s: &str) -> Option<Vmid> {
        if s.is_empty()
            || s.len() > 9
            || s.starts_with('0')
            || !s.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let n: u32 = s.parse().ok()?;
        (n >= 100).then_some(Vmid(n))
    }
}

impl std::fmt::Display for Vmid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What went wrong reading PVE state. `line` is 1-based; 0 means "the file as a whole".
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}:{line}: {msg}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{}: {msg}", file.display())]
    Invalid { file: PathBuf, msg: String },
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ConfigError {
    pub(crate) fn syntax(file: &std::path::Path, line: usize, msg: impl Into<String>) -> Self {
        ConfigError::Syntax {
            file: file.to_path_buf(),
            line,
            msg: msg.into(),
        }
    }

    pub(crate) fn invalid(file: &std::path::Path, msg: impl Into<String>) -> Self {
        ConfigError::Invalid {
            file: file.to_path_buf(),
            msg: msg.into(),
        }
    }
}
