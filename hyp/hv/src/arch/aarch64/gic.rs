//! The host GICv3 (Arm IHI 0069H): hyp's own interrupt controller driver — the
//! distributor and this CPU's redistributor by MMIO, the CPU interface by `ICC_*`
//! system registers — and the EL2 list-register interface (`ICH_*`) behind
//! `virq_arm::lr::IchRegs`.
//!
//! Set-up: affinity routing (`GICD_CTLR.ARE`), every interrupt group 1 at priority
//! [`PRIORITY`], `ICC_CTLR_EL1.EOImode` = 1 so that hyp's `ICC_EOIR1_EL1` only drops
//! the running priority and an interrupt stays active until [`deactivate`] — or until
//! the guest deactivates the virtual interrupt an `HW`-linked list register ties to it
//! (the virtual timer's PPI, a passthrough SPI). `ICC_SRE_EL2.Enable` lets EL1 use
//! its (virtual) system-register interface without trapping.
//!
//! hyp runs with `PSTATE.I` masked at EL2: physical IRQs reach it as guest exits
//! (`HCR_EL2.IMO`) or wake its `wfi`; it then acknowledges them in a loop ([`ack`]).
use core::ptr::{read_volatile, write_volatile};

use super::sysreg;

/// Priority of every host interrupt (lower is more urgent; `ICC_PMR_EL1` = 0xff lets
/// every priority below 0xff through).
pub const PRIORITY: u8 = 0xa0;
/// The SGI hyp's CPUs kick each other with.
pub const KICK_SGI: u32 = 0;
/// The virtual timer's PPI (`CNTV`): INTID 27.
pub const VTIMER_PPI: u32 = 27;
/// The GIC maintenance interrupt's PPI (`ICH_MISR_EL2`): INTID 25.
pub const MAINTENANCE_PPI: u32 = 25;
/// The EL2 physical timer's PPI (`CNTHP`, hyp's own timer): INTID 26.
pub const HYP_TIMER_PPI: u32 = 26;
/// First SPI.
pub const SPI_BASE: u32 = 32;
/// INTIDs 1020..1024 are special ("no pending interrupt": 1023); LPIs start at 8192.
pub const SPECIAL: u32 = 1020;

/// Whether an acknowledged INTID is one of the special ones (nothing to drop or
/// deactivate) rather than an interrupt — an LPI (8192 and up) is one.
pub fn is_special(intid: u32) -> bool {
    (SPECIAL..1024).contains(&intid)
}

mod gicd {
    pub const CTLR: usize = 0x0000;
    pub const TYPER: usize = 0x0004;
    pub const IGROUPR: usize = 0x0080;
    pub const ISENABLER: usize = 0x0100;
    pub const ICENABLER: usize = 0x0180;
    pub const ISACTIVER: usize = 0x0300;
    pub const ICACTIVER: usize = 0x0380;
    pub const IPRIORITYR: usize = 0x0400;
    pub const ICFGR: usize = 0x0c00;
    pub const IROUTER: usize = 0x6000;
    /// `CTLR.RWP`: a write is still taking effect.
    pub const CTLR_RWP: u32 = 1 << 31;
    /// `CTLR.EnableGrp1` (`EnableGrp1NS`) and `ARE` (`ARE_NS`): the same bits in the
    /// single-security view QEMU `virt` gives (`DS` = 1) and in the non-secure one.
    pub const CTLR_GRP1_ARE: u32 = (1 << 1) | (1 << 4);
}

mod gicr {
    /// Bytes of one redistributor (RD frame + SGI frame).
    pub const STRIDE: usize = 0x2_0000;
    pub const TYPER: usize = 0x0008;
    pub const WAKER: usize = 0x0014;
    pub const SGI: usize = 0x1_0000;
    pub const TYPER_LAST: u64 = 1 << 4;
    pub const TYPER_VLPIS: u64 = 1 << 1;
    pub const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
    pub const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
}

