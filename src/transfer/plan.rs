//! Part-size planning and the list of parts.

use crate::store::{Limits, PartSpec};

use super::TransferError;

/// Default part size when none is requested.
pub const DEFAULT_PART_SIZE: u64 = 64 * MIB;
const MIB: u64 = 1024 * 1024;

/// Chooses the part size for an object of `size` bytes.
///
/// Starts from `requested` (or 64 MiB); if that would need more than `limits.max_parts` parts,
/// raises it to the smallest whole MiB that fits. Errors if the requested size is outside the
/// store's part-size range or the object cannot fit at all.
pub fn plan_part_size(
    size: u64,
    requested: Option<u64>,
    limits: Limits,
) -> Result<u64, TransferError> {
    let max_object = limits.max_part_size.saturating_mul(limits.max_parts as u64);
    if size > max_object {
        return Err(TransferError::Plan(format!(
            "the object is {size} bytes, more than the destination allows in one multipart upload \
             ({} parts × {} bytes = {max_object} bytes)",
            limits.max_parts, limits.max_part_size
        )));
    }
    let base = match requested {
        Some(p) => {
            limits
                .check_part_size(p)
                .map_err(|e| TransferError::Plan(format!("part size {e}")))?;
            p
        }
        None => DEFAULT_PART_SIZE.clamp(limits.min_part_size, limits.max_part_size),
    };
    if size.div_ceil(base) <= limits.max_parts as u64 {
        return Ok(base);
    }
    // Smallest size giving ≤ max_parts parts, rounded up to a whole MiB for readable plans.
    let needed = size.div_ceil(limits.max_parts as u64);
    let raised = needed.div_ceil(MIB) * MIB;
    Ok(raised.min(limits.max_part_size).max(base))
}

/// The parts of an object of `size` bytes cut into `part_size` pieces (the last may be shorter).
pub fn parts(size: u64, part_size: u64) -> Vec<PartSpec> {
    let n = size.div_ceil(part_size);
    (0..n)
        .map(|i| {
            let offset = i * part_size;
            PartSpec {
                number: (i + 1) as u32,
                offset,
                len: part_size.min(size - offset),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oss::LIMITS as OSS_LIMITS;

    const KIB: u64 = 1024;
    const GIB: u64 = 1024 * MIB;

    #[test]
    fn part_size_table() {
        let l = OSS_LIMITS;
        let auto = |s| plan_part_size(s, None, l).unwrap();
        assert_eq!(auto(0), 64 * MIB);
        assert_eq!(auto(1), 64 * MIB);
        assert_eq!(auto(100 * KIB - 1), 64 * MIB);
        assert_eq!(auto(64 * MIB), 64 * MIB);
        assert_eq!(auto(64 * MIB + 1), 64 * MIB);
        // 10,000 × 64 MiB fits exactly; one byte more forces 65 MiB parts.
        assert_eq!(auto(10_000 * 64 * MIB), 64 * MIB);
        assert_eq!(auto(10_000 * 64 * MIB + 1), 65 * MIB);
        // 4 TiB needs parts of ≥ 419.4 MiB → raised to 420 MiB.
        let four_tib = 4 * 1024 * GIB;
        let p = auto(four_tib);
        assert_eq!(p, 420 * MIB);
        assert_eq!(p % MIB, 0);
        assert!(four_tib.div_ceil(p) <= 10_000);
        assert!(four_tib.div_ceil(p - MIB) > 10_000, "smallest whole MiB");
        // The largest object: 10,000 × 5 GiB.
        assert_eq!(auto(10_000 * 5 * GIB), 5 * GIB);
        assert!(matches!(
            plan_part_size(10_000 * 5 * GIB + 1, None, l),
            Err(TransferError::Plan(_))
        ));
    }

    #[test]
    fn requested_part_size() {
        let l = OSS_LIMITS;
        assert_eq!(plan_part_size(MIB, Some(100 * KIB), l).unwrap(), 100 * KIB);
        assert_eq!(plan_part_size(MIB, Some(5 * GIB), l).unwrap(), 5 * GIB);
        assert!(matches!(
            plan_part_size(MIB, Some(100 * KIB - 1), l),
            Err(TransferError::Plan(_))
        ));
        assert!(matches!(
            plan_part_size(MIB, Some(5 * GIB + 1), l),
            Err(TransferError::Plan(_))
        ));
        // 100 KiB parts for 2 GB would be 20,972 parts: raised to 1 MiB.
        assert_eq!(
            plan_part_size(2 * GIB, Some(100 * KIB), l).unwrap(),
            MIB,
            "raised to a whole MiB"
        );
    }

    #[test]
    fn parts_cover_the_object() {
        assert!(parts(0, MIB).is_empty());
        let p = parts(2 * MIB + 5, MIB);
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].number, 1);
        assert_eq!(p[2].offset, 2 * MIB);
        assert_eq!(p[2].len, 5);
        assert_eq!(p.iter().map(|p| p.len).sum::<u64>(), 2 * MIB + 5);
        assert_eq!(parts(MIB, MIB).len(), 1);
    }
}
