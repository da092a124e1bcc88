//! Guest config files: `lxc/<vmid>.conf` (`parse_pct_config`) and `qemu-server/<vmid>.conf`
//! (`parse_vm_config`). Keeps what the file says, in order: the main section, pending changes
//! (`[pve:pending]` / `[PENDING]`), snapshot sections, QEMU `[special:*]` sections, `#`
//! description lines (decoded), and raw `lxc.*` keys (ordered, repeatable). Interpreting
//! volumes lives in `volume`, the id map in `idmap`.

use super::text::decode_text;
use super::{ConfigError, Vmid};
use serde::Serialize;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    Lxc,
    Qemu,
}

impl GuestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Lxc => "lxc",
            GuestKind::Qemu => "qemu",
        }
    }
}

/// One section of a guest config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Section {
    /// Decoded `#` lines, one `\n`-terminated line each, as PVE keeps `description`.
    pub description: Option<String>,
    /// Normal `key: value` entries in file order (PVE itself writes them sorted).
    pub entries: Vec<(String, String)>,
    /// Raw `lxc.*` keys in file order; the same key may repeat (`lxc.idmap`).
    pub lxc: Vec<(String, String)>,
    /// 1-based line numbers of `lxc`.
    #[serde(skip)]
    pub lxc_lines: Vec<usize>,
    /// 1-based line numbers of `entries`, for error messages from later interpretation.
    #[serde(skip)]
    pub lines: Vec<usize>,
}

impl Section {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The line a key was read from, or 0 when it was not.
    pub fn line_of(&self, key: &str) -> usize {
        self.entries
            .iter()
            .position(|(k, _)| k == key)
            .and_then(|i| self.lines.get(i).copied())
            .unwrap_or(0)
    }

