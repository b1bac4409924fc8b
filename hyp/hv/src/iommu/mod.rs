//! hyp's RISC-V IOMMU driver (RISC-V IOMMU Architecture Specification v1.0; the
//! formats are `hyp_io::iommu`'s, the registers are reached through
//! `arch::pcie::MmioWindow`).
//!
//! Bring-up ([`Iommu::init`], the spec's chapter 6 order): read `capabilities` and
//! `fctl`; wait for `ddtp` to be idle in Off or Bare; give the IOMMU a command queue and
//! a fault queue in hyp's heap and wait (bounded) until each reports itself on; build
//! an empty device directory — every device context invalid, so no device can DMA — and
//! point `ddtp` at it (two levels if the IOMMU takes that mode, else one); invalidate
//! every cached context and translation and wait for an IOFENCE.C to complete.
//!
//! Then [`Iommu::attach`] gives a device ID a context whose second stage is a guest's
//! G-stage (`iohgatp` = the guest's `hgatp`: the same Sv39x4 tables, GSCID = VMID), and
//! [`Iommu::detach`] takes it away; both invalidate and fence before returning. Faults
//! are read by [`Iommu::poll_faults`], printed, counted, never fatal. hyp polls: no
//! IOMMU interrupt is enabled yet.
//!
//! Every wait is bounded ([`TIMEOUT_MS`]) and ends in an [`IommuError`] naming what did
//! not happen and the register that shows it.
mod ddt;
mod queue;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use hyp_io::iommu::{
    ddtp, extended_format, regs, Capabilities, Command, DdtMode, DeviceContext, FaultRecord,
    GStageMode, Iohgatp, MsiPte, MsiTable,
};
use spin::{Mutex, Once};

use crate::arch::pcie::MmioWindow;
use crate::arch::phys::DmaBuf;
use crate::println;
use ddt::DeviceDirectory;
use queue::{CommandQueue, FaultQueue};

/// How long hyp waits for the IOMMU to do anything (a queue to come on, `ddtp` to go
/// idle, a fence to complete).
pub const TIMEOUT_MS: u64 = 1000;

/// What went wrong; always the IOMMU's or hyp's, never a guest's.
#[derive(Clone, Copy, Debug)]
pub enum IommuError {
    /// Something the IOMMU must have for hyp to use it.
    Unsupported(&'static str),
    /// A wait ran out: what hyp waited for, and the register value it last read.
    Timeout(&'static str, u64),
    /// The command queue stopped with an error (`cqcsr`: cmd_ill, cqmf or cmd_to).
    CommandQueue(u32),
    /// `ddtp` did not take the mode hyp wrote (it reads back this).
    DdtpRefused(u64),
    /// The heap is exhausted.
    NoMemory,
    /// A device ID beyond what the directory's levels resolve.
    DeviceIdOutOfRange(u32),
    /// A G-stage the IOMMU cannot walk: the guest's `hgatp` and why.
    BadSecondStage(u64, &'static str),
}

impl core::fmt::Display for IommuError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IommuError::Unsupported(what) => write!(f, "unsupported: {what}"),
            IommuError::Timeout(what, reg) => {
                write!(
                    f,
                    "timed out after {TIMEOUT_MS} ms waiting for {what} (read {reg:#x})"
                )
            }
            IommuError::CommandQueue(c) => {
                write!(f, "command queue stopped: cqcsr {c:#x}")?;
                for (bit, name) in [
                    (regs::QCSR_MF, " cqmf (memory fault)"),
                    (regs::QCSR_TO_OR_OF, " cmd_to (timeout)"),
                    (regs::CQCSR_CMD_ILL, " cmd_ill (illegal command)"),
                ] {
                    if c & bit != 0 {
                        write!(f, "{name}")?;
                    }
                }
                Ok(())
            }
            IommuError::DdtpRefused(v) => write!(f, "ddtp refused the mode: reads {v:#x}"),
            IommuError::NoMemory => write!(f, "out of heap for the IOMMU's tables"),
            IommuError::DeviceIdOutOfRange(d) => {
                write!(f, "device ID {d:#x} beyond the device directory")
            }
            IommuError::BadSecondStage(h, why) => write!(f, "hgatp {h:#x}: {why}"),
        }
    }
}

