//! Host PCIe functions given to an aarch64 guest (`pci = ["00:01.0"]`; docs/hyp.md,
//! "PCIe passthrough on aarch64"): the architecture-neutral parts are `crate::pci` (the
//! host bus) and `crate::vpci` (a function's filtered configuration space); this is the
//! aarch64 glue.
//!
//! - The guest's ECAM window is at the host's ECAM address (QEMU `virt`: 0x40_1000_0000),
//!   one bus (1 MiB), never mapped: every access is a stage-2 data abort that
//!   [`GuestPci::access`] answers through the function's `VirtFunction` filter; any
//!   other function reads all ones. A function keeps its host BDF, so its requester ID
//!   is the same on both sides.
//! - Each memory BAR is mapped in the guest's stage 2 at its host address (Read/Write),
//!   so the device's registers are the guest's with no exit.
//! - Its StreamID (the bridge's `iommu-map`: = requester ID) gets a stage-2-only STE
//!   with the guest's VMID pointing at [`io_stage2`]'s tables (`arm::smmu`): its DMA
//!   reaches the guest's RAM (and the BARs) by guest-physical address, and for a
//!   vgicv4 guest its MSIs the host ITS's `GITS_TRANSLATER`; nothing else.
//! - The guest's DTB gets a `pci-host-ecam-generic` node (one bus, a `ranges` entry per
//!   BAR) and `linux,pci-probe-only`, so Linux keeps the BARs where they are; a vgicv4
//!   guest's also `msi-map` to its ITS (`arm::fdt`), and each function is a device of
//!   its vITS (guest requester ID → host requester ID, `arm::vits`).
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

use hyp_config::{Guest, GUEST_RAM_BASE};
use hyp_io::pci::Bdf;

use crate::gstage::{GStage, R, W};
use crate::pci::Bus;
use crate::println;
use crate::vpci::{ecam_decode, PassedFunction};

use super::layout::ITS_IPA;
use super::{smmu, HostInfo};

/// The guest's ECAM window: bus 0 only.
const GUEST_ECAM_SIZE: u64 = 1 << 20;

/// A guest's PCIe functions and its ECAM window (none without functions).
#[derive(Default)]
pub struct GuestPci {
    /// The guest-physical ECAM window `(base, size)`.
    pub ecam: Option<(u64, u64)>,
    /// Its functions.
    pub functions: Vec<PassedFunction>,
    /// The host bridge's 32-bit window `(PCI, CPU, size)` (the BARs' bus addresses).
    mem32: Option<(u64, u64, u64)>,
    /// The host ITS's control frame (its translation frame follows), if any.
    host_its: Option<usize>,
}

/// The stage-2 tables the SMMU walks for a guest's functions (docs/gicv4.md §10): the
/// guest's RAM (`ram_host`, `ram_size` at `GUEST_RAM_BASE`) and its functions' BARs at
/// the IPAs its CPU sees them, and for a `vgicv4` guest one page more: the guest's `GITS_TRANSLATER` page (`ITS_IPA` +
/// 64 KiB) → the host ITS's translation frame. So a device's MSI write to the address
/// the guest's ITS driver programmed reaches the host ITS with the device's requester
/// ID, and the host's VMAPTI for the guest's MAPTI makes it a vLPI; the guest's CPU
/// has no such mapping (its stores to the frame trap into its vITS), so it cannot
/// send an MSI under any host DeviceID. Separate tables cost a few pages per guest.
pub fn io_stage2(
    pci: &GuestPci,
    ram_host: u64,
    ram_size: u64,
    vgicv4: bool,
) -> Result<GStage, String> {
    let mut io = GStage::new();
    io.map(GUEST_RAM_BASE, ram_host, ram_size, R | W)
        .map_err(|e| alloc::format!("RAM: {e:?}"))?;
    pci.map_bars(&mut io)?;
    if let Some(its) = pci.host_its.filter(|_| vgicv4) {
        let frame = TRANSLATION_FRAME;
        io.map(ITS_IPA + frame, its as u64 + frame, 0x1000, R | W)
            .map_err(|e| alloc::format!("ITS translation frame: {e:?}"))?;
    }
    Ok(io)
}

/// The ITS translation frame's offset from the control frame (`GITS_TRANSLATER` is at
/// +0x40 in it).
const TRANSLATION_FRAME: u64 = 0x1_0000;

/// What the guest's DTB says about its host bridge.
pub struct PcieNode {
    /// ECAM window.
    pub ecam: (u64, u64),
    /// `ranges`: `(PCI address, CPU address, size)` of each 32-bit memory BAR.
    pub ranges: Vec<(u64, u64, u64)>,
}

