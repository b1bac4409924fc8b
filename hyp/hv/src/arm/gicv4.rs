//! GICv4.0 direct injection (issue 14, first step): the host ITS driver, a vPE per
//! vCPU of a `topology = "vgicv4"` guest, and its doorbell through virq-core's
//! [`Doorbell`] (seed 002's protocol and loom models).
//!
//! **Host ITS** ([`init`], boot CPU, only when a guest asks for vgicv4): the ITS
//! disabled and quiescent, its `GITS_BASER` tables (device, collection, vPE; flat, 4
//! KiB pages) and command queue given memory, then enabled; one collection per CPU
//! (ICID = CPU, RDbase = its processor number: `GITS_TYPER.PTA` = 0); hyp's two
//! devices mapped — [`PROXY_DEVICE`] (event n: doorbell LPI 8192 + n, so that an
//! INV can reach it: QEMU has no DirectLPI) and [`TEST_DEVICE`] (event
//! [`VLPIS_PER_VPE`]·n + k: vINTID 8192 + k of vPE n, the stand-in for a device's MSI).
//! Every command goes through `hyp_io::gic_its::CmdQueue`: each completion is waited
//! for with [`BOUND`] and a failure is an `ItsError` naming the command.
//! **Host LPIs** ([`init_cpu`], each CPU): one configuration table (IDbits 14: LPIs
//! 8192..16383), a pending table per redistributor, `GICR_CTLR.EnableLPIs`.
//!
//! **vPEs** ([`new_vpes`], at guest creation): per guest a vLPI configuration table
//! (hyp's, enabling vINTIDs 8192..8192 + [`VLPIS_PER_VPE`]) and its doorbell LPIs,
//! blocks of 32 from virq-core's `DoorbellIds` (seed 002's allocator: a failed
//! multi-block allocation unwinds exactly what it set up, counting down with a checked
//! subtraction) whose `BlockHooks` map each LPI on the proxy device (MAPTI, INV) and
//! unmap it (DISCARD); per vCPU a virtual pending table, VMAPP to its home CPU's
//! redistributor, and VMAPTI of its test events with its doorbell (masked).
//!
//! **Residency** follows the scheduler, not the exits ([`load`] when the vCPU's run
//! starts on its home CPU, [`put`] when it ends: blocked, switched out, off), so an
//! exit handled while the vCPU stays in the CPU costs nothing more:
//! - load: `GICR_VPROPBASER`, then `GICR_VPENDBASER` with Valid (one 64-bit write),
//!   `Dirty` polled with a bound; then `Doorbell::load` (masks the doorbell);
//! - put: `GICR_VPENDBASER` Valid = 0, `Dirty` polled with a bound, `PendingLast` read
//!   (assumed 1 if `Dirty` never clears, as Linux's `its_clear_vpend_valid`); then
//!   `Doorbell::put(blocking)`, whose unmask reports that `PendingLast`.
//!
//! Masking a doorbell = its configuration byte's Enable, then INV of its proxy event
//! and SYNC (the redistributor caches the byte); [`Vpe::enabled`] skips the commands
//! when the byte already says so (only the vPE's home CPU changes it: load and put run
//! there, and the doorbell is raised at the vPE's RDbase, the home CPU, where
//! [`fire`] runs — across a migration possibly before the new home stored itself: then
//! the new home has not loaded the vPE yet, and `Doorbell`'s atomics order that fire
//! against the new home's load or put as against any other).
//!
//! **Migration** ([`move_to`], `migrate_ms`, docs/gicv4.md §11): the old home, with
//! the vCPU descheduled and its vPE non-resident, stores the vPE's new CPU and sends
//! VMOVP to that CPU's redistributor and MOVI of the doorbell's proxy event to its
//! collection, before the vCPU's home changes; the new home's [`load`] then makes it
//! resident there. A doorbell is therefore always taken on its vPE's CPU; [`fire`]
//! counts one taken elsewhere (`StaleDoorbell`: a vPE that was not moved).
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use hyp_io::gic_its::{
    self as f, gicr, gits, vpendbaser, Baser, BaserType, Cmd, CmdQueue, GitsTyper, ItsError,
    ItsRegs,
};
use spin::{Mutex, Once};
use virq_core::doorbell::{
    BlockHooks, Doorbell, DoorbellHw, DoorbellIdError, DoorbellIds, DoorbellState, PutOutcome,
    BLOCK,
};

