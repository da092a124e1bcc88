//! A repository in an S3-compatible bucket (AWS, Ceph RGW, MinIO, Garage), path-style.
//!
//! Requests are signed by `rusty-s3` (SigV4 presigned URLs, sans I/O) and sent by `ureq`
//! (blocking, rustls): no async runtime. The body is not part of the signature
//! (`UNSIGNED-PAYLOAD`): every object is authenticated by the client itself (blob ids, AEAD,
//! sealed headers), so a changed body is caught on read whoever changed it.
//!
//! The backend trait's semantics on a store without conditional writes:
//! - `put` never overwrites: a HEAD first, then the PUT. Two writers racing for one key write
//!   the same bytes (keys are content addresses or carry a random part, like lock names).
//!   `If-None-Match` is not relied on (Garage ignores it).
//! - `delete` of a missing key is `NotFound` (a HEAD first; S3's DELETE says 204 either way).
//! - `list` pages through ListObjectsV2 (1000 keys a page) and sorts.
//! - Retries: 5xx, 429, timeouts and connection errors are retried with exponential backoff
//!   (`RETRY_DELAYS`); every PUT is idempotent (same key, same bytes). What survives the
//!   retries is one line naming the object, the request and the server's answer.

use super::pipeline::{PutFn, PutPool};
use super::{check_key, Backend};
use crate::repo::error::{RepoError, Result};
use crate::repo::location::S3Url;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::io::Read;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long a signed URL stays valid: one request's life, retries included.
const SIGNED_FOR: Duration = Duration::from_secs(3600);
/// Waits between attempts: 7 attempts over ~16 s, enough to ride out a storage node's
/// restart or a load balancer's failover, short enough that a dead endpoint fails the run soon.
const RETRY_DELAYS: [u64; 6] = [250, 500, 1000, 2000, 4000, 8000];
/// The most read of an answer that carries no object (an error document of PUT, HEAD, DELETE).
const ERROR_BODY: u64 = 64 << 10;
/// Puts in flight while a backup streams packs, and packs queued behind them.
const PUT_WORKERS: usize = 6;
const PUT_QUEUE: usize = 2;

/// Access key, secret and region; from the environment or the settings file (never argv).
#[derive(Clone)]
pub struct S3Access {
    pub key_id: String,
    pub secret: zeroize::Zeroizing<String>,
    pub region: String,
}

struct Inner {
    bucket: Bucket,
    creds: Credentials,
    /// Key prefix inside the bucket: empty or ending in `/`.
    prefix: String,
    agent: ureq::Agent,
    url: S3Url,
}

pub struct S3Backend {
    inner: Arc<Inner>,
    pool: OnceLock<PutPool>,
}

/// One answer: the status, the body (up to the request's limit) and `Content-Length`.
struct Answer {
    status: u16,
    body: Vec<u8>,
    length: Option<u64>,
}

/// One failed request: the HTTP status and the server's error code and message, or the
/// transport error.
enum Failure {
    Status(u16, String),
    Transport(String),
}

impl Failure {
    fn transient(&self) -> bool {
        match self {
            Failure::Status(code, _) => is_transient_status(*code),
            Failure::Transport(_) => true,
        }
    }
}

/// Statuses worth another attempt: the server's trouble, not the request's.
pub fn is_transient_status(code: u16) -> bool {
    code >= 500 || code == 429 || code == 408
}

impl S3Backend {
    pub fn new(url: S3Url, access: S3Access) -> Result<Self> {
        let endpoint = url
            .endpoint()
            .parse()
            .map_err(|e| RepoError::Invalid(format!("{url}: bad endpoint: {e}")))?;
        let bucket = Bucket::new(endpoint, UrlStyle::Path, url.bucket.clone(), access.region)
            .map_err(|e| RepoError::Invalid(format!("{url}: {e:?}")))?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .timeout_per_write(Some(Duration::from_secs(60)))
            .max_idle_connections_per_host(PUT_WORKERS + 2)
            .user_agent(concat!("proxborg/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let prefix = if url.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", url.prefix)
        };
        Ok(S3Backend {
            inner: Arc::new(Inner {
                bucket,
                creds: Credentials::new(access.key_id, access.secret.as_str()),
                prefix,
                agent,
                url,
            }),
            pool: OnceLock::new(),
        })
    }

