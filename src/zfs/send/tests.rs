use super::test_support::{begin_header, sample_full, sample_incremental, Header, StreamWriter};
use super::*;

/// Owned copy of an event, to collect a whole stream.
#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Begin(Begin),
    Object(u32),
    Write(u64, Vec<u8>),
    Free(u64, Option<u64>),
    End(u64),
}

fn decode_with(
    bytes: &[u8],
    piece: usize,
) -> Result<(Vec<Ev>, Vec<std::ops::Range<u64>>), SendStreamError> {
    let mut r = SendStreamReader::new(Pieces(bytes, piece));
    let mut out = Vec::new();
    let mut set = ChangeSet::new(64 << 20);
    while let Some(ev) = r.next_event()? {
        set.add(&ev).unwrap();
        out.push(match ev {
            Event::Begin(b) => Ev::Begin(b),
            Event::DataObject { block_size } => Ev::Object(block_size),
            Event::Write { offset, data } => Ev::Write(offset, data.to_vec()),
            Event::Free { offset, end } => Ev::Free(offset, end),
            Event::End { to_guid } => Ev::End(to_guid),
        });
    }
    assert!(r.next_event().unwrap().is_none());
    Ok((out, set.finish()))
}

fn decode(bytes: &[u8]) -> Result<Vec<Ev>, SendStreamError> {
    decode_with(bytes, usize::MAX).map(|(e, _)| e)
}

fn error(bytes: &[u8]) -> SendStreamError {
    decode(bytes).expect_err("a malformed stream")
}

/// A reader returning at most `n` bytes a call, as a pipe may.
struct Pieces<'a>(&'a [u8], usize);

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.1).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

const B: u64 = 16384;

#[test]
fn full_stream() {
    let bytes = sample_full();
    let (events, ranges) = decode_with(&bytes, usize::MAX).unwrap();
    let Ev::Begin(begin) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(begin.to_name, "rpool/data/vm-100-disk-0@full");
    assert_eq!((begin.from_guid, begin.to_guid), (0, 0x1111));
    assert!(!begin.is_incremental());
    assert_eq!((begin.flags, begin.features), (0xC, 0));
    assert_eq!(
        events[1..],
        [
            Ev::Object(16384),
            Ev::Free(6 * B, None),
            Ev::Write(0, vec![0xAA; 16384]),
            Ev::Write(B, vec![0xBB; 16384]),
            Ev::Free(2 * B, Some(5 * B)),
            Ev::Write(5 * B, vec![0xCC; 16384]),
            Ev::End(0x1111),
        ]
    );
    assert_eq!(ranges, vec![0..64 << 20]);
    // Read a byte at a time, the result is the same.
    assert_eq!(decode_with(&bytes, 1).unwrap().0, events);
    assert_eq!(decode_with(&bytes, 7).unwrap().0, events);
}

#[test]
fn incremental_stream_with_writes_and_frees() {
    let bytes = sample_incremental();
    let events = decode(&bytes).unwrap();
    let Ev::Begin(begin) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!((begin.from_guid, begin.to_guid), (0x1111, 0x2222));
    assert!(begin.is_incremental());
    let volsize = 42 * B;
    let mut set = ChangeSet::new(volsize);
    let mut r = SendStreamReader::new(bytes.as_slice());
    while let Some(ev) = r.next_event().unwrap() {
        set.add(&ev).unwrap();
    }
    assert_eq!(r.offset(), bytes.len() as u64);
    assert_eq!((set.written, set.freed), (2 * B, 3 * B + B));
    let ranges = set.finish();
    assert_eq!(ranges, vec![B..2 * B, 5 * B..8 * B, 40 * B..42 * B]);
    assert_eq!(touched_chunks(&ranges, CHUNK_SIZE), vec![0]);
    assert_eq!(touched_chunks(&ranges, 4 * B), vec![0, 1, 10]);
}

