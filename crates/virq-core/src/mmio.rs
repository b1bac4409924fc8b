//! The MMIO contract every emulated interrupt controller shares, whatever the
//! architecture: the access interface ([`MmioDevice`]) and the per-device counters of
//! guest accesses it ignored ([`ErrorCounters`]).
//!
//! `read(offset, size) -> u64` and `write(offset, size, value)`: `offset` is relative
//! to the device's base address, `size` is the access width in bytes (1, 2, 4 or 8)
//! and `value` holds the data in its low `size` bytes, already converted from guest
//! byte order by the caller.
//!
//! # Error policy
//!
//! The guest is untrusted. No access panics. An access the device cannot honour reads
//! as zero and is ignored when written, and bumps one field of the device's
//! [`ErrorCounters`]: the wrong width, misalignment, an offset outside the register
//! map (or in a reserved hole), a write to a read-only register, or a well-formed
//! access with a value the specification says to ignore. The hypervisor reads the
//! counters to report misbehaving guests; they never change what the guest sees.

/// Per-device counters of guest accesses that were ignored. Counters saturate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ErrorCounters {
    /// Accesses whose width was not the register width (4 bytes).
    pub bad_width: u64,
    /// Accesses not naturally aligned.
    pub misaligned: u64,
    /// Accesses outside the register map, or to a reserved hole in it.
    pub unmapped: u64,
    /// Writes to read-only registers.
    pub read_only: u64,
    /// Well-formed accesses carrying a value the specification ignores (bad source or
    /// identity number, completion of an unclaimed source, unreachable hart, ...).
    pub ignored_value: u64,
}

impl ErrorCounters {
    /// Sum of all counters.
    pub fn total(&self) -> u64 {
        self.bad_width
            .saturating_add(self.misaligned)
            .saturating_add(self.unmapped)
            .saturating_add(self.read_only)
            .saturating_add(self.ignored_value)
    }

    /// Saturating increment of one counter.
    pub fn bump(field: &mut u64) {
        *field = field.saturating_add(1);
    }

    /// Validates a 32-bit register access inside a region of `region` bytes and
    /// returns the offset, or counts the fault and returns `None`.
    pub fn check32(&mut self, offset: u64, size: u8, region: u64) -> Option<u32> {
        if size != 4 {
            Self::bump(&mut self.bad_width);
            None
        } else if offset % 4 != 0 {
            Self::bump(&mut self.misaligned);
            None
        } else if offset >= region {
            Self::bump(&mut self.unmapped);
            None
        } else {
            // `region` is below 4 GiB for every device here, so the offset fits.
            u32::try_from(offset).ok()
        }
    }
}

/// A guest-visible memory-mapped device. See the [module docs](self) for the contract.
pub trait MmioDevice {
    /// Size of the device's guest-physical window in bytes (a multiple of 4 KiB).
    fn region_size(&self) -> u64;
    /// A guest load of `size` bytes at `offset`. Never panics; ignored accesses read 0.
    fn read(&mut self, offset: u64, size: u8) -> u64;
    /// A guest store of the low `size` bytes of `value` at `offset`. Never panics.
    fn write(&mut self, offset: u64, size: u8, value: u64);
    /// Counters of the accesses this device ignored.
    fn errors(&self) -> ErrorCounters;
}
