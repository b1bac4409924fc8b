//! A guest-visible GICv3: distributor, one redistributor per vCPU, and the flush/sync
//! of each vCPU's list registers (Arm IHI 0069H).
//!
//! # Model
//!
//! Affinity routing only (`GICD_CTLR.ARE` = 1) and a single security state (`DS` = 1),
//! as KVM presents it: group 0 and group 1 both non-secure, `IGRPMODR`/`NSACR` RAZ/WI,
//! no legacy `ITARGETSR`/`SGIR`. vCPU `i` has affinity `Aff1 = i / 16`,
//! `Aff0 = i % 16` (so an SGI target list of 16 bits covers one `Aff1` cluster).
//!
//! **LPIs** are off unless [`VGicV3::enable_lpis`] turns them on (for a guest whose
//! LPIs a GICv4 host delivers: the model never delivers an LPI itself). Then
//! `GICD_TYPER.LPIS` = 1 with `IDbits` = the configured INTID bits − 1,
//! `GICR_TYPER.PLPIS` = 1, and each redistributor has `GICR_PROPBASER` and
//! `GICR_PENDBASER` (stored as written while its `GICR_CTLR.EnableLPIs` = 0, writes
//! ignored and counted after: the architecture makes them UNPREDICTABLE) and
//! `GICR_CTLR.EnableLPIs`, which cannot be cleared once set (the IMPLEMENTATION
//! DEFINED choice the architecture allows). The tables they name are the guest's:
//! the model reads neither (the hypervisor reads configuration bytes through
//! [`VGicV3::propbaser`] and `vits::lpi_config`). Without LPIs all of these are RAZ/WI.
//!
//! Each INTID has: enable, priority, group, edge/level configuration, active, a
//! *pending latch* (an edge, or a `ISPENDR` write) and, for level interrupts, the
//! *line* (`set_level`); a level interrupt is pending while its line is high or its
//! latch is set. SPIs are routed by `IROUTER` (`IRM`, 1 of N, is RAZ/WI); SGIs and
//! PPIs belong to their redistributor's vCPU.
//!
//! # Delivery (the ARM counterpart of `hvip` flush/sync)
//!
//! Producers that do not hold the hypervisor's lock on the model — a host interrupt
//! handler on another CPU, a vCPU sending an SGI — raise the INTID in the target
//! vCPU's inbox, a `virq_core::pending::PendingSet` whose ids are all *handoff* ids
//! ([`Inbox`]), and kick it. Before guest entry the vCPU calls [`VGicV3::flush`]:
//! it drains the inbox into the latches and fills the free list registers with the
//! deliverable interrupts, best priority first (equal priorities by lowest INTID, the
//! best in the lowest free register), setting `ICH_HCR_EL2.UIE` when more are
//! deliverable than registers, so the underflow maintenance interrupt brings the vCPU
//! back to refill them. A flush looks only at the set bits of a summary of the pending
//! and enabled interrupts (a bit per INTID, kept in step by every change to one), so
//! it costs a word per 32 INTIDs plus a few steps per such interrupt, not a scan of
//! every INTID per register (hyp flushes before every guest entry). After
//! exit, [`VGicV3::sync`] reads every list register it wrote back into the model:
//! still pending → back to the latch (so every flush chooses afresh by priority, and a
//! better interrupt never waits behind a worse pending one);
//! active → stays in its register until the guest deactivates it; invalid → the guest
//! deactivated it: a level interrupt with `EOI` set reports the completion to the
//! [`EoiSink`] (the software passthrough path, seed 001's deferred complete), and a
//! level line still high makes it pending again. An `HW`-linked passthrough
//! interrupt (seed 004's in-flight SPI on real hardware) needs nothing: the guest's
//! deactivate deactivates the physical INTID.
//!
//! No INTID is ever in two list registers, and an interrupt that is active in one gets
//! its next edge in the same register (pending and active).
use virq_core::mmio::{ErrorCounters, MmioDevice};
use virq_core::pending::PendingSet;

use crate::lr::{IchRegs, Lr, LrState};
use crate::regs::{gicd, gicr, hcr, intid, sgi1r, IIDR_VIRQ, PIDR2_GICV3};

/// List registers a vCPU can have (`ICH_VTR_EL2.ListRegs` ≤ 15).
pub const MAX_LRS: usize = 16;
/// Words of an [`Inbox`] on this host: INTIDs 0..1024.
pub const INBOX_WORDS: usize = 1024 / usize::BITS as usize;
/// A vCPU's inbox of INTIDs raised by producers outside the model's lock.
pub type Inbox = PendingSet<INBOX_WORDS>;

/// Words of 32 bits for every INTID a list register can name (0..1024).
const INTID_WORDS: usize = 1024 / 32;
/// Words of 32 bits for the SPIs (INTIDs 32..1020), SPI `32 + i` at bit `i % 32` of
/// word `i / 32`.
const SPI_WORDS: usize = (intid::SPI_END - intid::SPI_BASE).div_ceil(32) as usize;

/// An inbox whose ids are all handoff ids: a raise is a request the next flush
/// consumes (an edge, or "make pending").
pub fn new_inbox() -> Inbox {
    let all: [u32; 1024] = core::array::from_fn(|i| i as u32);
    PendingSet::with_handoff(&all).unwrap_or_default()
}

/// Wakes vCPU `vcpu` (guest-local index) so it flushes soon: a kick if it runs, a
/// wake-up if it is blocked.
pub trait Kick {
    /// Delivery to `vcpu` may have changed.
    fn kick(&self, vcpu: usize);
}

/// The guest deactivated a passthrough interrupt on the software path.
pub trait EoiSink {
    /// Level INTID `intid`, delivered with `EOI` set, was deactivated by the guest.
    fn guest_completed(&self, intid: u32);
}

