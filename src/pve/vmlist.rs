//! `/etc/pve/.vmlist` (pmxcfs `cfs_create_vmlist_msg`, PVE-FACTS §5.1): which node holds which
//! guest and whether it is `lxc` or `qemu`. Cluster-wide; a guest on another node cannot be
//! backed up from here.

use super::conf::GuestKind;
use super::{ConfigError, Vmid};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VmListEntry {
    pub node: String,
    pub kind: GuestKind,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VmList {
    pub ids: BTreeMap<Vmid, VmListEntry>,
}

#[derive(Deserialize)]
struct RawList {
    #[serde(default)]
    ids: BTreeMap<String, RawEntry>,
}

#[derive(Deserialize)]
struct RawEntry {
    node: String,
    #[serde(rename = "type")]
    kind: String,
}

pub fn parse_vmlist(file: &Path, text: &str) -> Result<VmList, ConfigError> {
    let raw: RawList = serde_json::from_str(text)
        .map_err(|e| ConfigError::syntax(file, e.line(), format!("invalid JSON: {e}")))?;
    let mut out = VmList::default();
    for (id, e) in raw.ids {
        let vmid = Vmid::parse(&id)
            .ok_or_else(|| ConfigError::invalid(file, format!("invalid vmid '{id}'")))?;
        let kind = match e.kind.as_str() {
            "lxc" => GuestKind::Lxc,
            "qemu" => GuestKind::Qemu,
            // OpenVZ guests are gone since PVE 4; nothing proxborg can back up.
            "openvz" => continue,
            o => {
                return Err(ConfigError::invalid(
                    file,
                    format!("vmid {id}: unknown type '{o}'"),
                ))
            }
        };
        out.ids.insert(vmid, VmListEntry { node: e.node, kind });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_and_empty_list() {
        let f = Path::new(".vmlist");
        let l = parse_vmlist(f, r#"{"version": 7, "ids": {"100": {"node": "pve1", "type": "lxc", "version": 3}, "200": {"node": "pve2", "type": "qemu", "version": 1}}}"#).unwrap();
        assert_eq!(
            l.ids[&Vmid(100)],
            VmListEntry {
                node: "pve1".into(),
                kind: GuestKind::Lxc
            }
        );
        assert_eq!(l.ids[&Vmid(200)].kind, GuestKind::Qemu);
        assert!(parse_vmlist(f, r#"{"version": 1}"#).unwrap().ids.is_empty());
        let e = parse_vmlist(f, "{\n\"ids\": [}").unwrap_err().to_string();
        assert!(e.starts_with(".vmlist:2: invalid JSON"), "{e}");
        assert!(parse_vmlist(f, r#"{"ids": {"07": {"node": "a", "type": "lxc"}}}"#).is_err());
    }
}
