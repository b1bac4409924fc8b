//! The host ITS's registers (GICv3/GICv4.0, Arm IHI 0069 9.19) and its command queue's
//! memory, behind `hyp_io::gic_its::ItsRegs`; the driver (tables, commands, vPEs) is
//! `arm::gicv4`, the formats `hyp_io::gic_its`.
use core::ptr::{read_volatile, write_volatile};

use hyp_io::gic_its::{gits, ItsRegs};

use crate::arch::phys::DmaBuf;

/// One ITS: its control frame (from the host DTB's `arm,gic-v3-its` node) and its
/// command queue (hyp memory it allocated and gave the ITS in `GITS_CBASER`).
pub struct ItsMmio {
    base: usize,
    queue: DmaBuf,
}

impl ItsMmio {
    /// The ITS whose control frame is at `base`, its command queue `queue` (given to
    /// the ITS in `GITS_CBASER` by the caller).
    ///
    /// # Safety
    ///
    /// `base` is an ITS control frame (64 KiB of device registers) named by the host
    /// DTB, and no other `ItsMmio` drives it.
    pub unsafe fn new(base: usize, queue: DmaBuf) -> ItsMmio {
        ItsMmio { base, queue }
    }

    /// The command queue's physical address and size.
    pub fn queue(&self) -> (u64, usize) {
        (self.queue.pa(), self.queue.len())
    }
}

impl ItsRegs for ItsMmio {
    fn read(&self, off: usize) -> u64 {
        let a = self.base + (off & 0xfff8);
        // SAFETY: `base` is the ITS's register frame (`new`'s contract); callers pass
        // register offsets below 64 KiB (`hyp_io::gic_its::gits`). `GITS_CTLR` is a
        // 32-bit register (QEMU refuses a 64-bit access to it); the others hyp uses are
        // 64-bit.
        unsafe {
            if off < gits::TYPER {
                u64::from(read_volatile(a as *const u32))
            } else {
                read_volatile(a as *const u64)
            }
        }
    }

    fn write(&mut self, off: usize, v: u64) {
        let a = self.base + (off & 0xfff8);
        // SAFETY: as for `read`.
        unsafe {
            if off < gits::TYPER {
                write_volatile(a as *mut u32, v as u32)
            } else {
                write_volatile(a as *mut u64, v)
            }
        }
    }

    fn put_cmd(&mut self, off: usize, cmd: [u64; 4]) {
        let off = (off % self.queue.len()) & !31;
        for (i, w) in cmd.iter().enumerate() {
            self.queue.write_u64(off + 8 * i, *w);
        }
        // The ITS reads the queue after the `GITS_CWRITER` write that follows.
        // SAFETY: a barrier only orders memory accesses.
        unsafe { core::arch::asm!("dsb ishst", options(nostack)) };
    }

    fn now(&self) -> u64 {
        super::time()
    }
}