/// How an SPI is passed through from a physical one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Passthrough {
    /// Not passed through: a virtual device's line.
    #[default]
    None,
    /// `HW`-linked list register to physical `pintid`: the guest's deactivate
    /// deactivates it (host EOImode 1, the physical INTID left active).
    Hw {
        /// Physical INTID.
        pintid: u32,
    },
    /// Software path: `EOI` maintenance on the guest's deactivate; the host then
    /// deactivates the physical INTID ([`EoiSink`]).
    Software,
}

#[derive(Clone, Copy, Debug, Default)]
struct Irq {
    enabled: bool,
    latch: bool,
    level: bool,
    active: bool,
    priority: u8,
    group1: bool,
    edge: bool,
    pass: Passthrough,
}

impl Irq {
    fn pending(&self) -> bool {
        self.latch || (!self.edge && self.level)
    }

    /// Pending and enabled: its bit in the summary a flush looks at (the group and,
    /// for an SPI, the routing are checked there).
    fn ready(&self) -> bool {
        self.enabled && self.pending()
    }
}

/// The best candidates for a vCPU's free list registers by (priority, INTID), at most
/// as many as there are free registers, and whether any was turned away.
struct Best {
    list: [(u8, u32); MAX_LRS],
    len: usize,
    cap: usize,
    turned_away: bool,
}

impl Best {
    fn new(free: usize) -> Best {
        Best {
            list: [(0, 0); MAX_LRS],
            len: 0,
            cap: free.min(MAX_LRS),
            turned_away: false,
        }
    }

    /// Offer `intid` at `priority`: kept in order if it is among the best `cap` so far
    /// (pushing out the worst when full), turned away if not.
    fn offer(&mut self, priority: u8, intid: u32) {
        let key = (priority, intid);
        let at = self.list[..self.len].partition_point(|&k| k < key);
        if at >= self.cap {
            self.turned_away = true;
            return;
        }
        if self.len == self.cap {
            self.turned_away = true;
        } else {
            self.len += 1;
        }
        self.list.copy_within(at..self.len - 1, at + 1);
        self.list[at] = key;
    }

    /// The kept ones, best first.
    fn best(&self) -> &[(u8, u32)] {
        &self.list[..self.len]
    }
}

/// Why [`VGicV3::new`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// vCPU count of 0 or above the capacity.
    Vcpus,
    /// SPI capacity not a multiple of 32 or above 988.
    Spis,
}

/// The GICv3 of one guest: `SPIS` SPIs (INTIDs 32..32 + `SPIS`), up to `VCPUS` vCPUs.
pub struct VGicV3<const SPIS: usize, const VCPUS: usize> {
    ctlr: u32,
    spis: [Irq; SPIS],
    irouter: [u64; SPIS],
    private: [[Irq; 32]; VCPUS],
    /// Per vCPU, a bit per private INTID that is [`Irq::ready`]; kept in step by
    /// [`Self::update`].
    private_ready: [u32; VCPUS],
    /// A bit per SPI that is [`Irq::ready`] (see [`SPI_WORDS`]); kept in step by
    /// [`Self::update`].
    spi_ready: [u32; SPI_WORDS],
    waker: [u32; VCPUS],
    vcpus: usize,
    /// INTID in each list register a vCPU's flush wrote (`None`: free).
    lrs: [[Option<u32>; MAX_LRS]; VCPUS],
    /// Whether the last flush left deliverable interrupts out (underflow armed).
    overflow: [bool; VCPUS],
    /// INTID bits with LPIs (14..=16), 0 without.
    lpi_bits: u32,
    /// `GICD_TYPER` (set by `new` and `enable_lpis`: one load on a read).
    dist_typer: u32,
    /// Per redistributor: `GICR_PROPBASER`, `GICR_PENDBASER`, `EnableLPIs`.
    rd_lpis: [RdLpis; VCPUS],
    errors: ErrorCounters,
}

/// A redistributor's LPI registers.
#[derive(Clone, Copy, Debug, Default)]
struct RdLpis {
    propbaser: u64,
    pendbaser: u64,
    enabled: bool,
}

/// What a guest access does to one bit-per-INTID register.
#[derive(Clone, Copy)]
enum BitReg {
    Group,
    SetEnable,
    ClearEnable,
    SetPending,
    ClearPending,
    SetActive,
    ClearActive,
}

/// The vCPU (guest-local index) an affinity value names, with vCPU `i` at
/// `Aff1 = i / 16`, `Aff0 = i % 16`, `Aff2 = Aff3 = 0`.
fn vcpu_of(aff3: u64, aff2: u64, aff1: u64, aff0: u64) -> Option<usize> {
    (aff3 == 0 && aff2 == 0 && aff0 < 16).then_some((aff1 * 16 + aff0) as usize)
}

/// `MPIDR`-style affinity of vCPU `i` (`Aff1:Aff0`).
pub fn affinity_of(vcpu: usize) -> u64 {
    (((vcpu / 16) as u64) << 8) | (vcpu % 16) as u64
}

/// An SGI request decoded from `ICC_SGI1R_EL1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sgi {
    /// SGI INTID (0-15).
    pub intid: u32,
    /// Every PE but the sender.
    pub broadcast: bool,
    /// Aff3.Aff2.Aff1 of the targets.
    pub aff: (u64, u64, u64),
    /// Target list: Aff0 = `rs * 16 + bit`.
    pub target_list: u16,
    /// Range selector.
    pub rs: u64,
}

impl Sgi {
    /// Decode a guest's `ICC_SGI1R_EL1` write.
    pub fn decode(v: u64) -> Sgi {
        Sgi {
            intid: ((v >> sgi1r::INTID_SHIFT) & 0xf) as u32,
            broadcast: v & sgi1r::IRM != 0,
            aff: (
                (v >> sgi1r::AFF3_SHIFT) & 0xff,
                (v >> sgi1r::AFF2_SHIFT) & 0xff,
                (v >> sgi1r::AFF1_SHIFT) & 0xff,
            ),
            target_list: (v & sgi1r::TARGET_LIST_MASK) as u16,
            rs: (v >> sgi1r::RS_SHIFT) & 0xf,
        }
    }

