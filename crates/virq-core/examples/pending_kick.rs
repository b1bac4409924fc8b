//! A host program playing a hypervisor: the pending set ([`virq_core::pending`]) and
//! vCPU blocking and kicks ([`virq_core::block`]), with migration.
//!
//! Two threads play physical harts, each running the vCPUs homed on it; three threads
//! play emulated devices (a vUART, a virtio queue, ...) that raise their interrupt line
//! from wherever they run. The guest in each vCPU services a device when its line is
//! high and otherwise executes WFI, which blocks the vCPU until a producer kicks it. One
//! vCPU migrates between the harts after every run, under fire. The program ends when
//! every event has been serviced — a lost wake-up would leave a vCPU asleep with its
//! line high, and the watchdog would fail the run.
//!
//! ```sh
//! cargo run -p virq-core --example pending_kick
//! ```
//!
//! What each side must do (the rules in the module docs):
//! - a producer calls `PendingSet::raise`; when it returns `true` it calls
//!   `VcpuBlock::kick` and notifies (IPIs) the hart that returns — here `Thread::unpark`;
//! - the home hart, before every guest entry, calls `VcpuBlock::take_kick` and *then*
//!   takes the pending changes; on a guest WFI it calls `VcpuBlock::block` and sleeps only
//!   on `BlockOutcome::Blocked`;
//! - a hart with nothing runnable re-checks after clearing its notification latch (a
//!   `park` token here, `sip.SSIP` on RISC-V) and only then sleeps;
//! - migration: the old home, with the vCPU descheduled, calls `VcpuBlock::migrate(to)`
//!   and then notifies `to`.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use virq_core::block::{BlockOutcome, VcpuBlock};
use virq_core::pending::VcpuPending;

const HARTS: usize = 2;
const VCPUS: usize = 3;
const DEVICES: usize = 3;
const EVENTS_PER_DEVICE: u64 = 20_000;
/// This vCPU moves to the other hart after each of its runs.
const WANDERER: usize = 2;

/// An emulated level-triggered device: events not yet serviced, behind the device lock.
/// Its line is high while `unserviced > 0`; the line follows the state because both
/// change under the same lock.
struct Device {
    irq: u32,
    vcpu: usize,
    unserviced: Mutex<u64>,
}

/// One vCPU: the lock-free producer side, and the consumer state only its running hart
/// touches (the mutex is the "running on one hart at a time" rule, never contended).
struct Vcpu {
    pending: VcpuPending,
    block: VcpuBlock,
    guest: Mutex<GuestState>,
}

/// What the home hart keeps for the vCPU: the shadow of the interrupt-pending register
/// (RISC-V `hvip`, Arm list registers) and the guest's progress.
struct GuestState {
    shadow: [usize; 1],
    serviced: u64,
}

struct Machine {
    vcpus: Vec<Vcpu>,
    devices: Vec<Device>,
    harts: OnceLock<Vec<Thread>>,
    stop: AtomicBool,
    kicks: AtomicU64,
    blocks: AtomicU64,
    migrations: AtomicU64,
}

impl Machine {
    /// The IPI: wake hart `h` from its `wfi` (here: its `park`).
    fn notify(&self, h: usize) {
        self.harts.get().expect("harts registered")[h].unpark();
    }

    /// A producer: one more event on device `d`, and its line goes (stays) high.
    fn device_event(&self, d: &Device) {
        let kick = {
            let mut n = d.unserviced.lock().unwrap();
            *n += 1;
            self.vcpus[d.vcpu]
                .pending
                .raise(d.irq)
                .expect("id in range")
        };
        if kick {
            self.kicks.fetch_add(1, Ordering::Relaxed);
            let home = self.vcpus[d.vcpu].block.kick();
            self.notify(home);
        }
    }

