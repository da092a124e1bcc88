//! For tests of the layers above the repository: an unencrypted repository in a directory.

use super::backend::local::LocalDir;
use super::key::WrappedKey;
use super::{Compression, Credentials, EncryptionMode, InitOptions, Repository};
use std::path::Path;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Credentials for a repository that needs none.
pub struct NoCredentials;

impl Credentials for NoCredentials {
    fn passphrase(&self) -> super::Result<Zeroizing<String>> {
        unreachable!("an unencrypted repository asks for no passphrase")
    }
    fn key_file(&self, _: &str) -> super::Result<WrappedKey> {
        unreachable!("an unencrypted repository has no key file")
    }
}

/// A new unencrypted, uncompressed repository at `dir`.
pub fn unencrypted(dir: &Path) -> Repository {
    let opts = InitOptions {
        encryption: EncryptionMode::None,
        compression: Compression::None,
        append_only: false,
        same_ids_as: None,
    };
    Repository::init(Arc::new(LocalDir::new(dir)), opts, &NoCredentials)
        .expect("a repository in a temporary directory")
        .0
}
