//! Per-hart scheduling: each hart runs the vCPUs homed on it, round robin, a slice
//! of [`SLICE_TICKS`] each when more than one is eligible. A vCPU in WFI is blocked
//! until a kick (pending interrupt) or its timer; a hart with nothing to run waits
//! in `wfi` for a host interrupt (IPI, timer, PLIC).
//!
//! # Migration
//!
//! With the test knob `migrate_ms=N` (bootarg), time is cut into periods of N ms; in
//! period `e` every vCPU's place is `(first_hart + e) % harts` (a target hart not yet
//! online: it stays where it is), so each period every vCPU moves to the next hart —
//! `crate::migrate::Periods`, shared with aarch64, says why the place is a function of
//! the period (without it, two vCPUs rotated together on one hart: Linux 3-4x slower).
//! The old home hart does the whole hand-over, from its scheduler loop, with the vCPU
//! descheduled (a running vCPU leaves its hart when the period ends):
//! 1. `aia::vcpu_migrate_out` on the old hart: the doorbell masked, the IMSIC page out
//!    of the G-stage, the physical APLIC retargeted, the hardware file saved into the
//!    software file and its line freed (saving a guest file needs `vsireg` under
//!    `hstatus.VGEIN` on the hart that owns it: that is why it runs here, before the
//!    hand-over, and no cross-hart call is needed);
//! 2. the new home is stored (`Vcpu::hart`, SeqCst): from now on kicks IPI the new
//!    hart, and only it locks the vCPU's `inner`;
//! 3. the passthrough mirror re-synced (a software file's MSIs now go to the new
//!    hart's S-level file), and the new hart poked. Its next `vcpu_load` takes a line
//!    there and restores the state (`VcpuImsic::load`), and maps the page onto it.
//!
//! The VS CSRs (`vstimecmp` included), FP and `hvip` shadow travel in `inner`; a
//! blocked vCPU's timer is watched by whichever hart is its home.
use core::sync::atomic::Ordering;
use spin::Once;
use virq_riscv::hext::HVIP_VSEIP;

use crate::arch::csr::hstatus_bits;
use crate::arch::{self, csr};
use crate::hart::{poke_hart, set_host_timer, this_hart, Hart};
use crate::migrate::Periods;
use crate::vcpu::{Next, Vcpu, HSM_STARTED, HSM_START_PENDING, HSM_STOPPED, HSM_SUSPENDED};
use crate::world::world;

/// `scause` of an interrupt.
const CAUSE_INT: usize = 1 << 63;

/// Time slice when vCPUs share a hart: 5 ms at 10 MHz.
pub const SLICE_TICKS: u64 = 50_000;

/// The `migrate_ms` periods (`crate::migrate`) over this machine's harts.
static PERIODS: Once<Periods> = Once::new();

fn periods() -> &'static Periods {
    PERIODS.call_once(|| {
        Periods::new(
            crate::config::options().migrate_ms,
            crate::platform::platform().timebase,
            world().harts.len(),
        )
    })
}

/// The hart `vcpu` must move to in this period, if it is not there yet (`None`: no
/// migration, or already in place, or its place is a hart not yet online).
#[inline(never)]
fn migration_target(vcpu: &Vcpu) -> Option<usize> {
    let w = world();
    let to = periods().place(vcpu.first_hart, arch::time())?;
    (to != vcpu.home() && w.harts[to].online.load(Ordering::Acquire)).then_some(to)
}

/// Move the vCPUs homed on `hart` that are not in their place for this period (see
/// the module docs). Runs on `hart`, from its scheduler loop (none of its vCPUs is
/// running).
fn migrate(hart: &Hart) {
    if !periods().on() {
        return;
    }
    let w = world();
    for v in w.vcpus.iter().filter(|v| v.home() == hart.index) {
        let Some(to) = migration_target(v) else {
            continue;
        };
        // Nothing of this vCPU may stay on this hart: its hardware file is saved here.
        let g = &w.guests[v.guest];
        g.irqchip.vcpu_migrate_out(g, v);
        v.block.migrate(to);
        g.irqchip.vcpu_migrated(g, v);
        crate::migrate::count();
        poke_hart(to);
    }
}

/// The vCPUs homed on `hart` (global indices, in order).
fn homed(hart: &Hart) -> impl Iterator<Item = usize> + '_ {
    world()
        .vcpus
        .iter()
        .filter(move |v| v.home() == hart.index)
        .map(|v| v.index)
}

/// Unblock the blocked vCPUs of `hart` whose timer has fired; return the earliest
/// remaining wake-up time.
fn wake_timers(hart: &Hart) -> u64 {
    let w = world();
    let now = arch::time();
    let mut next = u64::MAX;
    for vi in homed(hart) {
        let v = &w.vcpus[vi];
        if !v.block.is_blocked() {
            continue;
        }
        let at = v.wake_at.load(Ordering::Acquire);
        if at <= now {
            v.block.unblock();
        } else {
            next = next.min(at);
        }
    }
    next
}

