//! Which items of an archive a reader (extract, export-tar) takes, and under which names:
//! path selection (`PATH...` arguments), exclude patterns and `--strip-components`.
//! One implementation so extract and export-tar always agree.

use super::pattern::Pattern;

#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Selected subtrees (archive paths, no leading `./` or `/`); empty selects everything.
    pub includes: Vec<Vec<u8>>,
    pub excludes: Vec<Pattern>,
    pub strip_components: usize,
}

impl Selection {
    /// From command-line words: `PATH...` arguments, `--exclude` patterns, `--strip-components`.
    pub fn from_args(paths: &[String], excludes: &[String], strip_components: usize) -> Self {
        Selection {
            includes: paths.iter().map(|p| Selection::normalize(p)).collect(),
            excludes: excludes.iter().map(|p| Pattern::new(p)).collect(),
            strip_components,
        }
    }

    /// Normalises a user-given archive path: `./etc/`, `/etc` and `etc` all become `etc`.
    pub fn normalize(path: &str) -> Vec<u8> {
        let mut p = path.as_bytes();
        loop {
            if let Some(r) = p.strip_prefix(b"./") {
                p = r;
            } else if let Some(r) = p.strip_prefix(b"/") {
                p = r;
            } else {
                break;
            }
        }
        if p == b"." {
            p = b"";
        }
        let mut v = p.to_vec();
        while v.ends_with(b"/") {
            v.pop();
        }
        v
    }

    /// Is `path` selected by the include list and not excluded?
    pub fn selects(&self, path: &[u8]) -> bool {
        let included = self.includes.is_empty()
            || self.includes.iter().any(|inc| {
                inc.is_empty()
                    || path == inc.as_slice()
                    || (path.starts_with(inc) && path.get(inc.len()) == Some(&b'/'))
            });
        included && !self.excludes.iter().any(|p| p.matches(path))
    }

    /// The name under which `path` is written, after `--strip-components`; `None` when
    /// stripping leaves nothing (the entry is skipped, as tar does).
    pub fn output_path(&self, path: &[u8]) -> Option<Vec<u8>> {
        if self.strip_components == 0 {
            return Some(path.to_vec());
        }
        if path.is_empty() {
            return None;
        }
        let mut rest = path;
        for _ in 0..self.strip_components {
            let pos = rest.iter().position(|&b| b == b'/')?;
            rest = &rest[pos + 1..];
        }
        Some(rest.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_are_subtrees() {
        let s = Selection {
            includes: vec![Selection::normalize("./etc/")],
            ..Default::default()
        };
        assert!(s.selects(b"etc"));
        assert!(s.selects(b"etc/passwd"));
        assert!(!s.selects(b"etcetera"));
        assert!(!s.selects(b""));
    }

    #[test]
    fn strip_components_like_tar() {
        let s = Selection {
            strip_components: 1,
            ..Default::default()
        };
        assert_eq!(s.output_path(b"a/b/c"), Some(b"b/c".to_vec()));
        assert_eq!(s.output_path(b"a"), None);
        assert_eq!(s.output_path(b""), None);
    }

    #[test]
    fn excludes_apply() {
        let s = Selection {
            excludes: vec![Pattern::new("/dev/*")],
            ..Default::default()
        };
        assert!(!s.selects(b"dev/null"));
        assert!(s.selects(b"dev"));
    }
}