    /// Creates the bucket unless it exists (`init`).
    pub fn create_bucket_if_missing(&self) -> Result<bool> {
        let i = &self.inner;
        let head = i.bucket.head_bucket(Some(&i.creds)).sign(SIGNED_FOR);
        let a = i.retrying("HEAD", "(bucket)", || {
            i.send("HEAD", head.as_str(), &[], None, ERROR_BODY)
        })?;
        match a.status {
            200 => Ok(false),
            404 => {
                let create = i.bucket.create_bucket(&i.creds).sign(SIGNED_FOR);
                let a = i.retrying("PUT", "(bucket)", || {
                    i.send("PUT", create.as_str(), &[], None, ERROR_BODY)
                })?;
                match a.status {
                    200 => Ok(true),
                    status => Err(i.refused("PUT", "(bucket)", status, &a.body)),
                }
            }
            status => Err(i.refused("HEAD", "(bucket)", status, &a.body)),
        }
    }

    fn pool(&self) -> &PutPool {
        self.pool.get_or_init(|| {
            let inner = self.inner.clone();
            let put: PutFn = Arc::new(move |key: &str, data: &[u8]| inner.put(key, data));
            PutPool::new(PUT_WORKERS, PUT_QUEUE, put)
        })
    }
}

impl Inner {
    fn full_key(&self, key: &str) -> Result<String> {
        check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    /// One request; the status and (for answers with a body) its body, of which more than
    /// `cap` bytes (or the range asked for) are never read.
    fn send(
        &self,
        method: &str,
        url: &str,
        body: &[u8],
        range: Option<(u64, usize)>,
        cap: u64,
    ) -> std::result::Result<Answer, Failure> {
        let transport = |e: ureq::Error| Failure::Transport(e.to_string());
        super::traffic::sent(body.len() as u64 + url.len() as u64);
        let mut response = match method {
            "PUT" => self.agent.put(url).send(body).map_err(transport)?,
            "GET" => {
                let mut req = self.agent.get(url);
                if let Some((offset, len)) = range {
                    let last = offset + len as u64 - 1;
                    req = req.header("Range", format!("bytes={offset}-{last}"));
                }
                req.call().map_err(transport)?
            }
            "DELETE" => self.agent.delete(url).call().map_err(transport)?,
            _ => self.agent.head(url).call().map_err(transport)?,
        };
        let length = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let status = response.status().as_u16();
        let limit = match range {
            Some((_, len)) => len as u64 + 1,
            None => cap + 1,
        };
        let mut body = Vec::new();
        if method != "HEAD" {
            response
                .body_mut()
                .as_reader()
                .take(limit)
                .read_to_end(&mut body)
                .map_err(|e| Failure::Transport(e.to_string()))?;
            super::traffic::received(body.len() as u64);
        }
        Ok(Answer {
            status,
            body,
            length,
        })
    }

    /// Runs `attempt` until it gives an answer that is not transient, or the retries run out.
    fn retrying(
        &self,
        method: &str,
        key: &str,
        mut attempt: impl FnMut() -> std::result::Result<Answer, Failure>,
    ) -> Result<Answer> {
        let mut delays = RETRY_DELAYS.iter();
        loop {
            let failure = match attempt() {
                Ok(a) if !is_transient_status(a.status) => return Ok(a),
                Ok(a) => Failure::Status(a.status, server_message(&a.body)),
                Err(f) => f,
            };
            match delays.next() {
                Some(ms) if failure.transient() => std::thread::sleep(Duration::from_millis(*ms)),
                _ => {
                    let why = match failure {
                        Failure::Status(code, message) => format!("HTTP {code} {message}"),
                        Failure::Transport(e) => e,
                    };
                    return Err(self.error(
                        method,
                        key,
                        &format!("{why} (after {} attempts)", RETRY_DELAYS.len() + 1),
                    ));
                }
            }
        }
    }

    fn error(&self, method: &str, key: &str, why: &str) -> RepoError {
        RepoError::io(
            format!("{}/{key}", self.url),
            std::io::Error::other(format!("{method}: {why}")),
        )
    }

    fn refused(&self, method: &str, key: &str, status: u16, body: &[u8]) -> RepoError {
        self.error(
            method,
            key,
            &format!("HTTP {status} {}", server_message(body)),
        )
    }

    /// The object's size, or `None` when it does not exist.
    fn head(&self, key: &str) -> Result<Option<u64>> {
        let full = self.full_key(key)?;
        let url = self
            .bucket
            .head_object(Some(&self.creds), &full)
            .sign(SIGNED_FOR);
        let a = self.retrying("HEAD", key, || {
            self.send("HEAD", url.as_str(), &[], None, ERROR_BODY)
        })?;
        match (a.status, a.length) {
            (200, Some(len)) => Ok(Some(len)),
            (200, None) => Err(self.error("HEAD", key, "no Content-Length in the answer")),
            (404, _) => Ok(None),
            (status, _) => Err(self.refused("HEAD", key, status, &a.body)),
        }
    }

    fn put_always(&self, key: &str, data: &[u8]) -> Result<()> {
        let full = self.full_key(key)?;
        let url = self
            .bucket
            .put_object(Some(&self.creds), &full)
            .sign(SIGNED_FOR);
        let a = self.retrying("PUT", key, || {
            self.send("PUT", url.as_str(), data, None, ERROR_BODY)
        })?;
        match a.status {
            200 => Ok(()),
            status => Err(self.refused("PUT", key, status, &a.body)),
        }
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<bool> {
        if self.head(key)?.is_some() {
            return Ok(false);
        }
        self.put_always(key, data)?;
        Ok(true)
    }

    fn get(&self, key: &str, range: Option<(u64, usize)>) -> Result<Vec<u8>> {
        let full = self.full_key(key)?;
        let url = self
            .bucket
            .get_object(Some(&self.creds), &full)
            .sign(SIGNED_FOR);
        let cap = super::largest_object(key);
        let Answer { status, body, .. } = self.retrying("GET", key, || {
            self.send("GET", url.as_str(), &[], range, cap)
        })?;
        match (status, range) {
            (200, None) if body.len() as u64 > cap => Err(RepoError::corrupt(
                key,
                format!("larger than {cap} bytes, more than such an object can be"),
            )),
            (200, None) => Ok(body),
            (206, Some((offset, len))) | (200, Some((offset @ 0, len))) => {
                // A 200 for a range means the server sent the whole object: fine only from 0.
                if body.len() < len {
                    return Err(RepoError::corrupt(
                        key,
                        format!("shorter than {} bytes", offset + len as u64),
                    ));
                }
                Ok(body[..len].to_vec())
            }
            (416, Some((offset, len))) => Err(RepoError::corrupt(
                key,
                format!("shorter than {} bytes", offset + len as u64),
            )),
            (404, _) => Err(RepoError::NotFound(key.to_string())),
            (status, _) => Err(self.refused("GET", key, status, &body)),
        }
    }
}

/// The access key id and secret of an AWS-style credentials file: `aws_access_key_id = ...`
/// and `aws_secret_access_key = ...` lines; `[section]` headers, comments and other keys are
/// ignored (the first value of each key wins).
pub fn parse_credentials(
    text: &str,
) -> std::result::Result<(String, zeroize::Zeroizing<String>), String> {
    let mut id = None;
    let mut secret = None;
    for line in text.lines().map(str::trim) {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "aws_access_key_id" if id.is_none() && !v.is_empty() => id = Some(v.to_string()),
            "aws_secret_access_key" if secret.is_none() && !v.is_empty() => {
                secret = Some(zeroize::Zeroizing::new(v.to_string()))
            }
            _ => {}
        }
    }
    match (id, secret) {
        (Some(i), Some(s)) => Ok((i, s)),
        (None, _) => Err("no aws_access_key_id line".into()),
        (_, None) => Err("no aws_secret_access_key line".into()),
    }
}

/// The `<Code>` and `<Message>` of an S3 error document, or the start of whatever came.
fn server_message(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(2048)]);
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find('<')? + start;
        Some(text[start..end].trim().to_string())
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c,
        _ => text.chars().filter(|c| !c.is_control()).take(200).collect(),
    }
}

