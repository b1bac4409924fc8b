//! H-extension interrupt plumbing (RISC-V privileged spec v1.12+, chapter "Hypervisor
//! Extension"; AIA v1.0 chapter 6 for `hgeie`/`hgeip` and `hstatus.VGEIN`).
//!
//! Hardware is reached only through [`Csrs`]; [`fake::FakeCsrs`] models the few CSR
//! behaviours the plumbing relies on for host tests.
//!
//! - [`HvipSync`]: the vCPU's consumer-owned shadow of `hvip`. [`HvipSync::flush`]
//!   folds the vCPU's [`PendingSet`] changes into the shadow and writes `hvip` before
//!   guest entry; [`HvipSync::sync`] reads `hvip.VSSIP` back after exit, because the
//!   guest clears (or sets) it through `sip.SSIP` (seed 000, core-api "handoff").
//! - [`PendingSink`]: a [`VcpuIrqSink`] that raises/lowers VSEIP in each vCPU's
//!   [`PendingSet`] and kicks the vCPU when `raise` asks for it.
//! - [`HgeieDoorbell`] and [`handle_sgei`]: the SGEI as a doorbell (seed 002). A line's
//!   `hgeie` bit is the doorbell's hardware enable, unmasked only while its vCPU is
//!   descheduled and blocking (`virq_core::doorbell::Doorbell::put`).
//! - `hstatus.VGEIN` selection lives with the guest-file management in
//!   [`crate::msi::VcpuImsic::load`].

use virq_core::doorbell::DoorbellHw;
use virq_core::hgei::HgeiAllocator;
use virq_core::pending::PendingSet;

use crate::mmio::VcpuIrqSink;

/// `hvip.VSSIP`: VS-level software interrupt (id 2).
pub const HVIP_VSSIP: u64 = 1 << 2;
/// `hvip.VSTIP`: VS-level timer interrupt (id 6).
pub const HVIP_VSTIP: u64 = 1 << 6;
/// `hvip.VSEIP`: VS-level external interrupt (id 10).
pub const HVIP_VSEIP: u64 = 1 << 10;
/// Bits of `hvip` this module manages.
pub const HVIP_MASK: u64 = HVIP_VSSIP | HVIP_VSTIP | HVIP_VSEIP;
/// Interrupt id of the VS external interrupt.
pub const IRQ_VS_EXT: u32 = 10;
/// Interrupt id of the VS software interrupt (the handoff id).
pub const IRQ_VS_SOFT: u32 = 2;
/// Interrupt id of the VS timer interrupt.
pub const IRQ_VS_TIMER: u32 = 6;
/// Shift of `hstatus.VGEIN`.
pub const HSTATUS_VGEIN_SHIFT: u32 = 12;
/// Mask of `hstatus.VGEIN` (6 bits).
pub const HSTATUS_VGEIN_MASK: u64 = 0x3f << HSTATUS_VGEIN_SHIFT;

/// The hypervisor CSRs this crate touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Csr {
    /// `hstatus` (0x600).
    Hstatus,
    /// `hvip` (0x645).
    Hvip,
    /// `hgeie` (0x607).
    Hgeie,
    /// `hgeip` (0xE12, read-only).
    Hgeip,
}

impl Csr {
    /// The CSR number.
    pub const fn number(self) -> u16 {
        match self {
            Self::Hstatus => 0x600,
            Self::Hvip => 0x645,
            Self::Hgeie => 0x607,
            Self::Hgeip => 0xE12,
        }
    }
}

/// Access to the current hart's hypervisor CSRs. Hyp implements it with `csrr`/`csrw`
/// (and may override [`Csrs::set`]/[`Csrs::clear`] with `csrs`/`csrc`).
pub trait Csrs {
    /// Reads `csr`.
    fn read(&self, csr: Csr) -> u64;
    /// Writes `csr`.
    fn write(&self, csr: Csr, value: u64);
    /// Sets `mask` bits of `csr`.
    fn set(&self, csr: Csr, mask: u64) {
        self.write(csr, self.read(csr) | mask);
    }
    /// Clears `mask` bits of `csr`.
    fn clear(&self, csr: Csr, mask: u64) {
        self.write(csr, self.read(csr) & !mask);
    }
}

