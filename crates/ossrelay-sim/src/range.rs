//! GetObject `Range` semantics: OSS's legacy mode (invalid ranges are ignored) and
//! `x-oss-range-behavior: standard` (the end is clamped, a start past EOF is 416).

/// What to serve for a Range header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOutcome {
    /// 200 with the whole object.
    Full,
    /// 206 with bytes `first..=last`.
    Partial { first: u64, last: u64 },
    /// 416 InvalidRange.
    Unsatisfiable,
}

enum Spec {
    FromTo(u64, u64),
    From(u64),
    Suffix(u64),
}

fn parse(header: &str) -> Option<Spec> {
    let rest = header.trim().strip_prefix("bytes=")?;
    // Only the first of several ranges is served.
    let first = rest.split(',').next()?.trim();
    let (a, b) = first.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.is_empty(), b.is_empty()) {
        (true, true) => None,
        (true, false) => Some(Spec::Suffix(num(b)?)),
        (false, true) => Some(Spec::From(num(a)?)),
        (false, false) => {
            let (x, y) = (num(a)?, num(b)?);
            (x <= y).then_some(Spec::FromTo(x, y))
        }
    }
}

/// Resolves a Range header against an object of `size` bytes.
pub fn resolve(header: Option<&str>, standard: bool, size: u64) -> RangeOutcome {
    let Some(spec) = header.and_then(parse) else {
        return RangeOutcome::Full;
    };
    if standard {
        if size == 0 {
            return RangeOutcome::Unsatisfiable;
        }
        match spec {
            Spec::FromTo(a, b) if a < size => RangeOutcome::Partial {
                first: a,
                last: b.min(size - 1),
            },
            Spec::From(a) if a < size => RangeOutcome::Partial {
                first: a,
                last: size - 1,
            },
            Spec::FromTo(..) | Spec::From(_) => RangeOutcome::Unsatisfiable,
            Spec::Suffix(0) => RangeOutcome::Unsatisfiable,
            Spec::Suffix(n) => RangeOutcome::Partial {
                first: size.saturating_sub(n),
                last: size - 1,
            },
        }
    } else {
        match spec {
            Spec::FromTo(a, b) if b < size => RangeOutcome::Partial { first: a, last: b },
            Spec::From(a) if a < size => RangeOutcome::Partial {
                first: a,
                last: size - 1,
            },
            Spec::Suffix(n) if n > 0 && n <= size => RangeOutcome::Partial {
                first: size - n,
                last: size - 1,
            },
            _ => RangeOutcome::Full,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeOutcome::*;

    fn p(first: u64, last: u64) -> RangeOutcome {
        Partial { first, last }
    }

    #[test]
    fn legacy_table() {
        let cases: &[(&str, RangeOutcome)] = &[
            ("bytes=0-9", p(0, 9)),
            ("bytes=0-499", p(0, 499)),
            ("bytes=500-999", p(500, 999)),
            ("bytes=500-", p(500, 999)),
            ("bytes=-100", p(900, 999)),
            ("bytes=-1000", p(0, 999)),
            ("bytes=0-0", p(0, 0)),
            ("bytes=0-499,500-999", p(0, 499)),
            // Ignored → whole object.
            ("byte=0-499", Full),
            ("bytes=0-1000", Full),
            ("bytes=1000-2000", Full),
            ("bytes=1000-", Full),
            ("bytes=-2000", Full),
            ("bytes=-0", Full),
            ("bytes=9-3", Full),
            ("bytes=abc", Full),
            ("bytes=-", Full),
        ];
        for (h, want) in cases {
            assert_eq!(resolve(Some(h), false, 1000), *want, "{h}");
        }
        assert_eq!(resolve(None, false, 1000), Full);
        assert_eq!(resolve(Some("bytes=0-0"), false, 0), Full);
    }

    #[test]
    fn standard_table() {
        let cases: &[(&str, RangeOutcome)] = &[
            ("bytes=0-9", p(0, 9)),
            ("bytes=500-2000", p(500, 999)),
            ("bytes=0-1000", p(0, 999)),
            ("bytes=1000-2000", Unsatisfiable),
            ("bytes=1000-", Unsatisfiable),
            ("bytes=999-", p(999, 999)),
            ("bytes=-2000", p(0, 999)),
            ("bytes=-10", p(990, 999)),
            ("bytes=-0", Unsatisfiable),
            ("byte=0-499", Full),
            ("bytes=9-3", Full),
        ];
        for (h, want) in cases {
            assert_eq!(resolve(Some(h), true, 1000), *want, "{h}");
        }
        assert_eq!(resolve(Some("bytes=0-0"), true, 0), Unsatisfiable);
        assert_eq!(resolve(None, true, 0), Full);
    }
}
