//! A repository in a local directory. Every write is temp file + fsync + rename + fsync of the
//! directory, so a crash leaves either the old state or the new one, plus at worst a stray
//! temp file (`.tmp-*`, ignored by `list` and removed by later writes' cleanup).

use super::Backend;
use crate::repo::error::{RepoError, Result};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        super::check_key(key)?;
        Ok(self.root.join(key))
    }

    fn write_atomic(&self, path: &Path, data: &[u8], overwrite: bool) -> Result<bool> {
        let dir = path.parent().expect("object keys always have a parent");
        fs::create_dir_all(dir).map_err(|e| RepoError::io(dir, e))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempfile_in(dir)
            .map_err(|e| RepoError::io(dir, e))?;
        tmp.write_all(data)
            .map_err(|e| RepoError::io(tmp.path(), e))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| RepoError::io(tmp.path(), e))?;
        let written = if overwrite {
            tmp.persist(path)
                .map_err(|e| RepoError::io(path, e.error))?;
            true
        } else {
            match tmp.persist_noclobber(path) {
                Ok(_) => true,
                Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => false,
                Err(e) => return Err(RepoError::io(path, e.error)),
            }
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| RepoError::io(dir, e))?;
        Ok(written)
    }
}

fn not_found_or_io(key: &str, path: &Path, e: std::io::Error) -> RepoError {
    if e.kind() == std::io::ErrorKind::NotFound {
        RepoError::NotFound(key.to_string())
    } else {
        RepoError::io(path, e)
    }
}

impl Backend for LocalDir {
    fn put(&self, key: &str, data: &[u8]) -> Result<bool> {
        let path = self.path(key)?;
        if path.exists() {
            return Ok(false);
        }
        self.write_atomic(&path, data, false)
    }

    fn replace(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        self.write_atomic(&path, data, true).map(|_| ())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = self.path(key)?;
        let mut f = File::open(&path).map_err(|e| not_found_or_io(key, &path, e))?;
        let cap = super::largest_object(key);
        let mut out = Vec::new();
        // `take`: a file that grows past the cap meanwhile is caught below, not read whole
        (&mut f)
            .take(cap + 1)
            .read_to_end(&mut out)
            .map_err(|e| RepoError::io(&path, e))?;
        if out.len() as u64 > cap {
            return Err(RepoError::corrupt(
                key,
                format!("larger than {cap} bytes, more than such an object can be"),
            ));
        }
        Ok(out)
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let path = self.path(key)?;
        let mut f = File::open(&path).map_err(|e| not_found_or_io(key, &path, e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| RepoError::io(&path, e))?;
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                RepoError::corrupt(key, format!("shorter than {} bytes", offset + len as u64))
            } else {
                RepoError::io(&path, e)
            }
        })?;
        Ok(buf)
    }

    fn size(&self, key: &str) -> Result<u64> {
        let path = self.path(key)?;
        fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| not_found_or_io(key, &path, e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let base = self.path(prefix)?;
        let mut stack = vec![(base, prefix.to_string())];
        while let Some((dir, key)) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(RepoError::io(&dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| RepoError::io(&dir, e))?;
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with(".tmp-") {
                    continue;
                }
                let ft = entry
                    .file_type()
                    .map_err(|e| RepoError::io(entry.path(), e))?;
                let child = format!("{key}/{name}");
                if ft.is_dir() {
                    stack.push((entry.path(), child));
                } else {
                    out.push(child);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        fs::remove_file(&path).map_err(|e| not_found_or_io(key, &path, e))
    }

    fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.path(key)?.exists())
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn canonical_location(&self) -> String {
        let root = fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        format!("file://{}", root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_dir_conforms() {
        let dir = tempfile::tempdir().unwrap();
        super::super::conformance::run(&LocalDir::new(dir.path()));
    }

    #[test]
    fn an_object_larger_than_its_kind_allows_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalDir::new(dir.path());
        std::fs::create_dir_all(dir.path().join("locks")).unwrap();
        // a lock object is a few hundred bytes; 5 MiB is a hostile disk's
        std::fs::write(dir.path().join("locks/x"), vec![0u8; 5 << 20]).unwrap();
        let e = b.get("locks/x").unwrap_err().to_string();
        assert!(
            e.contains("locks/x") && e.contains("larger than 4194304"),
            "{e}"
        );
        std::fs::write(dir.path().join("locks/y"), vec![1u8; 4 << 20]).unwrap();
        assert_eq!(
            b.get("locks/y").unwrap().len(),
            4 << 20,
            "up to the cap is fine"
        );
        assert!(super::super::largest_object("data/ab/cd") >= (16 + 64) << 20);
        assert_eq!(super::super::largest_object("index/ab"), 1 << 30);
    }
}
