//! The simulator's own CRC-64/XZ (what OSS reports in `x-oss-hash-crc64ecma`) and `combine`.
//!
//! Guarantees: [`checksum`] / [`Crc64`] compute CRC-64/XZ (reflected ECMA-182, init and
//! xorout all ones; check value of `"123456789"` = `0x995DC9BBDF1939FA`); [`combine`] returns
//! the CRC of `A ‖ B` from `CRC(A)`, `CRC(B)` and `len(B)` without reading any data.
//!
//! Shares no code with the client (`ossrelay`'s `crc64.rs`) on purpose: the simulator is the
//! other side of the wire, so a bug in the client's checksum code must not be able to agree
//! with itself here. The raw CRC comes from a different crate (`crc-fast`, SIMD carry-less
//! multiply folding, instead of the client's `crc64fast`; the unit tests check it against a
//! third, table-driven implementation, the `crc` crate), and `combine` uses a different
//! method: zlib's GF(2) *matrix* form (the operator "feed one zero byte" as a 64×64 bit
//! matrix, its 2^k-th powers precomputed by squaring, then one matrix-vector product per set
//! bit of `len(B)`), where the client multiplies by `x^(8n) mod P` as a polynomial.

use std::sync::OnceLock;

use crc_fast::CrcAlgorithm;

/// Reflected ECMA-182 polynomial (bit 63 is x^0).
const POLY_REFLECTED: u64 = 0xC96C_5795_D787_0F42;

/// Incremental CRC-64/XZ hasher.
#[derive(Clone)]
pub struct Crc64 {
    digest: crc_fast::Digest,
    len: u64,
}

impl Default for Crc64 {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Crc64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crc64")
            .field("crc", &self.sum())
            .field("len", &self.len)
            .finish()
    }
}

impl Crc64 {
    pub fn new() -> Self {
        Self {
            digest: crc_fast::Digest::new(CrcAlgorithm::Crc64Xz),
            len: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.digest.update(data);
        self.len += data.len() as u64;
    }

    /// The CRC of everything fed so far.
    pub fn sum(&self) -> u64 {
        self.digest.finalize()
    }

    /// Number of bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// CRC-64/XZ of `data` in one call.
pub fn checksum(data: &[u8]) -> u64 {
    crc_fast::checksum(CrcAlgorithm::Crc64Xz, data)
}

/// A 64×64 matrix over GF(2): `m[i]` is the image of the vector with only bit `i` set.
type Matrix = [u64; 64];

/// `m · v` over GF(2).
fn times(m: &Matrix, mut v: u64) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while v != 0 {
        if v & 1 != 0 {
            sum ^= m[i];
        }
        v >>= 1;
        i += 1;
    }
    sum
}

/// `m · m`.
fn square(m: &Matrix) -> Matrix {
    let mut out = [0u64; 64];
    for (i, o) in out.iter_mut().enumerate() {
        *o = times(m, m[i]);
    }
    out
}

/// `POWERS[k]` advances a CRC-64/XZ register over `2^k` zero bytes (k = 0..63).
fn powers() -> &'static [Matrix; 64] {
    static POWERS: OnceLock<Box<[Matrix; 64]>> = OnceLock::new();
    POWERS.get_or_init(|| zero_byte_powers(POLY_REFLECTED))
}

/// The zero-byte operator of the reflected polynomial `poly` and its `2^k`-th powers: the
/// same construction serves every reflected CRC-64 with init = xorout = all ones (XZ, NVME).
fn zero_byte_powers(poly: u64) -> Box<[Matrix; 64]> {
    // One zero *bit* through the reflected register: shift right, fold in P if bit 0 was set.
    let mut bit: Matrix = [0; 64];
    bit[0] = poly;
    for (i, row) in bit.iter_mut().enumerate().skip(1) {
        *row = 1u64 << (i - 1);
    }
    // Three squarings: 2, 4, 8 zero bits = one zero byte.
    let mut m = square(&square(&square(&bit)));
    let mut out = Box::new([[0u64; 64]; 64]);
    for slot in out.iter_mut() {
        *slot = m;
        m = square(&m);
    }
    out
}

/// The register after `len` zero bytes, starting from `reg`.
fn advance(reg: u64, len: u64) -> u64 {
    advance_with(powers(), reg, len)
}

fn advance_with(p: &[Matrix; 64], mut reg: u64, len: u64) -> u64 {
    let mut rest = len;
    let mut k = 0;
    while rest != 0 {
        if rest & 1 != 0 {
            reg = times(&p[k], reg);
        }
        rest >>= 1;
        k += 1;
    }
    reg
}

