//! The ECS / RAM / STS / metadata side of the world: custom images and their disks, export and
//! import tasks moving over simulated time, RAM roles, STS sessions, the metadata service's
//! tokens and rotating credentials, RPC nonces and scripted RPC errors.
//!
//! State only: the handlers in `crate::acs` and `crate::imds` read and change it under
//! [`Cloud::lock`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rand::distributions::Alphanumeric;
use rand::Rng;

use super::roles::Roles;
use crate::config::{ImdsTokens, RpcFault, SimConfig, SimError, SimOidcProvider};
use crate::rpc::{Nonces, RpcError};
use crate::store::Content;
use crate::synthetic::Synthetic;

/// Bytes per GiB (image and disk sizes are declared in GiB).
pub(crate) const GIB: u64 = 1 << 30;

/// The ECS / RAM / STS / IMDS state of one simulator.
pub(crate) struct Cloud {
    pub(crate) region: String,
    pub(crate) task_duration: Duration,
    pub(crate) sts_ttl: Option<Duration>,
    /// RAM OIDC identity providers (AssumeRoleWithOIDC).
    pub(crate) oidc_providers: Vec<SimOidcProvider>,
    /// `(account, role)` served by the metadata service.
    pub(crate) imds_role: Option<(String, String)>,
    pub(crate) imds_rotation: Duration,
    pub(crate) imds_tokens: ImdsTokens,
    /// Delay before a policy attached through RAM is seen by ECS.
    pub(crate) role_propagation: Duration,
    pub(crate) started: SystemTime,
    pub(crate) nonces: Mutex<Nonces>,
    pub(crate) state: Mutex<CloudState>,
    pub(crate) scripted: Mutex<Vec<RpcFault>>,
}

#[derive(Default)]
pub(crate) struct CloudState {
    pub(crate) images: BTreeMap<String, Image>,
    pub(crate) tasks: BTreeMap<String, Task>,
    pub(crate) roles: Roles,
    pub(crate) sessions: HashMap<String, Session>,
    pub(crate) imds: ImdsState,
    pub(crate) client_tokens: HashMap<(String, String), (String, String)>,
}

/// One disk of an image.
#[derive(Clone)]
pub(crate) struct Disk {
    /// Bytes of the raw disk.
    pub(crate) size: u64,
    pub(crate) crc: u64,
    pub(crate) content: Content,
    /// Declared size in GiB.
    pub(crate) gib: u64,
    pub(crate) format: String,
    pub(crate) import: Option<(String, String)>,
}

/// A custom image.
pub(crate) struct Image {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) account: String,
    pub(crate) status: &'static str,
    pub(crate) progress: u32,
    pub(crate) created: SystemTime,
    pub(crate) architecture: String,
    pub(crate) os_type: String,
    pub(crate) platform: String,
    pub(crate) boot_mode: String,
    pub(crate) nvme: String,
    pub(crate) imds_support: String,
    pub(crate) disks: Vec<Disk>,
    pub(crate) size_gib: u64,
    pub(crate) tags: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Phase {
    Running,
    Finished,
    Failed,
    Cancelled,
}

/// What a finished worker produced.
pub(crate) type Outcome = Result<Vec<Disk>, (String, String)>;

/// An asynchronous ExportImage / ImportImage task.
pub(crate) struct Task {
    pub(crate) id: String,
    pub(crate) action: &'static str,
    pub(crate) account: String,
    pub(crate) image_id: String,
    pub(crate) created: SystemTime,
    pub(crate) started: Instant,
    pub(crate) duration: Duration,
    pub(crate) phase: Phase,
    pub(crate) finished: Option<SystemTime>,
    pub(crate) outcome: Option<Outcome>,
    /// Per disk: the RelatedItemSet pairs.
    pub(crate) items: Vec<Vec<(String, String)>>,
    pub(crate) error: Option<(String, String)>,
}

impl Task {
    /// `(status, percent)` right now.
    pub(crate) fn view(&self) -> (&'static str, u32) {
        match self.phase {
            Phase::Finished => ("Finished", 100),
            Phase::Failed => ("Failed", 100),
            Phase::Cancelled => ("Cancelled", 0),
            Phase::Running => {
                let f = if self.duration.is_zero() {
                    1.0
                } else {
                    self.started.elapsed().as_secs_f64() / self.duration.as_secs_f64()
                };
                if f < 0.1 {
                    ("Waiting", 0)
                } else {
                    ("Processing", ((f * 100.0) as u32).clamp(1, 99))
                }
            }
        }
    }
}

