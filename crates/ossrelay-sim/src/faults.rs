//! Fault injection: the seeded fault table, the plan drawn for one request, and how a planned
//! fault strikes a response stream or an upload body. Knows nothing of buckets or handlers.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::FaultKind;

/// How long a stall fault pauses a body.
pub(crate) const STALL: Duration = Duration::from_secs(30);

/// The fault table: kinds with their probability, the operations they apply to, the RNG.
pub(crate) struct Faults {
    pub(crate) list: Vec<(FaultKind, f64)>,
    pub(crate) ops: Option<Vec<String>>,
    rng: StdRng,
}

/// A fault chosen for one request, with where in the body it strikes (fraction of the length).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FaultPlan {
    pub(crate) kind: FaultKind,
    pub(crate) at: f64,
    pub(crate) bit: u8,
}

impl Faults {
    pub(crate) fn new(list: Vec<(FaultKind, f64)>, ops: Option<Vec<String>>, seed: u64) -> Self {
        Self {
            list,
            ops,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Draws the fault (if any) for one request of operation `op`.
    pub(crate) fn pick(&mut self, op: &str) -> Option<FaultPlan> {
        let f = self;
        if f.list.is_empty() {
            return None;
        }
        if let Some(ops) = &f.ops {
            if !ops.iter().any(|o| o == op) {
                return None;
            }
        }
        // Uploads get body faults only when named in `fault_ops`, so a fault table written
        // for downloads keeps meaning what it did.
        let body_faults =
            op == "GetObject" || (matches!(op, "UploadPart" | "PutObject") && f.ops.is_some());
        let list = f.list.clone();
        for (kind, p) in list {
            let applies = match kind {
                FaultKind::Error500 | FaultKind::Slowdown | FaultKind::Reset => true,
                FaultKind::Truncate | FaultKind::Corrupt | FaultKind::Stall => body_faults,
                FaultKind::CompleteError | FaultKind::KeepAlive => op == "CompleteMultipartUpload",
            };
            if applies && f.rng.gen_bool(p.clamp(0.0, 1.0)) {
                let at = f.rng.gen::<f64>();
                let bit = f.rng.gen_range(0..8u8);
                return Some(FaultPlan { kind, at, bit });
            }
        }
        None
    }
}

#[derive(Clone, Copy)]
pub(crate) struct BodyFault {
    pub(crate) kind: FaultKind,
    pub(crate) at: u64,
    pub(crate) bit: u8,
}

/// Where in an upload's body (of declared length `len`) a planned fault strikes. A reset comes
/// within the first half (so some bytes always went unread); the body kinds anywhere.
pub(crate) fn body_fault(plan: Option<FaultPlan>, len: u64) -> Option<BodyFault> {
    let p = plan.filter(|p| {
        matches!(
            p.kind,
            FaultKind::Reset | FaultKind::Truncate | FaultKind::Corrupt | FaultKind::Stall
        )
    })?;
    let at = match p.kind {
        FaultKind::Reset => (p.at * len as f64 / 2.0) as u64,
        _ => ((p.at * len as f64) as u64).min(len.saturating_sub(1)),
    };
    Some(BodyFault {
        kind: p.kind,
        at,
        bit: p.bit,
    })
}

enum Step {
    Data(Bytes),
    Sleep(Duration),
    Reset,
    End,
}

/// Applies a body fault (truncate, reset, corrupt, stall) to a response stream of `len` bytes.
pub(crate) fn faulty(
    inner: BoxStream<'static, io::Result<Bytes>>,
    plan: Option<FaultPlan>,
    len: u64,
    reset: Arc<AtomicBool>,
) -> BoxStream<'static, io::Result<Bytes>> {
    let Some(plan) = plan.filter(|p| {
        len > 0
            && matches!(
                p.kind,
                FaultKind::Truncate | FaultKind::Corrupt | FaultKind::Stall | FaultKind::Reset
            )
    }) else {
        return inner;
    };
    let at = ((plan.at * len as f64) as u64).min(len - 1);
    struct St {
        inner: BoxStream<'static, io::Result<Bytes>>,
        pos: u64,
        fired: bool,
        pending: std::collections::VecDeque<Step>,
        reset: Arc<AtomicBool>,
    }
    let st = St {
        inner,
        pos: 0,
        fired: false,
        pending: Default::default(),
        reset,
    };
    stream::unfold(st, move |mut st| async move {
        loop {
            if let Some(step) = st.pending.pop_front() {
                match step {
                    Step::Data(b) => return Some((Ok(b), st)),
                    Step::Sleep(d) => {
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    Step::Reset => {
                        st.reset.store(true, Ordering::Relaxed);
                        st.pending.push_back(Step::End);
                        return Some((
                            Err(io::Error::new(
                                io::ErrorKind::ConnectionReset,
                                "injected reset fault",
                            )),
                            st,
                        ));
                    }
                    Step::End => return None,
                }
            }
            let chunk = match st.inner.next().await? {
                Ok(c) => c,
                Err(e) => return Some((Err(e), st)),
            };
            let (start, end) = (st.pos, st.pos + chunk.len() as u64);
            st.pos = end;
            if st.fired || at >= end || at < start {
                return Some((Ok(chunk), st));
            }
            st.fired = true;
            let cut = (at - start) as usize;
            let head = chunk.slice(..cut);
            let tail = chunk.slice(cut..);
            match plan.kind {
                FaultKind::Truncate => {
                    st.pending.push_back(Step::Data(head));
                    st.pending.push_back(Step::End);
                }
                FaultKind::Reset => {
                    st.pending.push_back(Step::Data(head));
                    st.pending.push_back(Step::Reset);
                }
                FaultKind::Corrupt => {
                    let mut m = BytesMut::from(&chunk[..]);
                    m[cut] ^= 1 << plan.bit;
                    st.pending.push_back(Step::Data(m.freeze()));
                }
                FaultKind::Stall => {
                    st.pending.push_back(Step::Data(head));
                    st.pending.push_back(Step::Sleep(STALL));
                    st.pending.push_back(Step::Data(tail));
                }
                _ => st.pending.push_back(Step::Data(chunk)),
            }
        }
    })
    .filter(|r| futures::future::ready(!matches!(r, Ok(b) if b.is_empty())))
    .boxed()
}
