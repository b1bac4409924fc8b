//! hyp's host AIA: the S-level APLIC in MSI mode and hyp's own S-level IMSIC files
//! (the passthrough sources of vPLIC guests, and of AIA guests whose targeted vCPU has a
//! software file, are claimed there), the IMSIC geometry (guest file pages per hart)
//! and the `aia_flip_ms` test knob.
use alloc::vec::Vec;
use core::sync::atomic::AtomicU64;
use spin::Once;
use virq_riscv::aplic::regs::{DOMAINCFG_DM, DOMAINCFG_IE, TARGET_HART_SHIFT};
use virq_riscv::aplic::EIID_MASK as TARGET_EIID_MASK;
use virq_riscv::imsic::{ISELECT_EIDELIVERY, ISELECT_EIE0, ISELECT_EITHRESHOLD};
use virq_riscv::msi::IMSIC_PAGE_SIZE;

use crate::arch::csr::{self, irq_bits};
use crate::arch::mmio::{HostAplic, ImsicPages};
use crate::ids::Pirq;
use crate::platform::platform;

/// The host AIA as hyp drives it (built once by [`init`]).
pub struct HostAia {
    /// The S-level APLIC domain.
    pub aplic: Option<HostAplic>,
    /// The S-level IMSIC window.
    pub(crate) pages: Option<ImsicPages>,
    /// `riscv,guest-index-bits`.
    pub(crate) gib: u32,
    /// Identities per interrupt file.
    pub num_ids: u32,
    /// The harts implement Ssaia (the IMSIC CSRs exist).
    pub(crate) ssaia: bool,
    /// IMSIC hart index of each hart (by `World::harts` index).
    pub(crate) hart_index: Vec<Option<u32>>,
    /// Identities of hyp's own S-level files that passthrough sources use (= the
    /// physical source numbers), a bitmap.
    pub(crate) sfile_ids: [u64; 4],
    /// Guest-file operations asked for on a hart that does not own the file (a hyp
    /// bug: a vCPU's file leaves its hart before the vCPU migrates).
    pub(crate) remote_ops: AtomicU64,
    /// Test knob (bootarg `aia_flip_ms=N`): hardware files only in even periods of
    /// this many timer ticks, software files in odd ones (0: off). Makes every vCPU's
    /// file move between its hardware line and software, with live state, many times.
    pub(crate) flip_ticks: u64,
    /// The identity of hyp's S-level files that the IOMMU's MRIF notices use (device
    /// MSIs recorded for a guest file in software): the highest one below the IPI's
    /// that no passthrough source uses.
    pub(crate) mrif_notice: Option<u32>,
    /// The identity the IOMMU's fault-queue MSI uses (the next free one below
    /// `mrif_notice`).
    pub(crate) iommu_fault: Option<u32>,
}

static HOST: Once<HostAia> = Once::new();

/// The host AIA, once [`init`] ran.
pub fn host() -> Option<&'static HostAia> {
    HOST.get()
}

impl HostAia {
    /// Byte offset in the S-level IMSIC window of guest file `line` of hart `hart`.
    pub(crate) fn file_page(&self, hart: usize, line: u32) -> Option<usize> {
        if line == 0 || line >= (1 << self.gib) {
            return None;
        }
        Some(self.sfile_page(hart)? + line as usize * IMSIC_PAGE_SIZE as usize)
    }

    /// Byte offset in the S-level IMSIC window of hart `hart`'s own S-level file (its
    /// guest files follow it).
    pub(crate) fn sfile_page(&self, hart: usize) -> Option<usize> {
        let idx = (*self.hart_index.get(hart)?)? as usize;
        Some(idx << (self.gib + 12))
    }

    /// Host physical address of guest file `line` of hart `hart`.
    pub(crate) fn file_addr(&self, hart: usize, line: u32) -> Option<u64> {
        let (base, _) = platform().aia.imsic?;
        Some(base + self.file_page(hart, line)? as u64)
    }

    /// APLIC MSI target naming hyp's S-level file of `hart` with the identity of
    /// `pirq` (identity = source number).
    pub(crate) fn sfile_target(&self, hart: usize, pirq: Pirq) -> Option<u32> {
        let idx = (*self.hart_index.get(hart)?)?;
        Some((idx << TARGET_HART_SHIFT) | (pirq.0 & TARGET_EIID_MASK))
    }

