//! GICv3 register map and field layouts (Arm IHI 0069H, "GIC architecture
//! specification, v3 and v4"): one place for each spec fact, used by the models here
//! and by a hypervisor's host driver.

/// Distributor (`GICD_*`, §12.9), offsets in its 64 KiB frame.
pub mod gicd {
    /// Control: EnableGrp0 (0), EnableGrp1 (1), ARE (4), DS (6), RWP (31).
    pub const CTLR: u32 = 0x0000;
    /// Type: ITLinesNumber [4:0], IDbits [23:19].
    pub const TYPER: u32 = 0x0004;
    /// Implementer identification.
    pub const IIDR: u32 = 0x0008;
    /// Type 2 (RES0 here).
    pub const TYPER2: u32 = 0x000c;
    /// Error reporting status (RAZ/WI here).
    pub const STATUSR: u32 = 0x0010;
    /// Interrupt group registers, 1 bit per INTID.
    pub const IGROUPR: u32 = 0x0080;
    /// Set-enable, 1 bit per INTID.
    pub const ISENABLER: u32 = 0x0100;
    /// Clear-enable.
    pub const ICENABLER: u32 = 0x0180;
    /// Set-pending.
    pub const ISPENDR: u32 = 0x0200;
    /// Clear-pending.
    pub const ICPENDR: u32 = 0x0280;
    /// Set-active.
    pub const ISACTIVER: u32 = 0x0300;
    /// Clear-active.
    pub const ICACTIVER: u32 = 0x0380;
    /// Priorities, 1 byte per INTID (byte-accessible).
    pub const IPRIORITYR: u32 = 0x0400;
    /// Legacy targets: RES0 with affinity routing.
    pub const ITARGETSR: u32 = 0x0800;
    /// Configuration, 2 bits per INTID: bit `2n + 1` set = edge-triggered.
    pub const ICFGR: u32 = 0x0c00;
    /// Group modifier (RAZ/WI with a single security state).
    pub const IGRPMODR: u32 = 0x0d00;
    /// Non-secure access control (RAZ/WI with a single security state).
    pub const NSACR: u32 = 0x0e00;
    /// Legacy SGI generation (WI with affinity routing).
    pub const SGIR: u32 = 0x0f00;
    /// Routing of SPI `n`, 64 bits at `IROUTER + 8 n`: Aff0 [7:0], Aff1 [15:8],
    /// Aff2 [23:16], IRM [31], Aff3 [39:32].
    pub const IROUTER: u32 = 0x6000;
    /// Peripheral ID 2: ArchRev [7:4].
    pub const PIDR2: u32 = 0xffe8;
    /// Size of the frame.
    pub const SIZE: u64 = 0x1_0000;

    /// `CTLR.EnableGrp0`.
    pub const CTLR_ENABLE_GRP0: u32 = 1 << 0;
    /// `CTLR.EnableGrp1` (single security state).
    pub const CTLR_ENABLE_GRP1: u32 = 1 << 1;
    /// `CTLR.ARE`: affinity routing, always on here.
    pub const CTLR_ARE: u32 = 1 << 4;
    /// `CTLR.DS`: a single security state, always on here.
    pub const CTLR_DS: u32 = 1 << 6;
    /// `TYPER.LPIS`: LPIs supported.
    pub const TYPER_LPIS: u32 = 1 << 17;
    /// `TYPER.IDbits` [23:19]: INTID bits − 1.
    pub const TYPER_IDBITS_SHIFT: u32 = 19;
    /// `IROUTER.Interrupt_Routing_Mode` (1 of N).
    pub const IROUTER_IRM: u64 = 1 << 31;
}

/// Redistributor (`GICR_*`, §12.10): an RD frame and an SGI frame of 64 KiB each.
pub mod gicr {
    /// Control: EnableLPIs (0; RAZ/WI without LPIs).
    pub const CTLR: u32 = 0x0000;
    /// Implementer identification.
    pub const IIDR: u32 = 0x0004;
    /// Type (64 bits): Last (4), Processor_Number [23:8], Affinity_Value [63:32].
    pub const TYPER: u32 = 0x0008;
    /// Error reporting status (RAZ/WI here).
    pub const STATUSR: u32 = 0x0010;
    /// Power management: ProcessorSleep (1), ChildrenAsleep (2, read-only).
    pub const WAKER: u32 = 0x0014;
    /// LPI configuration table base (64 bits; RAZ/WI without LPIs): IDbits [4:0],
    /// InnerCache [9:7], Shareability [11:10], Physical_Address [51:12], OuterCache
    /// [58:56].
    pub const PROPBASER: u32 = 0x0070;
    /// LPI pending table base (64 bits; RAZ/WI without LPIs): InnerCache [9:7],
    /// Shareability [11:10], Physical_Address [51:16], OuterCache [58:56], PTZ [62]
    /// (write-only).
    pub const PENDBASER: u32 = 0x0078;
    /// `CTLR.EnableLPIs`.
    pub const CTLR_ENABLE_LPIS: u32 = 1 << 0;
    /// `TYPER.PLPIS`: physical LPIs supported.
    pub const TYPER_PLPIS: u64 = 1 << 0;
    /// `PROPBASER` bits a guest can write.
    pub const PROPBASER_RW: u64 = 0x1f | (7 << 7) | (3 << 10) | 0x000f_ffff_ffff_f000 | (7 << 56);
    /// `PENDBASER` bits a guest can write and read back (PTZ reads as 0).
    pub const PENDBASER_RW: u64 = (7 << 7) | (3 << 10) | 0x000f_ffff_ffff_0000 | (7 << 56);
    /// Peripheral ID 2.
    pub const PIDR2: u32 = 0xffe8;
    /// Offset of the SGI frame from the RD frame.
    pub const SGI_BASE: u32 = 0x1_0000;
    /// Bytes of one redistributor (RD + SGI frames).
    pub const STRIDE: u64 = 0x2_0000;
    /// `TYPER.Last`.
    pub const TYPER_LAST: u64 = 1 << 4;
    /// `WAKER.ProcessorSleep`.
    pub const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
    /// `WAKER.ChildrenAsleep`.
    pub const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;

