//! A CPU of its own for the unpack decoder (`--decoder-cpu`).
//!
//! Decompression is one sequential stream, so the decoder thread sets the pace of
//! `copy --unpack` whenever the network keeps up. Left to the scheduler, every wake-up of a
//! network or cutter thread may land on the decoder's core, preempt it and evict its caches
//! (`cargo bench --bench unpack`, 2 cores, alternating rounds: ratio to the single-core
//! ceiling 0.90 unpinned vs 0.95 pinned). So while a decoder is busy (the unpack decides
//! when), it is pinned to one CPU and every other thread of the process is kept off that
//! CPU. At least one CPU always stays for the other threads; with fewer than two CPUs
//! nothing is pinned. The pins are undone when the reservation is dropped, before the
//! decoder's thread goes back to the blocking pool.
//!
//! Pinning is an optimisation, never a requirement: where `sched_setaffinity` is refused
//! (a systemd unit filtering `@resources` with `SystemCallErrorNumber=EPERM`, a container's
//! seccomp profile), the decoder runs unpinned and the refusal is logged once per process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::debug;

/// Set once the refusal to pin was logged.
static REFUSAL_LOGGED: AtomicBool = AtomicBool::new(false);

/// Logs a refused pin the first time only: a decoder asks again each time it gets busy.
fn refused(err: std::io::Error) {
    if !REFUSAL_LOGGED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            error = %err,
            "cannot pin the unpack decoder to a CPU (sched_setaffinity refused); it runs unpinned. \
             Allow sched_setaffinity (e.g. SystemCallFilter=sched_setaffinity) for the last ~5% of decode speed"
        );
    }
}

/// Where the decoder thread runs (`--decoder-cpu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DecoderCpu {
    /// Reserve one CPU for each running decoder when the process may use two or more.
    #[default]
    Auto,
    /// Let the operating system place the decoder like any other thread.
    Off,
}

/// A CPU reserved for the calling thread; released (and every pin undone) on drop.
#[derive(Debug)]
pub struct Reservation {
    tid: i32,
    /// The CPU the thread is pinned to.
    pub cpu: usize,
}

/// The decoders' reserved CPUs, and the CPUs the process could use before any was reserved.
struct Placement {
    allowed: Vec<usize>,
    reserved: Vec<(i32, usize)>,
}

static PLACEMENT: Mutex<Option<Placement>> = Mutex::new(None);

impl Placement {
    /// The allowed CPUs no decoder holds: where every other thread runs.
    fn unreserved(&self) -> Vec<usize> {
        self.allowed
            .iter()
            .copied()
            .filter(|c| self.reserved.iter().all(|&(_, r)| r != *c))
            .collect()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Ok(mut guard) = PLACEMENT.lock() else {
            return;
        };
        if let Some(p) = guard.as_mut() {
            p.reserved.retain(|&(tid, _)| tid != self.tid);
            os::apply(p);
        }
    }
}

/// Pins the calling thread to a CPU of its own and keeps the process's other threads off
/// it; `None` when there is no CPU to spare or the system does not allow it.
pub fn reserve_for_this_thread() -> Option<Reservation> {
    let mut guard = PLACEMENT.lock().ok()?;
    if guard.is_none() {
        *guard = Some(Placement {
            allowed: os::allowed()?,
            reserved: Vec::new(),
        });
    }
    let p = guard.as_mut()?;
    let free = p.unreserved();
    // Keep one CPU for everything else.
    if free.len() < 2 {
        return None;
    }
    let cpu = *free.last()?;
    let tid = os::this_thread();
    p.reserved.push((tid, cpu));
    if !os::pin(tid, &[cpu]) {
        refused(std::io::Error::last_os_error());
        p.reserved.pop();
        return None;
    }
    os::apply(p);
    Some(Reservation { tid, cpu })
}

/// The CPUs the calling thread may run on, if the system tells.
pub fn this_thread_cpus() -> Option<Vec<usize>> {
    os::cpus_of(os::this_thread())
}

#[cfg(target_os = "linux")]
mod os {
    use super::Placement;

