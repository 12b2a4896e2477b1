//! What the benches share: the simulators' one account and its buckets, a median, a child's
//! peak RSS, and a synthetic `.raw.tar.gz` disk (incompressible noise among zeros, deflated in
//! independently flushed blocks). Each bench uses a part of it.
#![allow(dead_code)]

use flate2::{Compress, Compression, Crc, FlushCompress};
use ossrelay::transfer::tar;
use ossrelay_sim::{SimAccount, SimBucket};

/// The simulator account every bench signs with (`simak` / `simsecret`).
pub fn account() -> SimAccount {
    SimAccount {
        name: "sim".into(),
        access_key_id: "simak".into(),
        access_key_secret: "simsecret".into(),
    }
}

/// The median (the mean of the middle two for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Buckets of [`account`] with these names.
pub fn buckets(names: &[&str]) -> Vec<SimBucket> {
    names
        .iter()
        .map(|n| SimBucket {
            name: n.to_string(),
            account: account().name,
        })
        .collect()
}

/// The peak RSS (`VmHWM`) of process `pid` so far, KiB; 0 once it is gone. Not the child's
/// `ru_maxrss`, which can report the spawning process's high-water mark instead.
pub fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmHWM:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// `data` deflated (raw deflate, no header) with `flush` at its end.
pub fn deflate(c: &mut Compress, data: &[u8], flush: FlushCompress) -> Vec<u8> {
    let mut out = Vec::new();
    let start_in = c.total_in();
    loop {
        out.reserve(256 * 1024);
        let consumed = (c.total_in() - start_in) as usize;
        c.compress_vec(&data[consumed..], &mut out, flush).unwrap();
        let consumed = (c.total_in() - start_in) as usize;
        if consumed == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    out
}

/// `len` incompressible bytes (xorshift64 from `seed`).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// A gzip'd GNU tar with one `raw_mib` MiB member standing for a disk: MiB `i` is
/// incompressible when `i % every == phase` (one of `pool` distinct noise blocks), zeros
/// otherwise. Built from independently deflated 1 MiB blocks (full flushes), so tens of GiB
/// of RAW take seconds; the decoder sees an ordinary gzip stream. Returns the archive and
/// the bytes of incompressible data in it.
pub fn disk_archive(name: &str, raw_mib: u64, every: u64, phase: u64, pool: u64) -> (Vec<u8>, u64) {
    const MIB: u64 = 1 << 20;
    let size = raw_mib * MIB;
    let header = tar::gnu_header(name, size, b'0');
    let mut c = Compress::new(Compression::fast(), false);
    let mut crc = Crc::new();
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    out.extend(deflate(&mut c, &header, FlushCompress::Full));
    crc.update(&header);
    let zeros = vec![0u8; MIB as usize];
    let zero_block = deflate(&mut c, &zeros, FlushCompress::Full);
    let mut zero_crc = Crc::new();
    zero_crc.update(&zeros);
    let blocks: Vec<(Vec<u8>, Crc)> = (0..pool)
        .map(|i| {
            let data = noise(MIB as usize, i + 1);
            let mut k = Crc::new();
            k.update(&data);
            (deflate(&mut c, &data, FlushCompress::Full), k)
        })
        .collect();
    let mut data = 0;
    for i in 0..raw_mib {
        if i % every == phase {
            let (block, k) = &blocks[(i / every % pool) as usize];
            out.extend_from_slice(block);
            crc.combine(k);
            data += MIB;
        } else {
            out.extend_from_slice(&zero_block);
            crc.combine(&zero_crc);
        }
    }
    let tail = vec![0u8; 1024];
    out.extend(deflate(&mut c, &tail, FlushCompress::Finish));
    crc.update(&tail);
    let total = 512 + size + 1024;
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(total as u32).to_le_bytes());
    (out, data)
}
