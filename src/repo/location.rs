//! Where a repository is, from `--repo`, `PROXBORG_REPO` or the settings file's `repo:`.
//! A directory on this host, `ssh://[user@]host[:port]/absolute/path` (a path starting
//! `/~/` is relative to the remote user's home), or `s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]`
//! (an S3-compatible object store, path-style). Any other URL is refused with a line saying
//! so, never taken as a relative directory named `sftp:` that a backup would then silently fill.

use std::path::{Path, PathBuf};

/// A parsed repository location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Ssh(SshUrl),
    S3(S3Url),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(p) => write!(f, "{}", p.display()),
            Location::Ssh(u) => write!(f, "{u}"),
            Location::S3(u) => write!(f, "{u}"),
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

/// `s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]`: the endpoint, the bucket (S3's naming rules:
/// 3 to 63 of `a-z 0-9 . -`, starting and ending with a letter or digit) and an optional
/// key prefix inside it (components as object keys allow: no empty, `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Url {
    /// `http` or `https`.
    pub scheme: String,
    /// `host` or `host:port` (an IPv6 address in brackets).
    pub authority: String,
    pub bucket: String,
    /// Without leading or trailing `/`; empty for the bucket's root.
    pub prefix: String,
}

impl S3Url {
    /// The endpoint URL, `http[s]://host[:port]/`.
    pub fn endpoint(&self) -> String {
        format!("{}://{}/", self.scheme, self.authority)
    }

    fn parse(text: &str) -> Result<Self, LocationError> {
        let bad = |why: &str| LocationError::BadS3Url(text.to_string(), why.to_string());
        let rest = text
            .strip_prefix("s3:")
            .ok_or_else(|| bad("expected s3:"))?;
        let (scheme, rest) = if let Some(r) = rest.strip_prefix("https://") {
            ("https", r)
        } else if let Some(r) = rest.strip_prefix("http://") {
            ("http", r)
        } else {
            return Err(bad("expected s3:https:// or s3:http://"));
        };
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("no bucket after the host"))?;
        let host_ok = !authority.is_empty()
            && !authority.contains(['@', '?', '#', ' '])
            && !authority.starts_with(':');
        if !host_ok {
            return Err(bad("no host name (credentials never go in the URL)"));
        }
        let port = match authority.strip_prefix('[') {
            Some(inner) => match inner.split_once(']') {
                Some((h, after)) if !h.is_empty() => match after {
                    "" => None,
                    p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
                },
                _ => return Err(bad("unclosed [")),
            },
            None => authority.split_once(':').map(|(_, p)| p),
        };
        if let Some(p) = port {
            p.parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| bad("bad port"))?;
        }
        let path = path.trim_end_matches('/');
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.as_bytes()[0].is_ascii_alphanumeric()
            && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
        if !bucket_ok {
            return Err(bad("bad bucket name (3 to 63 of a-z, 0-9, '.', '-')"));
        }
        if !prefix.is_empty()
            && prefix
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(bad("bad prefix (no empty, '.' or '..' components)"));
        }
        if text.contains(['?', '#']) {
            return Err(bad("no query or fragment allowed"));
        }
        Ok(S3Url {
            scheme: scheme.to_string(),
            authority: authority.to_string(),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3:{}://{}/{}", self.scheme, self.authority, self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocationError {
    #[error("repository {0:?}: {1}:// repositories are not supported by this proxborg; give a directory, an ssh:// or an s3: URL")]
    Unsupported(String, String),
    #[error("repository {0:?}: unknown URL scheme {1:?}; a local directory whose name has a colon is written ./{0}")]
    UnknownScheme(String, String),
    #[error("repository location is empty")]
    Empty,
    #[error("repository {0:?}: {1} (the form is ssh://[user@]host[:port]/absolute/path)")]
    BadUrl(String, String),
    #[error("repository {0:?}: {1} (the form is s3:https://HOST[:PORT]/BUCKET[/PREFIX])")]
    BadS3Url(String, String),
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
        Some("s3") => S3Url::parse(&text).map(Location::S3),
        Some(s) if matches!(s, "sftp" | "rest" | "http" | "https" | "file") => {
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
            parse(Path::new("sftp://host/x")),
            Err(LocationError::Unsupported(_, s)) if s == "sftp"
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

    #[test]
    fn s3_urls() {
        let s3 = |t: &str| match parse(Path::new(t)) {
            Ok(Location::S3(u)) => u,
            other => panic!("{t}: {other:?}"),
        };
        let u = s3("s3:https://garage.lan:3900/backups/pve1/");
        assert_eq!(
            (u.scheme.as_str(), u.authority.as_str()),
            ("https", "garage.lan:3900")
        );
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("backups", "pve1"));
        assert_eq!(u.endpoint(), "https://garage.lan:3900/");
        assert_eq!(u.to_string(), "s3:https://garage.lan:3900/backups/pve1");
        let u = s3("s3:http://127.0.0.1:3900/bkt");
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("bkt", ""));
        assert_eq!(s3("s3:http://[::1]:3900/bkt/a/b").prefix, "a/b");
        for bad in [
            "s3:ftp://h/bkt",
            "s3://h/bkt",
            "s3:https://h",
            "s3:https:///bkt",
            "s3:https://key:secret@h/bkt",
            "s3:https://h:0/bkt",
            "s3:https://h:x/bkt",
            "s3:https://h/BK",
            "s3:https://h/-bkt",
            "s3:https://h/bkt//p",
            "s3:https://h/bkt/../p",
            "s3:https://h/bkt?x=1",
        ] {
            assert!(
                matches!(parse(Path::new(bad)), Err(LocationError::BadS3Url(..))),
                "{bad}"
            );
        }
    }
}
