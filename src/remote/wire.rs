//! The `proxborg serve` wire protocol: pure encoding and decoding of frames, no I/O. Both
//! sides treat every byte from the other as untrusted: each length is checked against what
//! is left (and against `MAX_FRAME`) before anything is allocated.
//!
//! Layout (all integers big-endian):
//! - Handshake, once per direction, before any frame: the line `PROXBORG-SERVE v1\n`. A server
//!   that does not speak the client's version answers a line starting `PROXBORG-SERVE error:`
//!   and exits; anything else (a login banner, a shell error) is reported as "not proxborg".
//! - Frame: `u32 len` (of what follows, at most `MAX_FRAME`), `u32 request id`, `u8 kind`,
//!   payload. A response carries the id of its request; the server answers in order, but
//!   clients match by id, so any number of requests may be in flight.
//! - Strings: `u32 len` + UTF-8 (at most `MAX_STRING`). Data: the rest of the frame.
//!
//! Requests: 1 hello {path}, 2 put {key, data}, 3 replace {key, data}, 4 get {key},
//! 5 get-range {key, u64 offset, u64 len}, 6 size {key}, 7 list {prefix}, 8 delete {key},
//! 9 exists {key}. Responses: 0x80 done, 0x81 bool {u8 0|1}, 0x82 data, 0x83 u64,
//! 0x84 keys {u32 count, strings}, 0x85 welcome {u8 append-only, string canonical path},
//! 0xff error {u8 code, string message}.

pub const HANDSHAKE: &[u8] = b"PROXBORG-SERVE v1\n";
pub const HANDSHAKE_ERROR: &str = "PROXBORG-SERVE error:";
/// Longest handshake line either side reads.
pub const MAX_HANDSHAKE: usize = 256;
/// Largest frame: a pack (16 MiB target, one oversized blob at most a few times that) with
/// room to spare, small enough that a hostile peer cannot make us allocate much.
pub const MAX_FRAME: usize = 256 << 20;
pub const MAX_STRING: usize = 64 << 10;
/// Frame header after the length: id + kind.
const HEAD: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Hello { path: String },
    Put { key: String, data: Vec<u8> },
    Replace { key: String, data: Vec<u8> },
    Get { key: String },
    GetRange { key: String, offset: u64, len: u64 },
    Size { key: String },
    List { prefix: String },
    Delete { key: String },
    Exists { key: String },
}

/// Error kinds carried on the wire, so the client maps them to the same `RepoError`
/// variants the local backend returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotFound = 1,
    Exists = 2,
    Io = 3,
    Corrupt = 4,
    Invalid = 5,
    AppendOnly = 6,
    /// The path is outside every `--restrict-to-path`, or the hello was refused.
    Refused = 7,
    Protocol = 8,
}

