//! Host interrupts: IPIs (kicks and remote fences), the host timer, SGEI doorbells
//! (`topology::aia`), and physical interrupts routed to guests (seed 001), claimed from the
//! host controller through `crate::hostirq::HostIrqChip` (the PLIC, or the APLIC in MSI
//! mode feeding hyp's own S-level IMSIC file).
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
use crate::guest::Guest;
use crate::hart::{serve_fences, set_host_timer, Hart};
use crate::hostirq::{irq_hart, HostIrqChip};
use crate::ids::{Pirq, Virq};
use crate::world::world;

/// Any host interrupt pending on this hart?
pub fn host_irq_pending() -> bool {
    csr::sip::read() & (irq_bits::SSI | irq_bits::STI | irq_bits::SEI) != 0 || sgei_pending()
}

/// Handle every pending host interrupt of this hart.
pub fn handle_host_irqs(hart: &Hart) {
    // The IPI first (SSIP, or hyp's identity in its IMSIC file), then what it asked.
    crate::arch::take_ipi();
    let sip = csr::sip::read();
    serve_fences(hart);
    if sip & irq_bits::STI != 0 {
        // Disarm; the scheduler re-arms before the next guest entry or wfi.
        set_host_timer(u64::MAX);
    }
    if sip & irq_bits::SEI != 0 {
        host_claims(hart);
    }
    if sgei_pending() {
        handle_sgei(hart);
    }
}

/// Claim and deliver every physical interrupt pending for this hart at the host
/// controller (`crate::hostirq`): PLIC claims, or on an AIA host the host APLIC's MSIs
/// claimed from hyp's own S-level IMSIC file (identity = source number).
fn host_claims(hart: &Hart) {
    let Some(chip) = crate::hostirq::chip() else {
        return;
    };
    let notice = crate::hostirq::aia::mrif_notice_id();
    let iommu_fault = crate::hostirq::aia::iommu_fault_id();
    chip.claims(hart, &mut |src| {
        if Some(src.0) == iommu_fault {
            // A new IOMMU fault record: printed and counted now.
            if let Some(iommu) = crate::iommu::iommu() {
                iommu.lock().fault_interrupt();
            }
        } else if Some(src.0) == notice {
            // The IOMMU recorded a device MSI in a software file's MRIF.
            for g in &world().guests {
                if let Some(aia) = g.irqchip.as_aia() {
                    aia.drain_mrifs();
                }
            }
        } else {
            deliver_claimed(chip, hart, src)
        }
    });
}

/// One physical interrupt `src` claimed by hyp on `hart`: count it and give it to the
/// guest it is routed to. When its EOI is deferred and the controller has no gateway,
/// the source is disabled until the guest's completion (see `crate::hostirq`).
fn deliver_claimed(chip: &dyn HostIrqChip, hart: &Hart, src: Pirq) {
    let w = world();
    let Some(counts) = w.pirqs.get(src.index()) else {
        chip.complete(hart, src);
        return;
    };
    counts.claims.fetch_add(1, Ordering::Relaxed);
    let Some(d) = w.routes.deliver(src.0) else {
        // Not routed: complete and disable it so it cannot storm.
        chip.complete(hart, src);
        chip.set_enabled(hart, src, false);
        return;
    };
    let (g, virq, eoi) = (d.guest() as usize, Virq(d.virq()), d.eoi());
    if let Some(guest) = w.guests.get(g) {
        if guest.irqchip.inject(guest, virq) {
            // The topology ends it itself (the AIA guest's `setipnum` re-trigger).
            drop(d);
            return;
        }
    }
    // Only now: `RouteTable::release` waits for this guard, so the route (and the
    // guest it names) cannot be released while we inject.
    drop(d);
    if eoi != EoiAction::CompleteNow && !chip.has_gateway() {
        chip.set_enabled(hart, src, false);
    }
    if eoi == EoiAction::CompleteNow {
        chip.complete(hart, src);
        let since = counts.since_complete.fetch_add(1, Ordering::Relaxed) + 1;
        if since >= STORM_LIMIT {
            // Storm guard: mask until the guest completes (see module docs).
            chip.set_enabled(hart, src, false);
            counts.storm_masks.fetch_add(1, Ordering::Relaxed);
            counts.since_complete.store(0, Ordering::Relaxed);
        }
    }
}

