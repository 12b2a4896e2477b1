//! VHD (Microsoft's Virtual Hard Disk Image Format Specification, v1.0), fixed and dynamic,
//! as the relay writes it.
//!
//! Fixed: the RAW disk, then the 512-byte footer. Dynamic:
//! ```text
//! | footer copy | dynamic header | BAT (padding) | [bitmap | 2 MiB block]… | footer |
//! |<------------ head: reserved, written last --->|<-- streamed, guest order -->| tail |
//! ```
//! Only blocks holding a non-zero byte are written (their sector bitmaps all set); the BAT
//! says 0xFFFFFFFF for the others, which read as zeros. The footer's creator application is
//! `osrl`: qemu takes the disk size from "current size" for creators other than `vpc ` and
//! `qemu` (which it sizes by CHS geometry, rounding the size down), so the guest sees exactly
//! the RAW's size. The geometry is still filled in by the specification's algorithm.
//! The unique id and time stamp derive from the source (a rerun writes the same bytes).

use super::{put_u16, put_u32, put_u64, Alloc};

pub const SECTOR: u64 = 512;
/// Dynamic VHD block size (the specification's default, what every importer accepts).
pub const BLOCK: u64 = 2 << 20;
/// Sector bitmap of a 2 MiB block: one bit per sector, padded to a sector.
pub const BITMAP: usize = 512;
/// Units the fixed VHD's data is cut into (any size would do: nothing is left out).
const FIXED_UNIT: u64 = 1 << 20;
/// The largest VHD the specification allows (2040 GiB).
pub const MAX_SIZE: u64 = 2040 << 30;

/// The layout of one VHD file (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vhd {
    pub vsize: u64,
    pub dynamic: bool,
    /// Footer copy + dynamic header + BAT (dynamic), padded; 0 for a fixed VHD.
    pub head_len: u64,
    pub uuid: [u8; 16],
    pub timestamp: u32,
}

