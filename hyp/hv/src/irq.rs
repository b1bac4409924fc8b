//! Host interrupts: IPIs (kicks and remote fences), the host timer, SGEI doorbells
//! (`crate::aia`), and physical interrupts routed to guests (seed 001) — PLIC claims, or
//! on an AIA host the host APLIC's MSIs claimed from hyp's own S-level IMSIC file
//! ([`aplic_claims`]).
//!
//! # Passthrough EOI
//!
//! A claimed source stays masked by the PLIC gateway until it is completed. For a
//! level source hyp defers the physical complete to the guest's virtual complete
//! (`RouteTable` says `DeferToGuest`). The path goes through virq-core's ack
//! mechanism: `route` returns an ack token, registered as the virq's ack notifier; a
//! delivery marks the virq in flight (capturing the token) before pulsing the vPLIC;
//! the guest's completion sets a bit (the vPLIC's [`virq_riscv::EoiSink`], under the
//! vPLIC lock) and, once the trapped access dropped that lock, [`fold_completions`]
//! deactivates it and calls the notifier, which completes physically. The virtual source is edge-sensed:
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
        || crate::aia::sgei_pending()
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
        aplic_claims(hart);
    }
    if crate::aia::sgei_pending() {
        crate::aia::handle_sgei(hart);
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
            if spins == 50_000_000 {
                // Keep waiting: callers free interrupt-file lines after the fence, and
                // a hart that still maps the old page must not see it reused.
                crate::println!(
                    "hyp: remote fence to hart {} is slow; still waiting",
                    h.hartid
                );
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
        deliver_claimed(
            src,
            || plic.complete(ctx, src),
            |on| plic.set_enable(ctx, src, on),
            false,
        );
    }
}

/// Physical interrupts from the host APLIC (MSI mode) that reached hyp's own S-level
/// IMSIC file of this hart (identity = source number): passthrough sources of vPLIC
/// guests, and of AIA guests whose targeted vCPU has a software file. "Completing" a
/// level source in MSI mode is the re-trigger of AIA 4.9.2: `setipnum`, which pends it
/// again only if its line is still asserted. An APLIC in MSI mode has no gateway: every
/// rising edge of an enabled source is a new MSI. So for a deferred EOI the source is
/// disabled from the claim to the guest's completion (edges meanwhile only pend it),
/// which then re-triggers and re-enables it — the PLIC gateway's behaviour.
pub fn aplic_claims(_hart: &Hart) {
    let Some(aplic) = crate::aia::host().and_then(|h| h.aplic) else {
        return;
    };
    crate::aia::sfile_claims(|src| {
        deliver_claimed(
            src,
            || aplic.setipnum(src),
            |on| aplic.set_enabled(src, on),
            true,
        );
    });
}

/// One physical interrupt `src` claimed by hyp: count it and give it to the guest it is
/// routed to. `complete` ends it physically, `enable` masks/unmasks the source;
/// `hold_until_guest` disables it until the guest's completion when the EOI is
/// deferred (a controller without a gateway).
fn deliver_claimed(src: u32, complete: impl Fn(), enable: impl Fn(bool), hold_until_guest: bool) {
    let w = world();
    let Some(counts) = w.pirqs.get(src as usize) else {
        complete();
        return;
    };
    counts.claims.fetch_add(1, Ordering::Relaxed);
    let Some(d) = w.routes.deliver(src) else {
        // Not routed: complete and disable it so it cannot storm.
        complete();
        enable(false);
        return;
    };
    let (g, virq, eoi) = (d.guest() as usize, d.virq(), d.eoi());
    if let Some(guest) = w.guests.get(g) {
        if guest.aia.is_some() {
            // AIA guest: the guest's own setipnum re-trigger ends it (crate::aia).
            crate::aia::inject(guest, virq);
            drop(d);
            return;
        }
        // In flight before the guest can see it (virq-core ack: mark, then raise), so
        // its completion finds the token this route registered.
        if guest.inflight.mark(&guest.acks, virq).is_err() {
            crate::println!("hyp: guest {g}: no in-flight slot for virq {virq}");
        }
        guest.vplic.lock().pulse(virq);
    }
    // Only now: `RouteTable::release` waits for this guard, so the route (and the
    // guest it names) cannot be released while we inject.
    drop(d);
    if eoi != EoiAction::CompleteNow && hold_until_guest {
        enable(false);
    }
    if eoi == EoiAction::CompleteNow {
        complete();
        let since = counts.since_complete.fetch_add(1, Ordering::Relaxed) + 1;
        if since >= STORM_LIMIT {
            // Storm guard: mask until the guest completes (see module docs).
            enable(false);
            counts.storm_masks.fetch_add(1, Ordering::Relaxed);
            counts.since_complete.store(0, Ordering::Relaxed);
        }
    }
}

