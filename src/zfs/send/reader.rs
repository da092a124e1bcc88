//! The record-by-record decoder. Memory is one header and one payload buffer (at most
//! `MAX_PAYLOAD`), reused; the caller should hand in a `BufReader` around the pipe.

use super::{
    drr, Begin, Event, Fletcher4, SendStreamError, StreamErrorKind as K, BEGIN_FLAGS_ALLOWED,
    CHECKSUMMED_LEN, DMU_OST_ZVOL, DMU_OT_ZVOL, DMU_SUBSTREAM, FEATURE_LARGE_BLOCKS, MAGIC,
    MAX_PAYLOAD, OBJECT_END, RECORD_LEN, ZVOL_OBJ,
};
use std::io::{ErrorKind, Read};

fn u32_at(h: &[u8; RECORD_LEN], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&h[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(h: &[u8; RECORD_LEN], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[at..at + 8]);
    u64::from_le_bytes(b)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Body,
    Done,
    Failed,
}

/// Reads a zvol's `zfs send` stream; call [`next_event`](Self::next_event) until it returns
/// `Ok(None)` (after END) or an error (after which it only returns `Failed`).
pub struct SendStreamReader<R> {
    input: R,
    /// Bytes consumed so far.
    pos: u64,
    cksum: Fletcher4,
    header: [u8; RECORD_LEN],
    payload: Vec<u8>,
    to_guid: u64,
    state: State,
}

impl<R: Read> SendStreamReader<R> {
    pub fn new(input: R) -> Self {
        SendStreamReader {
            input,
            pos: 0,
            cksum: Fletcher4::default(),
            header: [0; RECORD_LEN],
            payload: Vec::new(),
            to_guid: 0,
            state: State::Start,
        }
    }

    /// Bytes of the stream consumed so far.
    pub fn offset(&self) -> u64 {
        self.pos
    }

    pub fn next_event(&mut self) -> Result<Option<Event<'_>>, SendStreamError> {
        match self.state {
            State::Done => return Ok(None),
            State::Failed => return Err(self.err(self.pos, K::Failed)),
            State::Start | State::Body => {}
        }
        match self.step() {
            Ok(step) => Ok(Some(match step {
                Step::Begin(b) => Event::Begin(b),
                Step::DataObject(block_size) => Event::DataObject { block_size },
                Step::Write(offset) => Event::Write {
                    offset,
                    data: &self.payload,
                },
                Step::Free(offset, end) => Event::Free { offset, end },
                Step::End => Event::End {
                    to_guid: self.to_guid,
                },
            })),
            Err(e) => {
                self.state = State::Failed;
                Err(e)
            }
        }
    }

    fn err(&self, offset: u64, kind: K) -> SendStreamError {
        SendStreamError { offset, kind }
    }

    /// Reads records until one yields an event (records of other objects yield none).
    fn step(&mut self) -> Result<Step, SendStreamError> {
        loop {
            let at = self.pos;
            let mut header = [0u8; RECORD_LEN];
            match self.read_full(&mut header)? {
                0 if self.state == State::Start => {
                    return Err(self.err(at, K::Truncated("the BEGIN record")))
                }
                0 => return Err(self.err(at, K::MissingEnd)),
                n if n < RECORD_LEN => return Err(self.err(at, K::Truncated("a record header"))),
                _ => {}
            }
            self.header = header;
            let h = &self.header;
            let ty = u32_at(h, 0);
            if self.state == State::Start {
                let begin = self.begin(at)?;
                self.state = State::Body;
                return Ok(Step::Begin(begin));
            }
            if ty >= drr::NUMTYPES {
                return Err(self.err(at, K::UnknownType(ty)));
            }
            // END's checksum is the state before END's header.
            let before = self.cksum;
            // The checksum of the bytes before this record's own checksum field.
            self.cksum.update(&h[..CHECKSUMMED_LEN]);
            let stored = &h[CHECKSUMMED_LEN..];
            if stored.iter().any(|&b| b != 0) && stored != self.cksum.to_bytes() {
                return Err(self.err(at, K::RecordChecksum));
            }
            self.cksum.update(&h[CHECKSUMMED_LEN..]);
            match ty {
                drr::BEGIN => return Err(self.err(at, K::SecondBegin)),
                drr::END => return self.end(at, before).map(|()| Step::End),
                drr::OBJECT => {
                    let object = u64_at(h, 8);
                    let obj_type = u32_at(h, 16);
                    let blksz = u32_at(h, 24);
                    let raw_bonus = u32_at(h, 36);
                    let bonus = if raw_bonus != 0 {
                        u64::from(raw_bonus)
                    } else {
                        u64::from(u32_at(h, 28)).div_ceil(8) * 8
                    };
                    self.read_payload(at, "OBJECT bonus", bonus)?;
                    if object == ZVOL_OBJ {
                        if obj_type != DMU_OT_ZVOL {
                            return Err(self.err(at, K::DataObjectType(obj_type)));
                        }
                        if blksz == 0 || blksz % 512 != 0 || u64::from(blksz) > MAX_PAYLOAD {
                            return Err(self.err(at, K::BlockSize(blksz)));
                        }
                        return Ok(Step::DataObject(blksz));
                    }
                }
                drr::FREEOBJECTS => {
                    let (first, count) = (u64_at(h, 8), u64_at(h, 16));
                    if first <= ZVOL_OBJ && ZVOL_OBJ - first < count {
                        return Err(self.err(at, K::FreesDataObject { first, count }));
                    }
                }
                drr::WRITE => {
                    let object = u64_at(h, 8);
                    let obj_type = u32_at(h, 16);
                    let offset = u64_at(h, 24);
                    let logical = u64_at(h, 32);
                    if h[50] != 0 {
                        return Err(self.err(
                            at,
                            K::Refused {
                                record: "compressed WRITE",
                                why: "the stream was made with -c or -w: drop them",
                            },
                        ));
                    }
                    if offset.checked_add(logical).is_none() {
                        return Err(self.err(
                            at,
                            K::Overflow {
                                what: "WRITE",
                                offset,
                                length: logical,
                            },
                        ));
                    }
                    self.read_payload(at, "WRITE payload", logical)?;
                    if object == ZVOL_OBJ {
                        if obj_type != DMU_OT_ZVOL {
                            return Err(self.err(at, K::DataObjectType(obj_type)));
                        }
                        return Ok(Step::Write(offset));
                    }
                }
                drr::FREE => {
                    let (object, offset, length) = (u64_at(h, 8), u64_at(h, 16), u64_at(h, 24));
                    let end = if length == OBJECT_END {
                        None
                    } else {
                        Some(offset.checked_add(length).ok_or_else(|| {
                            self.err(
                                at,
                                K::Overflow {
                                    what: "FREE",
                                    offset,
                                    length,
                                },
                            )
                        })?)
                    };
                    if object == ZVOL_OBJ {
                        return Ok(Step::Free(offset, end));
                    }
                }
                drr::WRITE_EMBEDDED => {
                    return Err(self.refused(at, "WRITE_EMBEDDED", "made by -e or -w: drop them"))
                }
                drr::WRITE_BYREF => {
                    return Err(self.refused(
                        at,
                        "WRITE_BYREF",
                        "a dedup (-D) stream: drop -D or run zstream redup",
                    ))
                }
                drr::SPILL => {
                    return Err(self.refused(at, "SPILL", "spill blocks belong to filesystems"))
                }
                drr::OBJECT_RANGE => {
                    return Err(self.refused(at, "OBJECT_RANGE", "a raw stream: drop -w"))
                }
                _ => return Err(self.refused(at, "REDACT", "a redacted stream: drop --redact")),
            }
        }
    }

    fn refused(&self, at: u64, record: &'static str, why: &'static str) -> SendStreamError {
        self.err(at, K::Refused { record, why })
    }

    fn begin(&mut self, at: u64) -> Result<Begin, SendStreamError> {
        let h = &self.header;
        let ty = u32_at(h, 0);
        let magic = u64_at(h, 8);
        if magic == MAGIC.swap_bytes() {
            return Err(self.err(at, K::ByteSwapped));
        }
        if ty != drr::BEGIN {
            return Err(self.err(at, K::NotBegin(ty)));
        }
        if magic != MAGIC {
            return Err(self.err(at, K::BadMagic(magic)));
        }
        let vi = u64_at(h, 16);
        if vi & 3 != DMU_SUBSTREAM {
            return Err(self.err(at, K::Compound(vi & 3)));
        }
        let features = vi >> 2;
        if features & !FEATURE_LARGE_BLOCKS != 0 {
            return Err(self.err(at, K::Features { bits: features }));
        }
        let objset = u32_at(h, 32);
        if objset != DMU_OST_ZVOL {
            return Err(self.err(at, K::NotZvol(objset)));
        }
        let flags = u32_at(h, 36);
        if flags & !BEGIN_FLAGS_ALLOWED != 0 {
            return Err(self.err(at, K::BeginFlags(flags)));
        }
        let payload = u32_at(h, 4);
        if payload != 0 {
            return Err(self.err(at, K::BeginPayload(payload)));
        }
        let name = &h[56..];
        let to_name = name
            .iter()
            .position(|&b| b == 0)
            .and_then(|n| std::str::from_utf8(&name[..n]).ok())
            .filter(|n| n.contains('@'))
            .ok_or_else(|| self.err(at, K::BadName))?
            .to_string();
        let begin = Begin {
            to_guid: u64_at(h, 40),
            from_guid: u64_at(h, 48),
            flags,
            features,
            creation_time: u64_at(h, 24),
            to_name,
        };
        // BEGIN is folded in whole: its last 32 bytes are name, not checksum.
        self.cksum.update(&self.header);
        self.to_guid = begin.to_guid;
        Ok(begin)
    }

    fn end(&mut self, at: u64, before: Fletcher4) -> Result<(), SendStreamError> {
        let h = &self.header;
        if h[8..40] != before.to_bytes() {
            return Err(self.err(at, K::EndChecksum));
        }
        let end_guid = u64_at(h, 40);
        if end_guid != self.to_guid {
            return Err(self.err(
                at,
                K::EndGuid {
                    begin: self.to_guid,
                    end: end_guid,
                },
            ));
        }
        let mut probe = [0u8; 1];
        if self.read_full(&mut probe)? != 0 {
            return Err(self.err(self.pos - 1, K::TrailingData));
        }
        self.state = State::Done;
        Ok(())
    }

    /// Reads a payload of `len` bytes into the buffer, refusing it before allocating if it
    /// is above the limit or unaligned, and folds it into the checksum.
    fn read_payload(
        &mut self,
        at: u64,
        what: &'static str,
        len: u64,
    ) -> Result<(), SendStreamError> {
        if len > MAX_PAYLOAD {
            return Err(self.err(
                at,
                K::Oversize {
                    what,
                    len,
                    max: MAX_PAYLOAD,
                },
            ));
        }
        if len % 8 != 0 {
            return Err(self.err(at, K::Unaligned { what, len }));
        }
        let mut buf = std::mem::take(&mut self.payload);
        buf.resize(len as usize, 0);
        let start = self.pos;
        let got = self.read_full(&mut buf);
        self.payload = buf;
        if got? < self.payload.len() {
            return Err(self.err(start, K::Truncated(what)));
        }
        self.cksum.update(&self.payload);
        Ok(())
    }

    /// Fills `buf` unless EOF comes first; returns how many bytes were read.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, SendStreamError> {
        let mut n = 0;
        while n < buf.len() {
            match self.input.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => {
                    n += k;
                    self.pos += k as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(self.err(self.pos, K::Io(e.to_string()))),
            }
        }
        Ok(n)
    }
}

enum Step {
    Begin(Begin),
    DataObject(u32),
    Write(u64),
    Free(u64, Option<u64>),
    End,
}
