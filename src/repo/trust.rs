//! The client's security record: what this machine remembers about each repository it has
//! used, so that storage which changes under it is refused instead of believed (borg keeps the
//! same kind of record under `~/.config/borg/security/<id>/`). It never writes to a repository.
//!
//! Layout, under `default_dir()` (mode 0700; files 0600, written temp + fsync + rename + fsync
//! of the directory, so a crash leaves the old record or the new one):
//! - `<repo id>/repository`: a JSON `Record`: the id, where the repository was first seen, its
//!   encryption mode, key fingerprint, content chunker parameters, and whether its config was
//!   authenticated.
//! - `locations/<hex BLAKE3 of the canonical location>`: JSON `{location, id}`: which repository
//!   this client found there, so "same place, different id" is caught even though the storage
//!   chooses the id.
//!
//! Trust on first use: `init`, or the first successful open, writes both. Every later open is
//! compared twice: before the key is unlocked (the id at this location, the encryption mode, the
//! chunker parameters, an authenticated config still carrying its MAC) and after (the key
//! fingerprint). Any difference is `RepoError::Changed`, one line naming it and the record to
//! remove if the change was intended; the open fails before the caller locks or writes anything.
//! A repository seen at a new location with the same id, mode and key is the same repository
//! moved: the new location is added, nothing is refused.
//!
//! - `<repo id>/protected`: JSON `{archive name: {start, revision}}`: the archives this client
//!   has seen protected (`archive protect`), at the highest revision seen. An archive found
//!   later at a lower revision had an older manifest put back in place of the newer one (a
//!   hostile storage undoing `protect` so that prune deletes it): it is reported as rolled
//!   back, and prune and delete refuse to run. An archive seen unprotected at the remembered
//!   revision or later was unprotected by a key holder and is forgotten, as is one that is gone.
//!
//! Not covered (docs/SECURITY.md): a client with no record trusts what it finds first, and the
//! record says nothing about which archives or index files should exist (rollback), apart from
//! the protected archives above.

use super::config::{ChunkerParams, EncryptionMode, RepoConfig};
use super::crypto::Crypto;
use super::error::{RepoError, Result};
use super::id::RepoId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

const RECORD_VERSION: u32 = 1;
/// Records are a few hundred bytes; anything much larger is not one.
/// (The protected-archives record holds a few hundred bytes per protected archive.)
const MAX_RECORD: u64 = 4 << 20;

/// What the client remembers about one repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    pub id: RepoId,
    /// Canonical location where the repository was first seen (for messages).
    pub location: String,
    pub encryption: EncryptionMode,
    /// `Keys::fingerprint` in hex; `None` for an unencrypted repository.
    pub key_fingerprint: Option<String>,
    pub chunker: ChunkerParams,
    /// Once true, the config must keep a valid MAC.
    pub config_authenticated: bool,
    /// The highest `RepoConfig::generation` seen: a lower one is a rolled-back config.
    #[serde(default)]
    pub config_generation: u64,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct LocationRecord {
    location: String,
    id: RepoId,
}

/// The security directory: `PROXBORG_SECURITY_DIR`, else `/var/lib/proxborg/security` for
/// root, else `$XDG_STATE_HOME/proxborg/security` or `~/.local/state/proxborg/security`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PROXBORG_SECURITY_DIR") {
        PathBuf::from(d)
    } else if rustix::process::geteuid().is_root() {
        PathBuf::from("/var/lib/proxborg/security")
    } else if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        PathBuf::from(d).join("proxborg/security")
    } else {
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
        PathBuf::from(home).join(".local/state/proxborg/security")
    }
}

#[derive(Clone, Debug)]
pub struct TrustStore {
    dir: PathBuf,
}

