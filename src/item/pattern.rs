//! Exclude patterns with GNU tar's exclude semantics, on archive paths (relative, no `./`).
//!
//! - A pattern starting with `/` or `./` is anchored at the archive root (`/tmp/?*` is vzdump's
//!   `--anchored --exclude=./tmp/?*`); any other pattern matches at any component boundary
//!   (`lost+found` excludes every `lost+found`), like tar's default `--no-anchored`.
//! - `*` and `?` match `/` too (tar's `--wildcards-match-slash`), `[...]` is a class
//!   (`!` or `^` negates), `\` escapes the next byte.
//! - A pattern that matches a directory excludes everything under it (tar's leading-dir rule).

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    anchored: bool,
    glob: Vec<u8>,
    text: String,
}

impl Pattern {
    pub fn new(text: &str) -> Self {
        let mut s = text.as_bytes();
        let mut anchored = false;
        loop {
            if let Some(rest) = s.strip_prefix(b"./") {
                s = rest;
                anchored = true;
            } else if let Some(rest) = s.strip_prefix(b"/") {
                s = rest;
                anchored = true;
            } else {
                break;
            }
        }
        let mut glob = s.to_vec();
        while glob.len() > 1 && glob.ends_with(b"/") {
            glob.pop();
        }
        Pattern {
            anchored,
            glob,
            text: text.to_string(),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Does the pattern exclude `path` (itself, or as a directory it lies under)?
    pub fn matches(&self, path: &[u8]) -> bool {
        let starts = std::iter::once(0).chain(
            path.iter()
                .enumerate()
                .filter(|(_, &b)| b == b'/')
                .map(|(i, _)| i + 1),
        );
        let ends: Vec<usize> = path
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'/')
            .map(|(i, _)| i)
            .chain(std::iter::once(path.len()))
            .collect();
        for start in starts {
            if self.anchored && start != 0 {
                break;
            }
            for &end in ends.iter().filter(|&&e| e >= start) {
                if glob_match(&self.glob, &path[start..end]) {
                    return true;
                }
            }
        }
        false
    }
}

/// fnmatch without FNM_PATHNAME: `*` and `?` also match `/`.
pub fn glob_match(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() {
            match pat[p] {
                b'*' => {
                    backtrack = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, next)) = match_class(pat, p, text[t]) {
                        if ok {
                            p = next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pat.len() => {
                    if pat[p + 1] == text[t] {
                        p += 2;
                        t += 1;
                        continue;
                    }
                }
                c => {
                    if c == text[t] {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
            }
        }
        match backtrack {
            Some((bp, bt)) => {
                p = bp + 1;
                t = bt + 1;
                backtrack = Some((bp, bt + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pat[start] == b'['`. Returns whether it matched
/// and the index after the class, or `None` if the class is not closed (then `[` is literal).
fn match_class(pat: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(pat.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pat.len() {
        if pat[i] == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        let lo = pat[i];
        if i + 2 < pat.len() && pat[i + 1] == b'-' && pat[i + 2] != b']' {
            if lo <= c && c <= pat[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if lo == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vzdump_default_excludes() {
        let tmp = Pattern::new("/tmp/?*");
        assert!(tmp.matches(b"tmp/x"));
        assert!(tmp.matches(b"tmp/x/y"));
        assert!(!tmp.matches(b"tmp"));
        assert!(!tmp.matches(b"srv/tmp/x"));
        let pid = Pattern::new("/var/run/?*.pid");
        assert!(pid.matches(b"var/run/sshd.pid"));
        assert!(!pid.matches(b"var/run/sshd"));
        let lf = Pattern::new("lost+found");
        assert!(lf.matches(b"lost+found"));
        assert!(lf.matches(b"srv/data/lost+found"));
        assert!(lf.matches(b"srv/data/lost+found/file"));
        assert!(!lf.matches(b"srv/data/lost+found2"));
    }

    #[test]
    fn anchoring_and_leading_dirs() {
        assert!(Pattern::new("./dev/*").matches(b"dev/null"));
        assert!(!Pattern::new("./dev/*").matches(b"x/dev/null"));
        assert!(Pattern::new("*.log").matches(b"var/log/syslog.log"));
        assert!(Pattern::new("var/cache").matches(b"var/cache/apt/x"));
        assert!(Pattern::new("cache/").matches(b"var/cache/apt"));
        assert!(!Pattern::new("/var/cache").matches(b"srv/var/cache"));
    }

    #[test]
    fn classes_and_escapes() {
        assert!(glob_match(b"[a-c]x", b"bx"));
        assert!(!glob_match(b"[!a-c]x", b"bx"));
        assert!(glob_match(b"[]]", b"]"));
        assert!(glob_match(b"a\\*", b"a*"));
        assert!(!glob_match(b"a\\*", b"ab"));
        assert!(glob_match(b"[x", b"[x"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a*b*c", b"a/b/x/c"));
    }
}
