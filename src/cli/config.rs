//! `proxborg config`: repository settings, and checking the host's settings file.

use super::{access, Global, Outcome};
use anyhow::Result;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Validate the settings file (default /etc/proxborg.conf or PROXBORG_CONFIG)
    Check {
        /// Settings file to check
        file: Option<std::path::PathBuf>,
    },
    /// Show or set append-only mode (delete, prune and compact refuse while it is on)
    AppendOnly {
        /// on or off; without it, print the current setting
        #[arg(value_parser = clap::builder::BoolishValueParser::new())]
        value: Option<bool>,
    },
}

pub fn run(global: &Global, cmd: Command) -> Result<Outcome> {
    match cmd {
        Command::Check { file } => {
            let path = file.unwrap_or_else(crate::settings::default_path);
            match crate::settings::load(&path, true) {
                Ok(_) => eprintln!("{}: OK", path.display()),
                Err(errors) => {
                    for e in &errors {
                        println!("{e}");
                    }
                    anyhow::bail!("{}: {} errors", path.display(), errors.len());
                }
            }
        }
        Command::AppendOnly { value } => {
            let (mut repo, _) = access::open(global)?;
            match value {
                None => println!(
                    "{}",
                    if repo.config().append_only {
                        "on"
                    } else {
                        "off"
                    }
                ),
                Some(v) => {
                    let mut c = repo.config().clone();
                    c.append_only = v;
                    repo.save_config(c)?;
                    eprintln!("append-only is now {}", if v { "on" } else { "off" });
                }
            }
        }
    }
    Ok(Outcome::Success)
}
