//! A host program playing a hypervisor: a level-triggered physical interrupt passed
//! through to a guest with the routing table ([`virq_core::route`]) and ack notifiers
//! ([`virq_core::ack`]).
//!
//! A device thread asserts a physical level line whenever it has unserviced work. The
//! host's interrupt handler (running on whichever thread raised the line, as an
//! interrupt runs on whichever hart takes it) claims it, asks the routing table where
//! it goes, marks the virtual interrupt in flight and injects it into the vCPU. The
//! route is level, so the physical complete — which reopens the gateway — waits for the
//! guest: the vCPU thread services the device, completes the virtual interrupt (a
//! trapped PLIC complete), and the ack notifier completes the physical one. Completing
//! at once instead would re-fire the still-asserted line over and over before the guest
//! ran (the storm of seed 001's review). At the end the route is released while the
//! device still asserts its line, and a stale completion from the old route is refused
//! after the interrupt is routed again.
//!
//! ```sh
//! cargo run -p virq-core --example passthrough
//! ```
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use virq_core::ack::{AckNotifiers, InFlight};
use virq_core::block::{BlockOutcome, VcpuBlock};
use virq_core::pending::VcpuPending;
use virq_core::route::{EoiAction, RouteTable, Trigger};

const PIRQ: u32 = 33;
const VIRQ: u32 = 10;
const GUEST: u16 = 1;
const EVENTS: u64 = 20_000;

/// The physical interrupt controller's view of one source: its line and its gateway
/// (closed from claim to complete).
#[derive(Default)]
struct PhysSource {
    line: bool,
    in_service: bool,
    /// Disabled at the controller (a source with no route must not fire).
    masked: bool,
}

struct Host {
    phys: Mutex<PhysSource>,
    routes: RouteTable<64>,
    acks: AckNotifiers<64>,
    /// The guest's single vCPU.
    inflight: InFlight<8>,
    pending: VcpuPending,
    block: VcpuBlock,
    vcpu_thread: std::sync::OnceLock<thread::Thread>,
    /// The device: work not yet serviced; its line is high while non-zero.
    work: Mutex<u64>,
    host_irqs: AtomicU64,
    guest_eois: AtomicU64,
    serviced: AtomicU64,
    stop: AtomicBool,
}

impl Host {
    /// The physical controller: set the line; a high line with an open gateway is
    /// claimed (gateway closed) and handled.
    fn set_line(&self, level: bool) {
        let take = {
            let mut s = self.phys.lock().unwrap();
            s.line = level;
            s.line && !s.in_service && !s.masked && {
                s.in_service = true;
                true
            }
        };
        if take {
            self.host_irq(PIRQ);
        }
    }

    /// The physical complete: reopen the gateway; a still-high line fires again.
    fn complete_physical(&self) {
        let again = {
            let mut s = self.phys.lock().unwrap();
            s.in_service = s.line && !s.masked;
            s.in_service
        };
        if again {
            self.host_irq(PIRQ);
        }
    }

    /// The host interrupt handler for a claimed physical interrupt.
    fn host_irq(&self, pirq: u32) {
        self.host_irqs.fetch_add(1, Ordering::Relaxed);
        let Some(d) = self.routes.deliver(pirq) else {
            // Not routed (released a moment ago): disable the source and complete it.
            self.phys.lock().unwrap().masked = true;
            self.complete_physical();
            return;
        };
        // In flight *before* the guest can see it, so a completion is never missed.
        self.inflight
            .mark(&self.acks, d.virq())
            .expect("in-flight slot");
        if self.pending.raise(d.virq()).expect("id in range") {
            let _home = self.block.kick();
            self.vcpu_thread.get().expect("registered").unpark();
        }
        let eoi = d.eoi();
        // Drop the guard before completing: `release` waits for it, and the complete
        // may re-enter this handler.
        drop(d);
        match eoi {
            EoiAction::CompleteNow => self.complete_physical(),
            EoiAction::DeferToGuest => {}
        }
    }

    /// The guest completed virtual interrupt `virq` (a trapped PLIC complete, or found
    /// deactivated by `InFlight::fold` at exit). The notifier runs with no lock held.
    fn guest_eoi(&self, virq: u32) {
        self.guest_eois.fetch_add(1, Ordering::Relaxed);
        self.inflight.deactivate(virq, |_virq, token| {
            if self.routes.guest_completed(token) == Ok(true) {
                self.complete_physical();
            }
        });
    }

