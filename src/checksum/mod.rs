//! Checksums typed by algorithm, and a digest that computes several in one pass.
//!
//! Guarantees callers can rely on:
//! * A [`Checksum`] always says which algorithm produced it: a CRC-64/XZ from OSS can never
//!   be compared with a CRC-64/NVME from S3 by mistake (equality includes the algorithm,
//!   [`Checksums::get`] looks up by algorithm).
//! * [`MultiDigest`] feeds each buffer once to every algorithm asked for, so a part that both
//!   sides of a cross-cloud copy must prove costs one pass over memory, not one per checksum.
//! * Serialised form (state files, summaries): `{"crc64-xz": "12066172435287683848"}`; 64-bit
//!   values are decimal strings (JSON numbers lose u64 precision), MD5 is lower-case hex.
//!
//! Which algorithms a store computes or accepts is a capability of the store
//! ([`crate::store::ChecksumCaps`]), not an assumption of the engine.

pub mod crc64;
pub mod nvme;

use std::collections::BTreeMap;
use std::fmt;

use md5::Digest as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A checksum algorithm a store may compute or accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    /// CRC-64/XZ (ECMA-182 reflected): OSS's `x-oss-hash-crc64ecma`.
    Crc64Xz,
    /// CRC-64/NVME: S3's `x-amz-checksum-crc64nvme`.
    Crc64Nvme,
    /// CRC-32C (Castagnoli): S3's and GCS's `crc32c`.
    Crc32c,
    /// MD5: `Content-MD5`, and the ETag of a single PUT on most stores.
    Md5,
}

impl Algorithm {
    /// Every algorithm, in a fixed order.
    pub const ALL: [Algorithm; 4] = [Self::Crc64Xz, Self::Crc64Nvme, Self::Crc32c, Self::Md5];

    /// The key used in state files, JSON and metrics labels.
    pub fn key(self) -> &'static str {
        match self {
            Self::Crc64Xz => "crc64-xz",
            Self::Crc64Nvme => "crc64-nvme",
            Self::Crc32c => "crc32c",
            Self::Md5 => "md5",
        }
    }

    /// The name used in messages. CRC-64/XZ is "CRC-64", the name every message of earlier
    /// releases used for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Crc64Xz => "CRC-64",
            Self::Crc64Nvme => "CRC-64/NVME",
            Self::Crc32c => "CRC-32C",
            Self::Md5 => "MD5",
        }
    }

    /// Whether part checksums of this algorithm fold into the whole object's without
    /// re-reading data (CRCs do; MD5 does not).
    pub fn combinable(self) -> bool {
        !matches!(self, Self::Md5)
    }

    /// Whether [`MultiDigest`] can compute it in this release.
    pub fn computable(self) -> bool {
        matches!(self, Self::Crc64Xz | Self::Crc64Nvme | Self::Md5)
    }

    fn from_key(k: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.key() == k)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One checksum value, tagged with its algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Checksum {
    Crc64Xz(u64),
    Crc64Nvme(u64),
    Crc32c(u32),
    Md5([u8; 16]),
}

impl Checksum {
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Crc64Xz(_) => Algorithm::Crc64Xz,
            Self::Crc64Nvme(_) => Algorithm::Crc64Nvme,
            Self::Crc32c(_) => Algorithm::Crc32c,
            Self::Md5(_) => Algorithm::Md5,
        }
    }

    /// The value as it is written in state files: decimal for CRCs, hex for MD5.
    pub fn value_string(&self) -> String {
        match self {
            Self::Crc64Xz(v) | Self::Crc64Nvme(v) => v.to_string(),
            Self::Crc32c(v) => v.to_string(),
            Self::Md5(d) => hex::encode(d),
        }
    }

    fn parse(alg: Algorithm, s: &str) -> Result<Self, String> {
        let bad = |e: &dyn fmt::Display| format!("bad {} value {s:?}: {e}", alg.key());
        Ok(match alg {
            Algorithm::Crc64Xz => Self::Crc64Xz(s.parse().map_err(|e| bad(&e))?),
            Algorithm::Crc64Nvme => Self::Crc64Nvme(s.parse().map_err(|e| bad(&e))?),
            Algorithm::Crc32c => Self::Crc32c(s.parse().map_err(|e| bad(&e))?),
            Algorithm::Md5 => {
                let v = hex::decode(s).map_err(|e| bad(&e))?;
                Self::Md5(v.try_into().map_err(|_| bad(&"not 16 bytes"))?)
            }
        })
    }
}

impl fmt::Display for Checksum {
    /// The bare value (decimal for CRCs, hex for MD5): messages name the algorithm themselves.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value_string())
    }
}

/// The checksums known for one object or part, at most one per algorithm.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Checksums(BTreeMap<Algorithm, Checksum>);

impl Checksums {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the checksum of its algorithm.
    pub fn insert(&mut self, c: Checksum) {
        self.0.insert(c.algorithm(), c);
    }

    pub fn with(mut self, c: Checksum) -> Self {
        self.insert(c);
        self
    }

    pub fn get(&self, alg: Algorithm) -> Option<Checksum> {
        self.0.get(&alg).copied()
    }

    /// The CRC-64/XZ, the checksum OSS and the relay's proofs use.
    pub fn crc64_xz(&self) -> Option<u64> {
        match self.get(Algorithm::Crc64Xz) {
            Some(Checksum::Crc64Xz(v)) => Some(v),
            _ => None,
        }
    }