impl Vhd {
    pub fn plan(vsize: u64, dynamic: bool, min_head: u64, seed: &str) -> Result<Self, String> {
        if !vsize.is_multiple_of(SECTOR) {
            return Err(format!(
                "a VHD holds whole 512-byte sectors, but the RAW disk is {vsize} bytes; use \
                 --format raw or qcow2"
            ));
        }
        if vsize > MAX_SIZE {
            return Err(format!(
                "a VHD holds at most 2040 GiB, the RAW disk is {vsize} bytes; use --format qcow2"
            ));
        }
        let digest = <md5::Md5 as md5::Digest>::digest(seed.as_bytes());
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&digest);
        // A version 4 style UUID from the digest (random-looking, deterministic).
        uuid[6] = (uuid[6] & 0x0f) | 0x40;
        uuid[8] = (uuid[8] & 0x3f) | 0x80;
        let timestamp = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) >> 4;
        let mut v = Self {
            vsize,
            dynamic,
            head_len: 0,
            uuid,
            timestamp,
        };
        if dynamic {
            let meta = 512 + 1024 + v.bat_bytes();
            v.head_len = meta.max(min_head.div_ceil(SECTOR) * SECTOR);
        }
        Ok(v)
    }

    pub fn unit(&self) -> u64 {
        if self.dynamic {
            BLOCK
        } else {
            FIXED_UNIT
        }
    }

    fn blocks(&self) -> u64 {
        self.vsize.div_ceil(BLOCK)
    }

    /// The BAT, padded to a sector.
    fn bat_bytes(&self) -> u64 {
        (self.blocks() * 4).div_ceil(SECTOR).max(1) * SECTOR
    }

    pub fn file_len(&self, alloc: &Alloc) -> u64 {
        if self.dynamic {
            self.head_len + alloc.count() * (BITMAP as u64 + BLOCK) + SECTOR
        } else {
            self.vsize + SECTOR
        }
    }

    pub fn max_len(&self) -> u64 {
        if self.dynamic {
            self.head_len + self.blocks() * (BITMAP as u64 + BLOCK) + SECTOR
        } else {
            self.vsize + SECTOR
        }
    }

    /// The footer (at the end of every VHD; copied to the start of a dynamic one).
    pub fn footer(&self) -> [u8; 512] {
        let mut f = [0u8; 512];
        f[0..8].copy_from_slice(b"conectix");
        put_u32(&mut f, 8, 2); // features: the reserved bit, always set
        put_u32(&mut f, 12, 0x0001_0000); // file format version 1.0
        put_u64(&mut f, 16, if self.dynamic { 512 } else { u64::MAX });
        put_u32(&mut f, 24, self.timestamp);
        f[28..32].copy_from_slice(b"osrl");
        put_u32(&mut f, 32, 0x0001_0000);
        f[36..40].copy_from_slice(b"Wi2k");
        put_u64(&mut f, 40, self.vsize);
        put_u64(&mut f, 48, self.vsize);
        let (c, h, s) = geometry(self.vsize / SECTOR);
        put_u16(&mut f, 56, c);
        f[58] = h;
        f[59] = s;
        put_u32(&mut f, 60, if self.dynamic { 3 } else { 2 });
        f[68..84].copy_from_slice(&self.uuid);
        let sum = checksum(&f);
        put_u32(&mut f, 64, sum);
        f
    }

    fn dynamic_header(&self) -> [u8; 1024] {
        let mut h = [0u8; 1024];
        h[0..8].copy_from_slice(b"cxsparse");
        put_u64(&mut h, 8, u64::MAX);
        put_u64(&mut h, 16, 512 + 1024); // the BAT follows this header
        put_u32(&mut h, 24, 0x0001_0000);
        put_u32(&mut h, 28, self.blocks() as u32);
        put_u32(&mut h, 32, BLOCK as u32);
        let sum = checksum(&h);
        put_u32(&mut h, 36, sum);
        h
    }

    /// Footer copy, dynamic header and BAT, padded to `head_len` (empty for a fixed VHD).
    pub fn head(&self, alloc: &Alloc) -> Vec<u8> {
        let mut out = vec![0u8; self.head_len as usize];
        if !self.dynamic {
            return out;
        }
        out[..512].copy_from_slice(&self.footer());
        out[512..1536].copy_from_slice(&self.dynamic_header());
        let bat = 1536;
        let mut rank = 0u64;
        for b in 0..self.blocks() {
            let v = if alloc.get(b) {
                let off = self.head_len + rank * (BITMAP as u64 + BLOCK);
                rank += 1;
                (off / SECTOR) as u32
            } else {
                u32::MAX
            };
            put_u32(&mut out, bat + (b * 4) as usize, v);
        }
        // The BAT's padding to a sector is 0xFF too, as the specification's tools write it.
        let end = bat + self.bat_bytes() as usize;
        for x in &mut out[bat + (self.blocks() * 4) as usize..end] {
            *x = 0xff;
        }
        out
    }
}

/// The one's complement of the sum of every byte (the checksum field itself is zero here).
fn checksum(b: &[u8]) -> u32 {
    !b.iter().map(|&x| x as u32).fold(0u32, u32::wrapping_add)
}

/// CHS geometry for `sectors` (the specification's appendix algorithm).
pub fn geometry(sectors: u64) -> (u16, u8, u8) {
    let total = sectors.min(65535 * 16 * 255);
    let (spt, heads, cth);
    if total >= 65535 * 16 * 63 {
        spt = 255;
        heads = 16;
        cth = total / spt;
    } else {
        let mut s = 17;
        let mut c = total / s;
        let mut h = c.div_ceil(1024).max(4);
        if c >= h * 1024 || h > 16 {
            s = 31;
            h = 16;
            c = total / s;
        }
        if c >= h * 1024 {
            s = 63;
            h = 16;
            c = total / s;
        }
        spt = s;
        heads = h;
        cth = c;
    }
    ((cth / heads) as u16, heads as u8, spt as u8)
}

#[cfg(test)]
mod tests {
    use super::super::{testutil::write_all, Container};
    use super::*;

    #[test]
    fn footer_checksum_and_fields() {
        let v = Vhd::plan(10 << 20, false, 0, "x").unwrap();
        let f = v.footer();
        assert_eq!(&f[..8], b"conectix");
        let sum: u32 = f
            .iter()
            .enumerate()
            .filter(|(i, _)| !(64..68).contains(i))
            .map(|(_, &b)| b as u32)
            .sum();
        assert_eq!(!sum, u32::from_be_bytes(f[64..68].try_into().unwrap()));
        assert_eq!(u64::from_be_bytes(f[48..56].try_into().unwrap()), 10 << 20);
        assert_eq!(
            v,
            Vhd::plan(10 << 20, false, 0, "x").unwrap(),
            "deterministic"
        );
    }

