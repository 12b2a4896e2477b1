//! What proves a copy, and the record of which proofs held (`verified_by`).
//!
//! Guarantees callers can rely on:
//! * Every range the relay moves is hashed with CRC-64/XZ, the relay's own record (state
//!   files, resume, locating corrupted parts). A side that speaks another checksum adds it to
//!   the same pass ([`digest_for`]): CRC-64/NVME for S3, MD5 for S3-compatible stores that
//!   prove parts only by their ETag. CRCs of different polynomials cannot be converted into
//!   each other, so computing both over the same bytes is the only way to prove one copy to
//!   two clouds.
//! * A checksum a store reports is only ever compared with ours of the same algorithm
//!   ([`compare`]); a mismatch is an error, never a warning.
//! * [`ProofLog`] records each kind of proof that held, by the names the `--json` summary's
//!   `verified_by` uses: `source_crc64ecma`, `source_crc64nvme`, `part_crc64ecma`,
//!   `part_crc64nvme`, `part_md5`, `destination_crc64ecma`,
//!   `destination_full_object_crc64nvme`.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::checksum::{crc64, nvme, Algorithm, Checksum, Checksums, MultiDigest};
use crate::store::ObjectStore;

/// The algorithms every range of a copy from `src` to `dst` computes (see the module doc).
pub(crate) fn algorithms(src: &dyn ObjectStore, dst: &dyn ObjectStore) -> Vec<Algorithm> {
    let (s, d) = (src.checksums(), dst.checksums());
    let mut algs = vec![Algorithm::Crc64Xz];
    if s.reports(Algorithm::Crc64Nvme)
        || d.reports(Algorithm::Crc64Nvme)
        || d.verifies(Algorithm::Crc64Nvme)
    {
        algs.push(Algorithm::Crc64Nvme);
    }
    // MD5 costs several times a CRC: only for a destination that proves parts by nothing else.
    let dst_has_crc = [Algorithm::Crc64Xz, Algorithm::Crc64Nvme]
        .into_iter()
        .any(|a| d.reports(a));
    if d.reports(Algorithm::Md5) && !dst_has_crc {
        algs.push(Algorithm::Md5);
    }
    algs
}

/// A fresh digest of [`algorithms`].
pub(crate) fn digest_for(src: &dyn ObjectStore, dst: &dyn ObjectStore) -> MultiDigest {
    MultiDigest::new(algorithms(src, dst))
}

/// Compares what a store reports with what we computed, algorithm by algorithm. Returns the
/// algorithms that matched, or the first `(reported, ours)` pair that did not.
pub(crate) fn compare(
    reported: &Checksums,
    ours: &Checksums,
) -> Result<Vec<Algorithm>, (Checksum, Checksum)> {
    let mut matched = Vec::new();
    for r in reported.iter() {
        if let Some(o) = ours.get(r.algorithm()) {
            if o != r {
                return Err((r, o));
            }
            matched.push(r.algorithm());
        }
    }
    Ok(matched)
}

/// The whole object's checksums folded from its parts' `(checksums, len)`, for every
/// combinable algorithm that every part has (MD5 does not fold).
pub(crate) fn fold<'a, I>(parts: I) -> Checksums
where
    I: IntoIterator<Item = (&'a Checksums, u64)> + Clone,
{
    let mut out = Checksums::new();
    for alg in [Algorithm::Crc64Xz, Algorithm::Crc64Nvme] {
        let mut acc = Some(0u64);
        for (c, len) in parts.clone() {
            acc = match (acc, c.get(alg)) {
                (Some(a), Some(Checksum::Crc64Xz(v))) => Some(crc64::combine(a, v, len)),
                (Some(a), Some(Checksum::Crc64Nvme(v))) => Some(nvme::combine(a, v, len)),
                _ => None,
            };
        }
        if let Some(v) = acc {
            out.insert(match alg {
                Algorithm::Crc64Xz => Checksum::Crc64Xz(v),
                _ => Checksum::Crc64Nvme(v),
            });
        }
    }
    out
}

/// The first checksum the source reports that we also computed: what proves the bytes read
/// are the bytes the source holds.
pub(crate) fn source_claim(source: &Checksums, ours: &Checksums) -> Option<Checksum> {
    source.iter().find(|c| ours.get(c.algorithm()).is_some())
}

/// How a checksum is spelled in `verified_by`: the providers' own names.
fn wire_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::Crc64Xz => "crc64ecma",
        Algorithm::Crc64Nvme => "crc64nvme",
        Algorithm::Crc32c => "crc32c",
        Algorithm::Md5 => "md5",
    }
}