impl Cloud {
    pub(crate) fn new(cfg: &SimConfig) -> Result<Self, SimError> {
        let now = SystemTime::now();
        let known = |a: &str| cfg.accounts.iter().any(|x| x.name == a);
        let mut st = CloudState::default();
        for p in &cfg.oidc_providers {
            if !known(&p.account) {
                return Err(SimError::Config(format!(
                    "OIDC provider {} names unknown account {}",
                    p.name, p.account
                )));
            }
        }
        for r in &cfg.roles {
            if !known(&r.account) {
                return Err(SimError::Config(format!(
                    "role {} names unknown account {}",
                    r.name, r.account
                )));
            }
            st.roles.preload(&r.account, &r.name, &r.trusted, now);
        }
        for i in &cfg.images {
            if !known(&i.account) {
                return Err(SimError::Config(format!(
                    "image {} names unknown account {}",
                    i.id, i.account
                )));
            }
            if i.size == 0 || i.size % 512 != 0 {
                return Err(SimError::Config(format!(
                    "image {} size {} must be a positive multiple of 512 bytes",
                    i.id, i.size
                )));
            }
            if st.images.contains_key(&i.id) {
                return Err(SimError::Config(format!("image {} is defined twice", i.id)));
            }
            let syn = Synthetic::new(&i.id, i.size);
            let gib = i.size.div_ceil(GIB).max(1);
            st.images.insert(
                i.id.clone(),
                Image {
                    id: i.id.clone(),
                    name: if i.name.is_empty() {
                        format!("img-{}", i.id)
                    } else {
                        i.name.clone()
                    },
                    description: String::new(),
                    account: i.account.clone(),
                    status: "Available",
                    progress: 100,
                    created: now,
                    architecture: i.architecture.clone(),
                    os_type: i.os_type.clone(),
                    platform: i.platform.clone(),
                    boot_mode: i.boot_mode.clone(),
                    nvme: i.nvme.clone(),
                    imds_support: "v2".into(),
                    disks: vec![Disk {
                        size: i.size,
                        crc: syn.crc(),
                        content: Content::Synthetic(Arc::new(syn)),
                        gib,
                        format: String::new(),
                        import: None,
                    }],
                    size_gib: gib,
                    tags: Vec::new(),
                },
            );
        }
        if let Some((account, role)) = &cfg.imds_role {
            if !known(account) {
                return Err(SimError::Config(format!(
                    "metadata role {role} names unknown account {account}"
                )));
            }
            if st.roles.get(account, role).is_none() {
                st.roles.preload(account, role, "ecs", now);
            }
        }
        Ok(Self {
            region: cfg.region.clone(),
            task_duration: cfg.task_duration,
            sts_ttl: cfg.sts_ttl,
            oidc_providers: cfg.oidc_providers.clone(),
            imds_role: cfg.imds_role.clone(),
            imds_rotation: cfg.imds_rotation,
            imds_tokens: cfg.imds_tokens,
            role_propagation: cfg.role_propagation,
            started: now,
            nonces: Mutex::new(Nonces::default()),
            state: Mutex::new(st),
            scripted: Mutex::new(cfg.rpc_faults.clone()),
        })
    }

    /// Adds scripted RPC errors at runtime.
    pub(crate) fn add_rpc_fault(&self, f: RpcFault) {
        self.scripted.lock().expect("fault lock").push(f);
    }

    /// The next scripted error for `action`, if any is left.
    pub(crate) fn scripted_fault(&self, action: &str) -> Option<RpcError> {
        let mut list = self.scripted.lock().expect("fault lock");
        let f = list
            .iter_mut()
            .find(|f| f.count > 0 && (f.action == action || f.action == "*"))?;
        f.count -= 1;
        Some(RpcError::new(
            f.status,
            f.code.clone(),
            format!("Injected by the simulator for {action}."),
        ))
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, CloudState> {
        self.state.lock().expect("cloud lock")
    }
}

impl CloudState {
    /// Moves tasks whose time is up and whose work is done to their terminal state.
    pub(crate) fn refresh(&mut self) {
        let now = SystemTime::now();
        let mut done = Vec::new();
        for t in self.tasks.values_mut() {
            if t.phase != Phase::Running {
                continue;
            }
            if let Some(img) = self.images.get_mut(&t.image_id) {
                if t.action == "ImportImage" {
                    let (s, p) = t.view();
                    img.status = if s == "Waiting" {
                        "Waiting"
                    } else {
                        "Creating"
                    };
                    img.progress = p;
                }
            }
            if t.started.elapsed() < t.duration {
                continue;
            }
            let Some(outcome) = t.outcome.take() else {
                continue;
            };
            t.finished = Some(now);
            match outcome {
                Ok(disks) => {
                    t.phase = Phase::Finished;
                    done.push((t.image_id.clone(), t.action, Ok(disks)));
                }
                Err(e) => {
                    t.phase = Phase::Failed;
                    t.error = Some(e.clone());
                    done.push((t.image_id.clone(), t.action, Err(e)));
                }
            }
        }
        for (image_id, action, r) in done {
            if action != "ImportImage" {
                continue;
            }
            if let Some(img) = self.images.get_mut(&image_id) {
                match r {
                    Ok(disks) => {
                        img.disks = disks;
                        img.status = "Available";
                        img.progress = 100;
                    }
                    Err(_) => {
                        img.status = "CreateFailed";
                    }
                }
            }
        }
    }
}

impl Cloud {
    /// `(size, crc64)` of an image's system disk (`None` if unknown or still importing).
    pub(crate) fn image_crc64(&self, id: &str) -> Option<(u64, u64)> {
        let mut st = self.lock();
        st.refresh();
        let i = st.images.get(id)?;
        (i.status == "Available")
            .then(|| i.disks.first().map(|d| (d.size, d.crc)))
            .flatten()
    }
}

// ---------------------------------------------------------------------------------------------
// STS sessions

/// Who a temporary AccessKey stands for.
#[derive(Debug, Clone)]
pub struct Session {
    pub account: String,
    pub role_name: String,
    pub role_id: String,
    pub session_name: String,
}

fn random(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// A fresh temporary triple `(AccessKeyId, secret, token)`.
pub fn new_triple() -> (String, String, String) {
    (
        format!("STS.N{}", random(24)),
        random(44),
        format!("CAIS{}", random(300)),
    )
}

// ---------------------------------------------------------------------------------------------
// Metadata service

/// One issued credential set.
pub(crate) struct Issued {
    pub(crate) period: u64,
    pub(crate) ak: String,
    pub(crate) secret: String,
    pub(crate) token: String,
    pub(crate) issued: SystemTime,
    pub(crate) expires: SystemTime,
}

/// Tokens and the current credentials.
#[derive(Default)]
pub struct ImdsState {
    pub(crate) tokens: HashMap<String, SystemTime>,
    pub(crate) current: Option<Issued>,
}
