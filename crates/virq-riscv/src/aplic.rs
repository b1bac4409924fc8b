//! vAPLIC: one guest-visible APLIC interrupt domain (RISC-V AIA v1.0, chapter 4).
//!
//! The guest sees a supervisor-level *leaf* domain with `sources` sources and one hart
//! index per vCPU (`0..harts`), in either delivery mode:
//!
//! - **Direct** (`domaincfg.DM = 0`, AIA 4.8): each hart index has an IDC
//!   (`idelivery`, `iforce`, `ithreshold`, `topi`, `claimi`) at `0x4000 + 32*hart`;
//!   its output drives that vCPU's VS external interrupt through [`VcpuIrqSink`].
//! - **MSI** (`domaincfg.DM = 1`, AIA 4.9): a pending and enabled source (with
//!   `domaincfg.IE = 1`) is forwarded at once as an [`Msi`] (hart index, guest index,
//!   EIID from `target[i]`) to an [`MsiSink`], and its pending bit is cleared.
//!
//! Choices where the spec leaves freedom (all WARL/WLRL or "may"):
//!
//! | item | choice |
//! |---|---|
//! | `domaincfg.BE` | read-only 0 (little-endian); `setipnum_be` still byte-swaps |
//! | `sourcecfg.D` | leaf domain: a write with bit 10 set writes 0 (AIA 4.5.2) |
//! | reserved SM (2, 3) | written as 0 (inactive), counted in `ignored_value` |
//! | IPRIOLEN | 8; a written IPRIO of 0 becomes 1 (AIA 4.5.16.1) |
//! | EIID width | 11 bits; the interrupt file ignores identities it lacks |
//! | Guest Index | read-only 0: the guest's harts have no guest files |
//! | Hart Index | stored as written (14 bits); a hart index the guest was not given never receives anything: MSIs to it are dropped and counted, its IDC does not exist |
//! | `genmsi` | the extempore MSI is sent during the write, so Busy always reads 0 |
//! | `sourcecfg` write selecting a level mode | pending := rectified input |
//! | `*msiaddrcfg*` | not implemented (supervisor domain): reserved |
//! | unimplemented source registers | outside the map (counted) |
//!
//! Pending-bit rules follow AIA 4.7 ("Precise effects on interrupt-pending bits")
//! exactly; see [`VAplic::set_input`].

use crate::bits::Bits;
use crate::mmio::{ConfigError, ErrorCounters, MmioDevice, VcpuIrqSink};
use crate::msi::{Msi, MsiSink};

/// Highest source number.
pub const MAX_SOURCES: u32 = 1023;
/// Largest IPRIO (IPRIOLEN = 8).
pub const MAX_IPRIO: u32 = 0xff;
/// Mask of the EIID field (11 bits).
pub const EIID_MASK: u32 = 0x7ff;
/// Largest number of hart indices (14-bit Hart Index field).
pub const MAX_HARTS: u32 = 1 << 14;

const WORDS: usize = 16;

