//! The vAPLIC and the physical-source mirror: the guest's programming of a
//! passthrough source (`sourcecfg`, `target`, enable, `domaincfg`) mirrored onto the
//! physical APLIC ([`sync_passthrough`]), the guest's level re-trigger forwarded, and
//! physical interrupts claimed by hyp injected into the vAPLIC ([`inject`]).
use super::*;

/// Where the vAPLIC's MSIs go: the interrupt file of the guest vCPU whose index is the
/// MSI's hart index.
pub struct MsiRouter {
    /// The guest's per-vCPU AIA state (`GuestAia::vcpus`).
    pub(crate) files: &'static [AiaVcpu],
    /// The guest's AIA counters.
    pub(crate) counts: &'static AiaCounts,
}

impl MsiSink for MsiRouter {
    fn send_msi(&mut self, msi: Msi) -> bool {
        let Some(av) = self.files.get(msi.hart as usize) else {
            return false;
        };
        bump(&self.counts.aplic_forwards);
        let mut f = av.file.lock();
        if f.backing() == Backing::Software {
            bump(&self.counts.sw_msis);
        }
        f.send_msi(msi)
    }
}

/// The guest's vAPLIC.
pub type GuestAplic = VAplic<MsiRouter, GuestSink, MAX_VCPUS_PER_GUEST>;

/// What hyp last programmed into the physical APLIC for one passthrough source.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PhysSource {
    pub(crate) virq: Virq,
    pub(crate) pirq: Pirq,
    pub(crate) sourcecfg: u32,
    pub(crate) target: u32,
    pub(crate) enabled: bool,
    /// Level re-triggers forwarded (guest `setipnum` writes).
    pub(crate) retriggers: u64,
    /// Claims from hyp's S-level file (software-file path).
    pub(crate) claims: u64,
}

/// The vAPLIC and the physical mirror of its passthrough sources (one lock).
pub struct AplicState {
    /// The device.
    pub dev: GuestAplic,
    pub(crate) phys: Vec<PhysSource>,
}

/// Mirror the guest's programming of its passthrough sources to the physical APLIC
/// (see the module docs). Called with the vAPLIC lock held (`st`).
pub(crate) fn sync_passthrough(g: &dyn GuestView, aia: &GuestAia, st: &mut AplicState) {
    let Some(h) = host() else { return };
    let Some(aplic) = h.aplic else { return };
    let dcfg = st.dev.read(0, 4) as u32;
    let domain_on = dcfg & DOMAINCFG_IE != 0 && dcfg & DOMAINCFG_DM != 0;
    for ps in st.phys.iter_mut() {
        let mode = st.dev.source_mode(ps.virq.0);
        let vt = st.dev.read(0x3000 + 4 * u64::from(ps.virq.0), 4) as u32;
        let t = (vt >> TARGET_HART_SHIFT) as usize;
        let eiid = vt & TARGET_EIID_MASK;
        let mut target = None;
        if let Some(av) = aia.vcpus.get(t) {
            let backing = if av.leaving.load(Ordering::Relaxed) {
                Backing::Software
            } else {
                av.file.lock().backing()
            };
            target = match backing {
                Backing::Hardware { hart, line } => h
                    .hart_index
                    .get(hart)
                    .copied()
                    .flatten()
                    .map(|idx| (idx << TARGET_HART_SHIFT) | (line << TARGET_GUEST_SHIFT) | eiid),
                Backing::Software => {
                    let hart = g.vcpu_slice()[t].home();
                    h.sfile_target(hart, ps.pirq)
                }
            };
        }
        // The hold (software-file path): hyp claimed a level interrupt, injected it,
        // and the guest has not re-triggered yet. The physical source stays disabled
        // meanwhile (its further rising edges only pend it), so a line the device
        // toggles per byte does not send hyp one MSI per edge. The hold's state is the
        // route's (`RouteTable::awaiting_guest`, parked by `deliver`, cleared by the
        // guest's completion) — the same state `irq` holds a vPLIC guest's source by
        // on a host APLIC: one hold, two actuators (see `crate::hostirq`).
        let enable = domain_on
            && !routes().awaiting_guest(ps.pirq.0)
            && mode != SourceMode::Inactive
            && st.dev.is_enabled(ps.virq.0)
            && target.is_some();
        if !enable && ps.enabled {
            aplic.set_enabled(ps.pirq.0, false);
            ps.enabled = false;
        }
        // The physical source always follows the real wire (level-high); the guest's
        // choice of mode (edge, detached, …) is emulated by the vAPLIC only. So a
        // forwarded `setipnum` can only re-trigger while the device really asserts
        // its line: a guest cannot turn re-trigger writes into a physical MSI flood.
        let phys_mode = SourceMode::Level1 as u32;
        if mode != SourceMode::Inactive && ps.sourcecfg != phys_mode {
            ps.sourcecfg = phys_mode;
            aplic.set_sourcecfg(ps.pirq.0, ps.sourcecfg);
            // A (re)activated source's target reads back its reset value.
            ps.target = u32::MAX;
        }
        if let Some(t) = target {
            if ps.target != t && ps.sourcecfg != u32::MAX {
                ps.target = t;
                aplic.set_target(ps.pirq.0, t);
            }
        }
        if enable && !ps.enabled {
            aplic.set_enabled(ps.pirq.0, true);
            ps.enabled = true;
        }
    }
}

