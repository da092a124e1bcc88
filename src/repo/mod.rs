//! The repository: a store of write-once, content-addressed packs, index files and archive
//! files, plus one mutable config. Format: `docs/FORMAT.md`; each piece is documented at the
//! top of its module. Nothing in here knows about Proxmox.
//!
//! Concurrency and crash rules, in one place:
//! - Writers never modify or overwrite an object; names are content hashes, so two writers
//!   (two `create`s, two nodes) can run at once: at worst both store the same blob.
//! - Write order is packs -> index file naming them -> archive file. A crash leaves packs no
//!   index names (garbage for compaction) or indexed packs no archive references (reused by
//!   the next backup through dedup), never a reference to something missing.
//! - Every object write is temp + fsync + rename + fsync(dir) (`backend::local`).
//! - The one change to an existing archive, its notes or protection (`update_archive`), writes
//!   a new archive file (revision + 1) and only then deletes the old one: a crash leaves both,
//!   and readers take the newer (`archive::resolve`). Deleting an archive deletes its
//!   superseded files first, then its current one, so an older revision never reappears.

pub mod archive;
pub mod backend;
pub mod check;
pub mod chunker;
pub mod compact;
pub mod compression;
pub mod config;
pub mod crypto;
pub mod error;
pub use crate::id;
pub mod index;
pub mod item_stream;
pub mod kdf_memory;
pub mod key;
pub mod key_cache;
pub mod location;
pub mod lock;
pub mod pack;
pub mod reader;
pub mod repair;
#[cfg(test)]
pub mod test_support;
pub mod trust;
pub mod writer;

pub use archive::{ArchiveStats, Manifest, Superseded};
pub use compression::Compression;
pub use config::{ChunkerParams, EncryptionMode, RepoConfig};
pub use error::{RepoError, Result};
pub use id::{ChunkId, ObjectId, RepoId};
pub use pack::BlobKind;
pub use writer::{BlobWriter, WriteStats};

use backend::Backend;
use chunker::Chunker;
use crypto::Crypto;
use index::{Index, IndexFile};
use key::WrappedKey;
use std::sync::Arc;
use trust::TrustStore;
use zeroize::Zeroizing;

/// An archive file's id and its decoded manifest.
pub type ArchiveEntry = (ObjectId, Manifest);

/// Everything in `archives/`, read and resolved (see `archive::resolve`).
#[derive(Debug, Default)]
pub struct ArchiveList {
    /// The current file of each archive, oldest first.
    pub archives: Vec<ArchiveEntry>,
    /// One message per archive file that cannot be read or decoded.
    pub damaged: Vec<String>,
    /// Files a newer revision of the same archive replaces (a crash while rewriting notes or
    /// protection, or an old file put back).
    pub superseded: Vec<Superseded>,
    /// Archives this client remembers as protected at a higher revision than the repository
    /// now holds (an older file put back in place of the newer one): one message each.
    /// Keyed by archive name. Prune and delete refuse to run while there are any.
    pub rolled_back: std::collections::BTreeMap<String, String>,
}

/// Supplies secrets when (and only when) a repository needs them.
pub trait Credentials {
    fn passphrase(&self) -> Result<Zeroizing<String>>;
    /// The wrapped key of a `keyfile` repository.
    fn key_file(&self, repo_id: &str) -> Result<WrappedKey>;
    /// How long an unlocked key's KEK stays in the unlock cache (`key_cache`); None: not kept.
    fn key_cache(&self) -> Option<std::time::Duration> {
        None
    }
}

pub struct InitOptions {
    pub encryption: EncryptionMode,
    pub compression: Compression,
    pub append_only: bool,
    /// Give the new repository the blob ids of another (`init --chunker-params-from`).
    pub same_ids_as: Option<IdScheme>,
}

/// What decides a repository's blob ids and cut points: chunker parameters, and (encrypted)
/// the id key and CDC seed. Two repositories with the same scheme store the same data under
/// the same ids, so `sync` copies blobs between them by id.
#[derive(Clone)]
pub struct IdScheme {
    pub chunker: ChunkerParams,
    /// `None`: unencrypted (unkeyed BLAKE3, seed 0).
    pub keys: Option<key::IdKeys>,
}