#[test]
fn bad_checksums_are_refused() {
    // A flipped data byte: only END's checksum can tell.
    let mut bytes = sample_full();
    let data_at = bytes.len() - RECORD_LEN - 512 - RECORD_LEN - 100;
    bytes[data_at] ^= 1;
    assert_eq!(error(&bytes).kind, StreamErrorKind::RecordChecksum);
    // A flipped byte in the last WRITE's payload (object 2): caught by END's header, or,
    // when that field is zero (the receiver skips it then), by END's stream checksum.
    let mut bytes = sample_full();
    let end = bytes.len() - RECORD_LEN;
    bytes[end - 10] ^= 1;
    let e = error(&bytes);
    assert_eq!(
        (e.offset, e.kind),
        (end as u64, StreamErrorKind::RecordChecksum)
    );
    bytes[end + CHECKSUMMED_LEN..].fill(0);
    let e = error(&bytes);
    assert_eq!(
        (e.offset, e.kind),
        (end as u64, StreamErrorKind::EndChecksum)
    );
    bytes[end - 10] ^= 1;
    assert!(
        decode(&bytes).is_ok(),
        "a zero record checksum is not checked"
    );
    // A flipped header field.
    let mut bytes = sample_full();
    bytes[RECORD_LEN + 24] ^= 1;
    assert_eq!(error(&bytes).kind, StreamErrorKind::RecordChecksum);
    // END naming another snapshot.
    let mut w = StreamWriter::new("p/v@s", 0, 5);
    w.object(1, 8192, 0);
    let mut h = Header::new(drr::END);
    let mut c = Fletcher4::default();
    c.update(&w.out);
    h.0[8..40].copy_from_slice(&c.to_bytes());
    h.u64(40, 6);
    w.record(&h, &[]);
    assert_eq!(
        error(&w.out).kind,
        StreamErrorKind::EndGuid { begin: 5, end: 6 }
    );
}

#[test]
fn truncation_anywhere_is_an_error() {
    let bytes = sample_incremental();
    for cut in 0..bytes.len() {
        let e = error(&bytes[..cut]);
        assert!(
            matches!(
                e.kind,
                StreamErrorKind::Truncated(_) | StreamErrorKind::MissingEnd
            ),
            "{cut}: {e}"
        );
    }
    let e = error(&bytes[..bytes.len() - RECORD_LEN]);
    assert_eq!(e.kind, StreamErrorKind::MissingEnd);
    let e = error(&bytes[..RECORD_LEN * 2 + 5]);
    assert_eq!(
        (e.offset, e.kind.clone()),
        (
            RECORD_LEN as u64 * 2,
            StreamErrorKind::Truncated("a record header")
        )
    );
    // Inside a WRITE payload: the offset is where the payload starts.
    let mut w = StreamWriter::new("p/v@s", 0, 5);
    w.write(1, 0, &[1; 4096]);
    let e = error(&w.out[..w.out.len() - 8]);
    assert_eq!(
        (e.offset, e.kind.clone()),
        (
            2 * RECORD_LEN as u64,
            StreamErrorKind::Truncated("WRITE payload")
        )
    );
}

#[test]
fn bytes_after_end_are_refused() {
    let mut bytes = sample_incremental();
    let len = bytes.len() as u64;
    bytes.push(0);
    let e = error(&bytes);
    assert_eq!(
        (e.offset, e.kind.clone()),
        (len, StreamErrorKind::TrailingData)
    );
}

#[test]
fn oversize_and_unaligned_payloads_are_refused_before_allocating() {
    let mut w = StreamWriter::new("p/v@s", 0, 5);
    let mut h = Header::new(drr::WRITE);
    h.u64(8, 1).u32(16, DMU_OT_ZVOL).u64(32, MAX_PAYLOAD + 8);
    w.record(&h, &[]);
    let e = error(&w.out);
    assert_eq!(
        (e.offset, e.kind.clone()),
        (
            RECORD_LEN as u64,
            StreamErrorKind::Oversize {
                what: "WRITE payload",
                len: MAX_PAYLOAD + 8,
                max: MAX_PAYLOAD
            }
        )
    );
    // A bonus buffer claiming 4 GiB.
    let mut w = StreamWriter::new("p/v@s", 0, 5);
    let mut h = Header::new(drr::OBJECT);
    h.u64(8, 2).u32(36, u32::MAX);
    w.record(&h, &[]);
    assert!(matches!(
        error(&w.out).kind,
        StreamErrorKind::Oversize { .. }
    ));
    let mut w = StreamWriter::new("p/v@s", 0, 5);
    w.write(1, 0, &[0; 12]);
    assert_eq!(
        error(&w.out).kind,
        StreamErrorKind::Unaligned {
            what: "WRITE payload",
            len: 12
        }
    );
}

