//! Spec facts the tests use, once each: the guest's physical map (as hyp builds it, the
//! same addresses as QEMU arm `virt`), the GICv3 registers (Arm IHI 0069H), the PL011
//! (Arm DDI 0183), PSCI (Arm DEN 0022) and SMCCC (DEN 0028) function ids and results,
//! and the syndrome fields of ESR_EL1 (Arm ARM D24).

/// Guest RAM (hyp maps it at the IPA QEMU `virt` uses for DRAM).
pub const RAM_BASE: u64 = 0x8000_0000;
/// Nothing is mapped here (between the devices and RAM).
pub const UNMAPPED: u64 = 0x5000_0000;

/// Distributor (`GICD_*`, §12.9).
pub mod gicd {
    /// Base IPA.
    pub const BASE: u64 = 0x0800_0000;
    /// Frame size.
    pub const SIZE: u64 = 0x1_0000;
    pub const CTLR: u64 = 0x0000;
    pub const TYPER: u64 = 0x0004;
    pub const IIDR: u64 = 0x0008;
    pub const IGROUPR: u64 = 0x0080;
    pub const ISENABLER: u64 = 0x0100;
    pub const ICENABLER: u64 = 0x0180;
    pub const ICPENDR: u64 = 0x0280;
    pub const ICACTIVER: u64 = 0x0380;
    pub const IPRIORITYR: u64 = 0x0400;
    pub const ICFGR: u64 = 0x0c00;
    pub const IROUTER: u64 = 0x6000;
    pub const PIDR2: u64 = 0xffe8;
    /// A reserved offset (between `IROUTER<n>` and the extended-SPI registers).
    pub const RESERVED: u64 = 0xa000;

    /// `CTLR.EnableGrp0` (single security state: Linux's `GICD_CTLR_ENABLE_G1`).
    pub const CTLR_ENABLE_GRP0: u32 = 1 << 0;
    /// `CTLR.EnableGrp1` (Linux's `GICD_CTLR_ENABLE_G1A`).
    pub const CTLR_ENABLE_GRP1: u32 = 1 << 1;
    /// `CTLR.ARE` (`ARE_NS`).
    pub const CTLR_ARE: u32 = 1 << 4;
    /// `CTLR.DS`: one security state.
    pub const CTLR_DS: u32 = 1 << 6;
    /// `CTLR.RWP`: a register write is still taking effect.
    pub const CTLR_RWP: u32 = 1 << 31;
    /// `TYPER.ITLinesNumber` [4:0].
    pub const TYPER_ITLINES: u32 = 0x1f;
    /// `TYPER.SecurityExtn` (two security states).
    pub const TYPER_SECURITY_EXTN: u32 = 1 << 10;
    /// `TYPER.MBIS` (message-based SPIs).
    pub const TYPER_MBIS: u32 = 1 << 16;
    /// `TYPER.LPIS`.
    pub const TYPER_LPIS: u32 = 1 << 17;
    /// `TYPER.IDbits` [23:19].
    pub const TYPER_IDBITS_SHIFT: u32 = 19;
}

/// Redistributors (`GICR_*`, §12.10): vCPU `i`'s RD frame at `BASE + i * STRIDE`, its
/// SGI frame 64 KiB above.
pub mod gicr {
    /// Base IPA of vCPU 0's.
    pub const BASE: u64 = 0x080a_0000;
    /// One RD + SGI frame pair.
    pub const STRIDE: u64 = 0x2_0000;
    /// The SGI frame, from the RD frame.
    pub const SGI: u64 = 0x1_0000;
    pub const CTLR: u64 = 0x0000;
    pub const TYPER: u64 = 0x0008;
    pub const WAKER: u64 = 0x0014;
    pub const PROPBASER: u64 = 0x0070;
    pub const PENDBASER: u64 = 0x0078;
    pub const PIDR2: u64 = 0xffe8;
    /// `CTLR.EnableLPIs`.
    pub const CTLR_ENABLE_LPIS: u32 = 1 << 0;
    /// SGI-frame registers (from `SGI`).
    pub const IGROUPR0: u64 = 0x0080;
    pub const ISENABLER0: u64 = 0x0100;
    pub const ICENABLER0: u64 = 0x0180;
    pub const ICACTIVER0: u64 = 0x0380;
    pub const IPRIORITYR: u64 = 0x0400;
    pub const ICFGR0: u64 = 0x0c00;

    /// `TYPER.PLPIS`.
    pub const TYPER_PLPIS: u64 = 1 << 0;
    /// `TYPER.Last`.
    pub const TYPER_LAST: u64 = 1 << 4;
    /// `WAKER.ProcessorSleep`.
    pub const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
    /// `WAKER.ChildrenAsleep`.
    pub const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
    /// `ICFGR0`: every SGI edge-triggered (`0b10` per INTID), read-only.
    pub const ICFGR0_ALL_EDGE: u32 = 0xaaaa_aaaa;

    /// vCPU `cpu`'s RD frame.
    pub fn rd(cpu: usize) -> u64 {
        BASE + STRIDE * cpu as u64
    }

