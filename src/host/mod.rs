//! The only place that runs external programs or changes mounts: `zfs`, `lxc-freeze`,
//! `lxc-info`, `vzdump`, `sync`. Each wrapper builds its argv from the pure `zfs`/`pve`
//! layers, runs it through `runner`, and turns failures into errors naming the command.
//! `interrupt` turns SIGINT/SIGTERM/SIGHUP into a flag the long loops check, so guards can
//! undo snapshots, clones and freezes on the way out. `memory` tunes malloc for long tree
//! backups.

pub mod guest;
pub mod interrupt;
pub mod memory;
pub mod overlay;
pub mod runner;
pub mod zfs;