/// CRC-64/XZ of `A ‖ B` from `crc1 = CRC(A)`, `crc2 = CRC(B)` and `len2 = len(B)`.
///
/// Init and xorout cancel out (both all ones, as in zlib's CRC-32), so only `crc1` needs to be
/// carried over `len2` zero bytes.
pub fn combine(crc1: u64, crc2: u64, len2: u64) -> u64 {
    advance(crc1, len2) ^ crc2
}

/// Folds `(crc, len)` pieces, in order, into the CRC of their concatenation.
pub fn combine_all<I: IntoIterator<Item = (u64, u64)>>(pieces: I) -> u64 {
    pieces
        .into_iter()
        .fold(0u64, |acc, (crc, len)| combine(acc, crc, len))
}

/// CRC-64/XZ of `len` zero bytes in O(log len): the all-ones initial register carried over
/// `len` zero bytes, then the final xor.
pub fn zeros(len: u64) -> u64 {
    !advance(!0u64, len)
}

/// CRC-64/NVME (what S3 calls `crc64nvme`; reflected polynomial `0x9A6C9329AC4BC9B5`, init
/// and xorout all ones, check value of `"123456789"` = `0xAE8B14860A799888`): the raw CRC
/// from crc-fast, `combine` from the same GF(2) matrix construction as CRC-64/XZ above with
/// the NVME polynomial, so S3's FULL_OBJECT checksum of a multipart object is folded from the
/// parts' values without reading their bytes.
pub mod nvme {
    use std::sync::OnceLock;

    use crc_fast::CrcAlgorithm;

    use super::{advance_with, zero_byte_powers, Matrix};

    /// Reflected CRC-64/NVME polynomial (normal form `0xAD93D23594C93659`).
    const POLY_REFLECTED: u64 = 0x9A6C_9329_AC4B_C9B5;

