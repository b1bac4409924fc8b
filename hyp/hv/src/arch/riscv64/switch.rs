//! The world switch between hyp (HS-mode) and a guest (VS/VU-mode).
//!
//! `enter_guest(ctx)` is an ordinary call from hyp's point of view: it saves hyp's
//! callee-saved registers, `tp` and the host values of `sstatus` and `hstatus` in
//! `ctx`, loads the guest's GPRs, `sstatus`, `hstatus` and `sepc`, points `sscratch` at
//! `ctx`, and `sret`s. Any trap taken while the guest runs lands in
//! `__hyp_guest_exit`, which saves the guest, restores hyp and returns from
//! `enter_guest`, with the trap CSRs copied into `ctx.trap`.
//!
//! `stvec` is `__hyp_guest_exit` at all times (set at boot, `entry`), and `sscratch`
//! is 0 while hyp runs: a trap that finds `sscratch` = 0 was taken in HS-mode itself
//! and goes on to `__hyp_host_trap` with every register as it was. So neither CSR is
//! switched on the way in or out (six instructions per exit fewer). The VS CSRs, `hvip`, `vstimecmp` and the FP registers stay in the
//! hardware across `enter_guest`; the vCPU code above `arch` saves and restores them
//! when it puts or loads a vCPU on a hart.
//!
//! A trap taken in HS-mode itself lands in `__hyp_host_trap`, which calls
//! `fatal_host_trap(scause, sepc, stval)` (declared in `arch`, provided by the binary's
//! top).
use core::mem::offset_of;

/// The guest's general registers and the HS CSRs that describe where it returns.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestRegs {
    /// x0..x31 (x0 is never loaded).
    pub x: [usize; 32],
    /// HS `sstatus` while the guest runs (SPP = guest privilege, FS).
    pub sstatus: usize,
    /// `hstatus` while the guest runs (SPV = 1, SPVP, VTW, VGEIN).
    pub hstatus: usize,
    /// Guest pc.
    pub sepc: usize,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct HostRegs {
    ra: usize,
    sp: usize,
    gp: usize,
    tp: usize,
    s: [usize; 12],
    sstatus: usize,
    hstatus: usize,
}

/// Why the guest stopped running.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapInfo {
    /// `scause`.
    pub scause: usize,
    /// `stval`.
    pub stval: usize,
    /// `htval` (guest physical address >> 2 for guest page faults).
    pub htval: usize,
    /// `htinst` (transformed trapping instruction, or 0).
    pub htinst: usize,
}

/// Everything the world switch touches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Context {
    /// Guest state.
    pub guest: GuestRegs,
    host: HostRegs,
    /// Filled at each exit.
    pub trap: TrapInfo,
}

const G_X: usize = offset_of!(Context, guest) + offset_of!(GuestRegs, x);
const G_SSTATUS: usize = offset_of!(Context, guest) + offset_of!(GuestRegs, sstatus);
const G_HSTATUS: usize = offset_of!(Context, guest) + offset_of!(GuestRegs, hstatus);
const G_SEPC: usize = offset_of!(Context, guest) + offset_of!(GuestRegs, sepc);
const H_RA: usize = offset_of!(Context, host) + offset_of!(HostRegs, ra);
const H_SP: usize = offset_of!(Context, host) + offset_of!(HostRegs, sp);
const H_GP: usize = offset_of!(Context, host) + offset_of!(HostRegs, gp);
const H_TP: usize = offset_of!(Context, host) + offset_of!(HostRegs, tp);
const H_S: usize = offset_of!(Context, host) + offset_of!(HostRegs, s);
const H_SSTATUS: usize = offset_of!(Context, host) + offset_of!(HostRegs, sstatus);
const H_HSTATUS: usize = offset_of!(Context, host) + offset_of!(HostRegs, hstatus);
const T_SCAUSE: usize = offset_of!(Context, trap) + offset_of!(TrapInfo, scause);
const T_STVAL: usize = offset_of!(Context, trap) + offset_of!(TrapInfo, stval);
const T_HTVAL: usize = offset_of!(Context, trap) + offset_of!(TrapInfo, htval);
const T_HTINST: usize = offset_of!(Context, trap) + offset_of!(TrapInfo, htinst);

