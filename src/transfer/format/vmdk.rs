//! Reading a stream-optimized VMDK (what AWS ExportImage and `qemu-img convert -o
//! subformat=streamOptimized` write; VMware Virtual Disk Format 1.1, "Stream-Optimized
//! Compressed Sparse Extents") in one sequential pass.
//!
//! Layout: a 512-byte sparse extent header (`KDMV`, version 3, flags "compressed grains" and
//! "markers"), the descriptor, then from `overHead` sectors on a sequence of sector-aligned
//! items: grain markers (`lba: u64`, `size: u32` > 0, then `size` bytes of a zlib stream that
//! inflates to one grain) and metadata markers (`numSectors: u64`, `size` = 0, `type: u32`,
//! padded to a sector, then `numSectors` sectors: grain tables, the grain directory, the footer),
//! ending with the end-of-stream marker (type 0). Guarantees: grains are emitted in guest order
//! with zeros for the gaps; a grain out of ascending order, one beyond the capacity, a marker of
//! unknown type, a grain that does not inflate to at most one grain, or a stream that ends before
//! its end-of-stream marker is a [`ReadError::Format`].

use super::{Counted, RawSink, ReadError};

const SECTOR: u64 = 512;
const FLAG_COMPRESSED: u32 = 1 << 16;
const FLAG_MARKERS: u32 = 1 << 17;
const WHAT: &str = "VMDK";

/// A stream-optimized VMDK's header, as needed to read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vmdk {
    pub capacity: u64,
    pub grain: u64,
    overhead: u64,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn bad(msg: impl std::fmt::Display) -> ReadError {
    ReadError::Format(format!("the VMDK image is not usable: {msg}"))
}

impl Vmdk {
    /// Reads and checks the header (the first 512 bytes).
    pub fn open<R: std::io::Read>(r: &mut Counted<R>) -> Result<Self, ReadError> {
        let mut h = [0u8; 512];
        r.read_exact_at_pos(&mut h, WHAT)?;
        if &h[..4] != b"KDMV" {
            return Err(bad(
                "no sparse extent header (KDMV); a descriptor-only or flat VMDK \
                            is not read here, copy it with --input-format raw",
            ));
        }
        let version = le32(&h, 4);
        let flags = le32(&h, 8);
        let capacity = le64(&h, 12)
            .checked_mul(SECTOR)
            .ok_or_else(|| bad("capacity"))?;
        let grain = le64(&h, 20)
            .checked_mul(SECTOR)
            .ok_or_else(|| bad("grain size"))?;
        let overhead = le64(&h, 64)
            .checked_mul(SECTOR)
            .ok_or_else(|| bad("overhead"))?;
        let algorithm = u16::from_le_bytes([h[77], h[78]]);
        if version != 3 || flags & FLAG_COMPRESSED == 0 || flags & FLAG_MARKERS == 0 {
            return Err(bad(format!(
                "version {version}, flags {flags:#x}: only stream-optimized VMDKs (version 3, \
                 compressed grains with markers) are read; convert it with `qemu-img convert \
                 -O vmdk -o subformat=streamOptimized` or to RAW first"
            )));
        }
        if algorithm != 1 {
            return Err(bad(format!(
                "compression algorithm {algorithm} is not deflate"
            )));
        }
        if !grain.is_power_of_two() || !(4096..=(16 << 20)).contains(&grain) {
            return Err(bad(format!("grain size {grain} bytes")));
        }
        if capacity > 1 << 50 {
            return Err(bad(format!("capacity {capacity} bytes")));
        }
        Ok(Self {
            capacity,
            grain,
            overhead,
        })
    }

