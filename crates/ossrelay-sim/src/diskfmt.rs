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