impl<T: Csrs + ?Sized> Csrs for &T {
    fn read(&self, csr: Csr) -> u64 {
        (**self).read(csr)
    }
    fn write(&self, csr: Csr, value: u64) {
        (**self).write(csr, value);
    }
    fn set(&self, csr: Csr, mask: u64) {
        (**self).set(csr, mask);
    }
    fn clear(&self, csr: Csr, mask: u64) {
        (**self).clear(csr, mask);
    }
}

/// Selects guest external interrupt line `line` for VS level (`hstatus.VGEIN`; 0 =
/// none).
pub fn set_vgein(csrs: &impl Csrs, line: u32) {
    let hs = csrs.read(Csr::Hstatus) & !HSTATUS_VGEIN_MASK;
    csrs.write(
        Csr::Hstatus,
        hs | ((u64::from(line) << HSTATUS_VGEIN_SHIFT) & HSTATUS_VGEIN_MASK),
    );
}

/// The current `hstatus.VGEIN`.
pub fn vgein(csrs: &impl Csrs) -> u32 {
    ((csrs.read(Csr::Hstatus) & HSTATUS_VGEIN_MASK) >> HSTATUS_VGEIN_SHIFT) as u32
}

/// A vCPU's consumer-owned view of `hvip` (the "shadow" of core-api's handoff rules).
///
/// **Guarantees:** after [`Self::flush`], `hvip`'s VSSIP/VSTIP/VSEIP hold every change
/// producers made before the kick the caller consumed; VSSIP, which the guest clears
/// itself, is never lost to a raise racing that clear (use a pending set with
/// [`IRQ_VS_SOFT`] as its handoff id: `PendingSet::with_handoff`). **The caller
/// must:** call `flush` right before every guest entry, after
/// `VcpuBlock::take_kick`, and `sync` after every guest exit and before the next
/// `flush`, on the hart the vCPU runs on, with `Csrs` of that hart. (A caller that
/// re-enters the guest without taking changes may skip the pair: with no change taken,
/// `sync` + `flush` leave `hvip` as the guest left it. The `sync` must then precede the
/// next `flush`, which would otherwise write back a VSSIP the guest has cleared.)
///
/// # Example
///
/// ```
/// use virq_core::pending::VcpuPending;
/// use virq_riscv::hext::{fake::FakeCsrs, Csr, Csrs, HvipSync, HVIP_VSSIP, IRQ_VS_SOFT};
///
/// let pending = VcpuPending::with_handoff(&[IRQ_VS_SOFT]).unwrap();
/// let (csrs, mut hvip) = (FakeCsrs::new(0), HvipSync::new());
/// assert_eq!(pending.raise(IRQ_VS_SOFT), Ok(true)); // an IPI: kick
/// hvip.flush(&pending, &csrs); // guest entry
/// assert_ne!(csrs.read(Csr::Hvip) & HVIP_VSSIP, 0);
/// csrs.guest_write_ssip(false); // the guest acknowledges the IPI
/// hvip.sync(&csrs); // guest exit
/// assert_eq!(pending.raise(IRQ_VS_SOFT), Ok(true), "the next IPI kicks again");
/// hvip.flush(&pending, &csrs);
/// assert_ne!(csrs.read(Csr::Hvip) & HVIP_VSSIP, 0);
/// ```
///
/// Only the vCPU's own thread touches it: `flush` right before guest entry, `sync`
/// right after guest exit, both with the vCPU resident on the current hart. Producers
/// never write it; they only `raise`/`lower` in the [`PendingSet`].
#[derive(Clone, Copy, Debug)]
pub struct HvipSync<const W: usize> {
    shadow: [usize; W],
    /// What `hvip` holds (our last write, updated by `sync`).
    hw: u64,
}