    /// Every value of a raw lxc key, in order.
    pub fn lxc_values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.lxc
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a raw lxc key with the line it came from.
    pub fn lxc_values_with_lines<'a>(
        &'a self,
        key: &'a str,
    ) -> impl Iterator<Item = (usize, &'a str)> + 'a {
        self.lxc
            .iter()
            .zip(self.lxc_lines.iter().copied().chain(std::iter::repeat(0)))
            .filter(move |((k, _), _)| k == key)
            .map(|((_, v), l)| (l, v.as_str()))
    }

    fn is_empty(&self) -> bool {
        self.description.is_none() && self.entries.is_empty() && self.lxc.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub name: String,
    pub section: Section,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuestConfig {
    pub kind: GuestKind,
    pub vmid: Vmid,
    pub main: Section,
    pub pending: Option<Section>,
    pub snapshots: Vec<Snapshot>,
    /// QEMU `[special:cloudinit]`, `[special:fleecing]`: name without the brackets.
    pub special: Vec<Snapshot>,
    /// Lines PVE itself would skip with a warning (`file:line: what`): unparseable lines,
    /// invalid keys, unknown section headers (their lines are skipped too).
    pub warnings: Vec<String>,
}

impl GuestConfig {
    pub fn hostname(&self) -> Option<&str> {
        match self.kind {
            GuestKind::Lxc => self.main.get("hostname"),
            GuestKind::Qemu => self.main.get("name"),
        }
    }

    pub fn unprivileged(&self) -> bool {
        self.main
            .get("unprivileged")
            .and_then(super::text::parse_bool)
            .unwrap_or(false)
    }
}

fn valid_key(k: &str) -> bool {
    // PVE: ^([a-z][a-z_]*\d*)$
    let b = k.as_bytes();
    if b.is_empty() || !b[0].is_ascii_lowercase() {
        return false;
    }
    let letters = b
        .iter()
        .take_while(|c| c.is_ascii_lowercase() || **c == b'_')
        .count();
    b[letters..].iter().all(u8::is_ascii_digit)
}

fn valid_snapname(n: &str) -> bool {
    let b = n.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-')
}

/// Parses a guest config. `file` is only used for error messages.
pub fn parse_guest_config(
    kind: GuestKind,
    vmid: Vmid,
    file: &Path,
    text: &str,
) -> Result<GuestConfig, ConfigError> {
    enum Target {
        Skip,
        Main,
        Pending,
        Snap(usize),
        Special(usize),
    }
    let mut conf = GuestConfig {
        kind,
        vmid,
        main: Section::default(),
        pending: None,
        snapshots: Vec::new(),
        special: Vec::new(),
        warnings: Vec::new(),
    };
    let warn = |line: usize, msg: String| format!("{}:{line}: {msg}", file.display());
    let mut warnings = Vec::new();
    let mut target = Target::Main;
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let l = raw.trim_end();
        if l.trim().is_empty() {
            continue;
        }
        if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            target = match (kind, name) {
                (GuestKind::Lxc, "pve:pending") | (GuestKind::Qemu, "PENDING") => {
                    if conf.pending.is_some() {
                        return Err(ConfigError::syntax(file, line, "second pending section"));
                    }
                    conf.pending = Some(Section::default());
                    Target::Pending
                }
                (GuestKind::Qemu, n) if n.starts_with("special:") => {
                    conf.special.push(Snapshot {
                        name: n.to_string(),
                        section: Section::default(),
                    });
                    Target::Special(conf.special.len() - 1)
                }
                (_, n) if valid_snapname(n) => {
                    if conf.snapshots.iter().any(|s| s.name == n) {
                        return Err(ConfigError::syntax(
                            file,
                            line,
                            format!("duplicate snapshot section [{n}]"),
                        ));
                    }
                    conf.snapshots.push(Snapshot {
                        name: n.to_string(),
                        section: Section::default(),
                    });
                    Target::Snap(conf.snapshots.len() - 1)
                }
                (_, n) => {
                    warnings.push(warn(
                        line,
                        format!("invalid section header [{n}], section skipped"),
                    ));
                    Target::Skip
                }
            };
            continue;
        }
        let section = match target {
            Target::Skip => continue,
            Target::Main => &mut conf.main,
            Target::Pending => conf.pending.get_or_insert_with(Section::default),
            Target::Snap(i) => &mut conf.snapshots[i].section,
            Target::Special(i) => &mut conf.special[i].section,
        };
        if let Some(comment) = l.strip_prefix('#') {
            let d = section.description.get_or_insert_with(String::new);
            d.push_str(&decode_text(comment));
            d.push('\n');
            continue;
        }
        if l.starts_with("lxc.") {
            // Raw LXC keys: `lxc.key: value` or `lxc.key = value`.
            let (k, v) = match (l.find(':'), l.find('=')) {
                (Some(c), Some(e)) if e < c => l.split_at(e),
                (Some(c), _) => l.split_at(c),
                (None, Some(e)) => l.split_at(e),
                (None, None) => {
                    warnings.push(warn(line, format!("raw lxc key without value: '{l}'")));
                    continue;
                }
            };
            let key = k.trim();
            if key.contains(char::is_whitespace) || key.len() <= 4 {
                warnings.push(warn(line, format!("invalid raw lxc key '{key}'")));
                continue;
            }
            section
                .lxc
                .push((key.to_string(), v[1..].trim().to_string()));
            section.lxc_lines.push(line);
            continue;
        }
        // PVE warns about and skips what it cannot parse; so do we, keeping the warning.
        let Some((k, v)) = l.split_once(':') else {
            warnings.push(warn(line, format!("unable to parse line '{l}'")));
            continue;
        };
        let v = v.trim();
        if !valid_key(k) {
            warnings.push(warn(line, format!("invalid key '{k}'")));
            continue;
        }
        if v.is_empty() {
            warnings.push(warn(line, format!("key '{k}' has no value")));
            continue;
        }
        if k == "description" {
            let d = section.description.get_or_insert_with(String::new);
            d.push_str(&decode_text(v));
            d.push('\n');
            continue;
        }
        if section.get(k).is_some() {
            return Err(ConfigError::syntax(
                file,
                line,
                format!("duplicate key '{k}'"),
            ));
        }
        section.entries.push((k.to_string(), v.to_string()));
        section.lines.push(line);
    }
    if conf.pending.as_ref().is_some_and(Section::is_empty) {
        conf.pending = None;
    }
    conf.warnings = warnings;
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(kind: GuestKind, text: &str) -> Result<GuestConfig, ConfigError> {
        parse_guest_config(kind, Vmid(100), Path::new("lxc/100.conf"), text)
    }

    #[test]
    fn sections_description_and_raw_keys() {
        let c = parse(
            GuestKind::Lxc,
            "#web%3A front\n#second line\narch: amd64\nlxc.idmap: u 0 100000 1005\nlxc.idmap = g 0 100000 1007\nparent: before\n\n[pve:pending]\nmemory: 1024\ndelete: swap\n\n[before]\n#snap descr\nsnaptime: 1700000000\nmemory: 512\n",
        )
        .unwrap();
        assert_eq!(
            c.main.description.as_deref(),
            Some("web: front\nsecond line\n")
        );
        assert_eq!(c.main.get("arch"), Some("amd64"));
        assert_eq!(c.main.line_of("parent"), 6);
        assert_eq!(
            c.main.lxc_values("lxc.idmap").collect::<Vec<_>>(),
            ["u 0 100000 1005", "g 0 100000 1007"]
        );
        assert_eq!(c.pending.as_ref().unwrap().get("delete"), Some("swap"));
        assert_eq!(c.snapshots[0].name, "before");
        assert_eq!(c.snapshots[0].section.get("snaptime"), Some("1700000000"));
        assert_eq!(
            c.snapshots[0].section.description.as_deref(),
            Some("snap descr\n")
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = parse(GuestKind::Lxc, "arch: amd64\narch: i386\n").unwrap_err();
        assert_eq!(e.to_string(), "lxc/100.conf:2: duplicate key 'arch'");
        let e = parse(GuestKind::Lxc, "[s1]\n[s1]\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "lxc/100.conf:2: duplicate snapshot section [s1]"
        );
    }

    #[test]
    fn what_pve_skips_becomes_a_warning() {
        let c = parse(
            GuestKind::Lxc,
            "arch: amd64\nthis is junk\nMemory: 5\n lead: x\nswap:\nlxc.bad\n[bad name]\nhostname: hidden\n[ok]\nsnaptime: 1\n",
        )
        .unwrap();
        assert_eq!(
            c.warnings,
            [
                "lxc/100.conf:2: unable to parse line 'this is junk'",
                "lxc/100.conf:3: invalid key 'Memory'",
                "lxc/100.conf:4: invalid key ' lead'",
                "lxc/100.conf:5: key 'swap' has no value",
                "lxc/100.conf:6: raw lxc key without value: 'lxc.bad'",
                "lxc/100.conf:7: invalid section header [bad name], section skipped",
            ]
        );
        assert_eq!(c.main.entries, [("arch".to_string(), "amd64".to_string())]);
        assert_eq!(c.hostname(), None, "lines of a skipped section go nowhere");
        assert_eq!(c.snapshots[0].section.get("snaptime"), Some("1"));
    }

    #[test]
    fn qemu_sections() {
        let c = parse(
            GuestKind::Qemu,
            "name: vm\n[PENDING]\ncores: 4\n[special:cloudinit]\nipconfig0: ip=dhcp\n",
        )
        .unwrap();
        assert_eq!(c.hostname(), Some("vm"));
        assert_eq!(c.pending.unwrap().get("cores"), Some("4"));
        assert_eq!(c.special[0].name, "special:cloudinit");
    }
}