    /// Hart `me` runs vCPU `v` until its guest waits for an interrupt.
    fn run_vcpu(&self, me: usize, v: usize) {
        let vcpu = &self.vcpus[v];
        let mut guest = vcpu.guest.lock().unwrap();
        // Picked because runnable: a kicked vCPU stops waiting.
        vcpu.block.unblock();
        loop {
            // Guest entry: the kick first, then the changes — every raise whose kick
            // this consumes is in what the take returns.
            vcpu.block.take_kick();
            if vcpu.pending.has_changes() {
                vcpu.pending.take_changes().apply(&mut guest.shadow);
            }
            // The guest runs: it services each device whose line it sees high.
            let mut serviced = 0;
            for d in self.devices.iter().filter(|d| d.vcpu == v) {
                if guest.shadow[0] & (1 << d.irq) != 0 {
                    let mut n = d.unserviced.lock().unwrap();
                    serviced += std::mem::take(&mut *n);
                    // Serviced: the device drops its line (`lower` never needs a kick).
                    vcpu.pending.lower(d.irq).expect("id in range");
                }
            }
            guest.serviced += serviced;
            if serviced > 0 {
                continue;
            }
            // Nothing to do: the guest executes WFI.
            match vcpu.block.block() {
                BlockOutcome::StayRunnable => continue,
                BlockOutcome::Blocked => break,
            }
        }
        self.blocks.fetch_add(1, Ordering::Relaxed);
        drop(guest);
        if v == WANDERER {
            // Descheduled on its home hart: hand it over, then notify the new home.
            let to = (me + 1) % HARTS;
            vcpu.block.migrate(to);
            self.migrations.fetch_add(1, Ordering::Relaxed);
            self.notify(to);
        }
    }

    /// The scheduler loop of hart `me`.
    fn hart(&self, me: usize) {
        loop {
            let mut ran = false;
            for v in 0..VCPUS {
                let b = &self.vcpus[v].block;
                if b.home() == me && b.runnable() {
                    self.run_vcpu(me, v);
                    ran = true;
                }
            }
            if ran {
                continue;
            }
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            // Nothing runnable: sleep. A notification since the last `park` left the
            // token set, so `park` returns at once — the `sip.SSIP` latch.
            thread::park();
        }
    }
}

fn main() {
    let machine = Arc::new(Machine {
        vcpus: (0..VCPUS)
            .map(|v| Vcpu {
                pending: VcpuPending::new(),
                block: VcpuBlock::new(v % HARTS),
                guest: Mutex::new(GuestState {
                    shadow: [0],
                    serviced: 0,
                }),
            })
            .collect(),
        devices: (0..DEVICES)
            .map(|d| Device {
                irq: 8 + d as u32,
                vcpu: d % VCPUS,
                unserviced: Mutex::new(0),
            })
            .collect(),
        harts: OnceLock::new(),
        stop: AtomicBool::new(false),
        kicks: AtomicU64::new(0),
        blocks: AtomicU64::new(0),
        migrations: AtomicU64::new(0),
    });

    let start = Instant::now();
    let registered = Arc::new(Barrier::new(HARTS + 1));
    let harts: Vec<_> = (0..HARTS)
        .map(|h| {
            let (m, r) = (machine.clone(), registered.clone());
            thread::spawn(move || {
                r.wait();
                m.hart(h);
            })
        })
        .collect();
    let _ = machine
        .harts
        .set(harts.iter().map(|h| h.thread().clone()).collect());
    registered.wait();

    let producers: Vec<_> = (0..DEVICES)
        .map(|d| {
            let m = machine.clone();
            thread::spawn(move || {
                for i in 0..EVENTS_PER_DEVICE {
                    m.device_event(&m.devices[d]);
                    if i % 64 == 0 {
                        // Let the vCPU catch up and block now and then.
                        thread::sleep(Duration::from_micros(50));
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }

    // Every event must be serviced without anyone poking the vCPUs: a lost wake-up
    // leaves a vCPU blocked with its line high, and this watchdog fires.
    let total = DEVICES as u64 * EVENTS_PER_DEVICE;
    let serviced = |m: &Machine| -> u64 {
        m.vcpus
            .iter()
            .map(|v| v.guest.lock().unwrap().serviced)
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while serviced(&machine) < total {
        assert!(
            Instant::now() < deadline,
            "lost wake-up: {} of {total} events serviced",
            serviced(&machine)
        );
        thread::sleep(Duration::from_millis(1));
    }
    machine.stop.store(true, Ordering::SeqCst);
    for h in 0..HARTS {
        machine.notify(h);
    }
    for h in harts {
        h.join().unwrap();
    }
    for (i, v) in machine.vcpus.iter().enumerate() {
        assert!(v.block.is_blocked(), "vCPU {i} idles blocked at the end");
    }
    println!(
        "pending_kick: {total} events serviced by {VCPUS} vCPUs on {HARTS} harts in {:?}: \
         {} kicks, {} blocks, {} migrations, 0 lost wake-ups",
        start.elapsed(),
        machine.kicks.load(Ordering::Relaxed),
        machine.blocks.load(Ordering::Relaxed),
        machine.migrations.load(Ordering::Relaxed),
    );
}