    /// The vCPUs (of `vcpus`) it targets, sent by `sender`, as a bit mask (vCPUs
    /// beyond 64 are not addressable here; a target that does not exist is dropped,
    /// as the architecture says).
    pub fn targets(&self, sender: usize, vcpus: usize) -> u64 {
        let n = vcpus.min(64);
        if self.broadcast {
            let all = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
            return all & !(1u64 << (sender % 64));
        }
        let (a3, a2, a1) = self.aff;
        let mut mask = 0;
        for bit in 0..16u64 {
            if self.target_list & (1 << bit) == 0 {
                continue;
            }
            let aff0 = self.rs * 16 + bit;
            if let Some(v) = vcpu_of(a3, a2, a1, aff0).filter(|&v| v < n) {
                mask |= 1 << v;
            }
        }
        mask
    }
}

impl<const SPIS: usize, const VCPUS: usize> VGicV3<SPIS, VCPUS> {
    /// A GIC for `vcpus` vCPUs, everything disabled, SPIs level-triggered and routed
    /// to vCPU 0, SGIs edge, PPIs level.
    pub fn new(vcpus: usize) -> Result<Self, ConfigError> {
        if vcpus == 0 || vcpus > VCPUS {
            return Err(ConfigError::Vcpus);
        }
        if SPIS % 32 != 0 || SPIS > (intid::SPI_END - intid::SPI_BASE) as usize {
            return Err(ConfigError::Spis);
        }
        let mut private = [[Irq::default(); 32]; VCPUS];
        for p in private.iter_mut() {
            for irq in p[..intid::PPI_BASE as usize].iter_mut() {
                irq.edge = true;
            }
        }
        Ok(VGicV3 {
            ctlr: 0,
            spis: [Irq::default(); SPIS],
            irouter: [0; SPIS],
            private,
            private_ready: [0; VCPUS],
            spi_ready: [0; SPI_WORDS],
            waker: [gicr::WAKER_PROCESSOR_SLEEP | gicr::WAKER_CHILDREN_ASLEEP; VCPUS],
            vcpus,
            lrs: [[None; MAX_LRS]; VCPUS],
            overflow: [false; VCPUS],
            lpi_bits: 0,
            // ITLinesNumber, IDbits = 9 (10 bits of INTID).
            dist_typer: ((intid::SPI_BASE + SPIS as u32) / 32 - 1)
                | (9 << gicd::TYPER_IDBITS_SHIFT),
            rd_lpis: [RdLpis::default(); VCPUS],
            errors: ErrorCounters::default(),
        })
    }

    /// Advertise LPIs with INTIDs below 2^`intid_bits` (14..=16; see the module
    /// docs). Refused (`false`, nothing changed) for other widths.
    pub fn enable_lpis(&mut self, intid_bits: u32) -> bool {
        if !(14..=16).contains(&intid_bits) {
            return false;
        }
        self.lpi_bits = intid_bits;
        // IDbits = the LPIs' INTID bits − 1, and LPIS.
        self.dist_typer = (self.dist_typer & !(0x1f << gicd::TYPER_IDBITS_SHIFT))
            | ((intid_bits - 1) << gicd::TYPER_IDBITS_SHIFT)
            | gicd::TYPER_LPIS;
        true
    }

    /// `GICR_PROPBASER` of `vcpu`'s redistributor once its `GICR_CTLR.EnableLPIs` is
    /// set (`None` before, or without LPIs): where its LPI configuration bytes are.
    pub fn propbaser(&self, vcpu: usize) -> Option<u64> {
        let r = self.rd_lpis.get(vcpu).filter(|_| vcpu < self.vcpus)?;
        r.enabled.then_some(r.propbaser)
    }

    /// vCPUs.
    pub fn vcpus(&self) -> usize {
        self.vcpus
    }

    /// Guest accesses ignored so far.
    pub fn errors(&self) -> ErrorCounters {
        self.errors
    }

    /// Bytes of the redistributor region (one RD + SGI frame pair per vCPU).
    pub fn redist_size(&self) -> u64 {
        gicr::STRIDE * self.vcpus as u64
    }

    fn nr_intids(&self) -> u32 {
        intid::SPI_BASE + SPIS as u32
    }

    /// Change `intid` as seen by `vcpu` (private for 0-31) with `f`, if it exists, and
    /// keep its bit of the ready summary (`private_ready`/`spi_ready`) in step: the
    /// only way to change an interrupt's state after [`Self::new`].
    fn update<R>(&mut self, vcpu: usize, intid: u32, f: impl FnOnce(&mut Irq) -> R) -> Option<R> {
        let (irq, word, bit) = if intid < intid::SPI_BASE {
            let irq = self.private.get_mut(vcpu)?.get_mut(intid as usize)?;
            (irq, self.private_ready.get_mut(vcpu)?, intid)
        } else {
            let i = (intid - intid::SPI_BASE) as usize;
            let irq = self.spis.get_mut(i)?;
            (irq, self.spi_ready.get_mut(i / 32)?, i as u32 % 32)
        };
        let r = f(irq);
        if irq.ready() {
            *word |= 1 << bit;
        } else {
            *word &= !(1 << bit);
        }
        Some(r)
    }

    /// The vCPU SPI `intid` is routed to (its `IROUTER`, or vCPU 0 if that names
    /// none): whose inbox a producer raises it in.
    pub fn spi_target(&self, intid: u32) -> usize {
        let i = intid.wrapping_sub(intid::SPI_BASE) as usize;
        let r = self.irouter.get(i).copied().unwrap_or(0);
        vcpu_of(
            (r >> 32) & 0xff,
            (r >> 16) & 0xff,
            (r >> 8) & 0xff,
            r & 0xff,
        )
        .filter(|&v| v < self.vcpus)
        .unwrap_or(0)
    }