use crate::arch::{self, gic, its::ItsMmio, phys::DmaBuf};
use crate::println;

/// INTID bits of hyp's LPIs and of every vPE's vLPIs: INTIDs below 2^14.
pub const ID_BITS: u32 = 14;
/// LPIs in a configuration table (8192..16384).
const LPIS: usize = (1 << ID_BITS) - f::LPI_BASE as usize;
/// INTID bits of every vPE's vLPIs (its VPT and `GICR_VPROPBASER`): vINTIDs below
/// 2^16, the guest's `GICD_TYPER.IDbits` + 1 with its vITS.
pub const VID_BITS: u32 = 16;
/// vLPIs in a guest's configuration table (8192..65536).
const VLPIS: usize = (1 << VID_BITS) - f::LPI_BASE as usize;
/// DeviceID of the doorbell proxy device.
pub const PROXY_DEVICE: u32 = 0;
/// DeviceID of the test vLPI source.
pub const TEST_DEVICE: u32 = 1;
/// Test vLPIs per vPE: vINTIDs 8192..8192 + this.
pub const VLPIS_PER_VPE: u32 = 4;
/// EventID bits of hyp's two devices.
const EVENT_BITS: u32 = 8;
/// vPEs hyp can make (the test device's events).
pub const MAX_VPES: u16 = (1 << EVENT_BITS) / VLPIS_PER_VPE as u16;
/// Doorbell LPIs come from virq-core's `DoorbellIds` in blocks of 32 from here; the
/// proxy device's event for doorbell d is `d - DOORBELL_BASE`.
pub const DOORBELL_BASE: u32 = f::LPI_BASE;
/// Doorbell blocks: the proxy device's 2^[`EVENT_BITS`] events.
const DOORBELL_BLOCKS: usize = (1 << EVENT_BITS) / BLOCK as usize;
/// Priority of doorbells and test vLPIs.
const PRIORITY: u8 = 0xa0;
/// Longest wait for an ITS command or a `VPENDBASER.Dirty`: 10 ms of the 1 GHz
/// counter.
pub const BOUND: u64 = 10_000_000;

/// A GICv4 failure hyp reports (with what did not happen).
#[derive(Clone, Copy, Debug)]
pub enum Gicv4Error {
    /// An ITS command failed.
    Its(ItsError),
    /// `GICR_VPENDBASER.Dirty` stayed 1 after a Valid change (`valid` = the new value).
    DirtyTimeout { vpe: u16, valid: bool },
    /// A vPE was to move to a CPU with no redistributor.
    NoCpu { cpu: usize },
    /// A vPE about to be made resident on `cpu` was still mapped to `at`.
    NotMoved { vpe: u16, at: usize, cpu: usize },
    /// The doorbell of a vPE mapped to `at` was taken on `cpu` (raised at a
    /// redistributor the vPE was moved away from: a VMOVP that did not happen).
    StaleDoorbell { vpe: u16, at: usize, cpu: usize },
}

impl core::fmt::Display for Gicv4Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Gicv4Error::Its(e) => write!(f, "{e}"),
            Gicv4Error::DirtyTimeout { vpe, valid } => write!(
                f,
                "GICR_VPENDBASER.Dirty still 1 after making vPE {vpe} {}",
                if *valid { "resident" } else { "non-resident" }
            ),
            Gicv4Error::NoCpu { cpu } => write!(f, "no redistributor for CPU {cpu}"),
            Gicv4Error::StaleDoorbell { vpe, at, cpu } => write!(
                f,
                "doorbell of vPE {vpe} (mapped to CPU {at}) taken on CPU {cpu}"
            ),
            Gicv4Error::NotMoved { vpe, at, cpu } => write!(
                f,
                "vPE {vpe} loaded on CPU {cpu} while mapped to CPU {at} (not moved: moved now)"
            ),
        }
    }
}

struct Its {
    regs: ItsMmio,
    q: CmdQueue,
}

