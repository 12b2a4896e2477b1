//! Small parsers and helpers shared by subcommands.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// Parses a byte size such as `64MiB`, `1GiB`, `100KiB` or `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(s.trim())
        .map_err(|e| format!("invalid size {s:?} ({e}); use e.g. 64MiB, 1GiB or a number of bytes"))
}

/// Parses a rate such as `200MiB/s` (the `/s` is optional) into bytes per second.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let v = parse_size(t).map_err(|_| {
        format!("invalid rate {s:?}; use e.g. 200MiB/s, 16MiB/s or a number of bytes per second")
    })?;
    if v == 0 {
        return Err(format!("rate {s:?} must be greater than zero"));
    }
    Ok(v)
}

/// Human-readable bytes (binary units).
pub fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} {}", UNITS[i])
    } else {
        format!("{v:.2} {}", UNITS[i])
    }
}

/// Cancels `token` on the first Ctrl-C or SIGTERM; exits the process with 130 on the second.
/// Returns the count of signals seen so far (for tests and messages).
pub fn install_interrupt_handler(token: CancellationToken) -> Arc<AtomicU32> {
    let count = Arc::new(AtomicU32::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        loop {
            #[cfg(unix)]
            {
                let term_recv = async {
                    match term.as_mut() {
                        Some(t) => {
                            t.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term_recv => {}
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 1 {
                eprintln!("interrupted: finishing parts in flight and saving state (press Ctrl-C again to exit now)");
                token.cancel();
            } else {
                eprintln!("interrupted again: exiting now; state on disk is consistent, rerun the same command to resume");
                std::process::exit(super::EXIT_INTERRUPTED);
            }
        }
    });
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_rates() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_rate("200MiB/s").unwrap(), 200 << 20);
        assert_eq!(parse_rate("16MiB").unwrap(), 16 << 20);
        assert!(parse_size("lots").is_err());
        assert!(parse_rate("0/s").is_err());
    }
}