/// What the IOMMU did, for `ACCT`.
#[derive(Default)]
pub struct IommuCounts {
    /// Commands submitted.
    pub commands: AtomicU64,
    /// IOFENCE.C completions waited for.
    pub fences: AtomicU64,
    /// Fault records read.
    pub faults: AtomicU64,
    /// Times the fault queue overflowed (`fqof`: records were lost).
    pub fault_overflows: AtomicU64,
    /// Memory faults of either queue (`cqmf`, `fqmf`).
    pub queue_memory_faults: AtomicU64,
    /// G-stage changes of attached guests made known to the IOMMU
    /// ([`Iommu::invalidate_gstage_page`]).
    pub gstage_invalidations: AtomicU64,
    /// MSI page-table entries rewritten ([`Iommu::write_msi_pte`]).
    pub msi_pte_updates: AtomicU64,
    /// Fault-queue interrupts taken ([`Iommu::fault_interrupt`]).
    pub fault_interrupts: AtomicU64,
}

/// The IOMMU, brought up.
pub struct Iommu {
    regs: MmioWindow,
    /// Its `capabilities`.
    pub caps: Capabilities,
    ddt: DeviceDirectory,
    cq: CommandQueue,
    fq: FaultQueue,
    /// The word IOFENCE.C writes its sequence number to.
    fence_word: DmaBuf,
    fence_seq: u32,
    /// The counters.
    pub counts: IommuCounts,
    timeout_ticks: u64,
    /// Attached device IDs and their GSCIDs.
    attached: Vec<(u32, u16)>,
    /// The guests' MSI page tables, by GSCID.
    msi_tables: Vec<(u16, MsiTable, DmaBuf)>,
}

/// Wait until `done` returns `Some`, at most `ticks` of `arch::time`; `Err` with the last
/// value `probe` read.
fn wait<T>(ticks: u64, mut done: impl FnMut() -> Option<T>) -> Option<T> {
    let start = crate::arch::time();
    loop {
        if let Some(v) = done() {
            return Some(v);
        }
        if crate::arch::time().wrapping_sub(start) > ticks {
            return done();
        }
        core::hint::spin_loop();
    }
}

impl Iommu {
    /// Bring up the IOMMU whose registers are `regs` (see the module docs). `timebase`
    /// is the `time` frequency, for the waits.
    pub fn init(regs: MmioWindow, timebase: u64) -> Result<Iommu, IommuError> {
        let timeout_ticks = timebase * TIMEOUT_MS / 1000;
        let caps = Capabilities(regs.read64(regs::CAPABILITIES));
        if caps.version().0 != 1 {
            return Err(IommuError::Unsupported("capabilities.version is not 1.x"));
        }
        let fctl = regs.read32(regs::FCTL);
        if fctl & regs::FCTL_BE != 0 {
            return Err(IommuError::Unsupported(
                "big-endian data structures (fctl.BE)",
            ));
        }
        if fctl & regs::FCTL_GXL != 0 {
            return Err(IommuError::Unsupported("fctl.GXL (Sv32x4 second stage)"));
        }
        if !caps.sv39x4() {
            return Err(IommuError::Unsupported("Sv39x4 second stage"));
        }
        let ddtp_now = wait(timeout_ticks, || {
            let v = regs.read64(regs::DDTP);
            (v & regs::DDTP_BUSY == 0).then_some(v)
        })
        .ok_or(IommuError::Timeout(
            "ddtp.busy to clear",
            regs.read64(regs::DDTP),
        ))?;
        match DdtMode::of(ddtp_now) {
            Some(DdtMode::Off) | Some(DdtMode::Bare) => {}
            _ => return Err(IommuError::DdtpRefused(ddtp_now)),
        }
        let extended = extended_format(caps);
        let mut iommu = Iommu {
            regs,
            caps,
            ddt: DeviceDirectory::new(DdtMode::TwoLevel, extended)?,
            cq: CommandQueue::new()?,
            fq: FaultQueue::new()?,
            fence_word: DmaBuf::new(64, 64).ok_or(IommuError::NoMemory)?,
            fence_seq: 0,
            counts: IommuCounts::default(),
            timeout_ticks,
            attached: Vec::new(),
            msi_tables: Vec::new(),
        };
        // The queues: off first (a previous owner may have left them on), then on.
        iommu.queue_off(regs::CQCSR, "cqcsr.cqon to clear")?;
        iommu.queue_off(regs::FQCSR, "fqcsr.fqon to clear")?;
        regs.write64(regs::CQB, iommu.cq.base()?);
        regs.write32(regs::CQT, 0);
        iommu.queue_on(regs::CQCSR, "cqcsr.cqon")?;
        regs.write64(regs::FQB, iommu.fq.base()?);
        regs.write32(regs::FQH, 0);
        iommu.queue_on(regs::FQCSR, "fqcsr.fqon")?;
        println!(
            "hyp: iommu: queues on: command queue {} entries at {:#x} (cqcsr {:#x}), fault queue {} entries at {:#x} (fqcsr {:#x})",
            queue::CQ_ENTRIES,
            iommu.cq.base()? >> 10 << 12,
            regs.read32(regs::CQCSR),
            queue::FQ_ENTRIES,
            iommu.fq.base()? >> 10 << 12,
            regs.read32(regs::FQCSR)
        );
        // The directory: two levels if the IOMMU takes them, else one.
        let mut taken = None;
        for mode in [DdtMode::TwoLevel, DdtMode::OneLevel] {
            iommu.ddt.set_mode(mode);
            let v = iommu.write_ddtp(ddtp(mode, iommu.ddt.root()))?;
            if DdtMode::of(v) == Some(mode) {
                taken = Some(v);
                break;
            }
        }
        let v = taken.ok_or(IommuError::DdtpRefused(regs.read64(regs::DDTP)))?;
        println!(
            "hyp: iommu: device directory {:?} ({} contexts) at {:#x}, ddtp {v:#x}: every device off",
            iommu.ddt.mode(),
            if extended { "64-byte extended" } else { "32-byte base" },
            iommu.ddt.root()
        );
        iommu.submit(&[
            Command::iodir_inval_ddt(None),
            Command::iotinval_gvma(None, None),
        ])?;
        let seq = iommu.fence()?;
        println!(
            "hyp: iommu: IODIR.INVAL_DDT + IOTINVAL.GVMA (all), IOFENCE.C completed (seq {seq})"
        );
        Ok(iommu)
    }