    fn set_of(cpus: &[usize]) -> libc::cpu_set_t {
        // SAFETY: cpu_set_t is a plain bit array; all zeros is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in cpus {
            if c < libc::CPU_SETSIZE as usize {
                // SAFETY: `c` is within the set's size.
                unsafe { libc::CPU_SET(c, &mut set) };
            }
        }
        set
    }

    pub(super) fn this_thread() -> i32 {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() }
    }

    pub(super) fn cpus_of(tid: i32) -> Option<Vec<usize>> {
        // SAFETY: as in `set_of`.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes into `set`.
        let rc = unsafe {
            libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set)
        };
        if rc != 0 {
            return None;
        }
        Some(
            (0..libc::CPU_SETSIZE as usize)
                // SAFETY: `c` is within the set's size.
                .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
                .collect(),
        )
    }

    pub(super) fn allowed() -> Option<Vec<usize>> {
        cpus_of(0)
    }

    pub(super) fn pin(tid: i32, cpus: &[usize]) -> bool {
        let set = set_of(cpus);
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 }
    }

    /// Decoders on their CPUs, every other thread of the process on the CPUs left. Threads
    /// started later inherit their creator's CPUs, which is the shared set for all but the
    /// decoders (which start none).
    pub(super) fn apply(p: &Placement) {
        let shared = p.unreserved();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return;
        };
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            // A thread that exited meanwhile fails with ESRCH: nothing to do for it.
            match p.reserved.iter().find(|&&(t, _)| t == tid) {
                Some(&(_, cpu)) => pin(tid, &[cpu]),
                None => pin(tid, &shared),
            };
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod os {
    use super::Placement;

    pub(super) fn this_thread() -> i32 {
        0
    }
    pub(super) fn cpus_of(_tid: i32) -> Option<Vec<usize>> {
        None
    }
    pub(super) fn allowed() -> Option<Vec<usize>> {
        None
    }
    pub(super) fn pin(_tid: i32, _cpus: &[usize]) -> bool {
        false
    }
    pub(super) fn apply(_p: &Placement) {}
}

/// The decoder's own CPU (`--decoder-cpu auto`), held only while the decoder is the
/// bottleneck: a reserved CPU idling while the decoder waits for a slow network would only
/// take a core from the network threads and from other jobs.
pub(crate) struct CpuHold {
    pub(crate) mode: DecoderCpu,
    pub(crate) held: Option<Reservation>,
    pub(crate) window: Instant,
    pub(crate) waited_before: Duration,
}

impl CpuHold {
    /// Judged over windows this long (reserving costs one pass over the process's threads).
    pub(crate) const WINDOW: Duration = Duration::from_millis(100);

    pub(crate) fn new(mode: DecoderCpu) -> Self {
        Self {
            mode,
            held: None,
            window: Instant::now(),
            waited_before: Duration::ZERO,
        }
    }

    /// `waited`: the decoder's total time waiting for input, memory or the cutter so far.
    pub(crate) fn update(&mut self, waited: Duration) {
        let wall = self.window.elapsed();
        if self.mode == DecoderCpu::Off || wall < Self::WINDOW {
            return;
        }
        let share = waited.saturating_sub(self.waited_before).as_secs_f64() / wall.as_secs_f64();
        match cpu_hold_change(self.held.is_some(), share) {
            Some(true) => {
                self.held = reserve_for_this_thread();
                debug!(cpu = ?self.held.as_ref().map(|r| r.cpu), waiting = share, "decoder busy: own CPU");
            }
            Some(false) => {
                self.held = None;
                debug!(waiting = share, "decoder waiting: CPU given back");
            }
            None => {}
        }
        self.window = Instant::now();
        self.waited_before = waited;
    }
}

/// Whether to take (`Some(true)`) or give back (`Some(false)`) the decoder's CPU, given the
/// share of the last window it spent waiting; apart thresholds keep it from flapping.
pub(crate) fn cpu_hold_change(held: bool, waiting: f64) -> Option<bool> {
    match (held, waiting) {
        (false, w) if w < 0.10 => Some(true),
        (true, w) if w > 0.30 => Some(false),
        _ => None,
    }
}