    /// Who must look again after `intid` changed (`vcpu` for a private one).
    fn owner(&self, vcpu: usize, intid: u32) -> usize {
        if intid < intid::SPI_BASE {
            vcpu
        } else {
            self.spi_target(intid)
        }
    }

    /// Configure SPI `intid` as a passthrough of a physical one (or back to a virtual
    /// line with [`Passthrough::None`]). False if it is not an SPI here.
    pub fn set_passthrough(&mut self, intid: u32, pass: Passthrough) -> bool {
        intid >= intid::SPI_BASE && self.update(0, intid, |irq| irq.pass = pass).is_some()
    }

    /// Configure PPI `intid` (16..32) of `vcpu` as a passthrough of a physical PPI
    /// (the virtual timer's, `HW`-linked to the physical PPI of the CPU that runs the
    /// vCPU), or back to a virtual line. False if `intid` is not a PPI or there is no
    /// such vCPU.
    pub fn set_ppi_passthrough(&mut self, vcpu: usize, intid: u32, pass: Passthrough) -> bool {
        if !(intid::PPI_BASE..intid::SPI_BASE).contains(&intid) || vcpu >= self.vcpus {
            return false;
        }
        self.update(vcpu, intid, |irq| irq.pass = pass).is_some()
    }

    /// Set the line of level interrupt `intid` (a PPI of `vcpu`, or an SPI) and kick
    /// the vCPU that must look. Edge-configured interrupts latch a rising edge.
    pub fn set_level(&mut self, vcpu: usize, intid: u32, level: bool, kick: &impl Kick) {
        let owner = self.owner(vcpu, intid);
        let Some(rising) = self.update(vcpu, intid, |irq| {
            let rising = level && !irq.level;
            irq.level = level;
            if irq.edge && rising {
                irq.latch = true;
            }
            rising
        }) else {
            return;
        };
        if rising || !level {
            kick.kick(owner);
        }
    }

    /// Make `intid` pending once (an edge) and kick the vCPU that must look.
    pub fn pulse(&mut self, vcpu: usize, intid: u32, kick: &impl Kick) {
        let owner = self.owner(vcpu, intid);
        if self.update(vcpu, intid, |irq| irq.latch = true).is_some() {
            kick.kick(owner);
        }
    }

    /// A guest's `ICC_SGI1R_EL1` write from `sender`: the SGI becomes pending on every
    /// target, each kicked. Returns the target mask.
    pub fn send_sgi(&mut self, sender: usize, icc_sgi1r: u64, kick: &impl Kick) -> u64 {
        let sgi = Sgi::decode(icc_sgi1r);
        let targets = sgi.targets(sender, self.vcpus);
        for v in 0..self.vcpus.min(64) {
            if targets & (1 << v) != 0 {
                self.update(v, sgi.intid, |irq| irq.latch = true);
                kick.kick(v);
            }
        }
        targets
    }

    fn group_enabled(&self, irq: &Irq) -> bool {
        let bit = if irq.group1 {
            gicd::CTLR_ENABLE_GRP1
        } else {
            gicd::CTLR_ENABLE_GRP0
        };
        self.ctlr & bit != 0
    }

    /// Whether `intid` would be delivered to `vcpu` now (pending, enabled, its group
    /// enabled, routed there).
    pub fn deliverable(&self, vcpu: usize, intid: u32) -> bool {
        let irq = if intid < intid::SPI_BASE {
            match self.private.get(vcpu) {
                Some(p) => p[intid as usize],
                None => return false,
            }
        } else {
            match self.spis.get((intid - intid::SPI_BASE) as usize) {
                Some(s) if self.spi_target(intid) == vcpu => *s,
                _ => return false,
            }
        };
        irq.pending() && irq.enabled && self.group_enabled(&irq)
    }

