//! A virtual hart: its saved state, its pending interrupts and its HSM state.
//!
//! # Concurrency
//!
//! A vCPU runs on its *home hart*; only that hart locks `inner`, enters the guest and
//! consumes `pending` (`PendingSet`'s single consumer). Blocking in WFI, kicks and the
//! home hart are virq-core's [`VcpuBlock`] (its module docs hold the protocol and the
//! loom models): a producer raises an id in `pending` and then [`Vcpu::kick`]s, which
//! marks the vCPU kicked and IPIs its home hart; the home hart consumes the kick right
//! before it takes the pending changes (`sched::run_vcpu`) and sleeps on a guest WFI
//! only if no kick came since ([`wfi`]). The home changes only by a migration
//! (`sched::migrate`), made by the old home hart itself while the vCPU is descheduled.
//! Other harts also move `hsm` from STOPPED to START_PENDING (SBI HSM `hart_start`),
//! writing `start` under its lock first.
//!
//! The table of all vCPUs (`World::vcpus`) is published here by `world::set_world`
//! ([`vcpus`]), for the layers below the world.
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use spin::{Mutex, Once};
use virq_core::block::{BlockOutcome, VcpuBlock};
use virq_core::pending::VcpuPending;
use virq_riscv::hext::HvipSync;
use virq_riscv::sbi::GuestHarts;

use crate::arch::csr::{self, hstatus_bits, irq_bits, sstatus_bits};
use crate::arch::switch::FpState;
use crate::arch::Context;
use crate::counts::ExitCounts;
use crate::ids::GuestVcpuId;

/// HSM: stopped.
pub const HSM_STOPPED: u8 = 1;
/// HSM: start requested, the home hart has not run it yet.
pub const HSM_START_PENDING: u8 = 2;
/// HSM: started.
pub const HSM_STARTED: u8 = 0;
/// HSM: suspended by `hart_suspend` or SUSP (blocked like WFI); set and cleared only
/// by the home hart (`sbi::suspend`, back to STARTED when it runs again).
pub const HSM_SUSPENDED: u8 = 3;

static VCPUS: Once<&'static [Vcpu]> = Once::new();

/// Publish the vCPU table (`world::set_world`, boot hart, once).
pub fn publish(vcpus: &'static [Vcpu]) {
    VCPUS.call_once(|| vcpus);
}

/// All vCPUs of all guests (`World::vcpus`), by global index.
pub fn vcpus() -> &'static [Vcpu] {
    VCPUS.get().expect("world built before use")
}

/// What the scheduler does next with the vCPU after an exit.
pub enum Next {
    /// Enter the guest again (unless the slice is over).
    Resume,
    /// Leave it: blocked, stopped or shut down.
    Leave,
}

/// Guest WFI (and HSM retentive suspend): block unless an enabled VS interrupt is
/// pending in hardware, a kick came since the last flush (virq-core `VcpuBlock`: a
/// raise not yet taken always has one), or the guest timer is due.
pub fn wfi(vcpu: &Vcpu, inner: &mut VcpuInner) -> Next {
    let vs_bits = irq_bits::VSSI | irq_bits::VSTI | irq_bits::VSEI;
    if csr::hip::read() & csr::hie::read() & vs_bits != 0 {
        return Next::Resume;
    }
    let deadline = if crate::platform::platform().sstc {
        csr::vstimecmp::read() as u64
    } else {
        inner.timer_deadline
    };
    vcpu.wake_at.store(deadline, Ordering::Release);
    if vcpu.block.block() == BlockOutcome::StayRunnable {
        return Next::Resume;
    }
    if crate::arch::time() >= deadline {
        vcpu.block.unblock();
        return Next::Resume;
    }
    Next::Leave
}

/// VS-level CSRs kept while the vCPU is not loaded on its hart.
#[derive(Clone, Copy, Debug, Default)]
pub struct VsCsrs {
    /// `vsstatus`.
    pub vsstatus: usize,
    /// `vsie`.
    pub vsie: usize,
    /// `vstvec`.
    pub vstvec: usize,
    /// `vsscratch`.
    pub vsscratch: usize,
    /// `vsepc`.
    pub vsepc: usize,
    /// `vscause`.
    pub vscause: usize,
    /// `vstval`.
    pub vstval: usize,
    /// `vsatp`.
    pub vsatp: usize,
    /// `vstimecmp` (Sstc).
    pub vstimecmp: usize,
}

