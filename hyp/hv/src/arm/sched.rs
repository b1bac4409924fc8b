//! Each CPU's loop on aarch64: the vCPUs homed on it (`Vcpu::block.home()`), in turn.
//! A vCPU's home is fixed, except with the test knob `migrate_ms` (see "Migration").
//!
//! ```text
//! loop:
//!   pick the next runnable vCPU here, round robin (runnable: not OFF, and not
//!   blocked in WFI or kicked since — virq-core `VcpuBlock`)
//!   none → arm the hyp timer for the earliest virtual-timer deadline of the blocked
//!          vCPUs not in the CPU, idle (acknowledge host interrupts, re-check, wfi)
//!   switch to it if another vCPU is in the CPU (arch::el1 save/restore)
//!   ON_PENDING → reset it (PSCI CPU_ON)
//!   run it: take the kick, flush the vGIC, enter, sync, handle the exit — until it
//!   blocks, is switched off, or its slice ends while another vCPU here is runnable
//! ```
//!
//! Host interrupts ([`drain`], EOImode 1): the kick SGI and the maintenance PPI are
//! deactivated at once (the flush/sync that follows does their work); the virtual
//! timer's PPI belongs to the vCPU in the CPU and stays active until its guest
//! deactivates the `HW`-linked virtual one; the passthrough SPI goes to its guest
//! (`exit::passthrough_irq`); the hyp timer (`CNTHP`, PPI 26) ends a slice and wakes
//! blocked vCPUs whose virtual timer is due while they are out of the CPU.
//!
//! A vCPU out of the CPU keeps its timer in its saved state; the hyp timer stands in
//! for it. When it is loaded again its own timer, restored, fires as before.
//!
//! # Migration
//!
//! With `[hyp] migrate_ms = N` every vCPU moves to the next CPU every N ms, placed as
//! on riscv64 (`crate::migrate::Periods`: in period `e`, CPU `(first_cpu + e) % n`, a
//! target CPU not yet online: it stays). A running vCPU leaves its CPU when a period
//! ends (the hyp timer is armed for it); the old home then does the whole hand-over
//! from its loop, with the vCPU descheduled ([`migrate`]):
//! 1. if its state is in the CPU (the last vCPU that ran here), `El1State::save`: EL1
//!    registers, its virtual timer (stopped here), `ICH_VMCR_EL2`, the active
//!    priorities, the list registers and the timer PPI's active state — everything
//!    `switch_to` moves when vCPUs share a CPU;
//! 2. its vPE (vgicv4), non-resident since the put at the end of its run: VMOVP to the
//!    new CPU's redistributor and MOVI of its doorbell to the new CPU's collection
//!    (`gicv4::move_to`), before anything else can make it resident;
//! 3. `moved` set (the new CPU drops the VMID's stage-1 TLB entries before it runs it),
//!    the new home stored (`VcpuBlock::migrate`: from now on kicks go there, and only it
//!    locks `saved`), [`MIGRATIONS`](crate::migrate::MIGRATIONS) counted, the new CPU's
//!    [`ARRIVALS`] bumped and the new CPU kicked. Its loop finds the vCPU among its own
//!    (`refresh`) and runs it as any other vCPU out of the CPU: restore, load (Valid
//!    0 → 1: QEMU scans the whole pending table, so a vLPI that became pending in
//!    memory while the vPE moved is taken).
//!
//! The arrival protocol (lockless, one counter per CPU): the old home stores the new
//! home, then bumps `ARRIVALS[to]` (Release), then sends the IPI; the new CPU reads
//! `ARRIVALS[self]` (Acquire) *before* it scans the homes (`refresh`), and while it
//! runs a vCPU it compares the counter with that value after every host interrupt
//! (the IPI is one), going back to its loop on a difference. A bump the read saw comes
//! with its home store (Release/Acquire), so the scan finds the vCPU; a bump it missed
//! differs at the next comparison, which the IPI after the bump brings at once. Either
//! way no newcomer waits for the running vCPU to block (it used to: Linux on 4 vCPUs /
//! 2 CPUs with `migrate_ms = 20` took 78 s instead of 28).
//!
//! A blocked vCPU migrates too, with its doorbell armed: one that rang before the move
//! and was not taken yet moves to the new CPU with the MOVI (the old home takes none
//! while it moves the vPE), later ones are raised there; the new CPU may take it before
//! it finds the vCPU among its own, so [`doorbell`] looks for the vPE among all vCPUs,
//! and `Doorbell::fire` orders it against the new home's load or put as it does any
//! fire. Kicks that read the old home are covered by
//! `VcpuBlock`'s protocol (the new home sees `KICKED`).
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use spin::Once;

