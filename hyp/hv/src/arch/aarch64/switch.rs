//! The exception vectors at `VBAR_EL2` and the world switch.
//!
//! [`enter_guest`] saves hyp's callee-saved registers (x19-x30, d8-d15) and the
//! `Context` pointer in a frame on hyp's stack (`SP_EL2`), loads the guest's general
//! registers, `SP_EL1`, `ELR_EL2` and `SPSR_EL2`, and `eret`s to EL1. An exception
//! from the guest (a lower EL) enters the vectors on `SP_EL2`, which still points at
//! that frame: the vector saves the guest's registers and the exit's syndrome
//! (`ESR_EL2`, `FAR_EL2`, `HPFAR_EL2`) into the `Context`, pops the frame and returns
//! from `enter_guest`. An exception taken at EL2 itself is a hyp bug:
//! `fatal_host_trap(ESR_EL2, ELR_EL2, FAR_EL2)`.
//!
//! Switched: the general registers, the exception state and FP/SIMD (q0-q31, `FPSR`,
//! `FPCR`: hyp's own code uses SIMD registers, e.g. in `memcpy`). Not switched: the
//! guest's EL1 system registers and timer, which stay live in the CPU — a vCPU keeps
//! its CPU to itself (docs/hyp.md, "aarch64").
use core::mem::offset_of;

use crate::arch::fatal_host_trap;

/// A vCPU's saved state across an exit.
#[repr(C)]
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// x0-x30.
    pub x: [u64; 31],
    /// `SP_EL1`.
    pub sp_el1: u64,
    /// The guest's pc (`ELR_EL2`): where `enter_guest` resumes it.
    pub pc: u64,
    /// The guest's PSTATE (`SPSR_EL2`).
    pub pstate: u64,
    /// `ESR_EL2` of the last exit.
    pub esr: u64,
    /// `FAR_EL2` of the last exit.
    pub far: u64,
    /// `HPFAR_EL2` of the last exit.
    pub hpfar: u64,
    /// Which vector the last exit came through: 0-3 synchronous, IRQ, FIQ, SError from
    /// AArch64 EL1/EL0; 4-7 the same from AArch32.
    pub vector: u64,
    /// `FPSR`.
    pub fpsr: u64,
    /// `FPCR`.
    pub fpcr: u64,
    /// q0-q31.
    pub q: [u128; 32],
}

/// Exit vectors (`Context::vector`).
pub mod vector {
    /// A synchronous exception from AArch64 EL1/EL0 (HVC, SMC, aborts, traps).
    pub const SYNC: u64 = 0;
    /// A physical IRQ (routed to EL2 by `HCR_EL2.IMO`) while the guest ran.
    pub const IRQ: u64 = 1;
}

/// Bytes of the frame `enter_guest` keeps on hyp's stack.
const FRAME: usize = 176;
/// Offset of the `Context` pointer in the frame.
const FRAME_CTX: usize = 96;

const _: () = assert!(offset_of!(Context, x) == 0);
const _: () = assert!(offset_of!(Context, q) % 16 == 0 && offset_of!(Context, q) + 512 <= 1024);

extern "C" {
    fn __hyp_enter_guest(ctx: *mut Context);
}

/// Run the guest from `ctx` until its next exception to EL2; its state at the exit is
/// back in `ctx`.
pub fn enter_guest(ctx: &mut Context) {
    // SAFETY: `ctx` is a valid, exclusive `Context` for the whole call; the assembly
    // saves and restores every callee-saved register of the AAPCS64 and returns only
    // through `__hyp_guest_exit`, which pops the frame it pushed. The guest runs at EL1
    // under stage 2 and cannot reach hyp's memory.
    unsafe { __hyp_enter_guest(ctx) };
}