impl ErrorCode {
    fn from_u8(b: u8) -> Option<Self> {
        use ErrorCode::*;
        Some(match b {
            1 => NotFound,
            2 => Exists,
            3 => Io,
            4 => Corrupt,
            5 => Invalid,
            6 => AppendOnly,
            7 => Refused,
            8 => Protocol,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Done,
    Bool(bool),
    Data(Vec<u8>),
    U64(u64),
    Keys(Vec<String>),
    Welcome { append_only: bool, path: String },
    Error { code: ErrorCode, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes is larger than the limit of {MAX_FRAME}")]
    TooLarge(u64),
    #[error("truncated frame")]
    Truncated,
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("bad frame: {0}")]
    Bad(&'static str),
}

/// The length prefix of a frame: how many bytes to read next. Checked before allocating.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len as u64));
    }
    if len < HEAD {
        return Err(WireError::Truncated);
    }
    Ok(len)
}

fn frame(id: u32, kind: u8, payload_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + HEAD + payload_len);
    out.extend_from_slice(&((HEAD + payload_len) as u32).to_be_bytes());
    out.extend_from_slice(&id.to_be_bytes());
    out.push(kind);
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Encodes a request as a whole frame (length prefix included). Fails if it would exceed
/// `MAX_FRAME` (the peer would refuse it).
pub fn encode_request(id: u32, req: &Request) -> Result<Vec<u8>, WireError> {
    let (kind, key, data): (u8, &str, &[u8]) = match req {
        Request::Hello { path } => (1, path, &[]),
        Request::Put { key, data } => (2, key, data),
        Request::Replace { key, data } => (3, key, data),
        Request::Get { key } => (4, key, &[]),
        Request::GetRange { key, .. } => (5, key, &[]),
        Request::Size { key } => (6, key, &[]),
        Request::List { prefix } => (7, prefix, &[]),
        Request::Delete { key } => (8, key, &[]),
        Request::Exists { key } => (9, key, &[]),
    };
    if key.len() > MAX_STRING {
        return Err(WireError::Bad("key too long"));
    }
    let payload = 4 + key.len() + data.len() + 16;
    if HEAD + payload > MAX_FRAME {
        return Err(WireError::TooLarge((HEAD + payload) as u64));
    }
    let mut out = frame(id, kind, payload);
    put_str(&mut out, key);
    if let Request::GetRange { offset, len, .. } = req {
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
    }
    out.extend_from_slice(data);
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

pub fn encode_response(id: u32, resp: &Response) -> Vec<u8> {
    let mut out;
    match resp {
        Response::Done => out = frame(id, 0x80, 0),
        Response::Bool(b) => {
            out = frame(id, 0x81, 1);
            out.push(*b as u8);
        }
        Response::Data(d) => {
            out = frame(id, 0x82, d.len());
            out.extend_from_slice(d);
        }
        Response::U64(n) => {
            out = frame(id, 0x83, 8);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Response::Keys(keys) => {
            out = frame(
                id,
                0x84,
                4 + keys.iter().map(|k| 4 + k.len()).sum::<usize>(),
            );
            out.extend_from_slice(&(keys.len() as u32).to_be_bytes());
            for k in keys {
                put_str(&mut out, k);
            }
        }
        Response::Welcome { append_only, path } => {
            out = frame(id, 0x85, 5 + path.len());
            out.push(*append_only as u8);
            put_str(&mut out, path);
        }
        Response::Error { code, message } => {
            let message = truncate(message, MAX_STRING);
            out = frame(id, 0xff, 5 + message.len());
            out.push(*code as u8);
            put_str(&mut out, message);
        }
    }
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reads from a frame body (what follows the length prefix).
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.0.len() {
            return Err(WireError::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn string(&mut self) -> Result<String, WireError> {
        let len = self.u32()? as usize;
        if len > MAX_STRING {
            return Err(WireError::Bad("string too long"));
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::Bad("string is not UTF-8"))
    }
    fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0).to_vec()
    }
    fn end(&self) -> Result<(), WireError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(WireError::Bad("trailing bytes"))
        }
    }
}

fn head(body: &[u8]) -> Result<(u32, u8, Cursor<'_>), WireError> {
    if body.len() > MAX_FRAME {
        return Err(WireError::TooLarge(body.len() as u64));
    }
    let mut c = Cursor(body);
    let id = c.u32()?;
    let kind = c.u8()?;
    Ok((id, kind, c))
}

/// Decodes a frame body (without its length prefix) into the request id and the request.
pub fn decode_request(body: &[u8]) -> Result<(u32, Request), WireError> {
    let (id, kind, mut c) = head(body)?;
    if !(1..=9).contains(&kind) {
        return Err(WireError::UnknownKind(kind));
    }
    let key = c.string()?;
    let req = match kind {
        1 => Request::Hello { path: key },
        2 => Request::Put {
            key,
            data: c.rest(),
        },
        3 => Request::Replace {
            key,
            data: c.rest(),
        },
        4 => Request::Get { key },
        5 => Request::GetRange {
            key,
            offset: c.u64()?,
            len: c.u64()?,
        },
        6 => Request::Size { key },
        7 => Request::List { prefix: key },
        8 => Request::Delete { key },
        _ => Request::Exists { key },
    };
    c.end()?;
    Ok((id, req))
}

/// Decodes a frame body (without its length prefix) into the request id and the response.
pub fn decode_response(body: &[u8]) -> Result<(u32, Response), WireError> {
    let (id, kind, mut c) = head(body)?;
    let resp = match kind {
        0x80 => Response::Done,
        0x81 => match c.u8()? {
            0 => Response::Bool(false),
            1 => Response::Bool(true),
            _ => return Err(WireError::Bad("bool is neither 0 nor 1")),
        },
        0x82 => Response::Data(c.rest()),
        0x83 => Response::U64(c.u64()?),
        0x84 => {
            let count = c.u32()? as usize;
            // Each key takes at least its 4-byte length: a count the frame cannot hold is
            // refused before the vector is sized by it.
            if count > c.0.len() / 4 {
                return Err(WireError::Truncated);
            }
            let mut keys = Vec::with_capacity(count);
            for _ in 0..count {
                keys.push(c.string()?);
            }
            Response::Keys(keys)
        }
        0x85 => {
            let append_only = match c.u8()? {
                0 => false,
                1 => true,
                _ => return Err(WireError::Bad("bool is neither 0 nor 1")),
            };
            Response::Welcome {
                append_only,
                path: c.string()?,
            }
        }
        0xff => {
            let code = ErrorCode::from_u8(c.u8()?).ok_or(WireError::Bad("unknown error code"))?;
            Response::Error {
                code,
                message: c.string()?,
            }
        }
        k => return Err(WireError::UnknownKind(k)),
    };
    c.end()?;
    Ok((id, resp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn body(frame: &[u8]) -> &[u8] {
        let len = frame_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        &frame[4..]
    }

    fn requests() -> impl Strategy<Value = Request> {
        let key = "[a-z/0-9]{0,40}";
        let data = proptest::collection::vec(any::<u8>(), 0..200);
        prop_oneof![
            key.prop_map(|path| Request::Hello { path }),
            (key, data.clone()).prop_map(|(key, data)| Request::Put { key, data }),
            (key, data).prop_map(|(key, data)| Request::Replace { key, data }),
            key.prop_map(|key| Request::Get { key }),
            (key, any::<u64>(), any::<u64>()).prop_map(|(key, offset, len)| Request::GetRange {
                key,
                offset,
                len
            }),
            key.prop_map(|key| Request::Size { key }),
            key.prop_map(|prefix| Request::List { prefix }),
            key.prop_map(|key| Request::Delete { key }),
            key.prop_map(|key| Request::Exists { key }),
        ]
    }

    fn responses() -> impl Strategy<Value = Response> {
        prop_oneof![
            Just(Response::Done),
            any::<bool>().prop_map(Response::Bool),
            proptest::collection::vec(any::<u8>(), 0..200).prop_map(Response::Data),
            any::<u64>().prop_map(Response::U64),
            proptest::collection::vec("\\PC{0,20}", 0..10).prop_map(Response::Keys),
            (any::<bool>(), "\\PC{0,30}")
                .prop_map(|(append_only, path)| Response::Welcome { append_only, path }),
            (1u8..=8, "\\PC{0,30}").prop_map(|(c, message)| Response::Error {
                code: ErrorCode::from_u8(c).unwrap(),
                message
            }),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(id in any::<u32>(), req in requests()) {
            let f = encode_request(id, &req).unwrap();
            prop_assert_eq!(decode_request(body(&f)).unwrap(), (id, req));
        }

        #[test]
        fn responses_round_trip(id in any::<u32>(), resp in responses()) {
            let f = encode_response(id, &resp);
            prop_assert_eq!(decode_response(body(&f)).unwrap(), (id, resp));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_request(&bytes);
            let _ = decode_response(&bytes);
        }
    }

    #[test]
    fn lengths_are_checked_before_allocating() {
        assert_eq!(
            frame_len(u32::MAX.to_be_bytes()),
            Err(WireError::TooLarge(u32::MAX as u64))
        );
        assert_eq!(frame_len([0, 0, 0, 2]), Err(WireError::Truncated));
        // A key list claiming four billion keys in a 9-byte body.
        let mut b = vec![0, 0, 0, 1, 0x84];
        b.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode_response(&b), Err(WireError::Truncated));
        // A string longer than the limit.
        let mut b = vec![0, 0, 0, 1, 4];
        b.extend_from_slice(&(MAX_STRING as u32 + 1).to_be_bytes());
        assert!(decode_request(&b).is_err());
        // Trailing bytes after a fixed-size request.
        let mut f = encode_request(
            7,
            &Request::Size {
                key: "config".into(),
            },
        )
        .unwrap();
        f.push(0);
        assert_eq!(
            decode_request(&f[4..]),
            Err(WireError::Bad("trailing bytes"))
        );
    }
}
