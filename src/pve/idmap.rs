//! A container's user namespace id map (PVE-FACTS §6, `PVE::LXC::parse_id_maps`) and the
//! translation of recorded items from host ids to the ids the container sees: owners, ACL
//! qualifiers and file capabilities, following what the kernel shows inside the namespace.
//! Pure: it rewrites `Item` values and never touches a file.
//!
//! File capabilities (`security.capability`, `struct vfs_cap_data` / `vfs_ns_cap_data`, all
//! little-endian): v2 = `magic_etc` (0x02000000 | flags) + permitted/inheritable pairs, 20
//! bytes; v3 = the same with 0x03000000 plus a trailing `rootid` u32, 24 bytes. What a process
//! in the container reads is decided by `cap_inode_getsecurity`, which we mirror for a
//! container namespace whose parent is the initial namespace (how LXC on PVE runs):
//! - the capability's root (0 for v2, `rootid` for v3) maps to a container id `r != 0`: the
//!   container sees v3 with `rootid = r`;
//! - it maps to container root 0 (e.g. rootid 100000 under the default map), or it is host
//!   root 0 (every v2): the container sees v2;
//! - otherwise (a v3 belonging to another namespace's root): the kernel answers EOVERFLOW, the
//!   container cannot read it, and vzdump's tar would not store it, so we drop it and say so.
//!
//! A capability xattr of neither shape is dropped too (the kernel answers EINVAL).

use super::conf::GuestConfig;
use super::ConfigError;
use crate::item::{AclEntry, AclTag, Item};
use serde::Serialize;
use std::path::Path;

/// What the kernel shows for an id that has no mapping in the namespace (`overflowuid`).
pub const OVERFLOW_ID: u32 = 65534;

pub const CAP_XATTR: &[u8] = b"security.capability";
const REVISION_MASK: u32 = 0xFF00_0000;
const REVISION_2: u32 = 0x0200_0000;
const REVISION_3: u32 = 0x0300_0000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum IdKind {
    #[serde(rename = "u")]
    Uid,
    #[serde(rename = "g")]
    Gid,
}

/// One `lxc.idmap` line: container ids `ct_start..ct_start+count` are host ids
/// `host_start..host_start+count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct IdMapEntry {
    pub kind: IdKind,
    pub ct_start: u32,
    pub host_start: u32,
    pub count: u32,
}

impl IdMapEntry {
    /// Parses `u 0 100000 65536` (PVE's regex `^([ug])\s+(\d+)\s+(\d+)\s+(\d+)\s*$`).
    pub fn parse(s: &str) -> Option<IdMapEntry> {
        let f: Vec<&str> = s.split_whitespace().collect();
        let [t, c, h, n] = f.as_slice() else {
            return None;
        };
        let kind = match *t {
            "u" => IdKind::Uid,
            "g" => IdKind::Gid,
            _ => return None,
        };
        let num = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| s.parse::<u32>().ok())
                .flatten()
        };
        let e = IdMapEntry {
            kind,
            ct_start: num(c)?,
            host_start: num(h)?,
            count: num(n)?,
        };
        let fits = |start: u32| start.checked_add(e.count).is_some();
        (e.count > 0
            && fits(e.ct_start)
            && fits(e.host_start)
            && !s.starts_with(char::is_whitespace))
        .then_some(e)
    }
}

/// A container's id map. No entries means a privileged container: ids pass through unchanged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IdMap {
    pub entries: Vec<IdMapEntry>,
}

impl IdMap {
    pub fn identity() -> IdMap {
        IdMap::default()
    }

    /// `u 0 100000 65536` + `g 0 100000 65536`, PVE's map for `unprivileged: 1`.
    pub fn default_unprivileged() -> IdMap {
        let e = |kind| IdMapEntry {
            kind,
            ct_start: 0,
            host_start: 100_000,
            count: 65_536,
        };
        IdMap {
            entries: vec![e(IdKind::Uid), e(IdKind::Gid)],
        }
    }

