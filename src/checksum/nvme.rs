//! CRC-64/NVME, the variant S3 stores as `x-amz-checksum-crc64nvme`, and `combine`.
//!
//! It is a different polynomial from OSS's CRC-64/XZ, so neither can be converted into the
//! other: a copy that must be proven to both clouds computes both over the same bytes (see
//! [`super::MultiDigest`]). `crc-fast` does the hashing (VPCLMULQDQ/AVX-512 or PCLMULQDQ,
//! chosen at run time: the second CRC of a cross-cloud copy must cost little); the combine is
//! the same GF(2) arithmetic as [`super::crc64`] with the NVME polynomial.

use super::crc64::{mul_mod, powers_of_x, shift_by};

/// Reflected polynomial of CRC-64/NVME (normal form 0xAD93D23594C93659).
const POLY_REFLECTED: u64 = 0x9A6C_9329_AC4B_C9B5;

const X2N: [u64; 67] = powers_of_x(POLY_REFLECTED);

/// Incremental CRC-64/NVME hasher.
#[derive(Clone)]
pub struct Crc64Nvme {
    digest: crc_fast::Digest,
}

impl Default for Crc64Nvme {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Crc64Nvme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crc64Nvme")
            .field("crc", &self.sum())
            .finish()
    }
}

impl Crc64Nvme {
    pub fn new() -> Self {
        Self {
            digest: crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64Nvme),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.digest.update(data);
    }

    /// The CRC of everything fed so far.
    pub fn sum(&self) -> u64 {
        self.digest.finalize()
    }
}

/// CRC-64/NVME of `data` in one call.
pub fn checksum(data: &[u8]) -> u64 {
    let mut c = Crc64Nvme::new();
    c.update(data);
    c.sum()
}

/// CRC(A‖B) from CRC(A), CRC(B) and |B|, as [`super::crc64::combine`] does for CRC-64/XZ.
pub fn combine(crc1: u64, crc2: u64, len2: u64) -> u64 {
    mul_mod(shift_by(len2, &X2N, POLY_REFLECTED), crc1, POLY_REFLECTED) ^ crc2
}

/// Folds `(crc, len)` pieces, in order, into the CRC of their concatenation.
pub fn combine_all<I: IntoIterator<Item = (u64, u64)>>(pieces: I) -> u64 {
    pieces
        .into_iter()
        .fold(0u64, |acc, (crc, len)| combine(acc, crc, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A table-driven CRC-64/NVME from the `crc` crate's catalogue: an oracle that shares no
    /// code with `crc-fast`.
    fn oracle(data: &[u8]) -> u64 {
        crc::Crc::<u64>::new(&crc::CRC_64_NVME).checksum(data)
    }

    #[test]
    fn check_values_from_reference() {
        // s3-protocol.md §7: check("123456789"), "hello world!", empty input.
        assert_eq!(checksum(b"123456789"), 0xAE8B_1486_0A79_9888);
        assert_eq!(checksum(b"hello world!"), 0xD916_0D1F_A8E4_18E3);
        assert_eq!(checksum(b""), 0);
        assert_eq!(oracle(b"123456789"), 0xAE8B_1486_0A79_9888);
    }

    /// Long inputs take crc-fast's widest SIMD path (VPCLMULQDQ where the CPU has it), which
    /// short proptest inputs never reach: checked against the table-driven oracle, whole and
    /// fed in odd pieces.
    #[test]
    fn long_inputs_match_oracle_whole_and_in_pieces() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let data: Vec<u8> = (0..(3 << 20) + 77)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let want = oracle(&data);
        assert_eq!(checksum(&data), want);
        let mut c = Crc64Nvme::new();
        for piece in data.chunks(65_537) {
            c.update(piece);
        }
        assert_eq!(c.sum(), want);
    }

    #[test]
    fn combine_joins_parts() {
        assert_eq!(
            combine(checksum(b"12345"), checksum(b"6789"), 4),
            0xAE8B_1486_0A79_9888
        );
        let a = vec![7u8; 5 << 20];
        let b = b"tail";
        let mut ab = a.clone();
        ab.extend_from_slice(b);
        assert_eq!(
            combine_all([(checksum(&a), a.len() as u64), (checksum(b), 4)]),
            checksum(&ab)
        );
    }

    proptest! {
        #[test]
        fn crc_and_combine_match_oracle(
            a in proptest::collection::vec(any::<u8>(), 0..2048),
            b in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let mut ab = a.clone();
            ab.extend_from_slice(&b);
            prop_assert_eq!(checksum(&ab), oracle(&ab));
            prop_assert_eq!(combine(oracle(&a), oracle(&b), b.len() as u64), oracle(&ab));
        }
    }
}
