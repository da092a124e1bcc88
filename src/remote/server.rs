//! `proxborg serve`: the far side of the ssh backend. Reads requests on stdin, answers on
//! stdout (nothing else may ever be written there), against a `LocalDir`: puts on a few
//! threads, everything else in order (`serve`). It owns the server-side policy and must
//! never trust the client for it:
//!
//! - `--restrict-to-path`: the repository path in the hello is made absolute (relative to the
//!   server's working directory, the user's home under ssh) and canonicalized (symlinks
//!   resolved; of a path that does not exist yet, the longest existing ancestor is, and the
//!   rest may not contain `..`), then must lie under one of the canonicalized restrictions.
//! - `--append-only`: `put` works; `delete` and `replace` are refused except under `locks/`
//!   (a client must still take and drop its locks), and `replace` of `config` only while
//!   there is none (so `init` works through an append-only key, and nothing can rewrite the
//!   config later). The welcome tells the client, which then refuses delete, prune and
//!   compact before starting them (`Repository::append_only`).

use super::wire::{self, ErrorCode, Request, Response};
use crate::repo::backend::{local::LocalDir, Backend};
use crate::repo::RepoError;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Default, Clone)]
pub struct ServeOptions {
    pub restrict_to: Vec<PathBuf>,
    pub append_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Puts written at once. A put ends with an fsync (of a 16 MiB pack on the benchmark's disk:
/// tens of milliseconds); answered one at a time, the client's whole pipeline waited for each,
/// as the local backend's writer threads do not.
const PUT_WORKERS: usize = 3;

/// Serves one client until it closes its end. Returns an error for a broken conversation
/// (after telling the client, when it can).
///
/// Requests are read in order. Puts go to `PUT_WORKERS` threads (at most one more waits, so a
/// client cannot make the server hold more than a few packs) and are answered when stored;
/// every other request is answered in order on the reading thread. Answers carry their
/// request's id, so the client matches them whatever their order, and it settles its
/// pipelined puts before anything that names their objects.
pub fn serve(
    mut input: impl Read,
    output: impl Write + Send,
    opts: &ServeOptions,
) -> Result<(), ServeError> {
    let out = std::sync::Mutex::new(io::BufWriter::new(output));
    let send = |id: u32, resp: &Response| -> io::Result<()> {
        let mut out = out.lock().unwrap();
        out.write_all(&wire::encode_response(id, resp))?;
        out.flush()
    };
    let line = read_line(&mut input)?;
    if line != wire::HANDSHAKE {
        let msg = format!(
            "{} this server speaks {}, the client sent {:?}\n",
            wire::HANDSHAKE_ERROR,
            String::from_utf8_lossy(wire::HANDSHAKE).trim_end(),
            String::from_utf8_lossy(&line).trim_end()
        );
        let mut out = out.lock().unwrap();
        out.write_all(msg.as_bytes())?;
        out.flush()?;
        return Err(ServeError::Protocol("unsupported handshake".into()));
    }
    {
        let mut out = out.lock().unwrap();
        out.write_all(wire::HANDSHAKE)?;
        out.flush()?;
    }
    // Until a hello opens the repository, nothing else is answered.
    let backend = loop {
        let Some((id, req)) = next_request(&mut input, &send)? else {
            return Ok(());
        };
        match req {
            Request::Hello { path } => match open(&path, opts) {
                Ok(root) => {
                    let path = root.display().to_string();
                    send(
                        id,
                        &Response::Welcome {
                            append_only: opts.append_only,
                            path,
                        },
                    )?;
                    break LocalDir::new(root);
                }
                Err(message) => send(
                    id,
                    &Response::Error {
                        code: ErrorCode::Refused,
                        message,
                    },
                )?,
            },
            _ => send(id, &refused("a request before the hello"))?,
        }
    };
    let backend = &backend;
    std::thread::scope(|scope| {
        let (puts, queued) = crossbeam_channel::bounded::<(u32, String, Vec<u8>)>(1);
        for _ in 0..PUT_WORKERS {
            let queued = queued.clone();
            let send = &send;
            scope.spawn(move || {
                for (id, key, data) in queued {
                    let resp = answer(backend, Request::Put { key, data }, opts.append_only);
                    // A failed answer means the client is gone: the reader sees the end.
                    let _ = send(id, &resp);
                }
            });
        }
        loop {
            let Some((id, req)) = next_request(&mut input, &send)? else {
                return Ok(());
            };
            match req {
                Request::Hello { .. } => send(id, &refused("a second hello"))?,
                Request::Put { key, data } => {
                    if puts.send((id, key, data)).is_err() {
                        return Err(ServeError::Protocol("the put workers stopped".into()));
                    }
                }
                req => send(id, &answer(backend, req, opts.append_only))?,
            }
        }
        // Leaving the scope drops `puts`: the workers store what was sent, then end.
    })
}

/// The next request, or None at the end of the input. A frame that does not decode is
/// answered with a protocol error and ends the conversation.
fn next_request(
    input: &mut impl Read,
    send: &impl Fn(u32, &Response) -> io::Result<()>,
) -> Result<Option<(u32, Request)>, ServeError> {
    let mut prefix = [0u8; 4];
    match input.read_exact(&mut prefix) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let decoded = wire::frame_len(prefix).and_then(|len| {
        let mut body = vec![0u8; len];
        input
            .read_exact(&mut body)
            .map_err(|_| wire::WireError::Truncated)?;
        wire::decode_request(&body)
    });
    match decoded {
        Ok(r) => Ok(Some(r)),
        Err(e) => {
            let resp = Response::Error {
                code: ErrorCode::Protocol,
                message: e.to_string(),
            };
            send(0, &resp)?;
            Err(ServeError::Protocol(e.to_string()))
        }
    }
}

fn refused(what: &str) -> Response {
    Response::Error {
        code: ErrorCode::Protocol,
        message: format!("{what} is not allowed"),
    }
}

fn read_line(input: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < wire::MAX_HANDSHAKE {
        if input.read(&mut b)? == 0 {
            break;
        }
        line.push(b[0]);
        if b[0] == b'\n' {
            break;
        }
    }
    Ok(line)
}

/// The repository root for a hello's path, or why it is refused.
fn open(path: &str, opts: &ServeOptions) -> Result<PathBuf, String> {
    let root = resolve(Path::new(path))?;
    if opts.restrict_to.is_empty() {
        return Ok(root);
    }
    for allowed in &opts.restrict_to {
        let allowed = std::fs::canonicalize(allowed).unwrap_or_else(|_| allowed.clone());
        if root.starts_with(&allowed) {
            return Ok(root);
        }
    }
    Err(format!(
        "repository path {path} is outside every --restrict-to-path of this server ({})",
        opts.restrict_to
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// An absolute, symlink-free spelling of `path`, which need not exist yet.
fn resolve(path: &Path) -> Result<PathBuf, String> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("working directory: {e}"))?
            .join(path)
    };
    let mut existing = abs.clone();
    let mut missing = Vec::new();
    loop {
        match std::fs::canonicalize(&existing) {
            Ok(mut real) => {
                for c in missing.iter().rev() {
                    real.push(c);
                }
                return Ok(real);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match existing.components().next_back() {
                    Some(Component::Normal(name)) => missing.push(name.to_os_string()),
                    Some(Component::CurDir) => {}
                    _ => {
                        return Err(format!(
                            "repository path {}: `..` after a directory that does not exist",
                            path.display()
                        ))
                    }
                }
                if !existing.pop() {
                    return Err(format!(
                        "repository path {}: cannot resolve",
                        path.display()
                    ));
                }
            }
            Err(e) => return Err(format!("repository path {}: {e}", path.display())),
        }
    }
}

fn answer(b: &LocalDir, req: Request, append_only: bool) -> Response {
    let result = match req {
        Request::Hello { .. } => unreachable!("handled by the caller"),
        Request::Put { key, data } => b.put(&key, &data).map(Response::Bool),
        Request::Replace { key, data } => {
            let first_config = key == "config" && !b.exists("config").unwrap_or(true);
            if append_only && !key.starts_with("locks/") && !first_config {
                Err(RepoError::AppendOnly("replace"))
            } else {
                b.replace(&key, &data).map(|()| Response::Done)
            }
        }
        Request::Get { key } => b.get(&key).map(Response::Data),
        Request::GetRange { key, offset, len } => match usize::try_from(len) {
            Ok(len) if len <= wire::MAX_FRAME - 64 => {
                b.get_range(&key, offset, len).map(Response::Data)
            }
            _ => Err(RepoError::Invalid(format!(
                "a range of {len} bytes is larger than one answer may carry"
            ))),
        },
        Request::Size { key } => b.size(&key).map(Response::U64),
        Request::List { prefix } => b.list(&prefix).map(Response::Keys),
        Request::Delete { key } => {
            if append_only && !key.starts_with("locks/") {
                Err(RepoError::AppendOnly("delete"))
            } else {
                b.delete(&key).map(|()| Response::Done)
            }
        }
        Request::Exists { key } => b.exists(&key).map(Response::Bool),
    };
    result.unwrap_or_else(|e| {
        let (code, message) = match e {
            RepoError::NotFound(k) => (ErrorCode::NotFound, k),
            RepoError::Exists(k) => (ErrorCode::Exists, k),
            RepoError::Corrupt { why, .. } => (ErrorCode::Corrupt, why),
            RepoError::Invalid(m) => (ErrorCode::Invalid, m),
            RepoError::AppendOnly(op) => (ErrorCode::AppendOnly, op.to_string()),
            other => (ErrorCode::Io, other.to_string()),
        };
        Response::Error { code, message }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_cannot_escape_their_restriction() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("allowed");
        std::fs::create_dir(&allowed).unwrap();
        std::fs::create_dir(dir.path().join("other")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("other"), allowed.join("link")).unwrap();
        let opts = ServeOptions {
            restrict_to: vec![allowed.clone()],
            append_only: false,
        };
        let p = |s: &str| dir.path().join(s).display().to_string();
        assert!(open(&p("allowed/repo"), &opts).is_ok());
        assert!(open(&p("allowed/new/deeper"), &opts).is_ok());
        for bad in [
            "other",
            "allowed/../other",
            "allowed/link",
            "allowed/link/repo",
            "allowed/missing/../../other",
        ] {
            assert!(open(&p(bad), &opts).is_err(), "{bad}");
        }
        assert!(open("/", &opts).is_err());
    }
}
