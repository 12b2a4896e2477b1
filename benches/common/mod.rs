//! What the benches' simulators share: the one account and buckets owned by it.

use ossrelay::sim::{SimAccount, SimBucket};

/// The simulator account every bench signs with (`simak` / `simsecret`).
pub fn account() -> SimAccount {
    SimAccount {
        name: "sim".into(),
        access_key_id: "simak".into(),
        access_key_secret: "simsecret".into(),
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
