//! `/etc/proxborg.conf`: host-wide defaults, in the `key: value` style of `/etc/vzdump.conf`.
//! Command-line flags win over environment variables, which win over this file.
//!
//! ```text
//! # comments and blank lines are ignored
//! repo: /srv/backup/proxborg                (or ssh://host/path, s3:https://host/bucket)
//! s3-credentials-file: /etc/proxborg.s3      (aws_access_key_id = .., aws_secret_access_key = ..)
//! s3-region: garage                          (default us-east-1)
//! passphrase-file: /etc/proxborg.pass
//! compression: zstd,3
//! exclude: /var/cache/apt/archives/*.deb     (repeatable)
//! keep-daily: 7                              (keep-within/last/hourly/daily/weekly/monthly/yearly)
//! prune: 1                                   (prune each series after its successful backups)
//! prune-on-warnings: 0
//! targets: 100: tank:! @prod /rpool/data/share   (what `proxborg-backup@default` backs up)
//! remove-dump: 0                             (hook: delete the vzdump file once archived)
//! file-level: 0                              (hook: also back up the container's files)
//! hostname-in-name: 0
//! pve-root: /etc/pve
//! lock-wait: 120
//! bwlimit: 10240                             (KiB/s written to the repository; sync: also read)
//! key-cache: 300                             (seconds a derived key stays in root's kernel keyring; 0: off)
//! ```
//! Parsing is pure (`parse`); every bad line is reported with its number, all at once.

use crate::repo::Compression;
use crate::retention::{self, Rules};
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "/etc/proxborg.conf";

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub repo: Option<PathBuf>,
    pub passphrase_file: Option<PathBuf>,
    pub passphrase_command: Option<String>,
    pub compression: Option<Compression>,
    pub excludes: Vec<String>,
    pub keep: Rules,
    pub prune: bool,
    pub prune_on_warnings: bool,
    pub targets: Vec<String>,
    pub remove_dump: bool,
    pub file_level: bool,
    pub hostname_in_name: bool,
    pub pve_root: Option<PathBuf>,
    pub lock_wait: Option<u64>,
    pub s3_credentials_file: Option<PathBuf>,
    pub s3_region: Option<String>,
    pub bwlimit: Option<u64>,
    pub key_cache: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}: {message}")]
pub struct SettingsError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// Parses the file's text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Settings, Vec<SettingsError>> {
    let mut s = Settings::default();
    let mut errors = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |message: String| SettingsError {
            file: file.to_string(),
            line: n + 1,
            message,
        };
        let Some((key, value)) = line.split_once(':') else {
            errors.push(err(format!("expected `key: value`, found {line:?}")));
            continue;
        };
        if let Err(m) = apply(&mut s, key.trim(), value.trim()) {
            errors.push(err(m));
        }
    }
    if errors.is_empty() {
        Ok(s)
    } else {
        Err(errors)
    }
}

fn apply(s: &mut Settings, key: &str, value: &str) -> Result<(), String> {
    let path = |v: &str| -> Result<PathBuf, String> {
        if v.starts_with('/') {
            Ok(PathBuf::from(v))
        } else {
            Err(format!("{key} must be an absolute path, not {v:?}"))
        }
    };
    let count = |v: &str| -> Result<Option<usize>, String> {
        v.parse()
            .map(Some)
            .map_err(|_| format!("{key} must be a whole number, not {v:?}"))
    };
    match key {
        "repo" => {
            // A directory must be absolute; a URL is checked as `--repo` would be.
            let given = PathBuf::from(value);
            match crate::repo::location::parse(&given) {
                Ok(crate::repo::location::Location::Local(_)) => s.repo = Some(path(value)?),
                Ok(_) => s.repo = Some(given),
                Err(e) => return Err(e.to_string()),
            }
        }
        "s3-credentials-file" => s.s3_credentials_file = Some(path(value)?),
        "s3-region" if !value.is_empty() && !value.contains(char::is_whitespace) => {
            s.s3_region = Some(value.to_string())
        }
        "s3-region" => return Err(format!("s3-region must be one word, not {value:?}")),
        "passphrase-file" => s.passphrase_file = Some(path(value)?),
        "passphrase-command" => s.passphrase_command = Some(value.to_string()),
        "compression" => s.compression = Some(value.parse()?),
        "exclude" => s.excludes.push(value.to_string()),
        "keep-within" => s.keep.within = Some(retention::parse_within(value)?),
        "keep-last" => s.keep.last = count(value)?,
        "keep-hourly" => s.keep.hourly = count(value)?,
        "keep-daily" => s.keep.daily = count(value)?,
        "keep-weekly" => s.keep.weekly = count(value)?,
        "keep-monthly" => s.keep.monthly = count(value)?,
        "keep-yearly" => s.keep.yearly = count(value)?,
        "prune" => s.prune = boolean(key, value)?,
        "prune-on-warnings" => s.prune_on_warnings = boolean(key, value)?,
        "targets" => s.targets = value.split_whitespace().map(str::to_string).collect(),
        "remove-dump" => s.remove_dump = boolean(key, value)?,
        "file-level" => s.file_level = boolean(key, value)?,
        "hostname-in-name" => s.hostname_in_name = boolean(key, value)?,
        "pve-root" => s.pve_root = Some(path(value)?),
        "lock-wait" => {
            s.lock_wait = Some(
                value
                    .parse()
                    .map_err(|_| format!("lock-wait must be seconds, not {value:?}"))?,
            )
        }
        "bwlimit" => {
            s.bwlimit = Some(
                value
                    .parse()
                    .map_err(|_| format!("bwlimit must be KiB/s, not {value:?}"))?,
            )
        }
        "key-cache" => {
            s.key_cache = Some(
                value
                    .parse()
                    .map_err(|_| format!("key-cache must be seconds, not {value:?}"))?,
            )
        }
        _ => return Err(format!("unknown setting {key:?}")),
    }
    Ok(())
}