struct Host {
    its: Mutex<Its>,
    /// The host LPI configuration table.
    prop: DmaBuf,
    /// Each CPU's LPI pending table.
    pend: Vec<DmaBuf>,
    /// Each CPU's processor number (RDbase).
    rdbase: Vec<u64>,
    next_vpe: AtomicU16,
    /// Doorbell LPI blocks (seed 002's allocator, with its checked unwind).
    doorbell_ids: DoorbellIds<DOORBELL_BLOCKS>,
    /// ITS or Dirty failures seen (the first 8 printed).
    errors: AtomicU32,
    /// Bytes of an ITT entry (`GITS_TYPER.ITT_entry_size`).
    itt_entry: usize,
    /// A VMOVP's `ITSList`: 0 when `GITS_TYPER.VMOVP` is 1 (QEMU's), else this ITS's
    /// bit (`GITS_CTLR.ITS_Number`; hyp drives one ITS).
    vmovp_list: u16,
    /// A VMOVP's `SequenceNumber` when `vmovp_list` is not 0 (each move its own).
    vmovp_seq: AtomicU16,
}

static HOST: Once<Host> = Once::new();

fn host() -> Option<&'static Host> {
    HOST.get()
}

fn report(e: Gicv4Error) {
    if let Some(h) = host() {
        if h.errors.fetch_add(1, Ordering::Relaxed) < 8 {
            println!("hyp: GICv4: {e}");
        }
    }
}

/// Send `cmds` to the host ITS and wait for them.
fn submit(cmds: &[Cmd]) -> Result<(), Gicv4Error> {
    let h = host().ok_or(Gicv4Error::Its(ItsError::QueueFull { creadr: 0 }))?;
    let mut its = h.its.lock();
    let Its { regs, q } = &mut *its;
    q.submit(regs, cmds).map_err(Gicv4Error::Its)
}

/// Boot CPU: bring up the ITS whose control frame is at `base` for `cpus` CPUs (see
/// the module docs).
pub fn init(base: usize, cpus: usize) -> Result<(), String> {
    if host().is_some() {
        return Ok(());
    }
    let buf = |len: usize, align: usize| {
        DmaBuf::new(len, align).ok_or_else(|| String::from("GICv4: heap exhausted"))
    };
    // SAFETY: `base` is the control frame of the `arm,gic-v3-its` node of the host
    // DTB; this is the only `ItsMmio` for it (`HOST` is set once, below).
    let mut regs = unsafe { ItsMmio::new(base, buf(0x1000, 0x1_0000)?) };
    regs.write(gits::CTLR, 0);
    f::poll_bounded(
        || regs.read(gits::CTLR),
        |v| v & gits::CTLR_QUIESCENT != 0,
        arch::time,
        BOUND,
    )
    .map_err(|v| {
        format!("host ITS: GITS_CTLR.Quiescent never set after disabling it (GITS_CTLR {v:#x})")
    })?;
    let typer = GitsTyper(regs.read(gits::TYPER));
    let vmovp_list = if typer.vmovp() {
        0
    } else {
        1 << gits::ctlr_its_number(regs.read(gits::CTLR))
    };
    if !typer.virt() {
        return Err(
            "host ITS has no GICv4 (GITS_TYPER.Virtual = 0; need -M virt,gic-version=4)".into(),
        );
    }
    if typer.pta() {
        return Err("host ITS: GITS_TYPER.PTA = 1 (physical RDbase) is not supported".into());
    }
    let mut tables = Vec::new();
    for n in 0..8 {
        let off = gits::BASER + 8 * n;
        let b = Baser(regs.read(off));
        let t = b.table_type();
        if !matches!(
            t,
            BaserType::Device | BaserType::Collection | BaserType::Vpe
        ) {
            continue;
        }
        // Flat, 2 pages: 1,024 eight-byte entries (QEMU's), DeviceIDs, ICIDs and vPE ids
        // far above what hyp uses.
        let mem = buf(0x2000, 0x1_0000)?;
        regs.write(off, b.flat(mem.pa(), 2).0);
        let back = Baser(regs.read(off));
        if back.0 & Baser::VALID == 0 || back.page_size() != 0x1000 {
            return Err(format!(
                "host ITS: GITS_BASER{n} ({t:?}) refused a flat 4 KiB-page table (read back {:#x})",
                back.0
            ));
        }
        tables.push((t, back.entries(2)));
        // `mem` goes out of scope, its memory stays the ITS's: a `DmaBuf` is never freed.
    }
    for need in [BaserType::Device, BaserType::Collection, BaserType::Vpe] {
        if !tables.iter().any(|(t, _)| *t == need) {
            return Err(format!("host ITS: no GITS_BASER of type {need:?}"));
        }
    }
    let (qpa, qlen) = regs.queue();
    regs.write(gits::CBASER, f::cbaser(qpa, qlen / 0x1000));
    regs.write(gits::CWRITER, 0);
    regs.write(gits::CTLR, gits::CTLR_ENABLED);

    let prop = buf(LPIS, 0x1000)?;
    for i in 0..LPIS {
        prop.write_u8(i, f::lpi_config(PRIORITY, false));
    }
    let mut pend = Vec::new();
    let mut rdbase = Vec::new();
    for cpu in 0..cpus {
        pend.push(buf((1 << ID_BITS) / 8, 0x1_0000)?);
        rdbase.push(u64::from(gic::processor_number(cpu).ok_or_else(|| {
            format!("host GIC: CPU {cpu} has no redistributor")
        })?));
    }
    HOST.call_once(|| Host {
        its: Mutex::new(Its {
            regs,
            q: CmdQueue::new(qlen, BOUND),
        }),
        prop,
        pend,
        rdbase: rdbase.clone(),
        next_vpe: AtomicU16::new(0),
        doorbell_ids: DoorbellIds::new(DOORBELL_BASE).expect("8192 + 256 fits in u32"),
        errors: AtomicU32::new(0),
        itt_entry: typer.itt_entry_size(),
        vmovp_list,
        vmovp_seq: AtomicU16::new(0),
    });
    let itt_len = (1usize << EVENT_BITS) * typer.itt_entry_size();
    let mut cmds = Vec::new();
    for dev in [PROXY_DEVICE, TEST_DEVICE] {
        let itt = buf(itt_len, 0x100)?;
        cmds.push(Cmd::Mapd {
            device: dev,
            itt: itt.pa(),
            event_bits: EVENT_BITS,
            valid: true,
        });
    }
    for (cpu, rd) in rdbase.iter().enumerate() {
        cmds.push(Cmd::Mapc {
            icid: cpu as u16,
            rdbase: *rd,
            valid: true,
        });
        cmds.push(Cmd::Sync { rdbase: *rd });
    }
    submit(&cmds).map_err(|e| format!("host ITS set-up: {e}"))?;
    println!(
        "hyp: GICv4: host ITS at {base:#x} (GITS_TYPER {:#x}: Virtual, VMOVP {}), tables {:?}, command queue {qlen} bytes, {cpus} collections",
        typer.0,
        typer.vmovp() as u8,
        tables
    );
    Ok(())
}

