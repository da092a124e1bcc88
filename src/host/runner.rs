//! Running a command: argv in, stdout out, or an error with the command and the tail of its
//! stderr. Every program runs with `LC_ALL=C` (proxborg matches the English messages of
//! `zfs` and `lxc-info`, and parses their numbers), stdin from /dev/null, and, when
//! `PROXBORG_DEBUG` is set, a line on stderr with the argv and how long it took.
//!
//! Built on `std::process` rather than `duct`: proxborg runs single programs with argv and
//! never pipes one into another, which is all duct adds; std also gives the exit status and
//! the child's pid (for the signal handler) without a wrapper.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

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

/// The one way a command is built: no shell, C locale, no stdin.
fn command(argv: &[String]) -> Result<Command, RunError> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(RunError::Spawn {
            cmd: String::new(),
            source: std::io::Error::other("empty command"),
        });
    };
    let mut cmd = Command::new(prog);
    cmd.args(args).env("LC_ALL", "C").stdin(Stdio::null());
    Ok(cmd)
}

fn log_ran(argv: &[String], started: Instant, status: &str) {
    if std::env::var_os("PROXBORG_DEBUG").is_some() {
        eprintln!(
            "proxborg: debug: ran {} ({status}, {:.3} s)",
            shown(argv),
            started.elapsed().as_secs_f64()
        );
    }
}

/// Runs `argv` to completion; returns its stdout.
pub fn run(argv: &[String]) -> Result<String, RunError> {
    let started = Instant::now();
    let out = command(argv)?.output().map_err(|source| RunError::Spawn {
        cmd: shown(argv),
        source,
    })?;
    log_ran(argv, started, &out.status.to_string());
    if !out.status.success() {
        return Err(RunError::Failed {
            cmd: shown(argv),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a user's shell command line (`passphrase-command`) with `/bin/sh -c`; returns its
/// stdout as bytes. The line itself is never logged: it may hold a secret.
pub fn run_shell(line: &str) -> Result<Vec<u8>, RunError> {
    let argv = ["/bin/sh".to_string(), "-c".to_string(), line.to_string()];
    let shown = "the passphrase command".to_string();
    let started = Instant::now();
    // The command may ask on the terminal (stdin, stderr); only its stdout is the answer.
    let out = command(&argv)?
        .stdin(Stdio::inherit())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| RunError::Spawn {
            cmd: shown.clone(),
            source,
        })?;
    log_ran(
        std::slice::from_ref(&shown),
        started,
        &out.status.to_string(),
    );
    if !out.status.success() {
        return Err(RunError::Failed {
            cmd: shown,
            status: out.status.to_string(),
            stderr: String::new(),
        });
    }
    Ok(out.stdout)
}

/// A running program whose stdout is read as a stream (vzdump --stdout). `finish` checks
/// its exit status; dropping it unfinished kills it.
pub struct StreamChild {
    cmd: String,
    argv: Vec<String>,
    started: Instant,
    child: Child,
    stdout: std::process::ChildStdout,
    stderr_file: tempfile::NamedTempFile,
}

impl StreamChild {
    pub fn spawn(argv: &[String]) -> Result<StreamChild, RunError> {
        let spawn_err = |source| RunError::Spawn {
            cmd: shown(argv),
            source,
        };
        // stderr goes to a file, not a pipe: nobody reads it while stdout streams, and a full
        // pipe would stall the program.
        let stderr_file = tempfile::NamedTempFile::new().map_err(spawn_err)?;
        let mut child = command(argv)?
            .stdout(Stdio::piped())
            .stderr(stderr_file.reopen().map_err(spawn_err)?)
            .spawn()
            .map_err(spawn_err)?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_err(std::io::Error::other("no stdout pipe")));
        };
        super::interrupt::register_child(child.id());
        Ok(StreamChild {
            cmd: shown(argv),
            argv: argv.to_vec(),
            started: Instant::now(),
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
        log_ran(&self.argv, self.started, &status.to_string());
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

/// A running program fed through its stdin (`pct restore -`, `qmrestore -`). Its own output
/// goes to proxborg's stderr, so stdout stays clean for scripts. `finish` closes stdin and
/// checks the exit status; dropping it unfinished closes stdin and waits, so the program sees
/// a truncated stream and cleans up after itself rather than being killed half way.
pub struct FeedChild {
    cmd: String,
    argv: Vec<String>,
    started: Instant,
    child: Child,
    stdin: Option<std::process::ChildStdin>,
}

impl FeedChild {
    pub fn spawn(argv: &[String]) -> Result<FeedChild, RunError> {
        use std::os::fd::AsFd;
        let spawn_err = |source| RunError::Spawn {
            cmd: shown(argv),
            source,
        };
        let to_stderr = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(spawn_err)?;
        let mut child = command(argv)?
            .stdin(Stdio::piped())
            .stdout(Stdio::from(to_stderr))
            .spawn()
            .map_err(spawn_err)?;
        let stdin = child.stdin.take();
        Ok(FeedChild {
            cmd: shown(argv),
            argv: argv.to_vec(),
            started: Instant::now(),
            child,
            stdin,
        })
    }

    /// Closes stdin, waits for the program; an error if it failed.
    pub fn finish(mut self) -> Result<(), RunError> {
        drop(self.stdin.take());
        let status = self.child.wait().map_err(|source| RunError::Spawn {
            cmd: self.cmd.clone(),
            source,
        })?;
        log_ran(&self.argv, self.started, &status.to_string());
        if status.success() {
            return Ok(());
        }
        Err(RunError::Failed {
            cmd: self.cmd.clone(),
            status: status.to_string(),
            stderr: "see its messages above".into(),
        })
    }
}

impl std::io::Write for FeedChild {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.stdin {
            Some(s) => s.write(buf),
            None => Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.stdin {
            Some(s) => s.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for FeedChild {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn commands_run_in_the_c_locale() {
        let out = run(&argv(&["sh", "-c", "printf %s \"$LC_ALL\""])).unwrap();
        assert_eq!(out, "C");
    }

    #[test]
    fn a_failure_names_the_command_and_the_tail_of_its_stderr() {
        let e = run(&argv(&["sh", "-c", "echo one >&2; echo two >&2; exit 3"])).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("sh -c") && msg.ends_with("one / two"), "{msg}");
    }

    #[test]
    fn a_fed_program_reads_what_is_written_and_its_status_counts() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!("cat > '{}'", out.display());
        let mut child = FeedChild::spawn(&argv(&["sh", "-c", &script])).unwrap();
        child.write_all(b"some bytes").unwrap();
        child.finish().unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"some bytes");
        let failing = FeedChild::spawn(&argv(&["sh", "-c", "cat >/dev/null; exit 3"])).unwrap();
        assert!(failing.finish().is_err());
    }

    #[test]
    fn an_empty_argv_is_an_error_not_a_panic() {
        assert!(run(&[]).is_err());
    }

    #[test]
    fn the_shell_runner_returns_stdout_and_hides_the_line() {
        assert_eq!(run_shell("printf 'secret\\n'").unwrap(), b"secret\n");
        let e = run_shell("exit 4").unwrap_err().to_string();
        assert!(
            e.contains("passphrase command") && !e.contains("exit 4"),
            "{e}"
        );
    }
}
