//! The device directory (RISC-V IOMMU v1.0 2.1): one or two levels of 4 KiB pages in
//! hyp's heap, leaves of device contexts indexed by device ID. Every context starts
//! invalid (all zero): a device nobody was given can neither DMA nor send MSIs.
//!
//! Update order, so the IOMMU never reads a half-written context: making one valid,
//! hyp writes every other doubleword first and `tc` (with V) last; making one invalid,
//! `tc` first. The caller then sends IODIR.INVAL_DDT for the device ID and waits for an
//! IOFENCE.C before relying on the change (the IOMMU may have cached the old context).
use alloc::vec::Vec;

use hyp_io::iommu::{ddi, ddte, DdtMode, DeviceContext};

use super::IommuError;
use crate::arch::phys::DmaBuf;

/// The directory.
pub struct DeviceDirectory {
    mode: DdtMode,
    extended: bool,
    root: DmaBuf,
    /// Two-level mode: the leaf page of each used root index.
    leaves: Vec<(usize, DmaBuf)>,
}

fn page() -> Result<DmaBuf, IommuError> {
    DmaBuf::new(4096, 4096).ok_or(IommuError::NoMemory)
}

impl DeviceDirectory {
    /// An empty directory of `mode` (one or two levels) whose contexts are in the
    /// extended format if `extended`.
    pub fn new(mode: DdtMode, extended: bool) -> Result<DeviceDirectory, IommuError> {
        Ok(DeviceDirectory {
            mode,
            extended,
            root: page()?,
            leaves: Vec::new(),
        })
    }

    /// The root page's address (for `ddtp`).
    pub fn root(&self) -> u64 {
        self.root.pa()
    }

    /// Its mode.
    pub fn mode(&self) -> DdtMode {
        self.mode
    }

    /// Use `mode` instead (only before the IOMMU was pointed at the directory; the
    /// pages stay zero until a context is set).
    pub fn set_mode(&mut self, mode: DdtMode) {
        self.mode = mode;
        self.leaves.clear();
    }

    /// The leaf page holding `device_id`'s context and the context's offset in it,
    /// creating (and linking) the leaf in two-level mode.
    fn slot(&mut self, device_id: u32) -> Result<(&DmaBuf, usize), IommuError> {
        let levels = self.mode.levels();
        let idx = ddi(device_id, levels, self.extended)
            .filter(|_| levels == 1 || levels == 2)
            .ok_or(IommuError::DeviceIdOutOfRange(device_id))?;
        let dc_bytes = if self.extended { 64 } else { 32 };
        let off = idx[0] * dc_bytes;
        if levels == 1 {
            return Ok((&self.root, off));
        }
        let pos = match self.leaves.iter().position(|(i, _)| *i == idx[1]) {
            Some(p) => p,
            None => {
                let leaf = page()?;
                // The leaf is zero (every context invalid) before the root points at it.
                self.root.write_u64(8 * idx[1], ddte(leaf.pa()));
                self.leaves.push((idx[1], leaf));
                self.leaves.len() - 1
            }
        };
        Ok((&self.leaves[pos].1, off))
    }

    /// Write `device_id`'s context (see the module docs for the order).
    pub fn set(&mut self, device_id: u32, dc: &DeviceContext) -> Result<(), IommuError> {
        let n = if self.extended { 8 } else { 4 };
        let (leaf, off) = self.slot(device_id)?;
        let w = dc.words();
        if w[0] & hyp_io::iommu::tc::V != 0 {
            for (i, v) in w.iter().enumerate().take(n).skip(1) {
                leaf.write_u64(off + 8 * i, *v);
            }
            crate::arch::fence();
            leaf.write_u64(off, w[0]);
        } else {
            leaf.write_u64(off, w[0]);
            crate::arch::fence();
            for (i, v) in w.iter().enumerate().take(n).skip(1) {
                leaf.write_u64(off + 8 * i, *v);
            }
        }
        Ok(())
    }
}
