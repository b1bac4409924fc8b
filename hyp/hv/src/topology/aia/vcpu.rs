//! A vCPU's AIA state around guest entry and exit: loading its interrupt file on a
//! hart (hardware line or software), the doorbell put/load, migration out of a hart,
//! `hvictl` before entry, and the trapped accesses of its windows and CSRs.
use super::*;

/// A trapped access to one of the guest's AIA windows (vAPLIC, or an IMSIC page whose
/// file is in software); the caller checked [`GuestIrqChip::mmio_window`].
pub(crate) fn window_access(g: &dyn GuestView, aia: &GuestAia, gpa: u64, op: MmioOp) -> u64 {
    if let Some(off) = aia.aplic_offset(gpa) {
        return aplic_access(g, aia, off, op);
    }
    let Some((v, off)) = aia.page_of(gpa) else {
        return 0;
    };
    let mut f = aia.vcpus[v].file.lock();
    match op {
        MmioOp::Read { size } => f.read(off, size),
        MmioOp::Write { size, value } => {
            bump(&aia.counts.page_msis);
            if f.backing() == Backing::Software {
                bump(&aia.counts.sw_msis);
            }
            f.write(off, size, value);
            0
        }
    }
}

/// A trapped `sireg`/`stopei` access of a vCPU with a software file (see the module
/// docs); `None` for any other CSR.
pub(crate) fn csr_access(
    aia: &GuestAia,
    vcpu: &Vcpu,
    csr_no: u32,
    op: CsrOp,
) -> Option<Result<u64, ()>> {
    if csr_no != CSR_SIREG && csr_no != CSR_STOPEI {
        return None;
    }
    let av = aia.vcpus.get(vcpu.id.slot())?;
    Some(if csr_no == CSR_SIREG {
        let sel = csr::vsiselect::read();
        if (0x30..=0x3f).contains(&sel) {
            bump(&aia.counts.iprio_traps);
            Ok(0)
        } else {
            bump(&aia.counts.csr_traps);
            u32::try_from(sel)
                .ok()
                .and_then(|sel| av.file.lock().ireg(sel, op).ok())
                .ok_or(())
        }
    } else {
        bump(&aia.counts.csr_traps);
        av.file.lock().stopei(op).map(u64::from).map_err(|_| ())
    })
}

/// The vCPU is about to run on `hart` (see the module docs): its interrupt file there,
/// its page in the G-stage, `hstatus.VGEIN` for the guest, its `vsiselect`, and its
/// doorbell masked.
pub(crate) fn vcpu_load(
    g: &dyn GuestView,
    aia: &GuestAia,
    hart: &Hart,
    vcpu: &Vcpu,
    inner: &mut VcpuInner,
) {
    let id = vcpu.id.slot();
    let av = &aia.vcpus[id];
    let old_line = av.line.load(Ordering::Relaxed);
    if old_line != 0 {
        // Mask the doorbell of the line the vCPU had (the put of a blocking vCPU left
        // it unmasked); what arrived meanwhile shows in the file itself.
        let _ = av.doorbell.load(&HgeieDoorbell::new(&HartCsrs, old_line));
    }
    let want_sw = host().is_some_and(|h| h.flip_forces_software());
    let before = av.file.lock().backing();
    let leaving = matches!(before, Backing::Hardware { hart: h, .. } if h != hart.index || want_sw);
    if leaving {
        // Leaving a hardware file: once its state is saved, no guest store and no
        // device MSI may reach it. So: the page out of the G-stage (and every TLB),
        // the physical APLIC retargeted to hyp's S-level file, then the move.
        leave_hardware_file(g, aia, id);
    }
    let was = if leaving { Backing::Software } else { before };
    let after = if want_sw {
        csr::hstatus::clear(hstatus_bits::VGEIN_MASK);
        Backing::Software
    } else {
        // Into a hardware line if this hart has one free: state first, then the page
        // and the devices' MSI entry, the IOMMU fence, the MRIF drained
        // (virq-core `msimove`).
        let mut steps = FileMoveSteps::new(g, aia, id, (was, was), || {
            av.file
                .lock()
                .load(hart.index, crate::hart::hgei(), &HartCsrs)
        });
        virq_core::msimove::to_hardware(&mut steps);
        steps.to
    };
    if after != was && matches!(after, Backing::Hardware { .. }) {
        bump(&aia.counts.to_hw);
    }
    if after != before {
        resync(g, aia);
    }
    inner.ctx.guest.hstatus = (inner.ctx.guest.hstatus & !hstatus_bits::VGEIN_MASK)
        | (csr::hstatus::read() & hstatus_bits::VGEIN_MASK);
    csr::vsiselect::write(av.vsiselect.load(Ordering::Relaxed));
    let line = match after {
        Backing::Hardware { line, .. } => line,
        Backing::Software => 0,
    };
    av.line.store(line, Ordering::Relaxed);
    av.hvictl.store(usize::MAX, Ordering::Relaxed);
    before_entry(aia, vcpu, inner);
    if line != 0 && line != old_line {
        // A new line: its doorbell starts masked (put unmasks it only when blocking).
        let _ = av.doorbell.load(&HgeieDoorbell::new(&HartCsrs, line));
    }
    // The masks above are `hgeie` writes: one that raced an MSI to another blocked
    // vCPU's line can have left `hip.SGEIP` at a stale 0, and the guest about to run
    // may not exit for a long time. The caller serves what the source says now
    // (`GuestIrqChip::vcpu_load` returns true).
}

