//! `ossrelay demo --migrate`: the whole image migration between two simulated regions and
//! accounts — ExportImage → relay (unpacking the `.raw.tar.gz`) → ImportImage → Available —
//! through the real ECS and OSS clients, signatures and state machine.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::migrate::Printer;
use super::util::{human_bytes, install_interrupt_handler};
use super::{EXIT_INTERRUPTED, EXIT_OK};
use crate::acs::ecs::EcsClient;
use crate::acs::ram::RoleRetry;
use crate::acs::wait::PollSchedule;
use crate::credentials::{Credentials, StaticProvider};
use crate::migrate::{
    self, Backends, Cloud, Event, ImageApi, MigrateConfig, MigrationKey, RelayFn,
};
use crate::oss::{EndpointSpec, OssClient, OssConfig};
use crate::store::ObjectStore;
use crate::transfer::CopyOptions;
use ossrelay_sim::{self as sim, SimAccount, SimBucket, SimConfig, SimImage, SimRole};

const SRC_REGION: &str = "cn-hangzhou";
const DST_REGION: &str = "eu-central-1";
const SRC_BUCKET: &str = "images-hangzhou";
const DST_BUCKET: &str = "images-frankfurt";
const IMAGE: &str = "m-demo0001";
const AWS_REGION: &str = "us-east-1";
const AWS_BUCKET: &str = "images-virginia";
const AMI: &str = "ami-0de0000000000d001";

/// Runs the migration demo with a disk of `size` bytes, serving Prometheus metrics on
/// `metrics` when given; returns the exit code.
pub async fn run(
    size: u64,
    concurrency: usize,
    quiet: bool,
    metrics: Option<SocketAddr>,
) -> Result<i32, String> {
    if let Some(addr) = metrics {
        super::copy::serve_metrics(addr)?;
    }
    run_with(size, concurrency, quiet, metrics, migrate::default_relay()).await
}

/// [`run`] with another relay step (metrics must already be served when `metrics` is given).
pub async fn run_with(
    size: u64,
    concurrency: usize,
    quiet: bool,
    metrics: Option<SocketAddr>,
    relay: RelayFn,
) -> Result<i32, String> {
    let w = same_cloud(size.div_ceil(512) * 512, concurrency, relay).await?;
    w.drive(quiet, metrics).await
}

/// `demo --cross-cloud`: an AMI from a simulated AWS account (EC2 ExportImage into S3) to a
/// simulated Alibaba Cloud account (relay into OSS, ECS ImportImage).
pub async fn run_cross_cloud(
    size: u64,
    concurrency: usize,
    quiet: bool,
    metrics: Option<SocketAddr>,
) -> Result<i32, String> {
    if let Some(addr) = metrics {
        super::copy::serve_metrics(addr)?;
    }
    let w = cross_cloud(size.div_ceil(512) * 512, concurrency).await?;
    w.drive(quiet, metrics).await
}

fn accounts() -> (SimAccount, SimAccount) {
    (
        SimAccount {
            name: "1111111111111111".into(),
            access_key_id: "LTAIdemoSourceKey".into(),
            access_key_secret: "demo-source-secret".into(),
        },
        SimAccount {
            name: "2222222222222222".into(),
            access_key_id: "LTAIdemoTargetKey".into(),
            access_key_secret: "demo-target-secret".into(),
        },
    )
}

fn creds(a: &SimAccount) -> Arc<StaticProvider> {
    Arc::new(StaticProvider(Credentials::new(
        a.access_key_id.clone(),
        a.access_key_secret.clone(),
    )))
}

fn oss_bucket(
    endpoint: String,
    region: &str,
    a: &SimAccount,
    name: &str,
) -> Result<Arc<dyn ObjectStore>, String> {
    OssClient::new(OssConfig::new(
        EndpointSpec::Url(endpoint),
        region.to_string(),
        creds(a),
    ))
    .map(|c| Arc::new(c.bucket(name)) as Arc<dyn ObjectStore>)
    .map_err(|e| format!("cannot build the OSS client: {e}"))
}

fn service_role(account: &SimAccount, name: &str) -> SimRole {
    SimRole {
        account: account.name.clone(),
        name: name.into(),
        trusted: "ecs".into(),
    }
}