fn boolean(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" => Ok(false),
        _ => Err(format!("{key} must be 0 or 1, not {value:?}")),
    }
}

/// The settings file in effect: `PROXBORG_CONFIG` or `/etc/proxborg.conf`.
pub fn default_path() -> PathBuf {
    std::env::var_os("PROXBORG_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// Reads and parses a settings file; a missing file means defaults unless `required`.
pub fn load(path: &Path, required: bool) -> Result<Settings, Vec<SettingsError>> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Settings::default()),
        Err(e) => Err(vec![SettingsError {
            file: path.display().to_string(),
            line: 0,
            message: e.to_string(),
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let text = "# proxborg\nrepo: /srv/repo\npassphrase-file: /etc/pass\ncompression: zstd,5\n\
            exclude: /tmp/*\nexclude: *.iso\nkeep-daily: 7\nkeep-within: 2d\nprune: 1\n\
            targets: 100: tank:! @prod\nremove-dump: yes\n  file-level : 1\nlock-wait: 30\nbwlimit: 512\nkey-cache: 0\n";
        let s = parse(text, "t").unwrap();
        assert_eq!(s.repo, Some(PathBuf::from("/srv/repo")));
        assert_eq!(s.compression, Some("zstd,5".parse().unwrap()));
        assert_eq!(s.excludes, ["/tmp/*", "*.iso"]);
        assert_eq!(s.keep.daily, Some(7));
        assert!(s.keep.within.is_some());
        assert!(s.prune && s.remove_dump && s.file_level && !s.prune_on_warnings);
        assert_eq!(s.targets, ["100:", "tank:!", "@prod"]);
        assert_eq!(s.lock_wait, Some(30));
        assert_eq!(s.bwlimit, Some(512));
        assert_eq!(s.key_cache, Some(0));
    }

    #[test]
    fn reports_every_bad_line_with_its_number() {
        let text = "repo: relative/path\nnonsense\nkeep-daily: many\nfrobnicate: 1\nprune: 2\n";
        let errs = parse(text, "/etc/proxborg.conf").unwrap_err();
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 2, 3, 4, 5]);
        assert_eq!(
            errs[3].to_string(),
            "/etc/proxborg.conf:4: unknown setting \"frobnicate\""
        );
    }

    #[test]
    fn repo_may_be_a_url_and_s3_settings_parse() {
        let text = "repo: s3:http://127.0.0.1:3900/bkt/pve\ns3-region: garage\n\
            s3-credentials-file: /etc/proxborg.s3\n";
        let s = parse(text, "t").unwrap();
        assert_eq!(
            s.repo,
            Some(PathBuf::from("s3:http://127.0.0.1:3900/bkt/pve"))
        );
        assert_eq!(s.s3_region.as_deref(), Some("garage"));
        assert_eq!(
            s.s3_credentials_file,
            Some(PathBuf::from("/etc/proxborg.s3"))
        );
        let s = parse("repo: ssh://backup@host/srv/repo\n", "t").unwrap();
        assert_eq!(s.repo, Some(PathBuf::from("ssh://backup@host/srv/repo")));
        for bad in [
            "repo: s3:http://h/B\n",
            "repo: nosuch://x\n",
            "s3-region:  \n",
        ] {
            assert!(parse(bad, "t").is_err(), "{bad}");
        }
    }
}
