//! Host interrupts: IPIs (kicks and remote fences), the host timer, and physical
//! PLIC interrupts routed to guests (seed 001).
//!
//! # Passthrough EOI
//!
//! A claimed source stays masked by the PLIC gateway until it is completed. For a
//! level source hyp defers the physical complete to the guest's virtual complete
//! (`RouteTable` says `DeferToGuest`); the vPLIC's [`virq_riscv::EoiSink`] calls
//! [`guest_completed`], which completes physically. The virtual source is edge-sensed:
//! one physical claim is one virtual request. With `eoi=immediate` the route is
//! registered as edge, so hyp completes at once; a still-asserted line then re-fires
//! at once — the storm — and a guard masks it after `STORM_LIMIT` claims without a
//! guest completion, until the guest completes.
use core::sync::atomic::Ordering;
use virq_core::route::EoiAction;

use crate::arch::csr::{self, irq_bits};
use crate::config::STORM_LIMIT;
use crate::world::{world, Hart};

/// Any host interrupt pending on this hart?
pub fn host_irq_pending() -> bool {
    csr::sip::read() & (irq_bits::SSI | irq_bits::STI | irq_bits::SEI) != 0
}

/// Handle every pending host interrupt of this hart.
pub fn handle_host_irqs(hart: &Hart) {
    let sip = csr::sip::read();
    if sip & irq_bits::SSI != 0 {
        csr::sip::clear(irq_bits::SSI);
    }
    serve_fences(hart);
    if sip & irq_bits::STI != 0 {
        // Disarm; the scheduler re-arms before the next guest entry or wfi.
        crate::sched::set_host_timer(u64::MAX);
    }
    if sip & irq_bits::SEI != 0 {
        plic_claims(hart);
    }
}

/// Serve remote-fence requests addressed to this hart.
pub fn serve_fences(hart: &Hart) {
    let req = hart.fence_req.load(Ordering::Acquire);
    if hart.fence_done.load(Ordering::Relaxed) != req {
        crate::arch::hfence_vvma_all();
        crate::arch::hfence_gvma_all();
        crate::arch::fence_i();
        hart.fence_done.store(req, Ordering::Release);
    }
}

/// Ask every hart in `mask` (bit = hart index) to flush its guest TLBs and
/// instruction fetch, and wait until they did (serving our own requests meanwhile).
pub fn remote_fence(mask: u64) {
    let w = world();
    let here = crate::arch::hart_local();
    let mut want = [0u64; crate::arch::entry::MAX_HARTS];
    for (i, h) in w.harts.iter().enumerate() {
        if mask & (1 << i) == 0 || !h.online.load(Ordering::Acquire) {
            continue;
        }
        if i == here {
            crate::arch::hfence_vvma_all();
            crate::arch::fence_i();
            continue;
        }
        want[i] = h.fence_req.fetch_add(1, Ordering::AcqRel) + 1;
        crate::arch::sbi::send_ipi(h.hartid);
    }
    for (i, h) in w.harts.iter().enumerate() {
        if want[i] == 0 {
            continue;
        }
        let mut spins = 0u64;
        while h.fence_done.load(Ordering::Acquire) < want[i] {
            serve_fences(&w.harts[here]);
            core::hint::spin_loop();
            spins += 1;
            if spins > 50_000_000 {
                crate::println!("hyp: remote fence to hart {} timed out", h.hartid);
                break;
            }
        }
    }
}

fn plic_claims(hart: &Hart) {
    let w = world();
    let (Some(plic), Some(ctx)) = (w.host_plic, hart.plic_ctx) else {
        return;
    };
    loop {
        let src = plic.claim(ctx);
        if src == 0 {
            break;
        }
        let Some(counts) = w.pirqs.get(src as usize) else {
            plic.complete(ctx, src);
            continue;
        };
        counts.claims.fetch_add(1, Ordering::Relaxed);
        let Some(d) = w.routes.deliver(src) else {
            // Not routed: complete and disable it so it cannot storm.
            plic.complete(ctx, src);
            plic.set_enable(ctx, src, false);
            continue;
        };
        let (g, virq, eoi) = (d.guest() as usize, d.virq(), d.eoi());
        // The guest's completion hands this token back (it names this route).
        counts.ack_token.store(d.ack_token(), Ordering::Release);
        drop(d);
        if let Some(guest) = w.guests.get(g) {
            guest.vplic.lock().pulse(virq);
        }
        if eoi == EoiAction::CompleteNow {
            plic.complete(ctx, src);
            let since = counts.since_complete.fetch_add(1, Ordering::Relaxed) + 1;
            if since >= STORM_LIMIT {
                // Storm guard: mask until the guest completes (see module docs).
                plic.set_enable(ctx, src, false);
                counts.storm_masks.fetch_add(1, Ordering::Relaxed);
                counts.since_complete.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// The guest completed virtual source `virq` (vPLIC [`virq_riscv::EoiSink`]).
pub fn guest_completed(guest: u16, virq: u32) {
    let w = world();
    let Some(g) = w.guests.get(guest as usize) else {
        return;
    };
    let Some(pirq) = g.pirq_of(virq) else { return };
    let Some(counts) = w.pirqs.get(pirq as usize) else {
        return;
    };
    counts.completes.fetch_add(1, Ordering::Relaxed);
    counts.since_complete.store(0, Ordering::Relaxed);
    let Some(plic) = w.host_plic else { return };
    let ctx = irq_hart(g).and_then(|h| h.plic_ctx);
    let Some(ctx) = ctx else { return };
    let token = counts.ack_token.load(Ordering::Acquire);
    if w.routes.guest_completed(token) == Ok(true) {
        plic.complete(ctx, pirq);
    }
    if g.immediate_eoi {
        // Undo a storm-guard mask (harmless if it was not masked).
        plic.set_enable(ctx, pirq, true);
    }
}

/// The hart that takes a guest's physical interrupts: the home of its vCPU 0.
pub fn irq_hart(g: &crate::guest::Guest) -> Option<&'static Hart> {
    let w = world();
    w.harts.get(w.vcpus.get(g.first_vcpu)?.hart)
}

/// Route every passthrough interrupt of every guest and enable it at the host PLIC.
pub fn setup_routes() {
    let w = world();
    let Some(plic) = w.host_plic else {
        crate::println!("hyp: no host PLIC; passthrough interrupts are not routed");
        return;
    };
    for g in &w.guests {
        let Some(ctx) = irq_hart(g).and_then(|h| h.plic_ctx) else {
            continue;
        };
        for &(virq, pirq) in &g.passthrough {
            let trigger = if g.immediate_eoi {
                virq_core::route::Trigger::Edge
            } else {
                virq_core::route::Trigger::Level
            };
            if let Err(e) = w.routes.route(pirq, g.index, virq, trigger) {
                crate::println!("hyp: cannot route pirq {pirq}: {e}");
                continue;
            }
            plic.set_priority(pirq, 1);
            plic.set_enable(ctx, pirq, true);
        }
    }
}