    /// A map from entries, refusing overlapping container or host ranges (`validate_id_maps`).
    pub fn new(entries: Vec<IdMapEntry>) -> Result<IdMap, String> {
        for (i, a) in entries.iter().enumerate() {
            for b in &entries[..i] {
                if a.kind != b.kind {
                    continue;
                }
                // In u64: entries built by hand need not have passed `parse`'s range check.
                let overlap = |s1: u32, s2: u32| {
                    u64::from(s1) < u64::from(s2) + u64::from(b.count)
                        && u64::from(s2) < u64::from(s1) + u64::from(a.count)
                };
                if overlap(a.ct_start, b.ct_start) || overlap(a.host_start, b.host_start) {
                    return Err(format!("id map entries {a:?} and {b:?} overlap"));
                }
            }
        }
        Ok(IdMap { entries })
    }

    /// The map of a container config: its `lxc.idmap` lines if any (they replace the default
    /// entirely, even without `unprivileged`), else the default map when unprivileged, else
    /// identity.
    pub fn from_config(conf: &GuestConfig, file: &Path) -> Result<IdMap, ConfigError> {
        let mut entries = Vec::new();
        let mut last = 0;
        for (line, v) in conf.main.lxc_values_with_lines("lxc.idmap") {
            let e = IdMapEntry::parse(v).ok_or_else(|| {
                ConfigError::syntax(file, line, format!("invalid lxc.idmap '{v}'"))
            })?;
            entries.push(e);
            last = line;
        }
        if entries.is_empty() {
            return Ok(if conf.unprivileged() {
                IdMap::default_unprivileged()
            } else {
                IdMap::identity()
            });
        }
        IdMap::new(entries).map_err(|m| ConfigError::syntax(file, last, m))
    }

    pub fn is_identity(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn host_to_ct(&self, kind: IdKind, host: u32) -> Option<u32> {
        if self.is_identity() {
            return Some(host);
        }
        self.entries
            .iter()
            .find(|e| e.kind == kind && host >= e.host_start && host - e.host_start < e.count)
            .and_then(|e| e.ct_start.checked_add(host - e.host_start))
    }

    pub fn ct_to_host(&self, kind: IdKind, ct: u32) -> Option<u32> {
        if self.is_identity() {
            return Some(ct);
        }
        self.entries
            .iter()
            .find(|e| e.kind == kind && ct >= e.ct_start && ct - e.ct_start < e.count)
            .and_then(|e| e.host_start.checked_add(ct - e.ct_start))
    }

    /// The id the container sees for a host id: mapped, or 65534 when unmapped.
    pub fn host_to_ct_or_overflow(&self, kind: IdKind, host: u32) -> u32 {
        self.host_to_ct(kind, host).unwrap_or(OVERFLOW_ID)
    }

    /// Host uid / gid of the container's root (100000 for the default map).
    pub fn root_host_ids(&self) -> (Option<u32>, Option<u32>) {
        (
            self.ct_to_host(IdKind::Uid, 0),
            self.ct_to_host(IdKind::Gid, 0),
        )
    }

    /// `-m u:0:100000:65536 -m g:...` for `lxc-usernsexec` (`userns_command`), without `--`.
    pub fn usernsexec_args(&self) -> Vec<String> {
        let mut out = Vec::new();
        for e in &self.entries {
            let t = if e.kind == IdKind::Uid { 'u' } else { 'g' };
            out.push("-m".to_string());
            out.push(format!("{t}:{}:{}:{}", e.ct_start, e.host_start, e.count));
        }
        out
    }
}

impl IdMap {
    /// `uidmapping=...,gidmapping=...` for `fuse-overlayfs -o` (`--idmap-via overlay`), or
    /// `None` for identity. Its triples are `ON_DISK:SHOWN:LEN`, i.e. host start first:
    /// measured with fuse-overlayfs here, `uidmapping=100000:0:65536` shows a file owned by
    /// 100005 as 5 and one owned by 0 as 65534, the same as [`translate_item`].
    pub fn fuse_overlayfs_options(&self) -> Option<String> {
        if self.is_identity() {
            return None;
        }
        let triples = |kind: IdKind| {
            self.entries
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| format!("{}:{}:{}", e.host_start, e.ct_start, e.count))
                .collect::<Vec<_>>()
                .join(":")
        };
        Some(format!(
            "uidmapping={},gidmapping={}",
            triples(IdKind::Uid),
            triples(IdKind::Gid)
        ))
    }
}

