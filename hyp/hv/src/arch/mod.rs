//! The architecture seam: everything that touches the hardware directly — CSRs or
//! system registers, firmware calls, the boot and trap entry points, the world switch,
//! fences and TLB maintenance, the stage-2 page-table format, raw MMIO — with one
//! backend per instruction set, selected here. The rest of hyp names `crate::arch::…`,
//! never a backend: the backend's items are re-exported from this module.
//!
//! No other module of `hyp` contains `asm!` or dereferences a raw MMIO address; they
//! call the small safe wrappers here. `arch` is the bottom layer and imports nothing of
//! hyp: its three calls up are the `extern "C"` functions declared below, which
//! `main.rs` defines.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | this contract, [`HartId`], the calls up, the backend selection |
//! | `stage2.rs` | the stage-2 page-table format a backend describes ([`Stage2Format`]) |
//! | `pcie.rs` | raw MMIO of PCIe: the host bridge's ECAM window and device register windows (`Ecam`, `MmioWindow`), ordered by the backend's `fence_io` |
//! | `phys.rs` | host physical memory outside hyp's Rust objects (guest RAM windows, the boot inputs, `DmaBuf`: RAM shared with a device): checked volatile accesses, the same on every ISA |
//! | `riscv64/` | the RISC-V backend (H extension, SBI firmware, QEMU `virt`) |
//! | `aarch64/` | the aarch64 backend (EL2 boot, vectors, world switch, stage 2, host GICv3 and list registers, PL011, PSCI to QEMU) |
//!
//! # What a backend provides
//!
//! The architecture-neutral modules of hyp use only these. The `const` block at the end
//! of this file makes the compiler check that the selected backend has each of them,
//! with this signature.
//!
//! | item | what | riscv64 | aarch64 would use |
//! |---|---|---|---|
//! | boot code | a stack per hart, then `boot_main(HartId, dtb)` on the boot hart and `secondary_main(HartId, opaque)` on the others; a trap taken by hyp itself calls `fatal_host_trap(cause, pc, tval)` | `entry.rs`, `switch.rs` | EL2 entry, `VBAR_EL2` |
//! | `MAX_HARTS` | harts the stacks are laid out for (the linker script) | 8 | |
//! | `start_hart(HartId, opaque) -> Result<(), isize>` | start another hart at the secondary entry | SBI HSM `hart_start` | PSCI `CPU_ON` |
//! | `Context`, `enter_guest(&mut Context)` | a vCPU's saved registers; run the guest until its next trap to hyp, with the trap's registers in `Context` | `switch.rs` | `eret` to EL1; `ESR_EL2`, `FAR_EL2`, `HPFAR_EL2` at the exit |
//! | `wait_for_interrupt()`, `halt() -> !` | idle until an interrupt is pending; park for good | `wfi` | `wfi` |
//! | `fence()` | full memory barrier | `fence rw, rw` | `dmb ish` |
//! | `hfence_gvma_all()`, `hfence_vvma_all()`, `fence_i()` | on this hart: drop stage-2 (and combined) translations; drop the current guest's stage-1 translations; make stores visible to instruction fetch | `hfence.gvma`, `hfence.vvma`, `fence.i` | `tlbi alle1`, `tlbi vmalle1`, `ic iallu` (each with `dsb`/`isb`) |
//! | `set_hart_local(usize)`, `hart_local() -> usize` | one word per hart (hyp keeps the hart's index there) | `tp` | `TPIDR_EL2` |
//! | `time() -> u64` | the timer counter, at the DTB's `timebase-frequency` | `time` | `CNTPCT_EL0` |
//! | `send_ipi(HartId)` | interrupt another hart | an MSI into its S-level IMSIC file (AIA hosts), else SBI sPI `send_ipi` | a GICv3 SGI (`ICC_SGI1R_EL1`) |
//! | `take_ipi() -> bool`, `raise_ipi_self()` | consume / re-raise this hart's pending IPI | `sip.SSIP` and the IMSIC identity's `eip` bit | the SGI's acknowledge / a self-SGI |
//! | `heap_range()`, `image_range()` | the boot heap and the whole image (the linker script) | `hyp.ld` | |
//! | `console_write(&[u8])`, `power_off(failure) -> !` | hyp's console; power-off when the platform has no exit device | SBI DBCN, SRST | a PL011 driver; PSCI `SYSTEM_OFF` |
//! | `Stage2` | the [`Stage2Format`] that `crate::gstage` builds tables in | Sv39x4 (`sv39x4.rs`) | VMSAv8-64 stage 2, 4 KiB granule |
//!
//! The three flushes carry the names of the RISC-V instructions because the remote
//! fences in `hart.rs` (under rework) call them by these names; neutral names belong
//! with that change.
//!
//! The riscv64 backend also exports what only the RISC-V-specific modules of hyp use:
//! `csr`, `mmio`, `sbi`, and `switch`'s HLVX and FP state. An aarch64 backend provides
//! the table above; docs/hyp.md ("Architecture seam") lists the modules above `arch`
//! that are RISC-V-specific and what each would become.

