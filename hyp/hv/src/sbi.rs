//! The SBI that guests see (SBI v2.0): BASE, TIME, sPI, RFNC, HSM, SRST, DBCN, SUSP,
//! FWFT (SBI v3.0; no feature supported), the legacy console, and hyp's own
//! experimental extension (accounting for tests). Everything else returns
//! SBI_ERR_NOT_SUPPORTED. docs/hyp.md has the table of functions and spec sections.
//!
//! Every argument comes from an untrusted guest: each is checked and a bad one is an
//! SBI error, never a panic. The standard extensions are decoded by
//! [`virq_riscv::sbi::decode`] (host-tested and fuzzed): extension and function ids,
//! hart masks and ids, enumerated types, address arithmetic, and the SBI error for
//! each malformed call. This file matches on the decoded [`Call`] and performs it,
//! checking only what needs hyp's state (is an address in guest RAM, which vCPUs are
//! stopped). Two things the decoder leaves to its caller stay here: the legacy
//! extensions (EIDs `0x00`–`0x0F`, they return only `a0`) and hyp's experimental
//! extension [`EID_HYP`].
use core::sync::atomic::Ordering;
use sbi_spec::{hsm, legacy, rfnc, spi};
use virq_riscv::sbi::{
    self as vsbi, Call, ConsoleBuf, Fence, HartSet, ResetReason, ResetType, SbiError, SbiResult,
    Suspend, VcpuIndex,
};

use crate::arch::csr::sstatus_bits;
use crate::arch::{self, csr};
use crate::counts::ExitCounts;
use crate::guest::Guest;
use crate::ids::{GuestVcpuId, Virq, MAX_VCPUS_PER_GUEST};
use crate::vcpu::{
    Next, Vcpu, VcpuInner, HSM_STARTED, HSM_START_PENDING, HSM_STOPPED, HSM_SUSPENDED,
};
use crate::world::world;

// Every guest's vCPU count fits the decoder's hart masks.
const _: () = assert!(MAX_VCPUS_PER_GUEST <= vsbi::MAX_VCPUS);

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

/// SBI specification version reported by BASE: 2.0.
const SPEC_VERSION: usize = 0x0200_0000;
/// Implementation id reported by BASE (not a registered one: "virq" in ASCII).
const IMPL_ID: usize = 0x7669_7271;

/// Extensions hyp offers beyond the ones virq-riscv's decoder lists
/// (`virq_riscv::sbi::EXTENSIONS`: BASE, TIME, IPI, RFNC, HSM, SRST, DBCN, SUSP, FWFT).
const HYP_EXTENSIONS: &[usize] = &[EID_HYP];

/// Handle a VS-mode `ecall`. Kept small (the lean exit path of every SBI call): the
/// decoder and the answer to a call that needs no state of hyp's (BASE) are here,
/// everything else is behind calls.
pub fn handle(vcpu: &Vcpu, inner: &mut VcpuInner) -> Next {
    let (eid, fid) = (inner.ctx.guest.x[17], inner.ctx.guest.x[16]);
    inner.ctx.guest.sepc = inner.ctx.guest.sepc.wrapping_add(4);
    // `send_ipi` before the argument array and the decoder (its own path, below).
    if eid == spi::EID_SPI && fid == spi::SEND_IPI {
        return send_ipi(vcpu, inner);
    }
    let x = &inner.ctx.guest.x;
    let a = [x[10], x[11], x[12], x[13], x[14], x[15]];
    // Legacy extensions return only a0; the experimental one is hyp's own.
    if eid <= legacy::LEGACY_SHUTDOWN || eid == EID_HYP {
        return nonstandard(vcpu, inner, eid, fid, a);
    }
    // The ACCT count of every RFNC call, malformed ones included (`send_ipi`'s is in
    // [`send_ipi`]).
    if eid == rfnc::EID_RFNC {
        ExitCounts::bump(&vcpu.acct.sbi_rfence);
    }
    let ret = match vsbi::decode(eid, fid, a, vcpu.guest_harts) {
        Ok(Call::GetSpecVersion) => Ok(SPEC_VERSION),
        Ok(Call::GetImplId) => Ok(IMPL_ID),
        Ok(Call::GetImplVersion) => Ok(1),
        Ok(Call::GetMvendorid | Call::GetMarchid | Call::GetMimpid) => Ok(0),
        Ok(Call::SendIpi { harts }) => {
            send_ipis(vcpu, harts);
            Ok(0)
        }
        Ok(call) => return perform(vcpu, inner, call),
        Err(e) => Err(e),
    };
    set_ret(inner, ret);
    Next::Resume
}