    /// In `aia_flip_ms` mode, is this a software-only period?
    pub(crate) fn flip_forces_software(&self) -> bool {
        self.flip_ticks != 0 && (crate::arch::time() / self.flip_ticks) % 2 == 1
    }

    /// Do the harts implement Ssaia (the IMSIC CSRs, `hvictl`, VGEIN)?
    pub fn has_ssaia(&self) -> bool {
        self.ssaia
    }

    /// Does hyp have its own S-level interrupt files (IMSIC and its CSRs)?
    pub fn has_sfiles(&self) -> bool {
        self.pages.is_some() && self.ssaia
    }
}

/// Build the host AIA description and put the physical APLIC in MSI mode; `pirqs`
/// are the physical sources passed through to guests. Boot hart, after the world is
/// published and before any hart initialises.
pub fn init(pirqs: impl Iterator<Item = Pirq>) {
    let p = platform();
    let mut sfile_ids = [0u64; 4];
    for pirq in pirqs {
        if let Some(word) = sfile_ids.get_mut(pirq.index() / 64) {
            *word |= 1 << (pirq.0 % 64);
        }
    }
    let host = HOST.call_once(|| HostAia {
        aplic: p
            .aia
            .aplic
            .map(|(b, s)| HostAplic::new(b as usize, s as usize, p.aia.aplic_sources)),
        pages: p
            .aia
            .imsic
            .map(|(b, s)| ImsicPages::new(b as usize, s as usize)),
        gib: p.aia.guest_index_bits,
        num_ids: p.aia.num_ids,
        ssaia: p.isa_extensions.iter().any(|e| e == "ssaia"),
        hart_index: crate::hart::harts()
            .iter()
            .map(|h| {
                p.harts
                    .iter()
                    .find(|x| x.hartid == h.hartid)
                    .and_then(|x| x.imsic_index)
            })
            .collect(),
        sfile_ids,
        remote_ops: AtomicU64::new(0),
        mrif_notice: free_ids(&sfile_ids, p.aia.num_ids).next(),
        iommu_fault: free_ids(&sfile_ids, p.aia.num_ids).nth(1),
        flip_ticks: u64::from(crate::config::options().aia_flip_ms) * p.timebase / 1000,
    });
    // hyp's own IPIs as an MSI into the target hart's S-file: the highest identity,
    // if no passthrough source uses it (identity = source number).
    let ipi_id = host.num_ids;
    let used = host
        .sfile_ids
        .get(ipi_id as usize / 64)
        .is_some_and(|w| w & (1 << (ipi_id % 64)) != 0);
    if host.has_sfiles() && ipi_id > 0 && !used {
        if let Some((base, _)) = p.aia.imsic {
            crate::arch::use_imsic_ipis(ipi_id, |hartid| {
                let h = crate::hart::harts()
                    .iter()
                    .position(|h| h.hartid == hartid)?;
                Some(base as usize + host.sfile_page(h)?)
            });
        }
    }
    if let Some(a) = host.aplic {
        a.set_domaincfg(DOMAINCFG_IE | DOMAINCFG_DM);
        crate::println!(
            "hyp: host APLIC in MSI mode (domaincfg {:#x}), IMSIC guest index bits {}, {} identities",
            a.domaincfg(),
            host.gib,
            host.num_ids
        );
    }
}

/// hyp's own identities of its S-level files, highest first, below the IPI's: those no
/// passthrough source uses.
fn free_ids(sfile_ids: &[u64; 4], num_ids: u32) -> impl Iterator<Item = u32> + '_ {
    (1..num_ids).rev().filter(|&id| {
        sfile_ids
            .get(id as usize / 64)
            .is_some_and(|w| w & (1 << (id % 64)) == 0)
    })
}

/// The identity of hyp's S-level files the IOMMU's fault interrupt uses, and the
/// address of `hart`'s S-level file.
pub fn iommu_fault_target(hart: usize) -> Option<(u64, u32)> {
    let h = host()?;
    let id = h.iommu_fault?;
    let (base, _) = platform().aia.imsic?;
    Some((base + h.sfile_page(hart)? as u64, id))
}