/// State only the home hart touches.
pub struct VcpuInner {
    /// GPRs and trap CSRs (the world switch).
    pub ctx: Context,
    /// VS CSRs while not loaded.
    pub vs: VsCsrs,
    /// Shadow of `hvip`.
    pub hvip: HvipSync<{ 64 / usize::BITS as usize }>,
    /// FP registers.
    pub fp: FpState,
    /// Emulated timer deadline (when the hart has no Sstc).
    pub timer_deadline: u64,
}

/// A vCPU.
pub struct Vcpu {
    /// Index in `World::vcpus` (global: all guests' vCPUs).
    pub index: usize,
    /// Guest index.
    pub guest: usize,
    /// Id inside the guest (the hart id it sees, SBI hart id, its per-vCPU slot).
    pub id: GuestVcpuId,
    /// Its guest's vCPU count, as the SBI decoder takes it (kept here so that an SBI
    /// call needs no look-up of the guest).
    pub guest_harts: GuestHarts,
    /// Blocked in WFI (or HSM retentive suspend), kicked, and the index of the current
    /// home hart in `World::harts` (see the module docs).
    pub block: VcpuBlock,
    /// Index of the hart the vCPU was first homed on (a guest's physical interrupts
    /// stay routed to its vCPU 0's first hart).
    pub first_hart: usize,
    /// Pending VS interrupts (VSSIP is the guest-clearable handoff id).
    pub pending: VcpuPending,
    /// HSM state (`HSM_*`).
    pub hsm: AtomicU8,
    /// Time at which a blocked vCPU's timer fires (u64::MAX = never).
    pub wake_at: AtomicU64,
    /// `(start_addr, opaque)` of the next HSM start.
    pub start: Mutex<(usize, usize)>,
    /// Home-hart state.
    pub inner: Mutex<VcpuInner>,
    /// Exit accounting.
    pub acct: ExitCounts,
    /// Its home hart is running it (from before its first entry to after its last
    /// exit, `sched::run_vcpu`). Written by the home hart and read in [`Vcpu::kick`]
    /// only when the kicker is the home hart: one hart's own accesses.
    pub loaded: AtomicBool,
}

impl Vcpu {
    /// A stopped vCPU.
    pub fn new(index: usize, guest: usize, id: u32, hart: usize, guest_harts: GuestHarts) -> Vcpu {
        Vcpu {
            index,
            guest,
            id: GuestVcpuId(id),
            guest_harts,
            block: VcpuBlock::new(hart),
            first_hart: hart,
            pending: VcpuPending::with_handoff(&[virq_riscv::hext::IRQ_VS_SOFT])
                .expect("id 2 is below NR_IRQS"),
            hsm: AtomicU8::new(HSM_STOPPED),
            wake_at: AtomicU64::new(u64::MAX),
            start: Mutex::new((0, 0)),
            inner: Mutex::new(VcpuInner {
                ctx: Context::default(),
                vs: VsCsrs {
                    vstimecmp: usize::MAX,
                    ..VsCsrs::default()
                },
                hvip: HvipSync::new(),
                fp: FpState::default(),
                timer_deadline: u64::MAX,
            }),
            acct: ExitCounts::new(),
            loaded: AtomicBool::new(false),
        }
    }

    /// Raise interrupt `irq` (2, 6 or 10) and kick the vCPU if it must look.
    pub fn raise(&self, irq: u32) {
        if self.pending.raise(irq) == Ok(true) {
            self.kick();
        }
    }

    /// Lower interrupt `irq`. A lowered level needs no kick: the vCPU drops it at its
    /// next entry, and a spurious interrupt in between is allowed by the spec.
    pub fn lower(&self, irq: u32) {
        let _ = self.pending.lower(irq);
    }

    /// Make the vCPU look at its pending set soon: mark it kicked (runnable) and IPI
    /// its home hart (unless that is this hart, which re-evaluates before entering any
    /// guest). The IPI only wakes the hart; the ordering is the kick's (`VcpuBlock`).
    pub fn kick(&self) {
        let home = self.block.kick();
        // The home hart kicking the vCPU it runs: the vCPU takes the kick before it
        // enters the guest again (`sched::run_vcpu`), no scheduling decision changed.
        if home == crate::arch::hart_local() && self.loaded.load(Ordering::Relaxed) {
            return;
        }
        crate::hart::poke_hart(home);
    }

