//! The AIA guest topology ([`crate::config::Intc::Aia`]). hyp's host AIA driver (the
//! physical APLIC, its own S-level IMSIC files) is `crate::hostirq::aia`.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | [`GuestAia`], its counters, the [`GuestIrqChip`] implementation |
//! | `files.rs` | the vCPUs' interrupt files: hardware lines through `vsiselect`/`vsireg`, the software fallback, the G-stage IMSIC pages |
//! | `mirror.rs` | the vAPLIC and the physical-source mirror (passthrough) |
//! | `vcpu.rs` | load/put/migration of a vCPU's file, `hvictl`, trapped windows and CSRs |
//! | `acct.rs` | the `ACCT` lines |
//!
//! # What the guest sees
//!
//! - An APLIC domain (virq-riscv [`VAplic`]), trap-and-emulate: its window is not in
//!   the G-stage, every access is a guest page fault handled by `vcpu::window_access`.
//!   Linux drives it in MSI mode; the vAPLIC forwards pending-and-enabled sources as
//!   MSIs to the guest's interrupt files ([`MsiRouter`]).
//! - One IMSIC interrupt file per vCPU (virq-riscv [`VcpuImsic`]), guest page
//!   `imsic_base + i * 4 KiB` for vCPU `i`. `vcpu::vcpu_load` calls `VcpuImsic::load` on the
//!   hart the vCPU is about to run on: it keeps or takes a *hardware* guest interrupt
//!   file there (a line from virq-core's per-hart `HgeiAllocator`), moving the file's
//!   state in through `vsiselect`/`vsireg` ([`HwFiles`]), and sets `hstatus.VGEIN`.
//!   The guest page of a hardware-backed file is mapped in the G-stage straight onto
//!   that physical guest file, so the guest's IMSIC IPIs (stores to another vCPU's
//!   page) and device MSIs reach a running vCPU without any exit. The G-stage is shared
//!   by the guest's vCPUs, so every vCPU's view of vCPU `i`'s page is where `i`'s file
//!   lives now.
//! - Fallback: a vCPU whose hart has no free line keeps a *software* file. Its page is
//!   unmapped (stores trap into `VcpuImsic`'s MMIO), and with `hstatus.VGEIN = 0` the
//!   guest's `sireg` (for `siselect` 0x70..=0xFF) and `stopei` accesses raise
//!   virtual-instruction exceptions (AIA 1.0 §2.3 / QEMU `rmw_xireg_aia`,
//!   `rmw_xtopei`), emulated by `vcpu::csr_access` with `VcpuImsic::ireg`/`stopei`; its
//!   VSEIP goes through the vCPU's `PendingSet` (`GuestSink`). `VcpuImsic::load` is
//!   retried at every load, so the vCPU moves to hardware when a line frees up.
//!   `sireg` with `siselect` 0x30..=0x3F (major interrupt priorities, not available to
//!   VS-mode: virtual instruction in QEMU for any VGEIN) reads 0 and ignores writes.
//!
//! # Doorbells (seed 002)
//!
//! A vCPU with a hardware file that blocks in WFI leaves its line's `hgeie` bit
//! unmasked (virq-core `Doorbell::put(blocking)`, through virq-riscv `HgeieDoorbell`);
//! an MSI reaching the file raises SGEI on its hart, `irq::handle_sgei` fires the doorbell
//! and kicks the vCPU. `hgeie` is masked again when the vCPU is loaded, and is never
//! unmasked for a vCPU that is merely descheduled.
//!
//! # Passthrough through the physical APLIC
//!
//! hyp owns the S-level APLIC (OpenSBI delegates every source to it) and drives it in
//! MSI mode. For a source routed (virq-core `RouteTable`) to an AIA guest, the guest's
//! programming of the virtual source (`sourcecfg`, `target`, enable, `domaincfg`) is
//! mirrored after every trapped vAPLIC write and every change of a vCPU's file backing
//! (`mirror::sync_passthrough`): the physical `target` names the hart and guest file
//! (guest index = line) of the vCPU the guest targets, with the guest's EIID, so the
//! device's MSI lands directly in the guest's file. A write of a passthrough source to
//! the vAPLIC's `setipnum`/`setipnum_le`/`setip` (Linux's level re-trigger at EOI, AIA
//! §4.9.2) is forwarded to the physical `setipnum_le`. When the targeted vCPU has a
//! software file, the physical target is hyp's own S-level file on that vCPU's hart
//! (identity = the physical source number); hyp claims it from `stopei` and pulses the
//! virtual source, which the vAPLIC forwards to the software file
//! (`hostirq`, the APLIC's claims).
//!
//! Lock order: a guest's vAPLIC lock, then a vCPU file lock; the G-stage lock alone.
//! No lock is held across a remote fence.