impl<const W: usize> Default for HvipSync<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const W: usize> HvipSync<W> {
    /// Nothing pending, `hvip` assumed 0 (write it once at vCPU creation).
    pub const fn new() -> Self {
        Self {
            shadow: [0; W],
            hw: 0,
        }
    }

    /// The `hvip` value the shadow asks for.
    pub fn shadow_hvip(&self) -> u64 {
        (self.shadow[0] as u64) & HVIP_MASK
    }

    /// Before guest entry: applies the producers' changes and writes `hvip` if its
    /// managed bits differ. Returns whether `hvip` was written.
    pub fn flush(&mut self, pending: &PendingSet<W>, csrs: &impl Csrs) -> bool {
        if pending.has_changes() {
            pending.take_changes().apply(&mut self.shadow);
        }
        let want = self.shadow_hvip();
        if want == self.hw {
            return false;
        }
        let other = csrs.read(Csr::Hvip) & !HVIP_MASK;
        csrs.write(Csr::Hvip, other | want);
        self.hw = want;
        true
    }

    /// After guest exit: reads back `hvip.VSSIP`, which the guest may have cleared or
    /// set through `sip.SSIP`, into the shadow (and nothing else).
    pub fn sync(&mut self, csrs: &impl Csrs) {
        let vssip = csrs.read(Csr::Hvip) & HVIP_VSSIP;
        self.hw = (self.hw & !HVIP_VSSIP) | vssip;
        if vssip != 0 {
            self.shadow[0] |= HVIP_VSSIP as usize;
        } else {
            self.shadow[0] &= !(HVIP_VSSIP as usize);
        }
    }
}

/// A [`VcpuIrqSink`] over per-vCPU [`PendingSet`]s: VSEIP (id 10) is raised or
/// lowered in `vcpus[vcpu]`, and `kick(vcpu)` runs when `raise` says the consumer must
/// look. Unknown vCPUs are ignored.
pub struct PendingSink<'a, const W: usize, K: Fn(u32)> {
    vcpus: &'a [PendingSet<W>],
    kick: K,
}

impl<'a, const W: usize, K: Fn(u32)> PendingSink<'a, W, K> {
    /// A sink over `vcpus` calling `kick`.
    pub fn new(vcpus: &'a [PendingSet<W>], kick: K) -> Self {
        Self { vcpus, kick }
    }
}

impl<const W: usize, K: Fn(u32)> VcpuIrqSink for PendingSink<'_, W, K> {
    fn set_vseip(&self, vcpu: u32, level: bool) {
        let Some(p) = self.vcpus.get(vcpu as usize) else {
            return;
        };
        if level {
            if p.raise(IRQ_VS_EXT) == Ok(true) {
                (self.kick)(vcpu);
            }
        } else {
            // Id 10 is below NR_IRQS for every W >= 1: the error cannot happen.
            let _ = p.lower(IRQ_VS_EXT);
        }
    }
}

/// The hardware enable of a guest external interrupt line: its `hgeie` bit. This is
/// the [`DoorbellHw`] of a vCPU whose interrupt file is a hardware guest file.
pub struct HgeieDoorbell<'a, C: Csrs> {
    csrs: &'a C,
    line: u32,
}

impl<'a, C: Csrs> HgeieDoorbell<'a, C> {
    /// The doorbell enable of `line` (1..=63) on the current hart.
    pub fn new(csrs: &'a C, line: u32) -> Self {
        Self { csrs, line }
    }

    fn bit(&self) -> u64 {
        1u64.checked_shl(self.line).unwrap_or(0) & !1
    }
}

