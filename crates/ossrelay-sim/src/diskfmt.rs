//! Disk image formats as the simulated clouds' import services inspect them (leaf): magic
//! numbers, the VHD footer, and one pass over an object yielding its first and last sector and
//! its CRC-64s. Shared by the ECS and EC2 imports so both judge a file the same way.

use futures::StreamExt;

use crate::crc64;
use crate::store::{self, Content};

pub(crate) fn qcow2(head: &[u8]) -> bool {
    head.starts_with(b"QFI\xfb")
}

pub(crate) fn vmdk(head: &[u8]) -> bool {
    head.starts_with(b"KDMV") || head.starts_with(b"# Disk DescriptorFile")
}

/// A VHD footer: `conectix` cookie, valid one's-complement checksum → `(current size, disk
/// type)` (2 = fixed, 3 = dynamic, 4 = differencing).
pub(crate) fn vhd_footer(tail: &[u8]) -> Option<(u64, u32)> {
    if tail.len() < 512 || !tail.starts_with(b"conectix") {
        return None;
    }
    let sum: u32 = tail
        .iter()
        .enumerate()
        .filter(|(i, _)| !(64..68).contains(i))
        .map(|(_, &b)| b as u32)
        .sum();
    let stored = u32::from_be_bytes(tail[64..68].try_into().ok()?);
    if !sum != stored {
        return None;
    }
    let current = u64::from_be_bytes(tail[48..56].try_into().ok()?);
    let disk_type = u32::from_be_bytes(tail[60..64].try_into().ok()?);
    Some((current, disk_type))
}

/// What one pass over an object found.
pub(crate) struct Scan {
    pub(crate) head: Vec<u8>,
    pub(crate) tail: Vec<u8>,
    /// CRC-64/XZ of the whole object.
    pub(crate) crc: u64,
    /// CRC-64/NVME of the whole object.
    pub(crate) nvme: u64,
}

/// The first and last 512 bytes and the CRC-64s of `[0, size)` of `content` (a synthetic
/// object's CRCs are known, so huge generated disks are not read).
pub(crate) async fn scan(content: &Content, size: u64) -> std::io::Result<Scan> {
    if let Content::Synthetic(syn) = content {
        if syn.size() == size {
            let grab = |a: u64, b: u64| {
                syn.chunks(a, b)
                    .flat_map(|c| c.to_vec())
                    .collect::<Vec<u8>>()
            };
            return Ok(Scan {
                head: grab(0, size.min(512)),
                tail: grab(size.saturating_sub(512), size),
                crc: syn.crc(),
                nvme: syn.nvme(),
            });
        }
    }
    let mut head = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    let mut all = crc64::Crc64::new();
    let mut nv = crc64::nvme::Nvme::new();
    let mut body = store::content_stream(content.clone(), 0, size);
    while let Some(c) = body.next().await {
        let c = c?;
        if head.len() < 512 {
            let take = (512 - head.len()).min(c.len());
            head.extend_from_slice(&c[..take]);
        }
        tail.extend_from_slice(&c[c.len().saturating_sub(512)..]);
        if tail.len() > 512 {
            tail.drain(..tail.len() - 512);
        }
        all.update(&c);
        nv.update(&c);
    }
    Ok(Scan {
        head,
        tail,
        crc: all.sum(),
        nvme: nv.sum(),
    })
}

/// `len` bytes of `content` from `start` (an error when the object ends before).
/// Offsets and lengths come from the image's own tables, i.e. from whoever uploaded it: an
/// end past `u64::MAX` or a read larger than any table or cluster an importer would accept
/// is refused before anything is allocated.
async fn read_at(content: &Content, start: u64, len: u64) -> Result<Vec<u8>, String> {
    const MAX_READ: u64 = 256 << 20;
    let end = start
        .checked_add(len)
        .filter(|_| len <= MAX_READ)
        .ok_or_else(|| {
            format!("the image's tables point outside it ({len} bytes at offset {start})")
        })?;
    let mut out = Vec::with_capacity(len as usize);
    let mut s = store::content_stream(content.clone(), start, end);
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.map_err(|e| e.to_string())?);
    }
    if out.len() as u64 != len {
        return Err(format!(
            "the image is truncated: {len} bytes at offset {start} are not all there"
        ));
    }
    Ok(out)
}

