//! The filesystem half of the backup engine: walk a directory tree into `Item`s with full
//! metadata (`walk`), read file contents hole-aware (`content`), and write items back into a
//! directory (`restore`); `acl` is the POSIX ACL xattr codec both sides share.
//!
//! Everything here works on directory file descriptors (`openat` and friends, never `O_PATH`
//! plus a re-resolved string), so paths deeper than PATH_MAX work and a restore can never be
//! steered outside its destination through a symlink. This module knows nothing about the
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

/// A path for messages: `base/rel` with control and non-UTF-8 bytes escaped, so a warning
/// stays one line whatever the file name holds.
pub(crate) fn show(base: &Path, rel: &[u8]) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = base.as_os_str().as_bytes().escape_ascii().to_string();
    if !rel.is_empty() {
        if !out.ends_with('/') {
            out.push('/');
        }
        out.push_str(&rel.escape_ascii().to_string());
    }
    out
}
