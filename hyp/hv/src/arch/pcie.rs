//! Raw MMIO of PCIe: the host bridge's ECAM configuration window and device register
//! windows (a BAR hyp assigned, the IOMMU's registers). The logic that reads them —
//! headers, BAR sizing, capability lists, the IOMMU's formats — is `hyp_io`'s and runs
//! on the host too; these are the only accessors. The same on every backend: each
//! provides `fence_io` (RISC-V `fence iorw, iorw`, aarch64 `dsb sy`).
use hyp_io::pci::{Bdf, ConfigAccess};

use super::fence_io;

/// The ECAM window of a `pci-host-ecam-generic` host bridge (PCIe 6.0 7.2.2): 4 KiB of
/// configuration space per function, bus `bus_start` at `base`.
#[derive(Clone, Copy, Debug)]
pub struct Ecam {
    base: usize,
    size: usize,
    bus_start: u8,
    bus_end: u8,
}

impl Ecam {
    /// The window of the host DTB's host-bridge node: `reg` = `(base, size)`,
    /// `bus-range` = `bus_start..=bus_end`. Every access is checked against both.
    pub fn new(base: usize, size: usize, bus_start: u8, bus_end: u8) -> Ecam {
        Ecam {
            base,
            size,
            bus_start,
            bus_end,
        }
    }

    /// The last bus the window reaches (`bus-range`, cut to the `reg` size).
    pub fn last_bus(&self) -> u8 {
        let buses = (self.size >> 20).max(1) - 1;
        self.bus_end
            .min(self.bus_start.saturating_add(buses.min(255) as u8))
    }

    /// One function's configuration space, if the window holds it.
    pub fn function(&self, bdf: Bdf) -> Option<EcamFunction> {
        if bdf.bus > self.bus_end {
            return None;
        }
        let off = bdf.ecam_offset(self.bus_start)?;
        (off + 0x1000 <= self.size).then_some(EcamFunction {
            base: self.base + off,
        })
    }
}

/// One function's 4 KiB of ECAM space.
#[derive(Clone, Copy, Debug)]
pub struct EcamFunction {
    base: usize,
}

impl ConfigAccess for EcamFunction {
    fn read32(&self, off: u16) -> u32 {
        if !off.is_multiple_of(4) || off >= 0x1000 {
            return !0;
        }
        // SAFETY: an aligned register inside one function's 4 KiB of the ECAM window
        // the host DTB names (`Ecam::function` checked it); configuration reads have
        // no side effects on memory.
        let v = unsafe { core::ptr::read_volatile((self.base + off as usize) as *const u32) };
        fence_io();
        v
    }

    fn write32(&mut self, off: u16, v: u32) {
        if !off.is_multiple_of(4) || off >= 0x1000 {
            return;
        }
        fence_io();
        // SAFETY: as for `read32`; a configuration write changes the device, not RAM
        // (a BAR that moves moves a device window, which hyp maps nowhere yet).
        unsafe { core::ptr::write_volatile((self.base + off as usize) as *mut u32, v) };
    }
}

/// A device's register window: `size` bytes of MMIO at `base`. Accesses are naturally
/// aligned 32- or 64-bit and inside the window; anything else reads as all ones and
/// writes nothing.
#[derive(Clone, Copy, Debug)]
pub struct MmioWindow {
    base: usize,
    size: usize,
}

impl MmioWindow {
    /// Claim the window.
    ///
    /// # Safety
    /// `[base, base + size)` must be device registers (never RAM) that only hyp drives:
    /// a `reg` of the host DTB or a BAR hyp assigned itself. Stores there may make the
    /// device write RAM (DMA); what the device is told to write is the caller's
    /// responsibility (through an IOMMU context hyp built, or a `DmaBuf`).
    pub unsafe fn new(base: usize, size: usize) -> MmioWindow {
        MmioWindow { base, size }
    }

    fn ok(&self, off: usize, n: usize) -> bool {
        off.is_multiple_of(n) && off.checked_add(n).is_some_and(|e| e <= self.size)
    }

    /// Read the 32-bit register at `off`.
    pub fn read32(&self, off: usize) -> u32 {
        if !self.ok(off, 4) {
            return !0;
        }
        // SAFETY: an aligned register inside the window `new`'s contract makes hyp's.
        let v = unsafe { core::ptr::read_volatile((self.base + off) as *const u32) };
        fence_io();
        v
    }

    /// Write the 32-bit register at `off`.
    pub fn write32(&self, off: usize, v: u32) {
        if self.ok(off, 4) {
            fence_io();
            // SAFETY: as for `read32`.
            unsafe { core::ptr::write_volatile((self.base + off) as *mut u32, v) };
        }
    }

    /// Read the 64-bit register at `off`.
    pub fn read64(&self, off: usize) -> u64 {
        if !self.ok(off, 8) {
            return !0;
        }
        // SAFETY: as for `read32`.
        let v = unsafe { core::ptr::read_volatile((self.base + off) as *const u64) };
        fence_io();
        v
    }

    /// Write the 64-bit register at `off`.
    pub fn write64(&self, off: usize, v: u64) {
        if self.ok(off, 8) {
            fence_io();
            // SAFETY: as for `read32`.
            unsafe { core::ptr::write_volatile((self.base + off) as *mut u64, v) };
        }
    }
}
