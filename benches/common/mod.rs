//! What the benches share: the simulators' one account and its buckets, a median, a child's
//! peak RSS, and the pieces of a synthetic `.raw.tar.gz` (incompressible noise, deflate in
//! independently flushed blocks). Each bench uses a part of it.
#![allow(dead_code)]

use flate2::{Compress, FlushCompress};
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
