//! The unlock cache: a passphrase-derived key kept in the kernel's keyring for a few minutes,
//! so that the next proxborg run against the same repository skips Argon2id.
//!
//! Argon2id (64 MiB, 3 passes) is most of the fixed cost of a run: 0.12 to 0.19 s on two
//! cores, half of an unchanged backup, paid again by every guest of a vzdump job (the hook
//! starts one proxborg per guest). PBS avoids the cost by keeping its client key unencrypted
//! in a file; proxborg keeps its key wrapped and instead remembers the key-encryption key
//! (KEK) of one wrapped key for one passphrase:
//! - in the root user's kernel keyring (`add_key(2)`, type `user`), never on disk: it is gone
//!   at reboot and after `key-cache` seconds (default 300, renewed by each use; 0 turns the
//!   cache off);
//! - readable by the owner only (the same UID, root on a PVE host, which can read the
//!   passphrase file anyway);
//! - named by a BLAKE3 hash of the wrapped key and the passphrase, so a wrong passphrase or
//!   another wrapped key (a changed passphrase, another repository) finds nothing and goes
//!   through Argon2id as before. A found KEK still has to open the wrapped key's AEAD: a
//!   tampered key fails the same way with or without the cache.
//!
//! Where the kernel has no keyring (a seccomp profile that blocks `add_key`, as container
//! runtimes do), every call fails and the run simply pays for Argon2id.

use super::key::WrappedKey;
use std::time::Duration;
use zeroize::Zeroizing;

/// The keyring entry's description for `wrapped` opened with `passphrase`.
pub fn entry_name(wrapped: &WrappedKey, passphrase: &[u8]) -> String {
    let wrapped_json = serde_json::to_vec(wrapped).expect("a WrappedKey serialises");
    let k = blake3::derive_key("proxborg 2026-12 key-cache entry v1", &wrapped_json);
    let h = blake3::keyed_hash(&k, passphrase);
    format!("proxborg:kek:{}", &h.to_hex()[..32])
}

/// The KEK stored under `name`, with its lifetime renewed to `ttl`.
pub fn lookup(name: &str, ttl: Duration) -> Option<Zeroizing<[u8; 32]>> {
    let id = keyring::search(name)?;
    let kek = keyring::read(id)?;
    keyring::set_timeout(id, ttl);
    Some(kek)
}