/// Each CPU `cpu` (after `gic::init_cpu`), once [`init`] ran: its redistributor's LPI
/// tables and `EnableLPIs`.
pub fn init_cpu(cpu: usize) -> Result<(), String> {
    let Some(h) = host() else {
        return Ok(());
    };
    let pend = h
        .pend
        .get(cpu)
        .ok_or_else(|| format!("GICv4: CPU {cpu} has no LPI pending table"))?;
    if gic::my_rd_read32(gicr::CTLR) & gicr::CTLR_ENABLE_LPIS != 0 {
        return Err(format!(
            "GICv4: CPU {cpu}: LPIs already enabled (GICR_PROPBASER cannot change)"
        ));
    }
    gic::my_rd_write64(gicr::PROPBASER, f::propbaser(h.prop.pa(), ID_BITS));
    gic::my_rd_write64(gicr::PENDBASER, f::pendbaser(pend.pa(), true));
    gic::my_rd_write32(
        gicr::CTLR,
        gic::my_rd_read32(gicr::CTLR) | gicr::CTLR_ENABLE_LPIS,
    );
    Ok(())
}

/// Counters of one vPE (the ACCT line).
#[derive(Default)]
pub struct VpeCounts {
    /// Doorbell LPIs taken, and those that woke the vCPU (`Doorbell::fire` said kick).
    pub fires: FireCounts,
    /// Puts that found a vLPI pending (`PendingLast`) and kept the vCPU runnable.
    pub stay_runnable: AtomicU64,
    /// Test vLPIs sent (INT).
    pub sent: AtomicU64,
    /// Loads (VPENDBASER Valid 0 → 1).
    pub loads: AtomicU64,
    /// Moves to another CPU (VMOVP, MOVI of the doorbell).
    pub moves: AtomicU64,
}

/// Doorbells taken (low 32 bits) and the wake-ups among them (high 32 bits) in one
/// word, counted by one `fetch_add` per doorbell: whoever reads it (ACCT, the test
/// guest's `VIRQ_VLPI_STAT`) sees both or neither of a doorbell's counts, never a
/// wake-up without its doorbell.
#[derive(Default)]
pub struct FireCounts(AtomicU64);

