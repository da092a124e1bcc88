//! Container state and the freezer: `lxc-info`, `lxc-freeze`, `lxc-unfreeze` (run through
//! PATH, so the simulated node's stand-ins are found in tests).

use super::runner::{run, RunError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtState {
    Running,
    Frozen,
    Stopped,
}

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error(transparent)]
    Run(#[from] RunError),
    /// STARTING, STOPPING, FREEZING, ABORTING, THAWED, or nothing at all: neither safe to
    /// snapshot unfrozen (it may be writing) nor safe to freeze (it may be half set up).
    #[error("container {vmid} is {state:?} (lxc-info), neither running nor stopped; try again when it has settled")]
    UnsettledState { vmid: u32, state: String },
}

/// The state in `lxc-info -n VMID -s` output (`State:          RUNNING`).
pub fn parse_ct_state(vmid: u32, out: &str) -> Result<CtState, GuestError> {
    let state = out
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_ascii_uppercase();
    match state.as_str() {
        "RUNNING" => Ok(CtState::Running),
        "FROZEN" => Ok(CtState::Frozen),
        "STOPPED" => Ok(CtState::Stopped),
        _ => Err(GuestError::UnsettledState { vmid, state }),
    }
}

pub fn ct_state(vmid: u32) -> Result<CtState, GuestError> {
    let out = run(&argv(&["lxc-info", "-n", &vmid.to_string(), "-s"]))?;
    parse_ct_state(vmid, &out)
}

pub fn freeze(vmid: u32) -> Result<(), RunError> {
    run(&argv(&["lxc-freeze", "-n", &vmid.to_string()])).map(drop)
}

pub fn thaw(vmid: u32) -> Result<(), RunError> {
    run(&argv(&["lxc-unfreeze", "-n", &vmid.to_string()])).map(drop)
}

/// Whether a VM runs: `qm status VMID` prints `status: running` (or `stopped`, ...).
pub fn vm_running(vmid: u32) -> Result<bool, RunError> {
    let out = run(&argv(&["qm", "status", &vmid.to_string()]))?;
    Ok(parse_vm_running(&out))
}

/// Reads `qm status` output: only `status: running` is running (`paused` and `prelaunch`
/// guests are not writing either, but they cannot answer the agent).
pub fn parse_vm_running(out: &str) -> bool {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("status:"))
        .any(|s| s.trim() == "running")
}

/// `qm guest cmd VMID fsfreeze-freeze` or `fsfreeze-thaw`: the guest agent flushes and
/// freezes (thaws) the guest's filesystems (docs/QM-GUEST.md).
pub fn agent_fsfreeze(vmid: u32, freeze: bool) -> Result<(), RunError> {
    let cmd = if freeze {
        "fsfreeze-freeze"
    } else {
        "fsfreeze-thaw"
    };
    run(&argv(&["qm", "guest", "cmd", &vmid.to_string(), cmd])).map(drop)
}

/// `qm guest cmd VMID fsfreeze-status`: `frozen` or `thawed`.
pub fn agent_frozen(vmid: u32) -> Result<bool, RunError> {
    let out = run(&argv(&[
        "qm",
        "guest",
        "cmd",
        &vmid.to_string(),
        "fsfreeze-status",
    ]))?;
    Ok(out.trim().trim_matches('"') == "frozen")
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_status_running_is_running() {
        assert!(parse_vm_running("status: running\n"));
        for other in ["status: stopped\n", "status: paused\n", "", "running\n"] {
            assert!(!parse_vm_running(other), "{other:?}");
        }
    }

    #[test]
    fn known_states_parse_and_others_are_errors() {
        let p = |s| parse_ct_state(100, s);
        assert_eq!(p("State:          RUNNING\n").unwrap(), CtState::Running);
        assert_eq!(p("State:          FROZEN\n").unwrap(), CtState::Frozen);
        assert_eq!(p("State:          STOPPED\n").unwrap(), CtState::Stopped);
        for odd in [
            "State: STARTING\n",
            "State: FREEZING\n",
            "State: THAWED\n",
            "",
        ] {
            let e = p(odd).unwrap_err().to_string();
            assert!(e.contains("container 100") && e.contains("neither"), "{e}");
        }
    }
}