/// Run the ack notifiers of the virtual completions the guest made in a trapped vPLIC
/// access. Called after the emulation dropped the vPLIC lock: the notifiers (the route's
/// deferred physical complete) run with no lock held (seed 004).
pub fn fold_completions(g: &crate::guest::Guest) {
    let w = world();
    g.take_completed(|virq| {
        // Every virtual completion of a passthrough source counts, in flight or not.
        if let Some(counts) = g.pirq_of(virq).and_then(|p| w.pirqs.get(p as usize)) {
            counts.completes.fetch_add(1, Ordering::Relaxed);
            counts.since_complete.store(0, Ordering::Relaxed);
        }
        g.inflight.deactivate(virq, |_, token| {
            let pirq = virq_core::route::pirq_of_token(token);
            if let (Some(plic), Some(ctx)) = (w.host_plic, irq_hart(g).and_then(|h| h.plic_ctx)) {
                if w.routes.guest_completed(token) == Ok(true) {
                    plic.complete(ctx, pirq);
                }
                if g.immediate_eoi {
                    // Undo a storm-guard mask (harmless if it was not masked).
                    plic.set_enable(ctx, pirq, true);
                }
            } else if let Some(aplic) = crate::aia::host().and_then(|h| h.aplic) {
                // Host APLIC in MSI mode (see `aplic_claims`): the deferred "complete"
                // is the re-trigger, made while the source is still disabled, then the
                // enable (one MSI if the line is still asserted or rose meanwhile).
                if w.routes.guest_completed(token) == Ok(true) {
                    aplic.setipnum(pirq);
                    aplic.set_enabled(pirq, true);
                }
                if g.immediate_eoi {
                    aplic.set_enabled(pirq, true);
                }
            }
        });
    });
}

/// The hart that takes a guest's physical interrupts: the first home of its vCPU 0
/// (fixed, also when vCPUs migrate).
pub fn irq_hart(g: &crate::guest::Guest) -> Option<&'static Hart> {
    let w = world();
    w.harts.get(w.vcpus.get(g.first_vcpu)?.first_hart)
}

/// Route every passthrough interrupt of every guest (in the routing table and at the
/// host PLIC's priority). Each hart enables the sources it takes in
/// [`enable_routes_on`], from its own initialisation: OpenSBI's warm boot of a hart
/// (HSM `hart_start`) disables every source of that hart's PLIC contexts, so enables
/// written for it by the boot hart beforehand are lost — the boot hart id is random.
pub fn setup_routes() {
    let w = world();
    let aplic = crate::aia::host().and_then(|h| h.aplic);
    if w.host_plic.is_none() && aplic.is_none() {
        crate::println!("hyp: no host PLIC or APLIC; passthrough interrupts are not routed");
        return;
    }
    for g in &w.guests {
        for &(virq, pirq) in &g.passthrough {
            let trigger = if g.immediate_eoi {
                virq_core::route::Trigger::Edge
            } else {
                virq_core::route::Trigger::Level
            };
            let token = match w.routes.route(pirq, g.index, virq, trigger) {
                Ok(token) => token,
                Err(e) => {
                    crate::println!("hyp: cannot route pirq {pirq}: {e}");
                    continue;
                }
            };
            if let Err(e) = g.acks.register(virq, token) {
                crate::println!("hyp: guest {}: virq {virq}: {e}", g.index);
            }
            if let Some(plic) = w.host_plic {
                plic.set_priority(pirq, 1);
            } else if let Some(aplic) = aplic {
                crate::aia::route_to_sfile(aplic, g, pirq);
            }
        }
    }
}

/// A guest stopped: release its passthrough routes (virq-core `RouteTable::release`,
/// which returns only when no delivery of the source is in progress on another hart),
/// unregister their ack notifiers, disable each physical source so a device left
/// asserting its line cannot storm the host, and make the physical complete a level
/// delivery still deferred to the guest was waiting for (exactly once: the guest can
/// no longer complete it).
pub fn release_routes(g: &crate::guest::Guest) {
    let w = world();
    let aplic = crate::aia::host().and_then(|h| h.aplic);
    let plic_ctx = w.host_plic.zip(irq_hart(g).and_then(|h| h.plic_ctx));
    for &(virq, pirq) in &g.passthrough {
        let _ = g.acks.unregister(virq);
        let Ok(released) = w.routes.release(pirq, g.index) else {
            continue;
        };
        if let Some((plic, ctx)) = plic_ctx {
            plic.set_enable(ctx, pirq, false);
            if released.complete_physical {
                plic.complete(ctx, pirq);
            }
        } else if let Some(aplic) = aplic {
            aplic.set_enabled(pirq, false);
        }
        crate::println!(
            "hyp: released pirq {pirq} of guest {} (deferred complete owed: {})",
            g.index,
            released.complete_physical
        );
    }
}

/// Enable, at this hart's host PLIC context, the routed sources it takes (those of the
/// guests whose vCPU 0 lives here). Called by each hart once it is up.
pub fn enable_routes_on(hart: &Hart) {
    let w = world();
    let (Some(plic), Some(ctx)) = (w.host_plic, hart.plic_ctx) else {
        return;
    };
    for g in &w.guests {
        if irq_hart(g).map(|h| h.index) != Some(hart.index) {
            continue;
        }
        for &(_, pirq) in &g.passthrough {
            if w.routes.lookup(pirq).is_some() {
                plic.set_enable(ctx, pirq, true);
            }
        }
    }
}
