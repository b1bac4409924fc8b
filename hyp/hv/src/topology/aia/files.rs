//! The vCPUs' IMSIC interrupt files: hardware guest files reached through
//! `hstatus.VGEIN` + `vsiselect`/`vsireg` ([`HwFiles`], virq-riscv `GuestFileHw`), the
//! software fallback's VSEIP (through the guest's `GuestSink`, like the vPLIC's), and the G-stage mapping of each vCPU's
//! IMSIC page onto its file.
use super::*;
use virq_core::msimove::{self, FileMove};

/// The hardware guest files, as virq-riscv's `VcpuImsic` reaches them.
#[derive(Clone, Copy)]
pub struct HwFiles {
    /// The guest's AIA counters.
    pub(crate) counts: &'static AiaCounts,
}

/// Run `f` with `hstatus.VGEIN = line` on the current hart, which must be `hart`
/// (`vsiselect`/`vsireg` then reach that guest file), restoring `hstatus` and
/// `vsiselect` afterwards. `None` when called for another hart.
pub(crate) fn with_line<T>(hart: usize, line: u32, f: impl FnOnce(usize) -> T) -> Option<T> {
    let h = host()?;
    if hart != crate::arch::hart_local() || !h.ssaia {
        h.remote_ops.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    let words = (h.num_ids as usize + 1) / 64;
    let hs = csr::hstatus::read();
    csr::hstatus::write(
        (hs & !hstatus_bits::VGEIN_MASK)
            | ((line as usize) << hstatus_bits::VGEIN_SHIFT) & hstatus_bits::VGEIN_MASK,
    );
    let sel = csr::vsiselect::read();
    let r = f(words);
    csr::vsiselect::write(sel);
    csr::hstatus::write(hs);
    Some(r)
}

pub(crate) fn vs_ireg_read(sel: u32) -> u64 {
    csr::vsiselect::write(sel as usize);
    csr::vsireg::read() as u64
}

pub(crate) fn vs_ireg_write(sel: u32, v: u64) {
    csr::vsiselect::write(sel as usize);
    csr::vsireg::write(v as usize);
}

impl GuestFileHw for HwFiles {
    fn send_msi(&self, hart: usize, line: u32, eiid: u32) {
        let Some(h) = host() else { return };
        if let (Some(pages), Some(page)) = (h.pages, h.file_page(hart, line)) {
            if pages.send(page, eiid) {
                bump(&self.counts.hw_msis_by_hyp);
            }
        }
    }

    fn save(&self, hart: usize, line: u32) -> ImsicFileState {
        with_line(hart, line, |words| {
            let mut s = ImsicFileState {
                eidelivery: vs_ireg_read(ISELECT_EIDELIVERY) as u32,
                eithreshold: vs_ireg_read(ISELECT_EITHRESHOLD) as u32,
                ..ImsicFileState::default()
            };
            for j in 0..words.min(s.eip.len()) {
                s.eip[j] = vs_ireg_read(ISELECT_EIP0 + 2 * j as u32);
                s.eie[j] = vs_ireg_read(ISELECT_EIE0 + 2 * j as u32);
            }
            s
        })
        .unwrap_or_default()
    }

    fn restore(&self, hart: usize, line: u32, state: &ImsicFileState) {
        with_line(hart, line, |words| {
            vs_ireg_write(ISELECT_EIDELIVERY, 0);
            for j in 0..words.min(state.eip.len()) {
                vs_ireg_write(ISELECT_EIE0 + 2 * j as u32, state.eie[j]);
                vs_ireg_write(ISELECT_EIP0 + 2 * j as u32, state.eip[j]);
            }
            vs_ireg_write(ISELECT_EITHRESHOLD, u64::from(state.eithreshold));
            vs_ireg_write(ISELECT_EIDELIVERY, u64::from(state.eidelivery));
        });
    }
}

/// A vCPU's interrupt file.
pub type GuestImsic = VcpuImsic<HwFiles, GuestSink>;

/// Point vCPU `v`'s IMSIC page of guest `g` at `backing` (its hardware file, or
/// nowhere for a software file) and flush every hart's G-stage TLB; then point the
/// guest's devices' MSIs for that page at the same file (the MSI page-table entry: the
/// hardware file, or the vCPU's MRIF), or, without an MSI table, invalidate the
/// IOMMU's copy of the G-stage page. The IOMMU's invalidation is queued, not waited
/// for: [`FileMoveSteps`] fences. Returns whether the IOMMU was told anything. No lock
/// held.
pub(crate) fn map_page(g: &dyn GuestView, aia: &GuestAia, v: usize, backing: Backing) -> bool {
    let gpa = aia.imsic_base + v as u64 * IMSIC_PAGE_SIZE;
    let hpa = match backing {
        Backing::Hardware { hart, line } => host().and_then(|h| h.file_addr(hart, line)),
        Backing::Software => None,
    };
    if let Err(e) = g
        .gstage()
        .lock()
        .set_page(gpa, hpa, crate::gstage::R | crate::gstage::W)
    {
        crate::println!("hyp: guest {}: IMSIC page {gpa:#x}: {e:?}", g.index());
    }
    crate::arch::fence();
    crate::arch::hfence_gvma_all();
    let here = crate::arch::hart_local();
    let others = crate::hart::harts()
        .iter()
        .filter(|h| h.index != here)
        .fold(0u64, |m, h| m | (1 << h.index));
    crate::hart::remote_fence(others);
    let Some(iommu) = crate::iommu::iommu() else {
        return false;
    };
    let gscid = g.index() + 1;
    let pte = device_msi_pte(aia, v, backing);
    let mut i = iommu.lock();
    let r = match i.write_msi_pte(gscid, gpa, pte) {
        Ok(true) => Ok(true),
        Ok(false) => i.invalidate_gstage_page(gscid, gpa),
        Err(e) => Err(e),
    };
    drop(i);
    r.unwrap_or_else(|e| {
        crate::println!("hyp: guest {}: IMSIC page {gpa:#x}: iommu: {e}", g.index());
        false
    })
}

/// The steps of moving vCPU `v`'s interrupt file, in the order virq-core's
/// [`msimove`](virq_core::msimove) fixes (its protocol and loom model): the page and
/// the devices' MSIs retargeted ([`map_page`]), the IOMMU fenced, the state moved
/// (`state`, which says where the file is now), the MRIF drained into a file that
/// entered hardware.
pub(crate) struct FileMoveSteps<'a, F: FnMut() -> Backing> {
    g: &'a dyn GuestView,
    aia: &'a GuestAia,
    v: usize,
    from: Backing,
    /// Where the file goes (for a move to hardware: set by `state`).
    pub(crate) to: Backing,
    state: F,
    told_iommu: bool,
}