/// The legacy extensions (they return only `a0`) and [`EID_HYP`].
#[inline(never)]
fn nonstandard(vcpu: &Vcpu, inner: &mut VcpuInner, eid: usize, fid: usize, a: [usize; 6]) -> Next {
    if eid == EID_HYP {
        set_ret(inner, hyp_call(vcpu, fid, a));
        return Next::Resume;
    }
    let r = legacy_call(vcpu, inner, eid, a);
    inner.ctx.guest.x[10] = r as usize;
    if vcpu_left(vcpu) {
        Next::Leave
    } else {
        Next::Resume
    }
}

/// Carry out a decoded call: its arguments are legal; what is left to check needs
/// hyp's state.
#[inline(never)]
fn perform(vcpu: &Vcpu, inner: &mut VcpuInner, call: Call) -> Next {
    let g = &world().guests[vcpu.guest];
    let ret = match call {
        Call::GetSpecVersion => Ok(SPEC_VERSION),
        Call::GetImplId => Ok(IMPL_ID),
        Call::GetImplVersion => Ok(1),
        Call::ProbeExtension { eid } => Ok((vsbi::EXTENSIONS.contains(&eid)
            || HYP_EXTENSIONS.contains(&eid)
            || eid == legacy::LEGACY_CONSOLE_PUTCHAR)
            as usize),
        Call::GetMvendorid | Call::GetMarchid | Call::GetMimpid => Ok(0),
        Call::SetTimer { stime_value } => {
            set_timer(vcpu, inner, stime_value);
            Ok(0)
        }
        Call::SendIpi { harts } => {
            send_ipis(vcpu, harts);
            Ok(0)
        }
        Call::RemoteFence { harts, fence } => remote_fence(vcpu, harts, fence),
        Call::HartStart {
            hart,
            start_addr,
            opaque,
        } => hart_start(vcpu, g, hart, start_addr, opaque),
        Call::HartStop => {
            vcpu.hsm.store(HSM_STOPPED, Ordering::Release);
            return Next::Leave;
        }
        Call::HartGetStatus { hart } => match target(g, hart) {
            None => Err(SbiError::InvalidParam),
            Some(t) => Ok(match t.hsm.load(Ordering::Acquire) {
                HSM_STARTED => hsm::hart_state::STARTED,
                HSM_START_PENDING => hsm::hart_state::START_PENDING,
                HSM_SUSPENDED => hsm::hart_state::SUSPENDED,
                _ => hsm::hart_state::STOPPED,
            }),
        },
        Call::HartSuspend(Suspend::Retentive) => return suspend(vcpu, inner, None),
        Call::HartSuspend(Suspend::NonRetentive {
            resume_addr,
            opaque,
        }) => {
            if !valid_entry(g, resume_addr) {
                Err(SbiError::InvalidAddress)
            } else {
                return suspend(vcpu, inner, Some((resume_addr, opaque)));
            }
        }
        Call::SystemReset { reset_type, reason } => match reset_type {
            ResetType::Shutdown => {
                crate::shutdown::shutdown_guest(vcpu.guest, exit_status(reason));
                return Next::Leave;
            }
            ResetType::ColdReboot | ResetType::WarmReboot => Err(SbiError::NotSupported),
        },
        Call::ConsoleWrite(buf) => console_write(g, buf),
        Call::ConsoleRead(buf) => console_read(g, buf),
        Call::ConsoleWriteByte { byte } => {
            g.console_write(&[byte]);
            Ok(0)
        }
        Call::SystemSuspend {
            resume_addr,
            opaque,
        } => {
            // SBI v2.0 §13.1: every other hart of the (virtual) system must be STOPPED.
            if g.vcpu_slice()
                .iter()
                .any(|v| v.index != vcpu.index && v.hsm.load(Ordering::Acquire) != HSM_STOPPED)
            {
                Err(SbiError::Denied)
            } else if !valid_entry(g, resume_addr) {
                Err(SbiError::InvalidAddress)
            } else {
                return suspend(vcpu, inner, Some((resume_addr, opaque)));
            }
        }
        // FWFT (SBI v3.0 §18): hyp implements none of the defined features (e.g.
        // MISALIGNED_EXC_DELEG: misaligned accesses of a guest are emulated below it,
        // by the M-mode firmware). The decoder answers reserved and platform-specific
        // features (DENIED) and bad flags (INVALID_PARAM).
        Call::FwftSet { .. } | Call::FwftGet { .. } => Err(SbiError::NotSupported),
    };
    set_ret(inner, ret);
    Next::Resume
}