    fn queue_off(&self, csr: usize, what: &'static str) -> Result<(), IommuError> {
        self.regs.write32(csr, 0);
        wait(self.timeout_ticks, || {
            let v = self.regs.read32(csr);
            (v & (regs::QCSR_ON | regs::QCSR_BUSY) == 0).then_some(())
        })
        .ok_or(IommuError::Timeout(what, self.regs.read32(csr) as u64))
    }

    fn queue_on(&self, csr: usize, what: &'static str) -> Result<(), IommuError> {
        self.regs.write32(csr, regs::QCSR_EN);
        wait(self.timeout_ticks, || {
            let v = self.regs.read32(csr);
            (v & (regs::QCSR_ON | regs::QCSR_BUSY) == regs::QCSR_ON).then_some(())
        })
        .ok_or(IommuError::Timeout(what, self.regs.read32(csr) as u64))
    }

    /// Write `ddtp` and return what it reads once idle.
    fn write_ddtp(&self, v: u64) -> Result<u64, IommuError> {
        self.regs.write64(regs::DDTP, v);
        wait(self.timeout_ticks, || {
            let r = self.regs.read64(regs::DDTP);
            (r & regs::DDTP_BUSY == 0).then_some(r)
        })
        .ok_or(IommuError::Timeout(
            "ddtp.busy to clear",
            self.regs.read64(regs::DDTP),
        ))
    }

    /// `cqcsr`'s error bits, if any are set.
    fn cq_error(&self) -> Option<u32> {
        let c = self.regs.read32(regs::CQCSR);
        let bad = regs::QCSR_MF | regs::QCSR_TO_OR_OF | regs::CQCSR_CMD_ILL;
        (c & bad != 0 || c & regs::QCSR_ON == 0).then_some(c)
    }

