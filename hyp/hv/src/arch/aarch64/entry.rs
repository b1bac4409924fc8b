//! Boot entry points. QEMU's ELF `-kernel` loader starts CPU 0 at `_start` at EL2
//! (`virtualization=on`, no secure world, no firmware) with the MMU off and
//! D, A, I, F masked; PSCI `CPU_ON` starts the others at `_secondary_start` with
//! `x0 = context`.
//!
//! Each CPU runs on `__stacks_start + (Aff0 + 1) * STACK_SIZE` (see `hyp-aarch64.ld`);
//! CPUs whose `MPIDR_EL1.Aff0` is at or above `MAX_HARTS` park. Before Rust: `.bss`
//! zeroed (boot CPU), FP/SIMD untrapped at EL2 (`CPTR_EL2 = 0x33ff`: TFP = 0, the RES1
//! bits and TZ set), `VBAR_EL2` = the vectors of `switch.rs`.
//!
//! The two Rust entries it calls, `boot_main` and `secondary_main`, are declared in
//! `arch` (the contract) and defined by the top (`arm/mod.rs`).
use crate::arch::{boot_main, secondary_main};

/// log2 of the stack bytes per CPU (256 KiB; must match `STACK_SIZE` in
/// `hyp-aarch64.ld`).
const STACK_SHIFT: usize = 18;
/// CPUs hyp can run on (must match `hyp-aarch64.ld`).
pub const MAX_HARTS: usize = 8;

core::arch::global_asm!(
    r#"
    .section .text.entry, "ax"
    .globl _start
_start:
    mov     x20, x0
    mrs     x19, mpidr_el1
    and     x19, x19, #0xff
    cmp     x19, #{max_harts}
    b.hs    9f
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x2, x19, #1
    lsl     x2, x2, #{stack_shift}
    add     sp, x1, x2
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    str     xzr, [x1], #8
    b       1b
2:  mov     x1, #0x33ff
    msr     cptr_el2, x1
    adrp    x1, __hyp_vectors
    add     x1, x1, :lo12:__hyp_vectors
    msr     vbar_el2, x1
    isb
    mov     x0, x19
    mov     x1, x20
    bl      {boot_main}
9:  wfi
    b       9b

    .text
    .globl _secondary_start
    .balign 4
_secondary_start:
    mov     x20, x0
    mrs     x19, mpidr_el1
    and     x19, x19, #0xff
    cmp     x19, #{max_harts}
    b.hs    9b
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x2, x19, #1
    lsl     x2, x2, #{stack_shift}
    add     sp, x1, x2
    mov     x1, #0x33ff
    msr     cptr_el2, x1
    adrp    x1, __hyp_vectors
    add     x1, x1, :lo12:__hyp_vectors
    msr     vbar_el2, x1
    isb
    mov     x0, x19
    mov     x1, x20
    bl      {secondary_main}
    b       9b
"#,
    max_harts = const MAX_HARTS,
    stack_shift = const STACK_SHIFT,
    boot_main = sym boot_main,
    secondary_main = sym secondary_main,
);

/// Physical address of `_secondary_start` (for PSCI `CPU_ON`).
pub fn secondary_entry() -> usize {
    extern "C" {
        fn _secondary_start();
    }
    _secondary_start as *const () as usize
}