    #[test]
    fn sizes_are_checked() {
        assert!(Vhd::plan(1000, false, 0, "x").is_err());
        assert!(Vhd::plan(MAX_SIZE + 512, true, 0, "x").is_err());
    }

    #[test]
    fn geometry_matches_the_specification_examples() {
        // 10 MiB: 20480 sectors → 17 sectors per track, 4 heads.
        assert_eq!(geometry(20480), (301, 4, 17));
        // Beyond the CHS range the geometry saturates.
        assert_eq!(geometry(u64::MAX), (65535, 16, 255));
    }

    #[test]
    fn dynamic_file_keeps_only_data_blocks() {
        let v = Vhd::plan(5 << 20, true, 0, "x").unwrap();
        assert_eq!(v.head_len, 2048);
        let mut raw = vec![0u8; 5 << 20];
        raw[(4 << 20) + 7] = 9; // third (partial) block
        let c = Container::Vhd(v.clone());
        let f = write_all(&c, &raw);
        assert_eq!(f.len() as u64, 2048 + 512 + BLOCK + 512);
        assert_eq!(&f[..512], &f[f.len() - 512..]);
        let bat = |b: usize| u32::from_be_bytes(f[1536 + 4 * b..1540 + 4 * b].try_into().unwrap());
        assert_eq!((bat(0), bat(1), bat(2)), (u32::MAX, u32::MAX, 4));
        assert_eq!(f[2048 + 512 + 7], 9);
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a VHD back to RAW in one pass.

use super::{Counted, RawSink, ReadError};

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn bad(msg: impl std::fmt::Display) -> ReadError {
    ReadError::Format(format!("the VHD image is not usable: {msg}"))
}

/// A footer's fields the reader needs: (current size, disk type, data offset).
pub fn parse_footer(f: &[u8]) -> Result<(u64, u32, u64), ReadError> {
    if f.len() < 512 || &f[..8] != b"conectix" {
        return Err(bad("no VHD footer (conectix cookie)"));
    }
    let mut copy = [0u8; 512];
    copy.copy_from_slice(&f[..512]);
    let stored = be32(&copy, 64);
    copy[64..68].fill(0);
    if checksum(&copy) != stored {
        return Err(bad("the footer's checksum does not match"));
    }
    Ok((be64(f, 48), be32(f, 60), be64(f, 16)))
}

/// A dynamic VHD being read: its size and block allocation, from the start of the file.
pub struct VhdReader {
    pub vsize: u64,
    block: u64,
    /// (file offset, block index) of the allocated blocks, in file order.
    blocks: Vec<(u64, u64)>,
}

impl VhdReader {
    /// Reads the footer copy, the dynamic header and the BAT.
    pub fn open<R: std::io::Read>(r: &mut Counted<R>) -> Result<Self, ReadError> {
        let mut f = [0u8; 512];
        r.read_exact_at_pos(&mut f, "VHD")?;
        let (vsize, kind, data_offset) = parse_footer(&f)?;
        match kind {
            3 => {}
            4 => {
                return Err(bad(
                    "it is a differencing disk: its contents depend on a parent VHD; merge it \
                     first (`qemu-img convert`)",
                ))
            }
            k => return Err(bad(format!("disk type {k} at the start of the file"))),
        }
        r.skip_to(data_offset, "VHD")?;
        let mut h = [0u8; 1024];
        r.read_exact_at_pos(&mut h, "VHD")?;
        if &h[..8] != b"cxsparse" {
            return Err(bad("no dynamic disk header (cxsparse cookie)"));
        }
        let stored = be32(&h, 36);
        h[36..40].fill(0);
        if checksum(&h) != stored {
            return Err(bad("the dynamic disk header's checksum does not match"));
        }
        let table = be64(&h, 16);
        let entries = be32(&h, 28) as u64;
        let block = be32(&h, 32) as u64;
        if !block.is_power_of_two() || !(SECTOR * 8..=(256 << 20)).contains(&block) {
            return Err(bad(format!("block size {block}")));
        }
        if vsize % SECTOR != 0 || entries * block < vsize || entries > 1 << 24 {
            return Err(bad(format!(
                "{entries} blocks of {block} bytes for a disk of {vsize} bytes"
            )));
        }
        r.skip_to(table, "VHD")?;
        let mut bat = vec![0u8; (entries * 4) as usize];
        r.read_exact_at_pos(&mut bat, "VHD")?;
        let mut blocks: Vec<(u64, u64)> = (0..entries)
            .filter_map(|i| {
                let v = be32(&bat, (i * 4) as usize);
                (v != u32::MAX).then_some((v as u64 * SECTOR, i))
            })
            .collect();
        blocks.sort_unstable();
        if blocks.windows(2).any(|w| w[0].1 > w[1].1) {
            return Err(bad(
                "its blocks are not stored in guest order, so it cannot be read in one pass; \
                 convert it with `qemu-img convert` first",
            ));
        }
        Ok(Self {
            vsize,
            block,
            blocks,
        })
    }

    /// Reads the blocks into `sink` in guest order (zeros for absent blocks).
    pub fn read<R: std::io::Read>(
        &self,
        r: &mut Counted<R>,
        sink: &mut impl RawSink,
    ) -> Result<(), ReadError> {
        let sectors = self.block / SECTOR;
        let bitmap_len = (sectors / 8).div_ceil(SECTOR) * SECTOR;
        let mut bitmap = vec![0u8; bitmap_len as usize];
        let mut buf = vec![0u8; self.block as usize];
        let mut emitted = 0u64;
        for &(off, idx) in &self.blocks {
            let start = idx * self.block;
            if start >= self.vsize {
                continue; // BAT entries past the disk's end are never read
            }
            r.skip_to(off, "VHD")?;
            r.read_exact_at_pos(&mut bitmap, "VHD")?;
            let keep = self.block.min(self.vsize - start) as usize;
            r.read_exact_at_pos(&mut buf, "VHD")?;
            // The sector bitmap is read past, as qemu does: in a disk without a parent an
            // allocated block's sectors are its data (new blocks are written zeroed).
            sink.zeros(start - emitted)?;
            sink.data(&buf[..keep])?;
            emitted = start + keep as u64;
        }
        sink.zeros(self.vsize - emitted)?;
        Ok(())
    }
}

/// Reads a fixed VHD of `object_size` bytes: the RAW, then a footer that must describe it.
pub fn read_fixed<R: std::io::Read>(
    r: &mut Counted<R>,
    object_size: u64,
    sink: &mut impl RawSink,
) -> Result<u64, ReadError> {
    let vsize = object_size
        .checked_sub(SECTOR)
        .ok_or_else(|| bad("shorter than a footer"))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = vsize;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        r.read_exact_at_pos(&mut buf[..n], "VHD")?;
        sink.data(&buf[..n])?;
        left -= n as u64;
    }
    let mut f = [0u8; 512];
    r.read_exact_at_pos(&mut f, "VHD")?;
    let (size, kind, _) = parse_footer(&f)?;
    if kind != 2 || size != vsize {
        return Err(bad(format!(
            "the footer describes a disk of type {kind} and {size} bytes, not a fixed disk of \
             {vsize}"
        )));
    }
    Ok(vsize)
}

#[cfg(test)]
mod read_tests {
    use super::super::vmdk::tests::Collect;
    use super::super::{testutil::write_all, Container};
    use super::*;

    #[test]
    fn what_is_written_reads_back() {
        let size = 5 << 20;
        let mut raw = vec![0u8; size];
        raw[3] = 1;
        raw[(4 << 20) + 513] = 2;
        let v = Vhd::plan(size as u64, true, 0, "s").unwrap();
        let img = write_all(&Container::Vhd(v), &raw);
        let mut r = Counted::new(&img[..]);
        let rd = VhdReader::open(&mut r).unwrap();
        let mut out = Collect::default();
        rd.read(&mut r, &mut out).unwrap();
        assert!(out.0 == raw);
        let v = Vhd::plan(size as u64, false, 0, "s").unwrap();
        let img = write_all(&Container::Vhd(v), &raw);
        let mut out = Collect::default();
        let n = read_fixed(&mut Counted::new(&img[..]), img.len() as u64, &mut out).unwrap();
        assert_eq!(n, size as u64);
        assert!(out.0 == raw);
        let mut bad_img = img.clone();
        let l = bad_img.len();
        bad_img[l - 1] ^= 1;
        assert!(read_fixed(
            &mut Counted::new(&bad_img[..]),
            l as u64,
            &mut Collect::default()
        )
        .is_err());
    }
}