/// Text whose blob id two repositories compare: equal ids (with equal chunker parameters and
/// seed) mean every blob has the same id in both.
const ID_PROBE: &[u8] = b"proxborg id probe v1";

pub struct Repository {
    backend: Arc<dyn Backend>,
    config: RepoConfig,
    crypto: Crypto,
    index: Arc<Index>,
    damaged_indexes: Vec<String>,
    /// The `archives/` listing taken alongside the index's by `reload_index_listing_archives`,
    /// for the next `list_archives` (one remote LIST less on the way to a backup); dropped by
    /// an archive write or delete through this `Repository`. Only backups ask for it: repair
    /// writes archive files through the backend directly, behind this field's back.
    archive_keys: std::sync::Mutex<Option<Vec<String>>>,
    /// The security record this repository was verified against, kept up to date when this
    /// client rewrites the config.
    trust: Option<TrustStore>,
}

impl Repository {
    /// Creates a new repository. For `keyfile` mode the wrapped key is returned for the caller
    /// to store outside the repository.
    pub fn init(
        backend: Arc<dyn Backend>,
        opts: InitOptions,
        creds: &dyn Credentials,
    ) -> Result<(Self, Option<WrappedKey>)> {
        if backend.exists("config")? {
            return Err(RepoError::Exists(format!(
                "a repository at {}",
                backend.location()
            )));
        }
        let encrypted = opts.encryption != EncryptionMode::None;
        let ids = match &opts.same_ids_as {
            Some(s) if s.keys.is_some() != encrypted => {
                return Err(RepoError::Invalid(if encrypted {
                    "an encrypted repository cannot take the unkeyed blob ids of an unencrypted one (they would reveal content fingerprints); make both encrypted or both unencrypted".into()
                } else {
                    "an unencrypted repository cannot take the blob id key of an encrypted one; make both encrypted or both unencrypted".into()
                }));
            }
            Some(s) => s.keys.clone(),
            None => None,
        };
        let (crypto, wrapped) = match opts.encryption {
            EncryptionMode::None => (Crypto::plain(), None),
            _ => {
                let secret = key::Secret {
                    master: Zeroizing::new(key::random_bytes::<32>()?),
                    ids,
                };
                let pass = creds.passphrase()?;
                let wrapped = key::wrap(&secret, pass.as_bytes())?;
                (Crypto::encrypted(secret.keys()), Some(wrapped))
            }
        };
        let mut config = RepoConfig {
            format: config::FORMAT_VERSION,
            id: RepoId::from_bytes(&key::random_bytes::<16>()?),
            chunker: opts
                .same_ids_as
                .as_ref()
                .map_or(ChunkerParams::CONTENT, |s| s.chunker),
            compression: opts.compression,
            encryption: opts.encryption,
            key: if opts.encryption == EncryptionMode::Repokey {
                wrapped.clone()
            } else {
                None
            },
            append_only: opts.append_only,
            generation: 0,
            mac: None,
        };
        config.authenticate(&crypto);
        backend.replace("config", &config.to_bytes())?;
        let repo = Repository {
            backend,
            config,
            crypto,
            index: Arc::new(Index::default()),
            damaged_indexes: Vec::new(),
            archive_keys: Default::default(),
            trust: None,
        };
        let keyfile = if opts.encryption == EncryptionMode::Keyfile {
            wrapped
        } else {
            None
        };
        Ok((repo, keyfile))
    }

    /// Opens a repository and loads its index, without consulting a security record (library
    /// users and tests; the command line uses `unlock` with the client's `TrustStore`).
    pub fn open(backend: Arc<dyn Backend>, creds: &dyn Credentials) -> Result<Self> {
        let mut repo = Self::unlock(backend, creds, None)?;
        repo.reload_index()?;
        Ok(repo)
    }

