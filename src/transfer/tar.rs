//! A careful streaming reader of tar headers (ustar, GNU and PAX), enough to find the one
//! regular member of an exported disk archive and its size without buffering the data.
//!
//! Sizes above 8 GiB do not fit the 11 octal digits of the ustar size field: GNU tar writes
//! them base-256 (high bit of the first byte set), PAX writers put `size=` in an extended
//! header. Both are understood, as are GNU long names (`L`) and PAX `path=`.

use std::io::Read;

/// One tar block.
pub const BLOCK: usize = 512;

/// Largest extended header (PAX or GNU long name) accepted: real ones are tiny, and this
/// keeps a corrupt archive from making us allocate its claimed size.
const MAX_EXTENDED: u64 = 1024 * 1024;

/// What a member header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHeader {
    /// Path inside the archive (PAX `path` or GNU long name when present).
    pub name: String,
    /// Bytes of data that follow the header.
    pub size: u64,
    /// The ustar type flag (`b'0'` regular file, `b'5'` directory, ...).
    pub kind: u8,
}

impl MemberHeader {
    /// Whether the member is a regular file (`0`, the pre-POSIX NUL, or contiguous `7`).
    pub fn is_regular(&self) -> bool {
        matches!(self.kind, b'0' | 0 | b'7')
    }

    /// Human name of the member's type, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            b'0' | 0 | b'7' => "regular file",
            b'1' => "hard link",
            b'2' => "symbolic link",
            b'3' => "character device",
            b'4' => "block device",
            b'5' => "directory",
            b'6' => "FIFO",
            _ => "special entry",
        }
    }

    /// The last path component: what a destination "directory" names the object after.
    pub fn base_name(&self) -> &str {
        self.name
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
    }

    /// Bytes of padding after the data, up to the next block boundary.
    pub fn padding(&self) -> u64 {
        (BLOCK as u64 - self.size % BLOCK as u64) % BLOCK as u64
    }
}

/// Why the archive could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("{0}")]
    Format(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn bad(msg: impl Into<String>) -> TarError {
    TarError::Format(msg.into())
}

/// Reads exactly one block; an empty input at a header position is reported as truncation.
fn read_block<R: Read>(r: &mut R, what: &str) -> Result<[u8; BLOCK], TarError> {
    let mut b = [0u8; BLOCK];
    r.read_exact(&mut b).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            bad(format!("the archive is truncated: it ends inside {what}"))
        } else {
            TarError::Io(e)
        }
    })?;
    Ok(b)
}

/// Parses a numeric header field: octal ASCII (space/NUL padded) or GNU base-256.
pub fn parse_number(field: &[u8]) -> Result<u64, TarError> {
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            if first == 0xff {
                return Err(bad("negative number in a tar header"));
            }
            let mut v: u64 = (first & 0x7f) as u64;
            for &b in &field[1..] {
                v = v
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(b as u64))
                    .ok_or_else(|| bad("number in a tar header overflows 64 bits"))?;
            }
            return Ok(v);
        }
    }
    let text: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|&b| b == b' ')
        .take_while(|&b| b != 0 && b != b' ')
        .collect();
    if text.is_empty() {
        return Ok(0);
    }
    let s = std::str::from_utf8(&text).map_err(|_| bad("non-ASCII number in a tar header"))?;
    u64::from_str_radix(s, 8)
        .map_err(|_| bad(format!("invalid octal number {s:?} in a tar header")))
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn check_checksum(b: &[u8; BLOCK]) -> Result<(), TarError> {
    let not_tar =
        || bad("tar header checksum mismatch: the data is not a tar archive or is corrupt");
    let recorded = parse_number(&b[148..156]).map_err(|_| not_tar())?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &x) in b.iter().enumerate() {
        let x = if (148..156).contains(&i) { b' ' } else { x };
        unsigned += x as u64;
        signed += x as i8 as i64;
    }
    if recorded != unsigned && recorded as i64 != signed {
        return Err(not_tar());
    }
    Ok(())
}

/// Reads `size` bytes of an extended header's data plus its padding.
fn read_extended<R: Read>(r: &mut R, size: u64, what: &str) -> Result<Vec<u8>, TarError> {
    if size > MAX_EXTENDED {
        return Err(bad(format!(
            "{what} of {size} bytes is implausibly large: the archive is corrupt"
        )));
    }
    let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
    let mut buf = vec![0u8; padded as usize];
    r.read_exact(&mut buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            bad(format!("the archive is truncated: it ends inside {what}"))
        } else {
            TarError::Io(e)
        }
    })?;
    buf.truncate(size as usize);
    Ok(buf)
}

/// PAX records `"<len> <key>=<value>\n"`; returns `(path, size)` overrides.
fn parse_pax(data: &[u8]) -> Result<(Option<String>, Option<u64>), TarError> {
    let mut path = None;
    let mut size = None;
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad("malformed PAX extended header"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("malformed PAX record length"))?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("malformed PAX record"));
        }
        let record = &rest[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad("malformed PAX record (no '=')"))?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        match key {
            b"path" => path = Some(String::from_utf8_lossy(value).into_owned()),
            b"size" => {
                let v = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("malformed PAX size"))?;
                size = Some(v);
            }
            _ => {}
        }
        rest = &rest[len..];
    }
    Ok((path, size))
}

