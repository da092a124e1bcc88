//! Container state and the freezer: `lxc-info`, `lxc-freeze`, `lxc-unfreeze` (run through
//! PATH, so the simulated node's stand-ins are found in tests).

use super::runner::{run, RunError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtState {
    Running,
    Frozen,
    Stopped,
}

pub fn ct_state(vmid: u32) -> Result<CtState, RunError> {
    let out = run(&argv(&["lxc-info", "-n", &vmid.to_string(), "-s"]))?;
    let state = out
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_ascii_uppercase();
    Ok(match state.as_str() {
        "RUNNING" => CtState::Running,
        "FROZEN" => CtState::Frozen,
        _ => CtState::Stopped,
    })
}

pub fn freeze(vmid: u32) -> Result<(), RunError> {
    run(&argv(&["lxc-freeze", "-n", &vmid.to_string()])).map(drop)
}

pub fn thaw(vmid: u32) -> Result<(), RunError> {
    run(&argv(&["lxc-unfreeze", "-n", &vmid.to_string()])).map(drop)
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}
