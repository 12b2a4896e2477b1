//! Disk image containers written on the fly (`copy --format`): the pure layout side of a
//! conversion, no I/O. The part source that streams a RAW disk into one of them lives in
//! [`super::convert`].
//!
//! Guarantees callers can rely on:
//! * A container is planned from the virtual size alone (and the memory and part limits), so
//!   a rerun after a crash plans the same layout and regenerates byte-identical parts.
//! * The guest stream is cut into allocation units ([`Container::unit`]); a unit either lands
//!   in the file whole (padded with zeros when the disk ends inside it) or, when every byte of
//!   it is zero and the format is sparse, not at all. Kept units are laid out in guest order
//!   right after the reserved head ([`Container::head_len`]), so a unit's file offset follows
//!   from the number of units kept before it: the only state kept per unit is one bit
//!   ([`Alloc`]).
//! * Metadata that depends on which units were kept (QCOW2 L2 tables and refcount blocks, the
//!   VHD footer) follows the data as the tail; what sits at the start of the file (QCOW2
//!   header, L1 and refcount table; VHD footer copy, dynamic header and BAT) is generated last
//!   into a head of a size fixed up front.

pub mod qcow2;
pub mod vhd;
pub mod vmdk;

/// The destination's disk format (`copy --format`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum DiskFormat {
    /// The RAW disk as it is (no conversion).
    #[default]
    Raw,
    /// QCOW2 version 3: only clusters holding data are written.
    Qcow2,
    /// Fixed VHD: the RAW disk followed by a 512-byte footer.
    Vhd,
    /// Dynamic VHD: only 2 MiB blocks holding data are written.
    VhdDynamic,
}

impl DiskFormat {
    /// The name used on the command line and in metadata.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Vhd => "vhd",
            Self::VhdDynamic => "vhd-dynamic",
        }
    }
}

/// One bit per allocation unit of the guest disk: whether the unit was written to the file.
#[derive(Debug, Clone, Default)]
pub struct Alloc {
    words: Vec<u64>,
    units: u64,
    count: u64,
}

impl Alloc {
    pub fn new(units: u64) -> Self {
        Self {
            words: vec![0; units.div_ceil(64) as usize],
            units,
            count: 0,
        }
    }

    /// Bytes the map takes for `units` units.
    pub fn bytes_for(units: u64) -> u64 {
        units.div_ceil(64) * 8
    }

    pub fn set(&mut self, unit: u64) {
        let (w, b) = ((unit / 64) as usize, unit % 64);
        if self.words[w] & (1 << b) == 0 {
            self.words[w] |= 1 << b;
            self.count += 1;
        }
    }

    pub fn get(&self, unit: u64) -> bool {
        unit < self.units && self.words[(unit / 64) as usize] & (1 << (unit % 64)) != 0
    }

    /// Units kept.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether a unit in `[from, to)` was kept (a word at a time).
    pub fn any_in(&self, from: u64, to: u64) -> bool {
        let to = to.min(self.units);
        let mut u = from;
        while u < to {
            if u.is_multiple_of(64) && to - u >= 64 {
                if self.words[(u / 64) as usize] != 0 {
                    return true;
                }
                u += 64;
            } else {
                if self.get(u) {
                    return true;
                }
                u += 1;
            }
        }
        false
    }
}

/// A container being written: the layout parameters of one of the formats.
#[derive(Debug, Clone)]
pub enum Container {
    Qcow2(qcow2::Qcow2),
    Vhd(vhd::Vhd),
}

/// Where the tail generation stands (see [`Container::tail_next`]).
#[derive(Debug, Clone, Default)]
pub struct TailCursor {
    stage: u8,
    idx: u64,
    rank: u64,
    /// The finished file's counts, computed once (see `qcow2::Qcow2::counts`).
    counts: Option<[u64; 4]>,
}