use virq_core::block::BlockOutcome;
use virq_core::doorbell::PutOutcome;

use crate::arch::{self, gic, sysreg, Context, HartId, MAX_HARTS};
use crate::migrate::Periods;
use crate::println;

use super::exit::{self, Completions, ExitClass, Kicker, Next, CLASS_NAMES};
use super::gicv4;
use super::layout::UART_INTID;
use super::vm::{self, power, Saved, Vm};

/// Host interrupts counted per vCPU (`Vcpu::irqs`), in this order.
const IRQ_NAMES: [&str; 8] = [
    "kick",
    "maintenance",
    "vtimer",
    "passthrough",
    "hyptimer",
    "doorbell",
    "other",
    "lpi_on_exit",
];
/// `IRQ_NAMES` index of `lpi_on_exit` (counted in [`doorbell`], not by `drain`).
const LPI_ON_EXIT: usize = 7;
/// Longest slice of a vCPU while another one on its CPU is runnable: 5 ms of the
/// 1 GHz counter.
const SLICE: u64 = 5_000_000;
/// `CNTHP_CTL_EL2`: enabled, not masked.
const TIMER_ON: usize = 1;

/// CPUs whose loop runs (a migration's target must be).
static ONLINE: [AtomicBool; MAX_HARTS] = [const { AtomicBool::new(false) }; MAX_HARTS];
/// vCPUs migrated to each CPU so far: a CPU running a vCPU compares it after each host
/// interrupt (`run`) and goes back to its loop to take the new ones in (`refresh`).
static ARRIVALS: [AtomicUsize; MAX_HARTS] = [const { AtomicUsize::new(0) }; MAX_HARTS];
/// Runs a CPU left to take a vCPU that migrated in while it ran another
/// (`ACCT arrivals_while_running=`).
static TAKEN_IN: AtomicUsize = AtomicUsize::new(0);
/// The `migrate_ms` periods over the CPUs that run vCPUs.
static PERIODS: Once<Periods> = Once::new();

fn periods() -> &'static Periods {
    PERIODS.call_once(|| {
        Periods::new(
            vm::options().migrate_ms,
            sysreg::cntfrq_el0::read() as u64,
            vm::cpus(),
        )
    })
}

/// The CPU `vcpu` must move to in this period, if it is not there yet (`None`: no
/// migration, already in place, or its place is a CPU not yet online).
fn migration_target(vcpu: &vm::Vcpu) -> Option<usize> {
    let to = periods().place(vcpu.first_cpu, arch::time())?;
    (to != vcpu.block.home() && ONLINE.get(to)?.load(Ordering::Acquire)).then_some(to)
}

/// A vCPU: its guest and its index there.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Slot {
    vm: usize,
    v: usize,
}