fn set_ret(inner: &mut VcpuInner, r: SbiResult) {
    let (a0, a1) = vsbi::ret(r);
    inner.ctx.guest.x[10] = a0;
    inner.ctx.guest.x[11] = a1;
}

fn vcpu_left(vcpu: &Vcpu) -> bool {
    !world().guests[vcpu.guest].is_alive()
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

/// The vCPU a guest calls `hart` (the decoder checked it is below the guest's count).
fn target(g: &Guest, hart: VcpuIndex) -> Option<&'static Vcpu> {
    GuestVcpuId::from_hartid(hart.get()).and_then(|id| g.vcpu(id))
}

/// sPI `send_ipi` (SBI v2.0 §7.1), answered without the decoder's argument array and
/// `Call`: the hart mask goes through the same checked [`vsbi::GuestHarts::hart_set`]
/// that [`vsbi::decode`] uses for `Call::SendIpi`, so the answer is the decoder's (the
/// sPI test of `virq_riscv::sbi` pins it there). Counted in ACCT's `sbi_ipi_calls`,
/// malformed calls included.
#[inline(never)]
fn send_ipi(vcpu: &Vcpu, inner: &mut VcpuInner) -> Next {
    ExitCounts::bump(&vcpu.acct.sbi_ipi);
    let x = &inner.ctx.guest.x;
    let ret = vcpu.guest_harts.hart_set(x[10], x[11]).map(|harts| {
        send_ipis(vcpu, harts);
        0
    });
    set_ret(inner, ret);
    Next::Resume
}

