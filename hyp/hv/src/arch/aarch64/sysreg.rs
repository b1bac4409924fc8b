//! The system registers hyp reads and writes, one module each, named as in the Arm
//! ARM, and the bits hyp sets.
// Each register gets both accessors; not every one is used yet.
#![allow(dead_code)]

/// `mod $name { read, write }` for one system register.
macro_rules! sysreg {
    ($name:ident, $reg:literal) => {
        #[doc = concat!("`", $reg, "`.")]
        pub mod $name {
            /// Read the register.
            pub fn read() -> usize {
                let v: usize;
                // SAFETY: reading a system register has no side effect on memory.
                unsafe {
                    core::arch::asm!(concat!("mrs {}, ", $reg), out(reg) v, options(nomem, nostack))
                };
                v
            }
            /// Write the register, then `isb` so the next instruction sees it.
            pub fn write(v: usize) {
                // SAFETY: these registers configure EL2 traps, guest translation and
                // guest EL1 state; hyp writes them only with the values its callers
                // built for that purpose, and none of them maps hyp's own memory.
                unsafe {
                    core::arch::asm!(concat!("msr ", $reg, ", {}"), "isb", in(reg) v, options(nostack))
                };
            }
        }
    };
}

sysreg!(hcr_el2, "hcr_el2");
sysreg!(vtcr_el2, "vtcr_el2");
sysreg!(vttbr_el2, "vttbr_el2");
sysreg!(tpidr_el2, "tpidr_el2");
sysreg!(currentel, "CurrentEL");
sysreg!(cntpct_el0, "cntpct_el0");
sysreg!(cntfrq_el0, "cntfrq_el0");
sysreg!(sctlr_el1, "sctlr_el1");
sysreg!(mpidr_el1, "mpidr_el1");
sysreg!(id_aa64pfr0_el1, "id_aa64pfr0_el1");
sysreg!(id_aa64pfr1_el1, "id_aa64pfr1_el1");
sysreg!(id_aa64mmfr1_el1, "id_aa64mmfr1_el1");
// `HCRX_EL2` (FEAT_HCX), by its encoding: not every assembler knows the name.
sysreg!(hcrx_el2, "s3_4_c1_c2_2");
sysreg!(midr_el1, "midr_el1");
sysreg!(vpidr_el2, "vpidr_el2");
sysreg!(vmpidr_el2, "vmpidr_el2");
sysreg!(cnthctl_el2, "cnthctl_el2");
sysreg!(cntvoff_el2, "cntvoff_el2");
sysreg!(cntv_ctl_el0, "cntv_ctl_el0");
sysreg!(cntv_cval_el0, "cntv_cval_el0");
sysreg!(cnthp_ctl_el2, "cnthp_ctl_el2");
sysreg!(cnthp_cval_el2, "cnthp_cval_el2");
sysreg!(esr_el1, "esr_el1");
sysreg!(far_el1, "far_el1");
sysreg!(elr_el1, "elr_el1");
sysreg!(spsr_el1, "spsr_el1");
sysreg!(vbar_el1, "vbar_el1");
sysreg!(icc_sre_el2, "icc_sre_el2");
sysreg!(icc_pmr_el1, "icc_pmr_el1");
sysreg!(icc_ctlr_el1, "icc_ctlr_el1");
sysreg!(icc_igrpen1_el1, "icc_igrpen1_el1");
sysreg!(icc_bpr1_el1, "icc_bpr1_el1");
sysreg!(icc_iar1_el1, "icc_iar1_el1");
sysreg!(icc_eoir1_el1, "icc_eoir1_el1");
sysreg!(icc_dir_el1, "icc_dir_el1");
sysreg!(icc_sgi1r_el1, "icc_sgi1r_el1");
sysreg!(ich_hcr_el2, "ich_hcr_el2");
sysreg!(ich_vtr_el2, "ich_vtr_el2");
sysreg!(ich_vmcr_el2, "ich_vmcr_el2");
sysreg!(ich_misr_el2, "ich_misr_el2");