/// Where the GIC's frames are (from the host DTB).
#[derive(Clone, Copy, Debug)]
pub struct GicAddrs {
    /// Distributor base.
    pub gicd: usize,
    /// First redistributor.
    pub gicr: usize,
    /// Bytes of the redistributor region.
    pub gicr_size: usize,
}

/// Each CPU's redistributor (by `MPIDR_EL1.Aff0`), found by `init_cpu`.
static RD: [core::sync::atomic::AtomicUsize; super::MAX_HARTS] =
    [const { core::sync::atomic::AtomicUsize::new(0) }; super::MAX_HARTS];

fn my_rd() -> usize {
    let cpu = sysreg::mpidr_el1::read() & 0xff;
    RD.get(cpu)
        .map_or(0, |r| r.load(core::sync::atomic::Ordering::Relaxed))
}

static mut ADDRS: GicAddrs = GicAddrs {
    gicd: 0,
    gicr: 0,
    gicr_size: 0,
};

fn addrs() -> GicAddrs {
    // SAFETY: written once by `init_distributor` on the boot CPU before any other CPU
    // is started (PSCI CPU_ON orders it for them); read-only afterwards.
    unsafe { core::ptr::addr_of!(ADDRS).read() }
}

fn rd32(addr: usize) -> u32 {
    // SAFETY: `addr` lies in the GIC's MMIO frames named by the host DTB (callers add
    // register offsets below the frame sizes); device registers, no Rust object there.
    unsafe { read_volatile(addr as *const u32) }
}

fn wr32(addr: usize, v: u32) {
    // SAFETY: as for `rd32`.
    unsafe { write_volatile(addr as *mut u32, v) }
}

fn rd64(addr: usize) -> u64 {
    // SAFETY: as for `rd32`.
    unsafe { read_volatile(addr as *const u64) }
}

fn wr64(addr: usize, v: u64) {
    // SAFETY: as for `rd32`.
    unsafe { write_volatile(addr as *mut u64, v) }
}

fn wait_rwp(base: usize) {
    for _ in 0..1_000_000 {
        if rd32(base + gicd::CTLR) & gicd::CTLR_RWP == 0 {
            return;
        }
    }
}

/// Boot CPU, once, before starting the others: the distributor — every SPI disabled,
/// group 1, priority [`PRIORITY`], level, routed to CPU 0; then groups and affinity
/// routing on. Returns the number of SPIs.
pub fn init_distributor(a: GicAddrs) -> u32 {
    // SAFETY: single-threaded boot, before any other CPU runs or reads ADDRS.
    unsafe { core::ptr::addr_of_mut!(ADDRS).write(a) };
    let d = a.gicd;
    wr32(d + gicd::CTLR, 0);
    wait_rwp(d);
    let lines = ((rd32(d + gicd::TYPER) & 0x1f) + 1) * 32;
    let lines = lines.min(SPECIAL);
    for n in (SPI_BASE..lines).step_by(32) {
        let w = (n / 32) as usize * 4;
        wr32(d + gicd::ICENABLER + w, u32::MAX);
        wr32(d + gicd::ICACTIVER + w, u32::MAX);
        wr32(d + gicd::IGROUPR + w, u32::MAX);
    }
    for n in (SPI_BASE..lines).step_by(4) {
        wr32(
            d + gicd::IPRIORITYR + n as usize,
            u32::from_ne_bytes([PRIORITY; 4]),
        );
    }
    for n in (SPI_BASE..lines).step_by(16) {
        wr32(d + gicd::ICFGR + (n / 16) as usize * 4, 0);
    }
    for n in SPI_BASE..lines {
        wr64(d + gicd::IROUTER + 8 * n as usize, 0);
    }
    wait_rwp(d);
    wr32(d + gicd::CTLR, gicd::CTLR_GRP1_ARE);
    wait_rwp(d);
    lines - SPI_BASE
}