/// The identity of hyp's S-level files the IOMMU's fault interrupt uses: the MSI one,
/// or the wired source [`take_wired_source`] routed.
pub fn iommu_fault_id() -> Option<u32> {
    let h = host()?;
    match WIRED_FAULT.load(core::sync::atomic::Ordering::Acquire) {
        0 => h.iommu_fault,
        src => Some(src),
    }
}

/// A wired source hyp took for itself (the IOMMU's fault interrupt), 0 if none.
static WIRED_FAULT: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// Take physical APLIC source `src` (edge-triggered, not a guest's) for hyp's own
/// S-level file of this hart, with identity `src`, and make it the IOMMU's fault
/// interrupt ([`iommu_fault_id`]). Runs on that hart, after its `hart_init`. False when
/// there is no APLIC or no S-level file, or a guest has the source.
pub fn take_wired_source(src: u32) -> bool {
    let Some(h) = host() else { return false };
    let (Some(aplic), true) = (h.aplic, h.has_sfiles()) else {
        return false;
    };
    let used = h
        .sfile_ids
        .get(src as usize / 64)
        .is_none_or(|w| w & (1 << (src % 64)) != 0);
    let Some(target) = h.sfile_target(crate::arch::hart_local(), Pirq(src)) else {
        return false;
    };
    if used || src == 0 || src >= h.num_ids {
        return false;
    }
    aplic.set_enabled(src, false);
    aplic.set_sourcecfg(src, virq_riscv::aplic::SourceMode::Edge1 as u32);
    aplic.set_target(src, target);
    csr::siselect::write(ISELECT_EIE0 as usize + 2 * (src as usize / 64));
    csr::sireg::set(1 << (src % 64));
    WIRED_FAULT.store(src, core::sync::atomic::Ordering::Release);
    aplic.set_enabled(src, true);
    true
}

/// The identity of hyp's S-level files that MRIF notices use, if there is one.
pub fn mrif_notice_id() -> Option<u32> {
    host()?.mrif_notice
}

/// Per-hart set-up of hyp's own S-level IMSIC file (delivery on, threshold 0, the
/// passthrough identities enabled) and of the SGEI enable. Runs on the hart itself.
pub fn hart_init() {
    let Some(h) = host() else { return };
    if !h.has_sfiles() {
        return;
    }
    csr::siselect::write(ISELECT_EIDELIVERY as usize);
    csr::sireg::write(1);
    csr::siselect::write(ISELECT_EITHRESHOLD as usize);
    csr::sireg::write(0);
    for (j, &bits) in h.sfile_ids.iter().enumerate() {
        if (j as u32) * 64 > h.num_ids {
            break;
        }
        // RV64: the even-numbered `eie` registers, 64 identities each.
        csr::siselect::write(ISELECT_EIE0 as usize + 2 * j);
        csr::sireg::write((bits & !1) as usize);
    }
    for id in [crate::arch::imsic_ipi_id(), h.mrif_notice]
        .into_iter()
        .flatten()
    {
        csr::siselect::write(ISELECT_EIE0 as usize + 2 * (id as usize / 64));
        csr::sireg::set(1 << (id % 64));
    }
    csr::hie::set(irq_bits::SGEI);
}

/// Claims per host-interrupt pass: what is left stays pending (SEI stays asserted) and
/// is claimed after the scheduler had its turn, so a guest that makes a source fire
/// continuously cannot keep this hart in the claim loop.
pub(crate) const MAX_CLAIMS_PER_PASS: usize = 64;

/// Claim the identities pending in hyp's own S-level file of this hart (`stopei`),
/// calling `f` with the source each names (identity = source number), at most
/// [`MAX_CLAIMS_PER_PASS`] at a time.
pub fn sfile_claims(mut f: impl FnMut(Pirq)) {
    let Some(h) = host() else { return };
    if !h.has_sfiles() {
        return;
    }
    for _ in 0..MAX_CLAIMS_PER_PASS {
        let id = ((csr::stopei::swap(0) >> 16) & 0x7ff) as u32;
        if id == 0 {
            break;
        }
        // hyp's IPI identity (`arch::send_ipi`) that arrived after `take_ipi`: the
        // claim consumed it, and the caller re-reads the state it announced anyway.
        if Some(id) != crate::arch::imsic_ipi_id() {
            f(Pirq(id));
        }
    }
}
