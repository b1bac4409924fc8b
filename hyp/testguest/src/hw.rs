//! The test guest's hardware access: CSRs, `ecall`, MMIO, the boot and trap entry.

/// Stack bytes per vCPU (must match `testguest.ld`: 32 KiB × 8).
pub const STACK_SHIFT: usize = 15;
/// vCPUs the guest can run.
pub const MAX_HARTS: usize = 8;

core::arch::global_asm!(
    r#"
    .section .text.entry, "ax"
    .globl _start
_start:
    li      t0, {max}
    bgeu    a0, t0, 9f
    la      sp, __stacks_start
    addi    t1, a0, 1
    slli    t1, t1, {shift}
    add     sp, sp, t1
    la      t0, __bss_start
    la      t1, __bss_end
1:  bgeu    t0, t1, 2f
    sd      zero, 0(t0)
    addi    t0, t0, 8
    j       1b
2:  la      t0, __tg_trap
    csrw    stvec, t0
    call    {main}
9:  wfi
    j       9b

    .text
    .globl __tg_secondary
    .align 2
__tg_secondary:
    li      t0, {max}
    bgeu    a0, t0, 9b
    la      sp, __stacks_start
    addi    t1, a0, 1
    slli    t1, t1, {shift}
    add     sp, sp, t1
    la      t0, __tg_trap
    csrw    stvec, t0
    call    {secondary}
    j       9b

    .globl __tg_resume
    .align 2
__tg_resume:
    li      t0, {max}
    bgeu    a0, t0, 9b
    la      sp, __stacks_start
    addi    t1, a0, 1
    slli    t1, t1, {shift}
    add     sp, sp, t1
    la      t0, __tg_trap
    csrw    stvec, t0
    call    {resume}
    j       9b

    .align 2
__tg_trap:
    addi    sp, sp, -34*8
    sd      x1, 1*8(sp)
    sd      x3, 3*8(sp)
    sd      x4, 4*8(sp)
    sd      x5, 5*8(sp)
    sd      x6, 6*8(sp)
    sd      x7, 7*8(sp)
    sd      x8, 8*8(sp)
    sd      x9, 9*8(sp)
    sd      x10, 10*8(sp)
    sd      x11, 11*8(sp)
    sd      x12, 12*8(sp)
    sd      x13, 13*8(sp)
    sd      x14, 14*8(sp)
    sd      x15, 15*8(sp)
    sd      x16, 16*8(sp)
    sd      x17, 17*8(sp)
    sd      x18, 18*8(sp)
    sd      x19, 19*8(sp)
    sd      x20, 20*8(sp)
    sd      x21, 21*8(sp)
    sd      x22, 22*8(sp)
    sd      x23, 23*8(sp)
    sd      x24, 24*8(sp)
    sd      x25, 25*8(sp)
    sd      x26, 26*8(sp)
    sd      x27, 27*8(sp)
    sd      x28, 28*8(sp)
    sd      x29, 29*8(sp)
    sd      x30, 30*8(sp)
    sd      x31, 31*8(sp)
    csrr    t0, sepc
    sd      t0, 32*8(sp)
    mv      a0, sp
    call    {trap}
    ld      t0, 32*8(sp)
    csrw    sepc, t0
    ld      x1, 1*8(sp)
    ld      x3, 3*8(sp)
    ld      x4, 4*8(sp)
    ld      x5, 5*8(sp)
    ld      x6, 6*8(sp)
    ld      x7, 7*8(sp)
    ld      x8, 8*8(sp)
    ld      x9, 9*8(sp)
    ld      x10, 10*8(sp)
    ld      x11, 11*8(sp)
    ld      x12, 12*8(sp)
    ld      x13, 13*8(sp)
    ld      x14, 14*8(sp)
    ld      x15, 15*8(sp)
    ld      x16, 16*8(sp)
    ld      x17, 17*8(sp)
    ld      x18, 18*8(sp)
    ld      x19, 19*8(sp)
    ld      x20, 20*8(sp)
    ld      x21, 21*8(sp)
    ld      x22, 22*8(sp)
    ld      x23, 23*8(sp)
    ld      x24, 24*8(sp)
    ld      x25, 25*8(sp)
    ld      x26, 26*8(sp)
    ld      x27, 27*8(sp)
    ld      x28, 28*8(sp)
    ld      x29, 29*8(sp)
    ld      x30, 30*8(sp)
    ld      x31, 31*8(sp)
    addi    sp, sp, 34*8
    sret
"#,
    max = const MAX_HARTS,
    shift = const STACK_SHIFT,
    main = sym crate::main,
    secondary = sym crate::secondary_main,
    resume = sym crate::resume_main,
    trap = sym crate::trap,
);

/// Address of the secondary entry (for HSM `hart_start`).
pub fn secondary_entry() -> usize {
    extern "C" {
        fn __tg_secondary();
    }
    __tg_secondary as *const () as usize
}

