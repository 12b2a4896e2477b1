//! CRC-64/XZ, the variant OSS reports in `x-oss-hash-crc64ecma`, and `combine`.
//!
//! `crc64fast` does the hashing (SIMD); `combine` joins independently computed CRCs so part
//! CRCs can be folded into the whole-object CRC without re-reading any data.

/// Reflected ECMA-182 polynomial (Go's `crc64.ECMA`).
const POLY_REFLECTED: u64 = 0xC96C_5795_D787_0F42;

/// Incremental CRC-64/XZ hasher.
#[derive(Clone)]
pub struct Crc64 {
    digest: crc64fast::Digest,
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
            digest: crc64fast::Digest::new(),
            len: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.digest.write(data);
        self.len += data.len() as u64;
    }

    /// The CRC of everything fed so far.
    pub fn sum(&self) -> u64 {
        self.digest.sum64()
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
    let mut c = Crc64::new();
    c.update(data);
    c.sum()
}

fn gf2_times(mat: &[u64; 64], mut vec: u64) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while vec != 0 {
        if vec & 1 != 0 {
            sum ^= mat[i];
        }
        vec >>= 1;
        i += 1;
    }
    sum
}

fn gf2_square(mat: &[u64; 64]) -> [u64; 64] {
    let mut sq = [0u64; 64];
    for (n, slot) in sq.iter_mut().enumerate() {
        *slot = gf2_times(mat, mat[n]);
    }
    sq
}

/// CRC(A‖B) from `crc1` = CRC(A), `crc2` = CRC(B) and `len2` = |B| (zlib's technique, 64-bit).
pub fn combine(mut crc1: u64, crc2: u64, mut len2: u64) -> u64 {
    if len2 == 0 {
        return crc1;
    }
    let mut odd = [0u64; 64];
    odd[0] = POLY_REFLECTED;
    for (n, slot) in odd.iter_mut().enumerate().skip(1) {
        *slot = 1u64 << (n - 1);
    }
    let mut even = gf2_square(&odd);
    odd = gf2_square(&even);
    loop {
        even = gf2_square(&odd);
        if len2 & 1 != 0 {
            crc1 = gf2_times(&even, crc1);
        }
        len2 >>= 1;
        if len2 == 0 {
            break;
        }
        odd = gf2_square(&even);
        if len2 & 1 != 0 {
            crc1 = gf2_times(&odd, crc1);
        }
        len2 >>= 1;
        if len2 == 0 {
            break;
        }
    }
    crc1 ^ crc2
}

/// Folds `(crc, len)` pieces, in order, into the CRC of their concatenation.
pub fn combine_all<I: IntoIterator<Item = (u64, u64)>>(pieces: I) -> u64 {
    pieces
        .into_iter()
        .fold(0u64, |acc, (crc, len)| combine(acc, crc, len))
}

/// CRC-64/XZ of `len` zero bytes, in O(log len) time (used for sparse synthetic content).
pub fn zeros(len: u64) -> u64 {
    // CRC of a block of zeros, doubled up with combine: CRC(Z_a‖Z_b) = combine(CRC(Z_a), CRC(Z_b), b).
    const BLOCK: usize = 4096;
    static ZERO_BLOCK: [u8; BLOCK] = [0u8; BLOCK];
    if len <= BLOCK as u64 {
        return checksum(&ZERO_BLOCK[..len as usize]);
    }
    let mut acc = 0u64;
    let mut acc_len = 0u64;
    let mut piece = checksum(&ZERO_BLOCK);
    let mut piece_len = BLOCK as u64;
    let mut rest = len;
    let tail = rest % BLOCK as u64;
    rest /= BLOCK as u64;
    while rest > 0 {
        if rest & 1 != 0 {
            acc = combine(acc, piece, piece_len);
            acc_len += piece_len;
        }
        piece = combine(piece, piece, piece_len);
        piece_len *= 2;
        rest >>= 1;
    }
    let _ = acc_len;
    combine(acc, checksum(&ZERO_BLOCK[..tail as usize]), tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn oracle(data: &[u8]) -> u64 {
        crc::Crc::<u64>::new(&crc::CRC_64_XZ).checksum(data)
    }

    #[test]
    fn check_values_from_reference() {
        assert_eq!(checksum(b""), 0);
        assert_eq!(checksum(b"123456789"), 11051210869376104954);
        assert_eq!(checksum(b"hello world!"), 9548687815775124833);
        assert_eq!(checksum(b"hello world"), 5981764153023615706);
        assert_eq!(checksum(b"12345"), 6748440630437108969);
        assert_eq!(checksum(b"6789"), 10278880121275185425);
        assert_eq!(checksum(&[b'a'; 1000]), 8507562387239917932);
        assert_eq!(checksum(&[0u8; 102400]), 15337097285471591505);
    }

    #[test]
    fn combine_vectors_from_reference() {
        assert_eq!(
            combine(6748440630437108969, 10278880121275185425, 4),
            11051210869376104954
        );
        let p1: Vec<u8> = (0..102400u32).map(|i| ((i * 7 + 3) % 256) as u8).collect();
        let p2: Vec<u8> = (0..102400u32).map(|i| ((i * 13 + 5) % 256) as u8).collect();
        let p3 = b"tail-part";
        assert_eq!(checksum(&p1), 1890614950568534879);
        assert_eq!(checksum(&p2), 1557356955467874828);
        assert_eq!(checksum(p3), 17248732669932203204);
        let all = combine(
            combine(checksum(&p1), checksum(&p2), 102400),
            checksum(p3),
            9,
        );
        assert_eq!(all, 2926754654779493585);
        assert_eq!(
            combine_all([
                (checksum(&p1), 102400),
                (checksum(&p2), 102400),
                (checksum(p3), 9)
            ]),
            all
        );
    }

    #[test]
    fn incremental_equals_one_shot() {
        let mut c = Crc64::new();
        c.update(b"12345");
        c.update(b"6789");
        assert_eq!(c.sum(), 11051210869376104954);
        assert_eq!(c.len(), 9);
    }

    #[test]
    fn zeros_matches_hashing() {
        for len in [0u64, 1, 511, 4096, 4097, 10_000, 1 << 20, (1 << 20) + 77] {
            assert_eq!(zeros(len), checksum(&vec![0u8; len as usize]), "len {len}");
        }
    }

    proptest! {
        #[test]
        fn crc_matches_oracle(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            prop_assert_eq!(checksum(&data), oracle(&data));
        }

        #[test]
        fn combine_matches_oracle(
            a in proptest::collection::vec(any::<u8>(), 0..2048),
            b in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let mut ab = a.clone();
            ab.extend_from_slice(&b);
            prop_assert_eq!(combine(oracle(&a), oracle(&b), b.len() as u64), oracle(&ab));
            prop_assert_eq!(combine(0, oracle(&b), b.len() as u64), oracle(&b));
        }
    }
}
