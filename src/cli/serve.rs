//! `proxborg serve`: the far side of an `ssh://` repository, run by sshd (usually forced by
//! `command="..."` in `authorized_keys`). Speaks the protocol of `remote::wire` on
//! stdin/stdout and nothing else; the policy lives in `remote::server`.

use super::Outcome;
use crate::remote::server::{self, ServeOptions};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Serve only repositories under this directory (repeatable; symlinks and `..` are
    /// resolved before comparing)
    #[arg(long, value_name = "PATH")]
    restrict_to_path: Vec<PathBuf>,
    /// Refuse deleting and rewriting anything but locks, whatever the client asks
    #[arg(long)]
    append_only: bool,
}

pub fn run(args: Args) -> Result<Outcome> {
    let opts = ServeOptions {
        restrict_to: args.restrict_to_path,
        append_only: args.append_only,
    };
    server::serve(std::io::stdin().lock(), std::io::stdout(), &opts)?;
    Ok(Outcome::Success)
}
