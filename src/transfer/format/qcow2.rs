//! QCOW2 version 3 as the relay writes it (layout facts from qemu's `docs/interop/qcow2.txt`).
//!
//! File layout, in clusters:
//! ```text
//! | header | L1 table | refcount table | (padding) | data clusters… | L2 tables… | refcount blocks… |
//! |<--------------- head: reserved, written last --->|<- streamed in guest order, then the tail ->|
//! ```
//! Guarantees: every cluster in use has refcount 1 and carries the `COPIED` flag where it is
//! referenced (so `qemu-img check` finds neither leaks nor corruption); padding clusters have
//! refcount 0 and are referenced by nothing; all-zero guest clusters are left unallocated
//! (L2 entry 0: no backing file, so they read as zeros); 16-bit refcounts; no extensions,
//! no backing file, no encryption, no compression, no snapshots.
//!
//! Cluster size: 64 KiB (qemu's default) unless the allocation map (one bit per guest
//! cluster) would exceed its share of `--memory`; then the smallest power of two up to
//! 2 MiB that fits. The share is 1/16 of the RAW budget (`convert.rs`): the default 256 MiB
//! `--memory` gives 192 MiB of RAW budget, a 12 MiB map, 64 KiB clusters up to 6 TiB; a
//! 2 TiB disk at 64 KiB needs a 4 MiB map.

use super::{put_u16, put_u32, put_u64, Alloc, TailCursor};

const MAGIC: &[u8; 4] = b"QFI\xfb";
/// The version 3 header without extensions (its `header_length`).
const HEADER_LEN: usize = 104;
const COPIED: u64 = 1 << 63;
const MIN_CLUSTER_BITS: u32 = 16;
const MAX_CLUSTER_BITS: u32 = 21;
/// 16-bit refcounts (`refcount_order` 4).
const REFCOUNT_ORDER: u32 = 4;

/// The layout of one QCOW2 file (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2 {
    pub vsize: u64,
    pub cluster_bits: u32,
    /// Entries of the L1 table (one per L2 table's span of the guest disk).
    pub l1_size: u64,
    l1_clusters: u64,
    rt_clusters: u64,
    /// Header + L1 + refcount table clusters (refcount 1); then padding up to `head_len`.
    meta_clusters: u64,
    pub head_len: u64,
}

impl Qcow2 {
    pub fn plan(vsize: u64, max_map: u64, min_head: u64) -> Result<Self, String> {
        let mut bits = MIN_CLUSTER_BITS;
        while bits < MAX_CLUSTER_BITS && Alloc::bytes_for(vsize.div_ceil(1 << bits)) > max_map {
            bits += 1;
        }
        let cs = 1u64 << bits;
        let units = vsize.div_ceil(cs);
        if Alloc::bytes_for(units) > max_map.max(1 << 20) * 4 {
            return Err(format!(
                "a QCOW2 of {vsize} bytes needs a cluster map of {} bytes even with 2 MiB \
                 clusters; raise --memory",
                Alloc::bytes_for(units)
            ));
        }
        let per_l2 = cs / 8;
        let l1_size = units.div_ceil(per_l2);
        let l1_clusters = (l1_size * 8).div_ceil(cs).max(1);
        // Refcount table sized for the largest file: every cluster allocated. The table and
        // the blocks it covers depend on each other; a few rounds settle it.
        let per_rb = cs * 8 / (1 << REFCOUNT_ORDER);
        let mut rt_clusters = 1;
        let (mut meta, mut head_clusters);
        loop {
            meta = 1 + l1_clusters + rt_clusters;
            head_clusters = meta.max(min_head.div_ceil(cs));
            let base = head_clusters + units + l1_size;
            let rbs = refblocks_for(base, per_rb);
            let need = (rbs * 8).div_ceil(cs).max(1);
            if need <= rt_clusters {
                break;
            }
            rt_clusters = need;
        }
        // qemu refuses L1 tables above 32 MiB and refcount tables above 8 MiB.
        if l1_size * 8 > 32 << 20 || rt_clusters * cs > 8 << 20 {
            return Err(format!(
                "a QCOW2 of {vsize} bytes is beyond what qemu opens; use --format raw"
            ));
        }
        Ok(Self {
            vsize,
            cluster_bits: bits,
            l1_size,
            l1_clusters,
            rt_clusters,
            meta_clusters: meta,
            head_len: head_clusters * cs,
        })
    }

    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn per_l2(&self) -> u64 {
        self.cluster_size() / 8
    }

    fn per_rb(&self) -> u64 {
        self.cluster_size() * 8 / (1 << REFCOUNT_ORDER)
    }