/// The redistributor of the CPU with affinity `aff` (`MPIDR_EL1` bits 23:0 and 39:32
/// packed as `GICR_TYPER.Affinity`), found by walking the region.
fn redistributor(aff: u32) -> Option<usize> {
    let a = addrs();
    let mut base = a.gicr;
    while base + gicr::STRIDE <= a.gicr + a.gicr_size {
        let typer = rd64(base + gicr::TYPER);
        if (typer >> 32) as u32 == aff {
            return Some(base);
        }
        if typer & gicr::TYPER_LAST != 0 {
            break;
        }
        // A GICv4 redistributor has two more frames (VLPI, reserved): 256 KiB
        // (`GICR_TYPER.VLPIS`; QEMU `gic-version=4`, docs/gicv4.md).
        base += if typer & gicr::TYPER_VLPIS != 0 {
            2 * gicr::STRIDE
        } else {
            gicr::STRIDE
        };
    }
    None
}

/// This CPU's affinity as `GICR_TYPER` and `ICC_SGI1R_EL1` see it.
fn my_affinity() -> u32 {
    let m = sysreg::mpidr_el1::read() as u64;
    ((m & 0xff_ffff) | ((m >> 8) & 0xff00_0000)) as u32
}

/// Every CPU, once: wake its redistributor, make SGIs/PPIs group 1 at [`PRIORITY`],
/// enable hyp's kick SGI, the maintenance PPI and the virtual timer's PPI; the CPU
/// interface on with EOImode 1; EL1's system-register interface enabled (it is the
/// virtual one while `ICH_HCR_EL2.En` is set). False if this CPU has no
/// redistributor.
pub fn init_cpu() -> bool {
    let Some(rd) = redistributor(my_affinity()) else {
        return false;
    };
    if let Some(slot) = RD.get(sysreg::mpidr_el1::read() & 0xff) {
        slot.store(rd, core::sync::atomic::Ordering::Relaxed);
    }
    let waker = rd32(rd + gicr::WAKER) & !gicr::WAKER_PROCESSOR_SLEEP;
    wr32(rd + gicr::WAKER, waker);
    for _ in 0..1_000_000 {
        if rd32(rd + gicr::WAKER) & gicr::WAKER_CHILDREN_ASLEEP == 0 {
            break;
        }
    }
    let sgi = rd + gicr::SGI;
    wr32(sgi + gicd::ICENABLER, u32::MAX);
    wr32(sgi + gicd::ICACTIVER, u32::MAX);
    wr32(sgi + gicd::IGROUPR, u32::MAX);
    for n in (0..32).step_by(4) {
        wr32(
            sgi + gicd::IPRIORITYR + n,
            u32::from_ne_bytes([PRIORITY; 4]),
        );
    }
    wr32(
        sgi + gicd::ISENABLER,
        (1 << KICK_SGI) | (1 << MAINTENANCE_PPI) | (1 << VTIMER_PPI) | (1 << HYP_TIMER_PPI),
    );
    // SRE | DFB | DIB | Enable (lower ELs use system registers, no trap).
    sysreg::icc_sre_el2::write(0xf);
    sysreg::icc_pmr_el1::write(0xff);
    sysreg::icc_bpr1_el1::write(0);
    sysreg::icc_ctlr_el1::write(1 << 1);
    sysreg::icc_igrpen1_el1::write(1);
    true
}

/// Acknowledge the best pending interrupt (`ICC_IAR1_EL1`): its INTID, or 1023.
pub fn ack() -> u32 {
    sysreg::icc_iar1_el1::read() as u32 & 0xff_ffff
}

/// Drop the running priority of an acknowledged `intid` (`ICC_EOIR1_EL1`; EOImode 1:
/// it stays active).
pub fn priority_drop(intid: u32) {
    sysreg::icc_eoir1_el1::write(intid as usize);
}