/// One CPU's scheduling state.
struct Cpu {
    id: usize,
    /// The vCPUs homed here.
    mine: Vec<Slot>,
    /// Index in `mine` of the vCPU whose state is in the CPU.
    loaded: Option<usize>,
    /// Per guest: the vCPU of it that ran here last (a different one of the same guest
    /// needs this CPU's stage-1 TLB entries for that VMID dropped).
    last_ran: Vec<Option<usize>>,
    /// Round-robin position.
    next: usize,
    /// When the running vCPU's slice ends (another vCPU here is runnable).
    slice_end: Option<u64>,
    /// The hyp timer found the slice over.
    slice_over: bool,
    /// In [`idle`]: no vCPU of this CPU runs (an LPI taken now is no exit).
    idling: bool,
    /// vCPUs migrate (`migrate_ms`).
    migrating: bool,
    /// When the current migration period ends (`migrating`).
    migrate_at: u64,
    /// `ARRIVALS` of this CPU at the last [`refresh`].
    arrivals: usize,
    /// No migration from this CPU before this time (a vPE move failed).
    hold_until: u64,
}

impl Cpu {
    /// This CPU's `ARRIVALS` now.
    fn arrived(&self) -> usize {
        ARRIVALS
            .get(self.id)
            .map_or(0, |a| a.load(Ordering::Acquire))
    }

    fn vcpu(&self, i: usize) -> (&'static Vm, &'static vm::Vcpu) {
        let s = self.mine[i];
        let vm = &vm::vms()[s.vm];
        (vm, &vm.vcpus[s.v])
    }

    fn runnable(&self, i: usize) -> bool {
        let (vm, vcpu) = self.vcpu(i);
        !vm.stopped.load(Ordering::SeqCst)
            && vcpu.power.load(Ordering::SeqCst) != power::OFF
            && vcpu.block.runnable()
    }

    fn any_runnable_but(&self, skip: Option<usize>) -> bool {
        (0..self.mine.len()).any(|i| Some(i) != skip && self.runnable(i))
    }
}

/// CPU `cpu`'s loop (never returns).
pub fn cpu_loop(cpu: usize) -> ! {
    arch::set_hart_local(cpu);
    let vms = vm::vms();
    let migrating = periods().on();
    let mut c = Cpu {
        id: cpu,
        mine: Vec::new(),
        loaded: None,
        last_ran: alloc::vec![None; vms.len()],
        next: 0,
        slice_end: None,
        slice_over: false,
        idling: false,
        migrating,
        migrate_at: u64::MAX,
        arrivals: 0,
        hold_until: 0,
    };
    refresh(&mut c);
    if c.mine.is_empty() && !migrating {
        arch::halt()
    }
    // A CPU shared by several vCPUs traps WFE too: a vCPU spinning on a lock whose
    // holder is out of the CPU gives the CPU up (`Next::Yield`). With migration any
    // CPU may come to be shared.
    vm::setup_cpu(c.mine.len() > 1 || migrating);
    if let Some(o) = ONLINE.get(cpu) {
        o.store(true, Ordering::Release);
    }
    loop {
        if migrating {
            migrate(&mut c);
        }
        let n = c.mine.len();
        let pick = (0..n).map(|k| (c.next + k) % n).find(|&i| c.runnable(i));
        let Some(i) = pick else {
            idle(&mut c);
            continue;
        };
        c.next = (i + 1) % n;
        switch_to(&mut c, i);
        run(&mut c, i);
    }
}

/// Nothing runnable here: wake for the earliest due timer of a blocked vCPU out of
/// the CPU, and sleep until something is runnable. An interrupt that arrives after
/// the check stays pending at the GIC and ends the `wfi`.
fn idle(c: &mut Cpu) {
    loop {
        c.idling = true;
        drain(c);
        c.idling = false;
        if c.migrating {
            migrate(c);
        }
        if c.any_runnable_but(None) {
            sysreg::cnthp_ctl_el2::write(0);
            return;
        }
        c.slice_end = None;
        if c.migrating {
            c.migrate_at = periods().next(arch::time());
        }
        if c.mine.len() > 1 || c.migrating {
            arm_hyp_timer(c);
        }
        arch::wait_for_interrupt();
    }
}

