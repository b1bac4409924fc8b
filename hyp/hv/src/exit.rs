//! Guest exits: what to do after `enter_guest` returns.
use crate::arch::csr::{self, hstatus_bits, sstatus_bits};
use crate::arch::{self, switch::guest_fetch_u16};
use crate::guest::Guest;
use crate::hart::Hart;
use crate::topology::MmioOp;
use crate::vcpu::{wfi, Next, Vcpu, VcpuInner};
use crate::world::world;
use virq_riscv::imsic::CsrOp;
use virq_riscv::insn::{self, Access};

const CAUSE_INT: usize = 1 << 63;
const EXC_INSN_ACCESS: usize = 1;
const EXC_ILLEGAL: usize = 2;
const EXC_LOAD_ACCESS: usize = 5;
const EXC_STORE_ACCESS: usize = 7;
const EXC_VS_ECALL: usize = 10;
const EXC_INSN_GPF: usize = 20;
const EXC_LOAD_GPF: usize = 21;
const EXC_VIRTUAL_INSN: usize = 22;
const EXC_STORE_GPF: usize = 23;

const INSN_WFI: u32 = 0x1050_0073;
/// Zawrs `wrs.nto` / `wrs.sto`: a hint; completing it at once is allowed.
const INSN_WRS_NTO: u32 = 0x00d0_0073;
const INSN_WRS_STO: u32 = 0x01d0_0073;

/// Handle the exit recorded in `inner.ctx.trap` of `vcpu` of `guest`. A dispatch only
/// (each kind of exit is its own function), so that the lean path pays for nothing it
/// does not run.
#[inline(always)]
pub fn handle(hart: &Hart, guest: &Guest, vcpu: &Vcpu, inner: &mut VcpuInner) -> Next {
    let scause = inner.ctx.trap.scause;
    if scause & CAUSE_INT != 0 {
        return host_interrupt(hart, vcpu, inner);
    }
    match scause {
        EXC_VS_ECALL => crate::sbi::handle(vcpu, inner),
        EXC_VIRTUAL_INSN => virtual_insn(vcpu, inner),
        EXC_INSN_GPF | EXC_LOAD_GPF => guest_page_fault(guest, vcpu, inner),
        EXC_STORE_GPF => guest_store_fault(guest, vcpu, inner),
        _ => other_exception(inner, scause),
    }
}

/// A host interrupt while the guest ran.
#[inline(never)]
fn host_interrupt(hart: &Hart, vcpu: &Vcpu, inner: &mut VcpuInner) -> Next {
    crate::irq::handle_host_irqs(hart);
    if !world().sstc && arch::time() >= inner.timer_deadline {
        inner.timer_deadline = u64::MAX;
        vcpu.raise(virq_riscv::hext::IRQ_VS_TIMER);
    }
    Next::Resume
}

/// Not delegated and not ours to emulate: give it to the guest as is.
#[inline(never)]
fn other_exception(inner: &mut VcpuInner, scause: usize) -> Next {
    let tval = inner.ctx.trap.stval;
    inject_exception(inner, scause, tval);
    Next::Resume
}

/// Redirect the guest to its trap handler with exception `cause` (as if it had been
/// delegated): vsepc/vscause/vstval, vsstatus.SPP/SPIE/SIE, then pc = vstvec, VS-mode.
pub fn inject_exception(inner: &mut VcpuInner, cause: usize, tval: usize) {
    let was_vs = inner.ctx.guest.sstatus & sstatus_bits::SPP != 0;
    csr::vsepc::write(inner.ctx.guest.sepc);
    csr::vscause::write(cause);
    csr::vstval::write(tval);
    let mut vss = csr::vsstatus::read();
    let sie = vss & sstatus_bits::SIE != 0;
    vss &= !(sstatus_bits::SPP | sstatus_bits::SPIE | sstatus_bits::SIE);
    if was_vs {
        vss |= sstatus_bits::SPP;
    }
    if sie {
        vss |= sstatus_bits::SPIE;
    }
    csr::vsstatus::write(vss);
    inner.ctx.guest.sepc = csr::vstvec::read() & !3;
    inner.ctx.guest.sstatus |= sstatus_bits::SPP;
    inner.ctx.guest.hstatus |= hstatus_bits::SPVP;
}

/// Fetch the trapping instruction: the trap's value if the hart provided it, else
/// read it from guest memory with HLVX. Returns the instruction and its length.
fn fetch_insn(inner: &VcpuInner, hint: usize) -> Option<u32> {
    if hint != 0 {
        return Some(hint as u32);
    }
    let pc = inner.ctx.guest.sepc;
    let hs = inner.ctx.guest.hstatus;
    let lo = guest_fetch_u16(pc, hs)? as u32;
    if lo & 3 != 3 {
        return Some(lo);
    }
    let hi = guest_fetch_u16(pc.wrapping_add(2), hs)? as u32;
    Some(lo | (hi << 16))
}