impl Backend for S3Backend {
    fn put(&self, key: &str, data: &[u8]) -> Result<bool> {
        self.inner.put(key, data)
    }

    fn put_pipelined(&self, key: &str, data: &[u8]) -> Result<()> {
        check_key(key)?;
        self.pool().submit(key, data)
    }

    fn settle(&self) -> Result<()> {
        match self.pool.get() {
            Some(pool) => pool.settle(),
            None => Ok(()),
        }
    }

    fn replace(&self, key: &str, data: &[u8]) -> Result<()> {
        self.inner.put_always(key, data)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.inner.get(key, None)
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        if len == 0 {
            // No byte range is empty in HTTP: ask for the size instead.
            return match self.inner.head(key)? {
                Some(size) if offset <= size => Ok(Vec::new()),
                Some(_) => Err(RepoError::corrupt(
                    key,
                    format!("shorter than {offset} bytes"),
                )),
                None => Err(RepoError::NotFound(key.to_string())),
            };
        }
        self.inner.get(key, Some((offset, len)))
    }

    fn size(&self, key: &str) -> Result<u64> {
        self.inner
            .head(key)?
            .ok_or_else(|| RepoError::NotFound(key.to_string()))
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let i = &self.inner;
        let wanted = format!("{}/", i.full_key(prefix)?);
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = i.bucket.list_objects_v2(Some(&i.creds));
            action.with_prefix(wanted.as_str());
            if let Some(t) = &token {
                action.with_continuation_token(t.as_str());
            }
            let url = action.sign(SIGNED_FOR);
            let a = i.retrying("LIST", prefix, || {
                i.send("GET", url.as_str(), &[], None, super::LARGEST_LIST_PAGE)
            })?;
            if a.status != 200 {
                return Err(i.refused("LIST", prefix, a.status, &a.body));
            }
            let body = a.body;
            let text = String::from_utf8_lossy(&body);
            let page = rusty_s3::actions::ListObjectsV2::parse_response(&text)
                .map_err(|e| i.error("LIST", prefix, &format!("unreadable answer: {e}")))?;
            for object in page.contents {
                // Keys that are not ours (a stray upload, a key outside the rules) are left
                // out rather than trusted.
                if let Some(key) = object.key.strip_prefix(&i.prefix) {
                    if check_key(key).is_ok() {
                        keys.push(key.to_string());
                    }
                }
            }
            match page.next_continuation_token {
                Some(t) if token.as_ref() != Some(&t) => token = Some(t),
                Some(_) => return Err(i.error("LIST", prefix, "the listing repeats itself")),
                None => break,
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    fn delete(&self, key: &str) -> Result<()> {
        if self.inner.head(key)?.is_none() {
            return Err(RepoError::NotFound(key.to_string()));
        }
        self.discard(key)
    }

    fn discard(&self, key: &str) -> Result<()> {
        let i = &self.inner;
        let full = i.full_key(key)?;
        let url = i
            .bucket
            .delete_object(Some(&i.creds), &full)
            .sign(SIGNED_FOR);
        let a = i.retrying("DELETE", key, || {
            i.send("DELETE", url.as_str(), &[], None, ERROR_BODY)
        })?;
        match a.status {
            200 | 204 => Ok(()),
            status => Err(i.refused("DELETE", key, status, &a.body)),
        }
    }

    fn exists(&self, key: &str) -> Result<bool> {
        Ok(self.inner.head(key)?.is_some())
    }

    fn location(&self) -> String {
        self.inner.url.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_statuses_are_the_servers_trouble() {
        for code in [500, 502, 503, 504, 429, 408] {
            assert!(is_transient_status(code), "{code}");
        }
        for code in [200, 204, 400, 403, 404, 409, 416] {
            assert!(!is_transient_status(code), "{code}");
        }
    }

    #[test]
    fn credentials_files_in_the_aws_style() {
        let (id, secret) = parse_credentials(
            "[default]\n# mine\naws_access_key_id = GK123\naws_secret_access_key=s3cr=t\nregion = x\n",
        )
        .unwrap();
        assert_eq!((id.as_str(), secret.as_str()), ("GK123", "s3cr=t"));
        assert!(parse_credentials("aws_access_key_id = a\n").is_err());
        assert!(parse_credentials("aws_secret_access_key = a\n").is_err());
        assert!(parse_credentials("").is_err());
    }

    #[test]
    fn server_messages_are_one_short_line() {
        let xml = b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code>\
            <Message>Forbidden: no such key</Message></Error>";
        assert_eq!(server_message(xml), "AccessDenied: Forbidden: no such key");
        assert_eq!(server_message(b"bad\ngateway"), "badgateway");
        assert_eq!(server_message(&[b'x'; 5000]).len(), 200);
    }
}
