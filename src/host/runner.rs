//! Running a command: argv in, stdout out, or an error with the command and the tail of its
//! stderr. No shell is ever involved.

use std::io::Read;
use std::process::{Child, Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot run {cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{cmd} failed ({status}): {}", tail(stderr.as_bytes()))]
    Failed {
        cmd: String,
        status: String,
        /// All of it (callers classify by its first line); messages show the tail.
        stderr: String,
    },
}

/// The last few lines of a program's stderr, for one-line error messages.
pub fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(3);
    lines[start..].join(" / ")
}

fn shown(argv: &[String]) -> String {
    argv.join(" ")
}

/// Runs `argv` to completion; returns its stdout.
pub fn run(argv: &[String]) -> Result<String, RunError> {
    let (prog, args) = argv.split_first().expect("argv is never empty");
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| RunError::Spawn {
            cmd: shown(argv),
            source,
        })?;
    if !out.status.success() {
        return Err(RunError::Failed {
            cmd: shown(argv),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A running program whose stdout is read as a stream (vzdump --stdout). `finish` checks
/// its exit status; dropping it unfinished kills it.
pub struct StreamChild {
    cmd: String,
    child: Child,
    stdout: std::process::ChildStdout,
    stderr_file: tempfile::NamedTempFile,
}

impl StreamChild {
    pub fn spawn(argv: &[String]) -> Result<StreamChild, RunError> {
        let (prog, args) = argv.split_first().expect("argv is never empty");
        let spawn_err = |source| RunError::Spawn {
            cmd: shown(argv),
            source,
        };
        // stderr goes to a file, not a pipe: nobody reads it while stdout streams, and a full
        // pipe would stall the program.
        let stderr_file = tempfile::NamedTempFile::new().map_err(spawn_err)?;
        let mut child = Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr_file.reopen().map_err(spawn_err)?)
            .spawn()
            .map_err(spawn_err)?;
        let stdout = child.stdout.take().expect("piped");
        super::interrupt::register_child(child.id());
        Ok(StreamChild {
            cmd: shown(argv),
            child,
            stdout,
            stderr_file,
        })
    }

    /// Waits for the program; an error if it failed.
    pub fn finish(mut self) -> Result<(), RunError> {
        let status = self.child.wait().map_err(|source| RunError::Spawn {
            cmd: self.cmd.clone(),
            source,
        })?;
        super::interrupt::unregister_child(self.child.id());
        if status.success() {
            return Ok(());
        }
        let mut err = Vec::new();
        let _ = self.stderr_file.as_file_mut().read_to_end(&mut err);
        Err(RunError::Failed {
            cmd: self.cmd.clone(),
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        })
    }
}

impl Read for StreamChild {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        super::interrupt::check_io()?;
        self.stdout.read(buf)
    }
}

impl Drop for StreamChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        super::interrupt::unregister_child(self.child.id());
    }
}