    /// Reads and verifies the config, unlocks the key, and (with `trust`) compares the
    /// repository with what this client remembers of it, recording it on first use. Writes
    /// nothing to the repository and loads no index: call `reload_index` next (after taking a
    /// lock, if the caller needs one), so a refused repository never sees a lock object.
    ///
    /// Order: parse (the id is validated before anything uses it), the record's key-free
    /// checks (a downgrade is refused before a passphrase is asked for), unwrap the key, the
    /// key fingerprint, the config's MAC, then record.
    pub fn unlock(
        backend: Arc<dyn Backend>,
        creds: &dyn Credentials,
        trust: Option<&TrustStore>,
    ) -> Result<Self> {
        let raw = match backend.get("config") {
            Ok(r) => r,
            Err(RepoError::NotFound(_)) => {
                return Err(RepoError::NotARepository(backend.location().into()))
            }
            Err(e) => return Err(e),
        };
        let config = RepoConfig::parse(&raw)?;
        let location = backend.canonical_location();
        let known = match trust {
            Some(t) => t.check_claims(&config, &location)?,
            None => None,
        };
        let crypto = match config.encryption {
            EncryptionMode::None => Crypto::plain(),
            mode => {
                let wrapped = match mode {
                    EncryptionMode::Repokey => {
                        config.key.clone().expect("validated by RepoConfig::parse")
                    }
                    _ => creds.key_file(&config.id)?,
                };
                let pass = creds.passphrase()?;
                let secret = key::unwrap(&wrapped, pass.as_bytes(), creds.key_cache())?;
                Crypto::encrypted(secret.keys())
            }
        };
        if let (Some(t), Some(rec)) = (trust, &known) {
            t.check_key(rec, &crypto)?;
        }
        // A config without a MAC is one written before configs were authenticated: accepted
        // unless the record says this repository had one (checked above), and recorded as
        // unauthenticated. `save_config` adds the MAC.
        let authenticated = config.verify(&raw, &crypto)?;
        if let Some(t) = trust {
            t.remember(
                known.as_ref(),
                &config,
                &crypto,
                authenticated,
                &location,
                false,
            )?;
        }
        Ok(Repository {
            backend,
            config,
            crypto,
            index: Arc::new(Index::default()),
            damaged_indexes: Vec::new(),
            archive_keys: Default::default(),
            trust: trust.cloned(),
        })
    }

