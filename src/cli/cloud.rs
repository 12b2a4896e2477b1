//! What the image commands (preflight, export, import, migrate) share on the command line:
//! the endpoint flags, durations, and progress lines for waits. The side itself (region,
//! credentials, clients) is [`crate::cloud::Side`], below the CLI, because migrate and the
//! daemon use it too.

use std::sync::Mutex;
use std::time::Duration;

use crate::acs::ecs::{Image, TaskAttribute};
use crate::cloud::Endpoints;

/// The endpoint override flags of the single-side commands (`preflight`, `export`, `import`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EndpointArgs {
    /// OSS endpoint override.
    #[arg(long)]
    pub oss_endpoint: Option<String>,
    /// ECS endpoint override, e.g. http://127.0.0.1:9000.
    #[arg(long)]
    pub ecs_endpoint: Option<String>,
    /// RAM endpoint override.
    #[arg(long)]
    pub ram_endpoint: Option<String>,
    /// STS endpoint override.
    #[arg(long)]
    pub sts_endpoint: Option<String>,
}

impl EndpointArgs {
    /// The overrides as [`Endpoints`].
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            oss: self.oss_endpoint.clone(),
            ecs: self.ecs_endpoint.clone(),
            ram: self.ram_endpoint.clone(),
            sts: self.sts_endpoint.clone(),
            ..Endpoints::default()
        }
    }
}

/// Parses `90`, `90s`, `15m`, `6h`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}; use e.g. 90s, 15m, 6h or 2d"))?;
    let mult = match unit.trim() {
        "s" | "sec" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "invalid duration {s:?}; use e.g. 90s, 15m, 6h or 2d"
            ))
        }
    };
    if n == 0 {
        return Err(format!("duration {s:?} must be greater than zero"));
    }
    Ok(Duration::from_secs(n.saturating_mul(mult)))
}

/// Prints `line` on stderr unless it equals the previous one (polls repeat themselves).
#[derive(Default)]
pub struct StatusLine {
    last: Mutex<String>,
}

impl StatusLine {
    pub fn show(&self, line: String) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if *last != line {
            eprintln!("{line}");
            *last = line;
        }
    }
}

/// `export t-1: Processing 45%`.
pub fn task_line(what: &str, t: &TaskAttribute) -> String {
    match t.percent() {
        Some(p) => format!("{what} {}: {} {p:.0}%", t.task_id, t.task_status.as_str()),
        None => format!("{what} {}: {}", t.task_id, t.task_status.as_str()),
    }
}

/// `image m-1: Creating 30%`.
pub fn image_line(i: &Image) -> String {
    match i.percent() {
        Some(p) => format!("image {}: {} {p:.0}%", i.image_id, i.status),
        None => format!("image {}: {}", i.image_id, i.status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("6h").unwrap(), Duration::from_secs(6 * 3600));
        assert_eq!(
            parse_duration("2d").unwrap(),
            Duration::from_secs(2 * 86400)
        );
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5w").is_err());
    }
}