/// Program the hyp timer: the earliest virtual-timer deadline of the blocked vCPUs
/// here that are not in the CPU (a runnable one waits for its turn anyway), the end
/// of the current slice, and the end of the migration period.
fn arm_hyp_timer(c: &Cpu) {
    let mut at = c.slice_end;
    if c.migrating {
        at = Some(at.map_or(c.migrate_at, |a| a.min(c.migrate_at)));
    }
    for i in 0..c.mine.len() {
        if Some(i) == c.loaded || c.runnable(i) {
            continue;
        }
        let (_, vcpu) = c.vcpu(i);
        // Only its home CPU locks `saved`, and this is it: never contended.
        let s = vcpu.saved.lock();
        if timer_can_fire(&s) {
            let due = s.el1.regs.cntv_cval;
            at = Some(at.map_or(due, |a| a.min(due)));
        }
    }
    match at {
        Some(t) => {
            sysreg::cnthp_cval_el2::write(t as usize);
            sysreg::cnthp_ctl_el2::write(TIMER_ON);
        }
        None => sysreg::cnthp_ctl_el2::write(0),
    }
}

/// Whether a vCPU out of the CPU has a virtual timer that will raise an interrupt at
/// its compare value: enabled, not masked (`CNTV_CTL_EL0` ENABLE, IMASK), and its
/// physical PPI not still active from the last delivery (then it cannot fire again
/// before the guest deactivates that one).
fn timer_can_fire(s: &Saved) -> bool {
    s.el1.cntv_ctl & 3 == 1 && !s.el1.vtimer_active
}

/// The hyp timer fired: stop it, end the slice, and kick every blocked vCPU here whose
/// virtual timer is due (it fires for real once that vCPU is in the CPU again).
fn hyp_timer(c: &mut Cpu) {
    sysreg::cnthp_ctl_el2::write(0);

    c.slice_over = true;
    let now = arch::time();
    for i in 0..c.mine.len() {
        if Some(i) == c.loaded || c.runnable(i) {
            continue;
        }
        let (vm, vcpu) = c.vcpu(i);
        let due = {
            let s = vcpu.saved.lock();
            timer_can_fire(&s) && s.el1.regs.cntv_cval <= now
        };
        if due {
            vm.kick(c.id, c.mine[i].v);
        }
    }
}

/// Acknowledge every pending host interrupt of this CPU (see the module docs).
fn drain(c: &mut Cpu) {
    for _ in 0..64 {
        let id = gic::ack();
        if gic::is_special(id) {
            return;
        }
        gic::priority_drop(id);
        let kind = match id {
            gic::KICK_SGI => 0,
            gic::MAINTENANCE_PPI => 1,
            gic::VTIMER_PPI => 2,
            UART_INTID => 3,
            gic::HYP_TIMER_PPI => 4,
            _ if gic::is_lpi(id) => 5,
            _ => 6,
        };
        if let Some(l) = c.loaded {
            c.vcpu(l).1.irqs[kind].fetch_add(1, Ordering::Relaxed);
        }
        match id {
            gic::VTIMER_PPI => match c.loaded {
                Some(l) => {
                    let (vm, _) = c.vcpu(l);
                    let kicker = Kicker { vm, cpu: c.id };
                    vm.gic.lock().pulse(c.mine[l].v, id, &kicker);
                }
                None => gic::deactivate(id),
            },
            gic::HYP_TIMER_PPI => {
                gic::deactivate(id);
                hyp_timer(c);
            }
            UART_INTID => match vm::vms().iter().find(|v| v.uart) {
                Some(vm) => exit::passthrough_irq(vm, id, &Kicker { vm, cpu: c.id }),
                None => gic::deactivate(id),
            },
            // An LPI has no active state: the priority drop ended it.
            _ if gic::is_lpi(id) => doorbell(c, id),
            _ if super::smmu::is_event_irq(id) => {
                gic::deactivate(id);
                super::smmu::poll_events();
            }
            _ => gic::deactivate(id),
        }
    }
}

