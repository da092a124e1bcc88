//! The filesystem half of the backup engine: walk a directory tree into `Item`s with full
//! metadata (`walk`), read file contents hole-aware (`content`), and write items back into a
//! directory (`restore`); `acl` is the POSIX ACL xattr codec both sides share.
//!
//! Everything below the root works on directory file descriptors (`openat` and friends, never
//! a full path string), so paths deeper than PATH_MAX work and a restore can never be steered
//! outside its destination through a symlink. This module knows nothing about the
//! repository or about Proxmox: id translation and chunking happen in the caller.

pub mod acl;
pub mod content;
pub mod restore;
pub mod walk;

mod entry;
mod restore_meta;
mod xattr;

#[cfg(test)]
mod fixture;
#[cfg(test)]
mod tests_restore;
#[cfg(test)]
mod tests_walk;

use std::path::Path;

/// A path for messages: `base/rel`, readable UTF-8 kept, control characters and bytes that
/// are not UTF-8 escaped (`\n`, `\xff`), so a warning stays one line whatever a name holds.
pub(crate) fn show(base: &Path, rel: &[u8]) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = escape(base.as_os_str().as_bytes());
    if !rel.is_empty() {
        if !out.ends_with('/') {
            out.push('/');
        }
        out.push_str(&escape(rel));
    }
    out
}

fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn show_keeps_utf8_and_escapes_the_rest() {
        let base = std::path::Path::new("/srv/café");
        assert_eq!(super::show(base, b""), "/srv/café");
        assert_eq!(
            super::show(base, b"a\nb/\xff\x01"),
            "/srv/café/a\\nb/\\xff\\u{1}"
        );
    }
}
