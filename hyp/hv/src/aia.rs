//! The AIA guest topology ([`crate::config::Intc::Aia`]) and hyp's host AIA driver.
//!
//! # What the guest sees
//!
//! - An APLIC domain (virq-riscv [`VAplic`]), trap-and-emulate: its window is not in
//!   the G-stage, every access is a guest page fault handled by [`guest_page_fault`].
//!   Linux drives it in MSI mode; the vAPLIC forwards pending-and-enabled sources as
//!   MSIs to the guest's interrupt files ([`MsiRouter`]).
//! - One IMSIC interrupt file per vCPU (virq-riscv [`VcpuImsic`]), guest page
//!   `imsic_base + i * 4 KiB` for vCPU `i`. [`vcpu_load`] calls `VcpuImsic::load` on the
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
//!   `rmw_xtopei`), emulated by [`virtual_csr`] with `VcpuImsic::ireg`/`stopei`; its
//!   VSEIP goes through the vCPU's `PendingSet` ([`FileSink`]). `VcpuImsic::load` is
//!   retried at every load, so the vCPU moves to hardware when a line frees up.
//!   `sireg` with `siselect` 0x30..=0x3F (major interrupt priorities, not available to
//!   VS-mode: virtual instruction in QEMU for any VGEIN) reads 0 and ignores writes.
//!
//! # Doorbells (seed 002)
//!
//! A vCPU with a hardware file that blocks in WFI leaves its line's `hgeie` bit
//! unmasked (virq-core `Doorbell::put(blocking)`, through virq-riscv `HgeieDoorbell`);
//! an MSI reaching the file raises SGEI on its hart, [`handle_sgei`] fires the doorbell
//! and kicks the vCPU. `hgeie` is masked again when the vCPU is loaded, and is never
//! unmasked for a vCPU that is merely descheduled.
//!
//! # Passthrough through the physical APLIC
//!
//! hyp owns the S-level APLIC (OpenSBI delegates every source to it) and drives it in
//! MSI mode. For a source routed (virq-core `RouteTable`) to an AIA guest, the guest's
//! programming of the virtual source (`sourcecfg`, `target`, enable, `domaincfg`) is
//! mirrored after every trapped vAPLIC write and every change of a vCPU's file backing
//! ([`sync_passthrough`]): the physical `target` names the hart and guest file
//! (guest index = line) of the vCPU the guest targets, with the guest's EIID, so the
//! device's MSI lands directly in the guest's file. A write of a passthrough source to
//! the vAPLIC's `setipnum`/`setipnum_le`/`setip` (Linux's level re-trigger at EOI, AIA
//! §4.9.2) is forwarded to the physical `setipnum_le`. When the targeted vCPU has a
//! software file, the physical target is hyp's own S-level file on that vCPU's hart
//! (identity = the physical source number); hyp claims it from `stopei` and pulses the
//! virtual source, which the vAPLIC forwards to the software file
//! ([`crate::irq::aplic_claims`]).
//!
//! Lock order: a guest's vAPLIC lock, then a vCPU file lock; the G-stage lock alone.
//! No lock is held across a remote fence.
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use spin::{Mutex, Once};
use virq_core::doorbell::{Doorbell, PutOutcome};
use virq_riscv::aplic::{SourceMode, VAplic};
use virq_riscv::hext::HgeieDoorbell;
use virq_riscv::imsic::{CsrOp, ImsicFileState};
use virq_riscv::msi::{Backing, GuestFileHw, Msi, MsiSink, VcpuImsic, IMSIC_PAGE_SIZE};
use virq_riscv::{MmioDevice, VcpuIrqSink};

use crate::arch::csr::{self, hstatus_bits, irq_bits, HartCsrs};
use crate::arch::mmio::{HostAplic, ImsicPages};
use crate::exit::{MmioOp, Next};
use crate::guest::{Guest, GuestSink, MAX_VCPUS_PER_GUEST};
use crate::vcpu::{Vcpu, VcpuInner};
use crate::world::{world, Hart};

/// APLIC `domaincfg.IE`.
const DOMAINCFG_IE: u32 = 1 << 8;
/// APLIC `domaincfg.DM` (MSI delivery mode).
const DOMAINCFG_DM: u32 = 1 << 2;
/// Shift of the Hart Index field of an APLIC `target` register.
const TARGET_HART_SHIFT: u32 = 18;
/// Shift of the Guest Index field of an APLIC `target` register (MSI mode).
const TARGET_GUEST_SHIFT: u32 = 12;
/// The EIID field of an APLIC `target` register (MSI mode).
const TARGET_EIID_MASK: u32 = 0x7ff;
/// CSR numbers the guest uses (VS-mode accesses of `sireg`/`stopei` reach `vsireg`/
/// `vstopei`).
const CSR_SIREG: u32 = 0x151;
const CSR_STOPEI: u32 = 0x15c;
/// Illegal-instruction exception code.
const EXC_ILLEGAL: usize = 2;

