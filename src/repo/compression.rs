//! Compression settings: `none`, `zstd,N` or `auto,zstd,N` (keep a blob raw when compressing
//! it does not save at least 3%). Stored in the repository config as the default and
//! overridable per run. Decompression never needs the setting: each blob says how it is stored.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Stored in JSON as its command-line text (`"zstd,3"`), so the config reads like the flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Compression {
    None,
    Zstd { level: i32, auto: bool },
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd {
            level: 3,
            auto: false,
        }
    }
}

impl TryFrom<String> for Compression {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Compression> for String {
    fn from(c: Compression) -> String {
        c.to_string()
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("invalid compression {s:?}: expected none, zstd[,LEVEL] or auto,zstd[,LEVEL] (LEVEL 1..=22)")
        };
        let (auto, rest) = match s.strip_prefix("auto,") {
            Some(r) => (true, r),
            None => (false, s),
        };
        if rest == "none" && !auto {
            return Ok(Compression::None);
        }
        let level = match rest.strip_prefix("zstd") {
            Some("") => 3,
            Some(l) => l
                .strip_prefix(',')
                .and_then(|n| n.parse().ok())
                .ok_or_else(bad)?,
            None => return Err(bad()),
        };
        if !(1..=22).contains(&level) {
            return Err(bad());
        }
        Ok(Compression::Zstd { level, auto })
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Zstd { level, auto: false } => write!(f, "zstd,{level}"),
            Compression::Zstd { level, auto: true } => write!(f, "auto,zstd,{level}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for s in ["none", "zstd,3", "auto,zstd,19"] {
            assert_eq!(s.parse::<Compression>().unwrap().to_string(), s);
        }
        assert_eq!(
            "zstd".parse::<Compression>().unwrap(),
            Compression::Zstd {
                level: 3,
                auto: false
            }
        );
        for bad in ["lz4", "zstd,0", "zstd,x", "auto,none", "zstd,23"] {
            assert!(bad.parse::<Compression>().is_err(), "{bad}");
        }
    }
}
