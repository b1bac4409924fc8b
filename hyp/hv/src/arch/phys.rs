//! Host physical memory outside hyp's Rust objects: the firmware's DTB and the
//! guests' RAM. Accessed only through bounds-checked volatile copies, because a guest
//! may be writing the same bytes from another hart.

/// A window of host physical RAM reserved for one purpose (a guest's RAM).
#[derive(Clone, Copy, Debug)]
pub struct PhysRange {
    base: usize,
    len: usize,
}

impl PhysRange {
    /// Claim `[base, base + len)`.
    ///
    /// # Safety
    /// The range must be RAM (hyp runs untranslated, so this is also its address),
    /// must not overlap hyp's image, stacks or heap, and no Rust reference may point
    /// into it for as long as the `PhysRange` is used.
    pub unsafe fn new(base: usize, len: usize) -> Self {
        PhysRange { base, len }
    }

    fn check(&self, off: usize, n: usize) -> Option<usize> {
        let end = off.checked_add(n)?;
        (end <= self.len).then_some(self.base + off)
    }

    /// Copy out `buf.len()` bytes at `off`; false (and nothing read) if out of range.
    pub fn read(&self, off: usize, buf: &mut [u8]) -> bool {
        let Some(addr) = self.check(off, buf.len()) else {
            return false;
        };
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: `addr + i` lies in the range, which `new`'s contract makes RAM
            // that no Rust reference aliases; volatile because a guest may write it.
            *b = unsafe { core::ptr::read_volatile((addr + i) as *const u8) };
        }
        true
    }

    /// Copy `data` in at `off`; false (and nothing written) if out of range.
    pub fn write(&self, off: usize, data: &[u8]) -> bool {
        let Some(addr) = self.check(off, data.len()) else {
            return false;
        };
        for (i, b) in data.iter().enumerate() {
            // SAFETY: as for `read`.
            unsafe { core::ptr::write_volatile((addr + i) as *mut u8, *b) };
        }
        true
    }
}

/// Copy `buf.len()` bytes from host physical `addr` (an input QEMU's loader put in
/// RAM, such as the config blob).
///
/// # Safety
/// `[addr, addr + buf.len())` must be RAM outside every range hyp's Rust objects use,
/// and nothing may write it during the copy.
pub unsafe fn copy_in(addr: usize, buf: &mut [u8]) {
    // SAFETY: the caller guarantees the source is readable RAM no one writes; `buf` is
    // a distinct Rust buffer.
    unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, buf.as_mut_ptr(), buf.len()) };
}

/// Copy the firmware's flattened device tree at `addr` into a heap vector.
///
/// # Safety
/// `addr` must be the DTB address the firmware passed at boot (`boot_main`'s `dtb`), not
/// yet overwritten.
pub unsafe fn copy_boot_dtb(addr: usize) -> Option<alloc::vec::Vec<u8>> {
    let mut hdr = [0u8; 8];
    // SAFETY: the caller guarantees a DTB header (at least 40 bytes) at `addr`.
    unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, hdr.as_mut_ptr(), 8) };
    if u32::from_be_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) != 0xd00d_feed {
        return None;
    }
    let size = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]) as usize;
    if size > 16 << 20 {
        return None;
    }
    let mut v = alloc::vec![0u8; size];
    // SAFETY: the header says the blob is `size` bytes long; `v` is a fresh buffer.
    unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, v.as_mut_ptr(), size) };
    Some(v)
}