/// Deactivate `intid` (`ICC_DIR_EL1`).
pub fn deactivate(intid: u32) {
    sysreg::icc_dir_el1::write(intid as usize);
}

/// Send SGI `sgi` to the CPU with affinity Aff0 = `aff0` (Aff1-3 = 0, QEMU `virt`).
pub fn send_sgi(aff0: usize, sgi: u32) {
    let v = (1usize << (aff0 & 15)) | ((aff0 >> 4) << 16) | ((sgi as usize & 15) << 24);
    // `dsb` first: the SGI is a system-register write, not a store, so a `dmb` would
    // not order it after the caller's stores (virq-core's protocols do not rely on
    // the IPI for ordering; this only makes the woken CPU's first look cheaper).
    fence_st();
    sysreg::icc_sgi1r_el1::write(v);
}

fn fence_st() {
    // SAFETY: a barrier only orders memory accesses.
    unsafe { core::arch::asm!("dsb ishst", options(nostack)) };
}

/// Enable SPI `intid` at the distributor (edge or level as `edge`), routed to the CPU
/// with affinity Aff0 = `aff0`.
pub fn enable_spi(intid: u32, edge: bool, aff0: usize) {
    let d = addrs().gicd;
    if !(SPI_BASE..SPECIAL).contains(&intid) {
        return;
    }
    let cfg = d + gicd::ICFGR + (intid / 16) as usize * 4;
    let shift = (intid % 16) * 2 + 1;
    let v = rd32(cfg) & !(1 << shift);
    wr32(cfg, v | (u32::from(edge) << shift));
    wr64(d + gicd::IROUTER + 8 * intid as usize, aff0 as u64 & 0xff);
    wr32(
        d + gicd::ISENABLER + (intid / 32) as usize * 4,
        1 << (intid % 32),
    );
}

/// Whether private interrupt `intid` (0..32) is active on this CPU.
pub fn ppi_active(intid: u32) -> bool {
    let rd = my_rd();
    rd != 0 && intid < 32 && rd32(rd + gicr::SGI + gicd::ISACTIVER) & (1 << intid) != 0
}

/// Make private interrupt `intid` (0..32) active or inactive on this CPU.
pub fn set_ppi_active(intid: u32, active: bool) {
    let rd = my_rd();
    if rd == 0 || intid >= 32 {
        return;
    }
    let reg = if active {
        gicd::ISACTIVER
    } else {
        gicd::ICACTIVER
    };
    wr32(rd + gicr::SGI + reg, 1 << intid);
}

/// Route SPI `intid` to the CPU with affinity Aff0 = `aff0`.
pub fn route_spi(intid: u32, aff0: usize) {
    if (SPI_BASE..SPECIAL).contains(&intid) {
        wr64(
            addrs().gicd + gicd::IROUTER + 8 * intid as usize,
            aff0 as u64 & 0xff,
        );
    }
}

/// Enable or disable (mask) SPI `intid` at the distributor.
pub fn set_spi_enabled(intid: u32, enabled: bool) {
    if !(SPI_BASE..SPECIAL).contains(&intid) {
        return;
    }
    let reg = if enabled {
        gicd::ISENABLER
    } else {
        gicd::ICENABLER
    };
    wr32(
        addrs().gicd + reg + (intid / 32) as usize * 4,
        1 << (intid % 32),
    );
}

/// `virq_arm::lr::IchRegs` on this CPU's `ICH_*_EL2` registers.
pub struct HwIch {
    lrs: usize,
}

impl HwIch {
    /// This CPU's list registers (`ICH_VTR_EL2.ListRegs` + 1).
    pub fn new() -> HwIch {
        HwIch {
            lrs: (sysreg::ich_vtr_el2::read() & 0x1f) + 1,
        }
    }

    /// List registers implemented.
    pub fn num(&self) -> usize {
        self.lrs
    }

    /// `ICH_MISR_EL2`: why the maintenance interrupt is asserted.
    pub fn misr(&self) -> u64 {
        sysreg::ich_misr_el2::read() as u64
    }
}

