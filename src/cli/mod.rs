//! The command line: clap definitions, one file per subcommand, and the one place where
//! results become exit codes (0 fine, 1 finished with warnings, 2 errors) and errors become
//! one line on stderr. Subcommands print data to stdout (`--json` where it is data) and
//! messages to stderr; progress bars appear only on a terminal.

mod access;
mod archive;
mod backup;
mod check;
mod compact;
mod config;
mod create;
mod delete;
mod diff;
mod export_tar;
mod export_vma;
mod extract;
mod generate;
mod info;
mod init;
mod list;
mod mount;
mod progress;
mod prune;
mod pve_container_archive;
mod pve_vm_archive;
mod restore;
mod serve;
mod sync;
mod umount;
mod vzdump_hook;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "proxborg",
    version,
    about = "Deduplicating, encrypted backups of Proxmox VE guests on ZFS",
    long_about = None
)]
#[command(subcommand_negates_reqs = true)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a command: back up these targets (see `proxborg backup --help`)
    #[command(flatten)]
    backup: backup::Args,
}

#[derive(clap::Args, Clone)]
pub struct Global {
    /// Repository: a directory, or ssh://[user@]host[:port]/path
    #[arg(long, global = true, env = "PROXBORG_REPO", value_name = "REPO")]
    repo: Option<PathBuf>,
    /// Wait this long for a conflicting repository lock (a running compact, or backups when
    /// compacting) before giving up
    /// [default: 120, or lock-wait in the settings file]
    #[arg(long, global = true, value_name = "SECONDS")]
    lock_wait: Option<u64>,
    /// Limit bytes written to the repository (and, for sync, read from the source) to this
    /// many KiB/s [default: bwlimit in the settings file, else no limit]
    #[arg(long, global = true, value_name = "KIB/S")]
    bwlimit: Option<u64>,
}

#[derive(Subcommand)]
enum Command {
    /// Back up guests and datasets (also the default: `proxborg 100: tank:! @pool /path`)
    Backup(backup::Args),
    /// Create a new repository
    Init(init::Args),
    /// Store a directory tree, a file, a block device or stdin as a new archive
    Create(create::Args),
    /// List archives, or the contents of one archive like `tar tv`
    List(list::Args),
    /// Sizes and counts of the repository or of one archive
    Info(info::Args),
    /// Restore an archive (or some of its paths) into a directory, or a file to stdout
    Extract(extract::Args),
    /// Show an archive, or every archive, as a read-only filesystem (FUSE) until unmounted
    Mount(mount::Args),
    /// End a `proxborg mount`
    Umount(umount::Args),
    /// Write an archive as a tar stream that `pct restore` and GNU tar accept
    ExportTar(export_tar::Args),
    /// What changed between two archives (added, removed, content, mode, owner, ACL, xattrs)
    Diff(diff::Args),
    /// Write a VM archive as the VMA stream qmrestore reads
    ExportVma(export_vma::Args),
    /// Restore a guest backup as a new container or VM (pct restore / qmrestore)
    Restore(restore::Args),
    /// Verify the repository's structure and, with --verify-data, its contents
    Check(check::Args),
    /// An archive's notes and protection (protected archives are kept by prune, refused by delete)
    #[command(subcommand)]
    Archive(archive::Command),
    /// Delete archives (their space is freed by a later compact)
    Delete(delete::Args),
    /// Delete archives by retention rules, per series
    Prune(prune::Args),
    /// Copy archives from one repository to another with only the data the other lacks
    Sync(sync::Args),
    /// Free the space of data no archive references
    Compact(compact::Args),
    /// Repository settings (append-only) and the settings file (check)
    #[command(subcommand)]
    Config(config::Command),
    /// Serve a repository over stdin/stdout to a client connecting with ssh:// (run by sshd)
    Serve(serve::Args),
    /// Remove snapshots and clones left by killed proxborg runs (also done before each backup)
    Cleanup,
    /// Run as a vzdump hook: archive the finished dump at backup-end (see hooks/)
    VzdumpHook(vzdump_hook::Args),
    /// The PVE backup-provider plugin's backup step: a prepared directory as a container
    /// archive (see packaging/perl)
    #[command(hide = true)]
    PveContainerArchive(pve_container_archive::Args),
    /// The PVE backup-provider plugin's VM backup step: drives (with dirty regions) as a VM
    /// archive (see packaging/perl)
    #[command(hide = true)]
    PveVmArchive(pve_vm_archive::Args),
    /// Print a shell completion script
    Completions(generate::CompletionArgs),
    /// Write man pages into a directory (used by the package build)
    #[command(hide = true)]
    GenerateMan(generate::ManArgs),
}

/// How a command that did not fail ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Warnings,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => backup::run(&cli.global, cli.backup),
        Some(command) => dispatch(&cli.global, command),
    };
    finish(result)
}

fn dispatch(global: &Global, command: Command) -> anyhow::Result<Outcome> {
    let cli = Dispatch { global };
    match command {
        Command::Backup(a) => backup::run(cli.global, a),
        Command::Init(a) => init::run(cli.global, a),
        Command::Create(a) => create::run(cli.global, a),
        Command::List(a) => list::run(cli.global, a),
        Command::Info(a) => info::run(cli.global, a),
        Command::Extract(a) => extract::run(cli.global, a),
        Command::Mount(a) => mount::run(cli.global, a),
        Command::Umount(a) => umount::run(a),
        Command::ExportTar(a) => export_tar::run(cli.global, a),
        Command::Restore(a) => restore::run(cli.global, a),
        Command::ExportVma(a) => export_vma::run(cli.global, a),
        Command::Diff(a) => diff::run(cli.global, a),
        Command::Check(a) => check::run(cli.global, a),
        Command::Archive(c) => archive::run(cli.global, c),
        Command::Delete(a) => delete::run(cli.global, a),
        Command::Prune(a) => prune::run(cli.global, a),
        Command::Compact(a) => compact::run(cli.global, a),
        Command::Sync(a) => sync::run(cli.global, a),
        Command::Config(c) => config::run(cli.global, c),
        Command::VzdumpHook(a) => vzdump_hook::run(cli.global, a),
        Command::PveContainerArchive(a) => pve_container_archive::run(cli.global, a),
        Command::PveVmArchive(a) => pve_vm_archive::run(cli.global, a),
        Command::Serve(a) => serve::run(a),
        Command::Cleanup => backup::cleanup(),
        Command::Completions(a) => generate::completions(a),
        Command::GenerateMan(a) => generate::man(a),
    }
}

struct Dispatch<'a> {
    global: &'a Global,
}

fn finish(result: anyhow::Result<Outcome>) -> ExitCode {
    if crate::host::interrupt::interrupted() {
        if let Err(e) = &result {
            eprintln!("proxborg: error: {}", one_line(e));
        }
        return ExitCode::from(130);
    }
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Warnings) => ExitCode::from(1),
        Err(e) => {
            eprintln!("proxborg: error: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, without repeating a cause the message already has.
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    crate::backup::events::one_line(e.as_ref())
}

/// Prints a warning line (the caller counts it).
pub fn warn(msg: impl std::fmt::Display) {
    eprintln!("proxborg: warning: {msg}");
}