impl TrustStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        TrustStore { dir: dir.into() }
    }

    /// The store at `default_dir()`.
    pub fn from_env() -> Self {
        Self::new(default_dir())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn record_dir(&self, id: &RepoId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    fn record_path(&self, id: &RepoId) -> PathBuf {
        self.record_dir(id).join("repository")
    }

    fn location_path(&self, location: &str) -> PathBuf {
        self.dir
            .join("locations")
            .join(blake3::hash(location.as_bytes()).to_hex().as_str())
    }

    /// The record of repository `id`, if this client has one.
    pub fn record(&self, id: &RepoId) -> Result<Option<Record>> {
        let path = self.record_path(id);
        let Some(r) = read_json::<Record>(&path)? else {
            return Ok(None);
        };
        if r.version != RECORD_VERSION || r.id != *id {
            return Err(RepoError::corrupt(
                format!("security record {}", path.display()),
                "unknown version or another repository's id",
            ));
        }
        Ok(Some(r))
    }

    /// The checks that need no key: run before asking for the passphrase.
    pub(crate) fn check_claims(
        &self,
        config: &RepoConfig,
        location: &str,
    ) -> Result<Option<Record>> {
        let loc_path = self.location_path(location);
        if let Some(known) = read_json::<LocationRecord>(&loc_path)? {
            if known.id != config.id {
                return Err(changed(
                    format!(
                        "repository id changed from {} to {} at this location",
                        known.id, config.id
                    ),
                    &loc_path,
                ));
            }
        }
        let Some(rec) = self.record(&config.id)? else {
            return Ok(None);
        };
        let dir = self.record_dir(&config.id);
        if rec.encryption != config.encryption {
            return Err(changed(
                format!(
                    "encryption mode changed from {} to {}",
                    rec.encryption, config.encryption
                ),
                &dir,
            ));
        }
        if rec.chunker != config.chunker {
            let p = |c: &ChunkerParams| format!("{}/{}/{}", c.min, c.avg, c.max);
            return Err(changed(
                format!(
                    "chunker parameters changed from {} to {}",
                    p(&rec.chunker),
                    p(&config.chunker)
                ),
                &dir,
            ));
        }
        if config.generation < rec.config_generation {
            return Err(changed(
                format!(
                    "the config is older than one this client has used (generation {} < {}): rolled back",
                    config.generation, rec.config_generation
                ),
                &dir,
            ));
        }
        if rec.config_authenticated && config.mac.is_none() {
            return Err(changed(
                "the config lost its authentication code".into(),
                &dir,
            ));
        }
        Ok(Some(rec))
    }

    /// The check that needs the unlocked key.
    pub(crate) fn check_key(&self, rec: &Record, crypto: &Crypto) -> Result<()> {
        let now = crypto.key_fingerprint();
        if rec.key_fingerprint != now {
            let short = |f: &Option<String>| {
                f.as_deref()
                    .map_or("none".to_string(), |s| s.chars().take(16).collect())
            };
            return Err(changed(
                format!(
                    "encryption key changed (fingerprint {} -> {})",
                    short(&rec.key_fingerprint),
                    short(&now)
                ),
                &self.record_dir(&rec.id),
            ));
        }
        Ok(())
    }

    /// Records a repository that was opened and verified (or just created). Writes only what
    /// is new: an unknown repository, a location not seen before, a config that became
    /// authenticated. `claim_location`: this repository now owns `location` even if another
    /// id was recorded there (`init` at that place).
    pub(crate) fn remember(
        &self,
        known: Option<&Record>,
        config: &RepoConfig,
        crypto: &Crypto,
        authenticated: bool,
        location: &str,
        claim_location: bool,
    ) -> Result<()> {
        let rec = Record {
            version: RECORD_VERSION,
            id: config.id.clone(),
            location: known.map_or_else(|| location.to_string(), |r| r.location.clone()),
            encryption: config.encryption,
            key_fingerprint: crypto.key_fingerprint(),
            chunker: config.chunker,
            config_authenticated: authenticated || known.is_some_and(|r| r.config_authenticated),
            config_generation: config
                .generation
                .max(known.map_or(0, |r| r.config_generation)),
        };
        if known != Some(&rec) {
            write_json(&self.dir, &self.record_path(&config.id), &rec)?;
        }
        let loc_path = self.location_path(location);
        let here = read_json::<LocationRecord>(&loc_path)?;
        if here.is_none() || (claim_location && here.as_ref().map(|l| &l.id) != Some(&config.id)) {
            let l = LocationRecord {
                location: location.to_string(),
                id: config.id.clone(),
            };
            write_json(&self.dir, &loc_path, &l)?;
        }
        Ok(())
    }
}

/// One protected archive as remembered: which backup (its start) and the revision seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct SeenProtected {
    start: String,
    revision: u64,
}