mod acct;
mod files;
mod mirror;
mod vcpu;

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use hyp_io::iommu::MsiPte;
use spin::Mutex;
use virq_core::doorbell::{Doorbell, DoorbellHw, PutOutcome};
use virq_riscv::aplic::{SourceMode, VAplic};
use virq_riscv::hext::HgeieDoorbell;
use virq_riscv::imsic::{CsrOp, ImsicFileState};
use virq_riscv::msi::{Backing, GuestFileHw, Msi, MsiSink, VcpuImsic, IMSIC_PAGE_SIZE};
use virq_riscv::MmioDevice;

use super::{routes, GuestIrqChip, GuestSink, GuestView, MmioOp};
use crate::arch::csr::{self, hstatus_bits, HartCsrs};
use crate::arch::phys::DmaBuf;
use crate::hart::Hart;
use crate::hostirq::aia::host;
use crate::ids::{Pirq, Virq, MAX_VCPUS_PER_GUEST};
use crate::vcpu::{Vcpu, VcpuInner};

use virq_riscv::aplic::regs::{DOMAINCFG_DM, DOMAINCFG_IE, TARGET_GUEST_SHIFT, TARGET_HART_SHIFT};
use virq_riscv::aplic::EIID_MASK as TARGET_EIID_MASK;
use virq_riscv::imsic::{
    CSR_SIREG, CSR_STOPEI, ISELECT_EIDELIVERY, ISELECT_EIE0, ISELECT_EIP0, ISELECT_EITHRESHOLD,
};

use acct::*;
use files::*;
use mirror::*;
use vcpu::*;
/// A memory-resident interrupt file (AIA/IOMMU MRIF: 2048 identities as 32 pairs of
/// 64-bit pending and enable words, 512-byte aligned) with every enable bit set, so the
/// IOMMU sends its notice for each MSI it records.
fn new_mrif() -> Option<DmaBuf> {
    let b = DmaBuf::new(512, 512)?;
    for j in 0..32 {
        b.write_u64(16 * j + 8, !0);
    }
    Some(b)
}

/// The MSI page-table entry of vCPU `v`'s interrupt file backed by `backing`: the
/// hardware file itself, or, for a software file, its MRIF with a notice to hyp's
/// S-level file of this hart (`hostirq::aia::mrif_notice_id`). Invalid when neither
/// exists (the MSI faults and is lost: counted by the IOMMU).
pub(crate) fn device_msi_pte(aia: &GuestAia, v: usize, backing: Backing) -> MsiPte {
    let Some(h) = host() else {
        return MsiPte::INVALID;
    };
    match backing {
        Backing::Hardware { hart, line } => h
            .file_addr(hart, line)
            .map_or(MsiPte::INVALID, MsiPte::flat),
        Backing::Software => {
            let here = crate::arch::hart_local();
            let notice = crate::platform::platform()
                .aia
                .imsic
                .zip(h.sfile_page(here))
                .map(|((base, _), page)| base + page as u64);
            match (
                &aia.vcpus[v].mrif,
                notice,
                crate::hostirq::aia::mrif_notice_id(),
            ) {
                (Some(m), Some(n), Some(nid)) => MsiPte::mrif(m.pa(), n, nid as u16),
                _ => MsiPte::INVALID,
            }
        }
    }
}

