//! The host interrupt controller as passthrough sees it: one trait, one implementation
//! per controller — the PLIC, and the APLIC in MSI mode feeding hyp's own S-level IMSIC
//! files. `irq` (above: claims, deferred EOI, route set-up and release) talks to the
//! controller only through [`HostIrqChip`].
//!
//! The one behavioural difference the passthrough logic must know is the *gateway*: a
//! PLIC holds a claimed source until it is completed, so a level line that stays
//! asserted does not fire again meanwhile; an APLIC in MSI mode has none — every rising
//! edge of an enabled source is a new MSI — so for a completion deferred to the guest
//! the source is disabled from the claim to the guest's completion, which re-triggers
//! it (`setipnum`, AIA §4.9.2: pends it again only if the line is still asserted) and
//! enables it again.
//!
//! **One hold.** Whether a source is held is the route's state, not a controller's or
//! a topology's flag: virq-core's `RouteTable::awaiting_guest` (a level delivery parked
//! by `deliver`, cleared by `guest_completed`). It has two actuators, one per kind of
//! guest completion: for a vPLIC guest `irq` disables the source at the claim and
//! re-triggers and enables it in the completion's ack notifier; for an AIA guest the
//! vAPLIC mirror (`topology::aia`), which owns the physical source's enable there
//! (it follows the guest's own enable and target too), computes "enabled" as "the
//! guest wants it and the route is not awaiting the guest", and the guest's `setipnum`
//! re-trigger is the completion.
//!
//! `aia` (the host AIA driver) sits lower than this module: the guest topologies use
//! it too. This module knows the guests and the world.
pub mod aia;

use virq_riscv::aplic::SourceMode;

use crate::arch::mmio::{HostAplic, HostPlic};
use crate::guest::Guest;
use crate::hart::{harts, Hart};
use crate::ids::{GuestVcpuId, Pirq};
use crate::world::world;

/// A host interrupt controller. `hart` names the hart whose context a per-hart
/// controller uses (the PLIC's S-mode context of that hart); a global one ignores it.
pub trait HostIrqChip: Sync {
    /// Claim every pending source of `hart` (at most a bounded number per call), calling
    /// `f` for each. Runs on `hart`.
    fn claims(&self, hart: &Hart, f: &mut dyn FnMut(Pirq));
    /// End source `src` physically: the PLIC complete, or the APLIC re-trigger.
    fn complete(&self, hart: &Hart, src: Pirq);
    /// Enable or disable source `src`.
    fn set_enabled(&self, hart: &Hart, src: Pirq, on: bool);
    /// Does a claimed source stay held until it is completed?
    fn has_gateway(&self) -> bool;
    /// Prepare passthrough source `src` of guest `g` at boot (priority, sense,
    /// target). Boot hart.
    fn prepare(&self, g: &Guest, src: Pirq);
    /// Enable, on `hart` (running on it), a prepared source of a guest whose
    /// interrupts `hart` takes.
    fn enable_on(&self, hart: &Hart, src: Pirq);
}

/// The PLIC: claim/complete through the hart's S-mode context.
struct Plic(HostPlic);

impl HostIrqChip for Plic {
    fn claims(&self, hart: &Hart, f: &mut dyn FnMut(Pirq)) {
        let Some(ctx) = hart.plic_ctx else { return };
        loop {
            let src = self.0.claim(ctx);
            if src == 0 {
                break;
            }
            f(Pirq(src));
        }
    }
    fn complete(&self, hart: &Hart, src: Pirq) {
        if let Some(ctx) = hart.plic_ctx {
            self.0.complete(ctx, src.0);
        }
    }
    fn set_enabled(&self, hart: &Hart, src: Pirq, on: bool) {
        if let Some(ctx) = hart.plic_ctx {
            self.0.set_enable(ctx, src.0, on);
        }
    }
    fn has_gateway(&self) -> bool {
        true
    }
    fn prepare(&self, _g: &Guest, src: Pirq) {
        self.0.set_priority(src.0, 1);
    }
    fn enable_on(&self, hart: &Hart, src: Pirq) {
        self.set_enabled(hart, src, true);
    }
}