#[test]
fn offset_overflows_are_refused() {
    let mut w = StreamWriter::new("p/v@s", 0, 5);
    w.write(1, u64::MAX - 7, &[0; 16]);
    assert!(matches!(
        error(&w.out).kind,
        StreamErrorKind::Overflow { what: "WRITE", .. }
    ));
    let mut w = StreamWriter::new("p/v@s", 0, 5);
    w.free(1, 10, u64::MAX - 1);
    assert_eq!(
        error(&w.out).kind,
        StreamErrorKind::Overflow {
            what: "FREE",
            offset: 10,
            length: u64::MAX - 1
        }
    );
    // u64::MAX itself means "to the end of the object".
    let mut w = StreamWriter::new("p/v@s", 0, 5);
    w.free(1, 10, u64::MAX);
    assert_eq!(decode(&w.end()).unwrap()[1], Ev::Free(10, None));
}

#[test]
fn unknown_and_refused_record_types() {
    let mut w = StreamWriter::new("p/v@s", 0, 5);
    w.record(&Header::new(11), &[]);
    assert_eq!(error(&w.out).kind, StreamErrorKind::UnknownType(11));
    let mut w = StreamWriter::new("p/v@s", 0, 5);
    w.record(&Header::new(u32::MAX), &[]);
    assert_eq!(error(&w.out).kind, StreamErrorKind::UnknownType(u32::MAX));
    for (ty, record) in [
        (drr::WRITE_BYREF, "WRITE_BYREF"),
        (drr::SPILL, "SPILL"),
        (drr::WRITE_EMBEDDED, "WRITE_EMBEDDED"),
        (drr::OBJECT_RANGE, "OBJECT_RANGE"),
        (drr::REDACT, "REDACT"),
    ] {
        let mut w = StreamWriter::new("p/v@s", 0, 5);
        w.record(&Header::new(ty), &[]);
        let e = error(&w.out);
        assert!(
            matches!(&e.kind, StreamErrorKind::Refused { record: r, .. } if *r == record),
            "{e}"
        );
    }
    let mut w = StreamWriter::new("p/v@s", 0, 5);
    w.record(&begin_header("p/v@s", 0, 5), &[]);
    assert_eq!(error(&w.out).kind, StreamErrorKind::SecondBegin);
    let mut w = StreamWriter::new("p/v@s", 0, 5);
    w.freeobjects(0, 2);
    assert_eq!(
        error(&w.out).kind,
        StreamErrorKind::FreesDataObject { first: 0, count: 2 }
    );
    // FREEOBJECTS elsewhere, records of object 2 and an empty FREEOBJECTS at 0 are skipped.
    let mut w = StreamWriter::new("p/v@s", 0, 5);
    w.freeobjects(2, u64::MAX)
        .freeobjects(0, 1)
        .freeobjects(0, 0);
    w.free(2, 0, u64::MAX)
        .write(2, 0, &[1; 8])
        .object(2, 512, 0);
    assert_eq!(decode(&w.end()).unwrap().len(), 2);
}

#[test]
fn compressed_and_embedded_writes_name_the_flag_to_drop() {
    let mut w = StreamWriter::new("p/v@s", 0, 5);
    let mut h = Header::new(drr::WRITE);
    h.u64(8, 1)
        .u32(16, DMU_OT_ZVOL)
        .u64(32, 16384)
        .u8(50, 15)
        .u64(96, 4096);
    w.record(&h, &[0; 4096]);
    let e = error(&w.out);
    assert!(e.to_string().contains("-c"), "{e}");
    assert!(matches!(
        e.kind,
        StreamErrorKind::Refused {
            record: "compressed WRITE",
            ..
        }
    ));
    let mut w = StreamWriter::new("p/v@s", 0, 5);
    w.record(&Header::new(drr::WRITE_EMBEDDED), &[]);
    assert!(error(&w.out).to_string().contains("drop them"));
}

