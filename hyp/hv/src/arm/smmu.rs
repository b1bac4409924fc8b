//! The host SMMUv3 (QEMU `virt` with `iommu=smmuv3`: docs/hyp.md, "PCIe passthrough on
//! aarch64"): brought up at boot with every stream refused, then each PCIe function
//! given to a guest gets a stage-2-only STE pointing at that guest's own stage-2 tables
//! (the root and VMID of its `VTTBR_EL2`, the walk of `VTCR_EL2`), so its DMA reaches
//! that guest's RAM and nothing else. Faults are event records: drained on the event
//! queue's SPI and at power-off, each printed and counted, never fatal; global errors
//! (`gerror` SPI) printed, counted and acknowledged.
//!
//! The formats and the driver are `hyp_io::smmuv3` (host-tested); the registers and
//! memory `arch::smmu`.
use alloc::string::String;
use alloc::vec::Vec;

use hyp_io::smmuv3::{Event, S2Walk, Sizes, Smmu};
use spin::{Mutex, Once};

use crate::arch::{self, gic, smmu::SmmuMmio};
use crate::println;

/// StreamIDs the linear stream table covers: bus 0 (QEMU `virt`'s root bus, where
/// every `-device` sits), 16 KiB of STEs.
const SID_BITS: u32 = 8;
/// Command queue: 256 commands (4 KiB).
const CMDQ_LOG2: u32 = 8;
/// Event queue: 128 records (4 KiB).
const EVENTQ_LOG2: u32 = 7;
/// Longest wait for the SMMU: 1 s of the 1 GHz counter.
const BOUND: u64 = 1_000_000_000;
/// Stage-2 output size (`VTCR_EL2.PS` = 2): 40 bits.
const PA_BITS: u32 = 40;

/// The host DTB's `arm,smmu-v3` node.
#[derive(Clone, Debug)]
pub struct SmmuInfo {
    /// Its register window.
    pub base: u64,
    /// Its `reg` size.
    pub size: u64,
    /// Its phandle (the bridge's `iommu-map` names it).
    pub phandle: u32,
    /// `interrupts` by `interrupt-names` (`eventq`, `gerror`, …): INTIDs.
    pub irqs: Vec<(String, u32)>,
}

struct State {
    smmu: Smmu<SmmuMmio>,
    /// Events per StreamID seen so far, for the ACCT line.
    events: Vec<Event>,
}

static SMMU: Once<Mutex<State>> = Once::new();
static EVENT_IRQ: Once<u32> = Once::new();
static GERROR_IRQ: Once<u32> = Once::new();

/// Bring the SMMU up (every stream refused until [`attach`]); its event-queue SPI, if
/// the DTB names one, goes to CPU 0. An error names the register that showed it.
pub fn init(info: &SmmuInfo) -> Result<(), String> {
    if info.size < hyp_io::smmuv3::regs::SIZE as u64 {
        return Err(alloc::format!(
            "SMMUv3 at {:#x}: register window {:#x} bytes, need {:#x}",
            info.base,
            info.size,
            hyp_io::smmuv3::regs::SIZE
        ));
    }
    // SAFETY: `base` is the `reg` of the host DTB's `arm,smmu-v3` node (at least
    // `regs::SIZE` bytes, checked above); `init` runs once, on the boot CPU, so no other
    // `SmmuMmio` drives it.
    let mmio = unsafe { SmmuMmio::new(info.base as usize, SID_BITS, CMDQ_LOG2, EVENTQ_LOG2) }
        .ok_or("SMMUv3: no heap for its stream table and queues")?;
    let sizes = Sizes {
        sid_bits: SID_BITS,
        cmdq_log2: CMDQ_LOG2,
        eventq_log2: EVENTQ_LOG2,
    };
    let smmu = Smmu::init(mmio, sizes, PA_BITS, BOUND)
        .map_err(|e| alloc::format!("SMMUv3 at {:#x}: {e}", info.base))?;
    let idr = smmu.idr;
    let (cq, eq) = smmu.queue_entries();
    println!(
        "hyp: smmu: SMMUv3 at {:#x}, IDR0 {:#x} IDR1 {:#x} IDR2 {:#x} IDR3 {:#x} IDR4 {:#x} IDR5 {:#x} (stage 1 {}, stage 2 {}, {} StreamID bits, OAS {} bits), linear stream table of {} STEs, {cq} commands, {eq} events, irqs {:?}",
        info.base,
        idr.idr0,
        idr.idr1,
        idr.idr2,
        idr.idr3,
        idr.idr4,
        idr.idr5,
        idr.s1p(),
        idr.s2p(),
        idr.sid_bits(),
        idr.oas_bits(),
        1u32 << SID_BITS,
        info.irqs
    );
    SMMU.call_once(|| {
        Mutex::new(State {
            smmu,
            events: Vec::new(),
        })
    });
    for (name, once) in [("eventq", &EVENT_IRQ), ("gerror", &GERROR_IRQ)] {
        if let Some(&(_, irq)) = info.irqs.iter().find(|(n, _)| n == name) {
            once.call_once(|| irq);
            gic::enable_spi(irq, true, 0);
        }
    }
    Ok(())
}

