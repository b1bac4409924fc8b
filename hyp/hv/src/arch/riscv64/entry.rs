//! Boot entry points. OpenSBI (fw_dynamic) starts one hart at `_start` in HS-mode
//! with `a0 = hart id`, `a1 = DTB`; the others are started by SBI HSM `hart_start`
//! at `_secondary_start` with `a0 = hart id`, `a1 = opaque`.
//!
//! Each hart runs on `__stacks_start + (hartid + 1) * STACK_SIZE` (see `hyp.ld`);
//! hart ids at or above `MAX_HARTS` park.
//!
//! The two Rust entries it calls, `boot_main` and `secondary_main`, are declared in
//! `arch` (the contract) and defined by the top (`main.rs`).
use crate::arch::{boot_main, secondary_main};

/// log2 of the stack bytes per hart (256 KiB; must match `STACK_SIZE` in `hyp.ld`).
const STACK_SHIFT: usize = 18;
/// Harts hyp can run on (must match `hyp.ld`).
pub const MAX_HARTS: usize = 8;

core::arch::global_asm!(
    r#"
    .section .text.entry, "ax"
    .globl _start
_start:
    csrw    sie, zero
    csrci   sstatus, 2
    li      t0, {max_harts}
    bgeu    a0, t0, 9f
    la      sp, __stacks_start
    addi    t1, a0, 1
    slli    t1, t1, {stack_shift}
    add     sp, sp, t1
    la      t0, __bss_start
    la      t1, __bss_end
1:  bgeu    t0, t1, 2f
    sd      zero, 0(t0)
    addi    t0, t0, 8
    j       1b
2:  la      t0, __hyp_guest_exit
    csrw    stvec, t0
    csrw    sscratch, zero
    call    {boot_main}
9:  wfi
    j       9b

    .text
    .globl _secondary_start
    .align 2
_secondary_start:
    csrw    sie, zero
    csrci   sstatus, 2
    li      t0, {max_harts}
    bgeu    a0, t0, 9b
    la      sp, __stacks_start
    addi    t1, a0, 1
    slli    t1, t1, {stack_shift}
    add     sp, sp, t1
    la      t0, __hyp_guest_exit
    csrw    stvec, t0
    csrw    sscratch, zero
    call    {secondary_main}
    j       9b
"#,
    max_harts = const MAX_HARTS,
    stack_shift = const STACK_SHIFT,
    boot_main = sym boot_main,
    secondary_main = sym secondary_main,
);

/// Physical address of `_secondary_start` (for SBI HSM `hart_start`).
pub fn secondary_entry() -> usize {
    extern "C" {
        fn _secondary_start();
    }
    _secondary_start as *const () as usize
}
