//! The aarch64 backend of [`crate::arch`] (first step, issue 13): Armv8-A at EL2 with
//! no firmware below it, on QEMU arm `virt` (`virtualization=on`, started by QEMU's
//! ELF `-kernel` loader at EL2). QEMU itself answers PSCI, through `smc` from EL2.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the contract's functions (`arch`'s module docs list them) |
//! | `entry.rs` | boot: `_start` (one stack per CPU, `.bss`, `CPTR_EL2`, `VBAR_EL2`), `MAX_HARTS` |
//! | `switch.rs` | the exception vectors at `VBAR_EL2`, the world switch (`Context`, `enter_guest`) |
//! | `vmsa_s2.rs` | the stage-2 page-table format (`Stage2`): VMSAv8-64, 4 KiB granule, `VTCR_EL2` |
//! | `sysreg.rs` | the EL2 system registers hyp programs, and their bits |
//! | `psci.rs` | PSCI calls down to QEMU (`smc`) and the function ids guests use |
//! | `pl011.rs` | the PL011 UART hyp's console writes to |
//! | `el1.rs` | a vCPU's state in the CPU's system registers, saved and restored when vCPUs share a CPU |
//! | `gic.rs` | the host GICv3 (distributor, redistributors, `ICC_*`) and the list registers (`ICH_*`) |
//! | `its.rs` | the host ITS's registers and command-queue memory (`hyp_io::gic_its::ItsRegs`), LPI table stores |
//! | `smmu.rs` | the host SMMUv3's registers and the memory hyp gives it (stream table, queues), behind `hyp_io::smmuv3::SmmuRegs` |
//! | `hello_guest.rs` | the tiny EL1 test payload (a few instructions, copied into guest RAM) |
//!
//! IPIs are SGIs ([`send_ipi`]); a CPU consumes them by acknowledging its interrupts
//! in a loop (`gic::ack`), so `take_ipi` and `raise_ipi_self` of the RISC-V contract
//! have no counterpart here (the contract check in `arch/mod.rs` skips them). The
//! EL2 stage-1 MMU stays off: hyp runs on the flat physical map, its data accesses are
//! Device-nGnRnE (fine on QEMU's TCG; a real core needs an EL2 identity map first).
use super::HartId;

pub mod el1;
pub mod entry;
pub mod gic;
pub mod hello_guest;
pub mod its;
pub mod pl011;
pub mod psci;
pub mod smmu;
pub mod switch;
pub mod sysreg;
pub mod vmsa_s2;

pub use entry::MAX_HARTS;
pub use switch::{enter_guest, Context};

/// The stage-2 page-table format: VMSAv8-64 with a 4 KiB granule.
pub type Stage2 = vmsa_s2::VmsaStage2;

/// Wait for an interrupt (`wfi`).
pub fn wait_for_interrupt() {
    // SAFETY: `wfi` has no memory or register effects; it only stalls the CPU.
    unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
}

/// Full memory barrier (`dmb ish`).
pub fn fence() {
    // SAFETY: a barrier only orders memory accesses.
    unsafe { core::arch::asm!("dmb ish", options(nostack)) };
}

/// Order hyp's memory accesses (queue entries, stream-table entries) and device
/// accesses both ways, and complete them (`dsb sy`): `arch::pcie`, the SMMU.
pub fn fence_io() {
    // SAFETY: a barrier only orders and completes memory and device accesses.
    unsafe { core::arch::asm!("dsb sy", options(nostack)) };
}

/// Make stores visible to instruction fetch on this CPU (`ic iallu`).
pub fn fence_i() {
    // SAFETY: cache maintenance and barriers have no effect on memory contents.
    unsafe { core::arch::asm!("dsb ish", "ic iallu", "dsb ish", "isb", options(nostack)) };
}

/// Drop all stage-2 and combined stage-1&2 translations of EL1&0 on this CPU
/// (`tlbi alle1`): the counterpart of RISC-V's `hfence.gvma`.
pub fn hfence_gvma_all() {
    // SAFETY: a TLB invalidation has no effect on memory.
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi alle1",
            "dsb ish",
            "isb",
            options(nostack)
        )
    };
}

/// Drop the current VMID's stage-1 translations (`tlbi vmalle1`): the counterpart of
/// RISC-V's `hfence.vvma`.
pub fn hfence_vvma_all() {
    // SAFETY: a TLB invalidation has no effect on memory.
    unsafe {
        core::arch::asm!(
            "dsb ishst",
            "tlbi vmalle1",
            "dsb ish",
            "isb",
            options(nostack)
        )
    };
}

/// Set the per-CPU word (`TPIDR_EL2`).
pub fn set_hart_local(v: usize) {
    sysreg::tpidr_el2::write(v);
}

/// The per-CPU word (`TPIDR_EL2`).
pub fn hart_local() -> usize {
    sysreg::tpidr_el2::read()
}

/// The physical counter (`CNTPCT_EL0`), at `CNTFRQ_EL0` (1 GHz on QEMU `virt`).
pub fn time() -> u64 {
    sysreg::cntpct_el0::read() as u64
}

/// Start the CPU `hartid` (its MPIDR affinity) at the secondary entry: PSCI `CPU_ON`.
/// hyp's aarch64 boot path is single-CPU so far, so the secondary entry parks.
pub fn start_hart(hartid: HartId, opaque: usize) -> Result<(), isize> {
    psci::cpu_on(hartid.0, entry::secondary_entry(), opaque)
}

/// hyp's console: the PL011 of QEMU `virt`.
pub fn console_write(bytes: &[u8]) {
    pl011::write(bytes);
}

/// Power the machine off: PSCI `SYSTEM_OFF` on success, `SYSTEM_RESET` on failure
/// (QEMU runs with `-no-reboot`, so both end it; the status is in the console log).
pub fn power_off(failure: bool) -> ! {
    if failure {
        psci::system_reset()
    } else {
        psci::system_off()
    }
}

/// Interrupt CPU `hartid` (its `MPIDR_EL1.Aff0`): hyp's kick SGI.
pub fn send_ipi(hartid: HartId) {
    gic::send_sgi(hartid.0, gic::KICK_SGI);
}