/// The host AIA as hyp drives it (built once by [`init`]).
pub struct HostAia {
    /// The S-level APLIC domain.
    pub aplic: Option<HostAplic>,
    /// The S-level IMSIC window.
    pages: Option<ImsicPages>,
    /// `riscv,guest-index-bits`.
    gib: u32,
    /// Identities per interrupt file.
    pub num_ids: u32,
    /// The harts implement Ssaia (the IMSIC CSRs exist).
    ssaia: bool,
    /// IMSIC hart index of each hart (by `World::harts` index).
    hart_index: Vec<Option<u32>>,
    /// Identities of hyp's own S-level files that passthrough sources use (= the
    /// physical source numbers), a bitmap.
    sfile_ids: [u64; 4],
    /// Guest-file operations asked for on a hart that does not own the file (a hyp
    /// bug: a vCPU's file leaves its hart before the vCPU migrates).
    remote_ops: AtomicU64,
    /// Test knob (bootarg `aia_flip_ms=N`): hardware files only in even periods of
    /// this many timer ticks, software files in odd ones (0: off). Makes every vCPU's
    /// file move between its hardware line and software, with live state, many times.
    flip_ticks: u64,
}

static HOST: Once<HostAia> = Once::new();

/// The host AIA, once [`init`] ran.
pub fn host() -> Option<&'static HostAia> {
    HOST.get()
}

impl HostAia {
    /// Byte offset in the S-level IMSIC window of guest file `line` of hart `hart`.
    fn file_page(&self, hart: usize, line: u32) -> Option<usize> {
        let idx = (*self.hart_index.get(hart)?)? as usize;
        if line == 0 || line >= (1 << self.gib) {
            return None;
        }
        Some((idx << (self.gib + 12)) + line as usize * IMSIC_PAGE_SIZE as usize)
    }

    /// Host physical address of guest file `line` of hart `hart`.
    fn file_addr(&self, hart: usize, line: u32) -> Option<u64> {
        let (base, _) = crate::world::platform().aia.imsic?;
        Some(base + self.file_page(hart, line)? as u64)
    }

    /// APLIC MSI target naming hyp's S-level file of `hart` with identity `id`.
    fn sfile_target(&self, hart: usize, id: u32) -> Option<u32> {
        let idx = (*self.hart_index.get(hart)?)?;
        Some((idx << TARGET_HART_SHIFT) | (id & TARGET_EIID_MASK))
    }

    /// In `aia_flip_ms` mode, is this a software-only period?
    fn flip_forces_software(&self) -> bool {
        self.flip_ticks != 0 && (crate::arch::time() / self.flip_ticks) % 2 == 1
    }

    /// Does hyp have its own S-level interrupt files (IMSIC and its CSRs)?
    pub fn has_sfiles(&self) -> bool {
        self.pages.is_some() && self.ssaia
    }
}

/// Size of the vAPLIC window for `vcpus` hart indices (as virq-riscv's `VAplic`
/// decodes it: the IDCs end at `0x4000 + 32 * harts`, rounded up to a page).
pub fn aplic_size(vcpus: usize) -> u64 {
    (0x4000 + 32 * vcpus as u64).next_multiple_of(0x1000)
}

/// Build the host AIA description and put the physical APLIC in MSI mode. Boot hart,
/// after the world is published and before any hart initialises.
pub fn init() {
    let p = crate::world::platform();
    let w = world();
    let mut sfile_ids = [0u64; 4];
    for g in &w.guests {
        for &(_, pirq) in &g.passthrough {
            if let Some(word) = sfile_ids.get_mut(pirq as usize / 64) {
                *word |= 1 << (pirq % 64);
            }
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
        hart_index: w
            .harts
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
        flip_ticks: p
            .bootarg("aia_flip_ms")
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |ms| ms * p.timebase / 1000),
    });
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

/// Per-hart set-up of hyp's own S-level IMSIC file (delivery on, threshold 0, the
/// passthrough identities enabled) and of the SGEI enable. Runs on the hart itself.
pub fn hart_init() {
    let Some(h) = host() else { return };
    if !h.has_sfiles() {
        return;
    }
    csr::siselect::write(0x70);
    csr::sireg::write(1);
    csr::siselect::write(0x72);
    csr::sireg::write(0);
    for (j, &bits) in h.sfile_ids.iter().enumerate() {
        if (j as u32) * 64 > h.num_ids {
            break;
        }
        csr::siselect::write(0xc0 + 2 * j);
        csr::sireg::write((bits & !1) as usize);
    }
    csr::hie::set(irq_bits::SGEI);
}