    /// SGI-frame registers (offsets from `SGI_BASE`), the private-interrupt halves of
    /// the distributor's: SGIs 0-15 and PPIs 16-31 of this redistributor's PE.
    pub mod sgi {
        /// Group of INTIDs 0-31.
        pub const IGROUPR0: u32 = 0x0080;
        /// Set-enable.
        pub const ISENABLER0: u32 = 0x0100;
        /// Clear-enable.
        pub const ICENABLER0: u32 = 0x0180;
        /// Set-pending.
        pub const ISPENDR0: u32 = 0x0200;
        /// Clear-pending.
        pub const ICPENDR0: u32 = 0x0280;
        /// Set-active.
        pub const ISACTIVER0: u32 = 0x0300;
        /// Clear-active.
        pub const ICACTIVER0: u32 = 0x0380;
        /// Priorities of INTIDs 0-31 (8 words, byte-accessible).
        pub const IPRIORITYR: u32 = 0x0400;
        /// Configuration of SGIs (read-only: always edge).
        pub const ICFGR0: u32 = 0x0c00;
        /// Configuration of PPIs.
        pub const ICFGR1: u32 = 0x0c04;
        /// Group modifier (RAZ/WI with a single security state).
        pub const IGRPMODR0: u32 = 0x0d00;
        /// Non-secure access control (RAZ/WI).
        pub const NSACR: u32 = 0x0e00;
    }
}

/// `PIDR2` of a GICv3 (ArchRev 3, JEDEC-assigned identity).
pub const PIDR2_GICV3: u32 = 0x3b;
/// `IIDR` virq reports (Arm's JEP106 code, 0x43b).
pub const IIDR_VIRQ: u32 = 0x43b;

/// INTIDs: SGIs 0-15, PPIs 16-31, SPIs 32-1019, special 1020-1023.
pub mod intid {
    /// First PPI.
    pub const PPI_BASE: u32 = 16;
    /// First SPI.
    pub const SPI_BASE: u32 = 32;
    /// One past the last SPI.
    pub const SPI_END: u32 = 1020;
    /// "No pending interrupt" (ICC_IAR read).
    pub const SPURIOUS: u32 = 1023;
}

/// List registers `ICH_LR<n>_EL2` (§12.5.15).
pub mod lr {
    /// vINTID [31:0].
    pub const VINTID_MASK: u64 = 0xffff_ffff;
    /// pINTID [44:32] (with `HW`).
    pub const PINTID_SHIFT: u32 = 32;
    /// pINTID width mask.
    pub const PINTID_MASK: u64 = 0x1fff;
    /// `EOI` (bit 41, without `HW`): a maintenance interrupt when the guest
    /// deactivates it.
    pub const EOI: u64 = 1 << 41;
    /// Priority [55:48].
    pub const PRIORITY_SHIFT: u32 = 48;
    /// Group 1 (bit 60).
    pub const GROUP1: u64 = 1 << 60;
    /// HW (bit 61): the virtual interrupt is linked to physical `pINTID`; the guest's
    /// deactivate deactivates it.
    pub const HW: u64 = 1 << 61;
    /// State [63:62].
    pub const STATE_SHIFT: u32 = 62;
}

/// `ICH_HCR_EL2` (§12.5.8).
pub mod hcr {
    /// En: the virtual CPU interface is on.
    pub const EN: u64 = 1 << 0;
    /// UIE: maintenance interrupt when at most one list register holds an interrupt.
    pub const UIE: u64 = 1 << 1;
    /// NPIE: maintenance interrupt when no list register is pending.
    pub const NPIE: u64 = 1 << 3;
}

/// `ICH_MISR_EL2` (§12.5.13).
pub mod misr {
    /// EOI: a list register with `EOI` set was deactivated.
    pub const EOI: u64 = 1 << 0;
    /// U: underflow (with `ICH_HCR.UIE`).
    pub const U: u64 = 1 << 1;
}

/// `ICC_SGI1R_EL1` (§12.2.23), the register a guest writes to send an SGI.
pub mod sgi1r {
    /// TargetList [15:0]: Aff0 = RS * 16 + bit.
    pub const TARGET_LIST_MASK: u64 = 0xffff;
    /// Aff1 [23:16].
    pub const AFF1_SHIFT: u32 = 16;
    /// INTID [27:24].
    pub const INTID_SHIFT: u32 = 24;
    /// Aff2 [39:32].
    pub const AFF2_SHIFT: u32 = 32;
    /// IRM (bit 40): every PE but the sender.
    pub const IRM: u64 = 1 << 40;
    /// RS [47:44]: range selector.
    pub const RS_SHIFT: u32 = 44;
    /// Aff3 [55:48].
    pub const AFF3_SHIFT: u32 = 48;
}
