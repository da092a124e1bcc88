//! Loading the PVE state proxborg plans from: the one place in `pve` that reads files, all of
//! them under a root directory shaped like `/etc/pve` (the CLI passes `PROXBORG_PVE_ROOT`).
//! It reads `.vmlist`, resolves `local` to `nodes/<node>`, and reads this node's guest configs,
//! `storage.cfg`, `user.cfg` and `firewall/<vmid>.fw`. A broken guest config does not stop the
//! load: it is kept as an error for the guest, so other targets still plan.
//!
//! Limits: a file over `MAX_FILE` bytes or not UTF-8 is an error before it is parsed; the
//! parsers themselves allocate in proportion to the text (no counts are read from it).

use super::conf::{parse_guest_config, GuestConfig, GuestKind};
use super::pools::{parse_user_cfg_pools, Pool};
use super::storage::{parse_storage_cfg, StorageConfig};
use super::vmlist::{parse_vmlist, VmList};
use super::{ConfigError, Vmid};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A guest on this node.
#[derive(Clone, Debug, Serialize)]
pub struct Guest {
    pub vmid: Vmid,
    pub kind: GuestKind,
    /// The config file, under the root (for messages).
    pub conf_path: PathBuf,
    /// The config text as read (vzdump's `pct.conf` is derived from it).
    #[serde(skip)]
    pub conf_text: String,
    /// The parsed config, or why it could not be parsed.
    #[serde(skip)]
    pub config: Result<GuestConfig, String>,
    /// `firewall/<vmid>.fw`, when it exists.
    #[serde(skip)]
    pub firewall: Option<String>,
}

impl Guest {
    pub fn hostname(&self) -> Option<&str> {
        self.config.as_ref().ok().and_then(GuestConfig::hostname)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct PveState {
    pub root: PathBuf,
    /// This node's name (`local` → `nodes/<node>`).
    pub node: String,
    pub vmlist: VmList,
    /// Guests whose config lives on this node.
    pub guests: BTreeMap<Vmid, Guest>,
    pub storage: StorageConfig,
    pub pools: Vec<Pool>,
}

/// Largest PVE file read. pmxcfs keeps small files (a guest config is a few KiB); anything
/// this large is not one, and is refused rather than read into memory.
pub const MAX_FILE: u64 = 16 << 20;

fn read_opt(path: &Path) -> Result<Option<String>, ConfigError> {
    use std::io::Read;
    let io = |source| ConfigError::Io {
        file: path.to_path_buf(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io(source)),
    };
    let mut b = Vec::new();
    file.take(MAX_FILE + 1).read_to_end(&mut b).map_err(io)?;
    if b.len() as u64 > MAX_FILE {
        return Err(ConfigError::invalid(
            path,
            format!("larger than {MAX_FILE} bytes"),
        ));
    }
    String::from_utf8(b)
        .map(Some)
        .map_err(|_| ConfigError::invalid(path, "not UTF-8 text"))
}

impl PveState {
    /// Reads the state under `root` (normally `/etc/pve`). Missing `storage.cfg`, `user.cfg`
    /// or firewall files mean "none"; a missing `.vmlist` or `local` link is an error, since
    /// without them we cannot tell which guests are ours.
    pub fn load(root: &Path) -> Result<PveState, ConfigError> {
        let vmlist_path = root.join(".vmlist");
        let text = read_opt(&vmlist_path)?
            .ok_or_else(|| ConfigError::invalid(&vmlist_path, "missing (is this a PVE node?)"))?;
        let vmlist = parse_vmlist(&vmlist_path, &text)?;

        let local = root.join("local");
        let target = std::fs::read_link(&local).map_err(|source| ConfigError::Io {
            file: local.clone(),
            source,
        })?;
        let node = target
            .strip_prefix("nodes")
            .ok()
            .and_then(|p| p.to_str())
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .ok_or_else(|| {
                ConfigError::invalid(
                    &local,
                    format!("points to '{}', not nodes/<node>", target.display()),
                )
            })?
            .to_string();

        let storage_path = root.join("storage.cfg");
        let mut storage = match read_opt(&storage_path)? {
            Some(t) => parse_storage_cfg(&storage_path, &t)?,
            None => StorageConfig::default(),
        };
        storage.ensure_local_dir();
        let user_path = root.join("user.cfg");
        let pools = match read_opt(&user_path)? {
            Some(t) => parse_user_cfg_pools(&user_path, &t)?,
            None => Vec::new(),
        };

        let mut guests = BTreeMap::new();
        for (&vmid, entry) in vmlist.ids.iter().filter(|(_, e)| e.node == node) {
            let dir = match entry.kind {
                GuestKind::Lxc => "lxc",
                GuestKind::Qemu => "qemu-server",
            };
            let conf_path = root
                .join("nodes")
                .join(&node)
                .join(dir)
                .join(format!("{vmid}.conf"));
            let (conf_text, config) = match read_opt(&conf_path) {
                Ok(Some(t)) => {
                    let c = parse_guest_config(entry.kind, vmid, &conf_path, &t)
                        .map_err(|e| e.to_string());
                    (t, c)
                }
                Ok(None) => (
                    String::new(),
                    Err(format!(
                        "{}: missing, although .vmlist lists it",
                        conf_path.display()
                    )),
                ),
                Err(e) => (String::new(), Err(e.to_string())),
            };
            let firewall = read_opt(&root.join("firewall").join(format!("{vmid}.fw")))?;
            guests.insert(
                vmid,
                Guest {
                    vmid,
                    kind: entry.kind,
                    conf_path,
                    conf_text,
                    config,
                    firewall,
                },
            );
        }
        Ok(PveState {
            root: root.to_path_buf(),
            node,
            vmlist,
            guests,
            storage,
            pools,
        })
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