#[inline(never)]
fn send_ipis(vcpu: &Vcpu, set: HartSet) {
    for (i, t) in vcpu.guest_vcpus().iter().enumerate() {
        if set.contains(i) {
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

/// RFNC (SBI v2.0 §8). Conservative: whatever the fence and range, flush every hart
/// that is home to a named vCPU, completely.
fn remote_fence(vcpu: &Vcpu, set: HartSet, _fence: Fence) -> SbiResult {
    let g = &world().guests[vcpu.guest];
    let mut harts = 0u64;
    for (i, t) in g.vcpu_slice().iter().enumerate() {
        if set.contains(i) {
            count_target(vcpu, t);
            harts |= 1 << t.home();
        }
    }
    crate::hart::remote_fence(harts);
    Ok(0)
}

/// Is `addr` a place a vCPU may start or resume at (HSM `hart_start`, non-retentive
/// `hart_suspend`, SUSP)? Guest RAM, instruction-aligned (IALIGN 16 with C).
fn valid_entry(g: &Guest, addr: usize) -> bool {
    addr & 1 == 0 && g.ram_offset(addr as u64, 2).is_some()
}

/// HSM `hart_start` (SBI v2.0 §9.1): INVALID_ADDRESS for a bad entry, ALREADY_AVAILABLE
/// unless the target is STOPPED.
fn hart_start(vcpu: &Vcpu, g: &Guest, hart: VcpuIndex, addr: usize, opaque: usize) -> SbiResult {
    let Some(t) = target(g, hart) else {
        return Err(SbiError::InvalidParam);
    };
    if !valid_entry(g, addr) {
        return Err(SbiError::InvalidAddress);
    }
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
        *start = (addr, opaque);
        drop(start);
        t.kick();
        Ok(0)
    } else {
        // Started, starting or suspended: only a STOPPED hart starts.
        Err(SbiError::AlreadyAvailable)
    }
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
        None => set_ret(inner, Ok(0)),
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

/// Map an SRST reason to the exit status: 0 for "no reason", 1 for "system failure"
/// (and SBI-implementation reasons), `n` for the platform-specific reason
/// `0xF000_0000 + n` (how the test guest reports its failure count).
pub fn exit_status(reason: ResetReason) -> u32 {
    match reason {
        ResetReason::NoReason => 0,
        ResetReason::SystemFailure | ResetReason::SbiImplementation(_) => 1,
        ResetReason::Platform(r) => (r - 0xF000_0000).min(0xff),
    }
}

/// DBCN `console_write` (SBI v2.0 §12.1): at most 256 bytes a call (the count
/// written is returned). A buffer not wholly in guest RAM: INVALID_PARAM.
fn console_write(g: &Guest, buf: ConsoleBuf) -> SbiResult {
    let off = g
        .ram_offset(buf.addr, buf.len as u64)
        .ok_or(SbiError::InvalidParam)?;
    let mut bytes = [0u8; 256];
    let n = buf.len.min(bytes.len());
    if !g.ram.read(off, &mut bytes[..n]) {
        return Err(SbiError::InvalidParam);
    }
    g.console_write(&bytes[..n]);
    Ok(n)
}

/// DBCN `console_read` (SBI v2.0 §12.2): only the guest that owns the UART reads
/// input; others read 0 bytes.
fn console_read(g: &Guest, buf: ConsoleBuf) -> SbiResult {
    let off = g
        .ram_offset(buf.addr, buf.len as u64)
        .ok_or(SbiError::InvalidParam)?;
    if !g.owns_console() {
        return Ok(0);
    }
    let mut bytes = [0u8; 256];
    let want = buf.len.min(bytes.len());
    let n = arch::sbi::console_read(&mut bytes[..want]);
    if !g.ram.write(off, &bytes[..n]) {
        return Err(SbiError::InvalidParam);
    }
    Ok(n)
}

/// The legacy extensions (SBI v2.0 §5; not decoded by virq-riscv): `set_timer`,
/// `console_putchar`, `console_getchar`, `shutdown`; the IPI and fence ones (3–7) are
/// NOT_SUPPORTED. They return only `a0`.
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
        _ => SbiError::NotSupported.code(),
    }
}

/// hyp's experimental extension [`EID_HYP`] (not decoded by virq-riscv).
fn hyp_call(vcpu: &Vcpu, fid: usize, a: [usize; 6]) -> SbiResult {
    let w = world();
    let g = &w.guests[vcpu.guest];
    if fid == HYP_FID_EOI_MODE {
        return Ok(g.immediate_eoi as usize);
    }
    let Some(pirq) = g.pirq_of(Virq(a[0] as u32)) else {
        return Err(SbiError::InvalidParam);
    };
    let Some(c) = w.pirqs.get(pirq.index()) else {
        return Err(SbiError::InvalidParam);
    };
    match fid {
        HYP_FID_CLAIMS => Ok(c.claims.load(Ordering::Relaxed) as usize),
        HYP_FID_COMPLETES => Ok(c.completes.load(Ordering::Relaxed) as usize),
        HYP_FID_STORM_MASKS => Ok(c.storm_masks.load(Ordering::Relaxed) as usize),
        _ => Err(SbiError::NotSupported),
    }
}
