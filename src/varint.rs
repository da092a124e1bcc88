//! Unsigned LEB128 varints, the record lengths of the item codec and of the files cache:
//! seven bits a byte, lowest first, the high bit set on every byte but the last. At most
//! `MAX_LEN` bytes; a longer one is malformed input, never a panic or an overflowing shift.

/// Bytes a `u64` can take.
pub const MAX_LEN: usize = 10;

pub fn encode(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint one byte at a time (from a buffer or a stream).
#[derive(Default)]
pub struct Decoder {
    value: u64,
    len: usize,
}

pub enum Step {
    More,
    Done(u64),
    /// More than `MAX_LEN` bytes.
    TooLong,
}

impl Decoder {
    pub fn push(&mut self, byte: u8) -> Step {
        if self.len >= MAX_LEN {
            return Step::TooLong;
        }
        self.value |= u64::from(byte & 0x7f) << (7 * self.len);
        self.len += 1;
        if byte & 0x80 == 0 {
            Step::Done(self.value)
        } else {
            Step::More
        }
    }
}

/// The varint at the start of `buf` and its length; `Ok(None)` when `buf` ends inside it.
pub fn decode(buf: &[u8]) -> Result<Option<(u64, usize)>, TooLong> {
    let mut d = Decoder::default();
    for (i, &b) in buf.iter().enumerate() {
        match d.push(b) {
            Step::Done(v) => return Ok(Some((v, i + 1))),
            Step::TooLong => return Err(TooLong),
            Step::More => {}
        }
    }
    Ok(None)
}

#[derive(Debug, PartialEq, Eq)]
pub struct TooLong;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(v in any::<u64>()) {
            let mut buf = Vec::new();
            encode(v, &mut buf);
            prop_assert!(buf.len() <= MAX_LEN);
            prop_assert_eq!(decode(&buf), Ok(Some((v, buf.len()))));
            prop_assert_eq!(decode(&buf[..buf.len() - 1]), Ok(None));
        }
    }

    #[test]
    fn eleven_continuation_bytes_are_too_long() {
        assert_eq!(decode(&[0x80; 11]), Err(TooLong));
        assert_eq!(decode(&[0x80; 10]), Ok(None));
    }
}