/// Program physical source `pirq` of guest `g` at boot: level-high (the wired
/// devices' sense). A vPLIC guest's source targets hyp's S-level file on the hart that
/// takes the guest's interrupts (identity = `pirq`) and is enabled; an AIA guest's stays
/// disabled until the guest programs its virtual source ([`sync_passthrough`]).
pub fn route_to_sfile(aplic: HostAplic, g: &Guest, pirq: u32) {
    aplic.set_enabled(pirq, false);
    aplic.set_sourcecfg(pirq, SourceMode::Level1 as u32);
    if g.aia.is_some() {
        return;
    }
    let target =
        crate::irq::irq_hart(g).and_then(|h| host().and_then(|x| x.sfile_target(h.index, pirq)));
    match target {
        Some(t) if host().is_some_and(|h| h.has_sfiles()) => {
            aplic.set_target(pirq, t);
            aplic.set_enabled(pirq, true);
        }
        _ => crate::println!("hyp: pirq {pirq}: no S-level IMSIC file to route it to"),
    }
}

/// Any guest external interrupt line of this hart pending and enabled? Read from the
/// source (`hgeip & hgeie`, virq-riscv `sgei_lines`), not from `hip.SGEIP`: QEMU
/// 10.0.2 can leave SGEIP at a stale 0 after an `hgeie` write that races an MSI (see
/// `sgei_lines` and docs/design.md "Doorbells"), and a hart that trusted it would
/// sleep with a blocked vCPU's file pending.
pub fn sgei_pending() -> bool {
    host().is_some_and(|h| h.ssaia) && virq_riscv::hext::sgei_lines(&HartCsrs) != 0
}

/// Claims per host-interrupt pass: what is left stays pending (SEI stays asserted) and
/// is claimed after the scheduler had its turn, so a guest that makes a source fire
/// continuously cannot keep this hart in the claim loop.
const MAX_CLAIMS_PER_PASS: usize = 64;

/// Claim the identities pending in hyp's own S-level file of this hart (`stopei`),
/// calling `f(id)` for each, at most [`MAX_CLAIMS_PER_PASS`] at a time.
pub fn sfile_claims(mut f: impl FnMut(u32)) {
    let Some(h) = host() else { return };
    if !h.has_sfiles() {
        return;
    }
    for _ in 0..MAX_CLAIMS_PER_PASS {
        let id = ((csr::stopei::swap(0) >> 16) & 0x7ff) as u32;
        if id == 0 {
            break;
        }
        f(id);
    }
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
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The hardware guest files, as virq-riscv's `VcpuImsic` reaches them.
#[derive(Clone, Copy)]
pub struct HwFiles {
    guest: u16,
}

impl HwFiles {
    fn counts(&self) -> Option<&'static AiaCounts> {
        let g = world().guests.get(self.guest as usize)?;
        Some(&g.aia.as_ref()?.counts)
    }
}