/// The simulated Alibaba destination: OSS + ECS in DST_REGION with the import service role.
async fn alibaba_destination(
    accounts: Vec<SimAccount>,
    dst_account: &SimAccount,
) -> Result<sim::SimServer, String> {
    sim::start(SimConfig {
        region: DST_REGION.into(),
        accounts,
        buckets: vec![SimBucket {
            name: DST_BUCKET.into(),
            account: dst_account.name.clone(),
        }],
        roles: vec![service_role(dst_account, "AliyunECSImageImportDefaultRole")],
        task_duration: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await
    .map_err(|e| format!("cannot start the destination simulator: {e}"))
}

/// Two running simulators and the migration between them.
struct DemoWorld {
    src_sim: sim::SimServer,
    dst_sim: sim::SimServer,
    image: String,
    cfg: MigrateConfig,
    backends: Backends,
}

fn config(key: MigrationKey, src_bucket: &str, concurrency: usize) -> MigrateConfig {
    let state_dir = std::env::temp_dir().join(format!(
        "ossrelay-demo-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    MigrateConfig {
        key,
        src_bucket: src_bucket.into(),
        image_name: None,
        export_prefix: "ossrelay".into(),
        export_format: None,
        disk_format: crate::migrate::DiskPlan::Fixed(crate::transfer::DiskFormat::Raw),
        keep_objects: false,
        state_dir: state_dir.clone(),
        poll: PollSchedule {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(1),
            timeout: Duration::from_secs(3600),
            ..PollSchedule::default()
        },
        role_retry: RoleRetry::default(),
        copy: CopyOptions {
            concurrency,
            state_dir: Some(state_dir),
            ..CopyOptions::default()
        },
    }
}

async fn same_cloud(size: u64, concurrency: usize, relay: RelayFn) -> Result<DemoWorld, String> {
    let (src_account, dst_account) = accounts();
    let all = vec![src_account.clone(), dst_account.clone()];
    let mut image = SimImage::new(IMAGE, size, &src_account.name);
    image.name = "web-server".into();
    image.platform = "Ubuntu".into();
    image.boot_mode = "UEFI".into();
    let src_sim = sim::start(SimConfig {
        region: SRC_REGION.into(),
        accounts: all.clone(),
        buckets: vec![SimBucket {
            name: SRC_BUCKET.into(),
            account: src_account.name.clone(),
        }],
        images: vec![image],
        roles: vec![service_role(
            &src_account,
            "AliyunECSImageExportDefaultRole",
        )],
        task_duration: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await
    .map_err(|e| format!("cannot start the source simulator: {e}"))?;
    let dst_sim = alibaba_destination(all, &dst_account).await?;
    println!(
        "source:      simulated ECS+OSS {SRC_REGION} (account {}) at {}, image {IMAGE} ({})",
        src_account.name,
        src_sim.endpoint(),
        human_bytes(size as f64)
    );
    println!(
        "destination: simulated ECS+OSS {DST_REGION} (account {}) at {}",
        dst_account.name,
        dst_sim.endpoint()
    );
    let backends = Backends {
        src: ImageApi::Aliyun(Arc::new(EcsClient::new(
            SRC_REGION,
            Some(src_sim.endpoint()),
            creds(&src_account),
        ))),
        dst: ImageApi::Aliyun(Arc::new(EcsClient::new(
            DST_REGION,
            Some(dst_sim.endpoint()),
            creds(&dst_account),
        ))),
        src_store: oss_bucket(src_sim.endpoint(), SRC_REGION, &src_account, SRC_BUCKET)?,
        dst_store: oss_bucket(dst_sim.endpoint(), DST_REGION, &dst_account, DST_BUCKET)?,
        relay,
    };
    let key = MigrationKey {
        src_region: SRC_REGION.into(),
        image_id: IMAGE.into(),
        dst_region: DST_REGION.into(),
        dst_bucket: DST_BUCKET.into(),
        src_cloud: Cloud::Aliyun,
        dst_cloud: Cloud::Aliyun,
    };
    Ok(DemoWorld {
        src_sim,
        dst_sim,
        image: IMAGE.into(),
        cfg: config(key, SRC_BUCKET, concurrency),
        backends,
    })
}

async fn cross_cloud(size: u64, concurrency: usize) -> Result<DemoWorld, String> {
    let (src_account, dst_account) = accounts();
    let all = vec![src_account.clone(), dst_account.clone()];
    let image = sim::SimEc2Image::parse(
        &format!("{AMI}:{size}:arch=x86_64,boot=uefi,platform=linux,name=web-ubuntu-22.04"),
        &src_account.name,
    )?;
    let src_sim = sim::start(SimConfig {
        region: AWS_REGION.into(),
        accounts: all.clone(),
        buckets: vec![SimBucket {
            name: AWS_BUCKET.into(),
            account: src_account.name.clone(),
        }],
        dialect: sim::Dialect::S3,
        ec2_images: vec![image],
        vmimport_roles: vec![src_account.name.clone()],
        task_duration: Duration::from_secs(2),
        ..SimConfig::default()
    })
    .await
    .map_err(|e| format!("cannot start the AWS simulator: {e}"))?;
    let ec2_endpoint = src_sim
        .ec2_endpoint()
        .ok_or("the AWS simulator serves no EC2 endpoint")?;
    let dst_sim = alibaba_destination(all, &dst_account).await?;
    println!(
        "source:      simulated AWS S3+EC2 {AWS_REGION} (account {}) at {}, AMI {AMI} ({})",
        src_account.name,
        src_sim.endpoint(),
        human_bytes(size as f64)
    );
    println!(
        "destination: simulated Alibaba ECS+OSS {DST_REGION} (account {}) at {}",
        dst_account.name,
        dst_sim.endpoint()
    );
    let s3 = crate::s3::S3Client::new(crate::s3::S3Config::new(
        crate::s3::provider::Provider::Aws,
        AWS_REGION,
        Some(src_sim.endpoint()),
        creds(&src_account),
    ))
    .map_err(|e| format!("cannot build the S3 client: {e}"))?;
    let backends = Backends {
        src: ImageApi::Aws(Arc::new(crate::aws::ec2::Ec2Client::new(
            AWS_REGION,
            Some(ec2_endpoint),
            creds(&src_account),
        ))),
        dst: ImageApi::Aliyun(Arc::new(EcsClient::new(
            DST_REGION,
            Some(dst_sim.endpoint()),
            creds(&dst_account),
        ))),
        src_store: Arc::new(s3.bucket(AWS_BUCKET)),
        dst_store: oss_bucket(dst_sim.endpoint(), DST_REGION, &dst_account, DST_BUCKET)?,
        relay: migrate::default_relay(),
    };
    let key = MigrationKey {
        src_region: AWS_REGION.into(),
        image_id: AMI.into(),
        dst_region: DST_REGION.into(),
        dst_bucket: DST_BUCKET.into(),
        src_cloud: Cloud::Aws,
        dst_cloud: Cloud::Aliyun,
    };
    Ok(DemoWorld {
        src_sim,
        dst_sim,
        image: AMI.into(),
        cfg: config(key, AWS_BUCKET, concurrency),
        backends,
    })
}

impl DemoWorld {
    async fn drive(self, quiet: bool, metrics: Option<SocketAddr>) -> Result<i32, String> {
        let DemoWorld {
            src_sim,
            dst_sim,
            image,
            cfg,
            backends,
        } = self;
        if let Some(addr) = metrics {
            println!("metrics:     http://{addr}/metrics");
        }
        let state_dir = cfg.state_dir.clone();
        let cancel = CancellationToken::new();
        install_interrupt_handler(cancel.clone());
        let printer = Printer::new(quiet);
        // Relay throughput: from the first disk's start to the last disk's end.
        let relay_span: Mutex<(Option<Instant>, Option<Instant>)> = Mutex::new((None, None));
        let sink = |e: Event<'_>| {
            match &e {
                Event::DiskStarted { .. } => {
                    relay_span
                        .lock()
                        .unwrap()
                        .0
                        .get_or_insert_with(Instant::now);
                }
                Event::DiskDone { .. } => relay_span.lock().unwrap().1 = Some(Instant::now()),
                _ => {}
            }
            printer.on(e)
        };
        let result = migrate::migrate(&cfg, &backends, &cancel, &sink).await;
        printer.finish().await;
        let _ = std::fs::remove_dir_all(&state_dir);
        let out = match result {
            Ok(o) => o,
            Err(e) if e.is_interrupted() => {
                eprintln!("interrupted");
                return Ok(EXIT_INTERRUPTED);
            }
            Err(e) => return Err(e.to_string()),
        };
        // Ask the simulators themselves, independently of the client's own claim.
        let src_truth = src_sim.image_crc64(&image);
        let dst_truth = dst_sim.image_crc64(&out.image_id);
        if src_truth.is_none() || src_truth != dst_truth {
            return Err(format!(
            "verification failed: source disk {src_truth:?} != imported disk {dst_truth:?} (size, CRC-64)"
        ));
        }
        println!(
            "migrated:    {image} ({} {}) -> {} ({} {}), Available",
            cfg.key.src_cloud, cfg.key.src_region, out.image_id, out.cloud, out.region
        );
        for d in &out.disks {
            println!(
                "disk:        {} -> {} ({}, CRC-64 {})",
                d.source,
                d.destination,
                human_bytes(d.bytes as f64),
                d.crc64
            );
        }
        println!("verified:    the imported disk's CRC-64 equals the source image's (checked in both simulators)");
        let relayed: u64 = out.disks.iter().map(|d| d.bytes).sum();
        if let (Some(a), Some(b)) = *relay_span.lock().unwrap() {
            let secs = b.duration_since(a).as_secs_f64().max(1e-6);
            println!(
                "throughput:  {} relayed in {secs:.2} s = {}/s",
                human_bytes(relayed as f64),
                human_bytes(relayed as f64 / secs)
            );
        }

        src_sim.shutdown().await;
        dst_sim.shutdown().await;
        Ok(EXIT_OK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::{DiskResult, MigrateError};
    use crate::store::PutOptions;
    use futures::StreamExt as _;
    use std::io::Read as _;

    /// Stands in for the streaming unpack stage: reads the small tarball whole.
    fn unpacking_relay() -> RelayFn {
        Arc::new(|src, dst, _opts, _progress, _cancel| {
            Box::pin(async move {
                let fail = |e: crate::store::StoreError| MigrateError::State(e.to_string());
                let meta = src.store.head(&src.key).await.map_err(fail)?;
                let mut body = src
                    .store
                    .get_range(&src.key, 0, meta.size, None)
                    .await
                    .map_err(fail)?;
                let mut tgz = Vec::new();
                while let Some(c) = body.next().await {
                    tgz.extend_from_slice(&c.map_err(fail)?);
                }
                let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&tgz[..]));
                let mut raw = Vec::new();
                ar.entries()
                    .unwrap()
                    .next()
                    .unwrap()
                    .unwrap()
                    .read_to_end(&mut raw)
                    .unwrap();
                let (len, crc) = (raw.len() as u64, crate::crc64::checksum(&raw));
                let stream = futures::stream::once(async move { Ok(bytes::Bytes::from(raw)) });
                dst.store
                    .put(&dst.key, Box::pin(stream), len, &PutOptions::default())
                    .await
                    .map_err(fail)?;
                Ok(DiskResult {
                    source: src.describe(),
                    destination: dst.describe(),
                    bytes: len,
                    crc64: crc,
                    verified_by: Vec::new(),
                    zero_share: None,
                    raw_bytes: None,
                    raw_crc64: None,
                })
            })
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn demo_migration_reaches_available_and_verifies() {
        let code = run_with(1 << 20, 4, true, None, unpacking_relay())
            .await
            .unwrap();
        assert_eq!(code, EXIT_OK);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cross_cloud_demo_reaches_available_and_verifies() {
        // The AMI's disk against the imported ECS disk, asked of both simulators inside.
        assert_eq!(run_cross_cloud(3 << 20, 4, true, None).await, Ok(EXIT_OK));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn demo_migration_with_the_streaming_unpack_relay() {
        // The default relay unpacks the .raw.tar.gz on the way and the result is verified.
        let code = run(1 << 20, 4, true, None).await.unwrap();
        assert_eq!(code, EXIT_OK);
    }
}