/// Re-sync the physical mirror of guest `g` (after one of its files changed backing).
pub(crate) fn resync(g: &dyn GuestView, aia: &GuestAia) {
    let mut st = aia.aplic.lock();
    sync_passthrough(g, aia, &mut st);
}

/// A trapped vAPLIC access. A read is short (the lean path of a register read); a
/// write, with its re-triggers and completions, is [`aplic_write`].
pub(crate) fn aplic_access(g: &dyn GuestView, aia: &GuestAia, off: u64, op: MmioOp) -> u64 {
    match op {
        MmioOp::Read { size } => {
            bump(&aia.counts.aplic_reads);
            aia.aplic.lock().dev.read(off, size)
        }
        MmioOp::Write { size, value } => {
            aplic_write(g, aia, off, size, value);
            0
        }
    }
}

/// A trapped vAPLIC write (see [`aplic_access`]).
#[inline(never)]
fn aplic_write(g: &dyn GuestView, aia: &GuestAia, off: u64, size: u8, value: u64) {
    let mut st = aia.aplic.lock();
    bump(&aia.counts.aplic_writes);
    if lean_retrigger(&mut st, off, size, value) {
        return;
    }
    // A re-trigger of a passthrough source ends the virtual "asserted" state
    // of its wire (see `inject`); the physical APLIC re-evaluates the real line.
    let mut retrigger = [Pirq(0); 4];
    let mut tokens = [0u32; 4];
    let mut n = 0;
    if size == 4 {
        let st = &mut *st;
        virq_riscv::aplic::setip_sources(off, value as u32, |virq| {
            let virq = Virq(virq);
            if let Some(ps) = st.phys.iter_mut().find(|p| p.virq == virq) {
                ps.retriggers += 1;
                set_asserted(&mut st.dev, virq, false);
                if let Some(slot) = retrigger.get_mut(n) {
                    *slot = ps.pirq;
                    tokens[n] = g.acks().token(virq.0).unwrap_or(0);
                    n += 1;
                }
            }
        });
    }
    st.dev.write(off, size, value);
    // Re-trigger before `sync_passthrough` re-enables a held source: one MSI if
    // the line is still asserted (or rose while held).
    if let Some(a) = host().and_then(|h| h.aplic) {
        for &pirq in &retrigger[..n] {
            a.setipnum(pirq.0);
        }
    }
    // The re-trigger is this topology's guest completion: it ends the level
    // delivery the route deferred to the guest (`RouteTable::guest_completed`
    // clears the token `deliver` parked; a stale token is refused).
    for &token in tokens[..n].iter().filter(|&&t| t != 0) {
        let _ = routes().guest_completed(token);
    }
    sync_passthrough(g, aia, &mut st);
}

