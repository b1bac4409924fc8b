//! The SBI that guests see (SBI v2.0): BASE, TIME, sPI, RFNC, HSM, SRST, DBCN, SUSP,
//! FWFT (SBI v3.0; no feature supported), the legacy console, and hyp's own
//! experimental extension (accounting for tests). Everything else returns
//! SBI_ERR_NOT_SUPPORTED. docs/hyp.md has the table of functions and spec sections.
//!
//! Every argument comes from an untrusted guest: each is checked and a bad one is an
//! SBI error, never a panic.
use core::sync::atomic::Ordering;
use sbi_spec::{base, dbcn, fwft, hsm, legacy, rfnc, spi, srst, susp, time};

use crate::arch::csr::sstatus_bits;
use crate::arch::{self, csr};
use crate::counts::ExitCounts;
use crate::guest::Guest;
use crate::ids::GuestVcpuId;
use crate::vcpu::{
    Next, Vcpu, VcpuInner, HSM_STARTED, HSM_START_PENDING, HSM_STOPPED, HSM_SUSPENDED,
};
use crate::world::world;

/// SBI error codes (SBI v3.0 table "Standard SBI Errors", from `sbi-spec`).
pub mod err {
    use sbi_spec::binary as b;
    /// Not supported.
    pub const NOT_SUPPORTED: isize = b::RET_ERR_NOT_SUPPORTED as isize;
    /// Invalid parameter.
    pub const INVALID_PARAM: isize = b::RET_ERR_INVALID_PARAM as isize;
    /// Denied.
    pub const DENIED: isize = b::RET_ERR_DENIED as isize;
    /// Invalid address.
    pub const INVALID_ADDRESS: isize = b::RET_ERR_INVALID_ADDRESS as isize;
    /// Already available.
    pub const ALREADY_AVAILABLE: isize = b::RET_ERR_ALREADY_AVAILABLE as isize;
}

/// SUSP sleep type `SUSPEND_TO_RAM` (SBI v2.0 §13, table "SUSP System Sleep Types").
const SUSPEND_TO_RAM: usize = 0;

/// hyp's experimental extension ("VIQ" in the experimental EID space).
pub const EID_HYP: usize = 0x0856_4951;
/// FID: physical claims of the passthrough source behind virtual source `a0`.
pub const HYP_FID_CLAIMS: usize = 0;
/// FID: guest completions of that source.
pub const HYP_FID_COMPLETES: usize = 1;
/// FID: 1 if this guest's level passthrough uses immediate EOI, else 0.
pub const HYP_FID_EOI_MODE: usize = 2;
/// FID: storm-guard masks of that source.
pub const HYP_FID_STORM_MASKS: usize = 3;

/// Implementation id reported by BASE (not a registered one: "virq" in ASCII).
const IMPL_ID: usize = 0x7669_7271;

/// Extensions hyp offers beyond the standard ones virq-riscv's decoder lists
/// (`virq_riscv::sbi::EXTENSIONS`: BASE, TIME, IPI, RFNC, HSM, SRST, DBCN).
const HYP_EXTENSIONS: &[usize] = &[susp::EID_SUSP, fwft::EID_FWFT, EID_HYP];

type Ret = (isize, usize);

/// Handle a VS-mode `ecall`.
pub fn handle(vcpu: &Vcpu, inner: &mut VcpuInner) -> Next {
    let x = &inner.ctx.guest.x;
    let (eid, fid) = (x[17], x[16]);
    let a = [x[10], x[11], x[12], x[13], x[14], x[15]];
    inner.ctx.guest.sepc = inner.ctx.guest.sepc.wrapping_add(4);
    // Legacy extensions return only a0.
    if eid <= legacy::LEGACY_SHUTDOWN {
        let r = legacy_call(vcpu, inner, eid, a);
        inner.ctx.guest.x[10] = r as usize;
        return if vcpu_left(vcpu) {
            Next::Leave
        } else {
            Next::Resume
        };
    }
    let (ret, next) = match eid {
        base::EID_BASE => (base_call(fid, a), Next::Resume),
        time::EID_TIME => (time_call(vcpu, inner, fid, a), Next::Resume),
        spi::EID_SPI => (ipi_call(vcpu, fid, a), Next::Resume),
        rfnc::EID_RFNC => (rfence_call(vcpu, fid, a), Next::Resume),
        hsm::EID_HSM => return hsm_call(vcpu, inner, fid, a),
        srst::EID_SRST => return srst_call(vcpu, inner, fid, a),
        dbcn::EID_DBCN => (dbcn_call(vcpu, fid, a), Next::Resume),
        susp::EID_SUSP => return susp_call(vcpu, inner, fid, a),
        fwft::EID_FWFT => (fwft_call(fid, a), Next::Resume),
        EID_HYP => (hyp_call(vcpu, fid, a), Next::Resume),
        _ => ((err::NOT_SUPPORTED, 0), Next::Resume),
    };
    set_ret(inner, ret);
    next
}

