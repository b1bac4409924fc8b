//! Raw MMIO: the host PLIC, the host S-level APLIC and IMSIC pages, and the
//! `sifive_test` exit device.
use virq_riscv::aplic::regs as aplic_regs;

/// Read a 32-bit device register.
///
/// # Safety
/// `addr` must be a 4-byte aligned device register that hyp owns and that has no
/// memory-safety effect when read (a device register, never RAM hyp uses).
unsafe fn read32(addr: usize) -> u32 {
    // SAFETY: the caller guarantees `addr` is a valid, aligned device register.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

/// Write a 32-bit device register.
///
/// # Safety
/// As for [`read32`].
unsafe fn write32(addr: usize, v: u32) {
    // SAFETY: the caller guarantees `addr` is a valid, aligned device register.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

/// The host's PLIC (riscv,plic0 register map: priorities at 0, enables at 0x2000 +
/// 0x80 * context, threshold/claim at 0x20_0000 + 0x1000 * context).
#[derive(Clone, Copy, Debug)]
pub struct HostPlic {
    base: usize,
    ndev: u32,
    contexts: u32,
}

impl HostPlic {
    /// Describe the PLIC found in the host DTB. `size` is the `reg` size; every
    /// register accessed afterwards is checked to lie below it.
    pub fn new(base: usize, size: usize, ndev: u32) -> Self {
        let contexts = (size.saturating_sub(0x20_0000) / 0x1000) as u32;
        HostPlic {
            base,
            ndev,
            contexts,
        }
    }

    fn src_ok(&self, src: u32) -> bool {
        src != 0 && src <= self.ndev
    }

    /// Set a source's priority.
    pub fn set_priority(&self, src: u32, prio: u32) {
        if self.src_ok(src) {
            // SAFETY: an in-range priority register of the PLIC found in the DTB.
            unsafe { write32(self.base + 4 * src as usize, prio) }
        }
    }

    /// Enable or disable a source for a context.
    pub fn set_enable(&self, ctx: u32, src: u32, on: bool) {
        if !self.src_ok(src) || ctx >= self.contexts {
            return;
        }
        let addr = self.base + 0x2000 + 0x80 * ctx as usize + 4 * (src as usize / 32);
        let bit = 1u32 << (src % 32);
        // Harts update enable words of the same context (a guest's completion on one
        // hart lifts the storm mask the interrupt hart set): the read-modify-write is
        // serialised so neither update is lost.
        static ENABLE_RMW: spin::Mutex<()> = spin::Mutex::new(());
        let _rmw = ENABLE_RMW.lock();
        // SAFETY: an in-range enable word of the PLIC found in the DTB; only hyp
        // writes the host PLIC, and the read-modify-write holds ENABLE_RMW.
        unsafe {
            let v = read32(addr);
            write32(addr, if on { v | bit } else { v & !bit });
        }
    }

    /// Set a context's priority threshold.
    pub fn set_threshold(&self, ctx: u32, t: u32) {
        if ctx < self.contexts {
            // SAFETY: an in-range threshold register.
            unsafe { write32(self.base + 0x20_0000 + 0x1000 * ctx as usize, t) }
        }
    }

    /// Claim the highest-priority pending source of a context (0 = none).
    pub fn claim(&self, ctx: u32) -> u32 {
        if ctx >= self.contexts {
            return 0;
        }
        // SAFETY: an in-range claim register; reading it claims, which is intended.
        unsafe { read32(self.base + 0x20_0004 + 0x1000 * ctx as usize) }
    }

    /// Complete a source previously claimed by `ctx`.
    pub fn complete(&self, ctx: u32, src: u32) {
        if ctx < self.contexts && self.src_ok(src) {
            // SAFETY: an in-range claim/complete register.
            unsafe { write32(self.base + 0x20_0004 + 0x1000 * ctx as usize, src) }
        }
    }
}

/// The `sifive,test0` device: writing it ends QEMU.
#[derive(Clone, Copy, Debug)]
pub struct TestDevice {
    base: usize,
}

impl TestDevice {
    /// The device found in the host DTB at `base`.
    pub fn new(base: usize) -> Self {
        TestDevice { base }
    }

    /// End the machine with an exit status (QEMU: 0x5555 = pass, `code << 16 | 0x3333`).
    pub fn exit(&self, code: u16) -> ! {
        let v = if code == 0 {
            0x5555
        } else {
            ((code as u32) << 16) | 0x3333
        };
        // SAFETY: the sifive_test register at offset 0 of the device in the DTB.
        unsafe { write32(self.base, v) };
        crate::arch::halt()
    }
}

/// The host's supervisor-level APLIC domain (RISC-V AIA v1.0 chapter 4 register map),
/// driven in MSI delivery mode. Every access is checked against the `reg` size and the
/// `riscv,num-sources` of the host DTB.
#[derive(Clone, Copy, Debug)]
pub struct HostAplic {
    base: usize,
    size: usize,
    sources: u32,
}

// The register map is virq-riscv's (`aplic::regs`), the one place it is written.
const APLIC_DOMAINCFG: usize = aplic_regs::DOMAINCFG as usize;
const APLIC_SOURCECFG: usize = aplic_regs::SOURCECFG_BASE as usize;
const APLIC_SETIENUM: usize = aplic_regs::SETIENUM as usize;
const APLIC_CLRIENUM: usize = aplic_regs::CLRIENUM as usize;
const APLIC_SETIPNUM_LE: usize = aplic_regs::SETIPNUM_LE as usize;
const APLIC_TARGET: usize = aplic_regs::TARGET_BASE as usize;

impl HostAplic {
    /// The domain found in the host DTB at `base` (`size` bytes) with `sources` sources.
    pub fn new(base: usize, size: usize, sources: u32) -> Self {
        HostAplic {
            base,
            size,
            sources: sources.min(1023),
        }
    }

    fn src_ok(&self, src: u32) -> bool {
        src != 0 && src <= self.sources
    }

    fn write(&self, off: usize, v: u32) {
        if off + 4 <= self.size && off.is_multiple_of(4) {
            // SAFETY: an aligned register inside the APLIC window named by the host DTB;
            // only hyp drives the S-level domain (OpenSBI delegated it).
            unsafe { write32(self.base + off, v) }
        }
    }

    fn read(&self, off: usize) -> u32 {
        if off + 4 <= self.size && off.is_multiple_of(4) {
            // SAFETY: as for `write`; APLIC reads have no side effects.
            unsafe { read32(self.base + off) }
        } else {
            0
        }
    }

    /// Write `domaincfg`.
    pub fn set_domaincfg(&self, v: u32) {
        self.write(APLIC_DOMAINCFG, v);
    }

    /// Read `domaincfg`.
    pub fn domaincfg(&self) -> u32 {
        self.read(APLIC_DOMAINCFG)
    }

    /// Write `sourcecfg[src]`.
    pub fn set_sourcecfg(&self, src: u32, v: u32) {
        if self.src_ok(src) {
            self.write(APLIC_SOURCECFG + 4 * src as usize, v);
        }
    }

    /// Write `target[src]`.
    pub fn set_target(&self, src: u32, v: u32) {
        if self.src_ok(src) {
            self.write(APLIC_TARGET + 4 * src as usize, v);
        }
    }

    /// Read `target[src]`.
    pub fn target(&self, src: u32) -> u32 {
        if self.src_ok(src) {
            self.read(APLIC_TARGET + 4 * src as usize)
        } else {
            0
        }
    }

    /// Enable (`setienum`) or disable (`clrienum`) a source.
    pub fn set_enabled(&self, src: u32, on: bool) {
        if self.src_ok(src) {
            self.write(if on { APLIC_SETIENUM } else { APLIC_CLRIENUM }, src);
        }
    }

    /// Write `setipnum_le`: sets the source's pending bit "if possible" (AIA 4.7), which
    /// for a level source in MSI mode means: if its input is still asserted. The
    /// re-trigger of AIA 4.9.2.
    pub fn setipnum(&self, src: u32) {
        if self.src_ok(src) {
            self.write(APLIC_SETIPNUM_LE, src);
        }
    }
}

/// The host's S-level IMSIC pages (interrupt files): `size` bytes at `base`.
#[derive(Clone, Copy, Debug)]
pub struct ImsicPages {
    base: usize,
    size: usize,
}

impl ImsicPages {
    /// The S-level IMSIC window of the host DTB.
    pub fn new(base: usize, size: usize) -> Self {
        ImsicPages { base, size }
    }

    /// Write `eiid` to `seteipnum_le` (offset 0) of the interrupt file at page offset
    /// `page` (bytes from `base`, a multiple of 4 KiB): an MSI. Out-of-range pages are
    /// ignored; returns whether the write was made.
    pub fn send(&self, page: usize, eiid: u32) -> bool {
        if !page.is_multiple_of(0x1000) || page >= self.size {
            return false;
        }
        // SAFETY: `seteipnum_le` of an interrupt file inside the S-level IMSIC window
        // named by the host DTB; a store of an identity only sets a pending bit.
        unsafe { write32(self.base + page, eiid) };
        true
    }
}