    fn units(&self) -> u64 {
        self.vsize.div_ceil(self.cluster_size())
    }

    fn head_clusters(&self) -> u64 {
        self.head_len / self.cluster_size()
    }

    /// L2 tables needed: one per L1 entry whose span holds a kept cluster.
    fn l2_tables(&self, alloc: &Alloc) -> u64 {
        (0..self.l1_size)
            .filter(|&i| self.group_used(alloc, i))
            .count() as u64
    }

    fn group_used(&self, alloc: &Alloc, i: u64) -> bool {
        let from = i * self.per_l2();
        alloc.any_in(from, from + self.per_l2())
    }

    /// (data clusters, L2 tables, refcount blocks, total clusters) of the finished file.
    fn counts(&self, alloc: &Alloc) -> (u64, u64, u64, u64) {
        let data = alloc.count();
        let l2 = self.l2_tables(alloc);
        let base = self.head_clusters() + data + l2;
        let rbs = refblocks_for(base, self.per_rb());
        (data, l2, rbs, base + rbs)
    }

    pub fn file_len(&self, alloc: &Alloc) -> u64 {
        self.counts(alloc).3 * self.cluster_size()
    }

    pub fn max_len(&self) -> u64 {
        let base = self.head_clusters() + self.units() + self.l1_size;
        (base + refblocks_for(base, self.per_rb())) * self.cluster_size()
    }

    /// The tail: L2 tables of the used spans in guest order, then the refcount blocks.
    pub fn tail_next(&self, alloc: &Alloc, cur: &mut TailCursor) -> Option<Vec<u8>> {
        let cs = self.cluster_size();
        let [data, _l2, rbs, total] = *cur.counts.get_or_insert_with(|| {
            let (d, l, r, t) = self.counts(alloc);
            [d, l, r, t]
        });
        if cur.stage == 0 {
            while cur.idx < self.l1_size {
                let i = cur.idx;
                cur.idx += 1;
                let from = i * self.per_l2();
                let to = (from + self.per_l2()).min(self.units());
                if !self.group_used(alloc, i) {
                    continue;
                }
                let mut t = vec![0u8; cs as usize];
                for g in from..to {
                    if alloc.get(g) {
                        let host = (self.head_clusters() + cur.rank) * cs;
                        put_u64(&mut t, ((g - from) * 8) as usize, host | COPIED);
                        cur.rank += 1;
                    }
                }
                return Some(t);
            }
            debug_assert_eq!(cur.rank, data);
            cur.stage = 1;
            cur.idx = 0;
        }
        if cur.idx >= rbs {
            return None;
        }
        let mut b = vec![0u8; cs as usize];
        let first = cur.idx * self.per_rb();
        for k in 0..self.per_rb() {
            let c = first + k;
            if c < self.meta_clusters || (c >= self.head_clusters() && c < total) {
                put_u16(&mut b, (k * 2) as usize, 1);
            }
        }
        cur.idx += 1;
        Some(b)
    }

    /// Header, L1 table and refcount table, padded to `head_len`.
    pub fn head(&self, alloc: &Alloc) -> Vec<u8> {
        let cs = self.cluster_size();
        let (data, l2, rbs, _total) = self.counts(alloc);
        let mut h = vec![0u8; self.head_len as usize];
        let l1_off = cs;
        let rt_off = (1 + self.l1_clusters) * cs;
        h[0..4].copy_from_slice(MAGIC);
        put_u32(&mut h, 4, 3); // version
        put_u32(&mut h, 20, self.cluster_bits);
        put_u64(&mut h, 24, self.vsize);
        put_u32(&mut h, 36, self.l1_size as u32);
        put_u64(&mut h, 40, l1_off);
        put_u64(&mut h, 48, rt_off);
        put_u32(&mut h, 56, self.rt_clusters as u32);
        put_u32(&mut h, 96, REFCOUNT_ORDER);
        put_u32(&mut h, 100, HEADER_LEN as u32);
        // Header extensions would follow; the zeros after the header are the end marker.
        let l2_first = self.head_clusters() + data;
        let mut k = 0;
        for i in 0..self.l1_size {
            if self.group_used(alloc, i) {
                let off = (l2_first + k) * cs;
                put_u64(&mut h, (l1_off + i * 8) as usize, off | COPIED);
                k += 1;
            }
        }
        debug_assert_eq!(k, l2);
        for r in 0..rbs {
            let off = (l2_first + l2 + r) * cs;
            put_u64(&mut h, (rt_off + r * 8) as usize, off);
        }
        h
    }
}

