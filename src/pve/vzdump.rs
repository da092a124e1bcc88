//! The `./etc/vzdump/pct.conf` vzdump writes into an LXC archive (PVE-FACTS §2.3): the current
//! config minus `lock`, `parent`, the pending section and all snapshot sections, re-emitted by
//! `write_pct_config` rules (description as encoded `#` lines first, then keys sorted, then the
//! raw `lxc.*` lines in order; `digest` never written; `unusedN` dropped when its volume is
//! still referenced).

use super::conf::{parse_guest_config, GuestKind};
use super::text::encode_text;
use super::{ConfigError, Vmid};
use std::path::Path;

/// Builds vzdump's `pct.conf` from the text of `lxc/<vmid>.conf`.
pub fn vzdump_pct_conf(conf_text: &str) -> Result<String, ConfigError> {
    // The vmid does not appear in the output; any valid one will do for parsing.
    let conf = parse_guest_config(GuestKind::Lxc, Vmid(100), Path::new("pct.conf"), conf_text)?;
    let main = &conf.main;
    let mut out = String::new();
    if let Some(d) = &main.description {
        // Perl's split(/\n/) keeps inner empty lines and drops trailing ones.
        let mut lines: Vec<&str> = d.split('\n').collect();
        while lines.last() == Some(&"") {
            lines.pop();
        }
        for line in lines {
            out.push('#');
            out.push_str(&encode_text(line));
            out.push('\n');
        }
    }
    let in_use: Vec<&str> = main
        .entries
        .iter()
        .filter(|(k, _)| {
            k == "rootfs" || (k.starts_with("mp") && k[2..].bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|(_, v)| v.split(',').next())
        .collect();
    let mut keys: Vec<&(String, String)> = main
        .entries
        .iter()
        .filter(|(k, v)| {
            let dropped = matches!(k.as_str(), "lock" | "parent" | "digest" | "snapstate");
            let unused_in_use = k.starts_with("unused") && in_use.contains(&v.as_str());
            !dropped && !unused_in_use
        })
        .collect();
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in keys {
        out.push_str(&format!("{k}: {v}\n"));
    }
    for (k, v) in &main.lxc {
        out.push_str(&format!("{k}: {v}\n"));
    }
    Ok(out)
}
