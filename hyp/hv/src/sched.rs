//! Per-hart scheduling: each hart runs the vCPUs homed on it, round robin, a slice
//! of [`SLICE_TICKS`] each when more than one is eligible. A vCPU in WFI is blocked
//! until a kick (pending interrupt) or its timer; a hart with nothing to run waits
//! in `wfi` for a host interrupt (IPI, timer, PLIC).
use core::sync::atomic::Ordering;

use crate::arch::{self, csr};
use crate::exit::Next;
use crate::vcpu::{Vcpu, HSM_STARTED, HSM_START_PENDING, HSM_STOPPED};
use crate::world::{this_hart, world, Hart};

/// Time slice when vCPUs share a hart: 5 ms at 10 MHz.
pub const SLICE_TICKS: u64 = 50_000;

/// Make hart `index` re-evaluate: IPI it unless it is the current hart.
pub fn poke_hart(index: usize) {
    let w = world();
    let here = arch::hart_local();
    if index != here {
        if let Some(h) = w.harts.get(index) {
            arch::sbi::send_ipi(h.hartid);
        }
    }
}

/// Program this hart's S-mode timer for `when` (u64::MAX = off).
pub fn set_host_timer(when: u64) {
    if world().sstc {
        csr::stimecmp::write(when as usize);
    } else {
        arch::sbi::set_timer(when);
    }
}

/// Unblock the blocked vCPUs of `hart` whose timer has fired; return the earliest
/// remaining wake-up time.
fn wake_timers(hart: &Hart) -> u64 {
    let w = world();
    let now = arch::time();
    let mut next = u64::MAX;
    for &vi in &hart.vcpus {
        let v = &w.vcpus[vi];
        if !v.blocked.load(Ordering::Acquire) {
            continue;
        }
        let at = v.wake_at.load(Ordering::Acquire);
        if at <= now {
            v.blocked.store(false, Ordering::SeqCst);
        } else {
            next = next.min(at);
        }
    }
    next
}

/// The next eligible vCPU of `hart` after `last` (round robin).
fn pick(hart: &Hart, last: Option<usize>) -> Option<usize> {
    let w = world();
    let n = hart.vcpus.len();
    let start = last
        .and_then(|l| hart.vcpus.iter().position(|&v| v == l))
        .map_or(0, |p| p + 1);
    (0..n)
        .map(|k| hart.vcpus[(start + k) % n])
        .find(|&v| w.vcpus[v].eligible() && w.guests[w.vcpus[v].guest].is_alive())
}

/// How many vCPUs of `hart` other than `me` are eligible.
fn others_eligible(hart: &Hart, me: usize) -> bool {
    let w = world();
    hart.vcpus
        .iter()
        .any(|&v| v != me && w.vcpus[v].eligible() && w.guests[w.vcpus[v].guest].is_alive())
}

/// The scheduler loop of the current hart.
pub fn run() -> ! {
    let hart = this_hart();
    let mut last = None;
    loop {
        crate::irq::handle_host_irqs(hart);
        let next_wake = wake_timers(hart);
        match pick(hart, last) {
            Some(v) => {
                last = Some(v);
                run_vcpu(hart, &world().vcpus[v]);
            }
            None => {
                set_host_timer(next_wake);
                // Re-check after arming: a kick may have come in between.
                if pick(hart, last).is_none() && !crate::irq::host_irq_pending() {
                    arch::wait_for_interrupt();
                }
            }
        }
    }
}

/// Run `vcpu` until it blocks, stops, or its slice ends while others wait.
fn run_vcpu(hart: &Hart, vcpu: &Vcpu) {
    let w = world();
    let guest = &w.guests[vcpu.guest];
    let mut inner = vcpu.inner.lock();
    if vcpu.hsm.load(Ordering::Acquire) == HSM_START_PENDING {
        let (entry, opaque) = *vcpu.start.lock();
        inner.reset(vcpu.id, entry, opaque);
        vcpu.hsm.store(HSM_STARTED, Ordering::Release);
    }
    inner.load(guest.hgatp, w.sstc);
    crate::aia::vcpu_load(hart, vcpu, &mut inner);
    let slice_start = arch::time();
    loop {
        if !vcpu.eligible() || !guest.is_alive() {
            break;
        }
        inner.hvip.flush(&vcpu.pending, &csr::HartCsrs);
        crate::aia::before_entry(vcpu, &inner);
        // Timer: the slice end if someone else waits, and the earliest blocked vCPU.
        let mut when = wake_timers(hart);
        if others_eligible(hart, vcpu.index) {
            when = when.min(slice_start + SLICE_TICKS);
        }
        if !w.sstc {
            when = when.min(inner.timer_deadline);
        }
        set_host_timer(when);
        arch::enter_guest(&mut inner.ctx);
        inner.hvip.sync(&csr::HartCsrs);
        vcpu.acct.count(inner.ctx.trap.scause);
        match crate::exit::handle(hart, vcpu, &mut inner) {
            Next::Resume => {
                if others_eligible(hart, vcpu.index)
                    && arch::time().wrapping_sub(slice_start) >= SLICE_TICKS
                {
                    break;
                }
            }
            Next::Leave => break,
        }
    }
    inner.put(w.sstc);
    if vcpu.hsm.load(Ordering::Acquire) == HSM_STOPPED {
        vcpu.blocked.store(false, Ordering::Release);
    }
    crate::aia::vcpu_put(vcpu);
}