/// Before a guest entry of `me` on `hart`: one pass over the vCPUs homed there that
/// does what [`wake_timers`] and [`others_eligible`] do — unblock those whose timer
/// fired, and return the earliest remaining wake-up and whether a vCPU other than `me`
/// is eligible.
fn survey(hart: &Hart, me: usize) -> (u64, bool) {
    let w = world();
    let now = arch::time();
    let (mut next, mut shared) = (u64::MAX, false);
    for v in w.vcpus.iter().filter(|v| v.home() == hart.index) {
        if v.block.is_blocked() {
            let at = v.wake_at.load(Ordering::Acquire);
            if at <= now {
                v.block.unblock();
            } else {
                next = next.min(at);
            }
        }
        if !shared && v.index != me {
            shared = v.eligible() && w.guests[v.guest].is_alive();
        }
    }
    (next, shared)
}

/// The next eligible vCPU of `hart` after `last` (round robin).
fn pick(hart: &Hart, last: Option<usize>) -> Option<usize> {
    let w = world();
    let n = w.vcpus.len();
    let start = last.map_or(0, |l| l + 1);
    (0..n).map(|k| (start + k) % n).find(|&v| {
        let v = &w.vcpus[v];
        v.home() == hart.index && v.eligible() && w.guests[v.guest].is_alive()
    })
}

/// How many vCPUs of `hart` other than `me` are eligible.
fn others_eligible(hart: &Hart, me: usize) -> bool {
    let w = world();
    homed(hart).any(|v| v != me && w.vcpus[v].eligible() && w.guests[w.vcpus[v].guest].is_alive())
}

/// Start of the next migration period (u64::MAX: none). Out of line, as
/// [`migration_target`]: both run on `run_vcpu`'s full path only (measured with
/// `cargo xtask bench --system --target hyp-aia`: inlined, the register read and the
/// self-IPI cost 2 more).
#[inline(never)]
fn next_migration() -> u64 {
    periods().next(arch::time())
}

/// The scheduler loop of the current hart.
pub fn run() -> ! {
    let hart = this_hart();
    let mut last = None;
    loop {
        crate::irq::handle_host_irqs(hart);
        migrate(hart);
        let next_wake = wake_timers(hart);
        match pick(hart, last) {
            Some(v) => {
                last = Some(v);
                run_vcpu(hart, &world().vcpus[v]);
            }
            None => {
                set_host_timer(next_wake.min(next_migration()));
                // Re-check after arming: a kick may have come in between.
                if pick(hart, last).is_none() && !crate::irq::host_irq_pending() {
                    arch::wait_for_interrupt();
                }
            }
        }
    }
}