    /// vCPU `cpu`'s SGI frame.
    pub fn sgi(cpu: usize) -> u64 {
        rd(cpu) + SGI
    }
}

/// `PIDR2.ArchRev` [7:4] of a GICv3.
pub const PIDR2_ARCHREV_GICV3: u32 = 3;

/// `ICC_*` fields.
pub mod icc {
    /// `ICC_SRE_EL1.SRE`.
    pub const SRE: u64 = 1 << 0;
    /// `ICC_CTLR_EL1.EOImode`.
    pub const CTLR_EOIMODE: u64 = 1 << 1;
    /// `ICC_CTLR_EL1.PRIbits` [10:8]: priority bits - 1.
    pub const CTLR_PRIBITS_SHIFT: u32 = 8;
    /// `ICC_IAR1_EL1.INTID` [23:0].
    pub const IAR_INTID: u64 = 0xff_ffff;
    /// `ICC_SGI1R_EL1.INTID` [27:24].
    pub const SGI_INTID_SHIFT: u32 = 24;
    /// `ICC_SGI1R_EL1.IRM`: every PE but the sender.
    pub const SGI_IRM: u64 = 1 << 40;
    /// `ISR_EL1.I`: an IRQ (here: a virtual one) is pending.
    pub const ISR_I: u64 = 1 << 7;
}

/// INTIDs.
pub mod intid {
    /// The virtual timer's PPI (PPI 11).
    pub const VTIMER: u32 = 27;
    /// The PL011's SPI (SPI 1).
    pub const UART: u32 = 33;
    /// First SPI.
    pub const SPI_BASE: u32 = 32;
    /// "No pending interrupt".
    pub const SPURIOUS: u32 = 1023;
}

/// `CNTV_CTL_EL0` bits.
pub mod cntv {
    pub const ENABLE: u64 = 1 << 0;
    pub const ISTATUS: u64 = 1 << 2;
}

/// The PL011 (its registers as in DDI 0183).
pub mod pl011 {
    /// Base IPA (passed through at QEMU's address).
    pub const BASE: u64 = 0x0900_0000;
    pub const DR: u64 = 0x000;
    pub const FR: u64 = 0x018;
    pub const IMSC: u64 = 0x038;
    pub const RIS: u64 = 0x03c;
    pub const MIS: u64 = 0x040;
    pub const ICR: u64 = 0x044;
    /// `FR.TXFF`: transmit FIFO full.
    pub const FR_TXFF: u32 = 1 << 5;
    /// The transmit interrupt (`TXIM`/`TXRIS`/`TXMIS`/`TXIC`: bit 5 of IMSC, RIS, MIS,
    /// ICR).
    pub const INT_TX: u32 = 1 << 5;
}

/// PSCI function ids (DEN 0022 §5.1): 32-bit calls, and the SMC64 bit.
pub mod psci {
    pub const VERSION: u32 = 0x8400_0000;
    pub const CPU_SUSPEND: u32 = 0x8400_0001;
    pub const CPU_OFF: u32 = 0x8400_0002;
    pub const CPU_ON: u32 = 0x8400_0003;
    pub const AFFINITY_INFO: u32 = 0x8400_0004;
    pub const MIGRATE: u32 = 0x8400_0005;
    pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
    pub const SYSTEM_OFF: u32 = 0x8400_0008;
    pub const SYSTEM_RESET: u32 = 0x8400_0009;
    pub const FEATURES: u32 = 0x8400_000a;
    pub const SYSTEM_SUSPEND: u32 = 0x8400_000e;
    /// Bit 30: the SMC64/HVC64 convention (only for calls that take addresses or
    /// MPIDRs: CPU_SUSPEND, CPU_ON, AFFINITY_INFO, MIGRATE, SYSTEM_SUSPEND, ...).
    pub const SMC64: u32 = 0x4000_0000;
    /// SMCCC_VERSION (DEN 0028 §7.2).
    pub const SMCCC_VERSION: u32 = 0x8000_0000;

    pub const SUCCESS: i64 = 0;
    pub const NOT_SUPPORTED: i64 = -1;
    pub const INVALID_PARAMETERS: i64 = -2;
    pub const ALREADY_ON: i64 = -4;
    pub const ON_PENDING: i64 = -5;
    pub const INVALID_ADDRESS: i64 = -9;

    /// AFFINITY_INFO results.
    pub const AFF_ON: i64 = 0;
    pub const AFF_OFF: i64 = 1;
}

/// `ESR_EL1` fields.
pub mod esr {
    /// Exception class [31:26].
    pub const EC_SHIFT: u32 = 26;
    /// Instruction abort taken without a change of EL.
    pub const EC_IABT_SAME: u64 = 0x21;
    /// Data abort taken without a change of EL.
    pub const EC_DABT_SAME: u64 = 0x25;
    /// Fault status code [5:0] (DFSC / IFSC).
    pub const FSC: u64 = 0x3f;
    /// FSC: synchronous external abort, not on a translation table walk.
    pub const FSC_SEA: u64 = 0x10;
    /// Data abort `WnR`: the access was a write.
    pub const WNR: u64 = 1 << 6;
}