    /// Before entering `vcpu`: drain its `inbox`, then put the deliverable interrupts
    /// into its list registers by priority (see the module docs).
    ///
    /// An SPI found in the inbox that is now routed to another vCPU (its `IROUTER`
    /// changed after the producer looked) becomes pending there, and that vCPU is
    /// kicked.
    ///
    /// **The caller must** have consumed the vCPU's kick (virq-core
    /// `VcpuBlock::take_kick`) before this call: that RMW is what makes every raise
    /// it announced visible to the inbox's relaxed `has_changes` check here.
    pub fn flush(&mut self, vcpu: usize, inbox: &Inbox, ich: &mut impl IchRegs, kick: &impl Kick) {
        if vcpu >= self.vcpus {
            return;
        }
        // The relaxed `has_changes` gate cannot miss a raise whose kick the caller
        // consumed before this flush (virq-core `block`: the kick's RMW orders the
        // raise before it) and saves the full take on the common entry with nothing
        // new (the bench's profile: a 512-byte zero-fill per entry).
        let changes = inbox.has_changes().then(|| inbox.take_changes());
        if let Some(changes) = changes.filter(|c| !c.is_empty()) {
            let mut requested = [0usize; INBOX_WORDS];
            changes.apply(&mut requested);
            for (w, word) in requested.iter().enumerate() {
                let mut bits = *word;
                while bits != 0 {
                    let b = bits.trailing_zeros();
                    bits &= bits - 1;
                    let id = w as u32 * usize::BITS + b;
                    let owner = self.owner(vcpu, id);
                    let known = self.update(vcpu, id, |irq| irq.latch = true).is_some();
                    if known && owner != vcpu {
                        kick.kick(owner);
                    }
                }
            }
        }
        let nlrs = ich.num_lrs().min(MAX_LRS);
        // An interrupt active in a register with a new edge: pending and active there.
        for n in 0..nlrs {
            let Some(id) = self.lrs[vcpu][n] else {
                continue;
            };
            let Some(irq) = self.irq_ref(vcpu, id).copied() else {
                continue;
            };
            let l = ich.read_lr(n);
            if l.state() == LrState::Active && irq.latch && irq.edge {
                ich.write_lr(n, l.with_state(LrState::PendingActive));
                self.update(vcpu, id, |irq| irq.latch = false);
            }
        }
        // `sync` took every still-pending register back, so the free ones are filled
        // best first and no pending register can be worse than one left out: no
        // eviction is needed. The candidates: every deliverable interrupt not in a
        // register (the set bits of the ready summary, less the INTIDs in registers,
        // whose group is enabled and, for an SPI, routed here), of which the best as
        // many as there are free registers go into them, lowest register first.
        let mut free = [0usize; MAX_LRS];
        let mut nfree = 0;
        let mut in_lr = [0u32; INTID_WORDS];
        // Only the implemented registers: `load` never fills one beyond them.
        for (n, slot) in self.lrs[vcpu].iter().enumerate().take(nlrs) {
            match slot {
                Some(id) => {
                    if let Some(w) = in_lr.get_mut(*id as usize / 32) {
                        *w |= 1 << (id % 32);
                    }
                }
                None => {
                    free[nfree] = n;
                    nfree += 1;
                }
            }
        }
        let mut best = Best::new(nfree);
        let mut bits = self.private_ready[vcpu] & !in_lr[0];
        while bits != 0 {
            let b = bits.trailing_zeros();
            bits &= bits - 1;
            let irq = &self.private[vcpu][b as usize];
            if self.group_enabled(irq) {
                best.offer(irq.priority, b);
            }
        }
        for (w, word) in self.spi_ready[..SPIS / 32].iter().enumerate() {
            // SPI word `w` holds INTIDs 32 * (w + 1)..: INTID word `w + 1`.
            let mut bits = word & !in_lr[w + 1];
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                let i = w * 32 + b as usize;
                let id = intid::SPI_BASE + i as u32;
                let irq = &self.spis[i];
                if self.group_enabled(irq) && self.spi_target(id) == vcpu {
                    best.offer(irq.priority, id);
                }
            }
        }
        for (&slot, &(_, id)) in free[..nfree].iter().zip(best.best()) {
            self.load(vcpu, slot, id, ich);
        }
        let left_out = best.turned_away;
        self.overflow[vcpu] = left_out;
        let mut h = ich.read_hcr() | hcr::EN;
        if left_out {
            h |= hcr::UIE;
        } else {
            h &= !hcr::UIE;
        }
        ich.write_hcr(h);
    }

    /// Whether the ready summary says exactly which interrupts are ready (tests).
    #[cfg(test)]
    pub(crate) fn ready_summary_in_step(&self) -> bool {
        let private = (0..self.vcpus).all(|v| {
            (0..32)
                .all(|i| (self.private_ready[v] >> i) & 1 == u32::from(self.private[v][i].ready()))
        });
        private
            && (0..SPIS).all(|i| {
                (self.spi_ready[i / 32] >> (i % 32)) & 1 == u32::from(self.spis[i].ready())
            })
    }

    fn irq_ref(&self, vcpu: usize, intid: u32) -> Option<&Irq> {
        if intid < intid::SPI_BASE {
            self.private.get(vcpu)?.get(intid as usize)
        } else {
            self.spis.get((intid - intid::SPI_BASE) as usize)
        }
    }

    /// Put `id` into register `n` of `vcpu`, pending.
    fn load(&mut self, vcpu: usize, n: usize, id: u32, ich: &mut impl IchRegs) {
        let Some(l) = self.update(vcpu, id, |irq| {
            let mut l = Lr::pending(id, irq.priority, irq.group1);
            match irq.pass {
                Passthrough::Hw { pintid } => l = l.with_hw(pintid),
                // The host must hear of the deactivate to complete the physical one,
                // whatever the guest configured the trigger as.
                Passthrough::Software => l = l.with_eoi(),
                // A level interrupt: hear of the deactivate, to resample the line
                // (and, on the software passthrough path, to complete the physical
                // one).
                _ if !irq.edge => l = l.with_eoi(),
                _ => {}
            }
            // The register now holds the pending state of an edge; a level stays
            // pending while its line is high.
            irq.latch = false;
            l
        }) else {
            return;
        };
        ich.write_lr(n, l);
        self.lrs[vcpu][n] = Some(id);
    }

    /// Take a still-pending register `n` of `vcpu` back into the model.
    fn take_back(&mut self, vcpu: usize, n: usize, ich: &mut impl IchRegs) {
        if let Some(id) = self.lrs[vcpu][n].take() {
            self.update(vcpu, id, |irq| {
                // An edge's pending state lived only in the register. So did a
                // passthrough one's, whatever its configuration: its physical INTID
                // stays active until the guest deactivates this delivery, so no new
                // edge or level will come to re-raise it.
                if irq.edge || irq.pass != Passthrough::None {
                    irq.latch = true;
                }
            });
        }
        ich.write_lr(n, Lr(0));
    }

    /// After `vcpu` exited: fold its list registers back into the model (see the
    /// module docs); `eoi` hears of software-path passthrough completions.
    ///
    /// Returns whether a register changed (a pending one taken back, a deactivated
    /// one freed). When it did not, the last flush left nothing out
    /// ([`Self::overflowed`]) and nothing raised or changed an interrupt of this vCPU
    /// since (no kick, no access to the GIC's registers by this vCPU), the next flush
    /// would change nothing and may be skipped.
    pub fn sync(&mut self, vcpu: usize, ich: &mut impl IchRegs, eoi: &impl EoiSink) -> bool {
        if vcpu >= self.vcpus {
            return false;
        }
        let mut changed = false;
        let nlrs = ich.num_lrs().min(MAX_LRS);
        for n in 0..nlrs {
            let Some(id) = self.lrs[vcpu][n] else {
                continue;
            };
            let l = ich.read_lr(n);
            match l.state() {
                LrState::Pending => {
                    changed = true;
                    self.take_back(vcpu, n, ich);
                }
                LrState::Active | LrState::PendingActive => {
                    self.update(vcpu, id, |irq| irq.active = true);
                }
                LrState::Invalid => {
                    changed = true;
                    self.lrs[vcpu][n] = None;
                    // An invalid register with `EOI` set keeps the EOI maintenance
                    // interrupt asserted (`ICH_MISR_EL2.EOI`) until it is cleared.
                    if l.has_eoi() {
                        ich.write_lr(n, Lr(0));
                    }
                    let Some(pass) = self.update(vcpu, id, |irq| {
                        irq.active = false;
                        irq.pass
                    }) else {
                        continue;
                    };
                    let completed = l.has_eoi() && pass == Passthrough::Software;
                    if completed {
                        eoi.guest_completed(id);
                    }
                }
            }
        }
        changed
    }

    /// Whether the last flush of `vcpu` left deliverable interrupts out of its list
    /// registers (then `ICH_HCR_EL2.UIE` is set).
    pub fn overflowed(&self, vcpu: usize) -> bool {
        self.overflow.get(vcpu).copied().unwrap_or(false)
    }

    fn bit_reg(&mut self, vcpu: usize, reg: BitReg, first: u32, write: Option<u32>) -> u32 {
        let mut out = 0;
        for b in 0..32 {
            let set = write.is_some_and(|w| w & (1 << b) != 0);
            let Some(now) = self.update(vcpu, first + b, |irq| match reg {
                BitReg::Group => {
                    if let Some(w) = write {
                        irq.group1 = w & (1 << b) != 0;
                    }
                    irq.group1
                }
                BitReg::SetEnable | BitReg::ClearEnable => {
                    if set {
                        irq.enabled = matches!(reg, BitReg::SetEnable);
                    }
                    irq.enabled
                }
                BitReg::SetPending | BitReg::ClearPending => {
                    if set {
                        irq.latch = matches!(reg, BitReg::SetPending);
                    }
                    irq.pending()
                }
                BitReg::SetActive | BitReg::ClearActive => {
                    if set {
                        irq.active = matches!(reg, BitReg::SetActive);
                    }
                    irq.active
                }
            }) else {
                break;
            };
            out |= u32::from(now) << b;
        }
        out
    }

    /// Kick the vCPUs that own any INTID of `first..first + 32` set in `mask`.
    fn kick_range(&self, vcpu: usize, first: u32, mask: u32, kick: &impl Kick) {
        let mut done = 0u64;
        for b in 0..32 {
            if mask & (1 << b) != 0 && first + b < self.nr_intids() {
                let o = self.owner(vcpu, first + b);
                if done & (1 << (o % 64)) == 0 {
                    done |= 1 << (o % 64);
                    kick.kick(o);
                }
            }
        }
    }

    fn priority_access(&mut self, vcpu: usize, first: u32, size: u8, write: Option<u64>) -> u64 {
        let mut out = 0u64;
        for i in 0..u32::from(size) {
            let Some(priority) = self.update(vcpu, first + i, |irq| {
                if let Some(w) = write {
                    irq.priority = (w >> (8 * i)) as u8;
                }
                irq.priority
            }) else {
                break;
            };
            out |= u64::from(priority) << (8 * i);
        }
        out
    }

    fn cfg_access(&mut self, vcpu: usize, first: u32, write: Option<u32>, fixed_edge: bool) -> u32 {
        let mut out = 0;
        for k in 0..16 {
            let Some(edge) = self.update(vcpu, first + k, |irq| {
                if let (Some(w), false) = (write, fixed_edge) {
                    irq.edge = w & (2 << (2 * k)) != 0;
                }
                irq.edge
            }) else {
                break;
            };
            out |= u32::from(edge) << (2 * k + 1);
        }
        out
    }

    /// Common access check: width 4 (or `wide` also 1 for priorities, 8 for 64-bit
    /// registers), natural alignment.
    fn check(&mut self, offset: u64, size: u8, allowed: &[u8]) -> bool {
        if !allowed.contains(&size) {
            ErrorCounters::bump(&mut self.errors.bad_width);
            false
        } else if offset % u64::from(size) != 0 {
            ErrorCounters::bump(&mut self.errors.misaligned);
            false
        } else {
            true
        }
    }

    /// A guest access to the distributor frame (`value` `Some` for a write). Returns
    /// what a read sees.
    pub fn dist_access(
        &mut self,
        offset: u64,
        size: u8,
        value: Option<u64>,
        kick: &impl Kick,
    ) -> u64 {
        if offset >= gicd::SIZE {
            ErrorCounters::bump(&mut self.errors.unmapped);
            return 0;
        }
        let off = offset as u32;
        let nr = self.nr_intids();
        // IPRIORITYR: byte-accessible.
        if (gicd::IPRIORITYR..gicd::IPRIORITYR + 1024).contains(&off) {
            if !self.check(offset, size, &[1, 4]) {
                return 0;
            }
            let first = off - gicd::IPRIORITYR;
            if first < intid::SPI_BASE || first >= nr {
                return 0; // RAZ/WI: private (redistributor) or beyond the SPIs.
            }
            return self.priority_access(0, first, size, value);
        }
        // IROUTER: 64-bit (or 32-bit halves).
        if (gicd::IROUTER..gicd::IROUTER + 8 * 1024).contains(&off) {
            if !self.check(offset, size, &[4, 8]) {
                return 0;
            }
            let n = (off - gicd::IROUTER) / 8;
            if n < intid::SPI_BASE || n >= nr {
                return 0;
            }
            let i = (n - intid::SPI_BASE) as usize;
            let (shift, mask) = match (size, off % 8) {
                (8, _) => (0, u64::MAX),
                (_, 0) => (0, 0xffff_ffff),
                _ => (32, 0xffff_ffff_0000_0000),
            };
            if let Some(v) = value {
                let before = self.spi_target(n);
                let merged = (self.irouter[i] & !mask) | ((v << shift) & mask);
                // Aff3 [39:32], IRM RAZ/WI, Aff2..Aff0.
                self.irouter[i] = merged & 0xff_00ff_ffff;
                let after = self.spi_target(n);
                if before != after {
                    kick.kick(before);
                    kick.kick(after);
                }
            }
            return (self.irouter[i] & mask) >> shift;
        }
        if !self.check(offset, size, &[4]) {
            return 0;
        }
        let word = |base: u32| (off - base) / 4;
        let bit_regs = [
            (gicd::IGROUPR, BitReg::Group),
            (gicd::ISENABLER, BitReg::SetEnable),
            (gicd::ICENABLER, BitReg::ClearEnable),
            (gicd::ISPENDR, BitReg::SetPending),
            (gicd::ICPENDR, BitReg::ClearPending),
            (gicd::ISACTIVER, BitReg::SetActive),
            (gicd::ICACTIVER, BitReg::ClearActive),
        ];
        for (base, reg) in bit_regs {
            if (base..base + 0x80).contains(&off) {
                let first = word(base) * 32;
                if first < intid::SPI_BASE || first >= nr {
                    return 0; // RAZ/WI with affinity routing / beyond the SPIs.
                }
                let v = value.map(|v| v as u32);
                let out = self.bit_reg(0, reg, first, v);
                if let Some(w) = v {
                    self.kick_range(0, first, w, kick);
                }
                return u64::from(out);
            }
        }
        if (gicd::ICFGR..gicd::ICFGR + 0x100).contains(&off) {
            let first = word(gicd::ICFGR) * 16;
            if first < intid::SPI_BASE || first >= nr {
                return 0;
            }
            return u64::from(self.cfg_access(0, first, value.map(|v| v as u32), false));
        }
        match off {
            gicd::CTLR => {
                if let Some(v) = value {
                    let before = self.ctlr;
                    self.ctlr = v as u32 & (gicd::CTLR_ENABLE_GRP0 | gicd::CTLR_ENABLE_GRP1);
                    if self.ctlr != before {
                        for vc in 0..self.vcpus {
                            kick.kick(vc);
                        }
                    }
                }
                u64::from(self.ctlr | gicd::CTLR_ARE | gicd::CTLR_DS)
            }
            gicd::TYPER | gicd::IIDR | gicd::TYPER2 | gicd::PIDR2 if value.is_some() => {
                ErrorCounters::bump(&mut self.errors.read_only);
                0
            }
            gicd::TYPER => u64::from(self.dist_typer),
            gicd::IIDR => u64::from(IIDR_VIRQ),
            gicd::TYPER2 => 0,
            gicd::PIDR2 => u64::from(PIDR2_GICV3),
            gicd::STATUSR => 0,
            o if (gicd::ITARGETSR..gicd::ITARGETSR + 0x400).contains(&o)
                || (gicd::IGRPMODR..gicd::IGRPMODR + 0x80).contains(&o)
                || (gicd::NSACR..gicd::NSACR + 0x100).contains(&o) =>
            {
                0 // RES0 / RAZ/WI with affinity routing and one security state.
            }
            gicd::SGIR => {
                if value.is_some() {
                    ErrorCounters::bump(&mut self.errors.ignored_value);
                }
                0
            }
            o if (0xffd0..0x1_0000).contains(&o) => 0, // other ID registers
            _ => {
                ErrorCounters::bump(&mut self.errors.unmapped);
                0
            }
        }
    }

    /// A guest access to the redistributor region (all vCPUs' frames, vCPU `i`'s at
    /// `i * 128 KiB`).
    pub fn redist_access(
        &mut self,
        offset: u64,
        size: u8,
        value: Option<u64>,
        kick: &impl Kick,
    ) -> u64 {
        let vcpu = (offset / gicr::STRIDE) as usize;
        if vcpu >= self.vcpus {
            ErrorCounters::bump(&mut self.errors.unmapped);
            return 0;
        }
        let off = (offset % gicr::STRIDE) as u32;
        if off < gicr::SGI_BASE {
            return self.rd_access(vcpu, off, offset, size, value);
        }
        let off = off - gicr::SGI_BASE;
        if (gicr::sgi::IPRIORITYR..gicr::sgi::IPRIORITYR + 32).contains(&off) {
            if !self.check(offset, size, &[1, 4]) {
                return 0;
            }
            return self.priority_access(vcpu, off - gicr::sgi::IPRIORITYR, size, value);
        }
        if !self.check(offset, size, &[4]) {
            return 0;
        }
        let v = value.map(|v| v as u32);
        let reg = match off {
            gicr::sgi::IGROUPR0 => Some(BitReg::Group),
            gicr::sgi::ISENABLER0 => Some(BitReg::SetEnable),
            gicr::sgi::ICENABLER0 => Some(BitReg::ClearEnable),
            gicr::sgi::ISPENDR0 => Some(BitReg::SetPending),
            gicr::sgi::ICPENDR0 => Some(BitReg::ClearPending),
            gicr::sgi::ISACTIVER0 => Some(BitReg::SetActive),
            gicr::sgi::ICACTIVER0 => Some(BitReg::ClearActive),
            _ => None,
        };
        if let Some(reg) = reg {
            let out = self.bit_reg(vcpu, reg, 0, v);
            if v.is_some_and(|w| w != 0) {
                kick.kick(vcpu);
            }
            return u64::from(out);
        }
        match off {
            gicr::sgi::ICFGR0 => {
                if v.is_some() {
                    ErrorCounters::bump(&mut self.errors.read_only);
                }
                u64::from(self.cfg_access(vcpu, 0, None, true))
            }
            gicr::sgi::ICFGR1 => u64::from(self.cfg_access(vcpu, intid::PPI_BASE, v, false)),
            gicr::sgi::IGRPMODR0 | gicr::sgi::NSACR => 0,
            _ => {
                ErrorCounters::bump(&mut self.errors.unmapped);
                0
            }
        }
    }

    fn rd_access(
        &mut self,
        vcpu: usize,
        off: u32,
        offset: u64,
        size: u8,
        value: Option<u64>,
    ) -> u64 {
        if (gicr::TYPER..gicr::TYPER + 8).contains(&off) {
            if !self.check(offset, size, &[4, 8]) {
                return 0;
            }
            if value.is_some() {
                ErrorCounters::bump(&mut self.errors.read_only);
                return 0;
            }
            let mut t = (affinity_of(vcpu) << 32) | ((vcpu as u64 & 0xffff) << 8);
            if vcpu + 1 == self.vcpus {
                t |= gicr::TYPER_LAST;
            }
            if self.lpi_bits != 0 {
                t |= gicr::TYPER_PLPIS;
            }
            return match (size, off - gicr::TYPER) {
                (8, _) => t,
                (_, 0) => t & 0xffff_ffff,
                _ => t >> 32,
            };
        }
        if (gicr::PROPBASER..gicr::PENDBASER + 8).contains(&off) {
            if !self.check(offset, size, &[4, 8]) || self.lpi_bits == 0 {
                return 0; // RAZ/WI without LPIs.
            }
            return self.lpi_base_access(vcpu, off, size, value);
        }
        if !self.check(offset, size, &[4]) {
            return 0;
        }
        match off {
            gicr::WAKER => {
                if let Some(v) = value {
                    let sleep = v as u32 & gicr::WAKER_PROCESSOR_SLEEP;
                    // ChildrenAsleep follows ProcessorSleep at once.
                    self.waker[vcpu] = if sleep != 0 {
                        sleep | gicr::WAKER_CHILDREN_ASLEEP
                    } else {
                        0
                    };
                }
                u64::from(self.waker[vcpu])
            }
            gicr::CTLR if self.lpi_bits != 0 => {
                let r = &mut self.rd_lpis[vcpu];
                if value.is_some_and(|v| v as u32 & gicr::CTLR_ENABLE_LPIS != 0) {
                    r.enabled = true; // Never cleared (module docs).
                }
                u64::from(if r.enabled { gicr::CTLR_ENABLE_LPIS } else { 0 })
            }
            gicr::CTLR | gicr::STATUSR => 0,
            gicr::IIDR | gicr::PIDR2 if value.is_some() => {
                ErrorCounters::bump(&mut self.errors.read_only);
                0
            }
            gicr::IIDR => u64::from(IIDR_VIRQ),
            gicr::PIDR2 => u64::from(PIDR2_GICV3),
            o if (0xffd0..0x1_0000).contains(&o) => 0,
            _ => {
                ErrorCounters::bump(&mut self.errors.unmapped);
                0
            }
        }
    }
}

