//! Where `sched_setaffinity` is refused with EPERM (a systemd unit's
//! `SystemCallErrorNumber=EPERM`, a container's seccomp profile), the decoder's CPU
//! reservation fails softly: no reservation, the process goes on, and the refusal is logged
//! once however often a decoder asks. Its own test binary: the seccomp filter stays on the
//! thread that installed it.

#![cfg(target_os = "linux")]

use std::io::Write;
use std::sync::{Arc, Mutex};

use ossrelay::transfer::affinity::{reserve_for_this_thread, this_thread_cpus};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_refused_pin_is_not_fatal_and_is_logged_once() {
    use seccompiler::{SeccompAction, SeccompFilter};
    let cpus = this_thread_cpus().expect("sched_getaffinity");
    assert!(
        cpus.len() >= 2,
        "this test needs 2 CPUs to reserve one (the decoder never pins on 1): {cpus:?}"
    );
    let filter: seccompiler::BpfProgram = SeccompFilter::new(
        [(libc::SYS_sched_setaffinity, vec![])]
            .into_iter()
            .collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap()
    .try_into()
    .unwrap();
    let logs = Captured::default();
    let sub = tracing_subscriber::fmt()
        .with_writer({
            let l = logs.clone();
            move || l.clone()
        })
        .with_ansi(false)
        .finish();
    let got = std::thread::spawn(move || {
        // This thread only: the filter applies to the thread that installs it.
        seccompiler::apply_filter(&filter).unwrap();
        tracing::subscriber::with_default(sub, || {
            (0..3)
                .map(|_| reserve_for_this_thread().map(|r| r.cpu))
                .collect::<Vec<_>>()
        })
    })
    .join()
    .unwrap();
    assert_eq!(got, vec![None, None, None]);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert_eq!(
        text.matches("cannot pin the unpack decoder").count(),
        1,
        "{text}"
    );
    assert!(text.contains("Operation not permitted"), "{text}");
    // Without the filter, pinning works here: the refusal above was the filter's doing.
    let r = std::thread::spawn(|| reserve_for_this_thread().map(|r| r.cpu))
        .join()
        .unwrap();
    assert!(r.is_some(), "pinning failed without a filter");
}