impl FireCounts {
    fn record(&self, woke: bool) {
        self.0
            .fetch_add(1 | u64::from(woke) << 32, Ordering::Relaxed);
    }

    /// Both counts as one word (doorbells low, wake-ups high).
    pub fn packed(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// `(doorbells, wake-ups)`.
    pub fn get(&self) -> (u64, u64) {
        let v = self.packed();
        (v & 0xffff_ffff, v >> 32)
    }
}

/// One vCPU's vPE.
pub struct Vpe {
    /// Its id in the ITS.
    pub id: u16,
    /// Its CPU (RDbase, and its doorbell's collection): the vCPU's home; changed only by
    /// [`move_to`], by the old home, with the vPE non-resident.
    cpu: AtomicUsize,
    vpt: DmaBuf,
    vprop: u64,
    /// Its doorbell LPI.
    pub doorbell_lpi: u32,
    /// virq-core's protocol.
    pub db: Doorbell,
    /// The doorbell's configuration byte says Enable (changed on the home CPU only).
    enabled: AtomicBool,
    /// Counters.
    pub counts: VpeCounts,
}

/// A guest's vLPI configuration table (hyp's, shared by its vPEs).
pub struct VmLpis {
    prop: DmaBuf,
}

/// The vPEs of a guest with `homes.len()` vCPUs (vCPU v on CPU `homes[v]`), with the
/// guest's vLPI configuration table.
pub fn new_vpes(homes: &[usize]) -> Result<(VmLpis, Vec<Vpe>), String> {
    let h = host().ok_or("GICv4: no host ITS")?;
    let prop = DmaBuf::new(VLPIS, 0x1000).ok_or("GICv4: heap exhausted")?;
    for k in 0..VLPIS_PER_VPE as usize {
        prop.write_u8(k, f::lpi_config(PRIORITY, true));
    }
    // The guest's doorbells: one block per 32 vCPUs, each block's 32 LPIs mapped to
    // the proxy device by the hooks (MAPTI to the collection of the vCPU that uses it;
    // a failure unwinds exactly the blocks set up: DISCARD).
    let mut firsts = [0u32; DOORBELL_BLOCKS];
    let mut hooks = ProxyHooks { homes, mapped: 0 };
    let blocks = h
        .doorbell_ids
        .alloc(homes.len(), &mut firsts, &mut hooks)
        .map_err(|e| match e {
            DoorbellIdError::Setup { block, error } => {
                format!("GICv4: doorbell block {block}: {error}")
            }
            e => format!("GICv4: doorbell LPIs: {e:?}"),
        })?;
    let doorbell_of = |v: usize| firsts[..blocks][v / BLOCK as usize] + (v % BLOCK as usize) as u32;
    let mut vpes = Vec::new();
    for (v, &home) in homes.iter().enumerate() {
        let id = h.next_vpe.fetch_add(1, Ordering::Relaxed);
        if id >= MAX_VPES {
            return Err(format!("GICv4: more than {MAX_VPES} vPEs"));
        }
        let rdbase = *h
            .rdbase
            .get(home)
            .ok_or_else(|| format!("GICv4: no redistributor for CPU {home}"))?;
        let vpt = DmaBuf::new((1 << VID_BITS) / 8, 0x1_0000).ok_or("GICv4: heap exhausted")?;
        let doorbell = doorbell_of(v);
        let mut cmds = alloc::vec![Cmd::Vmapp {
            vpeid: id,
            rdbase,
            vpt: vpt.pa(),
            vpt_bits: VID_BITS,
            valid: true,
        }];
        for k in 0..VLPIS_PER_VPE {
            cmds.push(Cmd::Vmapti {
                device: TEST_DEVICE,
                event: u32::from(id) * VLPIS_PER_VPE + k,
                vpeid: id,
                vintid: f::LPI_BASE + k,
                doorbell,
            });
        }
        cmds.push(Cmd::Vsync { vpeid: id });
        cmds.push(Cmd::Sync { rdbase });
        submit(&cmds).map_err(|e| format!("GICv4: vPE {id}: {e}"))?;
        vpes.push(Vpe {
            id,
            cpu: AtomicUsize::new(home),
            vpt,
            vprop: prop.pa(),
            doorbell_lpi: doorbell,
            db: Doorbell::new(),
            enabled: AtomicBool::new(false),
            counts: VpeCounts::default(),
        });
    }
    // A vPE starts non-resident with its doorbell masked: `Doorbell` starts Resident,
    // so put it (not blocking: Descheduled, masked) to match.
    for v in &vpes {
        let _ = v.db.put(
            &Hw {
                vpe: v,
                pending_last: false,
            },
            false,
        );
    }
    Ok((VmLpis { prop }, vpes))
}

/// `BlockHooks` of a guest's doorbell blocks: each LPI of block `first..first + 32`
/// mapped on the proxy device (event = LPI − 8192) to the collection of the vCPU that
/// will use it (vCPU v: LPI `first + v % 32` of its block; the block's spare LPIs to
/// collection 0), then INV (their configuration bytes say masked) and SYNC.
struct ProxyHooks<'a> {
    homes: &'a [usize],
    /// Blocks set up so far.
    mapped: usize,
}