impl<C: Csrs> DoorbellHw for HgeieDoorbell<'_, C> {
    fn mask(&self) {
        self.csrs.clear(Csr::Hgeie, self.bit());
    }
    /// Sets the line's `hgeie` bit, then reads `hgeip` back: the line's source. An MSI
    /// that reached the file while it was masked shows there even when `hip.SGEIP`
    /// does not (QEMU 10.0.2's race, see [`sgei_lines`]).
    fn unmask(&self) -> bool {
        self.csrs.set(Csr::Hgeie, self.bit());
        self.csrs.read(Csr::Hgeip) & self.bit() != 0
    }
}

/// The guest external interrupt lines of this hart that are pending and enabled
/// (`hgeip & hgeie`, bit 0 excluded): the *source* of the SGEI.
///
/// Decide on this, never on `hip.SGEIP` alone. QEMU 10.0.2 computes `mip.SGEIP` in
/// `write_hgeie` (target/riscv/csr.c) from `hgeie & hgeip` read *before* it takes the
/// big lock in `riscv_cpu_update_mip`, while an MSI into a guest file on another vCPU
/// thread sets `hgeip` and SGEIP under that lock (`riscv_cpu_set_irq`,
/// target/riscv/cpu.c). When an `hgeie` write of this hart overlaps such an MSI, the
/// stale 0 can be written last: `hip.SGEIP` reads 0 with `hgeip & hgeie != 0`, and no
/// interrupt follows. docs/design.md ("Doorbells") has the interleaving.
pub fn sgei_lines(csrs: &impl Csrs) -> u64 {
    csrs.read(Csr::Hgeip) & csrs.read(Csr::Hgeie) & !1
}