impl<'a, F: FnMut() -> Backing> FileMoveSteps<'a, F> {
    pub(crate) fn new(
        g: &'a dyn GuestView,
        aia: &'a GuestAia,
        v: usize,
        (from, to): (Backing, Backing),
        state: F,
    ) -> Self {
        FileMoveSteps {
            g,
            aia,
            v,
            from,
            to,
            state,
            told_iommu: false,
        }
    }
}

impl<F: FnMut() -> Backing> FileMove for FileMoveSteps<'_, F> {
    fn retarget(&mut self) {
        if self.to != self.from {
            self.told_iommu = map_page(self.g, self.aia, self.v, self.to);
        }
    }

    fn fence(&mut self) {
        if !self.told_iommu {
            return;
        }
        if let Some(iommu) = crate::iommu::iommu() {
            if let Err(e) = iommu.lock().fence() {
                crate::println!("hyp: guest {}: IMSIC page move: iommu: {e}", self.g.index());
            }
        }
    }

    fn move_state(&mut self) {
        self.to = (self.state)();
    }

    fn drain(&mut self) {
        if self.to != self.from && matches!(self.to, Backing::Hardware { .. }) {
            drain_mrif(self.aia, self.v);
        }
    }
}

/// Move vCPU `id`'s hardware file to software, on the hart that owns the file: once
/// its state is saved no guest store and no device MSI may reach it, so the page goes
/// out of the G-stage (and every TLB) and the physical APLIC is retargeted to hyp's
/// S-level file first, then `VcpuImsic::evict` saves, scrubs and frees the line.
pub(crate) fn leave_hardware_file(g: &dyn GuestView, aia: &GuestAia, id: usize) {
    let av = &aia.vcpus[id];
    av.leaving.store(true, Ordering::Relaxed);
    let from = av.file.lock().backing();
    let mut steps = FileMoveSteps::new(g, aia, id, (from, Backing::Software), || {
        resync(g, aia);
        av.file.lock().evict(crate::hart::hgei());
        Backing::Software
    });
    msimove::to_software(&mut steps);
    av.leaving.store(false, Ordering::Relaxed);
    bump(&aia.counts.to_sw);
}