    /// The vCPU: run the guest until it waits, sleep until kicked.
    fn vcpu(&self) {
        let mut shadow = [0usize; 1];
        loop {
            self.block.take_kick();
            if self.pending.has_changes() {
                self.pending.take_changes().apply(&mut shadow);
            }
            if shadow[0] & (1 << VIRQ) != 0 {
                // The guest's handler: service the device (its line drops), then
                // complete the virtual interrupt. The virtual line is the injected
                // request, lowered at the complete.
                {
                    let mut work = self.work.lock().unwrap();
                    self.serviced
                        .fetch_add(std::mem::take(&mut *work), Ordering::Relaxed);
                    // The line follows the device state: changed under its lock.
                    self.set_line(false);
                }
                self.pending.lower(VIRQ).expect("id in range");
                shadow[0] &= !(1 << VIRQ);
                self.guest_eoi(VIRQ);
                continue;
            }
            if self.block.block() == BlockOutcome::Blocked {
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                while !self.block.runnable() && !self.stop.load(Ordering::SeqCst) {
                    thread::park();
                }
                self.block.unblock();
            }
        }
    }
}

fn main() {
    let h = Arc::new(Host {
        phys: Mutex::new(PhysSource::default()),
        routes: RouteTable::new(),
        acks: AckNotifiers::new(),
        inflight: InFlight::new(),
        pending: VcpuPending::new(),
        block: VcpuBlock::new(0),
        vcpu_thread: std::sync::OnceLock::new(),
        work: Mutex::new(0),
        host_irqs: AtomicU64::new(0),
        guest_eois: AtomicU64::new(0),
        serviced: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });

    // Control plane: route the level source and register its ack notifier.
    let token = h.routes.route(PIRQ, GUEST, VIRQ, Trigger::Level).unwrap();
    h.acks.register(VIRQ, token).unwrap();

    let start = Instant::now();
    let vcpu = {
        let h = h.clone();
        thread::spawn(move || {
            thread::park();
            h.vcpu();
        })
    };
    let _ = h.vcpu_thread.set(vcpu.thread().clone());
    vcpu.thread().unpark();

    let device = {
        let h = h.clone();
        thread::spawn(move || {
            for i in 0..EVENTS {
                let mut work = h.work.lock().unwrap();
                *work += 1;
                h.set_line(true);
                drop(work);
                if i % 16 == 0 {
                    thread::sleep(Duration::from_micros(20));
                }
            }
        })
    };
    device.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.serviced.load(Ordering::Relaxed) < EVENTS {
        assert!(Instant::now() < deadline, "events left unserviced");
        thread::sleep(Duration::from_millis(1));
    }
    let irqs = h.host_irqs.load(Ordering::Relaxed);
    // The gateway reopens only at the guest's completion: one physical interrupt per
    // virtual completion at most. Completing at once would fire again and again while
    // the line is high (this would then be far above the guest's completions).
    assert!(
        irqs <= h.guest_eois.load(Ordering::Relaxed) + 1,
        "interrupt storm"
    );
    println!(
        "passthrough: {EVENTS} device events serviced by the guest in {:?} with {irqs} \
         physical interrupts (never more than one per guest completion: no storm)",
        start.elapsed()
    );

    // Stop the vCPU: the guest completes nothing from here on.
    h.stop.store(true, Ordering::SeqCst);
    let _ = h.block.kick();
    vcpu.thread().unpark();
    vcpu.join().unwrap();

    // One more event: delivered, in flight, its physical complete deferred to a guest
    // that will not run. Tear the route down: disable the source, then release — which
    // waits for deliveries in progress and hands the deferred complete to the caller.
    *h.work.lock().unwrap() += 1;
    h.set_line(true);
    h.phys.lock().unwrap().masked = true;
    let released = h.routes.release(PIRQ, GUEST).unwrap();
    assert!(
        released.complete_physical,
        "the deferred complete is ours now"
    );
    h.complete_physical();
    let old_token = h.acks.unregister(VIRQ).unwrap();

    // Route the source to another guest: a new generation, a new token. The old
    // guest's late completion (its in-flight entry captured the old token) is refused
    // and does not complete the new route's interrupt before its guest serviced it.
    let new_token = h
        .routes
        .route(PIRQ, GUEST + 1, VIRQ, Trigger::Level)
        .unwrap();
    assert_ne!(old_token, new_token);
    drop(h.routes.deliver(PIRQ));
    h.guest_eoi(VIRQ);
    assert_eq!(
        h.routes.guest_completed(new_token),
        Ok(true),
        "still deferred"
    );
    println!(
        "passthrough: release handed back the deferred physical complete; a stale \
         completion after the re-route was refused"
    );
}
