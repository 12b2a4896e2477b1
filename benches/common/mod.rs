//! What the benches share: the simulators' one account and its buckets, and a median.

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