#[inline(never)]
fn virtual_insn(vcpu: &Vcpu, inner: &mut VcpuInner) -> Next {
    let Some(insn) = fetch_insn(inner, inner.ctx.trap.stval) else {
        let tval = inner.ctx.trap.stval;
        inject_exception(inner, EXC_ILLEGAL, tval);
        return Next::Resume;
    };
    if inner.ctx.guest.sstatus & sstatus_bits::SPP == 0 {
        // From guest user mode (VU): nothing here is the user's to do — not WFI, not
        // the supervisor's interrupt-file CSRs. Its kernel sees an illegal instruction,
        // as on a machine without a hypervisor.
        inject_exception(inner, EXC_ILLEGAL, insn as usize);
        return Next::Resume;
    }
    if insn == INSN_WFI {
        inner.ctx.guest.sepc = inner.ctx.guest.sepc.wrapping_add(4);
        return wfi(vcpu, inner);
    }
    if insn == INSN_WRS_NTO || insn == INSN_WRS_STO {
        inner.ctx.guest.sepc = inner.ctx.guest.sepc.wrapping_add(4);
        return Next::Resume;
    }
    if let Some(next) = interrupt_csr(vcpu, inner, insn) {
        return next;
    }
    inject_exception(inner, EXC_ILLEGAL, insn as usize);
    Next::Resume
}

/// A trapped Zicsr instruction on a CSR the guest's topology emulates (AIA
/// `sireg`/`stopei` of a software interrupt file): decode it, let the topology answer,
/// then write `rd` and step over it, or inject an illegal-instruction exception.
/// `None` when it is not a CSR instruction or the topology does not emulate that CSR.
fn interrupt_csr(vcpu: &Vcpu, inner: &mut VcpuInner, insn: u32) -> Option<Next> {
    let funct3 = (insn >> 12) & 7;
    if insn & 0x7f != 0x73 || funct3 == 0 || funct3 == 4 {
        return None;
    }
    let csr_no = insn >> 20;
    let rd = ((insn >> 7) & 31) as usize;
    let rs1 = ((insn >> 15) & 31) as usize;
    // csrrwi/csrrsi/csrrci take rs1 as an immediate.
    let src = if funct3 >= 5 {
        rs1 as u64
    } else {
        inner.ctx.guest.x[rs1] as u64
    };
    let op = match funct3 & 3 {
        1 => CsrOp::Write(src),
        2 if rs1 != 0 => CsrOp::Set(src),
        3 if rs1 != 0 => CsrOp::Clear(src),
        _ => CsrOp::Read,
    };
    let g = &world().guests[vcpu.guest];
    match g.irqchip.csr(g, vcpu, csr_no, op)? {
        Ok(v) => {
            if rd != 0 {
                inner.ctx.guest.x[rd] = v as usize;
            }
            inner.ctx.guest.sepc = inner.ctx.guest.sepc.wrapping_add(4);
        }
        Err(()) => inject_exception(inner, EXC_ILLEGAL, insn as usize),
    }
    Some(Next::Resume)
}

/// A guest page fault. The common case first, in a small function: a load the hart
/// transformed into `htinst` (bit 0 set) from a window of the guest's interrupt
/// controller — decoded, read and written back with nothing else on the way (the lean
/// path of an emulated register read); a store fault goes to [`guest_store_fault`].
/// Everything else, and anything these paths do not recognise, takes
/// [`guest_page_fault_full`], which decides from scratch.
#[inline(never)]
fn guest_page_fault(guest: &Guest, vcpu: &Vcpu, inner: &mut VcpuInner) -> Next {
    let t = inner.ctx.trap;
    if t.scause == EXC_LOAD_GPF && t.htinst & 1 != 0 {
        let gpa = ((t.htval as u64) << 2) | (t.stval as u64 & 3);
        let chip = &guest.irqchip;
        if chip.mmio_window(gpa) {
            if let Some(Access::Load { rd, size, signed }) = insn::decode(t.htinst as u32, true) {
                let v = insn::extend(
                    chip.mmio(guest, vcpu, gpa, MmioOp::Read { size }),
                    size,
                    signed,
                );
                if rd != 0 {
                    inner.ctx.guest.x[rd as usize] = v as usize;
                }
                let len = insn::transformed_len(t.htinst as u32);
                inner.ctx.guest.sepc = inner.ctx.guest.sepc.wrapping_add(len);
                return Next::Resume;
            }
        }
    }
    guest_page_fault_full(guest, vcpu, inner)
}

/// A store guest page fault. The common case in a small function: a store the hart
/// transformed into `htinst` (bit 0 set), to a window of the guest's interrupt
/// controller (a completion, a re-trigger, an enable) — decoded and written, then the
/// completions' ack notifiers run, with nothing else on the way: what
/// [`guest_page_fault_full`] and [`emulate_mmio`] do for it, without the general
/// decision. Anything else goes there.
#[inline(never)]
fn guest_store_fault(guest: &Guest, vcpu: &Vcpu, inner: &mut VcpuInner) -> Next {
    let t = inner.ctx.trap;
    let gpa = ((t.htval as u64) << 2) | (t.stval as u64 & 3);
    let chip = &guest.irqchip;
    if t.htinst & 1 != 0 && chip.mmio_window(gpa) {
        if let Some(Access::Store { rs2, size }) = insn::decode(t.htinst as u32, true) {
            let value = insn::truncate(inner.ctx.guest.x[rs2 as usize] as u64, size);
            chip.mmio(guest, vcpu, gpa, MmioOp::Write { size, value });
            // Every topology lock is dropped: run completions' ack notifiers.
            crate::irq::fold_completions(guest);
            let len = insn::transformed_len(t.htinst as u32);
            inner.ctx.guest.sepc = inner.ctx.guest.sepc.wrapping_add(len);
            return Next::Resume;
        }
    }
    guest_page_fault_full(guest, vcpu, inner)
}

