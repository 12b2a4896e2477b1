//! Part-size planning and the list of parts.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

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

/// The last bytes of a large object, cut into smaller parts.
///
/// Why: with equal parts, the last round of parts starts wherever each connection's previous
/// part happened to end, spread over a whole part's time; once nothing is left to start, the
/// connections that finish first idle while the others still carry a full part, and a link
/// whose connections are capped each (a cross-region path) runs at a fraction for that long.
/// Smaller parts at the end bound that spread by one small part's time. The plan is recorded
/// in the state file, so a resumed upload keeps its part numbers. Only a plain copy (ranged
/// GETs) plans one; an unpack's, a shard's and a container's parts stay equal (see their
/// callers for why).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tail {
    /// Where the smaller parts begin: a whole number of full parts into the object.
    pub offset: u64,
    /// Their size (the last may be shorter).
    pub part_size: u64,
}

/// How many full parts' worth of bytes the tail covers: one round of the default
/// `--concurrency` (16), i.e. what is still running when nothing new can start.
const TAIL_FULL_PARTS: u64 = 16;
/// The tail only pays off once the object spans a few rounds of full parts.
const TAIL_MIN_FULL_PARTS: u64 = 2 * TAIL_FULL_PARTS;
/// Tail parts are a quarter of a full part, and never smaller than this: a part whose body
/// fits in the socket buffers frees its slot while its connection still drains.
const TAIL_MIN_PART: u64 = 8 * MIB;

/// The tail for an object of `size` bytes in `part_size` parts, when one is worth having
/// and the destination's limits allow it (part size and count).
pub fn tail(size: u64, part_size: u64, limits: Limits) -> Option<Tail> {
    let full = size / part_size.max(1);
    let small = part_size / 4;
    if full < TAIL_MIN_FULL_PARTS || small < TAIL_MIN_PART.max(limits.min_part_size) || small == 0 {
        return None;
    }
    let t = Tail {
        offset: (full - TAIL_FULL_PARTS) * part_size,
        part_size: small,
    };
    (parts_count(size, part_size, Some(t)) <= limits.max_parts as u64).then_some(t)
}

/// Whether a recorded tail is a plan this release could have made for `size` and
/// `part_size` within `limits` (a resumed state is checked before it is trusted).
pub fn tail_fits(size: u64, part_size: u64, tail: Option<Tail>, limits: Limits) -> bool {
    tail.is_none_or(|t| {
        t.part_size >= limits.min_part_size
            && t.part_size > 0
            && t.part_size <= part_size
            && t.offset % part_size.max(1) == 0
            && t.offset < size
    }) && parts_count(size, part_size, tail) <= limits.max_parts as u64
}

/// The number of parts [`parts_with_tail`] cuts.
pub fn parts_count(size: u64, part_size: u64, tail: Option<Tail>) -> u64 {
    match tail {
        None => size.div_ceil(part_size.max(1)),
        Some(t) => t.offset / part_size.max(1) + (size - t.offset).div_ceil(t.part_size.max(1)),
    }
}

/// The parts of an object: `part_size` pieces up to the tail, then the tail's smaller ones.
pub fn parts_with_tail(size: u64, part_size: u64, tail: Option<Tail>) -> Vec<PartSpec> {
    let Some(t) = tail.filter(|t| t.offset < size) else {
        return parts(size, part_size);
    };
    let mut v = parts(t.offset, part_size);
    let mut offset = t.offset;
    while offset < size {
        let len = t.part_size.min(size - offset);
        v.push(PartSpec {
            number: v.len() as u32 + 1,
            offset,
            len,
        });
        offset += len;
    }
    v
}