impl TrustStore {
    fn protected_path(&self, id: &RepoId) -> PathBuf {
        self.record_dir(id).join("protected")
    }

    /// Compares the archives found with the protected archives remembered (see the module
    /// text) and records the protected ones. `complete`: `archives` is every archive of the
    /// repository, so a remembered one that is missing is forgotten. Returns, per archive name
    /// that was rolled back, one message.
    pub(crate) fn reconcile_protection(
        &self,
        id: &RepoId,
        archives: &[(super::ObjectId, super::Manifest)],
        complete: bool,
    ) -> Result<BTreeMap<String, String>> {
        let path = self.protected_path(id);
        let before: BTreeMap<String, SeenProtected> = read_json(&path)?.unwrap_or_default();
        let mut known = before.clone();
        // Per name, the archive found now: the remembered backup (same start) if present.
        let mut found: BTreeMap<&str, (u64, bool, &str)> = BTreeMap::new();
        for (_, m) in archives {
            let remembered = known.get(&m.name).is_some_and(|k| k.start == m.start);
            let slot =
                found
                    .entry(m.name.as_str())
                    .or_insert((m.revision, m.protected, m.start.as_str()));
            if remembered {
                *slot = (m.revision, m.protected, m.start.as_str());
            }
        }
        let mut rolled_back = BTreeMap::new();
        known.retain(|name, seen| match found.get(name.as_str()) {
            Some(&(revision, _, start)) if start == seen.start && revision < seen.revision => {
                rolled_back.insert(
                    name.clone(),
                    format!(
                        "archive {name:?} was protected at revision {} when this client last saw                          it, the repository now holds revision {revision}: an older archive                          file was put back (rollback); refused (if this is intended, remove {})",
                        seen.revision,
                        path.display()
                    ),
                );
                true
            }
            Some(&(_, protected, start)) if start == seen.start => protected,
            _ => !complete,
        });
        for (_, m) in archives {
            if m.protected && !rolled_back.contains_key(&m.name) {
                let seen = known.entry(m.name.clone()).or_insert(SeenProtected {
                    start: m.start.clone(),
                    revision: m.revision,
                });
                if seen.start == m.start {
                    seen.revision = seen.revision.max(m.revision);
                } else if complete {
                    *seen = SeenProtected {
                        start: m.start.clone(),
                        revision: m.revision,
                    };
                }
            }
        }
        if known != before {
            write_json(&self.dir, &path, &known)?;
        }
        Ok(rolled_back)
    }
}

fn changed(what: String, record: &Path) -> RepoError {
    RepoError::Changed(format!(
        "{what} since this client last used the repository; refused, nothing written \
         (if the change is intended, remove {})",
        record.display()
    ))
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RepoError::io(path, e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_RECORD + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| RepoError::io(path, e))?;
    let what = || format!("security record {}", path.display());
    if bytes.len() as u64 > MAX_RECORD {
        return Err(RepoError::corrupt(what(), "too large"));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| RepoError::corrupt(what(), e.to_string()))
}