/// Take guest `i`'s functions (`g.pci`) from the host bus: BARs placed, decode and bus
/// mastering on. Refused (naming `guest[i].pci`) when the host has no bus, no SMMU came
/// up, or a function is missing.
pub fn take(
    i: usize,
    g: &Guest,
    mut bus: Option<&mut Bus>,
    host: &HostInfo,
) -> Result<GuestPci, String> {
    if g.pci.is_empty() {
        return Ok(GuestPci::default());
    }
    let mut functions = Vec::new();
    for a in &g.pci {
        let bdf = Bdf::new(a.bus, a.dev, a.func)
            .ok_or_else(|| alloc::format!("configuration: guest[{i}].pci: {a}: not an address"))?;
        // Its DMA must be the SMMU's to translate: the bridge's `iommu-map` names it.
        let behind = bus.as_deref().and_then(|b| b.get(bdf)).map(|f| f.iommu);
        let smmu_phandle = host.smmu.as_ref().map(|s| s.phandle);
        if let Some(Some((ph, _))) = behind {
            if Some(ph) != smmu_phandle {
                return Err(alloc::format!(
                    "configuration: guest[{i}].pci: {a}: its iommu-map names phandle {ph:#x}, not the SMMUv3's ({smmu_phandle:x?})"
                ));
            }
        }
        let f = PassedFunction::take(bus.as_deref_mut(), bdf, smmu::up())
            .map_err(|e| alloc::format!("configuration: guest[{i}].pci: {e}"))?;
        functions.push(f);
    }
    let ecam = host.pcie.as_ref().map(|h| (h.ecam.0, GUEST_ECAM_SIZE));
    Ok(GuestPci {
        ecam,
        functions,
        mem32: host.pcie.as_ref().and_then(|h| h.mem32),
        host_its: host.its,
    })
}

impl GuestPci {
    /// Map every memory BAR at its host address (at least a page each: `Bus::enable`
    /// placed each on its own pages).
    pub fn map_bars(&self, s2: &mut GStage) -> Result<(), String> {
        for f in &self.functions {
            for &(bar, cpu) in &f.bars {
                let len = bar.size.max(4096);
                s2.map(cpu, cpu, len, R | W).map_err(|e| {
                    alloc::format!("{} bar{} {cpu:#x}+{len:#x}: {e:?}", f.bdf, bar.index)
                })?;
            }
        }
        Ok(())
    }

    /// Point each function's StreamID at `vttbr` (root and VMID): the tables of
    /// [`io_stage2`].
    pub fn attach(&self, vttbr: usize) -> Result<(), String> {
        for f in &self.functions {
            smmu::attach(f.device_id, vttbr)?;
            let bars: Vec<String> = f
                .bars
                .iter()
                .map(|(b, cpu)| alloc::format!("bar{} {cpu:#x}+{:#x}", b.index, b.size))
                .collect();
            println!(
                "hyp: pci {}: StreamID {:#x} on the SMMUv3's stage 2 (VMID {}, S2TTB {:#x}); {} mapped at the same IPA; guest ECAM {:x?}",
                f.bdf,
                f.device_id,
                (vttbr >> 48) & 0xff,
                vttbr & 0x0000_ffff_ffff_f000,
                bars.join(", "),
                self.ecam
            );
        }
        Ok(())
    }

    /// The DTB's view, if the guest has functions.
    pub fn dtb_node(&self) -> Option<PcieNode> {
        let ecam = self.ecam?;
        let (pci_base, cpu_base, _) = self.mem32.unwrap_or((0, 0, 0));
        let ranges = self
            .functions
            .iter()
            .flat_map(|f| f.bars.iter())
            .map(|&(b, cpu)| (cpu - cpu_base + pci_base, cpu, b.size.max(4096)))
            .collect();
        Some(PcieNode { ecam, ranges })
    }

    /// A data abort at `ipa`: if it is in the ECAM window, the configuration access
    /// (`value`: a write) and `Some(what a read returns)`; `None` otherwise.
    pub fn access(&self, ipa: u64, size: u8, value: Option<u64>) -> Option<u64> {
        let (base, len) = self.ecam?;
        if !(base..base + len).contains(&ipa) {
            return None;
        }
        let ones = if size >= 8 {
            !0
        } else {
            (1u64 << (8 * size)) - 1
        };
        let Some((bdf, off)) = ecam_decode(ipa - base) else {
            return Some(ones);
        };
        let Some(f) = self.functions.iter().find(|f| f.bdf == bdf) else {
            return Some(if value.is_some() { 0 } else { ones });
        };
        // Configuration accesses are 1, 2 or 4 bytes; a 64-bit one is two 32-bit.
        let parts: &[(u16, u8)] = if size == 8 {
            &[(0, 4), (4, 4)]
        } else {
            &[(0, 0)]
        };
        let mut r = 0u64;
        for &(d, n) in parts {
            let n = if n == 0 { size } else { n };
            let o = off + d;
            match value {
                Some(v) => f.write(o, n, (v >> (8 * d)) as u32),
                None => r |= u64::from(f.read(o, n)) << (8 * d),
            }
        }
        Some(r)
    }

    /// One ACCT line per function.
    pub fn report(&self, guest: &str) {
        for f in &self.functions {
            println!(
                "hyp: ACCT guest={guest} pci={} device_id={:#x} dropped_config_writes={}",
                f.bdf,
                f.device_id,
                f.dropped_writes.load(Ordering::Relaxed)
            );
        }
    }
}