impl Container {
    /// Plans `format` for a guest disk of `vsize` bytes. `max_map`: bytes the allocation map
    /// may take; `min_head`: the smallest first part the destination accepts (the head is
    /// padded to it, it is never the last part).
    pub fn plan(
        format: DiskFormat,
        vsize: u64,
        max_map: u64,
        min_head: u64,
        seed: &str,
    ) -> Result<Self, String> {
        match format {
            DiskFormat::Raw => Err("RAW is not a container".into()),
            DiskFormat::Qcow2 => qcow2::Qcow2::plan(vsize, max_map, min_head).map(Self::Qcow2),
            DiskFormat::Vhd => vhd::Vhd::plan(vsize, false, min_head, seed).map(Self::Vhd),
            DiskFormat::VhdDynamic => vhd::Vhd::plan(vsize, true, min_head, seed).map(Self::Vhd),
        }
    }

    pub fn format(&self) -> DiskFormat {
        match self {
            Self::Qcow2(_) => DiskFormat::Qcow2,
            Self::Vhd(v) if v.dynamic => DiskFormat::VhdDynamic,
            Self::Vhd(_) => DiskFormat::Vhd,
        }
    }

    /// Guest bytes per allocation unit.
    pub fn unit(&self) -> u64 {
        match self {
            Self::Qcow2(q) => q.cluster_size(),
            Self::Vhd(v) => v.unit(),
        }
    }

    pub fn vsize(&self) -> u64 {
        match self {
            Self::Qcow2(q) => q.vsize,
            Self::Vhd(v) => v.vsize,
        }
    }

    /// Allocation units of the guest disk.
    pub fn units(&self) -> u64 {
        self.vsize().div_ceil(self.unit())
    }

    /// Whether all-zero units are written too (a fixed VHD).
    pub fn keeps_zero_units(&self) -> bool {
        matches!(self, Self::Vhd(v) if !v.dynamic)
    }

    /// Bytes written before each kept unit (a dynamic VHD block's sector bitmap, all set).
    pub fn unit_prefix(&self) -> usize {
        match self {
            Self::Vhd(v) if v.dynamic => vhd::BITMAP,
            _ => 0,
        }
    }

    /// Whether a unit cut short by the end of the disk is padded to a whole unit.
    pub fn pads_last_unit(&self) -> bool {
        !self.keeps_zero_units()
    }

    /// Bytes reserved at the start of the file, written last (0: none).
    pub fn head_len(&self) -> u64 {
        match self {
            Self::Qcow2(q) => q.head_len,
            Self::Vhd(v) => v.head_len,
        }
    }

    /// The largest the file can become (every unit kept).
    pub fn max_len(&self) -> u64 {
        match self {
            Self::Qcow2(q) => q.max_len(),
            Self::Vhd(v) => v.max_len(),
        }
    }

    /// The next piece of the tail (metadata after the data), or `None` when it is complete.
    /// Pieces are generated in file order; each is at most one unit (or cluster) long.
    pub fn tail_next(&self, alloc: &Alloc, cur: &mut TailCursor) -> Option<Vec<u8>> {
        match self {
            Self::Qcow2(q) => q.tail_next(alloc, cur),
            Self::Vhd(v) => {
                if cur.stage > 0 {
                    return None;
                }
                cur.stage = 1;
                Some(v.footer().to_vec())
            }
        }
    }

    /// The head's bytes (exactly [`Self::head_len`]), once every unit went by.
    pub fn head(&self, alloc: &Alloc) -> Vec<u8> {
        match self {
            Self::Qcow2(q) => q.head(alloc),
            Self::Vhd(v) => v.head(alloc),
        }
    }

    /// The file's length once every unit went by.
    pub fn file_len(&self, alloc: &Alloc) -> u64 {
        match self {
            Self::Qcow2(q) => q.file_len(alloc),
            Self::Vhd(v) => v.file_len(alloc),
        }
    }
}