/// temp + fsync + rename + fsync(dir), in directories only root can enter.
fn write_json<T: Serialize>(top: &Path, path: &Path, value: &T) -> Result<()> {
    let dir = path.parent().expect("record paths have a parent");
    // Only the store and what is below it are root's alone: directories above it that do
    // not exist yet (/var/lib on a minimal system) get the usual permissions, or nobody else
    // could reach anything else under them.
    if let Some(above) = top.parent() {
        std::fs::create_dir_all(above).map_err(|e| RepoError::io(above, e))?;
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| RepoError::io(dir, e))?;
    for d in [top, dir] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| RepoError::io(d, e))?;
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(|e| RepoError::io(dir, e))?;
    let mut bytes = serde_json::to_vec_pretty(value).expect("records serialize");
    bytes.push(b'\n');
    tmp.write_all(&bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| RepoError::io(tmp.path(), e))?;
    tmp.persist(path)
        .map_err(|e| RepoError::io(path, e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| RepoError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::compression::Compression;
    use crate::repo::key::Keys;
    use crate::repo::{Manifest, ObjectId};

    fn config(encryption: EncryptionMode, id: u8) -> RepoConfig {
        RepoConfig {
            format: crate::repo::config::FORMAT_VERSION,
            id: RepoId::from_bytes(&[id; 16]),
            chunker: ChunkerParams::CONTENT,
            compression: Compression::default(),
            encryption,
            key: None,
            append_only: false,
            generation: 0,
            mac: None,
        }
    }

    fn keyed(master: u8) -> Crypto {
        Crypto::encrypted(Keys::derive(&[master; 32]))
    }

    fn archive(name: &str, revision: u64, protected: bool) -> (ObjectId, Manifest) {
        let m = Manifest {
            name: name.into(),
            start: "2026-01-01T00:00:00Z".into(),
            end: "2026-01-01T00:00:01Z".into(),
            hostname: String::new(),
            tool_version: String::new(),
            metadata: Default::default(),
            item_stream: Vec::new(),
            stats: Default::default(),
            notes: String::new(),
            protected,
            revision,
        };
        (crate::repo::ChunkId([revision as u8; 32]), m)
    }

    #[test]
    fn protection_rolled_back_is_reported_and_a_real_unprotect_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = TrustStore::new(dir.path());
        let id = RepoId::from_bytes(&[5; 16]);
        let seen = |list: &[(ObjectId, Manifest)], complete| {
            store.reconcile_protection(&id, list, complete).unwrap()
        };
        // Never seen protected: nothing to report, nothing remembered.
        assert!(seen(&[archive("a", 0, false)], true).is_empty());
        assert!(!store.protected_path(&id).exists());
        // Protected at revision 1 (a partial list, as after `archive protect`).
        assert!(seen(&[archive("a", 1, true)], false).is_empty());
        // Revision 0 back in its place: rolled back, and still remembered.
        let r = seen(&[archive("a", 0, false), archive("b", 0, false)], true);
        assert!(r["a"].contains("rollback"), "{r:?}");
        assert_eq!(r.len(), 1);
        assert!(seen(&[archive("a", 0, false)], true).contains_key("a"));
        // A partial list without it forgets nothing.
        assert!(seen(&[], false).is_empty());
        assert!(seen(&[archive("a", 0, false)], true).contains_key("a"));
        // Unprotected at a newer revision (by a key holder): forgotten, so an older file
        // after that is no longer a rollback of protection.
        assert!(seen(&[archive("a", 2, false)], true).is_empty());
        assert!(seen(&[archive("a", 0, false)], true).is_empty());
        // Protected again, then gone from the repository: forgotten.
        assert!(seen(&[archive("a", 3, true)], true).is_empty());
        assert!(seen(&[], true).is_empty());
        assert!(seen(&[archive("a", 0, false)], true).is_empty());
        // Another backup under the same name is not the remembered one.
        assert!(seen(&[archive("c", 4, true)], true).is_empty());
        let mut other = archive("c", 0, false);
        other.1.start = "2027-01-01T00:00:00Z".into();
        assert!(seen(&[archive("c", 4, true), other.clone()], true).is_empty());
        assert!(seen(&[other, archive("c", 1, false)], true).contains_key("c"));
    }

    fn first_use(store: &TrustStore, c: &RepoConfig, crypto: &Crypto, loc: &str) {
        let known = store.check_claims(c, loc).unwrap();
        assert!(known.is_none());
        store
            .remember(None, c, crypto, c.mac.is_some(), loc, false)
            .unwrap();
    }

    fn refusal(r: Result<impl std::fmt::Debug>) -> String {
        match r {
            Err(e @ RepoError::Changed(_)) => e.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_known_repository_opens_and_its_changes_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TrustStore::new(tmp.path().join("sec"));
        let mut c = config(EncryptionMode::Repokey, 1);
        let crypto = keyed(1);
        c.authenticate(&crypto);
        first_use(&store, &c, &crypto, "file:///r");
        let rec = store.check_claims(&c, "file:///r").unwrap().unwrap();
        store.check_key(&rec, &crypto).unwrap();
        assert!(rec.config_authenticated);

        let mut none = c.clone();
        none.encryption = EncryptionMode::None;
        none.mac = None;
        let e = refusal(store.check_claims(&none, "file:///r"));
        assert!(
            e.contains("encryption mode changed from repokey to none"),
            "{e}"
        );
        assert!(!e.contains('\n'));

        let mut chunks = c.clone();
        chunks.chunker.avg /= 2;
        let e = refusal(store.check_claims(&chunks, "file:///r"));
        assert!(e.contains("chunker parameters changed"), "{e}");

        let mut stripped = c.clone();
        stripped.mac = None;
        let e = refusal(store.check_claims(&stripped, "file:///r"));
        assert!(e.contains("lost its authentication code"), "{e}");

        let e = refusal(store.check_key(&rec, &keyed(2)));
        assert!(e.contains("encryption key changed"), "{e}");

        let other = config(EncryptionMode::None, 2);
        let e = refusal(store.check_claims(&other, "file:///r"));
        assert!(e.contains("repository id changed"), "{e}");
    }

    #[test]
    fn a_moved_repository_is_still_known_and_init_claims_a_location() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TrustStore::new(tmp.path().join("sec"));
        let a = config(EncryptionMode::None, 1);
        first_use(&store, &a, &Crypto::plain(), "file:///old");
        // same repository elsewhere: accepted, and the new place remembered
        let known = store.check_claims(&a, "file:///new").unwrap();
        assert!(known.is_some());
        store
            .remember(
                known.as_ref(),
                &a,
                &Crypto::plain(),
                false,
                "file:///new",
                false,
            )
            .unwrap();
        let b = config(EncryptionMode::None, 2);
        assert!(store.check_claims(&b, "file:///new").is_err());
        // `init` of b at the old place takes it over
        store
            .remember(None, &b, &Crypto::plain(), false, "file:///old", true)
            .unwrap();
        assert!(store.check_claims(&b, "file:///old").is_ok());
        assert!(store.check_claims(&a, "file:///old").is_err());
    }

    #[test]
    fn records_are_private_and_reveal_no_key() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let store = TrustStore::new(tmp.path().join("var/lib/sec"));
        let mut c = config(EncryptionMode::Keyfile, 3);
        let crypto = keyed(3);
        c.authenticate(&crypto);
        first_use(&store, &c, &crypto, "file:///r");
        let rec_path = store.record_path(&c.id);
        for p in [store.dir().to_path_buf(), store.record_dir(&c.id)] {
            assert_eq!(
                std::fs::metadata(&p).unwrap().mode() & 0o777,
                0o700,
                "{p:?}"
            );
        }
        assert_eq!(std::fs::metadata(&rec_path).unwrap().mode() & 0o777, 0o600);
        // The directories it had to make above the store stay reachable by others.
        let above = std::fs::metadata(tmp.path().join("var/lib"))
            .unwrap()
            .mode();
        assert_ne!(above & 0o005, 0, "{above:o}");
        let text = std::fs::read_to_string(&rec_path).unwrap();
        let keys = Keys::derive(&[3; 32]);
        for secret in [[3u8; 32], keys.enc, keys.id, keys.config_mac] {
            assert!(!text.contains(&crate::repo::id::hex(&secret)));
        }
        assert!(text.contains(&crate::repo::id::hex(&keys.fingerprint)));
    }
}