    /// Makes `trust` remember this repository as its own at its location, replacing whatever
    /// was recorded there before (`init`: the user just created it).
    pub fn remember_in(&self, trust: &TrustStore) -> Result<()> {
        trust.remember(
            None,
            &self.config,
            &self.crypto,
            self.config.mac.is_some(),
            &self.backend.canonical_location(),
            true,
        )
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// Whether deletes are refused: by the repository's config, or by the storage side
    /// (`proxborg serve --append-only`).
    pub fn append_only(&self) -> bool {
        self.config.append_only || self.backend.append_only()
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn crypto(&self) -> &Crypto {
        &self.crypto
    }

    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// Rewrites the config (e.g. to switch append-only mode), with a fresh MAC when encrypted
    /// (this is also how a config written before MACs existed gets one).
    pub fn save_config(&mut self, mut config: RepoConfig) -> Result<()> {
        config.generation = self.config.generation.saturating_add(1);
        config.authenticate(&self.crypto);
        self.backend.replace("config", &config.to_bytes())?;
        // The record learns the new generation now: putting the old file back is then a
        // rollback this client refuses.
        if let Some(t) = &self.trust {
            let known = t.record(&config.id)?;
            let location = self.backend.canonical_location();
            t.remember(
                known.as_ref(),
                &config,
                &self.crypto,
                config.mac.is_some(),
                &location,
                false,
            )?;
        }
        self.config = config;
        Ok(())
    }

    /// This repository's id scheme, for `init --chunker-params-from`.
    pub fn id_scheme(&self) -> IdScheme {
        IdScheme {
            chunker: self.config.chunker,
            keys: self.crypto.id_keys(),
        }
    }

    /// Whether the same data has the same blob ids here and in `other`: same chunker
    /// parameters, same CDC seed, and the same id for a fixed probe text (so same id key).
    pub fn same_ids_as(&self, other: &Repository) -> bool {
        self.config.chunker == other.config.chunker
            && self.crypto.cdc_seed() == other.crypto.cdc_seed()
            && self.crypto.blob_id(ID_PROBE) == other.crypto.blob_id(ID_PROBE)
    }

    pub fn content_chunker(&self) -> Chunker {
        Chunker::new(self.config.chunker, self.crypto.cdc_seed())
    }

    pub fn metadata_chunker(&self) -> Chunker {
        Chunker::new(ChunkerParams::METADATA, self.crypto.cdc_seed())
    }

    /// Loads every index file. A damaged index file is an error here; `check` reports it
    /// with the others instead.
    /// Re-reads every index file. An index file that cannot be read or decoded is left out
    /// and reported in `damaged_indexes` (`check` names it): its packs' blobs are then simply
    /// unknown, so a backup stores them again and a read of them fails loudly.
    pub fn reload_index(&mut self) -> Result<()> {
        self.reload(false)
    }

    /// `reload_index`, listing `archives/` at the same time and keeping that listing for the
    /// next `list_archives`: for a backup, whose next step is the archive name's check. Each
    /// listing is a round trip to a remote store (40 ms on Garage); taken after the caller's
    /// lock, this one is as good as one taken when it is used.
    pub fn reload_index_listing_archives(&mut self) -> Result<()> {
        self.reload(true)
    }

    fn reload(&mut self, list_archives: bool) -> Result<()> {
        let mut files = Vec::new();
        self.damaged_indexes.clear();
        let backend = &self.backend;
        let (index_keys, archive_keys) = std::thread::scope(|s| {
            let archives = list_archives.then(|| s.spawn(|| backend.list("archives")));
            (backend.list("index"), archives.map(|a| a.join()))
        });
        *self.archive_keys.lock().unwrap() = archive_keys.and_then(|r| r.ok()?.ok());
        for key in index_keys? {
            let id = key.rsplit('/').next().and_then(ChunkId::from_hex);
            let Some(id) = id else { continue };
            match self
                .backend
                .get(&key)
                .and_then(|bytes| IndexFile::decode(&self.crypto, &bytes, &key))
            {
                Ok(f) => files.push((id, f)),
                Err(e) if e.is_corruption() => self.damaged_indexes.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        self.index = Arc::new(Index::from_files(files));
        Ok(())
    }

    /// Index files skipped by the last `reload_index`, one message each.
    pub fn damaged_indexes(&self) -> &[String] {
        &self.damaged_indexes
    }

    pub fn writer(&self, compression: Option<Compression>) -> BlobWriter {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        BlobWriter::start(
            self.backend.clone(),
            self.crypto.clone(),
            self.index.clone(),
            compression.unwrap_or(self.config.compression),
            threads,
        )
    }

    /// Reads and verifies one blob.
    pub fn read_blob(&self, id: &ChunkId) -> Result<Vec<u8>> {
        self.blob_source().read_blob(id)
    }

    /// A cheap, thread-safe handle for reading blobs.
    pub fn blob_source(&self) -> reader::BlobSource {
        reader::BlobSource {
            backend: self.backend.clone(),
            crypto: self.crypto.clone(),
            index: self.index.clone(),
        }
    }

    /// Every readable archive, oldest first, and one message per archive file that cannot be
    /// read or decoded (`check` reports those too).
    pub fn archives(&self) -> Result<(Vec<ArchiveEntry>, Vec<String>)> {
        let list = self.list_archives()?;
        Ok((list.archives, list.damaged))
    }

    /// Reads every archive file, keeps the newest revision of each archive, and (with a
    /// security record) compares protection with what this client remembers, recording the
    /// protected archives it sees.
    pub fn list_archives(&self) -> Result<ArchiveList> {
        let mut files = Vec::new();
        let mut damaged = Vec::new();
        let prefetched = self.archive_keys.lock().unwrap().take();
        let keys = match prefetched {
            Some(keys) => keys,
            None => self.backend.list("archives")?,
        };
        for key in keys {
            let Some(id) = key.rsplit('/').next().and_then(ChunkId::from_hex) else {
                continue;
            };
            match self
                .backend
                .get(&key)
                .and_then(|bytes| Manifest::decode(&self.crypto, &bytes, &key))
            {
                Ok(m) => files.push((id, m)),
                Err(e) if e.is_corruption() => damaged.push(e.to_string()),
                Err(e) => return Err(e),
            }
        }
        let (mut out, superseded) = archive::resolve(files);
        out.sort_by(|a, b| {
            a.1.start
                .cmp(&b.1.start)
                .then_with(|| a.1.name.cmp(&b.1.name))
        });
        let rolled_back = match &self.trust {
            Some(t) => t.reconcile_protection(&self.config.id, &out, true)?,
            None => Default::default(),
        };
        Ok(ArchiveList {
            archives: out,
            damaged,
            superseded,
            rolled_back,
        })
    }

    pub fn find_archive(&self, name: &str) -> Result<(ObjectId, Manifest)> {
        self.archives()?
            .0
            .into_iter()
            .find(|(_, m)| m.name == name)
            .ok_or_else(|| RepoError::NotFound(format!("archive {name:?}")))
    }

    /// Writes an archive file. Call only after the blob writer's `finish`.
    pub fn write_archive(&self, manifest: &Manifest) -> Result<ObjectId> {
        archive::validate_name(&manifest.name)?;
        let bytes = manifest.encode(&self.crypto)?;
        let id = ChunkId::of(&bytes);
        self.archive_keys.lock().unwrap().take();
        self.backend.put(&archive::archive_key(&id), &bytes)?;
        Ok(id)
    }

    /// Deletes an archive: first the superseded files of it in `list` (or an older revision
    /// would reappear), then its current file. Refuses a protected archive.
    pub fn delete_archive(&self, entry: &ArchiveEntry, list: &ArchiveList) -> Result<()> {
        if self.append_only() {
            return Err(RepoError::AppendOnly("delete"));
        }
        let (id, manifest) = entry;
        if manifest.protected {
            return Err(RepoError::Protected(manifest.name.clone()));
        }
        for s in list.superseded.iter().filter(|s| s.by == *id) {
            self.delete_archive_file(&s.id)?;
        }
        self.delete_archive_file(id)
    }

    /// Deletes one archive file, which may already be gone.
    pub(crate) fn delete_archive_file(&self, id: &ObjectId) -> Result<()> {
        self.archive_keys.lock().unwrap().take();
        match self.backend.delete(&archive::archive_key(id)) {
            Err(RepoError::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    /// Changes an archive's notes or protection: writes its manifest again with `change`
    /// applied and the revision one higher, then deletes the file it replaces and any older
    /// ones left by a crash. A crash in between leaves two files; readers take the newer
    /// (`archive::resolve`). In an append-only repository the old files stay (nothing is
    /// deleted there), superseded all the same. Returns the archive as it now is.
    ///
    /// The caller holds the repository lock. Two clients changing the same archive at once
    /// both write revision n+1; the tie resolves to one of them (the protected one first).
    pub fn update_archive(
        &self,
        name: &str,
        change: impl FnOnce(&mut Manifest),
    ) -> Result<ArchiveEntry> {
        let list = self.list_archives()?;
        if let Some(msg) = list.rolled_back.get(name) {
            return Err(RepoError::Changed(msg.clone()));
        }
        let mut matching = list.archives.iter().filter(|(_, m)| m.name == name);
        let Some((old_id, old)) = matching.next() else {
            return Err(RepoError::NotFound(format!("archive {name:?}")));
        };
        if matching.next().is_some() {
            return Err(RepoError::Invalid(format!(
                "several archives are named {name:?} (two backups made at once?); delete all but one first"
            )));
        }
        let mut new = old.clone();
        change(&mut new);
        archive::validate_notes(&new.notes)?;
        let stale: Vec<ObjectId> = list
            .superseded
            .iter()
            .filter(|s| s.by == *old_id)
            .map(|s| s.id)
            .collect();
        let id = if new == *old {
            *old_id
        } else {
            new.revision = old.revision.saturating_add(1);
            let id = self.write_archive(&new)?;
            if let Some(t) = &self.trust {
                t.reconcile_protection(&self.config.id, &[(id, new.clone())], false)?;
            }
            if !self.append_only() {
                self.delete_archive_file(old_id)?;
            }
            id
        };
        if !self.append_only() {
            for s in stale {
                self.delete_archive_file(&s)?;
            }
        }
        Ok((id, new))
    }
}