impl<const SPIS: usize, const VCPUS: usize> VGicV3<SPIS, VCPUS> {
    /// `GICR_PROPBASER`/`GICR_PENDBASER` of `vcpu` (LPIs on; `off` within them, the
    /// access width checked): 64-bit or 32-bit halves, stored while `EnableLPIs` = 0.
    fn lpi_base_access(&mut self, vcpu: usize, off: u32, size: u8, value: Option<u64>) -> u64 {
        let prop = off < gicr::PENDBASER;
        let reg = if prop {
            gicr::PROPBASER
        } else {
            gicr::PENDBASER
        };
        let (shift, mask) = match (size, off - reg) {
            (8, _) => (0, u64::MAX),
            (_, 0) => (0, 0xffff_ffff),
            _ => (32, 0xffff_ffff_0000_0000),
        };
        let r = &mut self.rd_lpis[vcpu];
        let cur = if prop { r.propbaser } else { r.pendbaser };
        if let Some(v) = value {
            if r.enabled {
                ErrorCounters::bump(&mut self.errors.ignored_value);
            } else {
                let merged = (cur & !mask) | ((v << shift) & mask);
                if prop {
                    r.propbaser = merged & gicr::PROPBASER_RW;
                } else {
                    r.pendbaser = merged & gicr::PENDBASER_RW;
                }
            }
        }
        (cur & mask) >> shift
    }
}