    /// The vCPUs of its guest, in id order (`Guest::vcpu_slice`, found without the
    /// guest: a guest's vCPUs are consecutive in the table, vCPU `i` of the guest at
    /// the guest's first index + `i`).
    pub fn guest_vcpus(&self) -> &'static [Vcpu] {
        let first = self.index - self.id.slot();
        &vcpus()[first..first + self.guest_harts.count()]
    }

    /// The current home hart (index in `World::harts`).
    pub fn home(&self) -> usize {
        self.block.home()
    }

    /// Is the vCPU eligible to run (started or starting, not blocked)?
    pub fn eligible(&self) -> bool {
        self.hsm.load(Ordering::Acquire) != HSM_STOPPED && self.block.runnable()
    }
}

impl VcpuInner {
    /// Reset for an HSM start / boot: `a0 = hartid`, `a1 = opaque`, pc = `entry`, in
    /// VS-mode with the VS-stage off and interrupts disabled (SBI HSM's start state).
    pub fn reset(&mut self, id: GuestVcpuId, entry: usize, opaque: usize) {
        self.ctx = Context::default();
        self.ctx.guest.x[10] = id.hartid();
        self.ctx.guest.x[11] = opaque;
        self.ctx.guest.sepc = entry;
        self.ctx.guest.sstatus = sstatus_bits::SPP | sstatus_bits::FS_INITIAL;
        self.ctx.guest.hstatus =
            hstatus_bits::SPV | hstatus_bits::SPVP | hstatus_bits::VTW | (2 << 32);
        self.vs = VsCsrs {
            vsstatus: 2 << 32,
            vstimecmp: usize::MAX,
            ..VsCsrs::default()
        };
        self.fp = FpState::default();
        self.timer_deadline = u64::MAX;
        // A fresh start has nothing pending in hardware (stale ids in the PendingSet
        // are flushed at the first entry).
        self.hvip = HvipSync::new();
    }

    /// Put this vCPU's VS state into the hart (before running it).
    pub fn load(&mut self, hgatp: usize, sstc: bool) {
        csr::hgatp::write(hgatp);
        crate::arch::hfence_gvma_all();
        csr::vsstatus::write(self.vs.vsstatus);
        csr::vsie::write(self.vs.vsie);
        csr::vstvec::write(self.vs.vstvec);
        csr::vsscratch::write(self.vs.vsscratch);
        csr::vsepc::write(self.vs.vsepc);
        csr::vscause::write(self.vs.vscause);
        csr::vstval::write(self.vs.vstval);
        csr::vsatp::write(self.vs.vsatp);
        if sstc {
            csr::vstimecmp::write(self.vs.vstimecmp);
        }
        crate::arch::hfence_vvma_all();
        csr::sstatus::set(sstatus_bits::FS_INITIAL);
        self.fp.restore();
        // `HvipSync` remembers what it last wrote; after `put` that equals its shadow.
        csr::hvip::write(self.hvip.shadow_hvip() as usize);
    }

    /// Save this vCPU's VS state from the hart (after running it).
    pub fn put(&mut self, sstc: bool) {
        self.vs.vsstatus = csr::vsstatus::read();
        self.vs.vsie = csr::vsie::read();
        self.vs.vstvec = csr::vstvec::read();
        self.vs.vsscratch = csr::vsscratch::read();
        self.vs.vsepc = csr::vsepc::read();
        self.vs.vscause = csr::vscause::read();
        self.vs.vstval = csr::vstval::read();
        self.vs.vsatp = csr::vsatp::read();
        if sstc {
            self.vs.vstimecmp = csr::vstimecmp::read();
            // Park the timer so it cannot fire for the next vCPU.
            csr::vstimecmp::write(usize::MAX);
        }
        if self.ctx.guest.sstatus & sstatus_bits::FS_MASK == sstatus_bits::FS_DIRTY {
            self.fp.save();
            self.ctx.guest.sstatus =
                (self.ctx.guest.sstatus & !sstatus_bits::FS_MASK) | sstatus_bits::FS_INITIAL;
        }
        self.hvip.sync(&crate::arch::csr::HartCsrs);
    }
}