/// Something `translate_item` had to drop because the container could not see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum TranslateWarning {
    /// A v3 capability whose root (host uid) neither maps into the container nor is host root.
    CapabilityNotVisible { rootid: u32 },
    /// A `security.capability` value of neither v2 nor v3 shape.
    CapabilityMalformed { len: usize },
}

/// What the container sees for a capability xattr value; `Err` when it sees nothing.
pub fn translate_capability(map: &IdMap, value: &[u8]) -> Result<Vec<u8>, TranslateWarning> {
    let malformed = || TranslateWarning::CapabilityMalformed { len: value.len() };
    let magic = u32::from_le_bytes(
        value
            .get(..4)
            .ok_or_else(malformed)?
            .try_into()
            .map_err(|_| malformed())?,
    );
    let root = match (magic & REVISION_MASK, value.len()) {
        (REVISION_2, 20) => 0,
        (REVISION_3, 24) => u32::from_le_bytes(
            value
                .get(20..24)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(malformed)?,
        ),
        _ => return Err(malformed()),
    };
    let caps = value.get(4..20).ok_or_else(malformed)?;
    let flags = magic & !REVISION_MASK;
    match map.host_to_ct(IdKind::Uid, root) {
        Some(r) if r != 0 => {
            let mut v = (REVISION_3 | flags).to_le_bytes().to_vec();
            v.extend_from_slice(caps);
            v.extend_from_slice(&r.to_le_bytes());
            Ok(v)
        }
        // Owned by the container's root, or by host root (an ancestor namespace's root).
        Some(_) => Ok(as_v2(flags, caps)),
        None if root == 0 => Ok(as_v2(flags, caps)),
        None => Err(TranslateWarning::CapabilityNotVisible { rootid: root }),
    }
}

fn as_v2(flags: u32, caps: &[u8]) -> Vec<u8> {
    let mut v = (REVISION_2 | flags).to_le_bytes().to_vec();
    v.extend_from_slice(caps);
    v
}

/// Rewrites a recorded item from host ids to what the container sees: owner, group, ACL
/// qualifiers (unmapped → 65534, as `from_kuid_munged`), and `security.capability` (see the
/// module comment). Returns what had to be dropped, for the warnings sink.
pub fn translate_item(map: &IdMap, item: &mut Item) -> Vec<TranslateWarning> {
    item.uid = map.host_to_ct_or_overflow(IdKind::Uid, item.uid);
    item.gid = map.host_to_ct_or_overflow(IdKind::Gid, item.gid);
    translate_attrs(map, item)
}

/// The part of [`translate_item`] that fuse-overlayfs's `uidmapping` does not do: it shows
/// owners mapped but passes ACL qualifiers and `security.capability` root ids through as they
/// are on disk (measured with fuse-overlayfs 1.10 here), so `--idmap-via overlay` still needs this.
pub fn translate_attrs(map: &IdMap, item: &mut Item) -> Vec<TranslateWarning> {
    let mut warnings = Vec::new();
    if map.is_identity() && !item.xattrs.iter().any(|x| x.name == CAP_XATTR) {
        return warnings;
    }
    let fix_acl = |acl: &mut Option<Vec<AclEntry>>| {
        for e in acl.iter_mut().flatten() {
            e.tag = match e.tag {
                AclTag::User(u) => AclTag::User(map.host_to_ct_or_overflow(IdKind::Uid, u)),
                AclTag::Group(g) => AclTag::Group(map.host_to_ct_or_overflow(IdKind::Gid, g)),
                t => t,
            };
        }
    };
    fix_acl(&mut item.acl_access);
    fix_acl(&mut item.acl_default);
    item.xattrs.retain_mut(|x| {
        if x.name != CAP_XATTR {
            return true;
        }
        match translate_capability(map, &x.value) {
            Ok(v) => {
                x.value = v;
                true
            }
            Err(w) => {
                warnings.push(w);
                false
            }
        }
    });
    warnings
}

#[cfg(test)]
#[path = "idmap_tests.rs"]
mod tests;
