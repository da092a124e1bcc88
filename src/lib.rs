//! proxborg: deduplicating, optionally encrypted backups of Proxmox VE guests on ZFS.
//!
//! Data flows one way: `cli` -> `plan` -> (`host`, `tree`) -> `repo`; `export` reads `repo`.
//! Nothing in `repo` knows about Proxmox; nothing in `pve` or `zfs` runs a command; only `host`
//! runs external programs or mounts anything.
#![deny(unsafe_code)]

pub mod cli;
pub mod export;
pub mod files_cache;
pub mod fuzz;
pub mod host;
pub mod ingest;
pub mod item;
pub mod plan;
pub mod pve;
pub mod repo;
pub mod retention;
pub mod retrieve;
pub mod settings;
pub mod tree;
pub mod zfs;