/// Doorbell LPI `id` was taken: the vPE it belongs to fires (`Doorbell::fire`), and
/// its vCPU is kicked when the protocol says so. Its vPE is mapped here, but right
/// after a migration its vCPU may not be in `mine` yet (see "Migration"), so every
/// vCPU is looked at. An LPI taken on an exit of the vCPU in the CPU (not while it
/// idles) is also counted as `lpi_on_exit`: a device MSI that was no direct vLPI would
/// be one, or a doorbell of another vCPU homed here (a vCPU's own is masked while its
/// vPE is resident). Counted here, out of line, so that the exit path has no new work.
#[cold]
#[inline(never)]
fn doorbell(c: &Cpu, id: u32) {
    if let Some(l) = c.loaded.filter(|_| !c.idling) {
        c.vcpu(l).1.irqs[LPI_ON_EXIT].fetch_add(1, Ordering::Relaxed);
    }
    for vm in vm::vms() {
        for (v, vcpu) in vm.vcpus.iter().enumerate() {
            if let Some(vpe) = vcpu.vpe.as_ref().filter(|p| p.doorbell_lpi == id) {
                if gicv4::fire(vpe, c.id) {
                    vm.kick(c.id, v);
                }
                return;
            }
        }
    }
}

/// `mine` again: the vCPUs homed here now (migrations move them in and out); `loaded`
/// and the round-robin position follow.
fn refresh(c: &mut Cpu) {
    // Before the homes: an arrival counted after this load is found at the next one.
    c.arrivals = c.arrived();
    let loaded = c.loaded.map(|i| c.mine[i]);
    c.mine.clear();
    for (g, vm) in vm::vms().iter().enumerate() {
        for (v, vcpu) in vm.vcpus.iter().enumerate() {
            if vcpu.block.home() == c.id {
                c.mine.push(Slot { vm: g, v });
            }
        }
    }
    c.loaded = loaded.and_then(|s| c.mine.iter().position(|&m| m == s));
    if c.next >= c.mine.len() {
        c.next = 0;
    }
}

/// Hand the vCPUs homed here that are not in their place for this period to their
/// new CPU (see "Migration"), unless a failed move holds this CPU's, then take in the
/// vCPUs homed here now (`refresh`). Runs from this CPU's loop: none of them is running.
fn migrate(c: &mut Cpu) {
    if arch::time() >= c.hold_until {
        hand_over(c);
    }
    refresh(c);
}

/// [`migrate`]'s hand-overs.
fn hand_over(c: &mut Cpu) {
    for i in 0..c.mine.len() {
        let (_, vcpu) = c.vcpu(i);
        let Some(to) = migration_target(vcpu) else {
            continue;
        };
        if c.loaded == Some(i) {
            // Only its home CPU locks `saved`, and this is it: never contended.
            vcpu.saved.lock().el1.save();
            c.loaded = None;
        }
        // A vPE the ITS did not move (an ITS error, counted): the vCPU stays, and this
        // CPU moves none until the next period (not a retry, and an error, per pass).
        if let Some(vpe) = &vcpu.vpe {
            if !gicv4::move_to(vpe, c.id, to) {
                c.hold_until = periods().next(arch::time());
                break;
            }
        }
        vcpu.moved.store(true, Ordering::SeqCst);
        vcpu.block.migrate(to);
        // After the home: the new CPU that sees the count sees the home (`refresh`).
        if let Some(a) = ARRIVALS.get(to) {
            a.fetch_add(1, Ordering::Release);
        }
        crate::migrate::count();
        arch::send_ipi(HartId(to));
    }
}