pub(crate) fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// Writes `raw` as `c` the simple way (whole file in memory): what the streaming packer
    /// must produce too.
    pub fn write_all(c: &Container, raw: &[u8]) -> Vec<u8> {
        let unit = c.unit() as usize;
        let mut alloc = Alloc::new(c.units());
        let mut out = vec![0u8; c.head_len() as usize];
        for (i, u) in raw.chunks(unit).enumerate() {
            let zero = u.iter().all(|&b| b == 0);
            if zero && !c.keeps_zero_units() {
                continue;
            }
            alloc.set(i as u64);
            out.extend(std::iter::repeat_n(0xffu8, c.unit_prefix()));
            out.extend_from_slice(u);
            if c.pads_last_unit() {
                out.resize(out.len() + unit - u.len(), 0);
            }
        }
        let mut cur = TailCursor::default();
        while let Some(t) = c.tail_next(&alloc, &mut cur) {
            out.extend_from_slice(&t);
        }
        let head = c.head(&alloc);
        out[..head.len()].copy_from_slice(&head);
        assert_eq!(out.len() as u64, c.file_len(&alloc));
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Reading containers back to RAW (`copy --input-format`): one sequential pass.

/// Where a container reader puts the guest-visible RAW stream, in guest order.
pub trait RawSink {
    /// `len` zero bytes.
    fn zeros(&mut self, len: u64) -> Result<(), ReadError>;
    /// The next guest bytes.
    fn data(&mut self, bytes: &[u8]) -> Result<(), ReadError>;
}

/// Why reading a container stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The input is not a usable image of its format (one line for the user).
    Format(String),
    /// The sink stopped taking bytes (the pipeline is shutting down).
    Stopped,
}

impl ReadError {
    pub(crate) fn io(what: &str, e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Self::Format(format!("the {what} image is truncated"))
        } else {
            Self::Format(format!("reading the {what} image: {e}"))
        }
    }
}

/// A reader that counts the bytes taken from it (container offsets).
pub struct Counted<R> {
    pub inner: R,
    pub pos: u64,
}

use std::io::Read as _;

impl<R: std::io::Read> Counted<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, pos: 0 }
    }

    pub fn read_exact_at_pos(&mut self, buf: &mut [u8], what: &str) -> Result<(), ReadError> {
        self.inner
            .read_exact(buf)
            .map_err(|e| ReadError::io(what, e))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// Reads until `buf` is full or the input ends; how many bytes were read.
    pub fn read_up_to(&mut self, buf: &mut [u8], what: &str) -> Result<usize, ReadError> {
        let mut n = 0;
        while n < buf.len() {
            match self.inner.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::io(what, e)),
            }
        }
        self.pos += n as u64;
        Ok(n)
    }

    /// Skips forward to container offset `to` (never backwards: the stream is one pass).
    pub fn skip_to(&mut self, to: u64, what: &str) -> Result<(), ReadError> {
        if to < self.pos {
            return Err(ReadError::Format(format!(
                "the {what} image needs offset {to} after {}: its layout cannot be read in one \
                 pass; convert it with `qemu-img convert` first",
                self.pos
            )));
        }
        let n = to - self.pos;
        let got = std::io::copy(&mut self.inner.by_ref().take(n), &mut std::io::sink())
            .map_err(|e| ReadError::io(what, e))?;
        self.pos += got;
        if got < n {
            return Err(ReadError::Format(format!("the {what} image is truncated")));
        }
        Ok(())
    }
}

/// What the first bytes of a source say it is (`--input-format auto`).
pub fn sniff(head: &[u8]) -> Option<InputFormat> {
    if head.starts_with(b"QFI\xfb") {
        Some(InputFormat::Qcow2)
    } else if head.starts_with(b"KDMV") {
        Some(InputFormat::Vmdk)
    } else if head.starts_with(b"conectix") {
        Some(InputFormat::Vhd)
    } else {
        None
    }
}

/// The source's disk format (`copy --input-format`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum InputFormat {
    /// By magic number: QCOW2, VMDK, dynamic VHD; a `.vhd` key without one is a fixed VHD;
    /// anything else is RAW.
    #[default]
    Auto,
    Raw,
    Qcow2,
    Vhd,
    Vmdk,
}

impl InputFormat {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Vhd => "vhd",
            Self::Vmdk => "vmdk",
        }
    }
}
