//! A host program playing a hypervisor: a doorbell ([`virq_core::doorbell`]) wakes a
//! vCPU whose interrupts bypass the hypervisor.
//!
//! The vCPU owns a *hardware* interrupt file (a RISC-V IMSIC guest file, a GICv4 vPE):
//! a device thread posts MSIs straight into it, and while the vCPU runs the guest takes
//! them with no exit. When the guest waits (WFI) and the vCPU is descheduled, nothing
//! would wake it — so the hypervisor unmasks the file's *doorbell*, an interrupt to the
//! host that fires when the file has something pending; the doorbell handler kicks the
//! vCPU ([`virq_core::block`]). The fake hardware here is the awkward kind: it signals
//! the doorbell only when an MSI lands while it is enabled, never for one that landed
//! while it was masked (QEMU 10.0.2's `hip.SGEIP`, GICv4.1's PendingLast) — which is
//! why [`DoorbellHw::unmask`] reads the source back.
//!
//! ```sh
//! cargo run -p virq-core --example doorbell
//! ```
//!
//! The call order (what hyp does): on a guest WFI `VcpuBlock::block`; when the vCPU
//! leaves the hart, `Doorbell::put(hw, blocking)` with `blocking = is_blocked()`, and on
//! `StayRunnable` with `blocking` the vCPU is unblocked again; in the doorbell interrupt
//! handler `Doorbell::fire(hw)` and, on `true`, a kick; when the vCPU is loaded again,
//! `Doorbell::load(hw)`.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use virq_core::block::{BlockOutcome, VcpuBlock};
use virq_core::doorbell::{Doorbell, DoorbellHw, PutOutcome};

const MSIS: u64 = 50_000;

/// The vCPU's hardware interrupt file and its doorbell enable. Every access is a SeqCst
/// RMW, as a device register access is ordered for the CPU doing it.
#[derive(Default)]
struct HwFile {
    /// MSIs in the file the guest has not taken yet (the doorbell's *source*).
    pending: AtomicU64,
    /// The doorbell's enable (RISC-V: the line's `hgeie` bit).
    enabled: AtomicBool,
}

impl DoorbellHw for HwFile {
    fn mask(&self) {
        self.enabled.swap(false, Ordering::SeqCst);
    }
    fn unmask(&self) -> bool {
        self.enabled.swap(true, Ordering::SeqCst);
        // The hardware will not signal what landed while masked: report it.
        self.pending.fetch_add(0, Ordering::SeqCst) != 0
    }
}

struct Machine {
    file: HwFile,
    doorbell: Doorbell,
    block: VcpuBlock,
    hart: OnceLock<Thread>,
    stop: AtomicBool,
    taken: AtomicU64,
    fired: AtomicU64,
    refused: AtomicU64,
}

impl Machine {
    /// A device posts an MSI into the file. If the doorbell is enabled the hardware
    /// raises it: the doorbell interrupt handler runs (here, on the device's thread).
    fn post_msi(&self) {
        self.file.pending.fetch_add(1, Ordering::SeqCst);
        if self.file.enabled.fetch_or(false, Ordering::SeqCst) {
            self.doorbell_irq();
        }
    }

    /// The host's doorbell interrupt handler.
    fn doorbell_irq(&self) {
        if self.doorbell.fire(&self.file) {
            self.fired.fetch_add(1, Ordering::Relaxed);
            // `fire` masked the doorbell; wake the vCPU's home hart.
            let _home = self.block.kick();
            self.hart.get().expect("hart registered").unpark();
        }
    }

    /// The hart: load the vCPU, run it until the guest waits, put it.
    fn hart(&self) {
        loop {
            if !self.block.runnable() {
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                thread::park();
                continue;
            }
            // vCPU load: resident again; the doorbell is masked while it runs.
            self.block.unblock();
            let _fired_while_away = self.doorbell.load(&self.file);
            loop {
                self.block.take_kick();
                // The guest takes every MSI in its file, with no exit.
                let n = self.file.pending.swap(0, Ordering::SeqCst);
                if n > 0 {
                    self.taken.fetch_add(n, Ordering::Relaxed);
                    continue;
                }
                if self.block.block() == BlockOutcome::Blocked {
                    break;
                }
            }
            // vCPU put: blocking, so the doorbell is armed — unless the source is
            // already pending, and then the vCPU stays runnable.
            let blocking = self.block.is_blocked();
            if self.doorbell.put(&self.file, blocking) == PutOutcome::StayRunnable && blocking {
                self.refused.fetch_add(1, Ordering::Relaxed);
                self.block.unblock();
            }
        }
    }
}

fn main() {
    let m = Arc::new(Machine {
        file: HwFile::default(),
        doorbell: Doorbell::new(),
        block: VcpuBlock::new(0),
        hart: OnceLock::new(),
        stop: AtomicBool::new(false),
        taken: AtomicU64::new(0),
        fired: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    });
    let start = Instant::now();
    let hart = {
        let m = m.clone();
        thread::spawn(move || {
            thread::park(); // until registered
            m.hart();
        })
    };
    let _ = m.hart.set(hart.thread().clone());
    hart.thread().unpark();

    let device = {
        let m = m.clone();
        thread::spawn(move || {
            for i in 0..MSIS {
                m.post_msi();
                if i % 32 == 0 {
                    thread::sleep(Duration::from_micros(20));
                }
            }
        })
    };
    device.join().unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    while m.taken.load(Ordering::Relaxed) < MSIS {
        assert!(
            Instant::now() < deadline,
            "lost doorbell: {} of {MSIS} MSIs taken, vCPU blocked = {}, doorbell {:?}",
            m.taken.load(Ordering::Relaxed),
            m.block.is_blocked(),
            m.doorbell.state()
        );
        thread::sleep(Duration::from_millis(1));
    }
    m.stop.store(true, Ordering::SeqCst);
    m.hart.get().unwrap().unpark();
    hart.join().unwrap();
    println!(
        "doorbell: {MSIS} MSIs taken by the guest in {:?}; the doorbell woke the vCPU {} \
         times and put refused to block {} times on a source already pending",
        start.elapsed(),
        m.fired.load(Ordering::Relaxed),
        m.refused.load(Ordering::Relaxed),
    );
}
