//! What every emulated device shares: the MMIO access interface, the per-device error
//! counters and the traits through which a device raises interrupts.
//!
//! # MMIO interface
//!
//! Every guest-visible device implements [`MmioDevice`]: `read(offset, size) -> u64`
//! and `write(offset, size, value)`, where `offset` is relative to the device's base
//! address, `size` is the access width in bytes (1, 2, 4 or 8) and `value` holds the
//! data in its low `size` bytes, already converted from guest byte order by the
//! caller. All registers of the PLIC, APLIC and IMSIC are 32 bits wide: only
//! naturally aligned 4-byte accesses are honoured.
//!
//! # Error policy
//!
//! The guest is untrusted. No access panics. An access the device cannot honour reads
//! as zero and is ignored when written, and bumps one field of the device's
//! [`ErrorCounters`]: the wrong width, misalignment, an offset outside the register
//! map (or in a reserved hole), a write to a read-only register, or a well-formed
//! access with a value the specification says to ignore (for example completing a
//! PLIC source that was never claimed). Hyp reads the counters to report misbehaving
//! guests; they never change what the guest sees.

pub use virq_core::mmio::{ErrorCounters, MmioDevice};

/// Raises and lowers a vCPU's VS-level external interrupt (`hvip.VSEIP`, id 10).
///
/// `vcpu` is the guest's own vCPU index given to the device at construction (a PLIC
/// context's vCPU, an APLIC hart index, an IMSIC file's hart index) — never a
/// machine-wide id. Devices call this only when the level changes. Hyp
/// implements it with `virq_core::pending::PendingSet::raise`/`lower` and a kick
/// ([`crate::hext::PendingSink`] does exactly that). Like [`EoiSink`] it is called from
/// inside a device access or line change; raising and kicking take no lock, so they
/// are safe there.
pub trait VcpuIrqSink {
    /// Sets the level of `vcpu`'s VS external interrupt.
    fn set_vseip(&self, vcpu: u32, level: bool);
}

impl<T: VcpuIrqSink + ?Sized> VcpuIrqSink for &T {
    fn set_vseip(&self, vcpu: u32, level: bool) {
        (**self).set_vseip(vcpu, level);
    }
}

/// Told when the guest completes (EOIs) a source marked as passed through, so the
/// physical completion can follow (`virq_core::route::RouteTable::guest_completed`,
/// or `InFlight::deactivate` with ack notifiers).
///
/// **The implementer must know:** it is called from inside the device's
/// [`MmioDevice::write`], so with whatever lock the hypervisor holds around the device.
/// Record the source there and run the ack notifiers after that lock is dropped (a
/// notifier may need it: seed 004's deadlock); the `vplic` example shows the pattern.
pub trait EoiSink {
    /// The guest completed passthrough source `source`.
    fn guest_completed(&self, source: u32);
}

impl<T: EoiSink + ?Sized> EoiSink for &T {
    fn guest_completed(&self, source: u32) {
        (**self).guest_completed(source);
    }
}

/// An [`EoiSink`] for devices without passthrough sources.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEoi;

impl EoiSink for NoEoi {
    fn guest_completed(&self, _source: u32) {}
}

/// A configuration error: the host asked for a device the specification does not allow.
/// This is a host bug, never a guest's doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// Source count outside 1..=1023.
    Sources,
    /// Context or hart count of zero or above the const capacity.
    Targets,
    /// Two targets mapped to the same vCPU.
    DuplicateVcpu,
    /// IMSIC identity count not 64k - 1 within 63..=2047.
    Identities,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::Sources => "source count must be within 1..=1023",
            Self::Targets => "target count must be non-zero and within capacity",
            Self::DuplicateVcpu => "a vCPU may receive one target only",
            Self::Identities => "identity count must be 64k-1 within 63..=2047",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCounters;

    #[test]
    fn check32_counts_each_fault_once() {
        let mut e = ErrorCounters::default();
        assert_eq!(e.check32(8, 4, 16), Some(8));
        assert_eq!(e.check32(8, 8, 16), None);
        assert_eq!(e.check32(6, 4, 16), None);
        assert_eq!(e.check32(16, 4, 16), None);
        assert_eq!(e.check32(u64::MAX - 3, 4, 16), None);
        assert_eq!((e.bad_width, e.misaligned, e.unmapped), (1, 1, 2));
        assert_eq!(e.total(), 4);
    }

    #[test]
    fn counters_saturate() {
        let mut e = ErrorCounters {
            read_only: u64::MAX,
            ..Default::default()
        };
        ErrorCounters::bump(&mut e.read_only);
        assert_eq!(e.read_only, u64::MAX);
        assert_eq!(e.total(), u64::MAX);
    }
}
