//! Where a repository is, from `--repo`, `PROXBORG_REPO` or the settings file's `repo:`.
//! Today only a directory on this host; a URL (`ssh://host/path`, `s3:https://...`) is
//! refused with a line saying so, never taken as a relative directory named `ssh:` that a
//! backup would then silently fill.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocationError {
    #[error("repository {0:?}: {1}:// repositories are not supported by this proxborg; give a directory")]
    Unsupported(String, String),
    #[error("repository {0:?}: unknown URL scheme {1:?}; a local directory whose name has a colon is written ./{0}")]
    UnknownScheme(String, String),
    #[error("repository location is empty")]
    Empty,
}

/// A repository location as given: a directory path, or an error for anything URL-shaped
/// (a scheme of letters, digits, `+`, `-` or `.` followed by `:`).
pub fn parse(given: &Path) -> Result<PathBuf, LocationError> {
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
        None => Ok(given.to_path_buf()),
        Some(s)
            if matches!(
                s,
                "ssh" | "s3" | "sftp" | "rest" | "http" | "https" | "file"
            ) =>
        {
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
            assert_eq!(parse(Path::new(ok)), Ok(PathBuf::from(ok)), "{ok}");
        }
        assert!(matches!(
            parse(Path::new("ssh://host/x")),
            Err(LocationError::Unsupported(_, s)) if s == "ssh"
        ));
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
}
