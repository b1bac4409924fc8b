//! hyp's device I/O as pure data, tested on the host.
//!
//! - [`pci`]: PCI configuration space as PCI Local Bus 3.0 / PCI Express Base 6.0 define
//!   it — addressing a function in an ECAM window, the type-0 header, the standard
//!   BAR sizing probe (write all ones, read back the mask), the capability list walk
//!   (with MSI and MSI-X decoded), and the `iommu-map` of a host bridge's DT node.
//!   It reaches a function's registers through [`pci::ConfigAccess`], so the logic runs
//!   against a model here and against ECAM in hyp (`arch::pcie`).
//! - [`iommu`]: the RISC-V IOMMU Architecture Specification v1.0 (ratified 2023): its
//!   register map, `capabilities`, `ddtp` and queue-base encodings, the commands hyp
//!   sends (IOFENCE.C, IODIR.INVAL_DDT, IOTINVAL.GVMA), device contexts (extended
//!   format) and the device-directory index, and fault records with their causes.
//!
//! - [`gic_its`]: the Arm GICv3/GICv4.0 ITS and LPI formats (IHI 0069): the ITS
//!   commands hyp sends, `GITS_BASER`/`CBASER`/`CREADR`, `GICR_PROPBASER`/`PENDBASER`,
//!   GICv4.0's `GICR_VPROPBASER`/`VPENDBASER`, the LPI configuration byte, and the
//!   command queue with its bounded completion wait (checked against a fake ITS).
//! - [`smmuv3`]: the Arm SMMUv3 (IHI 0070) as hyp drives it on aarch64: ID registers,
//!   stage-2-only stream-table entries derived from `VTCR_EL2`, the commands, queue
//!   indices with their wrap bit, event records, and the driver ([`smmuv3::Smmu`]:
//!   bring-up, attach/detach, bounded command completion, event draining) over a
//!   register trait, checked against a fake SMMU that behaves like QEMU's.
//!
//! Nothing here touches memory or devices: hyp's driver (`hv/src/iommu/`) does, through
//! `arch`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod gic_its;
pub mod iommu;
pub mod pci;
pub mod smmuv3;

/// Read with `read` until `done(value)`, for at most `bound` ticks of `now` (a wrapping
/// monotonic clock): `Ok(value)`, or `Err(last value read)` when the bound passed — the
/// caller names what did not happen (`GICR_VPENDBASER.Dirty` still 1, an SMMU's
/// `CR0ACK` not yet equal to `CR0`). At least one read, even with a bound of 0. The
/// one bounded wait of every driver here.
pub fn poll_bounded<T: Copy>(
    mut read: impl FnMut() -> T,
    done: impl Fn(T) -> bool,
    now: impl Fn() -> u64,
    bound: u64,
) -> Result<T, T> {
    let t0 = now();
    loop {
        let v = read();
        if done(v) {
            return Ok(v);
        }
        if now().wrapping_sub(t0) > bound {
            return Err(v);
        }
    }
}