#[test]
fn begin_is_checked_strictly() {
    let with = |f: &dyn Fn(&mut Header)| {
        let mut h = begin_header("p/v@s", 0, 5);
        f(&mut h);
        error(&StreamWriter::with_begin(&h).end())
    };
    let e = with(&|h| {
        h.u64(8, MAGIC.swap_bytes());
    });
    assert_eq!(
        (e.offset, e.kind.clone()),
        (0, StreamErrorKind::ByteSwapped)
    );
    assert!(e.to_string().contains("byte 0"), "{e}");
    assert_eq!(
        with(&|h| {
            h.u64(8, 1);
        })
        .kind,
        StreamErrorKind::BadMagic(1)
    );
    assert_eq!(
        with(&|h| {
            h.u32(0, drr::WRITE);
        })
        .kind,
        StreamErrorKind::NotBegin(3)
    );
    assert_eq!(
        with(&|h| {
            h.u64(16, 2);
        })
        .kind,
        StreamErrorKind::Compound(2)
    );
    let e = with(&|h| {
        h.u64(16, 1 | (1 << 22) << 2 | (1 << 16) << 2);
    });
    assert!(e.to_string().contains("COMPRESSED (drop -c)"), "{e}");
    assert!(e.to_string().contains("EMBED_DATA (drop -e)"), "{e}");
    let e = with(&|h| {
        h.u64(16, 1 | (1 << 40) << 2);
    });
    assert!(e.to_string().contains("unknown bits 0x10000000000"), "{e}");
    assert_eq!(
        with(&|h| {
            h.u32(32, 2);
        })
        .kind,
        StreamErrorKind::NotZvol(2)
    );
    assert_eq!(
        with(&|h| {
            h.u32(36, 0x10);
        })
        .kind,
        StreamErrorKind::BeginFlags(0x10)
    );
    assert_eq!(
        with(&|h| {
            h.u32(4, 64);
        })
        .kind,
        StreamErrorKind::BeginPayload(64)
    );
    assert_eq!(
        with(&|h| {
            h.0[56..].fill(b'a');
        })
        .kind,
        StreamErrorKind::BadName
    );
    assert_eq!(
        with(&|h| {
            h.0[56..60].copy_from_slice(b"p/v\0");
        })
        .kind,
        StreamErrorKind::BadName
    );
    let e = error(&[]);
    assert_eq!(e.kind, StreamErrorKind::Truncated("the BEGIN record"));
    // LARGE_BLOCKS (-L) and the CLONE flag are fine.
    let mut h = begin_header("p/v@s", 7, 5);
    h.u64(16, 1 | FEATURE_LARGE_BLOCKS << 2).u32(36, 0xD);
    let events = decode(&StreamWriter::with_begin(&h).end()).unwrap();
    assert!(
        matches!(&events[0], Ev::Begin(b) if b.features == FEATURE_LARGE_BLOCKS && b.flags == 0xD)
    );
}

#[test]
fn data_object_records_are_checked() {
    let mut w = StreamWriter::new("p/v@s", 0, 5);
    w.object(1, 1000, 0);
    assert_eq!(error(&w.out).kind, StreamErrorKind::BlockSize(1000));
    let mut w = StreamWriter::new("p/v@s", 0, 5);
    let mut h = Header::new(drr::WRITE);
    h.u64(8, 1).u32(16, 19).u64(32, 8);
    w.record(&h, &[0; 8]);
    assert_eq!(error(&w.out).kind, StreamErrorKind::DataObjectType(19));
}

#[test]
fn after_an_error_the_reader_stays_failed() {
    let bytes = sample_full();
    let mut r = SendStreamReader::new(&bytes[..RECORD_LEN + 3]);
    assert!(r.next_event().unwrap().is_some());
    assert!(r.next_event().is_err());
    assert_eq!(r.next_event().unwrap_err().kind, StreamErrorKind::Failed);
}

#[test]
fn fletcher4_in_pieces_equals_one_pass() {
    let data: Vec<u8> = (0..4096u32)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect();
    let mut one = Fletcher4::default();
    one.update(&data);
    let mut pieces = Fletcher4::default();
    for p in data.chunks(312) {
        pieces.update(p);
    }
    assert_eq!(one, pieces);
    // Reference values worked by hand for two words.
    let mut f = Fletcher4::default();
    f.update(&[1, 0, 0, 0, 2, 0, 0, 0]);
    assert_eq!(f.0, [3, 4, 5, 6]);
}