    fn powers() -> &'static [Matrix; 64] {
        static POWERS: OnceLock<Box<[Matrix; 64]>> = OnceLock::new();
        POWERS.get_or_init(|| zero_byte_powers(POLY_REFLECTED))
    }

    /// Incremental CRC-64/NVME hasher.
    #[derive(Clone)]
    pub struct Nvme {
        digest: crc_fast::Digest,
    }

    impl Default for Nvme {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Nvme {
        pub fn new() -> Self {
            Self {
                digest: crc_fast::Digest::new(CrcAlgorithm::Crc64Nvme),
            }
        }
        pub fn update(&mut self, data: &[u8]) {
            self.digest.update(data);
        }
        pub fn sum(&self) -> u64 {
            self.digest.finalize()
        }
    }

    /// CRC-64/NVME of `data` in one call.
    pub fn checksum(data: &[u8]) -> u64 {
        crc_fast::checksum(CrcAlgorithm::Crc64Nvme, data)
    }

    /// CRC-64/NVME of `A ‖ B` from `CRC(A)`, `CRC(B)` and `len(B)`.
    pub fn combine(crc1: u64, crc2: u64, len2: u64) -> u64 {
        advance_with(powers(), crc1, len2) ^ crc2
    }

    /// Folds `(crc, len)` pieces, in order, into the CRC of their concatenation.
    pub fn combine_all<I: IntoIterator<Item = (u64, u64)>>(pieces: I) -> u64 {
        pieces
            .into_iter()
            .fold(0u64, |acc, (crc, len)| combine(acc, crc, len))
    }

    /// CRC-64/NVME of `len` zero bytes in O(log len).
    pub fn zeros(len: u64) -> u64 {
        !advance_with(powers(), !0u64, len)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use proptest::prelude::*;

        fn reference(data: &[u8]) -> u64 {
            crc::Crc::<u64>::new(&crc::CRC_64_NVME).checksum(data)
        }

        #[test]
        fn published_check_values() {
            assert_eq!(checksum(b"123456789"), 0xAE8B_1486_0A79_9888);
            assert_eq!(checksum(b"hello world!"), 0xD916_0D1F_A8E4_18E3);
            assert_eq!(checksum(b""), 0);
            let mut c = Nvme::new();
            c.update(b"12345");
            c.update(b"6789");
            assert_eq!(c.sum(), 0xAE8B_1486_0A79_9888);
            assert_eq!(reference(b"123456789"), 0xAE8B_1486_0A79_9888);
        }

        #[test]
        fn zeros_and_long_runs() {
            for n in [0usize, 1, 8, 4097, (1 << 20) + 3] {
                assert_eq!(zeros(n as u64), reference(&vec![0u8; n]), "{n} zeros");
            }
            let a = checksum(b"prefix");
            let mut buf = b"prefix".to_vec();
            buf.resize(6 + (3 << 20), 0);
            assert_eq!(combine(a, zeros(3 << 20), 3 << 20), reference(&buf));
        }

        proptest! {
            #[test]
            fn simd_equals_reference(data in proptest::collection::vec(any::<u8>(), 0..5000)) {
                prop_assert_eq!(checksum(&data), reference(&data));
            }

            #[test]
            fn combine_all_equals_whole_buffer(pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..700), 0..8)) {
                let whole: Vec<u8> = pieces.concat();
                let folded = combine_all(pieces.iter().map(|p| (reference(p), p.len() as u64)));
                prop_assert_eq!(folded, reference(&whole));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn published_check_value() {
        assert_eq!(checksum(b"123456789"), 0x995D_C9BB_DF19_39FA);
        let mut c = Crc64::new();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.sum(), 0x995D_C9BB_DF19_39FA);
        assert_eq!(c.len(), 9);
        assert_eq!(checksum(b""), 0);
    }

    /// The `crc` crate's table-driven CRC-64/XZ: an implementation independent of crc-fast.
    fn reference(data: &[u8]) -> u64 {
        crc::Crc::<u64>::new(&crc::CRC_64_XZ).checksum(data)
    }

    #[test]
    fn simd_matches_table_reference() {
        // Lengths around the SIMD block sizes (16, 64, 128, 256 bytes) and their tails.
        let data: Vec<u8> = (0..70_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for n in (0..600).chain([4095, 4096, 4097, 65_535, 65_536, 70_000]) {
            assert_eq!(checksum(&data[..n]), reference(&data[..n]), "{n} bytes");
        }
    }

    #[test]
    fn zeros_matches_hashing_zeros() {
        for n in [
            0usize,
            1,
            2,
            7,
            8,
            63,
            64,
            4095,
            4096,
            4097,
            1 << 20,
            (1 << 20) + 3,
        ] {
            assert_eq!(zeros(n as u64), checksum(&vec![0u8; n]), "{n} zero bytes");
        }
    }

    #[test]
    fn combine_edge_cases() {
        let a = checksum(b"hello ");
        assert_eq!(combine(a, 0, 0), a, "empty B");
        assert_eq!(combine(0, a, 6), a, "empty A");
        assert_eq!(combine(a, checksum(b"world"), 5), checksum(b"hello world"));
        assert_eq!(combine_all([]), 0);
    }

    proptest! {
        #[test]
        fn combine_equals_whole_buffer(data in proptest::collection::vec(any::<u8>(), 0..3000), cut in any::<prop::sample::Index>()) {
            let k = cut.index(data.len() + 1);
            let (a, b) = data.split_at(k);
            prop_assert_eq!(combine(checksum(a), checksum(b), b.len() as u64), checksum(&data));
        }

        #[test]
        fn combine_all_equals_whole_buffer(pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..700), 0..8)) {
            let whole: Vec<u8> = pieces.concat();
            let folded = combine_all(pieces.iter().map(|p| (checksum(p), p.len() as u64)));
            prop_assert_eq!(folded, checksum(&whole));
        }

        #[test]
        fn simd_equals_reference(data in proptest::collection::vec(any::<u8>(), 0..5000)) {
            prop_assert_eq!(checksum(&data), reference(&data));
        }

        #[test]
        fn incremental_equals_one_shot(data in proptest::collection::vec(any::<u8>(), 0..5000), cut in any::<prop::sample::Index>()) {
            let k = cut.index(data.len() + 1);
            let mut c = Crc64::new();
            c.update(&data[..k]);
            c.update(&data[k..]);
            prop_assert_eq!(c.sum(), checksum(&data));
        }
    }

    #[test]
    fn combine_over_long_zero_runs() {
        // Lengths with high bits set exercise the large powers: CRC(A ‖ 0^n) both ways.
        let a = checksum(b"prefix");
        for n in [1u64 << 20, (1 << 33) + 12345] {
            assert_eq!(
                combine(a, zeros(n), n),
                combine_all([(a, 6), (zeros(n), n)])
            );
        }
        let n = 3 << 20;
        let mut buf = b"prefix".to_vec();
        buf.resize(6 + n, 0);
        assert_eq!(combine(a, zeros(n as u64), n as u64), checksum(&buf));
    }
}
