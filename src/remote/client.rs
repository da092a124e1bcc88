//! The `ssh` backend: spawns `ssh [-p port] [user@]host <remote> serve` (the remote command
//! from `PROXBORG_REMOTE_PATH`, default `proxborg`; ssh itself and its options from
//! `PROXBORG_RSH`, default `ssh`, split on whitespace, never through a shell) and speaks
//! `wire` over its stdin/stdout. One reader thread matches answers to waiting callers by
//! request id; ssh's stderr is kept (bounded) so that a failed or lost connection becomes
//! one line naming the host with ssh's last words.
//!
//! Errors arrive as typed codes and become the `RepoError` the local backend would have
//! returned; a dead connection is `RepoError::Io` for every call still waiting or made later.

use super::wire::{self, ErrorCode, Request, Response};
use crate::repo::backend::Backend;
use crate::repo::location::SshUrl;
use crate::repo::{RepoError, Result};
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Pipelined puts allowed in flight before `put_pipelined` waits for the oldest.
const WINDOW: usize = 8;
/// Bytes of ssh's stderr kept for messages.
const STDERR_KEEP: usize = 4096;

type Reply = std::result::Result<Response, String>;

#[derive(Default)]
struct Shared {
    pending: HashMap<u32, Sender<Reply>>,
    /// Why the connection is gone, once it is.
    dead: Option<String>,
}

pub struct SshBackend {
    url: SshUrl,
    /// The server's canonical spelling of the repository path.
    remote_path: String,
    append_only: bool,
    stdin: Mutex<Option<ChildStdin>>,
    shared: Arc<Mutex<Shared>>,
    next_id: AtomicU32,
    child: Mutex<Child>,
    reader: Mutex<Option<JoinHandle<()>>>,
    /// Pipelined puts not yet settled: key and the receiver of their answer.
    in_flight: Mutex<VecDeque<(String, Receiver<Reply>)>>,
}

/// The command line that reaches `proxborg serve` on the far side.
pub fn ssh_argv(url: &SshUrl, rsh: Option<&str>, remote: Option<&str>) -> Vec<String> {
    let mut argv: Vec<String> = rsh
        .unwrap_or("ssh")
        .split_whitespace()
        .map(String::from)
        .collect();
    if argv.is_empty() {
        argv.push("ssh".into());
    }
    if let Some(p) = url.port {
        argv.extend(["-p".into(), p.to_string()]);
    }
    if let Some(u) = &url.user {
        argv.extend(["-l".into(), u.clone()]);
    }
    argv.push("--".into());
    argv.push(url.host.clone());
    argv.push(remote.unwrap_or("proxborg").to_string());
    argv.push("serve".into());
    argv
}

impl SshBackend {
    pub fn connect(url: SshUrl) -> Result<Self> {
        let argv = ssh_argv(
            &url,
            std::env::var("PROXBORG_RSH").ok().as_deref(),
            std::env::var("PROXBORG_REMOTE_PATH").ok().as_deref(),
        );
        let fail =
            |msg: String| RepoError::io(PathBuf::from(url.to_string()), std::io::Error::other(msg));
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(format!("cannot run {}: {e}", argv[0])))?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let tail = Arc::new(Mutex::new(Vec::new()));
        let stderr_thread = {
            let tail = tail.clone();
            std::thread::spawn(move || keep_tail(stderr, &tail))
        };
        let host = url.host_port();
        let last_words = move |stderr_thread: JoinHandle<()>, tail: &Mutex<Vec<u8>>| {
            let _ = stderr_thread.join();
            let t = crate::host::runner::tail(&tail.lock().unwrap());
            if t.is_empty() {
                String::new()
            } else {
                format!(": {t}")
            }
        };

        // Handshake: a line each way before any frame.
        let _ = stdin.write_all(wire::HANDSHAKE).and_then(|_| stdin.flush());
        let line = read_line(&mut stdout);
        if line != wire::HANDSHAKE {
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            drop(stdin);
            let why = if text.starts_with(wire::HANDSHAKE_ERROR) {
                text
            } else if text.is_empty() {
                let _ = child.wait();
                format!("ssh to {host} failed{}", last_words(stderr_thread, &tail))
            } else {
                let _ = child.kill();
                let _ = child.wait();
                format!("the remote command on {host} is not proxborg serve (it printed {text:?})")
            };
            return Err(fail(why));
        }

