//! `--decoder-cpu auto`: a running decoder has a CPU to itself, the process's other threads
//! keep the rest, and everything is as before once it ends. Its own test binary: the pins
//! apply to every thread of the process.

use std::sync::mpsc;
use std::thread;

use ossrelay::transfer::affinity::{reserve_for_this_thread, this_thread_cpus, Reservation};

/// A thread that reports its CPUs each time it is asked, until the sender is dropped.
fn bystander() -> (mpsc::Sender<()>, mpsc::Receiver<Vec<usize>>) {
    let (ask_tx, ask_rx) = mpsc::channel::<()>();
    let (tell_tx, tell_rx) = mpsc::channel();
    thread::spawn(move || {
        while ask_rx.recv().is_ok() {
            tell_tx.send(this_thread_cpus().unwrap()).unwrap();
        }
    });
    (ask_tx, tell_rx)
}

fn ask(b: &(mpsc::Sender<()>, mpsc::Receiver<Vec<usize>>)) -> Vec<usize> {
    b.0.send(()).unwrap();
    b.1.recv().unwrap()
}

/// Reserves on a new thread and keeps the reservation there until told to drop it.
fn decoder() -> (
    Option<usize>,
    Vec<usize>,
    mpsc::Sender<()>,
    thread::JoinHandle<Vec<usize>>,
) {
    let (got_tx, got_rx) = mpsc::channel();
    let (end_tx, end_rx) = mpsc::channel::<()>();
    let h = thread::spawn(move || {
        let r: Option<Reservation> = reserve_for_this_thread();
        got_tx
            .send((r.as_ref().map(|r| r.cpu), this_thread_cpus().unwrap()))
            .unwrap();
        let _ = end_rx.recv();
        drop(r);
        this_thread_cpus().unwrap()
    });
    let (cpu, cpus) = got_rx.recv().unwrap();
    (cpu, cpus, end_tx, h)
}

#[cfg(target_os = "linux")]
#[test]
fn a_reserved_cpu_is_the_decoders_alone_until_it_ends() {
    let all = this_thread_cpus().expect("sched_getaffinity");
    let other = bystander();
    assert_eq!(ask(&other), all);

    let (cpu, mine, end, h) = decoder();
    if all.len() < 2 {
        // Nothing to spare: no pins at all.
        assert_eq!(cpu, None);
        assert_eq!(ask(&other), all);
        end.send(()).unwrap();
        assert_eq!(h.join().unwrap(), all);
        return;
    }
    let cpu = cpu.expect("a CPU is reserved when two or more are allowed");
    assert_eq!(mine, vec![cpu], "the decoder runs on its CPU only");
    let rest: Vec<usize> = all.iter().copied().filter(|&c| c != cpu).collect();
    assert_eq!(
        ask(&other),
        rest,
        "other threads keep off the decoder's CPU"
    );
    assert_eq!(this_thread_cpus().unwrap(), rest);

    // A second decoder gets another CPU only if one still stays for everything else.
    let (cpu2, mine2, end2, h2) = decoder();
    if all.len() >= 3 {
        let cpu2 = cpu2.expect("a second CPU is reserved with three or more");
        assert_ne!(cpu2, cpu);
        assert_eq!(mine2, vec![cpu2]);
        assert!(!ask(&other).contains(&cpu2));
        assert_eq!(ask(&other).len(), all.len() - 2);
    } else {
        assert_eq!(cpu2, None, "the last CPU is never reserved");
        assert_eq!(mine2, rest, "an unpinned decoder shares the others' CPUs");
    }
    end2.send(()).unwrap();
    h2.join().unwrap();

    // Once the decoder ends, its thread and the others may run anywhere again.
    end.send(()).unwrap();
    assert_eq!(h.join().unwrap(), all, "the decoder's thread is unpinned");
    assert_eq!(ask(&other), all, "other threads get the decoder's CPU back");
    assert_eq!(this_thread_cpus().unwrap(), all);
}