    /// Queue `cmds` (waiting, bounded, for room).
    pub fn submit(&mut self, cmds: &[Command]) -> Result<(), IommuError> {
        for &cmd in cmds {
            if let Some(c) = self.cq_error() {
                return Err(IommuError::CommandQueue(c));
            }
            wait(self.timeout_ticks, || {
                (!self.cq.full(&self.regs)).then_some(())
            })
            .ok_or(IommuError::Timeout(
                "room in the command queue",
                self.regs.read32(regs::CQH) as u64,
            ))?;
            self.cq.push(&self.regs, cmd);
            self.counts.commands.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Send IOFENCE.C (AV = 1) and wait, bounded, until the IOMMU has written its
    /// sequence number to hyp's fence word: every command before it is done. Returns
    /// the sequence number.
    pub fn fence(&mut self) -> Result<u32, IommuError> {
        self.fence_seq = self.fence_seq.wrapping_add(1).max(1);
        let seq = self.fence_seq;
        self.fence_word.write_u32(0, 0);
        self.submit(&[Command::iofence_c(Some((self.fence_word.pa(), seq)))])?;
        let done = wait(self.timeout_ticks, || {
            if self.fence_word.read_u32(0) == Some(seq) {
                Some(Ok(()))
            } else {
                self.cq_error().map(Err)
            }
        });
        match done {
            Some(Ok(())) => {
                self.counts.fences.fetch_add(1, Ordering::Relaxed);
                Ok(seq)
            }
            Some(Err(c)) => Err(IommuError::CommandQueue(c)),
            None => Err(IommuError::Timeout(
                "IOFENCE.C to write its completion word",
                self.fence_word.read_u32(0).unwrap_or(0) as u64,
            )),
        }
    }

    /// Give `device_id` a context whose second stage is the guest G-stage `hgatp`
    /// (the same tables; GSCID = the guest's VMID), then invalidate what the IOMMU may
    /// have cached for the device and the guest and fence. Returns the `iohgatp`.
    pub fn attach(&mut self, device_id: u32, hgatp: u64) -> Result<u64, IommuError> {
        self.attach_context(device_id, hgatp, None)
    }

    /// [`Iommu::attach`] and [`Iommu::attach_with_msi`]: the context (second stage
    /// `hgatp`, MSIs through `msi` if given) written `tc` last, then IODIR.INVAL_DDT for
    /// the device and IOTINVAL.GVMA for the guest, fenced.
    fn attach_context(
        &mut self,
        device_id: u32,
        hgatp: u64,
        msi: Option<MsiTable>,
    ) -> Result<u64, IommuError> {
        let io =
            Iohgatp::from_hgatp(hgatp).ok_or(IommuError::BadSecondStage(hgatp, "reserved mode"))?;
        if io.mode == GStageMode::Bare || !io.mode.supported(self.caps) {
            return Err(IommuError::BadSecondStage(
                hgatp,
                "a mode this IOMMU does not walk",
            ));
        }
        let v = io
            .encode()
            .ok_or(IommuError::BadSecondStage(hgatp, "root not 16 KiB aligned"))?;
        let dc = match msi {
            Some(t) => DeviceContext::second_stage_with_msi(v, t),
            None => DeviceContext::second_stage(v),
        };
        self.ddt.set(device_id, &dc)?;
        self.submit(&[
            Command::iodir_inval_ddt(Some(device_id)),
            Command::iotinval_gvma(Some(io.gscid), None),
        ])?;
        self.fence()?;
        self.attached.retain(|(d, _)| *d != device_id);
        self.attached.push((device_id, io.gscid));
        Ok(v)
    }

    /// Guest `gscid`'s MSI page table for `count` interrupt files at consecutive
    /// guest-physical pages from `first_page` (made once, every entry invalid).
    pub fn msi_table(
        &mut self,
        gscid: u16,
        first_page: u64,
        count: u64,
    ) -> Result<MsiTable, IommuError> {
        if let Some((_, t, _)) = self.msi_tables.iter().find(|(g, _, _)| *g == gscid) {
            return Ok(*t);
        }
        if !self.caps.msi_flat() {
            return Err(IommuError::Unsupported(
                "MSI page tables (capabilities.MSI_FLAT)",
            ));
        }
        let buf = DmaBuf::new(4096, 4096).ok_or(IommuError::NoMemory)?;
        let t = MsiTable::consecutive(buf.pa(), first_page, count).ok_or(
            IommuError::Unsupported("interrupt-file pages not aligned to their count"),
        )?;
        self.msi_tables.push((gscid, t, buf));
        Ok(t)
    }

    /// Forget guest `gscid`'s MSI page table (its memory stays hyp's; the caller has
    /// detached every device that used it).
    pub fn drop_msi_table(&mut self, gscid: u16) {
        self.msi_tables.retain(|(g, _, _)| *g != gscid);
    }

    /// Like [`Iommu::attach`], with MSIs translated by the guest's MSI page table
    /// ([`Iommu::msi_table`]) instead of the second stage.
    pub fn attach_with_msi(
        &mut self,
        device_id: u32,
        hgatp: u64,
        msi: MsiTable,
    ) -> Result<u64, IommuError> {
        self.attach_context(device_id, hgatp, Some(msi))
    }

    /// Point guest `gscid`'s MSI page-table entry for the interrupt file at
    /// guest-physical `gpa` at `pte` and queue the invalidation of what the IOMMU
    /// cached of it (IOTINVAL.GVMA): after the next [`Iommu::fence`], every MSI to that
    /// page goes where `pte` says. `Ok(false)`: the guest has no MSI page table (its
    /// MSIs follow the second stage).
    pub fn write_msi_pte(&mut self, gscid: u16, gpa: u64, pte: MsiPte) -> Result<bool, IommuError> {
        let Some((_, t, buf)) = self.msi_tables.iter().find(|(g, _, _)| *g == gscid) else {
            return Ok(false);
        };
        let i = t.index(gpa).ok_or(IommuError::Unsupported(
            "an interrupt-file page outside the guest's MSI table",
        ))? as usize;
        // The word with V last when making valid, first when making invalid: the
        // IOMMU never reads a valid half-written entry.
        if pte.0[0] & 1 != 0 {
            buf.write_u64(16 * i + 8, pte.0[1]);
            buf.write_u64(16 * i, pte.0[0]);
        } else {
            buf.write_u64(16 * i, pte.0[0]);
            buf.write_u64(16 * i + 8, pte.0[1]);
        }
        self.submit(&[Command::iotinval_gvma(Some(gscid), Some(gpa))])?;
        self.counts.msi_pte_updates.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Take `device_id`'s context away (invalid: its DMA faults with cause 258), then
    /// invalidate and fence: when this returns, the IOMMU no longer uses the old
    /// context or the translations it made through it.
    pub fn detach(&mut self, device_id: u32) -> Result<(), IommuError> {
        self.ddt.set(device_id, &DeviceContext::INVALID)?;
        let mut cmds = alloc::vec![Command::iodir_inval_ddt(Some(device_id))];
        if let Some(&(_, gscid)) = self.attached.iter().find(|(d, _)| *d == device_id) {
            cmds.push(Command::iotinval_gvma(Some(gscid), None));
        }
        self.submit(&cmds)?;
        self.fence()?;
        self.attached.retain(|(d, _)| *d != device_id);
        Ok(())
    }

    /// Guest `gscid`'s G-stage changed at the page `gpa`: if a device is attached to
    /// that guest, queue an invalidation of what the IOMMU cached of the page
    /// (IOTINVAL.GVMA); the caller then waits with [`Iommu::fence`]. Returns whether
    /// anything was queued (nothing for a guest with no device).
    pub fn invalidate_gstage_page(&mut self, gscid: u16, gpa: u64) -> Result<bool, IommuError> {
        if !self.attached.iter().any(|&(_, g)| g == gscid) {
            return Ok(false);
        }
        self.submit(&[Command::iotinval_gvma(Some(gscid), Some(gpa))])?;
        self.counts
            .gstage_invalidations
            .fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Have the IOMMU signal a new fault record with an MSI writing `data` to `addr`
    /// (hyp's S-level interrupt file), through the `msi_cfg_tbl` entry of the fault
    /// queue's vector (`icvec.fiv`, spec 5.23-5.24):
    /// faults are then reported as they happen ([`Iommu::fault_interrupt`]) instead of
    /// at shutdown. Only for an IOMMU that signals by MSI from its own table (the
    /// platform device, `fctl.WSI` = 0); returns whether it is on.
    pub fn enable_fault_msi(&mut self, addr: u64, data: u32) -> bool {
        let wsi = self.regs.read32(regs::FCTL) & regs::FCTL_WSI != 0;
        if wsi || self.caps.igs() == 1 {
            return false;
        }
        // Vector 1 asked for; `icvec` may be fixed (QEMU's platform IOMMU reads
        // 0x3333 whatever is written), so the vector it reads back is the one used.
        let icvec = self.regs.read32(regs::ICVEC) & !(0xf << regs::ICVEC_FIV_SHIFT);
        self.regs
            .write32(regs::ICVEC, icvec | 1 << regs::ICVEC_FIV_SHIFT);
        let vec = (self.regs.read32(regs::ICVEC) >> regs::ICVEC_FIV_SHIFT & 0xf) as usize;
        let entry = regs::MSI_CFG_TBL + 16 * vec;
        self.regs.write64(entry, addr & !3);
        self.regs.write32(entry + 8, data);
        self.regs.write32(entry + 12, 0);
        self.regs.write32(regs::IPSR, regs::IPSR_FIP);
        self.regs
            .write32(regs::FQCSR, regs::QCSR_EN | regs::QCSR_IE);
        true
    }

    /// Have the IOMMU signal a new fault record on its wired interrupt (`fctl.WSI` = 1,
    /// spec 5.4): returns the vector (`icvec.fiv`, the index into the DTB's
    /// `interrupts`), or `None` if the IOMMU does not take wired interrupts.
    pub fn enable_fault_wsi(&mut self) -> Option<usize> {
        if self.caps.igs() == 0 {
            return None;
        }
        let fctl = self.regs.read32(regs::FCTL);
        self.regs.write32(regs::FCTL, fctl | regs::FCTL_WSI);
        if self.regs.read32(regs::FCTL) & regs::FCTL_WSI == 0 {
            return None;
        }
        let icvec = self.regs.read32(regs::ICVEC) & !(0xf << regs::ICVEC_FIV_SHIFT);
        self.regs
            .write32(regs::ICVEC, icvec | 1 << regs::ICVEC_FIV_SHIFT);
        let vec = (self.regs.read32(regs::ICVEC) >> regs::ICVEC_FIV_SHIFT & 0xf) as usize;
        self.regs.write32(regs::IPSR, regs::IPSR_FIP);
        self.regs
            .write32(regs::FQCSR, regs::QCSR_EN | regs::QCSR_IE);
        Some(vec)
    }

    /// The fault queue's interrupt arrived: clear `ipsr.fip` (so the next record
    /// signals again), then read the records. Returns how many.
    pub fn fault_interrupt(&mut self) -> usize {
        self.counts.fault_interrupts.fetch_add(1, Ordering::Relaxed);
        self.regs.write32(regs::IPSR, regs::IPSR_FIP);
        self.poll_faults().len()
    }

    /// Read every new fault record: print it, count it, return them. Overflow and
    /// memory-fault conditions of the fault queue are reported, counted and cleared
    /// (write-one-to-clear), so the IOMMU records again.
    pub fn poll_faults(&mut self) -> Vec<FaultRecord> {
        let mut out = Vec::new();
        self.fq.drain(&self.regs, |r| {
            println!("hyp: iommu fault: {r}");
            out.push(r);
        });
        self.counts
            .faults
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        let fqcsr = self.regs.read32(regs::FQCSR);
        let lost = fqcsr & (regs::QCSR_MF | regs::QCSR_TO_OR_OF);
        if lost != 0 {
            println!("hyp: iommu: fault queue lost records: fqcsr {fqcsr:#x}");
            if fqcsr & regs::QCSR_TO_OR_OF != 0 {
                self.counts.fault_overflows.fetch_add(1, Ordering::Relaxed);
            }
            if fqcsr & regs::QCSR_MF != 0 {
                self.counts
                    .queue_memory_faults
                    .fetch_add(1, Ordering::Relaxed);
            }
            let ie = self.regs.read32(regs::FQCSR) & regs::QCSR_IE;
            self.regs.write32(regs::FQCSR, regs::QCSR_EN | ie | lost);
        }
        out
    }
}

static IOMMU: Once<Mutex<Iommu>> = Once::new();

/// Publish the IOMMU (boot hart, once).
pub fn set_iommu(i: Iommu) -> &'static Mutex<Iommu> {
    IOMMU.call_once(|| Mutex::new(i))
}

/// The IOMMU, if the host has one and it came up.
pub fn iommu() -> Option<&'static Mutex<Iommu>> {
    IOMMU.get()
}
