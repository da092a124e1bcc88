//! Small text encodings shared by PVE's config files: the percent-encoding of `#` description
//! lines (`PVE::Tools::encode_text` / `decode_text`), property strings (`key=value,...` with
//! a default key first), and size strings (`8G`). Pure string functions, nothing else.

/// Decodes one `#` description line the way `decode_text` does: `%XX` becomes the byte, then
/// the bytes are read as UTF-8 (invalid sequences become U+FFFD rather than an error, since a
/// description never decides what gets backed up).
pub fn decode_text(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes one description line as `encode_text` does: every byte outside 0x20..=0x7e, and `:`,
/// becomes `%XX` (upper case). `%` itself is left alone, exactly like PVE.
pub fn encode_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if (0x20..=0x7e).contains(&c) && c != b':' {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// A parsed property string: the optional default-key value (the part without `=`, which PVE
/// only accepts first) and the `key=value` pairs in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropertyString {
    pub default: Option<String>,
    pub props: Vec<(String, String)>,
}

impl PropertyString {
    pub fn parse(s: &str) -> Result<PropertyString, String> {
        let mut out = PropertyString::default();
        for (i, part) in s.split(',').enumerate() {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            match part.split_once('=') {
                Some((k, v)) => {
                    let k = k.trim();
                    if k.is_empty() {
                        return Err(format!("empty key in property string '{s}'"));
                    }
                    if out.get(k).is_some() {
                        return Err(format!("duplicate key '{k}' in property string '{s}'"));
                    }
                    out.props.push((k.to_string(), v.trim().to_string()));
                }
                None if i == 0 => out.default = Some(part.to_string()),
                None => {
                    return Err(format!(
                        "value without key '{part}' in property string '{s}'"
                    ))
                }
            }
        }
        Ok(out)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.props
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A PVE boolean option: `1`/`on`/`yes`/`true` or `0`/`off`/`no`/`false`.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, String> {
        self.get(key)
            .map(|v| parse_bool(v).ok_or_else(|| format!("{key}={v} is not a boolean")))
            .transpose()
    }
}

pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// Parses a PVE disk size (`parse_size`): a number with an optional binary unit `K/M/G/T`
/// (or `KiB`..`TiB`), in bytes. Fractions are allowed (`1.5G`) and rounded down.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() || num.matches('.').count() > 1 {
        return None;
    }
    let shift = match unit {
        "" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        _ => return None,
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut bytes = int.checked_shl(shift)?;
    if int.leading_zeros() < shift {
        return None;
    }
    if !frac.is_empty() {
        let digits = frac.len().min(18) as u32;
        let f: u128 = frac[..digits as usize].parse().ok()?;
        bytes = bytes.checked_add(((f << shift) / 10u128.pow(digits)) as u64)?;
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_round_trip_matches_pve_escaping() {
        assert_eq!(encode_text("a: b ü 100%"), "a%3A b %C3%BC 100%");
        assert_eq!(decode_text("a%3A b %C3%BC 100%"), "a: b ü 100%");
        assert_eq!(decode_text("50%"), "50%");
        assert_eq!(decode_text("%zz%4"), "%zz%4");
        assert_eq!(encode_text("tab\there"), "tab%09here");
    }

    #[test]
    fn property_strings() {
        let p = PropertyString::parse("local-zfs:subvol-100-disk-1,mp=/srv/data,backup=1,size=32G")
            .unwrap();
        assert_eq!(p.default.as_deref(), Some("local-zfs:subvol-100-disk-1"));
        assert_eq!(p.get("mp"), Some("/srv/data"));
        assert_eq!(p.get_bool("backup").unwrap(), Some(true));
        assert!(PropertyString::parse("a,b").is_err());
        assert!(PropertyString::parse("a,x=1,x=2").is_err());
        assert!(PropertyString::parse("a,backup=maybe")
            .unwrap()
            .get_bool("backup")
            .is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8G"), Some(8 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("0T"), Some(0));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("2TiB"), Some(2 << 40));
        assert_eq!(parse_size("8X"), None);
        assert_eq!(parse_size("G"), None);
        assert_eq!(parse_size("99999999999999999999T"), None);
    }
}