/// The supervisor guest external interrupt (SGEI, `hip` bit 12) handler of hart
/// `hart`: for every line both pending (`hgeip`) and enabled (`hgeie`), looks up its
/// owner and calls `fire(owner, doorbell)`; hyp then calls its vCPU's
/// `Doorbell::fire(doorbell)` and kicks on `true`. A line without an owner is masked so
/// it cannot storm. Returns the number of lines handled.
///
/// Every line handled is masked (by `Doorbell::fire` or here), and each mask is an
/// `hgeie` write that can race an MSI on another line (see [`sgei_lines`]): so the
/// handler reads the source again until no enabled line is pending. `fire` must mask
/// the line it is given (`Doorbell::fire` does whenever it kicks; otherwise the
/// doorbell was already masked) — a line still enabled and pending after its `fire`
/// is masked here, and the loop ends after at most 64 rounds.
pub fn handle_sgei<C: Csrs, const HARTS: usize>(
    csrs: &C,
    hart: usize,
    alloc: &HgeiAllocator<HARTS>,
    mut fire: impl FnMut(u32, &HgeieDoorbell<'_, C>),
) -> u32 {
    let mut n = 0;
    let mut seen = 0u64;
    for _ in 0..64 {
        let mut lines = sgei_lines(csrs);
        if lines == 0 {
            break;
        }
        while lines != 0 {
            let line = lines.trailing_zeros();
            lines &= lines - 1;
            let door = HgeieDoorbell::new(csrs, line);
            match alloc.owner(hart, line) {
                // A line that comes back after its fire was not masked by it: mask
                // it now, so the loop ends whatever `fire` does.
                Some(_) if seen & (1 << line) != 0 => door.mask(),
                Some(owner) => fire(owner, &door),
                None => door.mask(),
            }
            seen |= 1 << line;
            n += 1;
        }
    }
    n
}

/// Host models of the hypervisor CSRs, for tests, benches and fuzzing.
pub mod fake {
    use core::cell::Cell;

    use super::{Csr, Csrs, HSTATUS_VGEIN_MASK, HVIP_MASK, HVIP_VSSIP};

    /// One hart's `hstatus`, `hvip`, `hgeie`, `hgeip`, with the WARL behaviour the
    /// plumbing relies on: `hvip` keeps only VSSIP/VSTIP/VSEIP, `hgeie` only
    /// implemented lines, `hgeip` is read-only (set by [`FakeCsrs::set_hgeip`]), VGEIN
    /// keeps only implemented lines (else 0).
    #[derive(Debug, Default)]
    pub struct FakeCsrs {
        hstatus: Cell<u64>,
        hvip: Cell<u64>,
        hgeie: Cell<u64>,
        hgeip: Cell<u64>,
        lines: u64,
        hvip_writes: Cell<u32>,
        /// `hip.SGEIP` as QEMU keeps it: a stored bit, updated on `hgeie` writes and
        /// when a line rises, not computed on read.
        sgeip: Cell<bool>,
        /// A line whose MSI lands inside the next `hgeie` write (QEMU's race).
        race_line: Cell<Option<u32>>,
    }

    impl FakeCsrs {
        /// A hart whose `hgeie` implements `lines` (bit 0 ignored).
        pub fn new(lines: u64) -> Self {
            Self {
                lines: lines & !1,
                ..Self::default()
            }
        }

        /// The guest writes `sip.SSIP` (an alias of `hvip.VSSIP`).
        pub fn guest_write_ssip(&self, v: bool) {
            let h = self.hvip.get() & !HVIP_VSSIP;
            self.hvip.set(if v { h | HVIP_VSSIP } else { h });
        }

        /// A guest interrupt file raises or lowers its line (and, as QEMU does,
        /// recomputes the stored `hip.SGEIP`).
        pub fn set_hgeip(&self, line: u32, v: bool) {
            let bit = 1u64.checked_shl(line).unwrap_or(0) & self.lines;
            let g = self.hgeip.get();
            self.hgeip.set(if v { g | bit } else { g & !bit });
            self.sgeip
                .set(self.hgeip.get() & self.hgeie.get() & self.lines != 0);
        }

        /// `hip.SGEIP` as the hart reports it (see [`Self::race_msi_with_next_hgeie_write`]).
        pub fn sgeip(&self) -> bool {
            self.sgeip.get()
        }

        /// Reproduce QEMU 10.0.2's `write_hgeie` race on the next `hgeie` write: the
        /// write computes SGEIP from the old `hgeip`, an MSI raises `line` (and sets
        /// SGEIP correctly under the lock), then the write's stale value lands last.
        /// Afterwards `hgeip & hgeie` can be non-zero while [`Self::sgeip`] is false.
        pub fn race_msi_with_next_hgeie_write(&self, line: u32) {
            self.race_line.set(Some(line));
        }

        /// Number of writes to `hvip` so far.
        pub fn hvip_writes(&self) -> u32 {
            self.hvip_writes.get()
        }
    }

    impl Csrs for FakeCsrs {
        fn read(&self, csr: Csr) -> u64 {
            match csr {
                Csr::Hstatus => self.hstatus.get(),
                Csr::Hvip => self.hvip.get(),
                Csr::Hgeie => self.hgeie.get(),
                Csr::Hgeip => self.hgeip.get(),
            }
        }

        fn write(&self, csr: Csr, value: u64) {
            match csr {
                Csr::Hstatus => {
                    let line = (value & HSTATUS_VGEIN_MASK) >> super::HSTATUS_VGEIN_SHIFT;
                    let keep = if (self.lines >> line) & 1 == 1 {
                        value
                    } else {
                        value & !HSTATUS_VGEIN_MASK
                    };
                    self.hstatus.set(keep);
                }
                Csr::Hvip => {
                    self.hvip.set(value & HVIP_MASK);
                    self.hvip_writes.set(self.hvip_writes.get() + 1);
                }
                Csr::Hgeie => {
                    self.hgeie.set(value & self.lines);
                    let computed = self.hgeip.get() & self.hgeie.get() != 0;
                    if let Some(line) = self.race_line.take() {
                        self.set_hgeip(line, true);
                    }
                    self.sgeip.set(computed);
                }
                Csr::Hgeip => {}
            }
        }
    }
}
