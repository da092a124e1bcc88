//! Keys. An encrypted repository has one random 32-byte master secret; every working key is
//! derived from it with BLAKE3's KDF under its own context string, so no key is used for two
//! purposes. The master secret is stored wrapped (XChaCha20-Poly1305) under a key-encryption key
//! derived from the passphrase with Argon2id; `repokey` keeps the wrapped key in the repository
//! config, `keyfile` keeps it in a file outside the repository.
//!
//! A repository made with `init --chunker-params-from OTHER` shares OTHER's id key and CDC
//! seed (so the same data gives the same blob ids and `sync` copies blobs by id) but has its
//! own master secret: those two values are then wrapped together with the master secret
//! (`Secret::ids`) and override what would be derived. A key without them wraps exactly the
//! 32-byte master secret, as before, so existing keys open byte-identically.

use super::error::{RepoError, Result};
use super::id::{hex, unhex};
use super::key_cache;
use chacha20poly1305::aead::Aead;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use zeroize::{Zeroize, Zeroizing};

/// The keys a repository session works with. Unencrypted repositories have none.
#[derive(Clone)]
pub struct Keys {
    /// AEAD key for blobs and sealed objects.
    pub enc: [u8; 32],
    /// BLAKE3 key for blob ids.
    pub id: [u8; 32],
    /// Seed for the chunker's gear table, so chunk sizes do not fingerprint content.
    pub cdc_seed: u64,
    /// BLAKE3 key for the config's authentication code (`RepoConfig::mac`).
    pub config_mac: [u8; 32],
    /// Names the master key without revealing it (a BLAKE3 KDF output, one-way): the client's
    /// security record compares it, so a repository whose key was swapped is refused. The
    /// same whatever passphrase the key is wrapped under.
    pub fingerprint: [u8; 32],
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.enc.zeroize();
        self.id.zeroize();
        self.cdc_seed.zeroize();
        self.config_mac.zeroize();
    }
}

/// A blob id key and CDC seed taken from another repository (`init --chunker-params-from`).
#[derive(Clone)]
pub struct IdKeys {
    pub id: [u8; 32],
    pub cdc_seed: u64,
}

impl Drop for IdKeys {
    fn drop(&mut self) {
        self.id.zeroize();
        self.cdc_seed.zeroize();
    }
}

/// What a wrapped key holds: the master secret, and optionally id key and seed that override
/// the derived ones.
pub struct Secret {
    pub master: Zeroizing<[u8; 32]>,
    pub ids: Option<IdKeys>,
}

/// Plaintext lengths of a wrapped key: the master secret alone, or with an id key and seed.
const PLAIN_MASTER: usize = 32;
const PLAIN_WITH_IDS: usize = 32 + 32 + 8;

impl Secret {
    pub fn keys(&self) -> Keys {
        let mut k = Keys::derive(&self.master);
        if let Some(ids) = &self.ids {
            k.id = ids.id;
            k.cdc_seed = ids.cdc_seed;
        }
        k
    }

    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(PLAIN_WITH_IDS));
        v.extend_from_slice(self.master.as_slice());
        if let Some(ids) = &self.ids {
            v.extend_from_slice(&ids.id);
            v.extend_from_slice(&ids.cdc_seed.to_le_bytes());
        }
        v
    }

    fn decode(plain: &[u8]) -> Option<Self> {
        let mut master = Zeroizing::new([0u8; 32]);
        master.copy_from_slice(plain.get(..32)?);
        let ids = match plain.len() {
            PLAIN_MASTER => None,
            PLAIN_WITH_IDS => Some(IdKeys {
                id: plain[32..64].try_into().ok()?,
                cdc_seed: u64::from_le_bytes(plain[64..72].try_into().ok()?),
            }),
            _ => return None,
        };
        Some(Secret { master, ids })
    }
}

impl Keys {
    /// The id key and CDC seed, to give a new repository the same blob ids.
    pub fn id_keys(&self) -> IdKeys {
        IdKeys {
            id: self.id,
            cdc_seed: self.cdc_seed,
        }
    }