        let shared = Arc::new(Mutex::new(Shared::default()));
        let reader = {
            let shared = shared.clone();
            let host = host.clone();
            std::thread::spawn(move || {
                let why = read_loop(&mut stdout, &shared);
                let why = format!(
                    "connection to {host} lost ({why}){}",
                    last_words(stderr_thread, &tail)
                );
                let mut s = shared.lock().unwrap();
                s.dead = Some(why.clone());
                for (_, tx) in s.pending.drain() {
                    let _ = tx.send(Err(why.clone()));
                }
            })
        };
        let mut backend = SshBackend {
            url,
            remote_path: String::new(),
            append_only: false,
            stdin: Mutex::new(Some(stdin)),
            shared,
            next_id: AtomicU32::new(1),
            child: Mutex::new(child),
            reader: Mutex::new(Some(reader)),
            in_flight: Mutex::new(VecDeque::new()),
        };
        let path = backend.url.path.clone();
        match backend.call(Request::Hello { path })? {
            Response::Welcome { append_only, path } => {
                backend.append_only = append_only;
                backend.remote_path = path;
                Ok(backend)
            }
            other => Err(backend.unexpected(other)),
        }
    }

    fn fail(&self, msg: String) -> RepoError {
        RepoError::io(
            PathBuf::from(self.url.to_string()),
            std::io::Error::other(msg),
        )
    }

    fn unexpected(&self, r: Response) -> RepoError {
        self.fail(format!(
            "unexpected answer from {}: {r:?}",
            self.url.host_port()
        ))
    }

    /// Sends a request and returns the receiver of its answer.
    fn send(&self, req: &Request) -> Result<Receiver<Reply>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = wire::encode_request(id, req).map_err(|e| RepoError::Invalid(e.to_string()))?;
        let (tx, rx) = bounded(1);
        {
            let mut s = self.shared.lock().unwrap();
            if let Some(why) = &s.dead {
                return Err(self.fail(why.clone()));
            }
            s.pending.insert(id, tx);
        }
        let mut stdin = self.stdin.lock().unwrap();
        if let Some(w) = stdin.as_mut() {
            // A write error means the connection is going away: the reader thread sees the
            // end and answers every pending call, this one included, with the reason.
            let _ = w.write_all(&frame).and_then(|_| w.flush());
            crate::repo::backend::traffic::sent(frame.len() as u64);
        }
        Ok(rx)
    }

    fn wait(&self, key: &str, rx: Receiver<Reply>) -> Result<Response> {
        match rx.recv() {
            Ok(Ok(Response::Error { code, message })) => Err(self.error(key, code, message)),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(why)) => Err(self.fail(why)),
            Err(_) => Err(self.fail("connection closed".into())),
        }
    }

    fn call(&self, req: Request) -> Result<Response> {
        let key = match &req {
            Request::Hello { path } => path.clone(),
            Request::Put { key, .. }
            | Request::Replace { key, .. }
            | Request::Get { key }
            | Request::GetRange { key, .. }
            | Request::Size { key }
            | Request::Delete { key }
            | Request::Exists { key } => key.clone(),
            Request::List { prefix } => prefix.clone(),
        };
        let rx = self.send(&req)?;
        self.wait(&key, rx)
    }

    fn error(&self, key: &str, code: ErrorCode, message: String) -> RepoError {
        let host = self.url.host_port();
        match code {
            ErrorCode::NotFound => RepoError::NotFound(message),
            ErrorCode::Exists => RepoError::Exists(message),
            ErrorCode::Corrupt => RepoError::corrupt(key, message),
            ErrorCode::Invalid => RepoError::Invalid(message),
            ErrorCode::AppendOnly => RepoError::AppendOnly(if message == "replace" {
                "replace (the server on this host runs --append-only)"
            } else {
                "delete (the server on this host runs --append-only)"
            }),
            ErrorCode::Refused => RepoError::Invalid(format!("{host}: {message}")),
            ErrorCode::Io | ErrorCode::Protocol => self.fail(format!("{host}: {message}")),
        }
    }
}

fn keep_tail(mut r: impl Read, tail: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        let mut t = tail.lock().unwrap();
        t.extend_from_slice(&buf[..n]);
        if t.len() > STDERR_KEEP {
            let cut = t.len() - STDERR_KEEP;
            t.drain(..cut);
        }
    }
}

fn read_line(r: &mut impl Read) -> Vec<u8> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < wire::MAX_HANDSHAKE {
        match r.read(&mut b) {
            Ok(1) => {
                line.push(b[0]);
                if b[0] == b'\n' {
                    break;
                }
            }
            _ => break,
        }
    }
    line
}

/// Reads answers until the connection ends; returns why it ended.
fn read_loop(r: &mut impl Read, shared: &Mutex<Shared>) -> String {
    let mut r = std::io::BufReader::with_capacity(1 << 20, r);
    loop {
        let mut prefix = [0u8; 4];
        if let Err(e) = r.read_exact(&mut prefix) {
            return if e.kind() == std::io::ErrorKind::UnexpectedEof {
                "closed".into()
            } else {
                e.to_string()
            };
        }
        let decoded = wire::frame_len(prefix).and_then(|len| {
            let mut body = vec![0u8; len];
            r.read_exact(&mut body)
                .map_err(|_| wire::WireError::Truncated)?;
            crate::repo::backend::traffic::received(4 + len as u64);
            wire::decode_response(&body)
        });
        let (id, resp) = match decoded {
            Ok(x) => x,
            Err(e) => return format!("bad answer: {e}"),
        };
        if let Response::Error {
            code: ErrorCode::Protocol,
            message,
        } = &resp
        {
            if id == 0 {
                return format!("the server refused the conversation: {message}");
            }
        }
        let tx = shared.lock().unwrap().pending.remove(&id);
        match tx {
            Some(tx) => {
                let _ = tx.send(Ok(resp));
            }
            None => return format!("an answer to request {id}, which is not waiting"),
        }
    }
}