/// Refcount blocks covering `base` clusters plus themselves.
fn refblocks_for(base: u64, per_rb: u64) -> u64 {
    let mut n = base.div_ceil(per_rb);
    while n * per_rb < base + n {
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::super::{testutil::write_all, Container};
    use super::*;

    #[test]
    fn small_disk_layout() {
        let q = Qcow2::plan(10 << 20, 1 << 20, 100 * 1024).unwrap();
        assert_eq!(q.cluster_bits, 16);
        assert_eq!(q.l1_size, 1);
        // header, L1, refcount table; padded to two clusters of 64 KiB ≥ 100 KiB… no: three
        // metadata clusters already exceed it.
        assert_eq!(q.head_len, 3 * 65536);
        let mut a = Alloc::new(q.units());
        assert_eq!(q.file_len(&a), 4 * 65536, "head + one refcount block");
        a.set(5);
        assert_eq!(q.file_len(&a), 6 * 65536, "+ data + L2");
    }

    #[test]
    fn cluster_size_grows_with_the_map() {
        let q = Qcow2::plan(1 << 40, 1 << 20, 0).unwrap();
        // 2^40 / 2^17 = 8 Mi clusters = 1 MiB of map.
        assert_eq!(q.cluster_bits, 17);
        let q = Qcow2::plan(1 << 40, 4 << 20, 0).unwrap();
        assert_eq!(q.cluster_bits, 16);
    }

    #[test]
    fn head_is_padded_to_the_minimum_part() {
        let q = Qcow2::plan(1 << 20, 1 << 20, 5 << 20).unwrap();
        assert_eq!(q.head_len, 5 << 20);
        let raw: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        let c = Container::Qcow2(q.clone());
        let f = write_all(&c, &raw);
        // Data follows the padded head.
        assert_eq!(&f[5 << 20..(5 << 20) + 16], &raw[..16]);
    }

    #[test]
    fn refblocks_cover_themselves() {
        assert_eq!(refblocks_for(0, 32768), 0);
        assert_eq!(refblocks_for(1, 32768), 1);
        assert_eq!(refblocks_for(32767, 32768), 1);
        assert_eq!(refblocks_for(32768, 32768), 2);
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a QCOW2 back to RAW in one pass.

use super::{Counted, RawSink, ReadError};
use std::collections::BTreeMap;

const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn bad(msg: impl std::fmt::Display) -> ReadError {
    ReadError::Format(format!("the QCOW2 image is not usable: {msg}"))
}

/// What sits at a file offset the reader has yet to reach.
#[derive(Debug, Clone, Copy)]
enum Item {
    L1,
    L2(u64),
    Data(u64),
}

/// A QCOW2 being read in file order: every table must come before what it points to (as
/// `qemu-img convert` and `qemu-img create` + sequential writes lay it out), and data
/// clusters must be stored in guest order. Refused: compressed clusters, encryption, a backing
/// file, an external data file, extended L2 entries, a corrupt flag.
pub struct Qcow2Reader {
    pub vsize: u64,
    cluster: u64,
    l1_size: u64,
    l1_offset: u64,
}

impl Qcow2Reader {
    /// Reads and checks the header (the first cluster is not needed beyond it).
    pub fn open<R: std::io::Read>(r: &mut Counted<R>) -> Result<Self, ReadError> {
        let mut h = [0u8; 104];
        r.read_exact_at_pos(&mut h[..72], "QCOW2")?;
        if &h[..4] != MAGIC {
            return Err(bad("no QCOW2 magic"));
        }
        let version = be32(&h, 4);
        if version == 3 {
            r.read_exact_at_pos(&mut h[72..104], "QCOW2")?;
        } else if version != 2 {
            return Err(bad(format!("version {version}")));
        }
        if be64(&h, 8) != 0 {
            return Err(bad(
                "it has a backing file: its contents depend on another image; flatten it \
                 first (`qemu-img convert`)",
            ));
        }
        let bits = be32(&h, 20);
        if !(9..=21).contains(&bits) {
            return Err(bad(format!("cluster bits {bits}")));
        }
        if be32(&h, 32) != 0 {
            return Err(bad("it is encrypted"));
        }
        let incompatible = be64(&h, 72);
        // Bit 0 (dirty: refcounts may be stale) does not affect the data read here; bit 3
        // (compression type) only matters for compressed clusters, which are refused.
        if incompatible & !0b1001 != 0 {
            return Err(bad(format!(
                "incompatible features {incompatible:#x} (corrupt, external data file or \
                 extended L2 entries)"
            )));
        }
        let vsize = be64(&h, 24);
        let cluster = 1u64 << bits;
        let l1_size = be32(&h, 36) as u64;
        if vsize > 1 << 50 || l1_size * (cluster / 8) * cluster < vsize || l1_size > 1 << 22 {
            return Err(bad(format!(
                "an L1 table of {l1_size} entries for {vsize} bytes"
            )));
        }
        Ok(Self {
            vsize,
            cluster,
            l1_size,
            l1_offset: be64(&h, 40),
        })
    }

    /// Reads the rest in file order, handing the guest's clusters to `sink` in guest order.
    pub fn read<R: std::io::Read>(
        &self,
        r: &mut Counted<R>,
        sink: &mut impl RawSink,
    ) -> Result<(), ReadError> {
        let cs = self.cluster;
        let per_l2 = cs / 8;
        let mut todo: BTreeMap<u64, Item> = BTreeMap::new();
        let add = |todo: &mut BTreeMap<u64, Item>, pos: u64, at: u64, item: Item| {
            if at < pos || !at.is_multiple_of(512) {
                return Err(bad(format!(
                    "{item:?} at offset {at} comes before the table that points to it \
                     (read up to {pos}): it cannot be read in one pass; convert it with \
                     `qemu-img convert` first"
                )));
            }
            if todo.insert(at, item).is_some() {
                return Err(bad(format!("two tables or clusters at offset {at}")));
            }
            Ok(())
        };
        add(&mut todo, r.pos, self.l1_offset, Item::L1)?;
        let mut buf = vec![0u8; cs as usize];
        let mut emitted = 0u64;
        while let Some((at, item)) = todo.pop_first() {
            r.skip_to(at, "QCOW2")?;
            match item {
                Item::L1 => {
                    let mut l1 = vec![0u8; (self.l1_size * 8) as usize];
                    r.read_exact_at_pos(&mut l1, "QCOW2")?;
                    for i in 0..self.l1_size {
                        let off = be64(&l1, (i * 8) as usize) & OFFSET_MASK;
                        if off != 0 {
                            add(&mut todo, r.pos, off, Item::L2(i))?;
                        }
                    }
                }
                Item::L2(i) => {
                    r.read_exact_at_pos(&mut buf, "QCOW2")?;
                    for j in 0..per_l2 {
                        let g = i * per_l2 + j;
                        if g * cs >= self.vsize {
                            break;
                        }
                        let e = be64(&buf, (j * 8) as usize);
                        if e & COMPRESSED != 0 {
                            return Err(bad(format!(
                                "guest cluster {g} is compressed; decompress the image first \
                                 (`qemu-img convert -O qcow2` without -c)"
                            )));
                        }
                        let off = e & OFFSET_MASK;
                        // Bit 0: the cluster reads as zeros whatever is stored.
                        if off != 0 && e & 1 == 0 {
                            add(&mut todo, r.pos, off, Item::Data(g))?;
                        }
                    }
                }
                Item::Data(g) => {
                    let start = g * cs;
                    if start < emitted {
                        return Err(bad(format!(
                            "its data clusters are not stored in guest order (cluster {g} at \
                             offset {at}); convert it with `qemu-img convert` first"
                        )));
                    }
                    let keep = cs.min(self.vsize - start) as usize;
                    if todo.is_empty() {
                        // The file may end inside its last cluster (qemu writes what the guest
                        // wrote): the rest reads as zeros.
                        let n = r.read_up_to(&mut buf, "QCOW2")?;
                        buf[n..].fill(0);
                    } else {
                        r.read_exact_at_pos(&mut buf, "QCOW2")?;
                    }
                    sink.zeros(start - emitted)?;
                    sink.data(&buf[..keep])?;
                    emitted = start + keep as u64;
                }
            }
        }
        sink.zeros(self.vsize - emitted)?;
        Ok(())
    }
}

#[cfg(test)]
mod read_tests {
    use super::super::vmdk::tests::Collect;
    use super::super::{testutil::write_all, Container};
    use super::*;

    #[test]
    fn what_is_written_reads_back() {
        // The relay's own layout puts L2 tables after the data: not one-pass readable.
        let q = Qcow2::plan(1 << 20, 1 << 20, 0).unwrap();
        let mut raw = vec![0u8; 1 << 20];
        raw[70_000] = 3;
        let img = write_all(&Container::Qcow2(q), &raw);
        let mut r = Counted::new(&img[..]);
        let rd = Qcow2Reader::open(&mut r).unwrap();
        let e = rd.read(&mut r, &mut Collect::default()).unwrap_err();
        assert!(
            matches!(&e, ReadError::Format(m) if m.contains("one pass")),
            "{e:?}"
        );
    }
}