/// The APLIC domain register map and fields (RISC-V AIA v1.0 chapter 4), the one place
/// they are written down: the model below decodes with them and a hypervisor's driver
/// of a physical APLIC (hyp's `arch::mmio::HostAplic`) programs with them.
pub mod regs {
    /// `domaincfg` (AIA 4.5.1).
    pub const DOMAINCFG: u32 = 0x0000;
    /// `sourcecfg[i]` at `SOURCECFG_BASE + 4 * i`, i = 1..=1023 (AIA 4.5.2).
    pub const SOURCECFG_BASE: u32 = 0x0000;
    /// End of the `sourcecfg` array.
    pub const SOURCECFG_END: u32 = 0x1000;
    /// `setip[k]` (AIA 4.5.5).
    pub const SETIP: u32 = 0x1c00;
    /// `setipnum` (AIA 4.5.6).
    pub const SETIPNUM: u32 = 0x1cdc;
    /// `in_clrip[k]` (AIA 4.5.7).
    pub const IN_CLRIP: u32 = 0x1d00;
    /// `clripnum` (AIA 4.5.8).
    pub const CLRIPNUM: u32 = 0x1ddc;
    /// `setie[k]` (AIA 4.5.9).
    pub const SETIE: u32 = 0x1e00;
    /// `setienum` (AIA 4.5.10).
    pub const SETIENUM: u32 = 0x1edc;
    /// `clrie[k]` (AIA 4.5.11).
    pub const CLRIE: u32 = 0x1f00;
    /// `clrienum` (AIA 4.5.12).
    pub const CLRIENUM: u32 = 0x1fdc;
    /// `setipnum_le` (AIA 4.5.13).
    pub const SETIPNUM_LE: u32 = 0x2000;
    /// `setipnum_be` (AIA 4.5.14).
    pub const SETIPNUM_BE: u32 = 0x2004;
    /// `genmsi` (AIA 4.5.15); `target[i]` at `TARGET_BASE + 4 * i` (AIA 4.5.16).
    pub const GENMSI: u32 = 0x3000;
    /// Base of the `target` array (its slot 0 is `genmsi`).
    pub const TARGET_BASE: u32 = 0x3000;
    /// End of the `target` array.
    pub const TARGET_END: u32 = 0x4000;
    /// Interrupt delivery control structures, one per hart index (AIA 4.8).
    pub const IDC_BASE: u32 = 0x4000;
    /// Size of one IDC.
    pub const IDC_SIZE: u32 = 32;
    /// `domaincfg.IE`: interrupts enabled.
    pub const DOMAINCFG_IE: u32 = 1 << 8;
    /// `domaincfg.DM`: MSI delivery mode.
    pub const DOMAINCFG_DM: u32 = 1 << 2;
    /// `sourcecfg.D`: delegated to a child domain.
    pub const SOURCECFG_D: u32 = 1 << 10;
    /// Shift of a `target` register's Hart Index field.
    pub const TARGET_HART_SHIFT: u32 = 18;
    /// Shift of a `target` register's Guest Index field (MSI mode).
    pub const TARGET_GUEST_SHIFT: u32 = 12;
}

use regs::{
    CLRIE, CLRIENUM, CLRIPNUM, DOMAINCFG, DOMAINCFG_DM, DOMAINCFG_IE, GENMSI, IDC_BASE, IDC_SIZE,
    IN_CLRIP, SETIE, SETIENUM, SETIP, SETIPNUM, SETIPNUM_BE, SETIPNUM_LE, SOURCECFG_D,
    SOURCECFG_END, TARGET_END, TARGET_HART_SHIFT as HART_SHIFT,
};

/// The sources a 32-bit write of `value` at `offset` of an APLIC domain asks to set
/// pending: `setipnum`, `setipnum_le` (one source), `setipnum_be` (one source, byte
/// swapped), `setip[k]` (one per set bit, sources `32k..32k+31`); none for any other
/// register. Source numbers are not range-checked (the device ignores invalid ones). A
/// hypervisor uses it to see a guest's level re-trigger (AIA §4.9.2) of a passthrough
/// source before handing the write to the model.
pub fn setip_sources(offset: u64, value: u32, mut f: impl FnMut(u32)) {
    match offset {
        o if o == u64::from(SETIPNUM) || o == u64::from(SETIPNUM_LE) => f(value),
        o if o == u64::from(SETIPNUM_BE) => f(value.swap_bytes()),
        o if (u64::from(SETIP)..u64::from(SETIP) + 0x80).contains(&o) && o % 4 == 0 => {
            let k = ((o - u64::from(SETIP)) / 4) as u32;
            let mut x = value;
            while x != 0 {
                f(k * 32 + x.trailing_zeros());
                x &= x - 1;
            }
        }
        _ => {}
    }
}

/// Size of an APLIC domain window with `harts` hart indices (the IDCs end at
/// `0x4000 + 32 * harts`), rounded up to a page.
pub fn window_size(harts: u32) -> u64 {
    (u64::from(IDC_BASE) + u64::from(IDC_SIZE) * u64::from(harts)).next_multiple_of(0x1000)
}

/// Source mode (`sourcecfg.SM`, AIA 4.5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SourceMode {
    /// Inactive in this domain.
    Inactive = 0,
    /// Active, wire ignored; pending only through `setip`/`setipnum`.
    Detached = 1,
    /// Rising edge.
    Edge1 = 4,
    /// Falling edge.
    Edge0 = 5,
    /// High level.
    Level1 = 6,
    /// Low level.
    Level0 = 7,
}