    pub fn derive(master: &[u8; 32]) -> Self {
        let seed = blake3::derive_key("proxborg 2026-11 cdc-seed v1", master);
        Keys {
            enc: blake3::derive_key("proxborg 2026-11 blob-enc v1", master),
            id: blake3::derive_key("proxborg 2026-11 chunk-id v1", master),
            cdc_seed: u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")),
            config_mac: blake3::derive_key("proxborg 2026-12 config-mac v1", master),
            fingerprint: blake3::derive_key("proxborg 2026-12 key-fingerprint v1", master),
        }
    }
}

/// Argon2id parameters, stored with the wrapped key so they can be raised later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub algorithm: String,
    pub m_cost_kib: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    pub salt: String,
}

/// The master secret wrapped under a passphrase-derived key (JSON in the config or key file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    pub kdf: KdfParams,
    /// hex(nonce ‖ ciphertext ‖ tag)
    pub wrapped: String,
}

/// Argon2id cost for new keys: 64 MiB, 3 passes, 4 lanes (RFC 9106's second recommended
/// setting). The lanes run in parallel (argon2's `parallel` feature), so an unlock takes
/// ~0.05 s on two cores instead of ~0.09 s with one lane; keys record their costs, so older
/// one-lane keys still open.
fn default_kdf(salt: &[u8; 16]) -> KdfParams {
    let fast = test_fast_kdf();
    KdfParams {
        algorithm: "argon2id".into(),
        m_cost_kib: if fast { 64 } else { MIN_M_COST_KIB },
        t_cost: if fast { 1 } else { MIN_T_COST },
        p_cost: if fast { 1 } else { 4 },
        salt: hex(salt),
    }
}

/// `PROXBORG_TEST_FAST_KDF` makes new keys cheap and lifts the minimum costs, so test suites
/// stay quick. It exists only in builds with debug assertions (the test binaries); a release
/// build ignores it, so the shipped binary never makes a weak key or accepts one.
pub fn test_fast_kdf() -> bool {
    cfg!(debug_assertions) && std::env::var_os("PROXBORG_TEST_FAST_KDF").is_some()
}

/// The weakest key a release build opens: RFC 9106's second recommended option (Argon2id,
/// m = 64 MiB, t = 3) with any number of lanes. Lanes are not a cost floor: they split the
/// same memory and passes across threads (p = 1 takes longer for us and no less for an
/// attacker), and keys of earlier proxborg versions have one lane.
pub const MIN_M_COST_KIB: u32 = 64 * 1024;
pub const MIN_T_COST: u32 = 3;

pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b)
        .map_err(|e| RepoError::Invalid(format!("no randomness from the OS: {e}")))?;
    Ok(b)
}

