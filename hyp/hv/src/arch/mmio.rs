//! Raw MMIO: the host PLIC and the `sifive_test` exit device.

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
        // SAFETY: an in-range enable word of the PLIC found in the DTB; only hyp
        // writes the host PLIC, and each context's enables are written by one hart
        // at a time under the caller's lock.
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
        super::halt()
    }
}
