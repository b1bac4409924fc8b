//! The host SMMUv3's registers (Arm IHI 0070 6.3, pages 0 and 1) and the memory hyp
//! gives it — a linear stream table, the command queue, the event queue — behind
//! `hyp_io::smmuv3::SmmuRegs`. The driver (bring-up, commands, STEs, events) is
//! `hyp_io::smmuv3::Smmu`; what hyp does with it is `arm::smmu`.
use hyp_io::smmuv3::{regs, SmmuRegs, Ste};

use crate::arch::pcie::MmioWindow;
use crate::arch::phys::DmaBuf;

/// One SMMU: its register window and its three structures in hyp's memory (never
/// freed: the SMMU holds their addresses for as long as hyp runs).
pub struct SmmuMmio {
    regs: MmioWindow,
    strtab: DmaBuf,
    cmdq: DmaBuf,
    eventq: DmaBuf,
}

impl SmmuMmio {
    /// The SMMU whose registers are at `base` (the host DTB's `arm,smmu-v3` `reg`),
    /// with a stream table for `sid_bits` StreamIDs and queues of `2^cmdq_log2`
    /// commands and `2^eventq_log2` events; `None` when hyp's heap cannot hold them.
    ///
    /// # Safety
    /// `base` is an SMMUv3's register window of at least [`regs::SIZE`] bytes named by
    /// the host DTB, and no other `SmmuMmio` drives it.
    pub unsafe fn new(
        base: usize,
        sid_bits: u32,
        cmdq_log2: u32,
        eventq_log2: u32,
    ) -> Option<SmmuMmio> {
        // Each structure aligned to its size (the base registers drop the low bits).
        let st = 64usize << sid_bits;
        let cq = (16usize << cmdq_log2).max(32);
        let eq = (32usize << eventq_log2).max(32);
        Some(SmmuMmio {
            // SAFETY: the caller's contract: device registers only hyp drives. The SMMU
            // writes RAM only where hyp points it (these three buffers) and, for a
            // device's DMA, where an STE hyp wrote allows.
            regs: unsafe { MmioWindow::new(base, regs::SIZE) },
            strtab: DmaBuf::new(st, st)?,
            cmdq: DmaBuf::new(cq, cq)?,
            eventq: DmaBuf::new(eq, eq)?,
        })
    }
}

impl SmmuRegs for SmmuMmio {
    fn read32(&self, off: usize) -> u32 {
        self.regs.read32(off)
    }

    fn write32(&mut self, off: usize, v: u32) {
        // Queue entries and STEs written before reach memory before the SMMU is told.
        super::fence_io();
        self.regs.write32(off, v);
    }

    fn write64(&mut self, off: usize, v: u64) {
        super::fence_io();
        self.regs.write64(off, v);
    }

    fn put_cmd(&mut self, slot: usize, cmd: [u64; 2]) {
        self.cmdq.write_u64(slot * 16, cmd[0]);
        self.cmdq.write_u64(slot * 16 + 8, cmd[1]);
    }

    fn event(&self, slot: usize) -> [u64; 4] {
        // The record is read after `SMMU_EVENTQ_PROD` said it is there.
        super::fence_io();
        core::array::from_fn(|i| self.eventq.read_u64(slot * 32 + 8 * i).unwrap_or(0))
    }

    fn put_ste(&mut self, sid: u32, ste: Ste) {
        let off = sid as usize * 64;
        // Dword 0 (V, Config) last, after the rest is in memory: the SMMU may fetch
        // the entry at any time (the CMD_CFGI_STE that follows makes it re-read).
        for (i, w) in ste.iter().enumerate().skip(1) {
            self.strtab.write_u64(off + 8 * i, *w);
        }
        super::fence_io();
        self.strtab.write_u64(off, ste[0]);
    }

    fn bases(&self) -> (u64, u64, u64) {
        (self.strtab.pa(), self.cmdq.pa(), self.eventq.pa())
    }

    fn now(&self) -> u64 {
        super::time()
    }
}