/// `floor`: refuse costs below `MIN_*` (always, except in a test build with the fast switch).
fn kek(passphrase: &[u8], kdf: &KdfParams, floor: bool) -> Result<Zeroizing<[u8; 32]>> {
    let salt = check_kdf(kdf, floor)?;
    let params = argon2::Params::new(kdf.m_cost_kib, kdf.t_cost, kdf.p_cost, Some(32))
        .map_err(|e| RepoError::corrupt("key", format!("bad Argon2 parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    let hashed = match super::kdf_memory::KdfMemory::map(argon.params().block_count()) {
        Some(mut memory) => {
            argon.hash_password_into_with_memory(passphrase, &salt, out.as_mut(), memory.blocks())
        }
        None => argon.hash_password_into(passphrase, &salt, out.as_mut()),
    };
    hashed.map_err(|e| RepoError::corrupt("key", format!("Argon2 failed: {e}")))?;
    Ok(out)
}

/// The salt of `kdf`, once its algorithm and costs are ones this build derives keys with.
fn check_kdf(kdf: &KdfParams, floor: bool) -> Result<Vec<u8>> {
    if kdf.algorithm != "argon2id" {
        return Err(RepoError::Invalid(format!(
            "unknown key derivation {:?}",
            kdf.algorithm
        )));
    }
    let salt = unhex(&kdf.salt).ok_or_else(|| RepoError::corrupt("key", "salt is not hex"))?;
    // The costs come from disk before anything is authenticated: a damaged number must be an
    // error, not a 4 TiB allocation or an hour of hashing.
    if kdf.m_cost_kib > MAX_M_COST_KIB || kdf.t_cost > MAX_T_COST || kdf.p_cost > MAX_P_COST {
        return Err(RepoError::corrupt(
            "key",
            format!(
                "Argon2 costs out of range (m={} KiB, t={}, p={})",
                kdf.m_cost_kib, kdf.t_cost, kdf.p_cost
            ),
        ));
    }
    if floor && (kdf.m_cost_kib < MIN_M_COST_KIB || kdf.t_cost < MIN_T_COST) {
        return Err(RepoError::corrupt(
            "key",
            format!(
                "Argon2id costs too low (m={} KiB, t={}, p={}; at least m={MIN_M_COST_KIB} KiB, \
                 t={MIN_T_COST}): a key made by a test build, or a weakened one",
                kdf.m_cost_kib, kdf.t_cost, kdf.p_cost
            ),
        ));
    }
    Ok(salt)
}

/// Far above anything proxborg writes (64 MiB, t=3, p=4), far below what would hurt.
const MAX_M_COST_KIB: u32 = 4 << 20;
const MAX_T_COST: u32 = 64;
const MAX_P_COST: u32 = 64;

pub fn wrap(secret: &Secret, passphrase: &[u8]) -> Result<WrappedKey> {
    wrap_secret(secret, passphrase, default_kdf(&random_bytes::<16>()?))
}

#[cfg(test)]
fn wrap_with(master: &[u8; 32], passphrase: &[u8], kdf: KdfParams) -> Result<WrappedKey> {
    let secret = Secret {
        master: Zeroizing::new(*master),
        ids: None,
    };
    wrap_secret(&secret, passphrase, kdf)
}

fn wrap_secret(secret: &Secret, passphrase: &[u8], kdf: KdfParams) -> Result<WrappedKey> {
    let k = kek(passphrase, &kdf, false)?;
    let nonce: [u8; 24] = random_bytes()?;
    let cipher = XChaCha20Poly1305::new((&*k).into());
    let ct = cipher
        .encrypt(&XNonce::from(nonce), secret.encode().as_slice())
        .map_err(|_| RepoError::Invalid("key wrapping failed".into()))?;
    let mut blob = nonce.to_vec();
    blob.extend_from_slice(&ct);
    Ok(WrappedKey {
        kdf,
        wrapped: hex(&blob),
    })
}

/// Opens a wrapped key; with `cache`, through the unlock cache, leaving the key-encryption
/// key there for that long (`key_cache`).
pub fn unwrap(w: &WrappedKey, passphrase: &[u8], cache: Option<Duration>) -> Result<Secret> {
    unwrap_secret(w, passphrase, !test_fast_kdf(), cache)
}

#[cfg(test)]
fn unwrap_with(w: &WrappedKey, passphrase: &[u8], floor: bool) -> Result<Zeroizing<[u8; 32]>> {
    unwrap_secret(w, passphrase, floor, None).map(|s| s.master)
}

fn unwrap_secret(
    w: &WrappedKey,
    passphrase: &[u8],
    floor: bool,
    cache: Option<Duration>,
) -> Result<Secret> {
    let blob =
        unhex(&w.wrapped).ok_or_else(|| RepoError::corrupt("key", "wrapped key is not hex"))?;
    if blob.len() != 24 + PLAIN_MASTER + 16 && blob.len() != 24 + PLAIN_WITH_IDS + 16 {
        return Err(RepoError::corrupt(
            "key",
            "wrapped key has the wrong length",
        ));
    }
    let Some(ttl) = cache else {
        return open_wrapped(&*kek(passphrase, &w.kdf, floor)?, &blob);
    };
    // `kek` checks the costs; a cached KEK must not open a key this build would refuse to
    // derive one for either.
    check_kdf(&w.kdf, floor)?;
    let name = key_cache::entry_name(w, passphrase);
    if let Some(k) = key_cache::lookup(&name, ttl) {
        if let Ok(secret) = open_wrapped(&k, &blob) {
            return Ok(secret);
        }
    }
    let k = kek(passphrase, &w.kdf, floor)?;
    let secret = open_wrapped(&k, &blob)?;
    key_cache::store(&name, &k, ttl);
    Ok(secret)
}

fn open_wrapped(k: &[u8; 32], blob: &[u8]) -> Result<Secret> {
    let cipher = XChaCha20Poly1305::new(k.into());
    let nonce = XNonce::try_from(&blob[..24]).expect("24 bytes");
    let plain = Zeroizing::new(
        cipher
            .decrypt(&nonce, &blob[24..])
            .map_err(|_| RepoError::WrongPassphrase)?,
    );
    Secret::decode(&plain)
        .ok_or_else(|| RepoError::corrupt("key", "wrapped key has the wrong length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_and_wrong_passphrase() {
        std::env::set_var("PROXBORG_TEST_FAST_KDF", "1");
        let master = [7u8; 32];
        let secret = Secret {
            master: Zeroizing::new(master),
            ids: None,
        };
        let w = wrap(&secret, b"secret").unwrap();
        assert_eq!(*unwrap(&w, b"secret", None).unwrap().master, master);
        assert!(matches!(
            unwrap(&w, b"wrong", None),
            Err(RepoError::WrongPassphrase)
        ));
    }

    #[test]
    fn keys_open_with_the_costs_they_record_and_absurd_costs_are_refused() {
        let master = [9u8; 32];
        let costs = |p_cost, m_cost_kib| KdfParams {
            algorithm: "argon2id".into(),
            m_cost_kib,
            t_cost: 1,
            p_cost,
            salt: hex(&[3u8; 16]),
        };
        // a key of an earlier proxborg (one lane) and one of this one (four) both open
        for p in [1, 4] {
            let w = wrap_with(&master, b"pw", costs(p, 256)).unwrap();
            assert_eq!(w.kdf.p_cost, p);
            assert_eq!(*unwrap_with(&w, b"pw", false).unwrap(), master);
        }
        let mut w = wrap_with(&master, b"pw", costs(1, 256)).unwrap();
        w.kdf.m_cost_kib = u32::MAX;
        let err = unwrap_with(&w, b"pw", false).unwrap_err().to_string();
        assert!(err.contains("out of range"), "{err}");
    }

    #[test]
    fn keys_below_the_minimum_costs_are_refused_before_hashing() {
        let master = [5u8; 32];
        let kdf = |m_cost_kib, t_cost, p_cost| KdfParams {
            algorithm: "argon2id".into(),
            m_cost_kib,
            t_cost,
            p_cost,
            salt: hex(&[4u8; 16]),
        };
        // cheap keys (a test build's) and ones a notch below either floor
        for (m, t) in [(64, 1), (MIN_M_COST_KIB - 1024, 3), (MIN_M_COST_KIB, 2)] {
            let w = wrap_with(&master, b"pw", kdf(m, t, 1)).unwrap();
            let err = unwrap_with(&w, b"pw", true).unwrap_err().to_string();
            assert!(err.contains("costs too low"), "{err}");
        }
        // the floor itself opens, with one lane (keys of earlier versions) as with four
        let w = wrap_with(&master, b"pw", kdf(MIN_M_COST_KIB, MIN_T_COST, 1)).unwrap();
        assert_eq!(*unwrap_with(&w, b"pw", true).unwrap(), master);
    }

    #[test]
    fn new_keys_have_at_least_the_minimum_costs_unless_a_test_build_asks() {
        let k = default_kdf(&[0; 16]);
        let full = k.m_cost_kib >= MIN_M_COST_KIB && k.t_cost >= MIN_T_COST;
        assert!(full || (cfg!(debug_assertions) && test_fast_kdf()));
    }

    #[test]
    fn a_key_with_ids_of_another_repository_uses_them_and_old_keys_are_unchanged() {
        let other = Keys::derive(&[8u8; 32]);
        let with = Secret {
            master: Zeroizing::new([4u8; 32]),
            ids: Some(other.id_keys()),
        };
        let w = wrap_secret(&with, b"pw", kdf_cheap()).unwrap();
        assert_eq!(unhex(&w.wrapped).unwrap().len(), 24 + PLAIN_WITH_IDS + 16);
        let back = unwrap_secret(&w, b"pw", false, None).unwrap();
        let k = back.keys();
        assert_eq!((k.id, k.cdc_seed), (other.id, other.cdc_seed));
        let own = Keys::derive(&[4u8; 32]);
        assert_eq!((k.enc, k.fingerprint), (own.enc, own.fingerprint));
        assert_ne!(k.enc, other.enc);
        // a key without them wraps the bare master secret, as keys always did
        let w = wrap_with(&[4u8; 32], b"pw", kdf_cheap()).unwrap();
        assert_eq!(unhex(&w.wrapped).unwrap().len(), 24 + 32 + 16);
        let k = unwrap_secret(&w, b"pw", false, None).unwrap().keys();
        assert_eq!((k.id, k.cdc_seed), (own.id, own.cdc_seed));
    }

    fn kdf_cheap() -> KdfParams {
        KdfParams {
            algorithm: "argon2id".into(),
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
            salt: hex(&[1u8; 16]),
        }
    }

    #[test]
    fn derived_keys_differ() {
        let k = Keys::derive(&[1u8; 32]);
        let all = [k.enc, k.id, k.config_mac, k.fingerprint];
        for (i, a) in all.iter().enumerate() {
            assert!(all[i + 1..].iter().all(|b| a != b));
        }
        assert_eq!(k.fingerprint, Keys::derive(&[1u8; 32]).fingerprint);
        assert_ne!(k.fingerprint, Keys::derive(&[2u8; 32]).fingerprint);
    }

    fn cached_setup(pass: &[u8]) -> (WrappedKey, Zeroizing<[u8; 32]>) {
        let secret = Secret {
            master: Zeroizing::new(random_bytes::<32>().unwrap()),
            ids: None,
        };
        let w = wrap_secret(&secret, pass, fast_kdf()).unwrap();
        let k = kek(pass, &w.kdf, false).unwrap();
        (w, k)
    }

    fn fast_kdf() -> KdfParams {
        KdfParams {
            algorithm: "argon2id".into(),
            m_cost_kib: 64,
            t_cost: 1,
            p_cost: 1,
            salt: hex(&random_bytes::<16>().unwrap()),
        }
    }

    const TTL: Duration = Duration::from_secs(30);

    #[test]
    fn an_unlock_leaves_its_kek_in_the_cache_and_a_wrong_entry_is_replaced() {
        let (w, k) = cached_setup(b"pw");
        let first = unwrap_secret(&w, b"pw", false, Some(TTL)).unwrap();
        let name = key_cache::entry_name(&w, b"pw");
        assert_eq!(*key_cache::lookup(&name, TTL).expect("stored"), *k);
        // A KEK that does not open the key (a stale or planted entry): Argon2id again, and the
        // entry is corrected.
        key_cache::store(&name, &[9u8; 32], TTL);
        let again = unwrap_secret(&w, b"pw", false, Some(TTL)).unwrap();
        assert_eq!(*first.master, *again.master);
        assert_eq!(*key_cache::lookup(&name, TTL).unwrap(), *k);
        // Another passphrase has another entry: nothing found, and Argon2id says no.
        assert!(matches!(
            unwrap_secret(&w, b"other", false, Some(TTL)),
            Err(RepoError::WrongPassphrase)
        ));
        assert!(key_cache::lookup(&key_cache::entry_name(&w, b"other"), TTL).is_none());
        // Without a lifetime nothing is stored.
        let (w2, _) = cached_setup(b"pw");
        unwrap_secret(&w2, b"pw", false, None).unwrap();
        assert!(key_cache::lookup(&key_cache::entry_name(&w2, b"pw"), TTL).is_none());
    }

    #[test]
    fn a_cached_kek_opens_the_key_without_argon2() {
        // A one-byte salt makes Argon2id itself fail: only a cache hit can open this key.
        let (mut w, k) = cached_setup(b"pw");
        w.kdf.salt = "00".into();
        assert!(unwrap_secret(&w, b"pw", false, None).is_err());
        key_cache::store(&key_cache::entry_name(&w, b"pw"), &k, TTL);
        assert!(unwrap_secret(&w, b"pw", false, Some(TTL)).is_ok());
        // The cost floor is checked before the cache: a weak key stays refused.
        assert!(matches!(
            unwrap_secret(&w, b"pw", true, Some(TTL)),
            Err(RepoError::Corrupt { .. })
        ));
    }
}
