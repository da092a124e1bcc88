//! Resource pools from `user.cfg` (PVE-FACTS §5.6): `pool:<id>:<comment>:<vmids>:<storages>:`.
//! Other `user.cfg` lines (users, groups, ACLs, tokens) are none of proxborg's business and are
//! skipped unread.

use super::text::decode_text;
use super::{ConfigError, Vmid};
use serde::Serialize;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pool {
    /// `prod` or, nested, `prod/sub`.
    pub id: String,
    pub comment: String,
    pub vmids: Vec<Vmid>,
    pub storages: Vec<String>,
}

fn valid_poolid(id: &str) -> bool {
    // PVE: each component `[A-Za-z0-9\.\-_]+`, nested with `/` (max 3 levels).
    let parts: Vec<&str> = id.split('/').collect();
    parts.len() <= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

/// The pool lines of `user.cfg`. A vmid listed in a second pool is ignored there, as PVE does.
pub fn parse_user_cfg_pools(file: &Path, text: &str) -> Result<Vec<Pool>, ConfigError> {
    let mut pools: Vec<Pool> = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let l = raw.trim();
        let Some(rest) = l.strip_prefix("pool:") else {
            continue;
        };
        let f: Vec<&str> = rest.split(':').collect();
        if f.len() < 3 {
            return Err(ConfigError::syntax(
                file,
                line,
                format!("short pool line '{l}'"),
            ));
        }
        let id = f[0].trim();
        if !valid_poolid(id) {
            return Err(ConfigError::syntax(
                file,
                line,
                format!("invalid pool id '{id}'"),
            ));
        }
        if pools.iter().any(|p| p.id == id) {
            return Err(ConfigError::syntax(
                file,
                line,
                format!("duplicate pool '{id}'"),
            ));
        }
        let mut vmids = Vec::new();
        for v in f[2].split(',').map(str::trim).filter(|v| !v.is_empty()) {
            let vmid = Vmid::parse(v).ok_or_else(|| {
                ConfigError::syntax(file, line, format!("pool '{id}': invalid vmid '{v}'"))
            })?;
            if !pools.iter().any(|p| p.vmids.contains(&vmid)) && !vmids.contains(&vmid) {
                vmids.push(vmid);
            }
        }
        let storages = f
            .get(3)
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        pools.push(Pool {
            id: id.to_string(),
            comment: decode_text(f[1]),
            vmids,
            storages,
        });
    }
    Ok(pools)
}