core::arch::global_asm!(
    r#"
    .text
    .globl __hyp_enter_guest
    .align 2
__hyp_enter_guest:
    sd      ra, {h_ra}(a0)
    sd      sp, {h_sp}(a0)
    sd      gp, {h_gp}(a0)
    sd      tp, {h_tp}(a0)
    sd      s0, {h_s}+0*8(a0)
    sd      s1, {h_s}+1*8(a0)
    sd      s2, {h_s}+2*8(a0)
    sd      s3, {h_s}+3*8(a0)
    sd      s4, {h_s}+4*8(a0)
    sd      s5, {h_s}+5*8(a0)
    sd      s6, {h_s}+6*8(a0)
    sd      s7, {h_s}+7*8(a0)
    sd      s8, {h_s}+8*8(a0)
    sd      s9, {h_s}+9*8(a0)
    sd      s10, {h_s}+10*8(a0)
    sd      s11, {h_s}+11*8(a0)

    ld      t0, {g_sstatus}(a0)
    csrrw   t0, sstatus, t0
    sd      t0, {h_sstatus}(a0)
    ld      t0, {g_hstatus}(a0)
    csrrw   t0, 0x600, t0
    sd      t0, {h_hstatus}(a0)
    csrw    sscratch, a0
    ld      t0, {g_sepc}(a0)
    csrw    sepc, t0

    ld      x1, {g_x}+1*8(a0)
    ld      x2, {g_x}+2*8(a0)
    ld      x3, {g_x}+3*8(a0)
    ld      x4, {g_x}+4*8(a0)
    ld      x5, {g_x}+5*8(a0)
    ld      x6, {g_x}+6*8(a0)
    ld      x7, {g_x}+7*8(a0)
    ld      x8, {g_x}+8*8(a0)
    ld      x9, {g_x}+9*8(a0)
    ld      x11, {g_x}+11*8(a0)
    ld      x12, {g_x}+12*8(a0)
    ld      x13, {g_x}+13*8(a0)
    ld      x14, {g_x}+14*8(a0)
    ld      x15, {g_x}+15*8(a0)
    ld      x16, {g_x}+16*8(a0)
    ld      x17, {g_x}+17*8(a0)
    ld      x18, {g_x}+18*8(a0)
    ld      x19, {g_x}+19*8(a0)
    ld      x20, {g_x}+20*8(a0)
    ld      x21, {g_x}+21*8(a0)
    ld      x22, {g_x}+22*8(a0)
    ld      x23, {g_x}+23*8(a0)
    ld      x24, {g_x}+24*8(a0)
    ld      x25, {g_x}+25*8(a0)
    ld      x26, {g_x}+26*8(a0)
    ld      x27, {g_x}+27*8(a0)
    ld      x28, {g_x}+28*8(a0)
    ld      x29, {g_x}+29*8(a0)
    ld      x30, {g_x}+30*8(a0)
    ld      x31, {g_x}+31*8(a0)
    ld      x10, {g_x}+10*8(a0)
    sret

    .globl __hyp_guest_exit
    .align 2
__hyp_guest_exit:
    csrrw   a0, sscratch, a0
    beqz    a0, 3f
    sd      x1, {g_x}+1*8(a0)
    sd      x2, {g_x}+2*8(a0)
    sd      x3, {g_x}+3*8(a0)
    sd      x4, {g_x}+4*8(a0)
    sd      x5, {g_x}+5*8(a0)
    sd      x6, {g_x}+6*8(a0)
    sd      x7, {g_x}+7*8(a0)
    sd      x8, {g_x}+8*8(a0)
    sd      x9, {g_x}+9*8(a0)
    sd      x11, {g_x}+11*8(a0)
    sd      x12, {g_x}+12*8(a0)
    sd      x13, {g_x}+13*8(a0)
    sd      x14, {g_x}+14*8(a0)
    sd      x15, {g_x}+15*8(a0)
    sd      x16, {g_x}+16*8(a0)
    sd      x17, {g_x}+17*8(a0)
    sd      x18, {g_x}+18*8(a0)
    sd      x19, {g_x}+19*8(a0)
    sd      x20, {g_x}+20*8(a0)
    sd      x21, {g_x}+21*8(a0)
    sd      x22, {g_x}+22*8(a0)
    sd      x23, {g_x}+23*8(a0)
    sd      x24, {g_x}+24*8(a0)
    sd      x25, {g_x}+25*8(a0)
    sd      x26, {g_x}+26*8(a0)
    sd      x27, {g_x}+27*8(a0)
    sd      x28, {g_x}+28*8(a0)
    sd      x29, {g_x}+29*8(a0)
    sd      x30, {g_x}+30*8(a0)
    sd      x31, {g_x}+31*8(a0)
    csrrw   t0, sscratch, zero
    sd      t0, {g_x}+10*8(a0)
    csrr    t0, sepc
    sd      t0, {g_sepc}(a0)
    ld      t0, {h_hstatus}(a0)
    csrrw   t0, 0x600, t0
    sd      t0, {g_hstatus}(a0)
    ld      t0, {h_sstatus}(a0)
    csrrw   t0, sstatus, t0
    sd      t0, {g_sstatus}(a0)
    csrr    t0, scause
    sd      t0, {t_scause}(a0)
    csrr    t0, stval
    sd      t0, {t_stval}(a0)
    csrr    t0, 0x643
    sd      t0, {t_htval}(a0)
    csrr    t0, 0x64a
    sd      t0, {t_htinst}(a0)

    ld      ra, {h_ra}(a0)
    ld      sp, {h_sp}(a0)
    ld      gp, {h_gp}(a0)
    ld      tp, {h_tp}(a0)
    ld      s0, {h_s}+0*8(a0)
    ld      s1, {h_s}+1*8(a0)
    ld      s2, {h_s}+2*8(a0)
    ld      s3, {h_s}+3*8(a0)
    ld      s4, {h_s}+4*8(a0)
    ld      s5, {h_s}+5*8(a0)
    ld      s6, {h_s}+6*8(a0)
    ld      s7, {h_s}+7*8(a0)
    ld      s8, {h_s}+8*8(a0)
    ld      s9, {h_s}+9*8(a0)
    ld      s10, {h_s}+10*8(a0)
    ld      s11, {h_s}+11*8(a0)
    ret

    // A trap taken in HS-mode (`sscratch` was 0): `a0` back, `sscratch` 0 again.
3:  csrrw   a0, sscratch, a0
    j       __hyp_host_trap

    .globl __hyp_host_trap
    .align 2
__hyp_host_trap:
    csrr    a0, scause
    csrr    a1, sepc
    csrr    a2, stval
    call    {fatal_host_trap}
1:  wfi
    j       1b
"#,
    g_x = const G_X,
    g_sstatus = const G_SSTATUS,
    g_hstatus = const G_HSTATUS,
    g_sepc = const G_SEPC,
    h_ra = const H_RA,
    h_sp = const H_SP,
    h_gp = const H_GP,
    h_tp = const H_TP,
    h_s = const H_S,
    h_sstatus = const H_SSTATUS,
    h_hstatus = const H_HSTATUS,
    t_scause = const T_SCAUSE,
    t_stval = const T_STVAL,
    t_htval = const T_HTVAL,
    t_htinst = const T_HTINST,
    fatal_host_trap = sym crate::arch::fatal_host_trap,
);