/// Whether the SMMU came up.
pub fn up() -> bool {
    SMMU.get().is_some()
}

/// Translate StreamID `sid`'s DMA by the stage-2 tables of `vttbr` (a guest's
/// `VTTBR_EL2`: root and VMID), walked as `VTCR_EL2` says.
pub fn attach(sid: u32, vttbr: usize) -> Result<(), String> {
    let s = SMMU.get().ok_or("no SMMUv3")?;
    let vttbr = vttbr as u64;
    let vmid = (vttbr >> 48) as u16;
    // BADDR (bits 47:1; hyp's roots are 8 KiB aligned), without the VMID and CnP.
    let root = vttbr & 0x0000_ffff_ffff_f000;
    let walk = S2Walk::from_vtcr(arch::vmsa_s2::VTCR as u64);
    s.lock()
        .smmu
        .attach(sid, root, vmid, walk)
        .map_err(|e| alloc::format!("SMMUv3: StreamID {sid:#x}: {e}"))
}

/// Is `intid` one of the SMMU's SPIs hyp takes (event queue, global error)?
pub fn is_event_irq(intid: u32) -> bool {
    EVENT_IRQ.get() == Some(&intid) || GERROR_IRQ.get() == Some(&intid)
}

/// Drain the event queue (each record printed and kept for the ACCT line) and take
/// the global errors (printed, counted, acknowledged).
pub fn poll_events() {
    let Some(s) = SMMU.get() else {
        return;
    };
    let mut st = s.lock();
    let g = st.smmu.take_gerrors();
    if g != 0 {
        println!("hyp: smmu: global error SMMU_GERROR ^ SMMU_GERRORN = {g:#x}");
    }
    let events = st.smmu.drain_events();
    for e in &events {
        println!(
            "hyp: smmu event: {} ({:#x}) sid={:#x} addr={:#x} {} s2={}",
            e.name(),
            e.kind,
            e.sid,
            e.addr,
            if e.read { "read" } else { "write" },
            e.s2 as u8
        );
    }
    st.events.extend(events);
}

/// The ACCT line (at power-off, after a last drain).
pub fn report() {
    poll_events();
    let Some(s) = SMMU.get() else {
        return;
    };
    let st = s.lock();
    let c = st.smmu.counts;
    let translation = st.events.iter().filter(|e| e.kind == 0x10).count();
    println!(
        "hyp: ACCT smmu commands={} syncs={} events={} translation_faults={} event_overflows={} gerrors={}",
        c.commands, c.syncs, c.events, translation, c.event_overflows, c.gerrors
    );
}