    /// Reads the rest: grains into `sink` in guest order, zeros between them and to the end.
    pub fn read<R: std::io::Read>(
        &self,
        r: &mut Counted<R>,
        sink: &mut impl RawSink,
    ) -> Result<(), ReadError> {
        r.skip_to(self.overhead.max(r.pos), WHAT)?;
        let mut emitted = 0u64; // guest bytes handed to the sink
        let mut compressed = Vec::new();
        let mut grain = vec![0u8; self.grain as usize];
        let max_compressed = self.grain * 2 + 4096;
        loop {
            let mut m = [0u8; 12];
            if let Err(e) = r.read_exact_at_pos(&mut m, WHAT) {
                return Err(match e {
                    ReadError::Format(_) => bad(format!(
                        "the stream ends at offset {} without its end-of-stream marker \
                         (truncated)",
                        r.pos
                    )),
                    other => other,
                });
            }
            let (lba_or_sectors, size) = (le64(&m, 0), le32(&m, 8));
            if size == 0 {
                let mut rest = [0u8; 500];
                r.read_exact_at_pos(&mut rest, WHAT)?;
                let kind = le32(&rest, 0);
                match kind {
                    0 => break,
                    1..=3 => {
                        let len = lba_or_sectors
                            .checked_mul(SECTOR)
                            .filter(|l| *l < 1 << 40)
                            .ok_or_else(|| bad("a metadata marker's length"))?;
                        r.skip_to(r.pos + len, WHAT)?;
                    }
                    k => {
                        return Err(bad(format!(
                            "a marker of unknown type {k} at offset {}",
                            r.pos - 512
                        )))
                    }
                }
                continue;
            }
            let at = r.pos - 12;
            let lba = lba_or_sectors;
            let start = lba
                .checked_mul(SECTOR)
                .filter(|s| *s < self.capacity)
                .ok_or_else(|| {
                    bad(format!(
                        "a grain at offset {at} lies beyond the disk (LBA {lba})"
                    ))
                })?;
            if start % self.grain != 0 {
                return Err(bad(format!(
                    "a grain at offset {at} is not grain-aligned (LBA {lba})"
                )));
            }
            if start < emitted {
                return Err(bad(format!(
                    "grains are out of ascending order (LBA {lba} at offset {at} after guest \
                     byte {emitted}): convert it with `qemu-img convert` first"
                )));
            }
            if size as u64 > max_compressed {
                return Err(bad(format!(
                    "a grain marker at offset {at} claims {size} bytes"
                )));
            }
            compressed.resize(size as usize, 0);
            r.read_exact_at_pos(&mut compressed, WHAT)?;
            let mut z = flate2::Decompress::new(true);
            let status = z
                .decompress(&compressed, &mut grain, flate2::FlushDecompress::Finish)
                .map_err(|e| bad(format!("the grain at offset {at} does not inflate: {e}")))?;
            if status != flate2::Status::StreamEnd || z.total_in() != size as u64 {
                return Err(bad(format!(
                    "the grain at offset {at} does not inflate to at most one grain"
                )));
            }
            let out = z.total_out() as usize;
            sink.zeros(start - emitted)?;
            let keep = (out as u64).min(self.capacity - start) as usize;
            sink.data(&grain[..keep])?;
            emitted = start + keep as u64;
            // A grain shorter than a whole grain: the rest reads as zeros.
            let grain_end = (start + self.grain).min(self.capacity);
            sink.zeros(grain_end - emitted)?;
            emitted = grain_end;
            // Items are sector-aligned.
            let pad = (SECTOR - r.pos % SECTOR) % SECTOR;
            r.skip_to(r.pos + pad, WHAT)?;
        }
        sink.zeros(self.capacity - emitted)?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Collects what a reader emits.
    #[derive(Default)]
    pub(crate) struct Collect(pub Vec<u8>);

    impl RawSink for Collect {
        fn zeros(&mut self, len: u64) -> Result<(), ReadError> {
            self.0.resize(self.0.len() + len as usize, 0);
            Ok(())
        }
        fn data(&mut self, bytes: &[u8]) -> Result<(), ReadError> {
            self.0.extend_from_slice(bytes);
            Ok(())
        }
    }

    /// A minimal stream-optimized VMDK: header, grains, end-of-stream.
    pub(crate) fn write(capacity: u64, grains: &[(u64, Vec<u8>)]) -> Vec<u8> {
        use std::io::Write;
        let mut f = vec![0u8; 512];
        f[..4].copy_from_slice(b"KDMV");
        f[4..8].copy_from_slice(&3u32.to_le_bytes());
        f[8..12].copy_from_slice(&(FLAG_COMPRESSED | FLAG_MARKERS | 1).to_le_bytes());
        f[12..20].copy_from_slice(&(capacity / 512).to_le_bytes());
        f[20..28].copy_from_slice(&128u64.to_le_bytes());
        f[64..72].copy_from_slice(&1u64.to_le_bytes());
        f[77..79].copy_from_slice(&1u16.to_le_bytes());
        for (lba, data) in grains {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            z.write_all(data).unwrap();
            let c = z.finish().unwrap();
            f.extend_from_slice(&lba.to_le_bytes());
            f.extend_from_slice(&(c.len() as u32).to_le_bytes());
            f.extend_from_slice(&c);
            f.resize(f.len().div_ceil(512) * 512, 0);
        }
        f.extend_from_slice(&[0u8; 512]); // end of stream
        f
    }

    fn read_all(img: &[u8]) -> Result<Vec<u8>, ReadError> {
        let mut r = Counted::new(img);
        let v = Vmdk::open(&mut r)?;
        let mut out = Collect::default();
        v.read(&mut r, &mut out)?;
        assert_eq!(out.0.len() as u64, v.capacity);
        Ok(out.0)
    }

    #[test]
    fn grains_in_order_with_gaps() {
        let g = 65536;
        let a: Vec<u8> = (0..g).map(|i| (i % 7) as u8 + 1).collect();
        let img = write(5 * g as u64, &[(128, a.clone()), (512, vec![9; 100])]);
        let raw = read_all(&img).unwrap();
        assert!(raw[..g].iter().all(|&b| b == 0));
        assert_eq!(&raw[g..2 * g], &a[..]);
        assert_eq!(&raw[4 * g..4 * g + 100], &[9; 100][..]);
        assert!(raw[4 * g + 100..].iter().all(|&b| b == 0));
    }

    #[test]
    fn broken_streams_are_refused() {
        let g = 65536u64;
        let img = write(4 * g, &[(256, vec![1; 10]), (128, vec![2; 10])]);
        let e = read_all(&img).unwrap_err();
        assert!(
            matches!(&e, ReadError::Format(m) if m.contains("ascending")),
            "{e:?}"
        );
        let img = write(4 * g, &[(128, vec![1; 10])]);
        let e = read_all(&img[..img.len() - 512]).unwrap_err();
        assert!(
            matches!(&e, ReadError::Format(m) if m.contains("truncated")),
            "{e:?}"
        );
        let mut img = write(4 * g, &[]);
        let n = img.len();
        img[n - 512 + 12] = 9; // end-of-stream marker → unknown type
        let e = read_all(&img).unwrap_err();
        assert!(
            matches!(&e, ReadError::Format(m) if m.contains("unknown type")),
            "{e:?}"
        );
        let img = write(4 * g, &[(4 * 128, vec![1; 10])]);
        let e = read_all(&img).unwrap_err();
        assert!(
            matches!(&e, ReadError::Format(m) if m.contains("beyond")),
            "{e:?}"
        );
    }
}