impl SourceMode {
    /// The mode a written `sourcecfg` value selects (reserved modes and D = 1 give
    /// `None`; the register then becomes 0).
    pub fn from_sourcecfg(v: u32) -> Option<Self> {
        if v & SOURCECFG_D != 0 {
            return None;
        }
        Some(match v & 7 {
            0 => Self::Inactive,
            1 => Self::Detached,
            4 => Self::Edge1,
            5 => Self::Edge0,
            6 => Self::Level1,
            7 => Self::Level0,
            _ => return None,
        })
    }

    fn is_level(self) -> bool {
        matches!(self, Self::Level0 | Self::Level1)
    }

    fn is_edge(self) -> bool {
        matches!(self, Self::Edge0 | Self::Edge1)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Idc {
    idelivery: bool,
    iforce: bool,
    ithreshold: u8,
    output: bool,
}

/// One guest APLIC domain with up to `HARTS` hart indices (see the module docs).
///
/// **Guarantees:** follows AIA v1.0 chapter 4 as the module docs describe, in direct
/// mode (IDCs driving each vCPU's VSEIP through the [`VcpuIrqSink`]) and in MSI mode
/// (MSIs through the [`MsiSink`]); no guest access panics. **The caller must:**
/// serialise all calls (`&mut self`), and give hart index `h` the meaning "the guest's
/// vCPU `h`" in both sinks.
///
/// # Example
///
/// ```
/// use virq_riscv::aplic::{regs, VAplic};
/// use virq_riscv::msi::{Msi, MsiSink};
/// use virq_riscv::{MmioDevice, VcpuIrqSink};
///
/// #[derive(Default)]
/// struct Msis(Vec<Msi>);
/// impl MsiSink for Msis {
///     fn send_msi(&mut self, msi: Msi) -> bool { self.0.push(msi); true }
/// }
/// struct NoWires;
/// impl VcpuIrqSink for NoWires {
///     fn set_vseip(&self, _: u32, _: bool) {}
/// }
///
/// let mut aplic: VAplic<_, _, 2> = VAplic::new(8, 2, Msis::default(), NoWires).unwrap();
/// // The guest: MSI delivery; source 3 rising-edge, to hart 1 as EIID 33; enable it.
/// aplic.write(0, 4, u64::from(regs::DOMAINCFG_IE | regs::DOMAINCFG_DM));
/// aplic.write(4 * 3, 4, 4);
/// aplic.write(u64::from(regs::TARGET_BASE) + 4 * 3, 4, (1 << regs::TARGET_HART_SHIFT) | 33);
/// aplic.write(u64::from(regs::SETIENUM), 4, 3);
/// aplic.set_input(3, true);
/// assert_eq!(aplic.msi_sink().0, vec![Msi { hart: 1, guest: 0, eiid: 33 }]);
/// ```
pub struct VAplic<M, S, const HARTS: usize> {
    sources: u32,
    harts: u32,
    ie: bool,
    msi_mode: bool,
    mode: [SourceMode; WORDS * 64],
    target: [u32; WORDS * 64],
    active: Bits<WORDS>,
    pending: Bits<WORDS>,
    enabled: Bits<WORDS>,
    wire: Bits<WORDS>,
    genmsi: u32,
    idc: [Idc; HARTS],
    msi: M,
    sink: S,
    errors: ErrorCounters,
}

enum Reg {
    Domaincfg,
    Sourcecfg(u32),
    Setip(usize),
    Setipnum,
    InClrip(usize),
    Clripnum,
    Setie(usize),
    Setienum,
    Clrie(usize),
    Clrienum,
    SetipnumLe,
    SetipnumBe,
    Genmsi,
    Target(u32),
    Idelivery(usize),
    Iforce(usize),
    Ithreshold(usize),
    Topi(usize),
    Claimi(usize),
}

impl<M: MsiSink, S: VcpuIrqSink, const HARTS: usize> VAplic<M, S, HARTS> {
    /// A domain with sources `1..=sources` and hart indices `0..harts` (hart index `h`
    /// is vCPU `h` for `sink` and `msi`). Starts at reset: IE = 0, direct mode, every
    /// source inactive.
    pub fn new(sources: u32, harts: u32, msi: M, sink: S) -> Result<Self, ConfigError> {
        if sources == 0 || sources > MAX_SOURCES {
            return Err(ConfigError::Sources);
        }
        if harts == 0 || harts as usize > HARTS || harts > MAX_HARTS {
            return Err(ConfigError::Targets);
        }
        Ok(Self {
            sources,
            harts,
            ie: false,
            msi_mode: false,
            mode: [SourceMode::Inactive; WORDS * 64],
            target: [0; WORDS * 64],
            active: Bits::new(),
            pending: Bits::new(),
            enabled: Bits::new(),
            wire: Bits::new(),
            genmsi: 0,
            idc: [Idc::default(); HARTS],
            msi,
            sink,
            errors: ErrorCounters::default(),
        })
    }

    /// The MSI sink (for inspection).
    pub fn msi_sink(&self) -> &M {
        &self.msi
    }

    /// Mutable access to the MSI sink.
    pub fn msi_sink_mut(&mut self) -> &mut M {
        &mut self.msi
    }

    /// Number of sources.
    pub fn sources(&self) -> u32 {
        self.sources
    }

    /// Is the domain in MSI delivery mode?
    pub fn msi_mode(&self) -> bool {
        self.msi_mode
    }

    /// Source `i`'s mode.
    pub fn source_mode(&self, i: u32) -> SourceMode {
        self.mode
            .get(i as usize)
            .copied()
            .unwrap_or(SourceMode::Inactive)
    }

    /// Is source `i` pending?
    pub fn is_pending(&self, i: u32) -> bool {
        self.pending.get(i)
    }

    /// Is source `i` enabled?
    pub fn is_enabled(&self, i: u32) -> bool {
        self.enabled.get(i)
    }

    /// Pending bits of sources `64k..=64k + 63` (bit `j` is source `64k + j`; zero
    /// beyond the last word). Lets a checker walk the pending set a word at a time.
    pub fn pending_word(&self, k: usize) -> u64 {
        self.pending.0.get(k).copied().unwrap_or(0)
    }

    /// Enable bits of sources `64k..=64k + 63`, as [`Self::pending_word`].
    pub fn enabled_word(&self, k: usize) -> u64 {
        self.enabled.0.get(k).copied().unwrap_or(0)
    }

    /// The output (external interrupt level) of hart index `h` in direct mode.
    pub fn output(&self, h: u32) -> bool {
        self.idc.get(h as usize).is_some_and(|i| i.output)
    }

    fn valid_source(&self, i: u32) -> bool {
        (1..=self.sources).contains(&i)
    }

    fn is_active(&self, i: u32) -> bool {
        self.active.get(i)
    }

    /// Source `i`'s rectified input value (AIA 4.5.2): its wire as [`Self::set_input`]
    /// last drove it, inverted for the active-low and falling-edge modes; false for a
    /// detached, inactive or invalid source. A level source in MSI mode whose
    /// rectified input is low is never pending (AIA 4.7), so a `setipnum` of it changes
    /// nothing.
    pub fn rectified_input(&self, i: u32) -> bool {
        self.valid_source(i) && self.rect(i)
    }

    /// Rectified input value (AIA 4.5.2).
    fn rect(&self, i: u32) -> bool {
        let w = self.wire.get(i);
        match self.source_mode(i) {
            SourceMode::Edge1 | SourceMode::Level1 => w,
            SourceMode::Edge0 | SourceMode::Level0 => !w,
            SourceMode::Inactive | SourceMode::Detached => false,
        }
    }

    /// Drives source `i`'s incoming wire (a device model's line or a physical
    /// passthrough line). Returns false for a bad source number.
    ///
    /// AIA 4.7: Edge modes pend on a low-to-high rectified transition; Level modes in
    /// direct mode copy the rectified input; Level modes in MSI mode pend on a
    /// low-to-high transition and clear when it is low; Detached and Inactive ignore
    /// the wire.
    pub fn set_input(&mut self, i: u32, level: bool) -> bool {
        if !self.valid_source(i) {
            return false;
        }
        let old = self.rect(i);
        self.wire.assign(i, level);
        let new = self.rect(i);
        let mode = self.source_mode(i);
        if mode.is_edge() {
            if new && !old {
                self.pending.set(i);
            }
        } else if mode.is_level() {
            if !self.msi_mode {
                self.pending.assign(i, new);
            } else if new && !old {
                self.pending.set(i);
            } else if !new {
                self.pending.clear(i);
            }
        }
        self.update();
        true
    }

    /// A write of `i` to `setipnum_le`: an MSI from a device into the domain.
    pub fn setipnum(&mut self, i: u32) -> bool {
        let ok = self.set_pending_num(i);
        self.update();
        ok
    }

    /// `setip`/`setipnum` "if possible" (AIA 4.7).
    fn try_set_pending(&mut self, i: u32) {
        let mode = self.source_mode(i);
        let ok = match mode {
            SourceMode::Inactive => false,
            SourceMode::Detached | SourceMode::Edge0 | SourceMode::Edge1 => true,
            SourceMode::Level0 | SourceMode::Level1 => self.msi_mode && self.rect(i),
        };
        if ok {
            self.pending.set(i);
        }
    }

    /// `in_clrip`/`clripnum`/`claimi` "if possible" (AIA 4.7).
    fn try_clear_pending(&mut self, i: u32) {
        let mode = self.source_mode(i);
        if mode != SourceMode::Inactive && (self.msi_mode || !mode.is_level()) {
            self.pending.clear(i);
        }
    }

    fn set_pending_num(&mut self, i: u32) -> bool {
        if !self.is_active(i) {
            ErrorCounters::bump(&mut self.errors.ignored_value);
            return false;
        }
        self.try_set_pending(i);
        true
    }

    fn legalize_target(&self, v: u32) -> u32 {
        let hart = v & (0x3fff << HART_SHIFT);
        if self.msi_mode {
            hart | (v & EIID_MASK)
        } else {
            let p = v & MAX_IPRIO;
            hart | if p == 0 { 1 } else { p }
        }
    }

    fn write_sourcecfg(&mut self, i: u32, v: u32) {
        let mode = SourceMode::from_sourcecfg(v).unwrap_or_else(|| {
            ErrorCounters::bump(&mut self.errors.ignored_value);
            SourceMode::Inactive
        });
        let was_active = self.is_active(i);
        self.mode[i as usize] = mode;
        if mode == SourceMode::Inactive {
            self.active.clear(i);
            self.pending.clear(i);
            self.enabled.clear(i);
            self.target[i as usize] = 0;
            return;
        }
        self.active.set(i);
        if !was_active {
            self.target[i as usize] = self.legalize_target(0);
        }
        if mode.is_level() {
            // A level source's pending bit is never 1 while its rectified input is low
            // (AIA 4.7 note); a high input may pend it (AIA 4.5.2): we do.
            let r = self.rect(i);
            self.pending.assign(i, r);
        }
    }

    fn write_domaincfg(&mut self, v: u32) {
        self.ie = v & DOMAINCFG_IE != 0;
        let msi = v & DOMAINCFG_DM != 0;
        if msi != self.msi_mode {
            self.msi_mode = msi;
            self.genmsi = 0;
            for i in 1..=self.sources {
                if !self.is_active(i) {
                    continue;
                }
                self.target[i as usize] = self.legalize_target(self.target[i as usize]);
                if !msi && self.source_mode(i).is_level() {
                    let r = self.rect(i);
                    self.pending.assign(i, r);
                }
            }
        }
    }

    /// `topi` of hart index `h` (AIA 4.8.1.4): `(id << 16) | iprio`, or 0.
    pub fn topi(&self, h: usize) -> u32 {
        if self.msi_mode || h >= self.harts as usize {
            return 0;
        }
        let thr = u32::from(self.idc[h].ithreshold);
        let mut best: Option<(u32, u32)> = None;
        for w in 0..WORDS {
            let mut x = self.pending.0[w] & self.enabled.0[w];
            while x != 0 {
                let i = w as u32 * 64 + x.trailing_zeros();
                x &= x - 1;
                let t = self.target[i as usize];
                let prio = t & MAX_IPRIO;
                if (t >> HART_SHIFT) as usize != h || (thr != 0 && prio >= thr) {
                    continue;
                }
                if best.is_none_or(|(bp, _)| prio < bp) {
                    best = Some((prio, i));
                }
            }
        }
        best.map_or(0, |(p, i)| (i << 16) | p)
    }

    /// A read of `claimi` of hart index `h`.
    pub fn claimi(&mut self, h: usize) -> u32 {
        let v = self.topi(h);
        if v == 0 {
            if let Some(idc) = self.idc.get_mut(h) {
                idc.iforce = false;
            }
        } else {
            self.try_clear_pending(v >> 16);
        }
        self.update();
        v
    }

    /// Forwards every pending and enabled source (MSI mode), or recomputes the IDC
    /// outputs (direct mode).
    fn update(&mut self) {
        if self.msi_mode {
            if self.ie {
                for w in 0..WORDS {
                    let mut x = self.pending.0[w] & self.enabled.0[w];
                    self.pending.0[w] &= !x;
                    while x != 0 {
                        let i = w as u32 * 64 + x.trailing_zeros();
                        x &= x - 1;
                        self.forward(self.target[i as usize]);
                    }
                }
            }
            self.set_outputs(|_, _| false);
        } else {
            let ie = self.ie;
            self.set_outputs(|a, h| {
                ie && a.idc[h].idelivery && (a.idc[h].iforce || a.topi(h) != 0)
            });
        }
    }

    fn forward(&mut self, target: u32) {
        let hart = target >> HART_SHIFT;
        if hart >= self.harts {
            ErrorCounters::bump(&mut self.errors.ignored_value);
            return;
        }
        let msi = Msi {
            hart,
            guest: 0,
            eiid: target & EIID_MASK,
        };
        if !self.msi.send_msi(msi) {
            ErrorCounters::bump(&mut self.errors.ignored_value);
        }
    }

    fn set_outputs(&mut self, level_of: impl Fn(&Self, usize) -> bool) {
        for h in 0..self.harts as usize {
            let level = level_of(self, h);
            if self.idc[h].output != level {
                self.idc[h].output = level;
                self.sink.set_vseip(h as u32, level);
            }
        }
    }

    fn words32(&self) -> usize {
        (self.sources as usize + 1).div_ceil(32)
    }

    fn decode(&self, off: u32) -> Option<Reg> {
        let w32 = self.words32();
        let arr = |base: u32| {
            let k = ((off - base) / 4) as usize;
            (k < w32).then_some(k)
        };
        let src = |i: u32| (1..=self.sources).contains(&i).then_some(i);
        Some(match off {
            DOMAINCFG => Reg::Domaincfg,
            4..SOURCECFG_END => Reg::Sourcecfg(src(off / 4)?),
            SETIP..0x1c80 => Reg::Setip(arr(SETIP)?),
            SETIPNUM => Reg::Setipnum,
            IN_CLRIP..0x1d80 => Reg::InClrip(arr(IN_CLRIP)?),
            CLRIPNUM => Reg::Clripnum,
            SETIE..0x1e80 => Reg::Setie(arr(SETIE)?),
            SETIENUM => Reg::Setienum,
            CLRIE..0x1f80 => Reg::Clrie(arr(CLRIE)?),
            CLRIENUM => Reg::Clrienum,
            SETIPNUM_LE => Reg::SetipnumLe,
            SETIPNUM_BE => Reg::SetipnumBe,
            GENMSI => Reg::Genmsi,
            0x3004..TARGET_END => Reg::Target(src((off - GENMSI) / 4)?),
            IDC_BASE.. => {
                let h = ((off - IDC_BASE) / IDC_SIZE) as usize;
                if h >= self.harts as usize {
                    return None;
                }
                match off % IDC_SIZE {
                    0x00 => Reg::Idelivery(h),
                    0x04 => Reg::Iforce(h),
                    0x08 => Reg::Ithreshold(h),
                    0x18 => Reg::Topi(h),
                    0x1c => Reg::Claimi(h),
                    _ => return None,
                }
            }
            _ => return None,
        })
    }

    fn rect_word32(&self, k: usize) -> u32 {
        (0..32u32).fold(0, |acc, b| {
            let i = k as u32 * 32 + b;
            acc | (u32::from(self.valid_source(i) && self.rect(i)) << b)
        })
    }

    fn for_each_bit(v: u32, k: usize, mut f: impl FnMut(u32)) {
        let mut x = v;
        while x != 0 {
            f(k as u32 * 32 + x.trailing_zeros());
            x &= x - 1;
        }
    }
}

impl<M: MsiSink, S: VcpuIrqSink, const HARTS: usize> MmioDevice for VAplic<M, S, HARTS> {
    fn region_size(&self) -> u64 {
        window_size(self.harts)
    }

    fn read(&mut self, offset: u64, size: u8) -> u64 {
        let region = self.region_size();
        let Some(off) = self.errors.check32(offset, size, region) else {
            return 0;
        };
        let Some(reg) = self.decode(off) else {
            ErrorCounters::bump(&mut self.errors.unmapped);
            return 0;
        };
        let v = match reg {
            Reg::Domaincfg => {
                0x8000_0000
                    | if self.ie { DOMAINCFG_IE } else { 0 }
                    | if self.msi_mode { DOMAINCFG_DM } else { 0 }
            }
            Reg::Sourcecfg(i) => self.mode[i as usize] as u32,
            Reg::Setip(k) => self.pending.word32(k),
            Reg::InClrip(k) => self.rect_word32(k),
            Reg::Setie(k) => self.enabled.word32(k),
            Reg::Setipnum
            | Reg::Clripnum
            | Reg::Setienum
            | Reg::Clrie(_)
            | Reg::Clrienum
            | Reg::SetipnumLe
            | Reg::SetipnumBe => 0,
            Reg::Genmsi => self.genmsi,
            Reg::Target(i) => self.target[i as usize],
            Reg::Idelivery(h) => u32::from(self.idc[h].idelivery),
            Reg::Iforce(h) => u32::from(self.idc[h].iforce),
            Reg::Ithreshold(h) => u32::from(self.idc[h].ithreshold),
            Reg::Topi(h) => self.topi(h),
            Reg::Claimi(h) => self.claimi(h),
        };
        u64::from(v)
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) {
        let region = self.region_size();
        let Some(off) = self.errors.check32(offset, size, region) else {
            return;
        };
        let Some(reg) = self.decode(off) else {
            ErrorCounters::bump(&mut self.errors.unmapped);
            return;
        };
        let v = value as u32;
        match reg {
            Reg::Domaincfg => self.write_domaincfg(v),
            Reg::Sourcecfg(i) => self.write_sourcecfg(i, v),
            Reg::Setip(k) => {
                let v = v & self.active.word32(k);
                Self::for_each_bit(v, k, |i| self.try_set_pending(i));
            }
            Reg::InClrip(k) => {
                let v = v & self.active.word32(k);
                Self::for_each_bit(v, k, |i| self.try_clear_pending(i));
            }
            Reg::Setipnum | Reg::SetipnumLe => {
                self.set_pending_num(v);
            }
            Reg::SetipnumBe => {
                self.set_pending_num(v.swap_bytes());
            }
            Reg::Clripnum => {
                if self.is_active(v) {
                    self.try_clear_pending(v);
                } else {
                    ErrorCounters::bump(&mut self.errors.ignored_value);
                }
            }
            Reg::Setie(k) => {
                let add = v & self.active.word32(k);
                self.enabled.set_word32(k, self.enabled.word32(k) | add);
            }
            Reg::Setienum => {
                if self.is_active(v) {
                    self.enabled.set(v);
                } else {
                    ErrorCounters::bump(&mut self.errors.ignored_value);
                }
            }
            Reg::Clrie(k) => self.enabled.set_word32(k, self.enabled.word32(k) & !v),
            Reg::Clrienum => {
                if self.is_active(v) {
                    self.enabled.clear(v);
                } else {
                    ErrorCounters::bump(&mut self.errors.ignored_value);
                }
            }
            Reg::Genmsi => {
                if self.msi_mode {
                    self.genmsi = v & ((0x3fff << HART_SHIFT) | EIID_MASK);
                    self.forward(self.genmsi);
                } else {
                    ErrorCounters::bump(&mut self.errors.read_only);
                }
            }
            Reg::Target(i) => {
                if self.is_active(i) {
                    self.target[i as usize] = self.legalize_target(v);
                } else {
                    ErrorCounters::bump(&mut self.errors.read_only);
                }
            }
            Reg::Idelivery(h) => self.idc[h].idelivery = v & 1 == 1,
            Reg::Iforce(h) => self.idc[h].iforce = v & 1 == 1,
            Reg::Ithreshold(h) => self.idc[h].ithreshold = (v & MAX_IPRIO) as u8,
            Reg::Topi(_) | Reg::Claimi(_) => ErrorCounters::bump(&mut self.errors.read_only),
        }
        self.update();
    }

    fn errors(&self) -> ErrorCounters {
        self.errors
    }
}