/// Move what the IOMMU recorded in vCPU `v`'s MRIF into its interrupt file, wherever
/// that is now. Each pending word is taken with one atomic swap
/// (`virq_core::msimove::take_mrif_word`), so a bit is delivered once — or twice at
/// worst: QEMU 10.0.2 sets MRIF bits with a plain read and write, not an AMO, and a
/// swap between the two makes its write put back bits already taken (a spurious repeat
/// of an edge MSI, which a driver tolerates; never a lost one: the loom model).
pub(crate) fn drain_mrif(aia: &GuestAia, v: usize) -> u32 {
    let Some(m) = &aia.vcpus[v].mrif else {
        return 0;
    };
    let mut n = 0;
    for j in 0..32 {
        let bits = m
            .atomic_u64(16 * j)
            .map_or(0, virq_core::msimove::take_mrif_word);
        if bits == 0 {
            continue;
        }
        let mut f = aia.vcpus[v].file.lock();
        for b in 0..64 {
            if bits & (1 << b) != 0 && f.deliver(64 * j as u32 + b) {
                n += 1;
            }
        }
    }
    aia.counts
        .mrif_msis
        .fetch_add(u64::from(n), Ordering::Relaxed);
    n
}

/// The first 64 pending bits of guest interrupt file `line` of this hart, cleared
/// (where an MSI landed, for the IOMMU proof: `dmatest`). `None` without Ssaia.
pub fn take_file_eip0(line: u32) -> Option<u64> {
    with_line(crate::arch::hart_local(), line, |_| {
        let v = vs_ireg_read(ISELECT_EIP0);
        vs_ireg_write(ISELECT_EIP0, 0);
        v
    })
}

/// Host physical address of guest interrupt file `line` of hart `hart`.
pub fn file_addr(hart: usize, line: u32) -> Option<u64> {
    host()?.file_addr(hart, line)
}

/// Size of the vAPLIC window for `vcpus` hart indices (virq-riscv's decoding).
pub fn aplic_size(vcpus: usize) -> u64 {
    virq_riscv::aplic::window_size(vcpus as u32)
}

/// Per-guest counters of the AIA paths (printed as `ACCT … aia` lines).
#[derive(Default)]
pub struct AiaCounts {
    /// Trapped vAPLIC loads.
    pub aplic_reads: AtomicU64,
    /// Trapped vAPLIC stores.
    pub aplic_writes: AtomicU64,
    /// MSIs the vAPLIC forwarded (to software or hardware files).
    pub aplic_forwards: AtomicU64,
    /// Trapped stores to IMSIC pages (MSIs/IPIs that took the software path).
    pub page_msis: AtomicU64,
    /// MSIs that landed in software files.
    pub sw_msis: AtomicU64,
    /// MSIs hyp wrote into hardware files (a trapped page store or a vAPLIC forward
    /// whose target file is in hardware).
    pub hw_msis_by_hyp: AtomicU64,
    /// Emulated `sireg`/`stopei` accesses (software files).
    pub csr_traps: AtomicU64,
    /// `sireg` accesses to the major-priority range 0x30..=0x3F.
    pub iprio_traps: AtomicU64,
    /// SGEI lines handled for this guest's vCPUs.
    pub sgei: AtomicU64,
    /// SGEI doorbells that woke a blocked vCPU.
    pub sgei_kicks: AtomicU64,
    /// Files that moved from software to hardware.
    pub to_hw: AtomicU64,
    /// Files that moved from hardware to software.
    pub to_sw: AtomicU64,
    /// Device MSIs the IOMMU recorded in the vCPUs' MRIFs (files in software) and hyp
    /// moved into their files.
    pub mrif_msis: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One vCPU's AIA state.
pub struct AiaVcpu {
    /// Its interrupt file.
    pub file: Mutex<GuestImsic>,
    /// Its SGEI doorbell.
    pub doorbell: Doorbell,
    /// The guest's `vsiselect` while the vCPU is not loaded.
    pub(crate) vsiselect: AtomicUsize,
    /// Hardware line in use on the vCPU's hart (0: software file); written by the home
    /// hart at load.
    pub(crate) line: AtomicU32,
    /// The `hvictl` value last written for this vCPU while loaded.
    pub(crate) hvictl: AtomicUsize,
    /// The file is leaving its hardware line: the physical APLIC must not target it.
    pub(crate) leaving: AtomicBool,
    /// Its memory-resident interrupt file (MRIF, 512 bytes): where the IOMMU puts the
    /// guest's device MSIs while the file is in software ("Device MSIs and moving
    /// files", docs/hyp.md). `None` if the heap had no room (device MSIs to a software
    /// file then fault).
    pub(crate) mrif: Option<DmaBuf>,
}

/// A guest's AIA.
pub struct GuestAia {
    /// vAPLIC window `(base, size)`.
    pub aplic_window: (u64, u64),
    /// Guest-physical address of vCPU 0's IMSIC page.
    pub imsic_base: u64,
    /// The vAPLIC and its physical mirror.
    pub aplic: Mutex<AplicState>,
    /// Per vCPU (guest vCPU id order). `'static` (the guest lives for ever) because
    /// the vAPLIC's MSI sink reaches the files too.
    pub vcpus: &'static [AiaVcpu],
    /// Counters (`'static`: the files' and the vAPLIC's sinks count too).
    pub counts: &'static AiaCounts,
}

/// Why a guest AIA could not be built.
#[derive(Debug)]
pub enum AiaError {
    /// The host has no S-level IMSIC, or its harts lack Ssaia.
    NoHostImsic,
    /// virq-riscv refused the configuration.
    Config(virq_riscv::ConfigError),
}

impl core::fmt::Display for AiaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AiaError::NoHostImsic => f.write_str(
                "the host has no S-level IMSIC with Ssaia (QEMU: -M virt,aia=aplic-imsic)",
            ),
            AiaError::Config(e) => write!(f, "{e}"),
        }
    }
}