/// `HCR_EL2` bits.
pub mod hcr {
    /// Stage-2 translation for EL1&0.
    pub const VM: usize = 1 << 0;
    /// Route physical FIQs, IRQs and SErrors to EL2 (and enable the virtual ones).
    pub const FMO: usize = 1 << 3;
    /// See [`FMO`].
    pub const IMO: usize = 1 << 4;
    /// See [`FMO`].
    pub const AMO: usize = 1 << 5;
    /// Force broadcast of EL1 TLB and cache maintenance (SMP guests).
    pub const FB: usize = 1 << 9;
    /// Barrier shareability upgrade: inner shareable.
    pub const BSU_IS: usize = 1 << 10;
    /// Trap EL1 reads of the ID registers (group 3: `ID_AA64*`, `ID_*`, `MVFR*`), so
    /// hyp can hide features it does not switch.
    pub const TID3: usize = 1 << 18;
    /// Trap `wfi` from EL1/EL0 (as EC 0x01).
    pub const TWI: usize = 1 << 13;
    /// Trap `wfe` from EL1/EL0 (as EC 0x01, ISS bit 0 set).
    pub const TWE: usize = 1 << 14;
    /// Trap `smc` from EL1 (as EC 0x17).
    pub const TSC: usize = 1 << 19;
    /// EL1 is AArch64.
    pub const RW: usize = 1 << 31;
    /// Pointer authentication: keys (`APK`) and instructions (`API`) do not trap
    /// (the guest's keys are EL1 registers, live in its CPU).
    pub const APK: usize = 1 << 40;
    /// See [`APK`].
    pub const API: usize = 1 << 41;
}

/// `SCTLR_EL1` with the MMU and caches off, only its RES1 bits set (Armv8.0: 29, 28,
/// 23, 22, 20, 11): how a guest starts.
pub const SCTLR_EL1_RESET: usize = 0x30d0_0800;

/// `HCRX_EL2.MSCEn`: the FEAT_MOPS instructions (`CPY*`, `SET*`) work at EL1 and EL0
/// (they are UNDEFINED there while it is 0, its reset value).
pub const HCRX_MSCEN: usize = 1 << 11;

/// `CNTHCTL_EL2` (`E2H` = 0): EL1 reads the physical counter (`EL1PCTEN`); its physical
/// timer registers trap (`EL1PCEN` = 0): guests use the virtual timer.
pub const CNTHCTL_EL1PCTEN: usize = 1 << 0;

/// `SPSR_EL2` for entering EL1h (SP_EL1) with D, A, I, F masked.
pub const SPSR_EL1H_MASKED: usize = 0x3c5;

/// Read the ID register `S3_0_C0_C<crm>_<op2>` (`crm` 1..=7: the group hyp traps with
/// `HCR_EL2.TID3`); 0 for other encodings. Unallocated ones in that space read as zero.
pub fn read_id(crm: u64, op2: u64) -> u64 {
    macro_rules! id {
        ($($c:literal $o:literal),*) => {
            match (crm, op2) {
                $(($c, $o) => {
                    let v: u64;
                    // SAFETY: reading an ID register has no side effect.
                    unsafe { core::arch::asm!(concat!("mrs {}, s3_0_c0_c", $c, "_", $o), out(reg) v, options(nomem, nostack)) };
                    v
                })*
                _ => 0,
            }
        };
    }
    id!(1 0, 1 1, 1 2, 1 3, 1 4, 1 5, 1 6, 1 7,
        2 0, 2 1, 2 2, 2 3, 2 4, 2 5, 2 6, 2 7,
        3 0, 3 1, 3 2, 3 3, 3 4, 3 5, 3 6, 3 7,
        4 0, 4 1, 4 2, 4 3, 4 4, 4 5, 4 6, 4 7,
        5 0, 5 1, 5 2, 5 3, 5 4, 5 5, 5 6, 5 7,
        6 0, 6 1, 6 2, 6 3, 6 4, 6 5, 6 6, 6 7,
        7 0, 7 1, 7 2, 7 3, 7 4, 7 5, 7 6, 7 7)
}