/// Migration, step 1 (see `sched`): the descheduled `vcpu` leaves this hart, its home.
/// Runs on that hart, because saving a hardware guest file reads it through `vsireg`
/// under `hstatus.VGEIN`, which only the owning hart can do. Its doorbell is masked
/// and forgotten (`hgeie` of its line), and a hardware file leaves as in
/// [`vcpu_load`]: page out of the G-stage and every TLB, the physical APLIC
/// retargeted, then `VcpuImsic::evict` (save, scrub, free the line). The file is in
/// software afterwards; MSIs meanwhile trap into it and kick the vCPU.
pub(crate) fn vcpu_migrate_out(g: &dyn GuestView, aia: &GuestAia, vcpu: &Vcpu) {
    let id = vcpu.id.slot();
    let av = &aia.vcpus[id];
    let line = av.line.swap(0, Ordering::Relaxed);
    if line != 0 {
        // What rang meanwhile is in the file and reaches the software file's VSEIP.
        let _ = av.doorbell.load(&HgeieDoorbell::new(&HartCsrs, line));
    }
    let hw = matches!(av.file.lock().backing(), Backing::Hardware { .. });
    if hw {
        leave_hardware_file(g, aia, id);
    }
}

/// Right before each guest entry (after `HvipSync::flush`): with a software file
/// (`hstatus.VGEIN = 0`), `vstopi` reports the VS external interrupt that `hvip.VSEIP`
/// signals only through `hvictl` (AIA §6.3.3; QEMU `read_vstopi`), and Linux's AIA
/// interrupt handler reads `stopi` to find it. So `hvictl.IID = 9` with `IPRIO = 1`
/// while `hvip.VSEIP` is set, `IPRIO = 0` (nothing reported) otherwise — what KVM does.
pub(crate) fn before_entry(aia: &GuestAia, vcpu: &Vcpu, inner: &VcpuInner) {
    let av = &aia.vcpus[vcpu.id.slot()];
    let vseip = inner.hvip.shadow_hvip() & virq_riscv::hext::HVIP_VSEIP != 0;
    let want = (9 << 16) | usize::from(vseip);
    if av.hvictl.swap(want, Ordering::Relaxed) != want {
        csr::hvictl::write(want);
    }
}

/// The vCPU leaves its hart: keep its `vsiselect`; with a hardware file, put its
/// doorbell (unmasked only if it blocks in WFI; if the doorbell already rang, the vCPU
/// stays runnable).
pub(crate) fn vcpu_put(aia: &GuestAia, vcpu: &Vcpu) {
    let av = &aia.vcpus[vcpu.id.slot()];
    av.vsiselect
        .store(csr::vsiselect::read(), Ordering::Relaxed);
    let line = av.line.load(Ordering::Relaxed);
    if line == 0 {
        return;
    }
    let door = HgeieDoorbell::new(&HartCsrs, line);
    let blocking = vcpu.block.is_blocked();
    if av.doorbell.put(&door, blocking) == PutOutcome::StayRunnable && blocking {
        vcpu.block.unblock();
    }
}