mod stage2;

pub mod pcie;
pub mod phys;

pub use stage2::{Entry, Leaf, Perm, Stage2Format};

#[cfg(target_arch = "riscv64")]
mod riscv64;
#[cfg(target_arch = "riscv64")]
pub use riscv64::*;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use aarch64::*;

// Shared by every backend: the linker scripts (`hyp.ld`, `hyp-aarch64.ld`) define the
// same symbols.

/// Stop this hart for good (interrupts stay masked; each wake-up sleeps again).
pub fn halt() -> ! {
    loop {
        wait_for_interrupt();
    }
}

/// The boot heap `[start, end)` (`__heap_start`/`__heap_end` of the linker script).
pub fn heap_range() -> (usize, usize) {
    extern "C" {
        static __heap_start: u8;
        static __heap_end: u8;
    }
    (
        core::ptr::addr_of!(__heap_start) as usize,
        core::ptr::addr_of!(__heap_end) as usize,
    )
}

/// `[start, end)` of everything the hyp image owns (code, data, stacks, heap).
pub fn image_range() -> (usize, usize) {
    extern "C" {
        static __hyp_start: u8;
        static __hyp_end: u8;
    }
    (
        core::ptr::addr_of!(__hyp_start) as usize,
        core::ptr::addr_of!(__hyp_end) as usize,
    )
}

#[cfg(not(any(target_arch = "riscv64", target_arch = "aarch64")))]
compile_error!(
    "hyp: no backend for this architecture yet (build with --target \
     riscv64gc-unknown-none-elf or aarch64-unknown-none; an arch/<isa>/ backend provides \
     what arch/mod.rs lists)"
);

/// A physical hart's id as the hardware and the firmware number it (`mhartid`: the boot
/// entry's `a0`, SBI hart ids, the host DTB's cpu `reg`). Not its index in hyp's hart
/// table (`Hart::index`, a plain `usize`). `repr(transparent)`: the boot entry passes it
/// in a register.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HartId(pub usize);

impl core::fmt::Display for HartId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

// The calls up: a backend's boot and trap code calls them, `main.rs` defines them
// (`#[no_mangle]`), so `arch` needs nothing of hyp.
extern "C" {
    /// The boot hart's Rust entry: its hart id and the firmware's DTB.
    pub fn boot_main(hartid: HartId, dtb: usize) -> !;
    /// The other harts' Rust entry: the `opaque` that [`start_hart`] was given.
    pub fn secondary_main(hartid: HartId, opaque: usize) -> !;
    /// A trap taken by hyp itself (always a hyp bug): the architecture's cause, pc and
    /// trap value (RISC-V `scause`, `sepc`, `stval`).
    pub fn fatal_host_trap(cause: usize, pc: usize, tval: usize) -> !;
}

// The contract, checked: the selected backend provides each item of the table in the
// module docs with this signature (a missing or different one fails here, not in the
// callers). The IPI items are checked in the second block, on riscv64 only so far.
const _: () = {
    let _: usize = MAX_HARTS;
    let _: fn(HartId, usize) -> Result<(), isize> = start_hart;
    let _: fn(&mut Context) = enter_guest;
    let _: fn() = wait_for_interrupt;
    let _: fn() -> ! = halt;
    let _: fn() = fence;
    let _: fn() = hfence_gvma_all;
    let _: fn() = hfence_vvma_all;
    let _: fn() = fence_i;
    let _: fn(usize) = set_hart_local;
    let _: fn() -> usize = hart_local;
    let _: fn() -> u64 = time;
    let _: fn() -> (usize, usize) = heap_range;
    let _: fn() -> (usize, usize) = image_range;
    let _: fn(&[u8]) = console_write;
    let _: fn(bool) -> ! = power_off;
    stage2::is_format::<Stage2>();
};

const _: () = {
    let _: fn(HartId) = send_ipi;
};

// Consuming an IPI: on aarch64 the GIC's acknowledge loop does it (`gic::ack`).
#[cfg(target_arch = "riscv64")]
const _: () = {
    let _: fn() -> bool = take_ipi;
    let _: fn() = raise_ipi_self;
};
