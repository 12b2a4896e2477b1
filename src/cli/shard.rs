//! `ossrelay copy` in shards: `--shards N --plan`, `--manifest URL --shard I`,
//! `--manifest URL --complete` (see [`crate::transfer::shard`]). Flags → library calls.

use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::copy::{serve_metrics, CopyArgs};
use super::util::install_interrupt_handler;
use super::{progress, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE};
use crate::locate::{self, ObjectUrl, SideOptions};
use crate::transfer::shard::{self, Manifest, ShardError};
use crate::transfer::{CopyOptions, DiskFormat, InputFormat, Location, Progress};

/// Where Kubernetes puts an Indexed Job pod's index.
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// Flags of a sharded copy (flattened into `copy`).
#[derive(Debug, Args)]
pub struct ShardArgs {
    /// Sharded copy, step 1 (with SRC DST and --plan): cut the copy into N shards of
    /// contiguous parts, open the upload and write the manifest (printed).
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
    /// With --shards: plan only (workers relay, see --manifest).
    #[arg(long, requires = "shards")]
    pub plan: bool,
    /// The manifest of a sharded copy (default for --plan: DST.ossrelay/manifest.json). Without
    /// SRC DST: run a worker (--shard) or --complete. Read with the --dst-* options.
    #[arg(long, value_name = "URL")]
    pub manifest: Option<String>,
    /// Sharded copy, step 2: the shard this worker relays (default: $JOB_COMPLETION_INDEX,
    /// set by a Kubernetes Indexed Job).
    #[arg(long, value_name = "I", requires = "manifest")]
    pub shard: Option<u32>,
    /// Sharded copy, step 3: check every part is uploaded and recorded, complete the upload
    /// and prove it; exit 1 naming the shards to rerun when parts are missing.
    #[arg(long, requires = "manifest", conflicts_with_all = ["shard", "shards"])]
    pub complete: bool,
    /// On a worker: once its shard is done and every other shard is too, complete.
    #[arg(long, requires = "manifest", conflicts_with = "complete")]
    pub complete_when_done: bool,
}

impl ShardArgs {
    /// Whether the command is a step of a sharded copy.
    pub fn active(&self) -> bool {
        self.shards.is_some() || self.manifest.is_some()
    }
}

fn usage(msg: impl std::fmt::Display) -> i32 {
    eprintln!("error: {msg}");
    EXIT_USAGE
}

fn print_json<T: serde::Serialize>(v: &T) -> bool {
    match serde_json::to_string(v) {
        Ok(s) => {
            println!("{s}");
            true
        }
        Err(e) => {
            eprintln!("error: cannot encode the summary: {e}");
            false
        }
    }
}

fn fail(e: ShardError) -> i32 {
    if e.interrupted() {
        eprintln!(
            "interrupted: the parts recorded so far are kept; rerun the same command to resume"
        );
        return EXIT_INTERRUPTED;
    }
    eprintln!("error: {e}");
    EXIT_FAILED
}

fn resolve(url: &ObjectUrl, side: &SideOptions, what: &str) -> Result<Location, i32> {
    if matches!(url, ObjectUrl::Local(_)) {
        return Err(usage(format!(
            "{what} {url}: a sharded copy needs oss:// or s3:// (every worker must reach it)"
        )));
    }
    locate::resolve(url, side, None).map_err(|e| {
        eprintln!("error: {what} {url}: {e}");
        EXIT_FAILED
    })
}