fn set_ret(inner: &mut VcpuInner, (e, v): Ret) {
    inner.ctx.guest.x[10] = e as usize;
    inner.ctx.guest.x[11] = v;
}

fn vcpu_left(vcpu: &Vcpu) -> bool {
    !world().guests[vcpu.guest].is_alive()
}

fn base_call(fid: usize, a: [usize; 6]) -> Ret {
    match fid {
        base::GET_SBI_SPEC_VERSION => (0, 0x0200_0000),
        base::GET_SBI_IMPL_ID => (0, IMPL_ID),
        base::GET_SBI_IMPL_VERSION => (0, 1),
        base::PROBE_EXTENSION => (
            0,
            (virq_riscv::sbi::EXTENSIONS.contains(&a[0])
                || HYP_EXTENSIONS.contains(&a[0])
                || a[0] == legacy::LEGACY_CONSOLE_PUTCHAR) as usize,
        ),
        base::GET_MVENDORID | base::GET_MARCHID | base::GET_MIMPID => (0, 0),
        _ => (err::NOT_SUPPORTED, 0),
    }
}

fn set_timer(vcpu: &Vcpu, inner: &mut VcpuInner, when: u64) {
    if world().sstc {
        // The vCPU is loaded: vstimecmp is live; VSTIP follows it in hardware.
        csr::vstimecmp::write(when as usize);
    } else {
        inner.timer_deadline = when;
        vcpu.lower(virq_riscv::hext::IRQ_VS_TIMER);
        if arch::time() >= when {
            vcpu.raise(virq_riscv::hext::IRQ_VS_TIMER);
            inner.timer_deadline = u64::MAX;
        }
    }
}

fn time_call(vcpu: &Vcpu, inner: &mut VcpuInner, fid: usize, a: [usize; 6]) -> Ret {
    match fid {
        time::SET_TIMER => {
            set_timer(vcpu, inner, a[0] as u64);
            (0, 0)
        }
        _ => (err::NOT_SUPPORTED, 0),
    }
}

/// The guest's vCPUs named by `(hart_mask, hart_mask_base)`, as a bitmask of guest
/// hart ids, or INVALID_PARAM if any named hart does not exist. The decoding (SBI v2.0
/// §3.1, huge and overflowing bases included) is virq-riscv's, host-tested and fuzzed.
fn hart_set(vcpu: &Vcpu, mask: usize, base: usize) -> Result<u64, isize> {
    let n = world().guests[vcpu.guest].vcpus;
    let harts = virq_riscv::sbi::GuestHarts::new(n).ok_or(err::INVALID_PARAM)?;
    harts
        .hart_set(mask, base)
        .map(|set| set.bits())
        .map_err(|e| e.a0() as isize)
}

fn ipi_call(vcpu: &Vcpu, fid: usize, a: [usize; 6]) -> Ret {
    if fid != spi::SEND_IPI {
        return (err::NOT_SUPPORTED, 0);
    }
    ExitCounts::bump(&vcpu.acct.sbi_ipi);
    match hart_set(vcpu, a[0], a[1]) {
        Ok(set) => {
            send_ipis(vcpu, set);
            (0, 0)
        }
        Err(e) => (e, 0),
    }
}

fn send_ipis(vcpu: &Vcpu, set: u64) {
    let g = &world().guests[vcpu.guest];
    for (i, t) in g.vcpu_slice().iter().enumerate() {
        if set & (1 << i) != 0 {
            count_target(vcpu, t);
            ExitCounts::bump(&vcpu.acct.sbi_ipi_targets);
            ExitCounts::bump(&t.acct.sbi_ipis_in);
            t.raise(virq_riscv::hext::IRQ_VS_SOFT);
        }
    }
}

/// The isolation tripwire: an SBI request of `from` that acts on `target` is counted
/// in the target's `foreign_in` when the two belong to different guests (the hart
/// masks and ids above make that impossible; the suite's `linux-hostile` cases
/// require the count to stay 0 while a hostile guest tries).
fn count_target(from: &Vcpu, target: &Vcpu) {
    if from.guest != target.guest {
        ExitCounts::bump(&target.acct.foreign_in);
    }
}