extern "C" {
    fn __hyp_enter_guest(ctx: *mut Context);
}

/// Run the guest described by `ctx` until its next trap into HS-mode.
///
/// The VS CSRs, `hgatp`, `hvip` and the FP state of the guest must already be
/// loaded on this hart (by the caller, see the module docs); `ctx.guest.hstatus` must
/// have SPV = 1.
pub fn enter_guest(ctx: &mut Context) {
    debug_assert!(ctx.guest.hstatus & super::csr::hstatus_bits::SPV != 0);
    // SAFETY: `ctx` is a valid, exclusively borrowed Context for the whole call. The
    // assembly saves every callee-saved register, `ra`, `sp`, `gp` and `tp` and
    // restores them before returning, and restores `sstatus` and `hstatus`, and
    // `sscratch` to 0 (`stvec` is the exit vector throughout: module docs); it clobbers the caller-saved registers, which the `extern "C"` call
    // already assumes. With SPV = 1 the `sret` enters V = 1, so the guest cannot
    // touch HS state except through traps that come back to `__hyp_guest_exit`.
    unsafe { __hyp_enter_guest(ctx) }
}

/// Read a 16-bit instruction parcel from guest virtual address `gva` with the
/// guest's translation (HLVX.HU), as the guest at privilege `guest_hstatus.SPVP`
/// would fetch it. Returns `None` if the access faults.
pub fn guest_fetch_u16(gva: usize, guest_hstatus: usize) -> Option<u16> {
    let val: usize;
    let ok: usize;
    // SAFETY: HLVX.HU only reads through the guest's two-stage translation; a fault is
    // caught by the temporary `stvec` (label 3), which restores state and reports
    // failure. `stvec`, `hstatus` and `sstatus.SPP/SPIE` (changed by a trap) are
    // restored before leaving; `sepc`/`scause`/`stval` are scratch here because the
    // trapped guest's values were saved by the world switch already.
    unsafe {
        core::arch::asm!(
            "csrr   {old_stvec}, stvec",
            "la     {tmp}, 3f",
            "csrw   stvec, {tmp}",
            "csrrw  {old_hs}, 0x600, {hs}",
            "csrr   {old_ss}, sstatus",
            "li     {ok}, 0",
            ".insn r 0x73, 0x4, 0x32, {val}, {addr}, x3",
            "li     {ok}, 1",
            "j      4f",
            ".align 2",
            "3:",
            "li     {val}, 0",
            "4:",
            "csrw   sstatus, {old_ss}",
            "csrw   0x600, {old_hs}",
            "csrw   stvec, {old_stvec}",
            addr = in(reg) gva,
            hs = in(reg) guest_hstatus,
            val = out(reg) val,
            ok = out(reg) ok,
            old_stvec = out(reg) _,
            old_hs = out(reg) _,
            old_ss = out(reg) _,
            tmp = out(reg) _,
            options(nostack)
        );
    }
    (ok != 0).then_some(val as u16)
}

