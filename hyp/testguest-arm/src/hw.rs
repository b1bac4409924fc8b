//! The test guest's hardware access, and the only `asm!` in it: the boot and CPU_ON
//! entries, the EL1 exception vectors, system registers, `hvc`/`smc`, `wfi`, PSTATE.I,
//! and MMIO.
//!
//! MMIO goes through single `ldr`/`str` instructions with a plain base register (no
//! writeback, no pair): the only form whose stage-2 data abort carries a valid
//! syndrome (`ESR_EL2.ISV`), which hyp needs to emulate the GIC's frames. The guest
//! runs with its MMU off, so every data access is Device-nGnRnE: the target's
//! `strict-align` keeps the compiler's own accesses aligned.

/// log2 of the stack bytes per vCPU (32 KiB; must match `testguest-arm.ld`).
pub const STACK_SHIFT: usize = 15;
/// vCPUs the guest can run (must match `testguest-arm.ld`).
pub const MAX_CPUS: usize = 8;

// Boot (vCPU 0, x0 = DTB) and CPU_ON (x0 = context) entries: a stack per vCPU from
// MPIDR_EL1.Aff0, FP/SIMD untrapped at EL1 (CPACR_EL1.FPEN = 0b11: Rust code uses
// SIMD registers), VBAR_EL1 = the vectors below. The CPU_ON entry passes its entry
// state (CurrentEL, DAIF, SCTLR_EL1) to Rust before changing any of it.
//
// Vectors: each of the 16 entries saves x0/x1, puts its index in x1 and branches to
// the common path, which saves x2-x30, ELR_EL1 and SPSR_EL1 in a `Frame` on the
// stack, calls `exception(frame, index)`, restores (ELR_EL1 from the frame, which the
// handler may move) and `eret`s.
core::arch::global_asm!(
    r#"
    .section .text.entry, "ax"
    .globl _start
_start:
    mov     x19, x0
    mrs     x20, mpidr_el1
    and     x20, x20, #0xff
    cmp     x20, #{max}
    b.hs    9f
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x2, x20, #1
    lsl     x2, x2, #{shift}
    add     sp, x1, x2
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    adrp    x1, __tg_vectors
    add     x1, x1, :lo12:__tg_vectors
    msr     vbar_el1, x1
    isb
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    str     xzr, [x1], #8
    b       1b
2:  mov     x0, x20
    mov     x1, x19
    bl      {main}
9:  wfi
    b       9b

    .text
    .balign 4
    .globl __tg_secondary
__tg_secondary:
    mov     x19, x0
    mrs     x2, CurrentEL
    mrs     x3, daif
    mrs     x4, sctlr_el1
    mrs     x20, mpidr_el1
    and     x20, x20, #0xff
    cmp     x20, #{max}
    b.hs    9b
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    add     x5, x20, #1
    lsl     x5, x5, #{shift}
    add     sp, x1, x5
    mov     x1, #(3 << 20)
    msr     cpacr_el1, x1
    adrp    x1, __tg_vectors
    add     x1, x1, :lo12:__tg_vectors
    msr     vbar_el1, x1
    isb
    mov     x0, x20
    mov     x1, x19
    bl      {secondary}
    b       9b

    .macro tg_vec index
    .balign 0x80
    sub     sp, sp, #{frame}
    stp     x0, x1, [sp, #0]
    mov     x1, #\index
    b       __tg_exception
    .endm

    .balign 2048
__tg_vectors:
    tg_vec 0
    tg_vec 1
    tg_vec 2
    tg_vec 3
    tg_vec 4
    tg_vec 5
    tg_vec 6
    tg_vec 7
    tg_vec 8
    tg_vec 9
    tg_vec 10
    tg_vec 11
    tg_vec 12
    tg_vec 13
    tg_vec 14
    tg_vec 15

__tg_exception:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x2, elr_el1
    stp     x30, x2, [sp, #240]
    mrs     x2, spsr_el1
    str     x2, [sp, #256]
    mov     x0, sp
    bl      {exception}
    ldr     x2, [sp, #256]
    msr     spsr_el1, x2
    ldp     x30, x2, [sp, #240]
    msr     elr_el1, x2
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #{frame}
    eret
"#,
    max = const MAX_CPUS,
    shift = const STACK_SHIFT,
    frame = const core::mem::size_of::<Frame>(),
    main = sym crate::main,
    secondary = sym crate::secondary_main,
    exception = sym crate::exception,
);

/// Registers the vector's common path saves (its layout is the assembly's).
#[repr(C)]
pub struct Frame {
    /// x0-x30.
    pub x: [u64; 31],
    /// `ELR_EL1`: where `eret` resumes (a handler may move it).
    pub elr: u64,
    /// `SPSR_EL1`.
    pub spsr: u64,
    _pad: u64,
}

const _: () = assert!(core::mem::size_of::<Frame>() == 272);

/// IPA of the CPU_ON entry (`x0` = context; stack from MPIDR).
pub fn secondary_entry() -> u64 {
    extern "C" {
        fn __tg_secondary();
    }
    __tg_secondary as *const () as u64
}

/// `mod $name { read, write }` for one system register.
macro_rules! sysreg {
    ($name:ident, $reg:literal) => {
        #[doc = concat!("`", $reg, "`.")]
        #[allow(dead_code)]
        pub mod $name {
            /// Read the register.
            pub fn read() -> u64 {
                let v: u64;
                // SAFETY: reading an EL1/EL0 system register the guest may access has
                // no memory effect (reading ICC_IAR1_EL1 acknowledges an interrupt,
                // which is what the callers want).
                unsafe { core::arch::asm!(concat!("mrs {}, ", $reg), out(reg) v, options(nostack)) };
                v
            }
            /// Write the register, then `isb`.
            pub fn write(v: u64) {
                // SAFETY: the guest's own EL1 state (GIC CPU interface, timer, fault
                // registers); no register here maps or protects memory.
                unsafe { core::arch::asm!(concat!("msr ", $reg, ", {}"), "isb", in(reg) v, options(nostack)) };
            }
        }
    };
}

/// System registers, named as in the Arm ARM and IHI 0069.
pub mod sysreg {
    sysreg!(mpidr_el1, "mpidr_el1");
    sysreg!(current_el, "CurrentEL");
    sysreg!(daif, "daif");
    sysreg!(sctlr_el1, "sctlr_el1");
    sysreg!(esr_el1, "esr_el1");
    sysreg!(far_el1, "far_el1");
    sysreg!(isr_el1, "isr_el1");
    sysreg!(cntfrq_el0, "cntfrq_el0");
    sysreg!(cntvct_el0, "cntvct_el0");
    sysreg!(cntv_ctl_el0, "cntv_ctl_el0");
    sysreg!(cntv_tval_el0, "cntv_tval_el0");
    sysreg!(cntv_cval_el0, "cntv_cval_el0");
    sysreg!(cntp_ctl_el0, "cntp_ctl_el0");
    sysreg!(icc_sre_el1, "icc_sre_el1");
    sysreg!(icc_pmr_el1, "icc_pmr_el1");
    sysreg!(icc_bpr1_el1, "icc_bpr1_el1");
    sysreg!(icc_ctlr_el1, "icc_ctlr_el1");
    sysreg!(icc_igrpen1_el1, "icc_igrpen1_el1");
    sysreg!(icc_iar1_el1, "icc_iar1_el1");
    sysreg!(icc_eoir1_el1, "icc_eoir1_el1");
    sysreg!(icc_rpr_el1, "icc_rpr_el1");
    sysreg!(icc_sgi1r_el1, "icc_sgi1r_el1");
    sysreg!(icc_sgi0r_el1, "icc_sgi0r_el1");
}

/// The counter (`CNTVCT_EL0`), after an `isb` so it is not read early.
pub fn now() -> u64 {
    let v: u64;
    // SAFETY: a barrier and a counter read; no memory effect.
    unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) v, options(nostack)) };
    v
}

/// An SMCCC call through `conduit` (`hvc #0` or `smc #0`): function id and three
/// arguments; x0 comes back. x1-x17 may be clobbered (SMCCC v1.0 §5.1).
macro_rules! smccc {
    ($insn:literal, $fid:expr, $a1:expr, $a2:expr, $a3:expr) => {{
        let r: u64;
        // SAFETY: a call to the hypervisor, which changes only the registers SMCCC
        // lets it change (listed as clobbered) and, for CPU_OFF or SYSTEM_OFF, does
        // not return at all (the caller expects that).
        unsafe {
            core::arch::asm!($insn,
                inlateout("x0") $fid as u64 => r,
                inlateout("x1") $a1 => _, inlateout("x2") $a2 => _, inlateout("x3") $a3 => _,
                lateout("x4") _, lateout("x5") _, lateout("x6") _, lateout("x7") _,
                lateout("x8") _, lateout("x9") _, lateout("x10") _, lateout("x11") _,
                lateout("x12") _, lateout("x13") _, lateout("x14") _, lateout("x15") _,
                lateout("x16") _, lateout("x17") _, options(nostack))
        };
        r as i64
    }};
}

/// `hvc #0`: PSCI and SMCCC calls to hyp.
pub fn hvc(fid: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    smccc!("hvc #0", fid, a1, a2, a3)
}

/// `smc #0` (hyp traps it, `HCR_EL2.TSC`).
pub fn smc(fid: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    smccc!("smc #0", fid, a1, a2, a3)
}

/// `wfi`.
pub fn wfi() {
    // SAFETY: only waits; an interrupt pending (masked or not) ends it.
    unsafe { core::arch::asm!("wfi", options(nostack)) };
}

/// `dsb sy`: every earlier memory access (device writes included) has completed.
pub fn dsb() {
    // SAFETY: a barrier only orders memory accesses.
    unsafe { core::arch::asm!("dsb sy", options(nostack)) };
}

/// Mask IRQs at PSTATE (`daifset #2`).
pub fn irq_mask() {
    // SAFETY: only PSTATE.I changes.
    unsafe { core::arch::asm!("msr daifset, #2", options(nostack)) };
}

/// Unmask IRQs at PSTATE (`daifclr #2`): a pending one is taken right here.
pub fn irq_unmask() {
    // SAFETY: only PSTATE.I changes; the vectors are installed at entry.
    unsafe { core::arch::asm!("msr daifclr, #2", options(nostack)) };
}

/// Read a 32-bit device register.
pub fn read32(addr: u64) -> u32 {
    let v: u32;
    // SAFETY: callers pass registers of the GIC or PL011 the DTB describes, or an
    // address whose synchronous external abort a test expects (the vector skips the
    // instruction); no Rust object lives at any of them.
    unsafe {
        core::arch::asm!("ldr {v:w}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack))
    };
    v
}

/// Write a 32-bit device register.
pub fn write32(addr: u64, v: u32) {
    // SAFETY: as for `read32`.
    unsafe {
        core::arch::asm!("str {v:w}, [{a}]", a = in(reg) addr, v = in(reg) v, options(nostack))
    };
}

/// Read a 64-bit device register.
pub fn read64(addr: u64) -> u64 {
    let v: u64;
    // SAFETY: as for `read32`.
    unsafe {
        core::arch::asm!("ldr {v}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack))
    };
    v
}

/// Write a 64-bit device register.
pub fn write64(addr: u64, v: u64) {
    // SAFETY: as for `read32`.
    unsafe {
        core::arch::asm!("str {v}, [{a}]", a = in(reg) addr, v = in(reg) v, options(nostack))
    };
}

/// Read an 8-bit device register.
pub fn read8(addr: u64) -> u8 {
    let v: u32;
    // SAFETY: as for `read32`.
    unsafe {
        core::arch::asm!("ldrb {v:w}, [{a}]", a = in(reg) addr, v = out(reg) v, options(nostack))
    };
    v as u8
}

/// Write an 8-bit device register.
pub fn write8(addr: u64, v: u8) {
    // SAFETY: as for `read32`.
    unsafe {
        core::arch::asm!("strb {v:w}, [{a}]", a = in(reg) addr, v = in(reg) u32::from(v), options(nostack))
    };
}

/// Branch-and-link to `addr`, where nothing is mapped: the instruction abort's vector
/// resumes at the link register (a test sets that up), so this returns.
pub fn call_unmapped(addr: u64) {
    // SAFETY: the fetch at `addr` aborts before any instruction there runs; the
    // handler returns to x30, i.e. right after the `blr`, with every register as the
    // vector saved it (x30 is declared clobbered).
    unsafe { core::arch::asm!("blr {a}", a = in(reg) addr, lateout("x30") _, options(nostack)) };
}

/// The DTB hyp passed at `addr`.
pub fn dtb(addr: u64) -> Option<fdt::Fdt<'static>> {
    // SAFETY: `addr` is the x0 hyp entered vCPU 0 with: a DTB in guest RAM (its last
    // 2 MiB, below nothing the guest writes) that lives as long as the guest.
    unsafe { fdt::Fdt::from_ptr(addr as *const u8) }.ok()
}