fn rfence_call(vcpu: &Vcpu, fid: usize, a: [usize; 6]) -> Ret {
    ExitCounts::bump(&vcpu.acct.sbi_rfence);
    match fid {
        rfnc::REMOTE_FENCE_I | rfnc::REMOTE_SFENCE_VMA | rfnc::REMOTE_SFENCE_VMA_ASID => {}
        _ => return (err::NOT_SUPPORTED, 0),
    }
    let set = match hart_set(vcpu, a[0], a[1]) {
        Ok(s) => s,
        Err(e) => return (e, 0),
    };
    // Conservative: flush every hart that is home to a named vCPU, completely.
    let g = &world().guests[vcpu.guest];
    let mut harts = 0u64;
    for (i, t) in g.vcpu_slice().iter().enumerate() {
        if set & (1 << i) != 0 {
            count_target(vcpu, t);
            harts |= 1 << t.home();
        }
    }
    crate::hart::remote_fence(harts);
    (0, 0)
}

/// Is `addr` a place a vCPU may start or resume at (HSM `hart_start`, non-retentive
/// `hart_suspend`, SUSP)? Guest RAM, instruction-aligned (IALIGN 16 with C).
fn valid_entry(g: &Guest, addr: usize) -> bool {
    addr & 1 == 0 && g.ram_offset(addr as u64, 2).is_some()
}