/// Run `vcpu` until it blocks, stops, or its slice ends while others wait.
///
/// # Three depths of re-entry
///
/// Before the first entry and after an exit that may have changed what runs (a host
/// interrupt, a poke of this hart by itself, a new emulated timer deadline), the *full*
/// path runs: the kick and the pending changes (`take_kick`, `HvipSync::flush`), the
/// topology's `before_entry`, and the scheduling decision (the survey of the hart's
/// vCPUs, `VTW`, the host timer). After a synchronous exit that changed only this
/// vCPU's interrupts (its pending set, or a kick of it), the *delivery* path runs the
/// first half alone (`before_entry` only if `hvip.VSEIP` changed). After a synchronous exit that changed neither (an SBI call such as
/// BASE, an emulated register read, a `wfi` that did not block) the *lean* path goes
/// straight back into the guest.
///
/// Why skipping is safe (the seed-000 protocol of virq-core `VcpuBlock` and
/// `PendingSet` is unchanged, only consulted): every `raise` that must be seen is
/// followed by a kick (`KICKED` set, then an IPI to the home hart unless the kicker is
/// this hart); every `lower` sets a bit in the pending set's change mask. The lean path
/// re-enters only when this hart's own view shows neither — and anything this hart did
/// itself is sequenced before that look. A producer on another hart whose change the
/// look missed sends its IPI after its kick: the IPI is pending in HS and traps the
/// guest at once (or soon after entry), an interrupt exit, which takes the full path —
/// as when a kick lands right after `take_kick` on the full path. A `lower` from
/// another hart that the look missed is seen at the next full or delivery path: until
/// then the guest may see a spurious interrupt, which the spec allows (and a running
/// guest that does not exit at all sees the same). Kicks of *other* vCPUs of this hart
/// made by this hart itself mark [`Hart::resched`] (`poke_hart`); a kick of the vCPU
/// running here, made here, marks nothing (`Vcpu::kick` with `Vcpu::loaded`): its
/// `KICKED` bit is the lean check's `kick_pending`. Time-driven decisions
/// (a slice's end, a migration period, a blocked vCPU's timer) are host timer
/// interrupts, armed by the full path: interrupt exits. `HvipSync::sync` runs after
/// every exit that leaves the lean path, before the next `flush`: the lean path leaves
/// `hvip` as the guest left it and takes no changes, so skipping the pair is a no-op.
fn run_vcpu(hart: &Hart, vcpu: &Vcpu) {
    let w = world();
    let guest = &w.guests[vcpu.guest];
    let mut inner = vcpu.inner.lock();
    if vcpu.hsm.load(Ordering::Acquire) == HSM_START_PENDING {
        let (entry, opaque) = *vcpu.start.lock();
        inner.reset(vcpu.id, entry, opaque);
        vcpu.hsm.store(HSM_STARTED, Ordering::Release);
    }
    // A suspended vCPU that runs again has resumed (SBI HSM: SUSPENDED -> STARTED).
    let _ = vcpu.hsm.compare_exchange(
        HSM_SUSPENDED,
        HSM_STARTED,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    inner.load(guest.hgatp, w.sstc);
    if guest.irqchip.vcpu_load(guest, hart, vcpu, &mut inner) && crate::irq::sgei_pending() {
        // `hgeie` was written: serve what the source says now (see `vcpu_load`).
        crate::irq::handle_sgei(hart);
    }
    // Picked because runnable: a kicked vCPU stops waiting.
    vcpu.block.unblock();
    vcpu.loaded.store(true, Ordering::Relaxed);
    let slice_start = arch::time();
    let wfi_mode = crate::config::options().wfi;
    // The full path first; `before_entry` at least once after `vcpu_load`.
    let mut full = true;
    let mut migrate_at = u64::MAX;
    let mut armed_deadline = inner.timer_deadline;
    let mut entry_vseip = 0;
    loop {
        if !vcpu.eligible() || !guest.is_alive() {
            break;
        }
        // The kick first, then the changes: every raise whose kick this consumes is
        // in what the flush takes (virq-core `VcpuBlock`).
        vcpu.block.take_kick();
        inner.hvip.flush(&vcpu.pending, &csr::HartCsrs);
        // `before_entry` follows `hvip.VSEIP` (AIA: `hvictl` mirrors it): only when it
        // changed, and after the load.
        let vseip = inner.hvip.shadow_hvip() & HVIP_VSEIP;
        if full || vseip != entry_vseip {
            guest.irqchip.before_entry(guest, vcpu, &inner);
            entry_vseip = vseip;
        }
        if full {
            // Kicks this hart gave its own vCPUs are in what the survey reads.
            hart.resched.store(false, Ordering::Relaxed);
            // Timer: the slice end if someone else waits, and the earliest blocked vCPU.
            let (mut when, shared) = survey(hart, vcpu.index);
            if shared {
                when = when.min(slice_start + SLICE_TICKS);
            }
            // `wfi = "direct"`: alone on the hart, the guest's `wfi` need not trap —
            // the hart has nothing else to do, its own interrupts wake it in VS-mode,
            // and whatever needs hyp (a kick for another vCPU, a timer) is a host
            // interrupt, which traps out of the stalled `wfi` like any other. Decided
            // again at each full path, so a vCPU that stops being alone traps its next
            // `wfi` (another vCPU of this hart becoming eligible is a host interrupt or
            // a `resched`, both full paths).
            let trap_wfi = shared || wfi_mode == hyp_config::WfiMode::Trap;
            inner.ctx.guest.hstatus = if trap_wfi {
                inner.ctx.guest.hstatus | hstatus_bits::VTW
            } else {
                inner.ctx.guest.hstatus & !hstatus_bits::VTW
            };
            armed_deadline = inner.timer_deadline;
            if !w.sstc {
                when = when.min(armed_deadline);
            }
            migrate_at = next_migration();
            when = when.min(migrate_at);
            set_host_timer(when);
        }
        // Enter the guest; come back here straight from the lean path.
        let next = loop {
            arch::enter_guest(&mut inner.ctx);
            vcpu.acct.count(inner.ctx.trap.scause);
            let next = crate::exit::handle(hart, guest, vcpu, &mut inner);
            if inner.ctx.trap.scause & CAUSE_INT == 0
                && matches!(next, Next::Resume)
                && !vcpu.pending.has_changes()
                && !vcpu.block.kick_pending()
                && !hart.resched.load(Ordering::Relaxed)
                && inner.timer_deadline == armed_deadline
            {
                continue;
            }
            break next;
        };
        inner.hvip.sync(&csr::HartCsrs);
        full = inner.ctx.trap.scause & CAUSE_INT != 0
            || hart.resched.load(Ordering::Relaxed)
            || inner.timer_deadline != armed_deadline;
        match next {
            Next::Resume => {
                if !full {
                    continue;
                }
                // The cheap tests first: most exits are neither at a period's end nor
                // at a slice's.
                let now = arch::time();
                if now >= migrate_at && migration_target(vcpu).is_some() {
                    break;
                }
                if now.wrapping_sub(slice_start) >= SLICE_TICKS && others_eligible(hart, vcpu.index)
                {
                    break;
                }
            }
            Next::Leave => break,
        }
    }
    vcpu.loaded.store(false, Ordering::Relaxed);
    inner.put(w.sstc);
    if vcpu.hsm.load(Ordering::Acquire) == HSM_STOPPED {
        vcpu.block.unblock();
    }
    guest.irqchip.vcpu_put(guest, vcpu);
}