/// Run the ack notifiers of the virtual completions the guest made in a trapped vPLIC
/// access. Called after the emulation dropped the vPLIC lock: the notifiers (the route's
/// deferred physical complete) run with no lock held (seed 004).
pub fn fold_completions(g: &Guest) {
    let w = world();
    g.irqchip.take_completed(&mut |virq| {
        // Every virtual completion of a passthrough source counts, in flight or not.
        if let Some(counts) = g.pirq_of(virq).and_then(|p| w.pirqs.get(p.index())) {
            counts.completes.fetch_add(1, Ordering::Relaxed);
            counts.since_complete.store(0, Ordering::Relaxed);
        }
        g.inflight.deactivate(virq.0, |_, token| {
            let pirq = Pirq(virq_core::route::pirq_of_token(token));
            let (Some(chip), Some(hart)) = (crate::hostirq::chip(), irq_hart(g)) else {
                return;
            };
            if w.routes.guest_completed(token) == Ok(true) {
                // The deferred physical complete; without a gateway it is the
                // re-trigger, made while the source is still disabled, then the enable
                // (one MSI if the line is still asserted or rose meanwhile).
                chip.complete(hart, pirq);
                if !chip.has_gateway() {
                    chip.set_enabled(hart, pirq, true);
                }
            }
            if g.immediate_eoi {
                // Undo a storm-guard mask (harmless if it was not masked).
                chip.set_enabled(hart, pirq, true);
            }
        });
    });
}

/// Route every passthrough interrupt of every guest (in the routing table and at the
/// host PLIC's priority). Each hart enables the sources it takes in
/// [`enable_routes_on`], from its own initialisation: OpenSBI's warm boot of a hart
/// (HSM `hart_start`) disables every source of that hart's PLIC contexts, so enables
/// written for it by the boot hart beforehand are lost — the boot hart id is random.
pub fn setup_routes() {
    let w = world();
    let Some(chip) = crate::hostirq::chip() else {
        crate::println!("hyp: no host PLIC or APLIC; passthrough interrupts are not routed");
        return;
    };
    for g in &w.guests {
        for &(virq, pirq) in &g.passthrough {
            let trigger = if g.immediate_eoi {
                virq_core::route::Trigger::Edge
            } else {
                virq_core::route::Trigger::Level
            };
            let token = match w.routes.route(pirq.0, g.index, virq.0, trigger) {
                Ok(token) => token,
                Err(e) => {
                    crate::println!("hyp: cannot route pirq {pirq}: {e}");
                    continue;
                }
            };
            if let Err(e) = g.acks.register(virq.0, token) {
                crate::println!("hyp: guest {}: virq {virq}: {e}", g.index);
            }
            chip.prepare(g, pirq);
        }
    }
}

/// A guest stopped: release its passthrough routes (virq-core `RouteTable::release`,
/// which returns only when no delivery of the source is in progress on another hart),
/// unregister their ack notifiers, disable each physical source so a device left
/// asserting its line cannot storm the host, and make the physical complete a level
/// delivery still deferred to the guest was waiting for (exactly once: the guest can
/// no longer complete it).
pub fn release_routes(g: &Guest) {
    let w = world();
    let (Some(chip), Some(hart)) = (crate::hostirq::chip(), irq_hart(g)) else {
        return;
    };
    for &(virq, pirq) in &g.passthrough {
        let _ = g.acks.unregister(virq.0);
        let Ok(released) = w.routes.release(pirq.0, g.index) else {
            continue;
        };
        chip.set_enabled(hart, pirq, false);
        if released.complete_physical {
            chip.complete(hart, pirq);
        }
        crate::println!(
            "hyp: released pirq {pirq} of guest {} (deferred complete owed: {})",
            g.index,
            released.complete_physical
        );
    }
}

/// Enable, on this hart, the routed sources it takes (those of the guests whose vCPU 0
/// lives here). Called by each hart once it is up.
pub fn enable_routes_on(hart: &Hart) {
    let w = world();
    let Some(chip) = crate::hostirq::chip() else {
        return;
    };
    for g in &w.guests {
        if irq_hart(g).map(|h| h.index) != Some(hart.index) {
            continue;
        }
        for &(_, pirq) in &g.passthrough {
            if w.routes.lookup(pirq.0).is_some() {
                chip.enable_on(hart, pirq);
            }
        }
    }
}

/// Any guest external interrupt line of this hart pending and enabled? Read from the
/// source (`hgeip & hgeie`, virq-riscv `sgei_lines`), not from `hip.SGEIP`: QEMU
/// 10.0.2 can leave SGEIP at a stale 0 after an `hgeie` write that races an MSI (see
/// `sgei_lines` and docs/design.md "Doorbells"), and a hart that trusted it would
/// sleep with a blocked vCPU's file pending.
pub fn sgei_pending() -> bool {
    crate::hostirq::aia::host().is_some_and(|h| h.has_ssaia())
        && virq_riscv::hext::sgei_lines(&crate::arch::csr::HartCsrs) != 0
}

/// The SGEI of this hart: fire the doorbells of the lines that rang and kick their
/// vCPUs (virq-riscv `handle_sgei`; lines without an owner are masked).
pub fn handle_sgei(hart: &Hart) {
    if !crate::hostirq::aia::host().is_some_and(|h| h.has_ssaia()) {
        return;
    }
    let w = world();
    virq_riscv::hext::handle_sgei(
        &crate::arch::csr::HartCsrs,
        hart.index,
        &w.hgei,
        |owner, door| {
            let Some(v) = w.vcpus.get(owner as usize) else {
                return;
            };
            let g = &w.guests[v.guest];
            if g.irqchip.sgei(g, v, door) {
                v.kick();
            }
        },
    );
}
