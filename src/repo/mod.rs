//! The repository: a directory (or later an object store) of write-once, content-addressed
//! packs, index files and archive files. See `docs/FORMAT.md`.

pub mod id;

pub use id::{ChunkId, ObjectId};