impl BlockHooks for ProxyHooks<'_> {
    type Error = Gicv4Error;

    fn setup(&mut self, first: u32) -> Result<(), Gicv4Error> {
        let mut cmds = Vec::new();
        for k in 0..BLOCK {
            let v = self.mapped * BLOCK as usize + k as usize;
            let icid = self.homes.get(v).copied().unwrap_or(0) as u16;
            let (event, pintid) = (first + k - DOORBELL_BASE, first + k);
            cmds.push(Cmd::Mapti {
                device: PROXY_DEVICE,
                event,
                pintid,
                icid,
            });
            cmds.push(Cmd::Inv {
                device: PROXY_DEVICE,
                event,
            });
        }
        if let Some(h) = host() {
            let mut seen = 0u64;
            for &cpu in self.homes.iter().chain(core::iter::once(&0)) {
                if seen & (1 << (cpu % 64)) == 0 {
                    seen |= 1 << (cpu % 64);
                    if let Some(&rdbase) = h.rdbase.get(cpu) {
                        cmds.push(Cmd::Sync { rdbase });
                    }
                }
            }
        }
        submit(&cmds)?;
        self.mapped += 1;
        Ok(())
    }

    fn teardown(&mut self, first: u32) {
        let cmds: Vec<Cmd> = (0..BLOCK)
            .map(|k| Cmd::Discard {
                device: PROXY_DEVICE,
                event: first + k - DOORBELL_BASE,
            })
            .collect();
        if let Err(e) = submit(&cmds) {
            report(e);
        }
        self.mapped = self.mapped.saturating_sub(1);
    }
}

impl VmLpis {
    /// The table's address (`GICR_VPROPBASER`).
    pub fn pa(&self) -> u64 {
        self.prop.pa()
    }

    /// Set the configuration byte of `vintid` (an LPI below 2^[`VID_BITS`]; others
    /// are ignored) to `priority` and `enabled`. The redistributor sees it after the
    /// caller's INV or VINVALL (and a barrier before it: [`submit_cmds`] has one).
    pub fn set_config(&self, vintid: u32, priority: u8, enabled: bool) {
        if let Some(i) = vintid.checked_sub(f::LPI_BASE) {
            self.prop
                .write_u8(i as usize, f::lpi_config(priority, enabled));
        }
    }
}

/// MAPD host device `device` with an ITT of 2^`event_bits` events (once, when a guest
/// that stands for it is built: hyp's virtual test device, later a passed-through
/// function's requester ID).
pub fn map_host_device(device: u32, event_bits: u32) -> Result<(), String> {
    let h = host().ok_or("GICv4: no host ITS")?;
    let itt =
        DmaBuf::new((1usize << event_bits) * h.itt_entry, 0x100).ok_or("GICv4: heap exhausted")?;
    // `itt` is never freed (a `DmaBuf`): the ITS owns it from here on.
    submit(&[Cmd::Mapd {
        device,
        itt: itt.pa(),
        event_bits,
        valid: true,
    }])
    .map_err(|e| format!("GICv4: MAPD of host device {device:#x}: {e}"))
}

/// Send a guest's host commands in order, in batches the queue holds, after a
/// barrier (configuration bytes written before them are visible to the GIC). A
/// failure is counted and printed ([`errors`]), never fatal; returns the commands
/// sent.
pub fn submit_cmds(cmds: &[Cmd]) -> usize {
    arch::fence();
    let mut sent = 0;
    for chunk in cmds.chunks(32) {
        match submit(chunk) {
            Ok(()) => sent += chunk.len(),
            Err(e) => report(e),
        }
    }
    sent
}

