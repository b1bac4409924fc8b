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

/// `HCR_EL2` bits.
pub mod hcr {
    /// Stage-2 translation for EL1&0.
    pub const VM: usize = 1 << 0;
    /// Trap `smc` from EL1 (as EC 0x17).
    pub const TSC: usize = 1 << 19;
    /// EL1 is AArch64.
    pub const RW: usize = 1 << 31;
}

/// `SCTLR_EL1` with the MMU and caches off, only its RES1 bits set (Armv8.0: 29, 28,
/// 23, 22, 20, 11): how a guest starts.
pub const SCTLR_EL1_RESET: usize = 0x30d0_0800;

/// `SPSR_EL2` for entering EL1h (SP_EL1) with D, A, I, F masked.
pub const SPSR_EL1H_MASKED: usize = 0x3c5;
