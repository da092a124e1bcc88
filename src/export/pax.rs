//! pax extended header records (POSIX.1-2001 `x` blocks): `"<len> <key>=<value>\n"`, where
//! `<len>` counts the whole record including its own digits. Values are length-delimited, so
//! binary values (capabilities, non-UTF-8 names, names with newlines) need no escaping.
//!
//! Facts checked against GNU tar 1.34 (see the tests in `tests_gnu_tar`):
//! - non-UTF-8 bytes in `path`/`linkpath` are taken raw when iconv cannot convert them; GNU tar
//!   writes them that way itself, without `hdrcharset` (a keyword 1.34 does not know and would
//!   warn about), so we do not write `hdrcharset` either;
//! - in `SCHILY.xattr.<name>` keys GNU tar encodes `%` and `=` as `%25` / `%3D` and decodes them
//!   back; every other byte is taken raw.

use crate::item::Timestamp;

/// The records of one `x` block, in the order they were added.
#[derive(Default)]
pub(crate) struct PaxRecords {
    buf: Vec<u8>,
}

impl PaxRecords {
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn push(&mut self, key: &[u8], value: &[u8]) {
        // " " + key + "=" + value + "\n", plus the decimal length itself, which may grow by
        // a digit once its own digits are counted.
        let rest = key.len() + value.len() + 3;
        let mut len = rest + decimal_digits(rest as u64);
        if decimal_digits(len as u64) + rest != len {
            len = rest + decimal_digits(len as u64);
        }
        self.buf.extend_from_slice(len.to_string().as_bytes());
        self.buf.push(b' ');
        self.buf.extend_from_slice(key);
        self.buf.push(b'=');
        self.buf.extend_from_slice(value);
        self.buf.push(b'\n');
    }

    pub fn push_str(&mut self, key: &str, value: &str) {
        self.push(key.as_bytes(), value.as_bytes());
    }

    pub fn push_u64(&mut self, key: &str, value: u64) {
        self.push(key.as_bytes(), value.to_string().as_bytes());
    }

    pub fn push_time(&mut self, key: &str, t: Timestamp) {
        self.push(key.as_bytes(), format_time(t).as_bytes());
    }

    pub fn push_xattr(&mut self, name: &[u8], value: &[u8]) {
        let mut key = b"SCHILY.xattr.".to_vec();
        for &b in name {
            match b {
                b'%' => key.extend_from_slice(b"%25"),
                b'=' => key.extend_from_slice(b"%3D"),
                _ => key.push(b),
            }
        }
        self.push(&key, value);
    }
}

fn decimal_digits(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// A pax time value: `secs` or `secs.nnnnnnnnn`. Times before the epoch are a negative decimal
/// (`{-2, 0.5e9}` is -1.5 s, written `-1.500000000`), which is how pax and GNU tar read them.
pub(crate) fn format_time(t: Timestamp) -> String {
    let nanos = t.nanos.min(999_999_999);
    if nanos == 0 {
        return t.secs.to_string();
    }
    if t.secs >= 0 {
        format!("{}.{:09}", t.secs, nanos)
    } else {
        // secs + nanos/1e9 with secs < 0 and nanos > 0 is -(|secs| - 1) - (1e9 - nanos)/1e9.
        let whole = (t.secs + 1).unsigned_abs();
        format!("-{}.{:09}", whole, 1_000_000_000 - nanos)
    }
}

/// Splits an `x` block back into (key, value) pairs by the record lengths, as GNU tar reads
/// it. Test-only: the `tar` crate's own parser splits on `\n` and so cannot read binary values.
#[cfg(test)]
pub(crate) fn parse_records(mut b: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let sp = b.iter().position(|&c| c == b' ').expect("record length");
        let len: usize = std::str::from_utf8(&b[..sp]).unwrap().parse().unwrap();
        let rec = &b[sp + 1..len];
        assert_eq!(b[len - 1], b'\n');
        let eq = rec.iter().position(|&c| c == b'=').expect("record key");
        out.push((rec[..eq].to_vec(), rec[eq + 1..rec.len() - 1].to_vec()));
        b = &b[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_lengths_count_themselves() {
        // Lengths around the 1->2 and 2->3 digit boundaries are where off-by-one bugs live.
        for vlen in 0..1200 {
            let value = vec![b'\n'; vlen];
            let mut p = PaxRecords::default();
            p.push(b"path", &value);
            p.push(b"k", b"");
            let recs = parse_records(p.as_bytes());
            assert_eq!(recs[0], (b"path".to_vec(), value));
            assert_eq!(recs[1], (b"k".to_vec(), Vec::new()));
        }
    }

    #[test]
    fn xattr_keys_escape_percent_and_equals() {
        let mut p = PaxRecords::default();
        p.push_xattr(b"user.a=b%c", &[0, 255, b'=']);
        assert_eq!(p.as_bytes(), b"35 SCHILY.xattr.user.a%3Db%25c=\0\xff=\n");
    }

    #[test]
    fn times() {
        let t = |secs, nanos| format_time(Timestamp { secs, nanos });
        assert_eq!(t(1_700_000_000, 123_456_789), "1700000000.123456789");
        assert_eq!(t(1_700_000_000, 5), "1700000000.000000005");
        assert_eq!(t(1_700_000_000, 0), "1700000000");
        assert_eq!(t(-2, 500_000_000), "-1.500000000");
        assert_eq!(t(-1, 999_999_999), "-0.000000001");
        assert_eq!(t(-5, 0), "-5");
    }
}