/// Make `mine[i]` the vCPU in the CPU: save the one there, restore this one, switch
/// stage 2 and the vCPU's identity; drop this VMID's stage-1 TLB entries if another
/// vCPU of the same guest ran here last (they may be stale for this one).
fn switch_to(c: &mut Cpu, i: usize) {
    if c.loaded == Some(i) {
        return;
    }
    if let Some(old) = c.loaded.take() {
        let (_, vcpu) = c.vcpu(old);
        vcpu.saved.lock().el1.save();
    }
    let slot = c.mine[i];
    let (vm, vcpu) = c.vcpu(i);
    vm::load_vm(vm);
    vm::load_vcpu_id(slot.v);
    vcpu.saved.lock().el1.restore();
    let moved = vcpu.moved.swap(false, Ordering::SeqCst);
    if moved || c.last_ran[slot.vm].is_some_and(|v| v != slot.v) {
        arch::hfence_vvma_all();
    }
    // Its own local I-cache maintenance (`ic iallu`) stayed on the CPU it left.
    if moved {
        arch::fence_i();
    }
    c.last_ran[slot.vm] = Some(slot.v);
    c.loaded = Some(i);
}

/// Run the vCPU in the CPU (`mine[i]`) until it blocks, is switched off, or its slice
/// ends while another vCPU here is runnable.
fn run(c: &mut Cpu, i: usize) {
    let slot = c.mine[i];
    let (vm, vcpu) = c.vcpu(i);
    let kicker = Kicker { vm, cpu: c.id };
    let mut ich = gic::HwIch::new();
    let mut saved = vcpu.saved.lock();
    if vcpu.power.load(Ordering::SeqCst) == power::ON_PENDING {
        reset(vcpu, &mut saved);
        vcpu.power.store(power::ON, Ordering::SeqCst);
    }
    c.slice_over = false;
    c.slice_end = None;
    // A CPU with one vCPU needs no hyp timer: its vCPU's own timer is in the CPU —
    // unless the migration period's end must interrupt it.
    let shared = c.mine.len() > 1;
    if c.migrating {
        c.migrate_at = periods().next(arch::time());
    }
    if shared || c.migrating {
        arm_hyp_timer(c);
    }
    // Its vPE resident here for the whole run (not per exit).
    if vcpu.vpe.is_some() {
        vpe_load(vm, vcpu, c.id);
    }
    // Fresh in the CPU (or reset): its first entry flushes.
    let mut dirty = true;
    loop {
        // A slice ends only when another vCPU here is runnable: it starts as soon as
        // one is (a kick may make one runnable while this one runs, e.g. an IPI it
        // sent itself).
        if shared && c.slice_end.is_none() && c.any_runnable_but(Some(i)) {
            c.slice_end = Some(arch::time() + SLICE);
            arm_hyp_timer(c);
        }
        vcpu.block.unblock();
        // The kick first (virq-core `VcpuBlock`: every raise it announced is then in
        // what the flush takes). Without a kick, a change in the registers at the
        // last sync, a left-out interrupt or a GIC access by this vCPU, the flush
        // would change nothing (`VGicV3::sync`'s contract): skipped.
        if vcpu.block.take_kick() || dirty {
            vm.gic.lock().flush(slot.v, &vcpu.inbox, &mut ich, &kicker);
        }
        arch::enter_guest(&mut saved.ctx);
        let done = Completions::default();
        let changed = {
            let mut g = vm.gic.lock();
            g.sync(slot.v, &mut ich, &done) || g.overflowed(slot.v)
        };
        done.notify(vm, slot.v);
        let (class, next) = exit::handle_exit(vm, slot.v, c.id, &mut saved.ctx);
        dirty = changed || matches!(class, ExitClass::Mmio | ExitClass::Sysreg);
        vcpu.exits[class as usize].fetch_add(1, Ordering::Relaxed);
        match next {
            Next::Resume => {}
            Next::Irq => {
                drain(c);
                // A vCPU migrated here (the IPI just drained): back to the loop, which
                // takes it in and shares the CPU with it from now on.
                if c.migrating && c.arrived() != c.arrivals {
                    TAKEN_IN.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            Next::Block => {
                if vcpu.block.block() == BlockOutcome::Blocked {
                    break;
                }
            }
            Next::Yield => {
                if c.any_runnable_but(Some(i)) {
                    break;
                }
            }
            Next::Stop(failure) => {
                if vcpu.vpe.is_some() {
                    vpe_put(vm, vcpu, c.id, slot.v);
                }
                drop(saved);
                stop(vm, c.id, failure);
                return;
            }
        }
        if vcpu.power.load(Ordering::SeqCst) == power::OFF || vm.stopped.load(Ordering::SeqCst) {
            break;
        }
        // The hyp timer fired (a slice's end, a blocked vCPU's timer, a migration
        // period's end): the only exits after which either can be over, so the exit
        // path pays nothing more for migration.
        if c.slice_over {
            c.slice_over = false;
            if c.migrating && migrate_due(c, vcpu) {
                break;
            }
            if c.any_runnable_but(Some(i)) {
                break;
            }
        }
    }
    c.slice_end = None;
    if shared || c.migrating {
        sysreg::cnthp_ctl_el2::write(0);
    }
    if vcpu.vpe.is_some() {
        vpe_put(vm, vcpu, c.id, slot.v);
    }
}

/// The hyp timer fired while `vcpu` ran on a CPU whose vCPUs migrate: true when the
/// period is over and `vcpu` must move (the loop then hands it over). Otherwise the
/// timer, stopped by [`hyp_timer`], is armed again for the period's end (and a slice
/// already over is forgotten: the next starts when another vCPU here is runnable).
fn migrate_due(c: &mut Cpu, vcpu: &vm::Vcpu) -> bool {
    let now = arch::time();
    if now >= c.migrate_at {
        if migration_target(vcpu).is_some() {
            return true;
        }
        c.migrate_at = periods().next(now);
    }
    if c.slice_end.is_some_and(|t| t <= now) {
        c.slice_end = None;
    }
    arm_hyp_timer(c);
    false
}

/// Make the vCPU's vPE resident on this CPU (`gicv4::load`). Out of line: `run`'s
/// exit loop keeps the register allocation it has without GICv4 (measured: inlined,
/// every exit of a vgicv3 guest cost 2 instructions more).
#[inline(never)]
fn vpe_load(vm: &Vm, vcpu: &vm::Vcpu, cpu: usize) {
    if let (Some(vpe), Some(lpis)) = (&vcpu.vpe, &vm.lpis) {
        // A doorbell that rang while it was away: its vLPI is in the pending table,
        // which the load's scan delivers; nothing more to do.
        let _ = gicv4::load(vpe, lpis, cpu);
    }
}

/// Make vCPU `v`'s vPE non-resident at the end of its run on CPU `cpu`; blocking (WFI,
/// not kicked since) arms its doorbell, and a vLPI already pending (PendingLast) keeps
/// it runnable: the block is undone with a kick.
#[inline(never)]
fn vpe_put(vm: &Vm, vcpu: &vm::Vcpu, cpu: usize, v: usize) {
    if let Some(vpe) = &vcpu.vpe {
        let blocking = !vcpu.block.runnable();
        if gicv4::put(vpe, blocking) == PutOutcome::StayRunnable && blocking {
            vm.kick(cpu, v);
        }
    }
}

/// A vCPU's (re)start after `CPU_ON` (or boot), with its state in the CPU: registers
/// from `start`, EL1 at its reset state, no list registers, timer off.
fn reset(vcpu: &vm::Vcpu, saved: &mut Saved) {
    let (entry, x0) = *vcpu.start.lock();
    saved.ctx = Context {
        pc: entry,
        pstate: sysreg::SPSR_EL1H_MASKED as u64,
        ..Context::default()
    };
    saved.ctx.x[0] = x0;
    arch::el1::El1State::reset().restore();
}

/// Guest `vm` stops: its vCPUs are switched off (those running elsewhere are kicked
/// out), and when it was the last guest running, the machine powers off.
fn stop(vm: &Vm, cpu: usize, failure: bool) {
    vm.failed.fetch_or(failure, Ordering::SeqCst);
    if vm.stopped.swap(true, Ordering::SeqCst) {
        return;
    }
    for (v, vcpu) in vm.vcpus.iter().enumerate() {
        vcpu.power.store(power::OFF, Ordering::SeqCst);
        vm.kick(cpu, v);
    }
    let vms = vm::vms();
    if vms.iter().all(|g| g.stopped.load(Ordering::SeqCst)) {
        power_off(vms.iter().any(|g| g.failed.load(Ordering::SeqCst)))
    }
    println!("hyp: guest {} stopped; the others run on", vm.name);
}

/// The kept lines of the emulated UARTs (`vuart = "deferred"`), every guest's
/// accounting, then the machine off.
fn power_off(failure: bool) -> ! {
    for vm in vm::vms() {
        if let Some(kept) = &vm.vuart_deferred {
            for line in kept.lock().iter() {
                println!("[{}] {line}", vm.name);
            }
        }
    }
    for vm in vm::vms() {
        for (i, v) in vm.vcpus.iter().enumerate() {
            let mut line = alloc::string::String::new();
            for (n, name) in CLASS_NAMES.iter().enumerate() {
                line.push_str(&alloc::format!(
                    " {name} {}",
                    v.exits[n].load(Ordering::Relaxed)
                ));
            }
            line.push_str("; host interrupts:");
            for (n, name) in IRQ_NAMES.iter().enumerate() {
                line.push_str(&alloc::format!(
                    " {name} {}",
                    v.irqs[n].load(Ordering::Relaxed)
                ));
            }
            println!("hyp: ACCT {} vcpu {i} exits:{line}", vm.name);
            if let Some(p) = &v.vpe {
                let n = &p.counts;
                let (doorbells, wakeups) = n.fires.get();
                println!(
                    "hyp: ACCT {} vcpu {i} gicv4: vPE {} doorbell LPI {}: vlpis sent {} doorbells {} wakeups {} stay_runnable {} loads {} moves {}",
                    vm.name,
                    p.id,
                    p.doorbell_lpi,
                    n.sent.load(Ordering::Relaxed),
                    doorbells,
                    wakeups,
                    n.stay_runnable.load(Ordering::Relaxed),
                    n.loads.load(Ordering::Relaxed),
                    n.moves.load(Ordering::Relaxed),
                );
            }
        }
        if let Some(its) = &vm.vits {
            println!("hyp: ACCT {} vits: {}", vm.name, super::vits::acct(its));
        }
        if vm.lpis.is_some() {
            println!("hyp: {}: GICv4 errors: {}", vm.name, gicv4::errors());
        }
        let e = vm.gic.lock().errors();
        println!("hyp: {}: vGIC errors: {e:?}", vm.name);
        if vm.uart {
            println!(
                "hyp: {}: PL011 INTID {}: {:?} link, {} physical deactivates by hyp",
                vm.name,
                UART_INTID,
                vm.link,
                vm.deactivations.load(Ordering::Relaxed)
            );
        }
    }
    println!("hyp: ACCT migrations={}", crate::migrate::migrations());
    println!(
        "hyp: ACCT arrivals_while_running={}",
        TAKEN_IN.load(Ordering::Relaxed)
    );
    for vm in vm::vms() {
        vm.pci.report(&vm.name);
    }
    super::smmu::report();
    println!("hyp: power off (status {})", failure as u8);
    arch::power_off(failure)
}

/// `ExitClass` is counted by index.
const _: () = assert!(ExitClass::Other as usize + 1 == CLASS_NAMES.len());