/// The common re-trigger, forwarded alone: a 32-bit `setipnum_le` (or `setipnum`) of a
/// passthrough source in a level mode, the vAPLIC in MSI mode, the source's virtual
/// wire already deasserted, and no level delivery of it parked on its route (the
/// hardware-file case: its MSIs reach the guest's file without hyp, so nothing is
/// ever parked). Then the rest of [`aplic_write`] changes nothing: the vAPLIC pends a
/// level source by `setipnum` only while its rectified input is high (AIA 4.7), so the
/// write is a no-op in the model and its forwarding pass has nothing new (every
/// mutation of the model ends with one); `set_asserted(.., false)` finds the wire low
/// already; there is no token to complete (`routes().guest_completed` would find
/// nothing parked); and [`sync_passthrough`] reads nothing that changed (domain,
/// mode, target, enable, backing, the hold). What is left is the physical
/// `setipnum`: one MSI if the device still asserts its line. Returns whether it took
/// the write; called with the vAPLIC lock held, where the deliver and the completion
/// are serialised (`RouteTable::awaiting_guest`).
fn lean_retrigger(st: &mut AplicState, off: u64, size: u8, value: u64) -> bool {
    use virq_riscv::aplic::regs::{SETIPNUM, SETIPNUM_LE};
    if size != 4 || (off != u64::from(SETIPNUM_LE) && off != u64::from(SETIPNUM)) {
        return false;
    }
    let virq = value as u32;
    let Some(ps) = st.phys.iter_mut().find(|p| p.virq.0 == virq) else {
        return false;
    };
    let dev = &st.dev;
    if !dev.msi_mode()
        || !matches!(
            dev.source_mode(virq),
            SourceMode::Level1 | SourceMode::Level0
        )
        || dev.rectified_input(virq)
        || routes().awaiting_guest(ps.pirq.0)
    {
        return false;
    }
    let Some(a) = host().and_then(|h| h.aplic) else {
        return false;
    };
    ps.retriggers += 1;
    a.setipnum(ps.pirq.0);
    true
}

/// A physical interrupt claimed from hyp's S-level file for virtual source `virq` of
/// AIA guest `g` (its target vCPU has a software file). For a level source the virtual
/// wire goes high and stays high until the guest re-triggers the source (`setipnum`,
/// AIA §4.9.2), as the real line does until the device is serviced: the vAPLIC pends
/// it on the rising edge and forwards it when enabled, so an MSI that arrives while
/// the guest has the source masked is held, not lost. For an edge source: one pulse.
pub(crate) fn inject(g: &dyn GuestView, aia: &GuestAia, virq: Virq) {
    let mut st = aia.aplic.lock();
    let level = matches!(
        st.dev.source_mode(virq.0),
        SourceMode::Level1 | SourceMode::Level0
    );
    if let Some(ps) = st.phys.iter_mut().find(|p| p.virq == virq) {
        ps.claims += 1;
    }
    set_asserted(&mut st.dev, virq, true);
    if !level {
        set_asserted(&mut st.dev, virq, false);
        // One pulse: the guest owes no re-trigger, so nothing may wait for one (the
        // route parked a level delivery: end it here, or the source stays held).
        if let Some(token) = g.acks().token(virq.0) {
            let _ = routes().guest_completed(token);
        }
    }
    sync_passthrough(g, aia, &mut st);
}

/// Drive virtual source `virq`'s wire so that its rectified input is `on` (the wire is
/// inverted for the active-low / falling-edge modes).
pub(crate) fn set_asserted(dev: &mut GuestAplic, virq: Virq, on: bool) {
    let inverted = matches!(
        dev.source_mode(virq.0),
        SourceMode::Level0 | SourceMode::Edge0
    );
    dev.set_input(virq.0, on != inverted);
}