impl GuestAia {
    /// The AIA of a guest with `vcpus` vCPUs (global indices from `first_vcpu`), an
    /// APLIC of `sources` sources at `aplic_base` and IMSIC pages from `imsic_base`;
    /// `passthrough` are its `(virq, pirq)` pairs.
    pub fn new(
        vcpus: usize,
        first_vcpu: usize,
        aplic_base: u64,
        sources: u32,
        imsic_base: u64,
        passthrough: &[(Virq, Pirq)],
    ) -> Result<Self, AiaError> {
        let p = crate::platform::platform();
        if p.aia.imsic.is_none() || !p.isa_extensions.iter().any(|e| e == "ssaia") {
            return Err(AiaError::NoHostImsic);
        }
        let counts: &'static AiaCounts = Box::leak(Box::default());
        let mut files = Vec::with_capacity(vcpus);
        for i in 0..vcpus {
            let f = GuestImsic::new(
                i as u32,
                (first_vcpu + i) as u32,
                p.aia.num_ids,
                HwFiles { counts },
                GuestSink { first_vcpu, vcpus },
            )
            .map_err(AiaError::Config)?;
            files.push(AiaVcpu {
                file: Mutex::new(f),
                doorbell: Doorbell::new(),
                vsiselect: AtomicUsize::new(0),
                line: AtomicU32::new(0),
                hvictl: AtomicUsize::new(usize::MAX),
                leaving: AtomicBool::new(false),
                mrif: new_mrif(),
            });
        }
        let files: &'static [AiaVcpu] = Vec::leak(files);
        let dev = GuestAplic::new(
            sources,
            vcpus as u32,
            MsiRouter { files, counts },
            GuestSink { first_vcpu, vcpus },
        )
        .map_err(AiaError::Config)?;
        let aplic_window = (aplic_base, dev.region_size());
        let phys = passthrough
            .iter()
            .map(|&(virq, pirq)| PhysSource {
                virq,
                pirq,
                sourcecfg: u32::MAX,
                target: u32::MAX,
                enabled: false,
                retriggers: 0,
                claims: 0,
            })
            .collect();
        Ok(GuestAia {
            aplic_window,
            imsic_base,
            aplic: Mutex::new(AplicState { dev, phys }),
            vcpus: files,
            counts,
        })
    }