/// `DoorbellHw` of a vPE's doorbell LPI: Enable in the host configuration table, INV
/// of its proxy event, SYNC. `pending_last` is `GICR_VPENDBASER.PendingLast` as the
/// put that unmasks read it.
struct Hw<'a> {
    vpe: &'a Vpe,
    pending_last: bool,
}

impl Hw<'_> {
    fn set(&self, on: bool) {
        if self.vpe.enabled.swap(on, Ordering::Relaxed) == on {
            return;
        }
        let Some(h) = host() else { return };
        let idx = (self.vpe.doorbell_lpi - f::LPI_BASE) as usize;
        h.prop.write_u8(idx, f::lpi_config(PRIORITY, on));
        arch::fence();
        let rdbase = h.rdbase.get(self.vpe.cpu()).copied().unwrap_or(0);
        if let Err(e) = submit(&[
            Cmd::Inv {
                device: PROXY_DEVICE,
                event: self.vpe.doorbell_lpi - DOORBELL_BASE,
            },
            Cmd::Sync { rdbase },
        ]) {
            report(e);
        }
    }
}

impl DoorbellHw for Hw<'_> {
    fn mask(&self) {
        self.set(false);
    }
    fn unmask(&self) -> bool {
        self.set(true);
        self.pending_last
    }
}

impl Vpe {
    /// The CPU whose redistributor it is mapped to.
    pub fn cpu(&self) -> usize {
        self.cpu.load(Ordering::SeqCst)
    }
}

/// Move `vpe` to CPU `to` for its vCPU's migration (docs/gicv4.md §6, "load and put";
/// §11): VMOVP to `to`'s redistributor, MOVI of its doorbell's proxy event to `to`'s
/// collection (a doorbell already pending moves with it), VSYNC, SYNC of the new
/// redistributor and of the old one (as Linux syncs a MOVI's old collection: a
/// doorbell the old redistributor still held is out of it then). Called by the old
/// home with the vPE non-resident (put), before the vCPU's home changes, so the new
/// home's load makes it resident where the ITS now sends its vLPIs; the pending table
/// is memory, and QEMU scans all of it at that load (Valid 0 → 1), so a vLPI pending
/// in it is delivered there.
///
/// `from` is the CPU the vPE is mapped to as far as the caller knows (the old home; for
/// [`load`]'s repair, its recorded CPU), whose redistributor the second SYNC drains.
///
/// False when the move failed (counted and printed, [`errors`]): the caller keeps the
/// vCPU where it is. After a failed command the ITS's mapping is unknown, so the vPE's
/// recorded CPU is left at `to`: the next [`load`] on the CPU the vCPU really runs on
/// sees the difference (`NotMoved`) and maps it there again.
pub fn move_to(vpe: &Vpe, from: usize, to: usize) -> bool {
    let Some(h) = host() else { return false };
    let (Some(&rdbase), Some(&old)) = (h.rdbase.get(to), h.rdbase.get(from)) else {
        report(Gicv4Error::NoCpu { cpu: to });
        return false;
    };
    let seq = if h.vmovp_list == 0 {
        0
    } else {
        h.vmovp_seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    };
    let cmds = [
        Cmd::Vmovp {
            vpeid: vpe.id,
            rdbase,
            seq,
            its_list: h.vmovp_list,
        },
        Cmd::Movi {
            device: PROXY_DEVICE,
            event: vpe.doorbell_lpi - DOORBELL_BASE,
            icid: to as u16,
        },
        Cmd::Vsync { vpeid: vpe.id },
        Cmd::Sync { rdbase },
        Cmd::Sync { rdbase: old },
    ];
    // The new CPU first: its doorbells can be taken there as soon as the VMOVP is done
    // (the old home, running this, takes none meanwhile), and [`fire`] checks it.
    vpe.cpu.store(to, Ordering::SeqCst);
    if let Err(e) = submit(&cmds) {
        report(e);
        return false;
    }
    vpe.counts.moves.fetch_add(1, Ordering::Relaxed);
    true
}

/// Poll this CPU's `GICR_VPENDBASER` until `Dirty` is 0 (at most [`BOUND`]): its value.
fn wait_dirty(vpe: u16, valid: bool) -> Result<u64, Gicv4Error> {
    f::poll_bounded(
        || gic::my_rd_read64(gicr::VPENDBASER),
        |v| v & vpendbaser::DIRTY == 0,
        arch::time,
        BOUND,
    )
    .map_err(|_| Gicv4Error::DirtyTimeout { vpe, valid })
}

