//! The ID registers a guest reads (`HCR_EL2.TID3` traps them): the CPU's own values
//! with the features hyp does not virtualize taken out, so a guest never uses state
//! that hyp does not switch between vCPUs (`arch::el1`) or a facility it does not
//! emulate. Arm ARM D23.2 (the `ID_AA64*_EL1` field layouts).
//!
//! | register | fields cleared | why |
//! |---|---|---|
//! | `ID_AA64PFR0_EL1` | SVE, MPAM, AMU, RME | SVE state not switched; no MPAM/activity monitors/realms for guests |
//! | `ID_AA64PFR1_EL1` | MTE, SME, RNDR_trap, NMI, MTE_frac, GCS, THE, MTEX, DF2, PFAR | tag, streaming-mode, guarded-stack and NMI state not switched |
//! | `ID_AA64PFR2_EL1`, `ID_AA64ZFR0_EL1`, `ID_AA64SMFR0_EL1`, `ID_AA64FPFR0_EL1` | all | extensions of the above |
//! | `ID_AA64DFR0_EL1` | TraceVer, PMUVer, PMSVer, TraceFilt, TraceBuffer, MTPMU, BRBE, ExtTrcBuff, HPMN0 | no PMU, trace, SPE or branch records for guests |
//! | `ID_AA64DFR1_EL1` | all | as above |
//! | `ID_AA64MMFR3_EL1`, `ID_AA64MMFR4_EL1` | all | TCR2/SCTLR2, permission indirection and overlays (S1PIE/S1POE) registers not switched |
//!
//! Everything else reads as on the CPU.

use crate::arch::sysreg;

/// The guest's value of `S3_0_C0_C<crm>_<op2>`.
pub fn read(crm: u64, op2: u64) -> u64 {
    let v = sysreg::read_id(crm, op2);
    v & !hidden(crm, op2)
}

/// `field(lo)`: the 4-bit ID field at bit `lo`.
const fn field(lo: u32) -> u64 {
    0xf << lo
}

/// The bits of `S3_0_C0_C<crm>_<op2>` a guest reads as zero.
fn hidden(crm: u64, op2: u64) -> u64 {
    match (crm, op2) {
        // ID_AA64PFR0_EL1: SVE 35:32, MPAM 43:40, AMU 47:44, RME 55:52.
        (4, 0) => field(32) | field(40) | field(44) | field(52),
        // ID_AA64PFR1_EL1: MTE 11:8, SME 27:24, RNDR_trap 31:28, NMI 39:36,
        // MTE_frac 43:40, GCS 47:44, THE 51:48, MTEX 55:52, DF2 59:56, PFAR 63:60.
        (4, 1) => {
            field(8)
                | field(24)
                | field(28)
                | field(36)
                | field(40)
                | field(44)
                | field(48)
                | field(52)
                | field(56)
                | field(60)
        }
        // ID_AA64PFR2_EL1, ID_AA64ZFR0_EL1, ID_AA64SMFR0_EL1, ID_AA64FPFR0_EL1.
        (4, 2) | (4, 4) | (4, 5) | (4, 7) => u64::MAX,
        // ID_AA64DFR0_EL1: TraceVer 7:4, PMUVer 11:8, PMSVer 35:32, TraceFilt 43:40,
        // TraceBuffer 47:44, MTPMU 51:48, BRBE 55:52, ExtTrcBuff 59:56, HPMN0 63:60.
        (5, 0) => {
            field(4)
                | field(8)
                | field(32)
                | field(40)
                | field(44)
                | field(48)
                | field(52)
                | field(56)
                | field(60)
        }
        // ID_AA64DFR1_EL1.
        (5, 1) => u64::MAX,
        // ID_AA64MMFR3_EL1, ID_AA64MMFR4_EL1.
        (7, 3) | (7, 4) => u64::MAX,
        _ => 0,
    }
}