/// Reads the next member header, consuming any extended headers before it. `Ok(None)` at the
/// end-of-archive marker (a zero block).
pub fn next_header<R: Read>(r: &mut R) -> Result<Option<MemberHeader>, TarError> {
    let mut long_name: Option<String> = None;
    let mut pax_path: Option<String> = None;
    let mut pax_size: Option<u64> = None;
    loop {
        let b = read_block(r, "a header")?;
        if b.iter().all(|&x| x == 0) {
            if long_name.is_some() || pax_path.is_some() || pax_size.is_some() {
                return Err(bad("the archive ends right after an extended header"));
            }
            return Ok(None);
        }
        check_checksum(&b)?;
        let kind = b[156];
        let size = parse_number(&b[124..136])?;
        match kind {
            b'x' => {
                let data = read_extended(r, size, "a PAX extended header")?;
                let (p, s) = parse_pax(&data)?;
                pax_path = p.or(pax_path);
                pax_size = s.or(pax_size);
            }
            b'g' => {
                // Global defaults (comments, mtimes); nothing we need.
                read_extended(r, size, "a PAX global header")?;
            }
            b'L' => {
                let data = read_extended(r, size, "a GNU long name")?;
                long_name = Some(cstr(&data));
            }
            b'K' => {
                read_extended(r, size, "a GNU long link name")?;
            }
            _ => {
                let mut name = cstr(&b[0..100]);
                if &b[257..262] == b"ustar" {
                    let prefix = cstr(&b[345..500]);
                    if !prefix.is_empty() && b[263] == b'0' {
                        // POSIX ustar ("ustar\0" "00"): prefix/name.
                        name = format!("{prefix}/{name}");
                    }
                }
                let name = pax_path.or(long_name).unwrap_or(name);
                let size = pax_size.unwrap_or(size);
                return Ok(Some(MemberHeader { name, size, kind }));
            }
        }
    }
}

/// Builds a header block (tests and benches): GNU format, with the size base-256 when it
/// does not fit 11 octal digits.
pub fn gnu_header(name: &str, size: u64, kind: u8) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    let n = name.as_bytes();
    assert!(n.len() <= 100, "long names need an L header");
    b[..n.len()].copy_from_slice(n);
    b[100..108].copy_from_slice(b"0000644\0");
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    if size < 8 << 30 {
        b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    } else {
        b[124] = 0x80;
        b[128..136].copy_from_slice(&size.to_be_bytes());
    }
    b[136..148].copy_from_slice(b"00000000000\0");
    b[156] = kind;
    b[257..265].copy_from_slice(b"ustar  \0");
    b[148..156].copy_from_slice(b"        ");
    let sum: u64 = b.iter().map(|&x| x as u64).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_octal_and_base256() {
        assert_eq!(parse_number(b"00000001750\0").unwrap(), 1000);
        assert_eq!(parse_number(b"  1750 \0\0\0\0\0").unwrap(), 1000);
        assert_eq!(parse_number(b"\0\0\0\0\0\0\0\0\0\0\0\0").unwrap(), 0);
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[4..].copy_from_slice(&(9u64 << 30).to_be_bytes());
        assert_eq!(parse_number(&f).unwrap(), 9 << 30);
        assert!(parse_number(b"0000009\0").is_err());
        let mut neg = [0xffu8; 12];
        neg[11] = 0xfe;
        assert!(parse_number(&neg).is_err());
    }

    #[test]
    fn gnu_header_over_8_gib_roundtrips() {
        let size = (8u64 << 30) + 12345;
        let h = gnu_header("disk_system.raw", size, b'0');
        let mut r = &h[..];
        let m = next_header(&mut r).unwrap().unwrap();
        assert_eq!(m.size, size);
        assert_eq!(m.name, "disk_system.raw");
        assert!(m.is_regular());
        assert_eq!(m.padding(), 512 - 12345 % 512);
    }

    #[test]
    fn pax_size_and_path_override_the_ustar_fields() {
        let size: u64 = 20 << 30;
        let recs = format!("size={size}\n");
        let rec = format!("{} {}", recs.len() + 3, recs);
        assert_eq!(rec.len(), recs.len() + 3);
        let path = "path=dir/very_long_name_system.raw\n";
        let prec = format!("{} {}", path.len() + 3, path);
        let data = format!("{rec}{prec}");
        let mut archive = Vec::new();
        archive.extend_from_slice(&gnu_header("PaxHeaders/x", data.len() as u64, b'x'));
        let mut d = data.into_bytes();
        d.resize(d.len().div_ceil(512) * 512, 0);
        archive.extend_from_slice(&d);
        archive.extend_from_slice(&gnu_header("short", 0, b'0'));
        let mut r = &archive[..];
        let m = next_header(&mut r).unwrap().unwrap();
        assert_eq!(m.size, size);
        assert_eq!(m.name, "dir/very_long_name_system.raw");
        assert_eq!(m.base_name(), "very_long_name_system.raw");
    }

    #[test]
    fn gnu_long_name_and_end_marker() {
        let long = "x".repeat(150);
        let mut archive = Vec::new();
        archive.extend_from_slice(&gnu_header("././@LongLink", 151, b'L'));
        let mut d = long.clone().into_bytes();
        d.push(0);
        d.resize(512, 0);
        archive.extend_from_slice(&d);
        archive.extend_from_slice(&gnu_header("xxx", 3, b'0'));
        archive.extend_from_slice(&[0u8; 1024]);
        let mut r = &archive[..];
        let m = next_header(&mut r).unwrap().unwrap();
        assert_eq!(m.name, long);
        assert_eq!(m.size, 3);
        assert!(next_header(&mut r).unwrap().is_none());
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        let mut junk = [7u8; 512];
        junk[0] = b'a';
        let e = next_header(&mut &junk[..]).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        let h = gnu_header("a", 1, b'0');
        let e = next_header(&mut &h[..300]).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let d = gnu_header("dir/", 0, b'5');
        let m = next_header(&mut &d[..]).unwrap().unwrap();
        assert!(!m.is_regular());
        assert_eq!(m.kind_name(), "directory");
    }
}