    /// The CRC-64/NVME, the checksum S3 stores for whole objects.
    pub fn crc64_nvme(&self) -> Option<u64> {
        match self.get(Algorithm::Crc64Nvme) {
            Some(Checksum::Crc64Nvme(v)) => Some(v),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Checksum> + '_ {
        self.0.values().copied()
    }
}

impl From<Checksum> for Checksums {
    fn from(c: Checksum) -> Self {
        Self::new().with(c)
    }
}

impl FromIterator<Checksum> for Checksums {
    fn from_iter<I: IntoIterator<Item = Checksum>>(iter: I) -> Self {
        let mut s = Self::new();
        for c in iter {
            s.insert(c);
        }
        s
    }
}

impl Serialize for Checksums {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter().map(|c| (c.algorithm().key(), c.value_string())))
    }
}

impl<'de> Deserialize<'de> for Checksums {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        let mut out = Checksums::new();
        for (k, v) in raw {
            // An algorithm a later release added is skipped, not an error: the others still
            // prove what they prove.
            let Some(alg) = Algorithm::from_key(&k) else {
                continue;
            };
            out.insert(Checksum::parse(alg, &v).map_err(serde::de::Error::custom)?);
        }
        Ok(out)
    }
}

/// Computes several checksums in one pass over each buffer.
#[derive(Clone)]
pub struct MultiDigest {
    crc64_xz: Option<crc64::Crc64>,
    crc64_nvme: Option<nvme::Crc64Nvme>,
    md5: Option<md5::Md5>,
}

impl MultiDigest {
    /// A digest of every algorithm in `algs` that this release can compute (see
    /// [`Algorithm::computable`]); others are left out, and [`MultiDigest::finish`] will not
    /// report them.
    pub fn new(algs: impl IntoIterator<Item = Algorithm>) -> Self {
        let mut d = Self {
            crc64_xz: None,
            crc64_nvme: None,
            md5: None,
        };
        for a in algs {
            match a {
                Algorithm::Crc64Xz => d.crc64_xz = Some(crc64::Crc64::new()),
                Algorithm::Crc64Nvme => d.crc64_nvme = Some(nvme::Crc64Nvme::new()),
                Algorithm::Md5 => d.md5 = Some(md5::Md5::new()),
                Algorithm::Crc32c => {}
            }
        }
        d
    }

    /// The algorithms this digest computes.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut out = Vec::new();
        if self.crc64_xz.is_some() {
            out.push(Algorithm::Crc64Xz);
        }
        if self.crc64_nvme.is_some() {
            out.push(Algorithm::Crc64Nvme);
        }
        if self.md5.is_some() {
            out.push(Algorithm::Md5);
        }
        out
    }

    pub fn update(&mut self, data: &[u8]) {
        if let Some(c) = &mut self.crc64_xz {
            c.update(data);
        }
        if let Some(c) = &mut self.crc64_nvme {
            c.update(data);
        }
        if let Some(m) = &mut self.md5 {
            m.update(data);
        }
    }

    pub fn finish(self) -> Checksums {
        let mut out = Checksums::new();
        if let Some(c) = self.crc64_xz {
            out.insert(Checksum::Crc64Xz(c.sum()));
        }
        if let Some(c) = self.crc64_nvme {
            out.insert(Checksum::Crc64Nvme(c.sum()));
        }
        if let Some(m) = self.md5 {
            out.insert(Checksum::Md5(m.finalize().into()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_gives_every_checksum_asked_for() {
        let data = b"123456789";
        let mut d = MultiDigest::new([Algorithm::Crc64Xz, Algorithm::Crc64Nvme, Algorithm::Md5]);
        d.update(&data[..4]);
        d.update(&data[4..]);
        let s = d.finish();
        // Check values from the catalogue of CRCs and RFC 1321's test suite style.
        assert_eq!(s.crc64_xz(), Some(0x995D_C9BB_DF19_39FA));
        assert_eq!(s.crc64_nvme(), Some(0xAE8B_1486_0A79_9888));
        assert_eq!(
            s.get(Algorithm::Md5).unwrap().value_string(),
            "25f9e794323b453885f5181f1b624d0b"
        );
        let only = MultiDigest::new([Algorithm::Crc64Xz]).finish();
        assert!(only.get(Algorithm::Md5).is_none());
    }

    #[test]
    fn checksums_round_trip_through_json_by_algorithm() {
        let s = Checksums::new()
            .with(Checksum::Crc64Xz(u64::MAX - 1))
            .with(Checksum::Md5([0xab; 16]))
            .with(Checksum::Crc32c(7));
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(
            j,
            r#"{"crc64-xz":"18446744073709551614","crc32c":"7","md5":"abababababababababababababababab"}"#
        );
        assert_eq!(serde_json::from_str::<Checksums>(&j).unwrap(), s);
        // Unknown algorithms are skipped; a bad value is an error.
        let s2: Checksums = serde_json::from_str(r#"{"sha9":"x","crc64-xz":"5"}"#).unwrap();
        assert_eq!(s2, Checksum::Crc64Xz(5).into());
        assert!(serde_json::from_str::<Checksums>(r#"{"crc64-xz":"-1"}"#).is_err());
        assert!(serde_json::from_str::<Checksums>(r#"{"md5":"abcd"}"#).is_err());
    }

    #[test]
    fn checksums_of_different_algorithms_never_match() {
        // Equality includes the algorithm: the same value from another CRC is another checksum.
        assert_ne!(Checksum::Crc64Xz(5), Checksum::Crc64Nvme(5));
        let ours: Checksums = [Checksum::Crc64Xz(5)].into_iter().collect();
        assert_eq!(ours.get(Algorithm::Crc64Nvme), None);
        assert_eq!(ours.crc64_xz(), Some(5));
    }
}
