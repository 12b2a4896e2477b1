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

/// `a * b mod P` over GF(2), both reflected (bit 63 is x^0), for the reflected polynomial
/// `poly`. Shared with CRC-64/NVME ([`super::nvme`]): only the polynomial differs.
pub(super) const fn mul_mod(a: u64, mut b: u64, poly: u64) -> u64 {
    let mut m = 1u64 << 63;
    let mut p = 0u64;
    while m != 0 && a & (m | (m - 1)) != 0 {
        if a & m != 0 {
            p ^= b;
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ poly } else { b >> 1 };
    }
    p
}

const fn mul_mod_p(a: u64, b: u64) -> u64 {
    mul_mod(a, b, POLY_REFLECTED)
}

/// `x^(2^k) mod P` for every k that [`shift_of`] can reach (3 + 64 bits of a length).
pub(super) const fn powers_of_x(poly: u64) -> [u64; 67] {
    let mut t = [0u64; 67];
    let mut p = 1u64 << 62; // x^1
    let mut k = 0;
    while k < 67 {
        t[k] = p;
        p = mul_mod(p, p, poly);
        k += 1;
    }
    t
}

const X2N: [u64; 67] = powers_of_x(POLY_REFLECTED);

/// `x^(8·len) mod P` for the polynomial whose [`powers_of_x`] are `x2n`: the operator that
/// shifts a CRC past `len` bytes.
pub(super) const fn shift_by(len: u64, x2n: &[u64; 67], poly: u64) -> u64 {
    let mut n = len;
    let mut k = 3; // 2^3 bits per byte
    let mut p = 1u64 << 63; // x^0
    while n != 0 {
        if n & 1 != 0 {
            p = mul_mod(x2n[k], p, poly);
        }
        n >>= 1;
        k += 1;
    }
    p
}

const fn shift_of(len: u64) -> u64 {
    shift_by(len, &X2N, POLY_REFLECTED)
}

/// CRC(A‖B) from `crc1` = CRC(A), `crc2` = CRC(B) and `len2` = |B|: CRC(A) is shifted past
/// `len2` bytes by multiplying with x^(8·len2) mod P (O(log len2) products, no matrices).
pub fn combine(crc1: u64, crc2: u64, len2: u64) -> u64 {
    mul_mod_p(shift_of(len2), crc1) ^ crc2
}

/// [`combine`] for one fixed length, with the shift operator computed once: folding many
/// equal-sized pieces costs one product each.
#[derive(Debug, Clone, Copy)]
pub struct Combiner {
    len: u64,
    shift: u64,
}

impl Default for Combiner {
    /// Appends nothing.
    fn default() -> Self {
        Self::new(0)
    }
}

impl Combiner {
    pub fn new(len: u64) -> Self {
        Self {
            len,
            shift: shift_of(len),
        }
    }

    /// Length of the pieces this combiner appends.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// CRC(A‖B) for CRC(A) = `crc1`, CRC(B) = `crc2`, |B| = `self.len()`.
    pub fn combine(&self, crc1: u64, crc2: u64) -> u64 {
        mul_mod_p(self.shift, crc1) ^ crc2
    }
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
    let mut piece = checksum(&ZERO_BLOCK);
    let mut piece_len = BLOCK as u64;
    let mut rest = len;
    let tail = rest % BLOCK as u64;
    rest /= BLOCK as u64;
    while rest > 0 {
        if rest & 1 != 0 {
            acc = combine(acc, piece, piece_len);
        }
        piece = combine(piece, piece, piece_len);
        piece_len *= 2;
        rest >>= 1;
    }
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

    #[test]
    fn combiner_folds_equal_pieces_like_combine() {
        let pieces: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i.wrapping_mul(37); 4096]).collect();
        let k = Combiner::new(4096);
        let mut acc = 0u64;
        let mut whole = Vec::new();
        for p in &pieces {
            acc = k.combine(acc, checksum(p));
            whole.extend_from_slice(p);
        }
        assert_eq!(acc, checksum(&whole));
        // Shifting past a then b bytes is shifting past a + b: lengths with high bits set
        // check the top of the table of powers.
        let shift = |crc, len| Combiner::new(len).combine(crc, 0);
        for (a, b) in [
            (1u64 << 63, u64::MAX >> 1),
            (1 << 62, 1 << 62),
            ((1 << 40) + 3, 12345),
        ] {
            let c = 0x0123_4567_89ab_cdef;
            assert_eq!(shift(shift(c, a), b), shift(c, a + b), "{a} + {b}");
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