/// Every guest page fault [`guest_page_fault`] does not take itself.
#[inline(never)]
fn guest_page_fault_full(guest: &Guest, vcpu: &Vcpu, inner: &mut VcpuInner) -> Next {
    let t = inner.ctx.trap;
    let gpa = ((t.htval as u64) << 2) | (t.stval as u64 & 3);
    let access_fault = match t.scause {
        EXC_LOAD_GPF => EXC_LOAD_ACCESS,
        EXC_STORE_GPF => EXC_STORE_ACCESS,
        _ => EXC_INSN_ACCESS,
    };
    if t.htinst != 0 && t.htinst & 1 == 0 {
        // A pseudo-instruction: the fault hit an implicit access of the guest's own
        // VS-stage page-table walk (its page tables point outside RAM, e.g. into a
        // device window). Nothing to emulate: the guest gets the access fault a
        // machine without a hypervisor would give it for that walk.
        inject_exception(inner, access_fault, t.stval);
        return Next::Resume;
    }
    if t.scause != EXC_INSN_GPF {
        let chip = &guest.irqchip;
        if chip.mmio_window(gpa) {
            let mut wrote = false;
            let next = emulate_mmio(inner, |op| {
                wrote = matches!(op, MmioOp::Write { .. });
                chip.mmio(guest, vcpu, gpa, op)
            });
            if wrote {
                // Every topology lock is dropped: run completions' ack notifiers.
                crate::irq::fold_completions(guest);
            }
            return next;
        }
        if let Some((function, reg)) = guest.ecam_at(gpa) {
            // The guest's ECAM (`crate::vpci`): its functions through the filter, no
            // function anywhere else (reads all ones, writes dropped). 8-byte accesses
            // are not configuration accesses: all ones.
            return emulate_mmio(inner, |op| match (op, function) {
                (MmioOp::Read { size }, Some(f)) if size <= 4 => u64::from(f.read(reg, size)),
                (MmioOp::Write { size, value }, Some(f)) if size <= 4 => {
                    f.write(reg, size, value as u32);
                    0
                }
                _ => !0,
            });
        }
        if let Some((dev, off)) = guest.vuart_at(gpa) {
            return emulate_mmio(inner, |op| match op {
                MmioOp::Read { size } => dev.lock().read(off, size),
                MmioOp::Write { size, value } => {
                    dev.lock().write(off, size, value);
                    0
                }
            });
        }
    }
    // Unmapped (or undecodable): an access fault for the guest, which keeps running.
    inject_exception(inner, access_fault, t.stval);
    Next::Resume
}

/// Emulate the guest load/store that caused the guest page fault in `inner.ctx.trap`
/// on a device: `dev` performs the access and returns the value read (ignored for a
/// store). The instruction comes from `htinst` (transformed) or is read with HLVX;
/// one that cannot be decoded, or a load/store that does not match the fault, gives
/// the guest an access fault instead. Returns [`Next::Resume`].
pub fn emulate_mmio(inner: &mut VcpuInner, dev: impl FnOnce(MmioOp) -> u64) -> Next {
    let t = inner.ctx.trap;
    let hint = if t.htinst & 1 != 0 { t.htinst } else { 0 };
    let decoded = fetch_insn(inner, hint).and_then(|i| insn::decode(i, hint != 0).map(|a| (a, i)));
    if let Some((access, raw)) = decoded {
        let len = if hint != 0 {
            insn::transformed_len(raw)
        } else {
            insn::len(raw)
        };
        match access {
            Access::Load { rd, size, signed } if t.scause == EXC_LOAD_GPF => {
                let v = insn::extend(dev(MmioOp::Read { size }), size, signed);
                if rd != 0 {
                    inner.ctx.guest.x[rd as usize] = v as usize;
                }
                inner.ctx.guest.sepc = inner.ctx.guest.sepc.wrapping_add(len);
                return Next::Resume;
            }
            Access::Store { rs2, size } if t.scause == EXC_STORE_GPF => {
                let value = insn::truncate(inner.ctx.guest.x[rs2 as usize] as u64, size);
                dev(MmioOp::Write { size, value });
                inner.ctx.guest.sepc = inner.ctx.guest.sepc.wrapping_add(len);
                return Next::Resume;
            }
            _ => {}
        }
    }
    let fault = if t.scause == EXC_LOAD_GPF {
        EXC_LOAD_ACCESS
    } else {
        EXC_STORE_ACCESS
    };
    inject_exception(inner, fault, t.stval);
    Next::Resume
}