impl Backend for SshBackend {
    fn put(&self, key: &str, data: &[u8]) -> Result<bool> {
        match self.call(Request::Put {
            key: key.into(),
            data: data.to_vec(),
        })? {
            Response::Bool(b) => Ok(b),
            r => Err(self.unexpected(r)),
        }
    }

    fn put_pipelined(&self, key: &str, data: &[u8]) -> Result<()> {
        let rx = self.send(&Request::Put {
            key: key.into(),
            data: data.to_vec(),
        })?;
        let oldest = {
            let mut q = self.in_flight.lock().unwrap();
            q.push_back((key.to_string(), rx));
            if q.len() > WINDOW {
                q.pop_front()
            } else {
                None
            }
        };
        if let Some((key, rx)) = oldest {
            self.wait(&key, rx)?;
        }
        Ok(())
    }

    fn settle(&self) -> Result<()> {
        let all: Vec<_> = self.in_flight.lock().unwrap().drain(..).collect();
        let mut first = Ok(());
        for (key, rx) in all {
            if let Err(e) = self.wait(&key, rx) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    fn replace(&self, key: &str, data: &[u8]) -> Result<()> {
        match self.call(Request::Replace {
            key: key.into(),
            data: data.to_vec(),
        })? {
            Response::Done => Ok(()),
            r => Err(self.unexpected(r)),
        }
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        match self.call(Request::Get { key: key.into() })? {
            Response::Data(d) => Ok(d),
            r => Err(self.unexpected(r)),
        }
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        match self.call(Request::GetRange {
            key: key.into(),
            offset,
            len: len as u64,
        })? {
            Response::Data(d) if d.len() == len => Ok(d),
            Response::Data(d) => Err(RepoError::corrupt(
                key,
                format!("server sent {} bytes for a range of {len}", d.len()),
            )),
            r => Err(self.unexpected(r)),
        }
    }

    fn size(&self, key: &str) -> Result<u64> {
        match self.call(Request::Size { key: key.into() })? {
            Response::U64(n) => Ok(n),
            r => Err(self.unexpected(r)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        match self.call(Request::List {
            prefix: prefix.into(),
        })? {
            Response::Keys(k) => Ok(k),
            r => Err(self.unexpected(r)),
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        match self.call(Request::Delete { key: key.into() })? {
            Response::Done => Ok(()),
            r => Err(self.unexpected(r)),
        }
    }

    fn exists(&self, key: &str) -> Result<bool> {
        match self.call(Request::Exists { key: key.into() })? {
            Response::Bool(b) => Ok(b),
            r => Err(self.unexpected(r)),
        }
    }

    fn location(&self) -> String {
        self.url.to_string()
    }

    /// Host and port as given plus the server's canonical path: two hosts never share a
    /// security record entry, and two spellings of one remote path do.
    fn canonical_location(&self) -> String {
        format!(
            "ssh://{}{}",
            self.url.host_port(),
            if self.remote_path.is_empty() {
                &self.url.path
            } else {
                &self.remote_path
            }
        )
    }

    fn append_only(&self) -> bool {
        self.append_only
    }
}

impl Drop for SshBackend {
    fn drop(&mut self) {
        let _ = self.settle();
        // Closing stdin ends the server's loop, then ssh exits and the reader sees the end.
        self.stdin.lock().unwrap().take();
        let _ = self.child.lock().unwrap().wait();
        if let Some(r) = self.reader.lock().unwrap().take() {
            let _ = r.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ssh_command_line() {
        let url = SshUrl {
            user: Some("backup".into()),
            host: "pbs".into(),
            port: Some(2222),
            path: "/srv/r".into(),
        };
        assert_eq!(
            ssh_argv(
                &url,
                Some("ssh -i /k  -o BatchMode=yes"),
                Some("/usr/local/bin/proxborg")
            ),
            [
                "ssh",
                "-i",
                "/k",
                "-o",
                "BatchMode=yes",
                "-p",
                "2222",
                "-l",
                "backup",
                "--",
                "pbs",
                "/usr/local/bin/proxborg",
                "serve"
            ]
        );
        let url = SshUrl {
            user: None,
            port: None,
            ..url
        };
        assert_eq!(
            ssh_argv(&url, None, None),
            ["ssh", "--", "pbs", "proxborg", "serve"]
        );
    }
}
