//! The command queue (hyp produces, the IOMMU consumes) and the fault queue (the IOMMU
//! produces, hyp consumes), each a ring of entries in a [`DmaBuf`] (RISC-V IOMMU v1.0
//! chapter 3).
//!
//! Ownership, as the spec gives it: the command queue's entries between `cqh` and `cqt`
//! belong to the IOMMU; hyp writes an entry at `cqt`, then (after a fence) moves `cqt`
//! past it; the IOMMU moves `cqh` as it finishes commands. The fault queue's entries
//! between `fqh` and `fqt` belong to hyp; the IOMMU writes a record at `fqt` and moves
//! `fqt`; hyp reads the records and moves `fqh` to hand the slots back. A full fault
//! queue makes the IOMMU set `fqcsr.fqof` and drop records until hyp clears it.
use hyp_io::iommu::{regs, Command, FaultRecord, COMMAND_BYTES, FAULT_RECORD_BYTES};

use super::IommuError;
use crate::arch::pcie::MmioWindow;
use crate::arch::phys::DmaBuf;

/// Commands in the queue (4 KiB).
pub const CQ_ENTRIES: u32 = 256;
/// Fault records in the queue (4 KiB).
pub const FQ_ENTRIES: u32 = 128;

/// The command queue.
pub struct CommandQueue {
    buf: DmaBuf,
    /// hyp's copy of `cqt` (only hyp writes `cqt`).
    tail: u32,
}

impl CommandQueue {
    /// A zeroed queue of [`CQ_ENTRIES`] in hyp's heap.
    pub fn new() -> Result<CommandQueue, IommuError> {
        let bytes = (CQ_ENTRIES * COMMAND_BYTES) as usize;
        let buf = DmaBuf::new(bytes, bytes.max(4096)).ok_or(IommuError::NoMemory)?;
        Ok(CommandQueue { buf, tail: 0 })
    }

    /// The `cqb` value.
    pub fn base(&self) -> Result<u64, IommuError> {
        hyp_io::iommu::queue_base(self.buf.pa(), CQ_ENTRIES, COMMAND_BYTES)
            .ok_or(IommuError::NoMemory)
    }

    /// Is there no free slot (`cqt + 1 == cqh`)?
    pub fn full(&self, regs: &MmioWindow) -> bool {
        (self.tail + 1) % CQ_ENTRIES == regs.read32(regs::CQH) % CQ_ENTRIES
    }

    /// Write `cmd` at the tail and hand it to the IOMMU (`cqt` moves past it). The
    /// caller checked [`CommandQueue::full`].
    pub fn push(&mut self, regs: &MmioWindow, cmd: Command) {
        let off = (self.tail * COMMAND_BYTES) as usize;
        self.buf.write_u64(off, cmd.0[0]);
        self.buf.write_u64(off + 8, cmd.0[1]);
        self.tail = (self.tail + 1) % CQ_ENTRIES;
        // `MmioWindow::write32` fences first: the entry is in memory before `cqt` moves.
        regs.write32(regs::CQT, self.tail);
    }
}

/// The fault queue.
pub struct FaultQueue {
    buf: DmaBuf,
}

impl FaultQueue {
    /// A zeroed queue of [`FQ_ENTRIES`] in hyp's heap.
    pub fn new() -> Result<FaultQueue, IommuError> {
        let bytes = (FQ_ENTRIES * FAULT_RECORD_BYTES) as usize;
        let buf = DmaBuf::new(bytes, bytes.max(4096)).ok_or(IommuError::NoMemory)?;
        Ok(FaultQueue { buf })
    }

    /// The `fqb` value.
    pub fn base(&self) -> Result<u64, IommuError> {
        hyp_io::iommu::queue_base(self.buf.pa(), FQ_ENTRIES, FAULT_RECORD_BYTES)
            .ok_or(IommuError::NoMemory)
    }

    /// Take every record the IOMMU has written (`fqh..fqt`), oldest first, handing
    /// their slots back (`fqh = fqt`). `f` sees each one. An out-of-range `fqt` (a
    /// broken IOMMU) is treated as "nothing new".
    pub fn drain(&self, regs: &MmioWindow, mut f: impl FnMut(FaultRecord)) -> u32 {
        let tail = regs.read32(regs::FQT);
        let mut head = regs.read32(regs::FQH);
        if tail >= FQ_ENTRIES || head >= FQ_ENTRIES {
            return 0;
        }
        let mut n = 0;
        while head != tail {
            let off = (head * FAULT_RECORD_BYTES) as usize;
            let mut w = [0u64; 4];
            for (i, x) in w.iter_mut().enumerate() {
                *x = self.buf.read_u64(off + 8 * i).unwrap_or(0);
            }
            f(FaultRecord::decode(w));
            head = (head + 1) % FQ_ENTRIES;
            n += 1;
        }
        regs.write32(regs::FQH, head);
        n
    }
}