/// The APLIC in MSI mode, its MSIs claimed from hyp's S-level IMSIC file of the hart
/// (identity = source number, `aia::sfile_claims`).
struct Aplic(HostAplic);

impl HostIrqChip for Aplic {
    fn claims(&self, _hart: &Hart, f: &mut dyn FnMut(Pirq)) {
        aia::sfile_claims(f);
    }
    fn complete(&self, _hart: &Hart, src: Pirq) {
        self.0.setipnum(src.0);
    }
    fn set_enabled(&self, _hart: &Hart, src: Pirq, on: bool) {
        self.0.set_enabled(src.0, on);
    }
    fn has_gateway(&self) -> bool {
        false
    }
    fn prepare(&self, g: &Guest, src: Pirq) {
        route_to_sfile(self.0, g, src);
    }
    fn enable_on(&self, _hart: &Hart, _src: Pirq) {
        // `prepare` enabled it (the APLIC is global).
    }
}

static CHIP: spin::Once<Option<&'static dyn HostIrqChip>> = spin::Once::new();

/// The host controller passthrough sources come from (`None`: neither a PLIC nor an
/// APLIC was found). The PLIC wins when both exist.
pub fn chip() -> Option<&'static dyn HostIrqChip> {
    *CHIP.call_once(|| {
        if let Some(p) = world().host_plic {
            let c: &'static Plic = alloc::boxed::Box::leak(alloc::boxed::Box::new(Plic(p)));
            return Some(c);
        }
        let a = aia::host().and_then(|h| h.aplic)?;
        let c: &'static Aplic = alloc::boxed::Box::leak(alloc::boxed::Box::new(Aplic(a)));
        Some(c)
    })
}

/// Program physical source `pirq` of guest `g` at boot: level-high (the wired
/// devices' sense). A vPLIC guest's source targets hyp's S-level file on the hart that
/// takes the guest's interrupts (identity = `pirq`) and is enabled; an AIA guest's stays
/// disabled until the guest programs its virtual source (`topology::aia`'s `sync_passthrough`).
fn route_to_sfile(aplic: HostAplic, g: &Guest, pirq: Pirq) {
    aplic.set_enabled(pirq.0, false);
    aplic.set_sourcecfg(pirq.0, SourceMode::Level1 as u32);
    if g.irqchip.as_aia().is_some() {
        return;
    }
    let target = irq_hart(g).and_then(|h| aia::host().and_then(|x| x.sfile_target(h.index, pirq)));
    match target {
        Some(t) if aia::host().is_some_and(|h| h.has_sfiles()) => {
            aplic.set_target(pirq.0, t);
            aplic.set_enabled(pirq.0, true);
        }
        _ => crate::println!("hyp: pirq {pirq}: no S-level IMSIC file to route it to"),
    }
}

/// The hart that takes a guest's physical interrupts: the first home of its vCPU 0
/// (fixed, also when vCPUs migrate).
pub fn irq_hart(g: &Guest) -> Option<&'static Hart> {
    harts().get(g.vcpu(GuestVcpuId(0))?.first_hart)
}

/// Set up hyp's host AIA (`aia::init`) for the physical sources the guests pass
/// through. Boot hart, after the world is published and before any hart initialises.
pub fn init() {
    let pirqs = world()
        .guests
        .iter()
        .flat_map(|g| g.passthrough.iter().map(|&(_, pirq)| pirq));
    aia::init(pirqs);
    // No IMSIC for hyp's IPIs: an ACLINT SSWI, if every hart has a register in one.
    let harts = &crate::platform::platform().harts;
    let sswi = !harts.is_empty() && harts.iter().all(|h| h.sswi.is_some());
    if crate::arch::imsic_ipi_id().is_none() && sswi {
        crate::arch::use_sswi_ipis(|id| harts.iter().find(|h| h.hartid == id)?.sswi);
        crate::println!(
            "hyp: IPIs through the ACLINT SSWI (hart {} at {:#x})",
            harts[0].hartid.0,
            harts[0].sswi.unwrap_or(0)
        );
    }
}
