//! Host physical memory outside hyp's Rust objects: the firmware's DTB, the guests'
//! RAM, and RAM hyp shares with devices ([`DmaBuf`]: the IOMMU's queues and tables).
//! Accessed only through bounds-checked volatile accesses, because a guest (from
//! another hart) or a device may be writing the same bytes.

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

/// RAM shared with a device: zeroed, aligned, allocated once from hyp's heap and never
/// freed (a device may keep writing it), reached only through volatile accesses
/// because the device writes it behind the compiler's back (a queue, a completion
/// word, a device context the IOMMU reads). hyp runs untranslated, so its address is
/// also the physical address the device is given ([`DmaBuf::pa`]).
pub struct DmaBuf {
    base: usize,
    len: usize,
}

impl DmaBuf {
    /// `len` zeroed bytes aligned to `align` (a power of two); `None` if the heap is
    /// exhausted or the layout is invalid.
    pub fn new(len: usize, align: usize) -> Option<DmaBuf> {
        let layout = core::alloc::Layout::from_size_align(len.max(1), align).ok()?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            return None;
        }
        // The allocation is never given back (`DmaBuf` has no `Drop`): the device may
        // hold its address for as long as hyp runs.
        Some(DmaBuf {
            base: p as usize,
            len: len.max(1),
        })
    }

    /// Its physical address.
    pub fn pa(&self) -> u64 {
        self.base as u64
    }

    fn at(&self, off: usize, n: usize) -> Option<usize> {
        (off.is_multiple_of(n) && off.checked_add(n)? <= self.len).then_some(self.base + off)
    }

    /// The 64-bit word at `off` (8-byte aligned), or `None` out of range.
    pub fn read_u64(&self, off: usize) -> Option<u64> {
        let a = self.at(off, 8)?;
        // SAFETY: inside the allocation `new` made and leaked: no Rust reference points
        // into it; volatile because the device writes it.
        Some(unsafe { core::ptr::read_volatile(a as *const u64) })
    }

    /// Write the 64-bit word at `off`; false (nothing written) out of range.
    pub fn write_u64(&self, off: usize, v: u64) -> bool {
        let Some(a) = self.at(off, 8) else {
            return false;
        };
        // SAFETY: as for `read_u64`.
        unsafe { core::ptr::write_volatile(a as *mut u64, v) };
        true
    }

    /// The 64-bit word at `off` (8-byte aligned) as an atomic, for words hyp and a
    /// device both change (an MRIF's pending words); `None` out of range.
    pub fn atomic_u64(&self, off: usize) -> Option<&core::sync::atomic::AtomicU64> {
        let a = self.at(off, 8)?;
        // SAFETY: inside the allocation `new` made and leaked (it lives as long as
        // hyp), 8-byte aligned; hyp reaches it only through `DmaBuf`'s volatile and
        // atomic accesses, so the shared `AtomicU64` aliases no exclusive reference.
        Some(unsafe { &*(a as *const core::sync::atomic::AtomicU64) })
    }

    /// The 32-bit word at `off` (4-byte aligned), or `None` out of range.
    pub fn read_u32(&self, off: usize) -> Option<u32> {
        let a = self.at(off, 4)?;
        // SAFETY: as for `read_u64`.
        Some(unsafe { core::ptr::read_volatile(a as *const u32) })
    }

    /// Write the 32-bit word at `off`; false (nothing written) out of range.
    pub fn write_u32(&self, off: usize, v: u32) -> bool {
        let Some(a) = self.at(off, 4) else {
            return false;
        };
        // SAFETY: as for `read_u64`.
        unsafe { core::ptr::write_volatile(a as *mut u32, v) };
        true
    }

    /// Write the byte at `off`; false (nothing written) out of range (aarch64's LPI
    /// configuration tables).
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    pub fn write_u8(&self, off: usize, v: u8) -> bool {
        let Some(a) = self.at(off, 1) else {
            return false;
        };
        // SAFETY: as for `read_u64`.
        unsafe { core::ptr::write_volatile(a as *mut u8, v) };
        true
    }

    /// Bytes of the buffer.
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    pub fn len(&self) -> usize {
        self.len
    }
}