/// The order in which to send the parts `todo` (indices into `specs`, a plan with `tail`)
/// when `slots` parts move at once: full parts interleaved with some of the tail's small ones
/// at the start, so the slots' full parts end spread over a part's time instead of together.
///
/// Why: parts of one size started together end together, round after round. Every slot
/// then wants its next GET issued a round trip early within the same instant, and a quarter
/// of the slots at most may start early (see [`super::schedule`]): the rest idle a round
/// trip at every round (measured: 0.955 of a 200 ms link; with every slot allowed to start
/// early, 0.966, but up to twice `--concurrency` connections moving). Here a quarter of the
/// slots start full parts, a quarter one small part (a quarter of a full one) first, a
/// quarter two, a quarter three; from then on each quarter's parts end a quarter part apart,
/// which the early starts can cover. The small parts spent (`slots × 3/8` for quarter parts)
/// come from the tail, whose remainder still evens out the end. Without a tail, or with too
/// few small parts left (a resumed copy), `todo` keeps its order.
pub fn stagger(
    specs: &[PartSpec],
    todo: Vec<usize>,
    tail: Option<Tail>,
    slots: usize,
) -> Vec<usize> {
    let Some(t) = tail else {
        return todo;
    };
    let (mut full, mut small, mut odd) = (VecDeque::new(), VecDeque::new(), Vec::new());
    for &i in &todo {
        let s = specs[i];
        if s.offset < t.offset {
            full.push_back(i);
        } else if s.len == t.part_size {
            small.push_back(i);
        } else {
            odd.push(i);
        }
    }
    let full_len = full.front().map_or(0, |&i| specs[i].len);
    let per_full = (full_len / t.part_size.max(1)) as usize;
    // The most phases (up to small parts per full part) the small parts left allow.
    let Some((phases, group)) =
        (2..=per_full)
            .rev()
            .map(|r| (r, slots.div_ceil(r)))
            .find(|&(r, g)| {
                (0..r)
                    .map(|j| slots.saturating_sub((j + 1) * g))
                    .sum::<usize>()
                    <= small.len()
            })
    else {
        return todo;
    };
    let mut order = Vec::with_capacity(full.len() + small.len() + odd.len());
    for j in 0..phases {
        // Phase j's slots start their full parts now; the later phases' take one more small.
        order.extend(full.drain(..group.min(full.len())));
        let later = slots.saturating_sub((j + 1) * group);
        order.extend(small.drain(..later));
    }
    order.extend(full);
    order.extend(small);
    order.extend(odd);
    order
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

    #[test]
    fn tail_of_small_parts() {
        let l = OSS_LIMITS;
        // 8 GiB in 64 MiB parts: 112 full parts, then the last GiB in 16 MiB parts.
        let t = tail(8 * GIB, 64 * MIB, l).expect("a tail");
        assert_eq!(
            t,
            Tail {
                offset: 112 * 64 * MIB,
                part_size: 16 * MIB
            }
        );
        let p = parts_with_tail(8 * GIB, 64 * MIB, Some(t));
        assert_eq!(p.len(), 112 + 64);
        assert_eq!(p.len() as u64, parts_count(8 * GIB, 64 * MIB, Some(t)));
        assert_eq!(p[111].len, 64 * MIB);
        assert_eq!(p[112].offset, t.offset);
        assert_eq!(p[112].len, 16 * MIB);
        // Contiguous, numbered from 1, covering every byte.
        let mut at = 0;
        for (i, s) in p.iter().enumerate() {
            assert_eq!(s.number as usize, i + 1);
            assert_eq!(s.offset, at);
            at += s.len;
        }
        assert_eq!(at, 8 * GIB);
        // An odd size: the last tail part is short.
        let odd = 40 * 64 * MIB + 5;
        let t = tail(odd, 64 * MIB, l).unwrap();
        let p = parts_with_tail(odd, 64 * MIB, Some(t));
        assert_eq!(p.last().unwrap().len, 5);
        assert_eq!(p.iter().map(|s| s.len).sum::<u64>(), odd);
        assert!(tail_fits(odd, 64 * MIB, Some(t), l));
    }

    #[test]
    fn no_tail_where_it_cannot_help_or_fit() {
        let l = OSS_LIMITS;
        // Too few full parts.
        assert_eq!(tail(31 * 64 * MIB, 64 * MIB, l), None);
        // Quarter parts under 8 MiB (they would fit in the socket buffers).
        assert_eq!(tail(GIB, 16 * MIB, l), None);
        // A destination whose minimum part is larger than a quarter (S3: 5 MiB vs 20 MiB
        // parts is fine; a 100 MiB minimum is not).
        let big_min = Limits {
            min_part_size: 100 * MIB,
            ..l
        };
        assert_eq!(tail(64 * GIB, 128 * MIB, big_min), None);
        // Near the part-count limit: 10,000 × 64 MiB has no room for 48 more parts.
        assert_eq!(tail(10_000 * 64 * MIB, 64 * MIB, l), None);
        assert_eq!(parts_with_tail(GIB, 16 * MIB, None), parts(GIB, 16 * MIB));
        // A recorded tail that this release would not make is refused.
        let bad = Tail {
            offset: 3,
            part_size: 16 * MIB,
        };
        assert!(!tail_fits(8 * GIB, 64 * MIB, Some(bad), l));
        let tiny = Tail {
            offset: 0,
            part_size: 1,
        };
        assert!(!tail_fits(8 * GIB, 64 * MIB, Some(tiny), l));
        assert!(tail_fits(8 * GIB, 64 * MIB, None, l));
    }

    /// Slots pulling parts in `order`, each part taking its length in time: every part's
    /// end, and when the last slot is done.
    fn simulate(specs: &[PartSpec], order: &[usize], slots: usize) -> (Vec<(usize, u64)>, u64) {
        let mut free = vec![0u64; slots];
        let mut ends = Vec::new();
        for &i in order {
            let k = (0..slots).min_by_key(|&k| free[k]).unwrap();
            free[k] += specs[i].len;
            ends.push((i, free[k]));
        }
        (ends, free.into_iter().max().unwrap())
    }

    /// How many full parts end at the same moment, at most.
    fn most_full_ends_together(specs: &[PartSpec], ends: &[(usize, u64)], full: u64) -> usize {
        let mut by_time = std::collections::HashMap::<u64, usize>::new();
        for &(i, t) in ends {
            if specs[i].len == full {
                *by_time.entry(t).or_default() += 1;
            }
        }
        by_time.into_values().max().unwrap_or(0)
    }

    #[test]
    fn staggered_order_spreads_the_ends_of_full_parts() {
        let (size, p) = (8 * GIB, 64 * MIB);
        let t = tail(size, p, OSS_LIMITS);
        let specs = parts_with_tail(size, p, t);
        let todo: Vec<usize> = (0..specs.len()).collect();
        let order = stagger(&specs, todo.clone(), t, 16);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, todo, "every part once");
        // A quarter of the slots start full parts, the rest a small one first.
        assert_eq!(
            order[..16].iter().filter(|&&i| specs[i].len == p).count(),
            4
        );
        let (flat_ends, flat_span) = simulate(&specs, &todo, 16);
        let (ends, span) = simulate(&specs, &order, 16);
        assert_eq!(most_full_ends_together(&specs, &flat_ends, p), 16);
        assert_eq!(most_full_ends_together(&specs, &ends, p), 4);
        // The end is still even: at most one small part later than the flat order.
        assert!(span <= flat_span + p / 4, "{span} vs {flat_span}");
        // Other slot counts: a permutation, and the ends spread.
        for slots in [1, 3, 8, 24, 32] {
            let o = stagger(&specs, todo.clone(), t, slots);
            let mut s = o.clone();
            s.sort_unstable();
            assert_eq!(s, todo, "{slots} slots");
            let (e, _) = simulate(&specs, &o, slots);
            assert!(
                most_full_ends_together(&specs, &e, p) <= slots.div_ceil(2).max(1),
                "{slots} slots"
            );
        }
    }

    #[test]
    fn no_stagger_without_a_tail_or_small_parts_to_spend() {
        let specs = parts(40 * 64 * MIB, 64 * MIB);
        let todo: Vec<usize> = (0..specs.len()).collect();
        assert_eq!(stagger(&specs, todo.clone(), None, 16), todo);
        // A resumed copy with only 5 small parts left: kept in order.
        let size = 40 * 64 * MIB;
        let t = tail(size, 64 * MIB, OSS_LIMITS);
        let specs = parts_with_tail(size, 64 * MIB, t);
        let todo: Vec<usize> = (0..10).chain(specs.len() - 5..specs.len()).collect();
        assert_eq!(stagger(&specs, todo.clone(), t, 16), todo);
        // Kept as given, whatever that order is.
        let shuffled: Vec<usize> = todo.iter().rev().copied().collect();
        assert_eq!(stagger(&specs, shuffled.clone(), t, 16), shuffled);
    }
}