/// `ich_lr!(n, read)` / `ich_lr!(n, write v)`: the register name must be a literal.
macro_rules! ich_lr {
    ($n:expr, $v:ident, $($k:literal),*) => {
        match $n {
            $($k => {
                match $v {
                    None => {
                        let r: u64;
                        // SAFETY: reading a list register has no memory effect.
                        unsafe { core::arch::asm!(concat!("mrs {}, ich_lr", $k, "_el2"), out(reg) r, options(nomem, nostack)) };
                        r
                    }
                    Some(w) => {
                        // SAFETY: list registers only feed the guest's virtual CPU
                        // interface; the value comes from `virq_arm`'s flush.
                        unsafe { core::arch::asm!(concat!("msr ich_lr", $k, "_el2, {}"), in(reg) w, options(nomem, nostack)) };
                        0
                    }
                }
            })*
            _ => 0,
        }
    };
}

/// Read list register `n` (`None`) or write it; 0 for `n` ≥ 16.
pub fn lr_access(n: usize, v: Option<u64>) -> u64 {
    ich_lr!(n, v, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
}

impl virq_arm::lr::IchRegs for HwIch {
    fn num_lrs(&self) -> usize {
        self.lrs
    }
    fn read_lr(&self, n: usize) -> virq_arm::lr::Lr {
        virq_arm::lr::Lr(lr_access(n, None))
    }
    fn write_lr(&mut self, n: usize, v: virq_arm::lr::Lr) {
        if n < self.lrs {
            lr_access(n, Some(v.0));
        }
    }
    fn read_hcr(&self) -> u64 {
        sysreg::ich_hcr_el2::read() as u64
    }
    fn write_hcr(&mut self, v: u64) {
        sysreg::ich_hcr_el2::write(v as usize);
    }
}

/// Whether an acknowledged INTID is an LPI (8192 and up): it has no active state, so
/// the priority drop ends it (no [`deactivate`]).
pub fn is_lpi(intid: u32) -> bool {
    intid >= hyp_io::gic_its::LPI_BASE
}

/// `GICR_TYPER.Processor_Number` of the CPU with affinity Aff0 = `aff0` (what an ITS
/// with `GITS_TYPER.PTA` = 0 takes as RDbase), if it has a redistributor.
pub fn processor_number(aff0: usize) -> Option<u16> {
    redistributor(aff0 as u32 & 0xff)
        .map(|rd| hyp_io::gic_its::gicr::processor_number(rd64(rd + gicr::TYPER)))
}

/// Read the 64-bit redistributor register at `off` (RD or VLPI frame:
/// `hyp_io::gic_its::gicr`) of this CPU; 0 if it has none.
pub fn my_rd_read64(off: usize) -> u64 {
    let rd = my_rd();
    if rd == 0 || off >= 0x4_0000 {
        return 0;
    }
    rd64(rd + (off & !7))
}

/// Write the 64-bit redistributor register at `off` of this CPU (ignored if it has
/// none). `GICR_VPENDBASER` must be written with one 64-bit access (QEMU ignores the
/// halves of a Valid change).
pub fn my_rd_write64(off: usize, v: u64) {
    let rd = my_rd();
    if rd != 0 && off < 0x4_0000 {
        wr64(rd + (off & !7), v);
    }
}

/// Read the 32-bit redistributor register at `off` of this CPU (`GICR_CTLR`).
pub fn my_rd_read32(off: usize) -> u32 {
    let rd = my_rd();
    if rd == 0 || off >= 0x4_0000 {
        return 0;
    }
    rd32(rd + (off & !3))
}

/// Write the 32-bit redistributor register at `off` of this CPU.
pub fn my_rd_write32(off: usize, v: u32) {
    let rd = my_rd();
    if rd != 0 && off < 0x4_0000 {
        wr32(rd + (off & !3), v);
    }
}