fn be32(b: &[u8], at: usize) -> u64 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes")) as u64
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The guest disk an importer sees in a QCOW2 object of `size` bytes: (virtual size,
/// CRC-64/XZ of every guest byte). Read the way an importer reads it (the simulator's own
/// reading of qemu's qcow2 specification, not the relay's): header, then each L1 entry's L2
/// table by offset, each cluster by offset; unallocated and zero-flagged clusters read as
/// zeros. Compressed clusters, encryption, backing and external data files are refused.
pub(crate) async fn qcow2_guest(content: &Content, size: u64) -> Result<(u64, u64), String> {
    const MASK: u64 = 0x00ff_ffff_ffff_fe00;
    let h = read_at(content, 0, 104.min(size)).await?;
    if h.len() < 72 || !qcow2(&h) {
        return Err("not a QCOW2 image (bad header magic)".into());
    }
    let version = be32(&h, 4);
    if version != 2 && version != 3 {
        return Err(format!("QCOW2 version {version} is not supported"));
    }
    if be64(&h, 8) != 0 {
        return Err("the QCOW2 image has a backing file".into());
    }
    let bits = be32(&h, 20);
    if !(9..=21).contains(&bits) {
        return Err(format!("QCOW2 cluster bits {bits} are invalid"));
    }
    if be32(&h, 32) != 0 {
        return Err("the QCOW2 image is encrypted".into());
    }
    if version == 3 && h.len() >= 80 && be64(&h, 72) & !0b1001 != 0 {
        return Err("the QCOW2 image uses incompatible features".into());
    }
    let cs = 1u64 << bits;
    let vsize = be64(&h, 24);
    let l1_size = be32(&h, 36);
    let per_l2 = cs / 8;
    if l1_size.saturating_mul(per_l2).saturating_mul(cs) < vsize {
        return Err("the QCOW2 L1 table does not cover the disk".into());
    }
    let l1 = read_at(content, be64(&h, 40), l1_size * 8).await?;
    let mut crc = 0u64;
    for i in 0..l1_size {
        let span = i * per_l2 * cs;
        if span >= vsize {
            break;
        }
        let span_len = (per_l2 * cs).min(vsize - span);
        let l2_off = be64(&l1, (i * 8) as usize) & MASK;
        if l2_off == 0 {
            crc = crc64::combine(crc, crc64::zeros(span_len), span_len);
            continue;
        }
        let l2 = read_at(content, l2_off, cs).await?;
        for j in 0..per_l2 {
            let g = span + j * cs;
            if g >= vsize {
                break;
            }
            let len = cs.min(vsize - g);
            let e = be64(&l2, (j * 8) as usize);
            if e & (1 << 62) != 0 {
                return Err("the QCOW2 image holds compressed clusters".into());
            }
            let off = e & MASK;
            let piece = if off == 0 || e & 1 != 0 {
                crc64::zeros(len)
            } else {
                crc64::checksum(&read_at(content, off, len).await?)
            };
            crc = crc64::combine(crc, piece, len);
        }
    }
    Ok((vsize, crc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhd_footer_checks() {
        let mut f = [0u8; 512];
        f[..8].copy_from_slice(b"conectix");
        f[48..56].copy_from_slice(&(1u64 << 20).to_be_bytes());
        f[60..64].copy_from_slice(&2u32.to_be_bytes());
        let sum: u32 = f.iter().map(|&b| b as u32).sum();
        f[64..68].copy_from_slice(&(!sum).to_be_bytes());
        assert_eq!(vhd_footer(&f), Some((1 << 20, 2)));
        f[70] ^= 1;
        assert_eq!(vhd_footer(&f), None);
        assert!(qcow2(b"QFI\xfb\0\0\0\x03"));
        assert!(vmdk(b"KDMV\x01\0\0\0") && !vmdk(b"\0\0\0\0"));
    }

    #[tokio::test]
    async fn scan_of_stored_bytes() {
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let content = Content::Stored(vec![store::Segment::Mem(
            std::sync::Arc::new(vec![bytes::Bytes::from(data.clone())]),
            data.len() as u64,
        )]);
        let s = scan(&content, 3000).await.unwrap();
        assert_eq!(s.head, &data[..512]);
        assert_eq!(s.tail, &data[3000 - 512..]);
        assert_eq!(s.crc, crc64::checksum(&data));
        assert_eq!(s.nvme, crc64::nvme::checksum(&data));
        let s = scan(&content, 1024).await.unwrap();
        assert_eq!(
            s.crc,
            crc64::checksum(&data[..1024]),
            "only [0, size) is read"
        );
    }
}
