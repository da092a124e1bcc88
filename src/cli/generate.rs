//! Shell completions (`proxborg completions SHELL`) and man pages (`proxborg generate-man DIR`,
//! used by the package build), both generated from the clap definitions so they never drift.

use super::{Cli, Outcome};
use anyhow::{Context, Result};
use clap::CommandFactory;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct CompletionArgs {
    /// bash, zsh, fish, elvish or powershell
    shell: clap_complete::Shell,
}

#[derive(clap::Args)]
pub struct ManArgs {
    /// Directory to write proxborg.1 and proxborg-<command>.1 into
    dir: PathBuf,
}

pub fn completions(args: CompletionArgs) -> Result<Outcome> {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "proxborg", &mut std::io::stdout());
    Ok(Outcome::Success)
}

pub fn man(args: ManArgs) -> Result<Outcome> {
    std::fs::create_dir_all(&args.dir).with_context(|| args.dir.display().to_string())?;
    let cmd = Cli::command();
    write_page(&args.dir, "proxborg", cmd.clone())?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("proxborg-{}", sub.get_name());
        write_page(&args.dir, &name, sub.clone().name(name.clone()))?;
    }
    Ok(Outcome::Success)
}

fn write_page(dir: &std::path::Path, name: &str, cmd: clap::Command) -> Result<()> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, buf).with_context(|| path.display().to_string())
}