/// Make `vpe` resident on this CPU `cpu` (its home), with `lpis` its guest's table.
/// Returns whether its doorbell rang while it was away (`Doorbell::load`). A vPE
/// mapped elsewhere (a migration that did not move it: a hyp bug) is moved first, and
/// counted as an error.
pub fn load(vpe: &Vpe, lpis: &VmLpis, cpu: usize) -> bool {
    debug_assert_eq!(vpe.vprop, lpis.pa());
    if vpe.cpu() != cpu {
        report(Gicv4Error::NotMoved {
            vpe: vpe.id,
            at: vpe.cpu(),
            cpu,
        });
        // A failure is reported; the load goes on (the vCPU runs here either way).
        move_to(vpe, vpe.cpu(), cpu);
    }
    gic::my_rd_write64(gicr::VPROPBASER, f::propbaser(lpis.pa(), VID_BITS));
    gic::my_rd_write64(gicr::VPENDBASER, vpendbaser::value(vpe.vpt.pa(), true));
    if let Err(e) = wait_dirty(vpe.id, true) {
        report(e);
    }
    vpe.counts.loads.fetch_add(1, Ordering::Relaxed);
    vpe.db.load(&Hw {
        vpe,
        pending_last: false,
    })
}

/// Make `vpe` non-resident (`blocking`: its vCPU waits for an interrupt, so arm the
/// doorbell). `StayRunnable` when blocking must not sleep (a vLPI is pending).
pub fn put(vpe: &Vpe, blocking: bool) -> PutOutcome {
    gic::my_rd_write64(gicr::VPENDBASER, vpendbaser::value(vpe.vpt.pa(), false));
    let pending_last = match wait_dirty(vpe.id, false) {
        Ok(v) => v & vpendbaser::PENDING_LAST != 0,
        Err(e) => {
            report(e);
            true
        }
    };
    let out = vpe.db.put(&Hw { vpe, pending_last }, blocking);
    if blocking && out == PutOutcome::StayRunnable {
        vpe.counts.stay_runnable.fetch_add(1, Ordering::Relaxed);
    }
    out
}

/// The doorbell LPI of `vpe` was taken on CPU `cpu`: true when the caller must kick its
/// vCPU. It must be the vPE's CPU: QEMU raises a doorbell at the redistributor the
/// vPE is mapped to ([rd] `gicv3_redist_process_vlpi`), [`move_to`] stores the new CPU
/// before its VMOVP, and a doorbell pending at the old one moves with the MOVI; the old
/// home, busy moving, takes none in between. One taken elsewhere means the vPE was not
/// moved (counted as a [`Gicv4Error::StaleDoorbell`]; it still fires).
pub fn fire(vpe: &Vpe, cpu: usize) -> bool {
    if vpe.cpu() != cpu {
        report(Gicv4Error::StaleDoorbell {
            vpe: vpe.id,
            at: vpe.cpu(),
            cpu,
        });
    }
    let kick = vpe.db.fire(&Hw {
        vpe,
        pending_last: false,
    });
    vpe.counts.fires.record(kick);
    kick
}

/// Send test vLPI `k` (vINTID 8192 + k) to `vpe` with the ITS's INT command on its
/// test event: what a device's MSI to that event would do.
pub fn send_test_vlpi(vpe: &Vpe, k: u32) -> Result<(), Gicv4Error> {
    if k >= VLPIS_PER_VPE {
        return Ok(());
    }
    vpe.counts.sent.fetch_add(1, Ordering::Relaxed);
    submit(&[Cmd::Int {
        device: TEST_DEVICE,
        event: u32::from(vpe.id) * VLPIS_PER_VPE + k,
    }])
}

/// The doorbell state as a number (the test hypercall's): 0 Resident, 1 Descheduled,
/// 2 Blocking, 3 Fired.
pub fn state(vpe: &Vpe) -> u64 {
    match vpe.db.state() {
        DoorbellState::Resident => 0,
        DoorbellState::Descheduled => 1,
        DoorbellState::Blocking => 2,
        DoorbellState::Fired => 3,
    }
}

/// ITS or `Dirty` failures seen.
pub fn errors() -> u32 {
    host().map_or(0, |h| h.errors.load(Ordering::Relaxed))
}
