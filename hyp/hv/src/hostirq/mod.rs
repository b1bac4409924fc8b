//! The host interrupt controller as passthrough sees it: one trait, one implementation
//! per controller — the PLIC, and the APLIC in MSI mode feeding hyp's own S-level IMSIC
//! files. `crate::irq` (claims, deferred EOI, route set-up and release) talks to the
//! controller only through [`HostIrqChip`].
//!
//! The one behavioural difference the passthrough logic must know is the *gateway*: a
//! PLIC holds a claimed source until it is completed, so a level line that stays
//! asserted does not fire again meanwhile; an APLIC in MSI mode has none — every rising
//! edge of an enabled source is a new MSI — so for a completion deferred to the guest
//! the source is disabled from the claim to the guest's completion, which re-triggers
//! it (`setipnum`, AIA §4.9.2: pends it again only if the line is still asserted) and
//! enables it again.
pub mod aia;

use crate::arch::mmio::{HostAplic, HostPlic};
use crate::world::{world, Hart};

/// A host interrupt controller. `hart` names the hart whose context a per-hart
/// controller uses (the PLIC's S-mode context of that hart); a global one ignores it.
pub trait HostIrqChip: Sync {
    /// Claim every pending source of `hart` (at most a bounded number per call), calling
    /// `f` for each. Runs on `hart`.
    fn claims(&self, hart: &Hart, f: &mut dyn FnMut(u32));
    /// End source `src` physically: the PLIC complete, or the APLIC re-trigger.
    fn complete(&self, hart: &Hart, src: u32);
    /// Enable or disable source `src`.
    fn set_enabled(&self, hart: &Hart, src: u32, on: bool);
    /// Does a claimed source stay held until it is completed?
    fn has_gateway(&self) -> bool;
    /// Prepare passthrough source `src` of guest `g` at boot (priority, sense,
    /// target). Boot hart.
    fn prepare(&self, g: &crate::guest::Guest, src: u32);
    /// Enable, on `hart` (running on it), a prepared source of a guest whose
    /// interrupts `hart` takes.
    fn enable_on(&self, hart: &Hart, src: u32);
}

/// The PLIC: claim/complete through the hart's S-mode context.
struct Plic(HostPlic);

impl HostIrqChip for Plic {
    fn claims(&self, hart: &Hart, f: &mut dyn FnMut(u32)) {
        let Some(ctx) = hart.plic_ctx else { return };
        loop {
            let src = self.0.claim(ctx);
            if src == 0 {
                break;
            }
            f(src);
        }
    }
    fn complete(&self, hart: &Hart, src: u32) {
        if let Some(ctx) = hart.plic_ctx {
            self.0.complete(ctx, src);
        }
    }
    fn set_enabled(&self, hart: &Hart, src: u32, on: bool) {
        if let Some(ctx) = hart.plic_ctx {
            self.0.set_enable(ctx, src, on);
        }
    }
    fn has_gateway(&self) -> bool {
        true
    }
    fn prepare(&self, _g: &crate::guest::Guest, src: u32) {
        self.0.set_priority(src, 1);
    }
    fn enable_on(&self, hart: &Hart, src: u32) {
        self.set_enabled(hart, src, true);
    }
}

/// The APLIC in MSI mode, its MSIs claimed from hyp's S-level IMSIC file of the hart
/// (identity = source number, `aia::sfile_claims`).
struct Aplic(HostAplic);

impl HostIrqChip for Aplic {
    fn claims(&self, _hart: &Hart, f: &mut dyn FnMut(u32)) {
        aia::sfile_claims(f);
    }
    fn complete(&self, _hart: &Hart, src: u32) {
        self.0.setipnum(src);
    }
    fn set_enabled(&self, _hart: &Hart, src: u32, on: bool) {
        self.0.set_enabled(src, on);
    }
    fn has_gateway(&self) -> bool {
        false
    }
    fn prepare(&self, g: &crate::guest::Guest, src: u32) {
        aia::route_to_sfile(self.0, g, src);
    }
    fn enable_on(&self, _hart: &Hart, _src: u32) {
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