/// Run `f` with `hstatus.VGEIN = line` on the current hart, which must be `hart`
/// (`vsiselect`/`vsireg` then reach that guest file), restoring `hstatus` and
/// `vsiselect` afterwards. `None` when called for another hart.
fn with_line<T>(hart: usize, line: u32, f: impl FnOnce(usize) -> T) -> Option<T> {
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

fn vs_ireg_read(sel: usize) -> u64 {
    csr::vsiselect::write(sel);
    csr::vsireg::read() as u64
}

fn vs_ireg_write(sel: usize, v: u64) {
    csr::vsiselect::write(sel);
    csr::vsireg::write(v as usize);
}

impl GuestFileHw for HwFiles {
    fn send_msi(&self, hart: usize, line: u32, eiid: u32) {
        let Some(h) = host() else { return };
        if let (Some(pages), Some(page)) = (h.pages, h.file_page(hart, line)) {
            if pages.send(page, eiid) {
                if let Some(c) = self.counts() {
                    bump(&c.hw_msis_by_hyp);
                }
            }
        }
    }

    fn save(&self, hart: usize, line: u32) -> ImsicFileState {
        with_line(hart, line, |words| {
            let mut s = ImsicFileState {
                eidelivery: vs_ireg_read(0x70) as u32,
                eithreshold: vs_ireg_read(0x72) as u32,
                ..ImsicFileState::default()
            };
            for j in 0..words.min(s.eip.len()) {
                s.eip[j] = vs_ireg_read(0x80 + 2 * j);
                s.eie[j] = vs_ireg_read(0xc0 + 2 * j);
            }
            s
        })
        .unwrap_or_default()
    }

    fn restore(&self, hart: usize, line: u32, state: &ImsicFileState) {
        with_line(hart, line, |words| {
            vs_ireg_write(0x70, 0);
            for j in 0..words.min(state.eip.len()) {
                vs_ireg_write(0xc0 + 2 * j, state.eie[j]);
                vs_ireg_write(0x80 + 2 * j, state.eip[j]);
            }
            vs_ireg_write(0x72, u64::from(state.eithreshold));
            vs_ireg_write(0x70, u64::from(state.eidelivery));
        });
    }
}

/// VSEIP of a vCPU with a software file: its `PendingSet` (id 10) and a kick. The
/// `vcpu` number is the global vCPU index.
pub struct FileSink;

impl VcpuIrqSink for FileSink {
    fn set_vseip(&self, vcpu: u32, level: bool) {
        if let Some(v) = world().vcpus.get(vcpu as usize) {
            if level {
                v.raise(virq_riscv::hext::IRQ_VS_EXT);
            } else {
                v.lower(virq_riscv::hext::IRQ_VS_EXT);
            }
        }
    }
}

/// A vCPU's interrupt file.
pub type GuestImsic = VcpuImsic<HwFiles, FileSink>;

/// Where the vAPLIC's MSIs go: the interrupt file of the guest vCPU whose index is the
/// MSI's hart index.
pub struct MsiRouter {
    guest: u16,
}

impl MsiSink for MsiRouter {
    fn send_msi(&mut self, msi: Msi) -> bool {
        let Some(aia) = world()
            .guests
            .get(self.guest as usize)
            .and_then(|g| g.aia.as_ref())
        else {
            return false;
        };
        let Some(av) = aia.vcpus.get(msi.hart as usize) else {
            return false;
        };
        bump(&aia.counts.aplic_forwards);
        let mut f = av.file.lock();
        if f.backing() == Backing::Software {
            bump(&aia.counts.sw_msis);
        }
        f.send_msi(msi)
    }
}

/// The guest's vAPLIC.
pub type GuestAplic = VAplic<MsiRouter, GuestSink, MAX_VCPUS_PER_GUEST>;

/// What hyp last programmed into the physical APLIC for one passthrough source.
#[derive(Clone, Copy, Debug)]
struct PhysSource {
    virq: u32,
    pirq: u32,
    sourcecfg: u32,
    target: u32,
    enabled: bool,
    /// Software-file path: an MSI was injected into the vAPLIC and the guest has not
    /// re-triggered yet; the physical source stays disabled meanwhile (its further
    /// rising edges only pend it), so a line the device toggles per byte does not
    /// send hyp one MSI per edge.
    held: bool,
    /// Level re-triggers forwarded (guest `setipnum` writes).
    retriggers: u64,
    /// Claims from hyp's S-level file (software-file path).
    claims: u64,
}

/// The vAPLIC and the physical mirror of its passthrough sources (one lock).
pub struct AplicState {
    /// The device.
    pub dev: GuestAplic,
    phys: Vec<PhysSource>,
}

/// One vCPU's AIA state.
pub struct AiaVcpu {
    /// Its interrupt file.
    pub file: Mutex<GuestImsic>,
    /// Its SGEI doorbell.
    pub doorbell: Doorbell,
    /// The guest's `vsiselect` while the vCPU is not loaded.
    vsiselect: AtomicUsize,
    /// Hardware line in use on the vCPU's hart (0: software file); written by the home
    /// hart at load.
    line: AtomicU32,
    /// The `hvictl` value last written for this vCPU while loaded.
    hvictl: AtomicUsize,
    /// The file is leaving its hardware line: the physical APLIC must not target it.
    leaving: AtomicBool,
}

/// A guest's AIA.
pub struct GuestAia {
    /// vAPLIC window `(base, size)`.
    pub aplic_window: (u64, u64),
    /// Guest-physical address of vCPU 0's IMSIC page.
    pub imsic_base: u64,
    /// The vAPLIC and its physical mirror.
    pub aplic: Mutex<AplicState>,
    /// Per vCPU (guest vCPU id order).
    pub vcpus: Vec<AiaVcpu>,
    /// Counters.
    pub counts: AiaCounts,
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
    /// The AIA of guest `guest` with `vcpus` vCPUs (global indices from `first_vcpu`),
    /// an APLIC of `sources` sources at `aplic_base` and IMSIC pages from `imsic_base`;
    /// `passthrough` are its `(virq, pirq)` pairs.
    pub fn new(
        guest: u16,
        vcpus: usize,
        first_vcpu: usize,
        aplic_base: u64,
        sources: u32,
        imsic_base: u64,
        passthrough: &[(u32, u32)],
    ) -> Result<Self, AiaError> {
        let p = crate::world::platform();
        if p.aia.imsic.is_none() || !p.isa_extensions.iter().any(|e| e == "ssaia") {
            return Err(AiaError::NoHostImsic);
        }
        let dev = GuestAplic::new(
            sources,
            vcpus as u32,
            MsiRouter { guest },
            GuestSink { first_vcpu, vcpus },
        )
        .map_err(AiaError::Config)?;
        let aplic_window = (aplic_base, dev.region_size());
        let mut files = Vec::new();
        for i in 0..vcpus {
            let f = GuestImsic::new(
                i as u32,
                (first_vcpu + i) as u32,
                p.aia.num_ids,
                HwFiles { guest },
                FileSink,
            )
            .map_err(AiaError::Config)?;
            files.push(AiaVcpu {
                file: Mutex::new(f),
                doorbell: Doorbell::new(),
                vsiselect: AtomicUsize::new(0),
                line: AtomicU32::new(0),
                hvictl: AtomicUsize::new(usize::MAX),
                leaving: AtomicBool::new(false),
            });
        }
        let phys = passthrough
            .iter()
            .map(|&(virq, pirq)| PhysSource {
                virq,
                pirq,
                sourcecfg: u32::MAX,
                target: u32::MAX,
                enabled: false,
                held: false,
                retriggers: 0,
                claims: 0,
            })
            .collect();
        Ok(GuestAia {
            aplic_window,
            imsic_base,
            aplic: Mutex::new(AplicState { dev, phys }),
            vcpus: files,
            counts: AiaCounts::default(),
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

/// Mirror the guest's programming of its passthrough sources to the physical APLIC
/// (see the module docs). Called with the vAPLIC lock held (`st`).
fn sync_passthrough(g: &Guest, aia: &GuestAia, st: &mut AplicState) {
    let Some(h) = host() else { return };
    let Some(aplic) = h.aplic else { return };
    let w = world();
    let dcfg = st.dev.read(0, 4) as u32;
    let domain_on = dcfg & DOMAINCFG_IE != 0 && dcfg & DOMAINCFG_DM != 0;
    for ps in st.phys.iter_mut() {
        let mode = st.dev.source_mode(ps.virq);
        let vt = st.dev.read(0x3000 + 4 * u64::from(ps.virq), 4) as u32;
        let t = (vt >> TARGET_HART_SHIFT) as usize;
        let eiid = vt & TARGET_EIID_MASK;
        let mut target = None;
        if let Some(av) = aia.vcpus.get(t) {
            let backing = if av.leaving.load(Ordering::Relaxed) {
                Backing::Software
            } else {
                av.file.lock().backing()
            };
            target = match backing {
                Backing::Hardware { hart, line } => h
                    .hart_index
                    .get(hart)
                    .copied()
                    .flatten()
                    .map(|idx| (idx << TARGET_HART_SHIFT) | (line << TARGET_GUEST_SHIFT) | eiid),
                Backing::Software => {
                    let hart = w.vcpus[g.first_vcpu + t].home();
                    h.sfile_target(hart, ps.pirq)
                }
            };
        }
        let enable = domain_on
            && !ps.held
            && mode != SourceMode::Inactive
            && st.dev.is_enabled(ps.virq)
            && target.is_some();
        if !enable && ps.enabled {
            aplic.set_enabled(ps.pirq, false);
            ps.enabled = false;
        }
        // The physical source always follows the real wire (level-high); the guest's
        // choice of mode (edge, detached, …) is emulated by the vAPLIC only. So a
        // forwarded `setipnum` can only re-trigger while the device really asserts
        // its line: a guest cannot turn re-trigger writes into a physical MSI flood.
        let phys_mode = SourceMode::Level1 as u32;
        if mode != SourceMode::Inactive && ps.sourcecfg != phys_mode {
            ps.sourcecfg = phys_mode;
            aplic.set_sourcecfg(ps.pirq, ps.sourcecfg);
            // A (re)activated source's target reads back its reset value.
            ps.target = u32::MAX;
        }
        if let Some(t) = target {
            if ps.target != t && ps.sourcecfg != u32::MAX {
                ps.target = t;
                aplic.set_target(ps.pirq, t);
            }
        }
        if enable && !ps.enabled {
            aplic.set_enabled(ps.pirq, true);
            ps.enabled = true;
        }
    }
}

/// Re-sync the physical mirror of guest `g` (after one of its files changed backing).
fn resync(g: &Guest) {
    if let Some(aia) = g.aia.as_ref() {
        let mut st = aia.aplic.lock();
        sync_passthrough(g, aia, &mut st);
    }
}

/// The virtual sources a write to the vAPLIC at `off` asks to set pending.
fn setip_sources(off: u64, v: u32, mut f: impl FnMut(u32)) {
    match off {
        0x1cdc | 0x2000 => f(v),
        0x2004 => f(v.swap_bytes()),
        0x1c00..0x1c80 => {
            let k = ((off - 0x1c00) / 4) as u32;
            let mut x = v;
            while x != 0 {
                f(k * 32 + x.trailing_zeros());
                x &= x - 1;
            }
        }
        _ => {}
    }
}

/// A trapped vAPLIC access.
fn aplic_access(g: &Guest, aia: &GuestAia, off: u64, op: MmioOp) -> u64 {
    let mut st = aia.aplic.lock();
    match op {
        MmioOp::Read { size } => {
            bump(&aia.counts.aplic_reads);
            st.dev.read(off, size)
        }
        MmioOp::Write { size, value } => {
            bump(&aia.counts.aplic_writes);
            // A re-trigger of a passthrough source ends the virtual "asserted" state
            // of its wire (see `inject`); the physical APLIC re-evaluates the real line.
            let mut retrigger = [0u32; 4];
            let mut tokens = [0u32; 4];
            let mut n = 0;
            if size == 4 {
                let st = &mut *st;
                setip_sources(off, value as u32, |virq| {
                    if let Some(ps) = st.phys.iter_mut().find(|p| p.virq == virq) {
                        ps.retriggers += 1;
                        ps.held = false;
                        set_asserted(&mut st.dev, virq, false);
                        if let Some(slot) = retrigger.get_mut(n) {
                            *slot = ps.pirq;
                            tokens[n] = g.acks.token(virq).unwrap_or(0);
                            n += 1;
                        }
                    }
                });
            }
            st.dev.write(off, size, value);
            // Re-trigger before `sync_passthrough` re-enables a held source: one MSI if
            // the line is still asserted (or rose while held).
            if let Some(a) = host().and_then(|h| h.aplic) {
                for &pirq in &retrigger[..n] {
                    a.setipnum(pirq);
                }
            }
            // The re-trigger is this topology's guest completion: it ends the level
            // delivery the route deferred to the guest (`RouteTable::guest_completed`
            // clears the token `deliver` parked; a stale token is refused).
            for &token in tokens[..n].iter().filter(|&&t| t != 0) {
                let _ = world().routes.guest_completed(token);
            }
            sync_passthrough(g, aia, &mut st);
            0
        }
    }
}

/// A guest page fault in the guest's AIA windows (vAPLIC or a software-backed IMSIC
/// page); `None` when `gpa` is not one of them.
pub fn guest_page_fault(vcpu: &Vcpu, inner: &mut VcpuInner, gpa: u64) -> Option<Next> {
    let w = world();
    let g = &w.guests[vcpu.guest];
    let aia = g.aia.as_ref()?;
    if let Some(off) = aia.aplic_offset(gpa) {
        return Some(crate::exit::emulate_mmio(inner, |op| {
            aplic_access(g, aia, off, op)
        }));
    }
    let (v, off) = aia.page_of(gpa)?;
    let av = &aia.vcpus[v];
    Some(crate::exit::emulate_mmio(inner, |op| {
        let mut f = av.file.lock();
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
    }))
}

/// A virtual-instruction exception that may be a `sireg`/`stopei` access of a vCPU
/// with a software file (see the module docs); `None` when it is not one.
pub fn virtual_csr(vcpu: &Vcpu, inner: &mut VcpuInner, insn: u32) -> Option<Next> {
    let w = world();
    let aia = w.guests[vcpu.guest].aia.as_ref()?;
    let funct3 = (insn >> 12) & 7;
    if insn & 0x7f != 0x73 || funct3 == 0 || funct3 == 4 {
        return None;
    }
    let csr_no = insn >> 20;
    if csr_no != CSR_SIREG && csr_no != CSR_STOPEI {
        return None;
    }
    let rd = ((insn >> 7) & 31) as usize;
    let rs1 = ((insn >> 15) & 31) as usize;
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
    let av = aia.vcpus.get(vcpu.id as usize)?;
    let r = if csr_no == CSR_SIREG {
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
    };
    match r {
        Ok(v) => {
            if rd != 0 {
                inner.ctx.guest.x[rd] = v as usize;
            }
            inner.ctx.guest.sepc = inner.ctx.guest.sepc.wrapping_add(4);
        }
        Err(()) => crate::exit::inject_exception(inner, EXC_ILLEGAL, insn as usize),
    }
    Some(Next::Resume)
}

/// Point vCPU `v`'s IMSIC page of guest `g` at `backing` (its hardware file, or
/// nowhere for a software file) and flush every hart's G-stage TLB. No lock held.
fn map_page(g: &Guest, aia: &GuestAia, v: usize, backing: Backing) {
    let gpa = aia.imsic_base + v as u64 * IMSIC_PAGE_SIZE;
    let hpa = match backing {
        Backing::Hardware { hart, line } => host().and_then(|h| h.file_addr(hart, line)),
        Backing::Software => None,
    };
    if let Err(e) = g
        .gstage
        .lock()
        .set_page(gpa, hpa, crate::gstage::R | crate::gstage::W)
    {
        crate::println!("hyp: guest {}: IMSIC page {gpa:#x}: {e:?}", g.index);
    }
    crate::arch::fence();
    crate::arch::hfence_gvma_all();
    let here = crate::arch::hart_local();
    let others = world()
        .harts
        .iter()
        .filter(|h| h.index != here)
        .fold(0u64, |m, h| m | (1 << h.index));
    crate::irq::remote_fence(others);
}

/// The vCPU is about to run on `hart` (see the module docs): its interrupt file there,
/// its page in the G-stage, `hstatus.VGEIN` for the guest, its `vsiselect`, and its
/// doorbell masked. For a guest without AIA: `hstatus.VGEIN = 0`.
pub fn vcpu_load(hart: &Hart, vcpu: &Vcpu, inner: &mut VcpuInner) {
    let w = world();
    let g = &w.guests[vcpu.guest];
    let Some(aia) = g.aia.as_ref() else {
        if host().is_some_and(|h| h.ssaia) {
            csr::hstatus::clear(hstatus_bits::VGEIN_MASK);
            csr::hvictl::write(0);
        }
        inner.ctx.guest.hstatus &= !hstatus_bits::VGEIN_MASK;
        return;
    };
    let id = vcpu.id as usize;
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
        av.file.lock().load(hart.index, &w.hgei, &HartCsrs)
    };
    if after != was {
        if matches!(after, Backing::Hardware { .. }) {
            bump(&aia.counts.to_hw);
        }
        map_page(g, aia, id, after);
    }
    if after != before {
        resync(g);
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
    before_entry(vcpu, inner);
    if line != 0 && line != old_line {
        // A new line: its doorbell starts masked (put unmasks it only when blocking).
        let _ = av.doorbell.load(&HgeieDoorbell::new(&HartCsrs, line));
    }
    // The masks above are `hgeie` writes: one that raced an MSI to another blocked
    // vCPU's line can have left `hip.SGEIP` at a stale 0, and the guest about to run
    // may not exit for a long time. Serve what the source says now.
    if sgei_pending() {
        handle_sgei(hart);
    }
}

/// Move vCPU `id`'s hardware file to software, on the hart that owns the file: once
/// its state is saved no guest store and no device MSI may reach it, so the page goes
/// out of the G-stage (and every TLB) and the physical APLIC is retargeted to hyp's
/// S-level file first, then `VcpuImsic::evict` saves, scrubs and frees the line.
fn leave_hardware_file(g: &Guest, aia: &GuestAia, id: usize) {
    let av = &aia.vcpus[id];
    av.leaving.store(true, Ordering::Relaxed);
    map_page(g, aia, id, Backing::Software);
    resync(g);
    av.file.lock().evict(&world().hgei);
    av.leaving.store(false, Ordering::Relaxed);
    bump(&aia.counts.to_sw);
}

/// Migration, step 1 (see `sched`): the descheduled `vcpu` leaves this hart, its home.
/// Runs on that hart, because saving a hardware guest file reads it through `vsireg`
/// under `hstatus.VGEIN`, which only the owning hart can do. Its doorbell is masked
/// and forgotten (`hgeie` of its line), and a hardware file leaves as in
/// [`vcpu_load`]: page out of the G-stage and every TLB, the physical APLIC
/// retargeted, then `VcpuImsic::evict` (save, scrub, free the line). The file is in
/// software afterwards; MSIs meanwhile trap into it and kick the vCPU.
pub fn vcpu_migrate_out(vcpu: &Vcpu) {
    let w = world();
    let g = &w.guests[vcpu.guest];
    let Some(aia) = g.aia.as_ref() else {
        return;
    };
    let id = vcpu.id as usize;
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

/// Migration, step 3 (see `sched`): `vcpu`'s new home is stored; point the physical
/// APLIC at the new hart's S-level file for a source that targets its software file.
pub fn vcpu_migrated(vcpu: &Vcpu) {
    resync(&world().guests[vcpu.guest]);
}

/// Right before each guest entry (after `HvipSync::flush`): with a software file
/// (`hstatus.VGEIN = 0`), `vstopi` reports the VS external interrupt that `hvip.VSEIP`
/// signals only through `hvictl` (AIA §6.3.3; QEMU `read_vstopi`), and Linux's AIA
/// interrupt handler reads `stopi` to find it. So `hvictl.IID = 9` with `IPRIO = 1`
/// while `hvip.VSEIP` is set, `IPRIO = 0` (nothing reported) otherwise — what KVM does.
pub fn before_entry(vcpu: &Vcpu, inner: &VcpuInner) {
    let w = world();
    let Some(aia) = w.guests[vcpu.guest].aia.as_ref() else {
        return;
    };
    let av = &aia.vcpus[vcpu.id as usize];
    let vseip = inner.hvip.shadow_hvip() & virq_riscv::hext::HVIP_VSEIP != 0;
    let want = (9 << 16) | usize::from(vseip);
    if av.hvictl.swap(want, Ordering::Relaxed) != want {
        csr::hvictl::write(want);
    }
}

/// The vCPU leaves its hart: keep its `vsiselect`; with a hardware file, put its
/// doorbell (unmasked only if it blocks in WFI; if the doorbell already rang, the vCPU
/// stays runnable).
pub fn vcpu_put(vcpu: &Vcpu) {
    let w = world();
    let Some(aia) = w.guests[vcpu.guest].aia.as_ref() else {
        return;
    };
    let av = &aia.vcpus[vcpu.id as usize];
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

/// The SGEI of this hart: fire the doorbells of the lines that rang and kick their
/// vCPUs (virq-riscv `handle_sgei`; lines without an owner are masked).
pub fn handle_sgei(hart: &Hart) {
    if !host().is_some_and(|h| h.ssaia) {
        return;
    }
    let w = world();
    virq_riscv::hext::handle_sgei(&HartCsrs, hart.index, &w.hgei, |owner, door| {
        let Some(v) = w.vcpus.get(owner as usize) else {
            return;
        };
        let Some(aia) = w.guests[v.guest].aia.as_ref() else {
            return;
        };
        bump(&aia.counts.sgei);
        if aia.vcpus[v.id as usize].doorbell.fire(door) {
            bump(&aia.counts.sgei_kicks);
            v.kick();
        }
    });
}

/// A physical interrupt claimed from hyp's S-level file for virtual source `virq` of
/// AIA guest `g` (its target vCPU has a software file). For a level source the virtual
/// wire goes high and stays high until the guest re-triggers the source (`setipnum`,
/// AIA §4.9.2), as the real line does until the device is serviced: the vAPLIC pends
/// it on the rising edge and forwards it when enabled, so an MSI that arrives while
/// the guest has the source masked is held, not lost. For an edge source: one pulse.
pub fn inject(g: &Guest, virq: u32) {
    let Some(aia) = g.aia.as_ref() else { return };
    let mut st = aia.aplic.lock();
    let level = matches!(
        st.dev.source_mode(virq),
        SourceMode::Level1 | SourceMode::Level0
    );
    if let Some(ps) = st.phys.iter_mut().find(|p| p.virq == virq) {
        ps.claims += 1;
        ps.held = level;
    }
    set_asserted(&mut st.dev, virq, true);
    if !level {
        set_asserted(&mut st.dev, virq, false);
    }
    sync_passthrough(g, aia, &mut st);
}

/// Drive virtual source `virq`'s wire so that its rectified input is `on` (the wire is
/// inverted for the active-low / falling-edge modes).
fn set_asserted(dev: &mut GuestAplic, virq: u32, on: bool) {
    let inverted = matches!(
        dev.source_mode(virq),
        SourceMode::Level0 | SourceMode::Edge0
    );
    dev.set_input(virq, on != inverted);
}

/// The `ACCT` lines of the AIA guests.
pub fn print_acct() {
    let w = world();
    for g in &w.guests {
        let Some(aia) = g.aia.as_ref() else { continue };
        let c = &aia.counts;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (mut hw, mut sw) = (0, 0);
        for (i, av) in aia.vcpus.iter().enumerate() {
            let b = av.file.lock().backing();
            match b {
                Backing::Hardware { hart, line } => {
                    hw += 1;
                    crate::println!(
                        "ACCT vcpu={} guest={} id={} imsic=hw hart={} line={}",
                        g.first_vcpu + i,
                        g.cfg.name,
                        i,
                        w.harts[hart].hartid,
                        line
                    );
                }
                Backing::Software => {
                    sw += 1;
                    crate::println!(
                        "ACCT vcpu={} guest={} id={} imsic=sw",
                        g.first_vcpu + i,
                        g.cfg.name,
                        i
                    );
                }
            }
        }
        crate::println!(
            "ACCT guest={} aia files_hw={} files_sw={} to_hw={} to_sw={} imsic_page_traps={} msis_to_sw_files={} msis_to_hw_files_by_hyp={} csr_traps={} iprio_traps={} sgei={} sgei_kicks={} aplic_reads={} aplic_writes={} aplic_forwards={}",
            g.cfg.name,
            hw,
            sw,
            n(&c.to_hw),
            n(&c.to_sw),
            n(&c.page_msis),
            n(&c.sw_msis),
            n(&c.hw_msis_by_hyp),
            n(&c.csr_traps),
            n(&c.iprio_traps),
            n(&c.sgei),
            n(&c.sgei_kicks),
            n(&c.aplic_reads),
            n(&c.aplic_writes),
            n(&c.aplic_forwards),
        );
        let st = aia.aplic.lock();
        let e = st.dev.errors();
        crate::println!(
            "ACCT guest={} vaplic_ignored bad_width={} misaligned={} unmapped={} read_only={} ignored_value={}",
            g.cfg.name, e.bad_width, e.misaligned, e.unmapped, e.read_only, e.ignored_value
        );
        for ps in st.phys.iter() {
            let phys = host()
                .and_then(|h| h.aplic)
                .map_or(0, |a| a.target(ps.pirq));
            crate::println!(
                "ACCT guest={} aia pirq={} virq={} retriggers={} hyp_claims={} phys_target={:#x} enabled={}",
                g.cfg.name,
                ps.pirq,
                ps.virq,
                ps.retriggers,
                ps.claims,
                phys,
                ps.enabled
            );
        }
    }
    if let Some(h) = host() {
        let r = h.remote_ops.load(Ordering::Relaxed);
        if r != 0 {
            crate::println!("ACCT aia remote_file_ops={r}");
        }
    }
}