    fn aplic_offset(&self, gpa: u64) -> Option<u64> {
        let (b, s) = self.aplic_window;
        (gpa >= b && gpa < b + s).then(|| gpa - b)
    }

    /// `(vCPU id, offset)` of an address in the IMSIC pages.
    fn page_of(&self, gpa: u64) -> Option<(usize, u64)> {
        let off = gpa.checked_sub(self.imsic_base)?;
        let v = (off / IMSIC_PAGE_SIZE) as usize;
        (v < self.vcpus.len()).then_some((v, off % IMSIC_PAGE_SIZE))
    }
}

impl GuestAia {
    /// Each vCPU's IMSIC page and the MSI page-table entry its file needs now (for
    /// `Iommu::set_msi_pte` when a device is attached).
    pub fn device_msi_ptes(&self) -> Vec<(u64, MsiPte)> {
        (0..self.vcpus.len())
            .map(|v| {
                let backing = self.vcpus[v].file.lock().backing();
                (
                    self.imsic_base + v as u64 * IMSIC_PAGE_SIZE,
                    device_msi_pte(self, v, backing),
                )
            })
            .collect()
    }

    /// `(guest-physical page of vCPU 0's file, vCPU count)`.
    pub fn imsic_pages(&self) -> (u64, usize) {
        (self.imsic_base, self.vcpus.len())
    }

    /// An MRIF notice arrived: move every MRIF's records into its file. Returns the
    /// MSIs moved.
    pub fn drain_mrifs(&self) -> u32 {
        (0..self.vcpus.len()).map(|v| drain_mrif(self, v)).sum()
    }
}

impl GuestIrqChip for GuestAia {
    fn mmio_window(&self, gpa: u64) -> bool {
        self.aplic_offset(gpa).is_some() || self.page_of(gpa).is_some()
    }

    fn mmio(&self, g: &dyn GuestView, _: &Vcpu, gpa: u64, op: MmioOp) -> u64 {
        window_access(g, self, gpa, op)
    }

    fn csr(&self, _: &dyn GuestView, vcpu: &Vcpu, csr: u32, op: CsrOp) -> Option<Result<u64, ()>> {
        csr_access(self, vcpu, csr, op)
    }

    fn inject(&self, g: &dyn GuestView, virq: Virq) -> bool {
        inject(g, self, virq);
        // The guest's own `setipnum` re-trigger ends it (`aplic_access`).
        true
    }

    fn vcpu_load(
        &self,
        g: &dyn GuestView,
        hart: &Hart,
        vcpu: &Vcpu,
        inner: &mut VcpuInner,
    ) -> bool {
        vcpu_load(g, self, hart, vcpu, inner);
        // Its doorbell masks are `hgeie` writes.
        true
    }

    fn before_entry(&self, _: &dyn GuestView, vcpu: &Vcpu, inner: &VcpuInner) {
        before_entry(self, vcpu, inner);
    }

    fn vcpu_put(&self, _: &dyn GuestView, vcpu: &Vcpu) {
        vcpu_put(self, vcpu);
    }

    fn vcpu_migrate_out(&self, g: &dyn GuestView, vcpu: &Vcpu) {
        vcpu_migrate_out(g, self, vcpu);
    }

    /// Migration, step 3 (see `sched`): point the physical APLIC at the new hart's
    /// S-level file for a source that targets the vCPU's software file.
    fn vcpu_migrated(&self, g: &dyn GuestView, _: &Vcpu) {
        resync(g, self);
    }

    fn sgei(&self, _: &dyn GuestView, vcpu: &Vcpu, door: &HgeieDoorbell<'_, HartCsrs>) -> bool {
        let Some(av) = self.vcpus.get(vcpu.id.slot()) else {
            door.mask();
            return false;
        };
        bump(&self.counts.sgei);
        let kick = av.doorbell.fire(door);
        if kick {
            bump(&self.counts.sgei_kicks);
        }
        kick
    }

    fn print_acct(&self, g: &dyn GuestView) {
        print_acct(g, self);
    }

    fn as_aia(&self) -> Option<&GuestAia> {
        Some(self)
    }
}
