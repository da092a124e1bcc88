//! Target words as the user types them (DESIGN "What the user runs"): `100`, `tank`, `@pool`,
//! each optionally followed by `:` (LXC file level) or `:!` (file level, every volume
//! mountpoint), or an absolute `/path` naming a mounted ZFS dataset. Parsing only: what a word
//! refers to is decided against the PVE state in `plan::build`.

use crate::pve::Vmid;
use serde::Serialize;
use std::path::PathBuf;

/// How a guest is to be backed up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// No suffix: a vzdump image.
    Image,
    /// `:`: the container's files, rootfs + mountpoints with `backup=1`.
    Files,
    /// `:!`: the container's files, every volume mountpoint.
    FilesAll,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestSelector {
    Vmid(Vmid),
    Hostname(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    Guest { guest: GuestSelector, mode: Mode },
    Pool { pool: String, mode: Mode },
    Dataset { path: PathBuf },
}

/// Why a word is not a target at all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum TargetSyntaxError {
    #[error("empty target")]
    Empty,
    #[error("'{0}' is not a vmid, hostname, @pool or /path")]
    Invalid(String),
    #[error("'{0}': vmids start at 100")]
    BadVmid(String),
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn valid_pool(p: &str) -> bool {
    !p.is_empty()
        && p.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

pub fn parse_target(word: &str) -> Result<Target, TargetSyntaxError> {
    if word.is_empty() {
        return Err(TargetSyntaxError::Empty);
    }
    if word.starts_with('/') {
        return Ok(Target::Dataset {
            path: PathBuf::from(word),
        });
    }
    let (body, mode) = if let Some(b) = word.strip_suffix(":!") {
        (b, Mode::FilesAll)
    } else if let Some(b) = word.strip_suffix(':') {
        (b, Mode::Files)
    } else {
        (word, Mode::Image)
    };
    let invalid = || TargetSyntaxError::Invalid(word.to_string());
    if let Some(pool) = body.strip_prefix('@') {
        return if valid_pool(pool) {
            Ok(Target::Pool {
                pool: pool.to_string(),
                mode,
            })
        } else {
            Err(invalid())
        };
    }
    if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
        let vmid = Vmid::parse(body).ok_or_else(|| TargetSyntaxError::BadVmid(word.to_string()))?;
        return Ok(Target::Guest {
            guest: GuestSelector::Vmid(vmid),
            mode,
        });
    }
    if valid_hostname(body) {
        return Ok(Target::Guest {
            guest: GuestSelector::Hostname(body.to_string()),
            mode,
        });
    }
    Err(invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_form() {
        let g = |s: GuestSelector, mode| Target::Guest { guest: s, mode };
        assert_eq!(
            parse_target("100"),
            Ok(g(GuestSelector::Vmid(Vmid(100)), Mode::Image))
        );
        assert_eq!(
            parse_target("100:"),
            Ok(g(GuestSelector::Vmid(Vmid(100)), Mode::Files))
        );
        assert_eq!(
            parse_target("100:!"),
            Ok(g(GuestSelector::Vmid(Vmid(100)), Mode::FilesAll))
        );
        assert_eq!(
            parse_target("tank"),
            Ok(g(GuestSelector::Hostname("tank".into()), Mode::Image))
        );
        assert_eq!(
            parse_target("tank:!"),
            Ok(g(GuestSelector::Hostname("tank".into()), Mode::FilesAll))
        );
        assert_eq!(
            parse_target("web.example.com:"),
            Ok(g(
                GuestSelector::Hostname("web.example.com".into()),
                Mode::Files
            ))
        );
        assert_eq!(
            parse_target("@prod"),
            Ok(Target::Pool {
                pool: "prod".into(),
                mode: Mode::Image
            })
        );
        assert_eq!(
            parse_target("@prod/sub:"),
            Ok(Target::Pool {
                pool: "prod/sub".into(),
                mode: Mode::Files
            })
        );
        assert_eq!(
            parse_target("@prod:!"),
            Ok(Target::Pool {
                pool: "prod".into(),
                mode: Mode::FilesAll
            })
        );
        assert_eq!(
            parse_target("/rpool/data/ds"),
            Ok(Target::Dataset {
                path: "/rpool/data/ds".into()
            })
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(parse_target(""), Err(TargetSyntaxError::Empty));
        assert_eq!(
            parse_target("99"),
            Err(TargetSyntaxError::BadVmid("99".into()))
        );
        assert_eq!(
            parse_target("0100"),
            Err(TargetSyntaxError::BadVmid("0100".into()))
        );
        for bad in [
            "@", "@:", "@a b", "tank:x", "a_b", "-x", "100::", "rel/path", ":",
        ] {
            assert!(
                matches!(parse_target(bad), Err(TargetSyntaxError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
