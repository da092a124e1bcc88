//! Where a repository is, from `--repo`, `PROXBORG_REPO` or the settings file's `repo:`.
//! A directory on this host, or `ssh://[user@]host[:port]/absolute/path` (a path starting
//! `/~/` is relative to the remote user's home). Any other URL (`s3:https://...`) is refused
//! with a line saying so, never taken as a relative directory named `s3:` that a backup would
//! then silently fill.

use std::path::{Path, PathBuf};

/// A parsed repository location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Ssh(SshUrl),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Ssh(u) => write!(f, "{u}"),
        }
    }
}

/// `ssh://[user@]host[:port]/path`. No percent-decoding: user, host and path are taken as
/// written; an IPv6 address goes in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshUrl {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    /// The path the server opens: absolute, or relative to the remote home (`/~/x` -> `x`).
    pub path: String,
}

impl SshUrl {
    /// `host` or `host:port`, for messages and the canonical location.
    pub fn host_port(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) => format!("{host}:{p}"),
            None => host,
        }
    }

    fn parse(text: &str) -> Result<Self, LocationError> {
        let bad = |why: &str| LocationError::BadUrl(text.to_string(), why.to_string());
        let rest = text
            .strip_prefix("ssh://")
            .ok_or_else(|| bad("expected ssh://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => return Err(bad("no path after the host")),
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
            Some(_) => return Err(bad("empty user name")),
            None => (None, authority),
        };
        let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
            let (h, after) = inner.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            match after {
                "" => (h, None),
                p => (
                    h,
                    Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
                ),
            }
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.starts_with('-') {
            return Err(bad("no host name"));
        }
        let port = match port {
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| bad("bad port"))?,
            ),
            None => None,
        };
        let path = match path.strip_prefix("/~") {
            Some("") | Some("/") => ".".to_string(),
            Some(rel) if rel.starts_with('/') => rel[1..].to_string(),
            _ => path.to_string(),
        };
        if path == "/" {
            return Err(bad("the path is /"));
        }
        Ok(SshUrl {
            user,
            host: host.to_string(),
            port,
            path,
        })
    }
}

impl std::fmt::Display for SshUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ssh://")?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        write!(f, "{}", self.host_port())?;
        if self.path.starts_with('/') {
            write!(f, "{}", self.path)
        } else {
            write!(f, "/~/{}", self.path)
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocationError {
    #[error("repository {0:?}: {1}:// repositories are not supported by this proxborg; give a directory or an ssh:// URL")]
    Unsupported(String, String),
    #[error("repository {0:?}: unknown URL scheme {1:?}; a local directory whose name has a colon is written ./{0}")]
    UnknownScheme(String, String),
    #[error("repository location is empty")]
    Empty,
    #[error("repository {0:?}: {1} (the form is ssh://[user@]host[:port]/absolute/path)")]
    BadUrl(String, String),
}

/// A repository location as given: a directory path, an `ssh://` URL, or an error for anything
/// else URL-shaped (a scheme of letters, digits, `+`, `-` or `.` followed by `:`).
pub fn parse(given: &Path) -> Result<Location, LocationError> {
    let text = given.to_string_lossy();
    if text.is_empty() {
        return Err(LocationError::Empty);
    }
    let scheme = text.split_once(':').map(|(s, _)| s).filter(|s| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    match scheme {
        None => Ok(Location::Local(given.to_path_buf())),
        Some("ssh") => SshUrl::parse(&text).map(Location::Ssh),
        Some(s) if matches!(s, "s3" | "sftp" | "rest" | "http" | "https" | "file") => {
            Err(LocationError::Unsupported(text.to_string(), s.to_string()))
        }
        Some(s) => Err(LocationError::UnknownScheme(
            text.to_string(),
            s.to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_pass_and_urls_are_refused() {
        for ok in ["/srv/backup/repo", "repo", "./odd:name", "/mnt/a:b", "../r"] {
            assert_eq!(
                parse(Path::new(ok)),
                Ok(Location::Local(PathBuf::from(ok))),
                "{ok}"
            );
        }
        assert!(matches!(
            parse(Path::new("s3:https://garage:3900/bucket")),
            Err(LocationError::Unsupported(_, s)) if s == "s3"
        ));
        assert!(matches!(
            parse(Path::new("backup-host:repo")),
            Err(LocationError::UnknownScheme(..))
        ));
        assert_eq!(parse(Path::new("")), Err(LocationError::Empty));
    }

    #[test]
    fn ssh_urls() {
        let ssh = |t: &str| match parse(Path::new(t)) {
            Ok(Location::Ssh(u)) => u,
            other => panic!("{t}: {other:?}"),
        };
        let u = ssh("ssh://backup@host.lan:2222/srv/repo");
        assert_eq!(u.user.as_deref(), Some("backup"));
        assert_eq!((u.host.as_str(), u.port), ("host.lan", Some(2222)));
        assert_eq!(u.path, "/srv/repo");
        assert_eq!(u.to_string(), "ssh://backup@host.lan:2222/srv/repo");
        let u = ssh("ssh://host/~/repo");
        assert_eq!((u.user, u.port, u.path.as_str()), (None, None, "repo"));
        assert_eq!(ssh("ssh://[::1]:22/r").host_port(), "[::1]:22");
        for bad in [
            "ssh://host",
            "ssh://host/",
            "ssh:///path",
            "ssh://h:0/p",
            "ssh://h:x/p",
            "ssh://@h/p",
            "ssh://-oProxyCommand=x/p",
            "ssh:host/p",
        ] {
            assert!(
                matches!(parse(Path::new(bad)), Err(LocationError::BadUrl(..))),
                "{bad}"
            );
        }
    }
}
