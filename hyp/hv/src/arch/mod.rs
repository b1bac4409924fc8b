//! Everything that touches the hardware directly: CSRs, `ecall`, the boot and trap
//! entry points, the world switch, fences, guest-memory loads and raw MMIO.
//!
//! No other module of `hyp` contains `asm!` or dereferences a raw MMIO address; they
//! call the small safe wrappers here.
#[cfg(not(target_arch = "riscv64"))]
compile_error!("hyp runs only on riscv64 (build with --target riscv64gc-unknown-none-elf)");

pub mod csr;
pub mod entry;
pub mod mmio;
pub mod phys;
pub mod sbi;
pub mod switch;

pub use switch::{enter_guest, Context};

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

/// Wait for an interrupt (returns when any interrupt enabled in `sie` is pending,
/// whatever `sstatus.SIE` says; hyp keeps `sstatus.SIE = 0`).
pub fn wait_for_interrupt() {
    // SAFETY: `wfi` has no memory or register effects; it only stalls the hart.
    unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
}

/// Full memory fence (`fence rw, rw`).
pub fn fence() {
    // SAFETY: a fence only orders memory accesses.
    unsafe { core::arch::asm!("fence rw, rw", options(nostack)) };
}

/// `fence.i`: make stores visible to this hart's instruction fetch.
pub fn fence_i() {
    // SAFETY: only synchronises the instruction stream.
    unsafe { core::arch::asm!("fence.i", options(nostack)) };
}

/// `hfence.gvma x0, x0`: flush all G-stage (and combined) translations on this hart.
pub fn hfence_gvma_all() {
    // SAFETY: a TLB flush has no effect on memory; encoded by hand because the
    // assembler is not told about the H extension.
    unsafe { core::arch::asm!(".insn r 0x73, 0, 0x31, x0, x0, x0", options(nostack)) };
}

/// `hfence.vvma x0, x0`: flush all VS-stage translations of the current VMID.
pub fn hfence_vvma_all() {
    // SAFETY: a TLB flush has no effect on memory.
    unsafe { core::arch::asm!(".insn r 0x73, 0, 0x11, x0, x0, x0", options(nostack)) };
}

/// Park this hart forever (after a fatal host error).
pub fn halt() -> ! {
    loop {
        wait_for_interrupt();
    }
}

/// Addresses of the hyp image, its stacks and its heap (from `hyp.ld`).
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

/// Set the per-hart pointer kept in `tp` (hyp's "current hart" register).
pub fn set_hart_local(ptr: usize) {
    // SAFETY: hyp reserves `tp` for this pointer; the compiler never allocates `tp`
    // (it is the ABI thread pointer) and the world switch saves/restores it.
    unsafe { core::arch::asm!("mv tp, {0}", in(reg) ptr, options(nomem, nostack)) };
}

/// The per-hart pointer set by [`set_hart_local`].
pub fn hart_local() -> usize {
    let v: usize;
    // SAFETY: reads a register.
    unsafe { core::arch::asm!("mv {0}, tp", out(reg) v, options(nomem, nostack)) };
    v
}

/// Current value of the `time` CSR (ticks of `timebase-frequency`).
pub fn time() -> u64 {
    csr::read_time()
}