/// Stores `kek` under `name` for `ttl`; failures are ignored (the next run derives it again).
pub fn store(name: &str, kek: &[u8; 32], ttl: Duration) {
    if let Some(id) = keyring::add(name, kek) {
        keyring::set_timeout(id, ttl);
        keyring::owner_only(id);
    }
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod keyring {
    use std::ffi::CString;
    use std::time::Duration;
    use zeroize::Zeroizing;

    // linux/keyctl.h
    const KEY_SPEC_USER_KEYRING: libc::c_long = -4;
    const KEYCTL_SETPERM: libc::c_long = 5;
    const KEYCTL_SEARCH: libc::c_long = 10;
    const KEYCTL_READ: libc::c_long = 11;
    const KEYCTL_SET_TIMEOUT: libc::c_long = 15;
    /// Possessor: everything; owner (same UID): view, read, search; group and others: nothing.
    const PERM_OWNER_ONLY: libc::c_long = 0x3f00_0000 | 0x0001_0000 | 0x0002_0000 | 0x0008_0000;

    fn user_type() -> CString {
        CString::new("user").expect("no NUL")
    }

    pub fn search(name: &str) -> Option<libc::c_long> {
        let desc = CString::new(name).ok()?;
        let ty = user_type();
        // SAFETY: keyctl(KEYCTL_SEARCH, keyring, type, description, dest) with two valid
        // NUL-terminated strings that outlive the call; dest 0 links nowhere.
        let id = unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_SEARCH,
                KEY_SPEC_USER_KEYRING,
                ty.as_ptr(),
                desc.as_ptr(),
                0 as libc::c_long,
            )
        };
        (id > 0).then_some(id)
    }

    pub fn read(id: libc::c_long) -> Option<Zeroizing<[u8; 32]>> {
        let mut buf = Zeroizing::new([0u8; 32]);
        // SAFETY: KEYCTL_READ writes at most `buf.len()` bytes into `buf`, which lives across
        // the call; it returns the payload's full length, checked below.
        let n = unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_READ,
                id,
                buf.as_mut_ptr(),
                buf.len() as libc::c_long,
            )
        };
        (n == 32).then_some(buf)
    }

    pub fn add(name: &str, payload: &[u8; 32]) -> Option<libc::c_long> {
        let desc = CString::new(name).ok()?;
        let ty = user_type();
        // SAFETY: add_key(type, description, payload, plen, keyring) with valid pointers that
        // outlive the call; the kernel copies the payload.
        let id = unsafe {
            libc::syscall(
                libc::SYS_add_key,
                ty.as_ptr(),
                desc.as_ptr(),
                payload.as_ptr(),
                payload.len(),
                KEY_SPEC_USER_KEYRING,
            )
        };
        (id > 0).then_some(id)
    }

    pub fn set_timeout(id: libc::c_long, ttl: Duration) {
        let secs = ttl.as_secs().clamp(1, u32::MAX as u64) as libc::c_long;
        // SAFETY: integer arguments only.
        unsafe {
            libc::syscall(libc::SYS_keyctl, KEYCTL_SET_TIMEOUT, id, secs);
        }
    }

    pub fn owner_only(id: libc::c_long) {
        // SAFETY: integer arguments only.
        unsafe {
            libc::syscall(libc::SYS_keyctl, KEYCTL_SETPERM, id, PERM_OWNER_ONLY);
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod keyring {
    use std::time::Duration;
    use zeroize::Zeroizing;
    pub fn search(_: &str) -> Option<i64> {
        None
    }
    pub fn read(_: i64) -> Option<Zeroizing<[u8; 32]>> {
        None
    }
    pub fn add(_: &str, _: &[u8; 32]) -> Option<i64> {
        None
    }
    pub fn set_timeout(_: i64, _: Duration) {}
    pub fn owner_only(_: i64) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::key::KdfParams;

    fn wrapped(salt: &str, blob: &str) -> WrappedKey {
        WrappedKey {
            kdf: KdfParams {
                algorithm: "argon2id".into(),
                m_cost_kib: 65536,
                t_cost: 3,
                p_cost: 4,
                salt: salt.into(),
            },
            wrapped: blob.into(),
        }
    }

    #[test]
    fn the_entry_name_depends_on_the_passphrase_and_on_every_part_of_the_wrapped_key() {
        let w = wrapped("00", "aa");
        let name = entry_name(&w, b"pass");
        assert!(
            name.starts_with("proxborg:kek:") && name.len() == 13 + 32,
            "{name}"
        );
        assert_eq!(name, entry_name(&w, b"pass"));
        assert_ne!(name, entry_name(&w, b"pass2"));
        assert_ne!(name, entry_name(&wrapped("01", "aa"), b"pass"));
        assert_ne!(name, entry_name(&wrapped("00", "ab"), b"pass"));
        let mut costs = w.clone();
        costs.kdf.t_cost = 4;
        assert_ne!(name, entry_name(&costs, b"pass"));
    }

    #[test]
    fn a_stored_kek_is_found_under_its_name_only() {
        let name = entry_name(&wrapped("test", &format!("{}", std::process::id())), b"p");
        let kek = [0x5au8; 32];
        store(&name, &kek, Duration::from_secs(30));
        let found = lookup(&name, Duration::from_secs(30))
            .expect("the kernel keyring works here (add_key/keyctl not blocked)");
        assert_eq!(*found, kek);
        assert!(lookup(&format!("{name}0"), Duration::from_secs(30)).is_none());
        store(&name, &[1u8; 32], Duration::from_secs(1));
    }
}