fn hsm_call(vcpu: &Vcpu, inner: &mut VcpuInner, fid: usize, a: [usize; 6]) -> Next {
    let g = &world().guests[vcpu.guest];
    let target = |hartid: usize| GuestVcpuId::from_hartid(hartid).and_then(|id| g.vcpu(id));
    let ret: Ret = match fid {
        hsm::HART_START => match target(a[0]) {
            None => (err::INVALID_PARAM, 0),
            Some(_) if !valid_entry(g, a[1]) => (err::INVALID_ADDRESS, 0),
            Some(t) => {
                count_target(vcpu, t);
                let mut start = t.start.lock();
                if t.hsm
                    .compare_exchange(
                        HSM_STOPPED,
                        HSM_START_PENDING,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok()
                {
                    *start = (a[1], a[2]);
                    drop(start);
                    t.kick();
                    (0, 0)
                } else {
                    // Started, starting or suspended: only a STOPPED hart starts.
                    (err::ALREADY_AVAILABLE, 0)
                }
            }
        },
        hsm::HART_STOP => {
            vcpu.hsm.store(HSM_STOPPED, Ordering::Release);
            return Next::Leave;
        }
        hsm::HART_GET_STATUS => match target(a[0]) {
            None => (err::INVALID_PARAM, 0),
            Some(t) => (
                0,
                match t.hsm.load(Ordering::Acquire) {
                    HSM_STARTED => hsm::hart_state::STARTED,
                    HSM_START_PENDING => hsm::hart_state::START_PENDING,
                    HSM_SUSPENDED => hsm::hart_state::SUSPENDED,
                    _ => hsm::hart_state::STOPPED,
                },
            ),
        },
        hsm::HART_SUSPEND => {
            // SBI v2.0 §9.4, table "HSM Hart Suspend Types": 0 is the default
            // retentive and 0x8000_0000 the default non-retentive suspend; everything
            // else is reserved (0x1..=0x0FFF_FFFF, 0x8000_0001..=0x8FFF_FFFF, above
            // u32) or platform-specific and not implemented here: INVALID_PARAM.
            let ty = a[0];
            if ty == hsm::suspend_type::RETENTIVE as usize {
                return suspend(vcpu, inner, None);
            }
            if ty != hsm::suspend_type::NON_RETENTIVE as usize {
                (err::INVALID_PARAM, 0)
            } else if !valid_entry(g, a[1]) {
                (err::INVALID_ADDRESS, 0)
            } else {
                return suspend(vcpu, inner, Some((a[1], a[2])));
            }
        }
        _ => (err::NOT_SUPPORTED, 0),
    };
    set_ret(inner, ret);
    Next::Resume
}

/// Suspend the calling vCPU (HSM `hart_suspend`, SUSP `system_suspend`): its HSM state
/// is SUSPENDED until it runs again, and it blocks exactly as a WFI does
/// ([`crate::vcpu::wfi`]: until an interrupt it enabled in `sie` is pending, or its
/// timer). Retentive (`resume = None`): the call then returns SBI_SUCCESS.
/// Non-retentive (`Some((resume_addr, opaque))`): it never returns; the vCPU
/// continues at `resume_addr` in the state of SBI v2.0 §9.4 (as after `hart_start`:
/// `a0` = hart id, `a1` = opaque, `satp` = 0, `sstatus.SIE` = 0, S-mode), also when
/// an enabled interrupt is already pending (suspend and immediate wake-up). The
/// guest's interrupt enables and timer stay as they were: they are what wakes it.
fn suspend(vcpu: &Vcpu, inner: &mut VcpuInner, resume: Option<(usize, usize)>) -> Next {
    match resume {
        None => set_ret(inner, (0, 0)),
        Some((addr, opaque)) => {
            // The vCPU is loaded: its VS CSRs are live in the hart.
            let g = &mut inner.ctx.guest;
            g.x = [0; 32];
            g.x[10] = vcpu.id.hartid();
            g.x[11] = opaque;
            g.sepc = addr;
            // A VS ecall comes from VS-mode: SPP (and hstatus.SPV) already say so.
            g.sstatus |= sstatus_bits::SPP;
            csr::vsatp::write(0);
            csr::vsstatus::clear(sstatus_bits::SIE);
        }
    }
    // Only the home hart moves a started vCPU out of STARTED (hart_start CASes from
    // STOPPED only), and it moves it back when the vCPU runs again (`sched`).
    vcpu.hsm.store(HSM_SUSPENDED, Ordering::Release);
    let next = crate::vcpu::wfi(vcpu, inner);
    if matches!(next, Next::Resume) {
        vcpu.hsm.store(HSM_STARTED, Ordering::Release);
    }
    next
}

/// SUSP (SBI v2.0 §13): `system_suspend(sleep_type, resume_addr, opaque)`. Only
/// SUSPEND_TO_RAM; its entry criterion is that every other vCPU of the guest is
/// STOPPED (else DENIED). The guest then sleeps as a non-retentive suspend of the
/// calling vCPU: its wake-up events are the interrupts that vCPU left enabled (a
/// passthrough device, an IPI cannot come: nobody else runs) and its timer; it
/// resumes at `resume_addr` with `a0` = hart id, `a1` = opaque.
fn susp_call(vcpu: &Vcpu, inner: &mut VcpuInner, fid: usize, a: [usize; 6]) -> Next {
    let g = &world().guests[vcpu.guest];
    let ret = if fid != susp::SUSPEND {
        err::NOT_SUPPORTED
    } else if a[0] != SUSPEND_TO_RAM {
        // Reserved (0x1..=0x7FFF_FFFF, above u32) or platform-specific, none here.
        err::INVALID_PARAM
    } else if g
        .vcpu_slice()
        .iter()
        .any(|v| v.index != vcpu.index && v.hsm.load(Ordering::Acquire) != HSM_STOPPED)
    {
        err::DENIED
    } else if !valid_entry(g, a[1]) {
        err::INVALID_ADDRESS
    } else {
        return suspend(vcpu, inner, Some((a[1], a[2])));
    };
    set_ret(inner, (ret, 0));
    Next::Resume
}

/// FWFT (SBI v3.0 §18): `set(feature, value, flags)`, `get(feature)`. hyp implements
/// none of the features (see docs/hyp.md): the defined ones (0..=5, e.g.
/// MISALIGNED_EXC_DELEG — misaligned accesses of a guest are emulated below it, by the
/// M-mode firmware) return NOT_SUPPORTED, reserved and platform-specific ones DENIED,
/// and a `set` with flags other than LOCK INVALID_PARAM.
fn fwft_call(fid: usize, a: [usize; 6]) -> Ret {
    let feature = a[0];
    let defined = feature <= fwft::feature_type::POINTER_MASKING_PMLEN;
    match fid {
        fwft::SET if a[2] & !fwft::flags::SetFlags::LOCK.bits() != 0 => (err::INVALID_PARAM, 0),
        fwft::SET | fwft::GET if !defined => (err::DENIED, 0),
        _ => (err::NOT_SUPPORTED, 0),
    }
}

/// Map an SRST reason to the exit status: 0 for "no reason", 1 for "system failure",
/// `n` for the vendor-specific reason `0xF000_0000 + n` (how the test guest reports
/// its failure count).
pub fn exit_status(reason: u32) -> u32 {
    match reason {
        srst::RESET_REASON_NO_REASON => 0,
        srst::RESET_REASON_SYSTEM_FAILURE => 1,
        r if r >= 0xF000_0000 => (r - 0xF000_0000).min(0xff),
        _ => 1,
    }
}

fn srst_call(vcpu: &Vcpu, inner: &mut VcpuInner, fid: usize, a: [usize; 6]) -> Next {
    if fid != srst::SYSTEM_RESET {
        set_ret(inner, (err::NOT_SUPPORTED, 0));
        return Next::Resume;
    }
    // Both are uint32 (SBI v2.0 §10.1): a value with bits above 32 is no type or
    // reason (truncating it made `1 << 32` a shutdown).
    let (Ok(ty), Ok(reason)) = (u32::try_from(a[0]), u32::try_from(a[1])) else {
        set_ret(inner, (err::INVALID_PARAM, 0));
        return Next::Resume;
    };
    match ty {
        srst::RESET_TYPE_SHUTDOWN => {}
        srst::RESET_TYPE_COLD_REBOOT | srst::RESET_TYPE_WARM_REBOOT => {
            set_ret(inner, (err::NOT_SUPPORTED, 0));
            return Next::Resume;
        }
        _ => {
            set_ret(inner, (err::INVALID_PARAM, 0));
            return Next::Resume;
        }
    }
    if reason > srst::RESET_REASON_SYSTEM_FAILURE && reason < 0xE000_0000 {
        set_ret(inner, (err::INVALID_PARAM, 0));
        return Next::Resume;
    }
    crate::shutdown::shutdown_guest(vcpu.guest, exit_status(reason));
    Next::Leave
}

fn dbcn_call(vcpu: &Vcpu, fid: usize, a: [usize; 6]) -> Ret {
    let g = &world().guests[vcpu.guest];
    match fid {
        dbcn::CONSOLE_WRITE | dbcn::CONSOLE_READ => {
            let (len, lo, hi) = (a[0], a[1], a[2]);
            if hi != 0 {
                return (err::INVALID_PARAM, 0);
            }
            let Some(off) = g.ram_offset(lo as u64, len as u64) else {
                return (err::INVALID_PARAM, 0);
            };
            let mut buf = [0u8; 256];
            if fid == dbcn::CONSOLE_WRITE {
                let n = len.min(buf.len());
                if !g.ram.read(off, &mut buf[..n]) {
                    return (err::INVALID_PARAM, 0);
                }
                g.console_write(&buf[..n]);
                (0, n)
            } else if !g.owns_console() {
                // The console's input belongs to the guest that owns the UART.
                (0, 0)
            } else {
                let want = len.min(buf.len());
                let n = arch::sbi::console_read(&mut buf[..want]);
                if !g.ram.write(off, &buf[..n]) {
                    return (err::INVALID_PARAM, 0);
                }
                (0, n)
            }
        }
        dbcn::CONSOLE_WRITE_BYTE => {
            g.console_write(&[a[0] as u8]);
            (0, 0)
        }
        _ => (err::NOT_SUPPORTED, 0),
    }
}

fn legacy_call(vcpu: &Vcpu, inner: &mut VcpuInner, eid: usize, a: [usize; 6]) -> isize {
    match eid {
        legacy::LEGACY_SET_TIMER => {
            set_timer(vcpu, inner, a[0] as u64);
            0
        }
        legacy::LEGACY_CONSOLE_PUTCHAR => {
            world().guests[vcpu.guest].console_write(&[a[0] as u8]);
            0
        }
        legacy::LEGACY_CONSOLE_GETCHAR => {
            let mut b = [0u8; 1];
            if world().guests[vcpu.guest].owns_console() && arch::sbi::console_read(&mut b) == 1 {
                b[0] as isize
            } else {
                -1
            }
        }
        legacy::LEGACY_SHUTDOWN => {
            crate::shutdown::shutdown_guest(vcpu.guest, 0);
            0
        }
        _ => err::NOT_SUPPORTED,
    }
}

fn hyp_call(vcpu: &Vcpu, fid: usize, a: [usize; 6]) -> Ret {
    let w = world();
    let g = &w.guests[vcpu.guest];
    if fid == HYP_FID_EOI_MODE {
        return (0, g.immediate_eoi as usize);
    }
    let Some(pirq) = g.pirq_of(a[0] as u32) else {
        return (err::INVALID_PARAM, 0);
    };
    let Some(c) = w.pirqs.get(pirq as usize) else {
        return (err::INVALID_PARAM, 0);
    };
    match fid {
        HYP_FID_CLAIMS => (0, c.claims.load(Ordering::Relaxed) as usize),
        HYP_FID_COMPLETES => (0, c.completes.load(Ordering::Relaxed) as usize),
        HYP_FID_STORM_MASKS => (0, c.storm_masks.load(Ordering::Relaxed) as usize),
        _ => (err::NOT_SUPPORTED, 0),
    }
}