/// Saved FP state of a vCPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FpState {
    f: [u64; 32],
    fcsr: usize,
}

impl FpState {
    /// Save this hart's FP registers (the guest's, since hyp uses no FP).
    pub fn save(&mut self) {
        let p = self as *mut FpState as usize;
        // SAFETY: `p` points to this FpState (33 u64 slots, exclusively borrowed);
        // `sstatus.FS` is non-Off while hyp runs a vCPU (set in `vcpu` before entry).
        unsafe {
            core::arch::asm!(
                "fsd f0, 0*8({p})", "fsd f1, 1*8({p})", "fsd f2, 2*8({p})", "fsd f3, 3*8({p})",
                "fsd f4, 4*8({p})", "fsd f5, 5*8({p})", "fsd f6, 6*8({p})", "fsd f7, 7*8({p})",
                "fsd f8, 8*8({p})", "fsd f9, 9*8({p})", "fsd f10, 10*8({p})", "fsd f11, 11*8({p})",
                "fsd f12, 12*8({p})", "fsd f13, 13*8({p})", "fsd f14, 14*8({p})", "fsd f15, 15*8({p})",
                "fsd f16, 16*8({p})", "fsd f17, 17*8({p})", "fsd f18, 18*8({p})", "fsd f19, 19*8({p})",
                "fsd f20, 20*8({p})", "fsd f21, 21*8({p})", "fsd f22, 22*8({p})", "fsd f23, 23*8({p})",
                "fsd f24, 24*8({p})", "fsd f25, 25*8({p})", "fsd f26, 26*8({p})", "fsd f27, 27*8({p})",
                "fsd f28, 28*8({p})", "fsd f29, 29*8({p})", "fsd f30, 30*8({p})", "fsd f31, 31*8({p})",
                "frcsr {t}", "sd {t}, 32*8({p})",
                p = in(reg) p, t = out(reg) _, options(nostack)
            );
        }
    }

    /// Load this state into the hart's FP registers.
    pub fn restore(&self) {
        let p = self as *const FpState as usize;
        // SAFETY: `p` points to this FpState; `sstatus.FS` is non-Off (see `save`).
        unsafe {
            core::arch::asm!(
                "fld f0, 0*8({p})", "fld f1, 1*8({p})", "fld f2, 2*8({p})", "fld f3, 3*8({p})",
                "fld f4, 4*8({p})", "fld f5, 5*8({p})", "fld f6, 6*8({p})", "fld f7, 7*8({p})",
                "fld f8, 8*8({p})", "fld f9, 9*8({p})", "fld f10, 10*8({p})", "fld f11, 11*8({p})",
                "fld f12, 12*8({p})", "fld f13, 13*8({p})", "fld f14, 14*8({p})", "fld f15, 15*8({p})",
                "fld f16, 16*8({p})", "fld f17, 17*8({p})", "fld f18, 18*8({p})", "fld f19, 19*8({p})",
                "fld f20, 20*8({p})", "fld f21, 21*8({p})", "fld f22, 22*8({p})", "fld f23, 23*8({p})",
                "fld f24, 24*8({p})", "fld f25, 25*8({p})", "fld f26, 26*8({p})", "fld f27, 27*8({p})",
                "fld f28, 28*8({p})", "fld f29, 29*8({p})", "fld f30, 30*8({p})", "fld f31, 31*8({p})",
                "ld {t}, 32*8({p})", "fscsr {t}",
                p = in(reg) p, t = out(reg) _, options(nostack)
            );
        }
    }
}