/// Runs a step of a sharded copy; `opts` and the sides come from `copy`'s flags.
pub async fn run(
    args: &CopyArgs,
    opts: CopyOptions,
    src_side: SideOptions,
    dst_side: SideOptions,
) -> i32 {
    let s = &args.shard;
    if s.shards.is_some() && !s.plan {
        return usage(
            "--shards N plans a sharded copy: add --plan, then run each shard with \
             `ossrelay copy --manifest URL --shard I` and finish with `--complete`",
        );
    }
    let cancel = CancellationToken::new();
    install_interrupt_handler(cancel.clone());
    if s.plan {
        return plan(args, opts, &src_side, &dst_side, cancel).await;
    }
    if args.src.is_some() || args.dst.is_some() {
        return usage(
            "with --manifest (and no --plan), SRC and DST come from the manifest: leave them out",
        );
    }
    // A usage error before any request.
    let index = match s.shard {
        _ if s.complete => 0,
        Some(i) => i,
        None => match std::env::var(INDEX_ENV) {
            Ok(v) => match v.trim().parse::<u32>() {
                Ok(i) => i,
                Err(_) => return usage(format!("{INDEX_ENV}={v:?} is not a shard index")),
            },
            Err(_) => {
                return usage(format!(
                    "give --shard I (or set {INDEX_ENV}, as a Kubernetes Indexed Job does), \
                     or --complete"
                ))
            }
        },
    };
    let url: ObjectUrl = match s.manifest.as_deref().unwrap_or_default().parse() {
        Ok(u) => u,
        Err(e) => return usage(format!("--manifest: {e}")),
    };
    let at = match resolve(&url, &dst_side, "manifest") {
        Ok(l) => l,
        Err(code) => return code,
    };
    let m = match shard::read_manifest(&at, &opts).await {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let (src, dst) = match sides(&m, &src_side, &dst_side) {
        Ok(x) => x,
        Err(code) => return code,
    };
    if s.complete {
        return complete(args, &at, &m, src, dst, opts, cancel).await;
    }
    if let Some(addr) = args.metrics_listen {
        if let Err(e) = serve_metrics(addr) {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    }
    let prog = Arc::new(Progress::default());
    let bar = (!args.quiet).then(|| progress::spawn(prog.clone()));
    let r = shard::work(
        &at,
        &m,
        src.clone(),
        dst.clone(),
        index,
        opts.clone(),
        prog,
        cancel.clone(),
    )
    .await;
    if let Some(bar) = bar {
        bar.finish().await;
    }
    let done = match r {
        Ok(d) => d,
        Err(e) => return fail(e),
    };
    if args.json {
        if !print_json(&done) {
            return EXIT_FAILED;
        }
    } else if !args.quiet {
        eprintln!(
            "shard {index}: {} part(s), {} bytes relayed and recorded ({} already there)",
            done.parts,
            done.bytes - done.resumed_bytes,
            done.resumed_bytes
        );
    }
    if !s.complete_when_done || done.already_complete {
        return EXIT_OK;
    }
    match shard::all_shards_done(&at, &m, &opts).await {
        Ok(true) => complete(args, &at, &m, src, dst, opts, cancel).await,
        Ok(false) => {
            if !args.quiet {
                eprintln!("other shards are still running: the last one to finish completes");
            }
            EXIT_OK
        }
        Err(e) => fail(e),
    }
}

/// The manifest's source and destination, reached with this command's side options.
fn sides(
    m: &Manifest,
    src_side: &SideOptions,
    dst_side: &SideOptions,
) -> Result<(Location, Location), i32> {
    let parse = |s: &str, what: &str| -> Result<ObjectUrl, i32> {
        s.parse().map_err(|e| {
            eprintln!("error: the manifest's {what} {s:?}: {e}");
            EXIT_FAILED
        })
    };
    let src = resolve(&parse(&m.source, "source")?, src_side, "source")?;
    let dst = resolve(
        &parse(&m.destination, "destination")?,
        dst_side,
        "destination",
    )?;
    Ok((src, dst))
}

async fn plan(
    args: &CopyArgs,
    opts: CopyOptions,
    src_side: &SideOptions,
    dst_side: &SideOptions,
    cancel: CancellationToken,
) -> i32 {
    let (Some(src), Some(dst)) = (args.src.as_deref(), args.dst.as_deref()) else {
        return usage("--plan needs SRC and DST");
    };
    let shards = args.shard.shards.unwrap_or(1);
    if shards == 0 || shards > 10_000 {
        return usage("--shards must be between 1 and 10000");
    }
    let src: ObjectUrl = match src.parse() {
        Ok(u) => u,
        Err(e) => return usage(format!("source: {e}")),
    };
    let dst: ObjectUrl = match dst.parse() {
        Ok(u) => u,
        Err(e) => return usage(format!("destination: {e}")),
    };
    if args.unpack.applies(&src.name()) {
        return usage(format!(
            "{src} would be unpacked, and an unpack is one sequential stream that cannot be \
             sharded: copy it without --shards, or pass --unpack never to relay its bytes as \
             they are"
        ));
    }
    let converts = !matches!(args.format, DiskFormat::Raw)
        || !matches!(args.input_format, InputFormat::Auto | InputFormat::Raw);
    if converts {
        return usage(
            "a disk format conversion (--format, --input-format) is one sequential stream that \
             cannot be sharded: convert with one copy, or shard a plain relay",
        );
    }
    let src_loc = match resolve(&src, src_side, "source") {
        Ok(l) => l,
        Err(code) => return code,
    };
    let dst_loc = match locate::resolve(&dst, dst_side, locate::base_name(&src).as_deref()) {
        Ok(l) if !matches!(dst, ObjectUrl::Local(_)) => l,
        Ok(_) => {
            return usage(format!(
                "destination {dst}: a sharded copy needs oss:// or s3:// (every worker must \
                 reach it)"
            ))
        }
        Err(e) => {
            eprintln!("error: destination {dst}: {e}");
            return EXIT_FAILED;
        }
    };
    let dst_object = dst.with_key(&dst_loc.key);
    if locate::same_object(&src, src_side, &dst_object, dst_side) {
        return usage(format!(
            "source and destination are the same object ({})",
            dst_loc.describe()
        ));
    }
    let at_url = match args.shard.manifest.as_deref() {
        Some(u) => match u.parse::<ObjectUrl>() {
            Ok(u) => u,
            Err(e) => return usage(format!("--manifest: {e}")),
        },
        None => dst_object.with_key(&shard::default_manifest_key(&dst_loc.key)),
    };
    let at = match resolve(&at_url, dst_side, "manifest") {
        Ok(l) => l,
        Err(code) => return code,
    };
    match shard::plan(src_loc, dst_loc, at, shards, opts, cancel).await {
        Ok(p) => {
            if args.json {
                if !print_json(&p) {
                    return EXIT_FAILED;
                }
            } else {
                if !args.quiet {
                    eprintln!(
                        "planned {} part(s) of {} bytes in {} shard(s){}; run each shard with \
                         `ossrelay copy --manifest {} --shard I`, then `--complete`",
                        p.parts,
                        p.part_size,
                        p.shards,
                        if p.complete {
                            " (already completed)"
                        } else if p.reused {
                            " (the plan already made is kept)"
                        } else {
                            ""
                        },
                        p.manifest
                    );
                }
                println!("{}", p.manifest);
            }
            EXIT_OK
        }
        Err(e) => fail(e),
    }
}

#[allow(clippy::too_many_arguments)]
async fn complete(
    args: &CopyArgs,
    at: &Location,
    m: &Manifest,
    src: Location,
    dst: Location,
    opts: CopyOptions,
    cancel: CancellationToken,
) -> i32 {
    match shard::complete(at, m, src, dst, opts, cancel).await {
        Ok(c) => {
            if args.json {
                if !print_json(&c) {
                    return EXIT_FAILED;
                }
            } else if !args.quiet {
                eprintln!(
                    "{}: {} bytes in {} parts, CRC-64 {}{}; verified by {}",
                    c.destination,
                    c.bytes,
                    c.parts,
                    c.crc64,
                    if c.already_complete {
                        " (completed earlier)"
                    } else {
                        ""
                    },
                    c.verified_by.join(", ")
                );
            }
            if !c.end_to_end && args.require_proof {
                eprintln!(
                    "error: nothing proves that {} holds the bytes read (--require-proof)",
                    c.destination
                );
                return EXIT_FAILED;
            }
            EXIT_OK
        }
        Err(e) => fail(e),
    }
}