/// Address of the resume entry (HSM non-retentive `hart_suspend`, SUSP): like the
/// secondary entry (stack from `a0`, `stvec`), then `resume_main(a0, a1)`.
pub fn resume_entry() -> usize {
    extern "C" {
        fn __tg_resume();
    }
    __tg_resume as *const () as usize
}

/// Registers saved by the trap entry.
#[repr(C)]
pub struct Frame {
    /// x0..x31 (x0 and x2 unused).
    pub x: [usize; 32],
    /// sepc (written back on return).
    pub sepc: usize,
    _pad: usize,
}

/// SBI return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ret {
    /// Error.
    pub error: isize,
    /// Value.
    pub value: usize,
}

/// `ecall` to the hypervisor's SBI.
pub fn ecall(eid: usize, fid: usize, a0: usize, a1: usize, a2: usize) -> Ret {
    let (error, value);
    // SAFETY: an SBI call; the hypervisor clobbers only a0/a1.
    unsafe {
        core::arch::asm!("ecall", inlateout("a0") a0 => error, inlateout("a1") a1 => value,
            in("a2") a2, in("a6") fid, in("a7") eid, options(nostack));
    }
    Ret { error, value }
}

macro_rules! csr {
    ($name:ident, $num:literal) => {
        /// CSR access.
        #[allow(dead_code)]
        pub mod $name {
            /// Read.
            pub fn read() -> usize {
                let v: usize;
                // SAFETY: reading a supervisor CSR has no side effects.
                unsafe { core::arch::asm!(concat!("csrr {0}, ", $num), out(reg) v, options(nomem, nostack)) };
                v
            }
            /// Write.
            pub fn write(v: usize) {
                // SAFETY: the test guest owns its supervisor CSRs.
                unsafe { core::arch::asm!(concat!("csrw ", $num, ", {0}"), in(reg) v, options(nostack)) };
            }
            /// Set bits.
            pub fn set(v: usize) {
                // SAFETY: as for `write`.
                unsafe { core::arch::asm!(concat!("csrs ", $num, ", {0}"), in(reg) v, options(nostack)) };
            }
            /// Clear bits.
            pub fn clear(v: usize) {
                // SAFETY: as for `write`.
                unsafe { core::arch::asm!(concat!("csrc ", $num, ", {0}"), in(reg) v, options(nostack)) };
            }
        }
    };
}

/// Supervisor CSRs (VS CSRs, since the guest runs in VS-mode).
pub mod csr {
    csr!(sstatus, "0x100");
    csr!(sie, "0x104");
    csr!(sip, "0x144");
    csr!(stimecmp, "0x14d");
    csr!(scause, "0x142");
    csr!(stval, "0x143");
    csr!(satp, "0x180");
    csr!(siselect, "0x150");
    csr!(sireg, "0x151");
}

/// `time`.
pub fn time() -> u64 {
    let v: u64;
    // SAFETY: reading the time counter has no side effects.
    unsafe { core::arch::asm!("csrr {0}, 0xc01", out(reg) v, options(nomem, nostack)) };
    v
}

/// `wfi`.
pub fn wfi() {
    // SAFETY: only stalls the hart.
    unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
}

/// Read a 32-bit MMIO register.
pub fn mmio_read32(addr: usize) -> u32 {
    // SAFETY: the callers pass registers of the vPLIC or UART that the DTB describes
    // (or, deliberately, an unmapped address whose fault the trap handler expects).
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

/// Write a 32-bit MMIO register.
pub fn mmio_write32(addr: usize, v: u32) {
    // SAFETY: as for `mmio_read32`.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

/// Write a 64-bit MMIO register (one access: a device may take a 32-bit write at its
/// offset as the whole register).
pub fn mmio_write64(addr: usize, v: u64) {
    // SAFETY: as for `mmio_read32`.
    unsafe { core::ptr::write_volatile(addr as *mut u64, v) }
}

/// Read an 8-bit MMIO register.
pub fn mmio_read8(addr: usize) -> u8 {
    // SAFETY: as for `mmio_read32`.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

/// Write an 8-bit MMIO register.
pub fn mmio_write8(addr: usize, v: u8) {
    // SAFETY: as for `mmio_read32`.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) }
}

/// Length of the instruction at `pc` (which just trapped in the guest's own code).
pub fn insn_len_at(pc: usize) -> usize {
    // SAFETY: `pc` is the sepc of a trap taken in this guest's code, which is mapped
    // and readable (VS-stage off, RAM).
    let lo = unsafe { core::ptr::read_volatile(pc as *const u16) };
    if lo & 3 == 3 {
        4
    } else {
        2
    }
}

/// The DTB the hypervisor passed.
pub fn dtb(addr: usize) -> Option<fdt::Fdt<'static>> {
    // SAFETY: `addr` is the a1 the hypervisor passed at boot: a DTB in guest RAM that
    // nothing writes afterwards.
    unsafe { fdt::Fdt::from_ptr(addr as *const u8) }.ok()
}