core::arch::global_asm!(
    r#"
    .macro hyp_host_vec
    .balign 0x80
    mrs     x0, esr_el2
    mrs     x1, elr_el2
    mrs     x2, far_el2
    b       {fatal}
    .endm

    .macro hyp_guest_vec kind
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mov     x1, #\kind
    b       __hyp_guest_exit
    .endm

    .text
    .balign 2048
    .globl __hyp_vectors
__hyp_vectors:
    hyp_host_vec
    hyp_host_vec
    hyp_host_vec
    hyp_host_vec
    hyp_host_vec
    hyp_host_vec
    hyp_host_vec
    hyp_host_vec
    hyp_guest_vec 0
    hyp_guest_vec 1
    hyp_guest_vec 2
    hyp_guest_vec 3
    hyp_guest_vec 4
    hyp_guest_vec 5
    hyp_guest_vec 6
    hyp_guest_vec 7

    .balign 4
    .globl __hyp_enter_guest
__hyp_enter_guest:
    sub     sp, sp, #{frame}
    stp     x19, x20, [sp, #0]
    stp     x21, x22, [sp, #16]
    stp     x23, x24, [sp, #32]
    stp     x25, x26, [sp, #48]
    stp     x27, x28, [sp, #64]
    stp     x29, x30, [sp, #80]
    str     x0, [sp, #{frame_ctx}]
    stp     d8, d9, [sp, #112]
    stp     d10, d11, [sp, #128]
    stp     d12, d13, [sp, #144]
    stp     d14, d15, [sp, #160]
    add     x1, x0, #{q}
    ldp     q0, q1, [x1, #0]
    ldp     q2, q3, [x1, #32]
    ldp     q4, q5, [x1, #64]
    ldp     q6, q7, [x1, #96]
    ldp     q8, q9, [x1, #128]
    ldp     q10, q11, [x1, #160]
    ldp     q12, q13, [x1, #192]
    ldp     q14, q15, [x1, #224]
    ldp     q16, q17, [x1, #256]
    ldp     q18, q19, [x1, #288]
    ldp     q20, q21, [x1, #320]
    ldp     q22, q23, [x1, #352]
    ldp     q24, q25, [x1, #384]
    ldp     q26, q27, [x1, #416]
    ldp     q28, q29, [x1, #448]
    ldp     q30, q31, [x1, #480]
    ldr     x1, [x0, #{fpsr}]
    msr     fpsr, x1
    ldr     x1, [x0, #{fpcr}]
    msr     fpcr, x1
    ldr     x1, [x0, #{pc}]
    msr     elr_el2, x1
    ldr     x1, [x0, #{pstate}]
    msr     spsr_el2, x1
    ldr     x1, [x0, #{sp_el1}]
    msr     sp_el1, x1
    ldp     x2, x3, [x0, #16]
    ldp     x4, x5, [x0, #32]
    ldp     x6, x7, [x0, #48]
    ldp     x8, x9, [x0, #64]
    ldp     x10, x11, [x0, #80]
    ldp     x12, x13, [x0, #96]
    ldp     x14, x15, [x0, #112]
    ldp     x16, x17, [x0, #128]
    ldp     x18, x19, [x0, #144]
    ldp     x20, x21, [x0, #160]
    ldp     x22, x23, [x0, #176]
    ldp     x24, x25, [x0, #192]
    ldp     x26, x27, [x0, #208]
    ldp     x28, x29, [x0, #224]
    ldr     x30, [x0, #240]
    ldp     x0, x1, [x0, #0]
    eret

__hyp_guest_exit:
    ldr     x0, [sp, #16 + {frame_ctx}]
    str     x1, [x0, #{vector}]
    stp     x2, x3, [x0, #16]
    stp     x4, x5, [x0, #32]
    stp     x6, x7, [x0, #48]
    stp     x8, x9, [x0, #64]
    stp     x10, x11, [x0, #80]
    stp     x12, x13, [x0, #96]
    stp     x14, x15, [x0, #112]
    stp     x16, x17, [x0, #128]
    stp     x18, x19, [x0, #144]
    stp     x20, x21, [x0, #160]
    stp     x22, x23, [x0, #176]
    stp     x24, x25, [x0, #192]
    stp     x26, x27, [x0, #208]
    stp     x28, x29, [x0, #224]
    str     x30, [x0, #240]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x0, #0]
    mrs     x1, sp_el1
    str     x1, [x0, #{sp_el1}]
    mrs     x1, elr_el2
    str     x1, [x0, #{pc}]
    mrs     x1, spsr_el2
    str     x1, [x0, #{pstate}]
    mrs     x1, esr_el2
    str     x1, [x0, #{esr}]
    mrs     x1, far_el2
    str     x1, [x0, #{far}]
    mrs     x1, hpfar_el2
    str     x1, [x0, #{hpfar}]
    mrs     x1, fpsr
    str     x1, [x0, #{fpsr}]
    mrs     x1, fpcr
    str     x1, [x0, #{fpcr}]
    add     x1, x0, #{q}
    stp     q0, q1, [x1, #0]
    stp     q2, q3, [x1, #32]
    stp     q4, q5, [x1, #64]
    stp     q6, q7, [x1, #96]
    stp     q8, q9, [x1, #128]
    stp     q10, q11, [x1, #160]
    stp     q12, q13, [x1, #192]
    stp     q14, q15, [x1, #224]
    stp     q16, q17, [x1, #256]
    stp     q18, q19, [x1, #288]
    stp     q20, q21, [x1, #320]
    stp     q22, q23, [x1, #352]
    stp     q24, q25, [x1, #384]
    stp     q26, q27, [x1, #416]
    stp     q28, q29, [x1, #448]
    stp     q30, q31, [x1, #480]
    ldp     x19, x20, [sp, #0]
    ldp     x21, x22, [sp, #16]
    ldp     x23, x24, [sp, #32]
    ldp     x25, x26, [sp, #48]
    ldp     x27, x28, [sp, #64]
    ldp     x29, x30, [sp, #80]
    ldp     d8, d9, [sp, #112]
    ldp     d10, d11, [sp, #128]
    ldp     d12, d13, [sp, #144]
    ldp     d14, d15, [sp, #160]
    add     sp, sp, #{frame}
    ret
"#,
    fatal = sym fatal_host_trap,
    frame = const FRAME,
    frame_ctx = const FRAME_CTX,
    pc = const offset_of!(Context, pc),
    pstate = const offset_of!(Context, pstate),
    sp_el1 = const offset_of!(Context, sp_el1),
    esr = const offset_of!(Context, esr),
    far = const offset_of!(Context, far),
    hpfar = const offset_of!(Context, hpfar),
    vector = const offset_of!(Context, vector),
    fpsr = const offset_of!(Context, fpsr),
    fpcr = const offset_of!(Context, fpcr),
    q = const offset_of!(Context, q),
);