/// Which proofs held during one copy.
#[derive(Debug, Default)]
pub(crate) struct ProofLog(Mutex<BTreeSet<String>>);

impl ProofLog {
    fn add(&self, name: String) {
        self.0.lock().expect("proof log").insert(name);
    }

    /// Parts whose echoed checksums of `algs` equalled ours.
    pub fn parts(&self, algs: Vec<Algorithm>) {
        for a in algs {
            self.add(format!("part_{}", wire_name(a)));
        }
    }

    /// The source's whole-object checksum equalled ours.
    pub fn source(&self, alg: Algorithm) {
        self.add(format!("source_{}", wire_name(alg)));
    }

    /// The destination's whole-object checksum equalled ours (for S3's FULL_OBJECT
    /// CRC-64/NVME: the value CompleteMultipartUpload or HEAD returned).
    pub fn destination(&self, alg: Algorithm) {
        self.add(match alg {
            Algorithm::Crc64Nvme => "destination_full_object_crc64nvme".to_string(),
            a => format!("destination_{}", wire_name(a)),
        });
    }

    /// Everything recorded, sorted.
    pub fn list(&self) -> Vec<String> {
        self.0.lock().expect("proof log").iter().cloned().collect()
    }

    /// Whether the destination is proven to hold the bytes the relay read: a part or
    /// whole-object checksum of the destination's own matched ours. (A source checksum that
    /// did not match has already failed the copy; a source without one is read over a
    /// verified TLS connection or from the local disk.) False only when the destination
    /// reports and verifies nothing this copy computed.
    pub fn end_to_end(&self) -> bool {
        let l = self.0.lock().expect("proof log");
        l.iter()
            .any(|p| p.starts_with("destination_") || p.starts_with("part_"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_combines_each_algorithm_that_every_part_has() {
        let a = b"12345";
        let b = b"6789";
        let part = |d: &[u8]| {
            let mut m =
                MultiDigest::new([Algorithm::Crc64Xz, Algorithm::Crc64Nvme, Algorithm::Md5]);
            m.update(d);
            m.finish()
        };
        let (pa, pb) = (part(a), part(b));
        let whole = fold([(&pa, 5u64), (&pb, 4u64)]);
        assert_eq!(whole.crc64_xz(), Some(0x995D_C9BB_DF19_39FA));
        assert_eq!(whole.crc64_nvme(), Some(0xAE8B_1486_0A79_9888));
        assert_eq!(whole.get(Algorithm::Md5), None, "MD5 does not fold");
        // A part without NVME: no NVME for the whole.
        let only_xz: Checksums = Checksum::Crc64Xz(crc64::checksum(b)).into();
        assert_eq!(fold([(&pa, 5u64), (&only_xz, 4u64)]).crc64_nvme(), None);
    }

    #[test]
    fn compare_matches_by_algorithm_and_rejects_a_difference() {
        let ours: Checksums = [Checksum::Crc64Xz(1), Checksum::Crc64Nvme(2)]
            .into_iter()
            .collect();
        let reported: Checksums = [Checksum::Crc64Nvme(2), Checksum::Md5([0; 16])]
            .into_iter()
            .collect();
        assert_eq!(compare(&reported, &ours), Ok(vec![Algorithm::Crc64Nvme]));
        let wrong: Checksums = Checksum::Crc64Xz(9).into();
        assert_eq!(
            compare(&wrong, &ours),
            Err((Checksum::Crc64Xz(9), Checksum::Crc64Xz(1)))
        );
    }

    #[test]
    fn end_to_end_needs_a_destination_proof() {
        let l = ProofLog::default();
        l.source(Algorithm::Crc64Nvme);
        assert!(
            !l.end_to_end(),
            "the source alone does not prove the destination"
        );
        l.parts(vec![Algorithm::Md5]);
        assert!(l.end_to_end());
        assert_eq!(l.list(), ["part_md5", "source_crc64nvme"]);
    }
}
