//! PCIe functions given to a guest (docs/hyp.md, "Passing a PCIe function to a guest").
//!
//! The guest gets its own ECAM window at the host's guest-physical address, never
//! mapped: every configuration access traps and goes through `hyp_io::pci::virt`'s
//! filter to the one host function at that address (any other address reads as no
//! function). The function's BARs stay where hyp placed them on the host bridge and are
//! mapped at the same guest-physical addresses (the guest's DTB asks Linux to keep
//! them: `linux,pci-probe-only`), so the MSI-X table and the device's registers are
//! the guest's with no exit. Its DMA goes through the IOMMU with the guest's G-stage
//! as second stage (on aarch64: the SMMUv3 with the guest's stage-2 tables,
//! `arm::smmu`), and so do its MSIs (riscv64): a guest-physical IMSIC address the guest's
//! driver programs is translated, like any DMA, to the interrupt file that backs that
//! vCPU now (`crate::topology::aia` keeps the mapping and invalidates the IOMMU's
//! copy when a file moves).
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use hyp_io::pci::virt::{Effect, VirtFunction};
use hyp_io::pci::{Bar, Bdf};
use spin::Mutex;

use crate::arch::pcie::EcamFunction;
use crate::pci::{Bus, PciError};

/// A function given to a guest.
pub struct PassedFunction {
    /// Its address, on the host bus and in the guest's ECAM.
    pub bdf: Bdf,
    /// Its IOMMU device ID.
    pub device_id: u32,
    /// Its BARs and the CPU (= guest-physical) address each decodes.
    pub bars: Vec<(Bar, u64)>,
    host: Mutex<(EcamFunction, VirtFunction)>,
    /// Guest configuration writes the filter dropped.
    pub dropped_writes: AtomicU64,
}

/// Why a function cannot be given to a guest.
#[derive(Clone, Copy, Debug)]
pub enum PassError {
    /// The host bus refused (no such function, no room for its BARs, an I/O BAR).
    Bus(PciError),
    /// The host bridge has no IOMMU in front of it (its DMA would be untranslated).
    NoIommu(Bdf),
    /// The host has no PCIe host bridge.
    NoBus,
}

impl core::fmt::Display for PassError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PassError::Bus(e) => write!(f, "{e}"),
            PassError::NoIommu(b) => write!(
                f,
                "{b}: no IOMMU translates its DMA (machine.iommu, or the IOMMU did not come up)"
            ),
            PassError::NoBus => f.write_str("the host has no PCIe host bridge"),
        }
    }
}

impl PassedFunction {
    /// Take `bdf` from the host bus for a guest: its memory BARs placed and decoding,
    /// bus mastering on (its DMA faults until the IOMMU attaches it to the guest).
    /// `iommu_up`: the IOMMU that `iommu-map` names came up (the RISC-V IOMMU, the
    /// SMMUv3).
    pub fn take(
        bus: Option<&mut Bus>,
        bdf: Bdf,
        iommu_up: bool,
    ) -> Result<PassedFunction, PassError> {
        let bus = bus.ok_or(PassError::NoBus)?;
        let f = bus
            .get(bdf)
            .ok_or(PassError::Bus(PciError::NoFunction(bdf)))?
            .clone();
        let (_, device_id) = f.iommu.ok_or(PassError::NoIommu(bdf))?;
        if !iommu_up {
            return Err(PassError::NoIommu(bdf));
        }
        let bars = bus.enable(bdf, true).map_err(PassError::Bus)?;
        let cfg = bus
            .config(bdf)
            .ok_or(PassError::Bus(PciError::NoFunction(bdf)))?;
        let guest_bars: Vec<Bar> = bars
            .iter()
            .map(|&(b, cpu)| Bar { base: cpu, ..b })
            .collect();
        let view = VirtFunction::new(&guest_bars, &f.caps, &cfg);
        Ok(PassedFunction {
            bdf,
            device_id,
            bars,
            host: Mutex::new((cfg, view)),
            dropped_writes: AtomicU64::new(0),
        })
    }

    /// A guest read of `size` bytes at `off` of the function's configuration space.
    pub fn read(&self, off: u16, size: u8) -> u32 {
        let h = self.host.lock();
        h.1.read(&h.0, off, size)
    }

    /// A guest write.
    pub fn write(&self, off: u16, size: u8, value: u32) {
        let mut h = self.host.lock();
        let (cfg, view) = &mut *h;
        // A BAR the guest moves moves only in its registers: the device stays where
        // hyp mapped it (Linux's sizing probe writes all ones and puts it back).
        if view.write(cfg, off, size, value) == Effect::Dropped {
            self.dropped_writes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Decode a guest ECAM offset: `(bus/device/function, register offset)`.
pub fn ecam_decode(off: u64) -> Option<(Bdf, u16)> {
    let bus = u8::try_from(off >> 20).ok()?;
    Bdf::new(bus, ((off >> 15) & 31) as u8, ((off >> 12) & 7) as u8)
        .map(|b| (b, (off & 0xfff) as u16))
}
