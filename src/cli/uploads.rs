//! `ossrelay uploads list|abort|protect`: find and clean multipart uploads left by anyone, and
//! install the lifecycle safety net that aborts forgotten ones.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::locate::{self, ObjectUrl, SideOptions};
use crate::oss::OssBucket;
use crate::s3::{ProtectOutcome, S3Bucket};
use crate::store::ListedUpload;

/// The bucket a target names, in its dialect.
enum Bucket {
    Oss(OssBucket),
    S3(S3Bucket),
}

impl Bucket {
    async fn list(&self, prefix: &str) -> Result<Vec<ListedUpload>, String> {
        let prefix = Some(prefix).filter(|p| !p.is_empty());
        match self {
            Self::Oss(b) => b
                .list_multipart_uploads(prefix)
                .await
                .map_err(|e| e.to_string()),
            Self::S3(b) => b
                .list_multipart_uploads(prefix)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), String> {
        match self {
            Self::Oss(b) => b
                .abort_multipart_upload(key, upload_id)
                .await
                .map_err(|e| e.to_string()),
            Self::S3(b) => b
                .abort_multipart_upload(key, upload_id)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// The service's clock (local time corrected by the offset its responses showed).
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        match self {
            Self::Oss(b) => chrono::DateTime::<chrono::Utc>::from(b.client().now()),
            Self::S3(b) => chrono::Utc::now() + b.client().clock_offset(),
        }
    }
}

/// `ossrelay uploads ...`
#[derive(Debug, Args)]
pub struct UploadsArgs {
    #[command(subcommand)]
    pub action: UploadsAction,
}

/// Where the bucket lives and which credentials to use.
#[derive(Debug, Clone, Args)]
pub struct BucketSide {
    /// Region of the bucket (default: the profile's region_id, else cn-hangzhou).
    #[arg(long)]
    pub region: Option<String>,
    /// Endpoint URL override, e.g. http://127.0.0.1:9000.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Use the region's -internal endpoint.
    #[arg(long)]
    pub internal: bool,
    /// aliyun CLI profile for oss://, AWS profile for s3:// (default: the credential chain).
    #[arg(long)]
    pub profile: Option<String>,
    /// S3 provider of an s3:// bucket: aws, cos, obs, gcs, minio, r2, oss, other (default aws).
    #[arg(long, value_name = "PROVIDER")]
    pub provider: Option<String>,
    /// Path-style addressing for s3:// (default for IP and localhost endpoints).
    #[arg(long)]
    pub path_style: bool,
    /// AWS STS endpoint for role credentials of an s3:// bucket.
    #[arg(long, value_name = "URL")]
    pub sts_endpoint: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum UploadsAction {
    /// List open multipart uploads under oss://BUCKET[/PREFIX] or s3://BUCKET[/PREFIX].
    List {
        /// oss://BUCKET[/PREFIX] or s3://BUCKET[/PREFIX]
        target: String,
        #[command(flatten)]
        side: BucketSide,
        /// One JSON object per upload on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Abort open multipart uploads under oss://BUCKET[/PREFIX] or s3://BUCKET[/PREFIX].
    Abort {
        /// oss://BUCKET[/PREFIX] or s3://BUCKET[/PREFIX]
        target: String,
        #[command(flatten)]
        side: BucketSide,
        /// Only uploads initiated longer ago than this, e.g. 24h, 7d, 90m.
        #[arg(long, value_parser = parse_age)]
        older_than: Option<Duration>,
        /// Only list the uploads that would be aborted; abort nothing.
        #[arg(long)]
        dry_run: bool,
        /// Abort without asking, even when more than one upload matches (needed without a
        /// terminal: scripts and cron jobs).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Add a lifecycle rule aborting incomplete multipart uploads under the prefix after N days,
    /// merged with the bucket's existing rules.
    Protect {
        /// oss://BUCKET[/PREFIX] or s3://BUCKET[/PREFIX]
        target: String,
        #[command(flatten)]
        side: BucketSide,
        /// Days after which incomplete uploads are aborted.
        #[arg(long)]
        days: u32,
        /// Only say whether a rule would be added; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Parses an age such as `24h`, `7d`, `90m` or `3600s`.
pub fn parse_age(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid age {s:?} ({e}); use e.g. 24h, 7d or 90m"))
}

/// The target, its bucket as `scheme://bucket` (for messages) and the prefix.
fn bucket_and_prefix(target: &str) -> Result<(ObjectUrl, String, String), String> {
    let url = target.parse::<ObjectUrl>()?;
    match &url {
        ObjectUrl::Oss { bucket, key } => Ok((url.clone(), format!("oss://{bucket}"), key.clone())),
        ObjectUrl::S3 { bucket, key } => Ok((url.clone(), format!("s3://{bucket}"), key.clone())),
        ObjectUrl::Local(_) => Err(format!(
            "{target:?} is not a bucket: give oss://BUCKET[/PREFIX] or s3://BUCKET[/PREFIX]"
        )),
    }
}

fn open(url: &ObjectUrl, side: &BucketSide) -> Result<Bucket, String> {
    let side = SideOptions {
        region: side.region.clone(),
        endpoint: side.endpoint.clone(),
        internal: side.internal,
        profile: side.profile.clone(),
        provider: side.provider.clone(),
        path_style: side.path_style,
        sts_endpoint: side.sts_endpoint.clone(),
        region_flag: Some("--region"),
        ..SideOptions::default()
    };
    match url {
        ObjectUrl::Oss { bucket, .. } => locate::oss_bucket(bucket, &side).map(Bucket::Oss),
        ObjectUrl::S3 { bucket, .. } => locate::s3_bucket(bucket, &side).map(Bucket::S3),
        ObjectUrl::Local(_) => unreachable!("refused by bucket_and_prefix"),
    }
    .map_err(|e| e.to_string())
}

/// Runs the command; returns the exit code.
pub async fn run(args: UploadsArgs) -> i32 {
    let (target, side) = match &args.action {
        UploadsAction::List { target, side, .. }
        | UploadsAction::Abort { target, side, .. }
        | UploadsAction::Protect { target, side, .. } => (target.clone(), side.clone()),
    };
    let (url, bucket_name, prefix) = match bucket_and_prefix(&target) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    if let Err(e) = locate::provider(&SideOptions {
        provider: side.provider.clone(),
        ..SideOptions::default()
    }) {
        eprintln!("error: --provider: {e}");
        return EXIT_USAGE;
    }
    let bucket = match open(&url, &side) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let result = match args.action {
        UploadsAction::List { json, .. } => list(&bucket, &bucket_name, &prefix, json).await,
        UploadsAction::Abort {
            older_than,
            dry_run,
            yes,
            ..
        } => {
            let confirm = if dry_run {
                Confirm::DryRun
            } else if yes {
                Confirm::Yes
            } else {
                Confirm::Ask
            };
            match abort(&bucket, &bucket_name, &prefix, older_than, confirm).await {
                Ok(AbortEnd::Refused(msg)) => {
                    eprintln!("error: {msg}");
                    return EXIT_USAGE;
                }
                Ok(AbortEnd::Declined) => {
                    eprintln!("nothing aborted");
                    return EXIT_FAILED;
                }
                Ok(AbortEnd::Done) => Ok(()),
                Err(e) => Err(e),
            }
        }
        UploadsAction::Protect { days, dry_run, .. } => {
            if days == 0 {
                eprintln!("error: --days must be at least 1");
                return EXIT_USAGE;
            }
            protect(&bucket, &bucket_name, &prefix, days, dry_run).await
        }
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}

async fn list(bucket: &Bucket, name: &str, prefix: &str, json: bool) -> Result<(), String> {
    let uploads = bucket.list(prefix).await?;
    // `name` is `scheme://BUCKET` for the text output; the JSON field is the bare bucket name
    // (as documented, and as it was before s3:// arrived), the scheme is in no other field.
    let bare = name.split_once("://").map_or(name, |(_, b)| b);
    for u in &uploads {
        if json {
            println!(
                "{}",
                serde_json::json!({"bucket": bare, "key": u.key, "upload_id": u.upload_id, "initiated": u.initiated})
            );
        } else {
            println!("{}\t{name}/{}\t{}", u.initiated, u.key, u.upload_id);
        }
    }
    if !json {
        eprintln!(
            "{} open multipart upload(s) under {name}/{prefix}",
            uploads.len()
        );
    }
    Ok(())
}

fn initiated_before(initiated: &str, cutoff: chrono::DateTime<chrono::Utc>) -> bool {
    match chrono::DateTime::parse_from_rfc3339(initiated) {
        Ok(t) => t.with_timezone(&chrono::Utc) < cutoff,
        // An unreadable date is never old enough: aborting someone's live upload is worse.
        Err(_) => false,
    }
}

/// How `uploads abort` makes sure the user means it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Confirm {
    /// `--dry-run`: list what would be aborted.
    DryRun,
    /// `--yes`: abort without asking.
    Yes,
    /// Ask on the terminal when more than one upload matches; refuse without a terminal.
    Ask,
}

/// How `uploads abort` ended, short of an error.
#[derive(Debug, PartialEq, Eq)]
enum AbortEnd {
    Done,
    /// Several uploads matched, nobody could be asked (no terminal) and `--yes` was not given.
    Refused(String),
    /// The user answered no at the prompt.
    Declined,
}

/// Asks on stderr, reads the answer from stdin; only `y` / `yes` confirm.
fn ask(question: &str) -> bool {
    use std::io::Write;
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

async fn abort(
    bucket: &Bucket,
    name: &str,
    prefix: &str,
    older_than: Option<Duration>,
    confirm: Confirm,
) -> Result<AbortEnd, String> {
    let uploads = bucket.list(prefix).await?;
    // Ages are measured on the service's clock (Initiated is server time): with a skewed
    // local clock (the client corrects its offset when the service reports the skew) fresh
    // uploads would look old.
    let now = bucket.now();
    let cutoff = older_than.map(|d| {
        chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
            // An age reaching before any representable date selects nothing.
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
    });
    let selected: Vec<_> = uploads
        .into_iter()
        .filter(|u| cutoff.is_none_or(|c| initiated_before(&u.initiated, c)))
        .collect();
    if confirm == Confirm::DryRun {
        for u in &selected {
            println!("would abort {name}/{} {}", u.key, u.upload_id);
        }
        eprintln!(
            "{} upload(s) would be aborted under {name}/{prefix} (dry run: nothing aborted)",
            selected.len()
        );
        return Ok(AbortEnd::Done);
    }
    // One upload is what a user aborting "the stuck upload" expects; more than one deserves a
    // second look, since a wrong prefix can destroy other people's in-flight uploads.
    if confirm == Confirm::Ask && selected.len() > 1 {
        let n = selected.len();
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            return Ok(AbortEnd::Refused(format!(
                "{n} uploads under {name}/{prefix} would be aborted and there is no terminal to confirm; rerun with --yes to abort them, or --dry-run to list them"
            )));
        }
        if !ask(&format!(
            "Abort {n} multipart uploads under {name}/{prefix}?"
        )) {
            return Ok(AbortEnd::Declined);
        }
    }
    let (mut aborted, mut failed) = (0usize, 0usize);
    for u in selected {
        match bucket.abort(&u.key, &u.upload_id).await {
            Ok(()) => {
                aborted += 1;
                println!("aborted {name}/{} {}", u.key, u.upload_id);
            }
            Err(e) => {
                failed += 1;
                eprintln!(
                    "warning: cannot abort {name}/{} {}: {e}",
                    u.key, u.upload_id
                );
            }
        }
    }
    eprintln!("{aborted} upload(s) aborted under {name}/{prefix}");
    if failed > 0 {
        return Err(format!(
            "{failed} upload(s) could not be aborted; rerun to retry"
        ));
    }
    Ok(AbortEnd::Done)
}

async fn protect(
    bucket: &Bucket,
    name: &str,
    prefix: &str,
    days: u32,
    dry_run: bool,
) -> Result<(), String> {
    let added = match bucket {
        Bucket::Oss(b) => b
            .protect_incomplete_uploads(prefix, days, dry_run)
            .await
            .map_err(|e| e.to_string())?,
        Bucket::S3(b) => {
            b.protect_incomplete_uploads(prefix, days, dry_run)
                .await
                .map_err(|e| e.to_string())?
                == ProtectOutcome::Added
        }
    };
    match (added, dry_run) {
        (true, false) => println!("lifecycle rule added: incomplete multipart uploads under {name}/{prefix} are aborted after {days} day(s)"),
        (true, true) => println!("would add lifecycle rule: incomplete multipart uploads under {name}/{prefix} would be aborted after {days} day(s) (dry run: nothing changed)"),
        (false, _) => println!("lifecycle already aborts incomplete multipart uploads under {name}/{prefix} after {days} day(s); nothing changed"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        assert_eq!(parse_age("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_age("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert!(parse_age("soon").is_err());
    }

    #[test]
    fn old_uploads_are_selected_by_date() {
        let now = chrono::Utc::now();
        assert!(initiated_before("2012-02-23T04:18:23.000Z", now));
        assert!(!initiated_before("not a date", now));
    }
}