/// The distributor frame as an [`MmioDevice`], with the kick sink its writes need.
pub struct Distributor<'a, const SPIS: usize, const VCPUS: usize, K: Kick> {
    /// The GIC.
    pub gic: &'a mut VGicV3<SPIS, VCPUS>,
    /// Wakes vCPUs whose delivery changed.
    pub kick: &'a K,
}

impl<const SPIS: usize, const VCPUS: usize, K: Kick> MmioDevice
    for Distributor<'_, SPIS, VCPUS, K>
{
    fn region_size(&self) -> u64 {
        gicd::SIZE
    }
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        self.gic.dist_access(offset, size, None, self.kick)
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        self.gic.dist_access(offset, size, Some(value), self.kick);
    }
    fn errors(&self) -> ErrorCounters {
        self.gic.errors()
    }
}

/// The redistributor region as an [`MmioDevice`].
pub struct Redistributors<'a, const SPIS: usize, const VCPUS: usize, K: Kick> {
    /// The GIC.
    pub gic: &'a mut VGicV3<SPIS, VCPUS>,
    /// Wakes vCPUs whose delivery changed.
    pub kick: &'a K,
}

impl<const SPIS: usize, const VCPUS: usize, K: Kick> MmioDevice
    for Redistributors<'_, SPIS, VCPUS, K>
{
    fn region_size(&self) -> u64 {
        self.gic.redist_size()
    }
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        self.gic.redist_access(offset, size, None, self.kick)
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        self.gic.redist_access(offset, size, Some(value), self.kick);
    }
    fn errors(&self) -> ErrorCounters {
        self.gic.errors()
    }
}
