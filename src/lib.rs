//! proxborg: deduplicating, optionally encrypted backups of Proxmox VE guests on ZFS.
//!
//! Data flows one way: `cli` -> `backup` (the engine: `plan`, then execute through a
//! `host::Host`) -> (`ingest`, `tree`) -> `repo`; `export` and `retrieve` read `repo`.
//! Nothing in `repo` knows about Proxmox; nothing in `pve` or `zfs` runs a command; only `host`
//! runs external programs or mounts anything; only `cli` prints. docs/ARCHITECTURE.md has the
//! map.
#![deny(unsafe_code)]

pub mod backup;
pub mod cli;
pub mod export;
pub mod files_cache;
pub mod fuzz;
pub mod host;
pub mod id;
pub mod ingest;
pub mod item;
pub mod mount;
pub mod plan;
pub mod pve;
pub mod remote;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod retrieve;
pub mod settings;
pub mod sync;
pub mod tree;
pub mod varint;
pub mod vma;
pub mod zfs;
