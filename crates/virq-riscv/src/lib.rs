//! # virq-riscv
//!
//! Guest-visible RISC-V interrupt controllers and the H-extension plumbing behind them,
//! host-testable: `no_std`, no heap, no `asm!`, no raw MMIO. Hardware is reached only
//! through small traits that your hypervisor implements ([`hext::Csrs`],
//! [`msi::GuestFileHw`]); side effects leave through injected sinks ([`VcpuIrqSink`],
//! [`EoiSink`], [`msi::MsiSink`]). The per-vCPU state they feed is `virq-core`'s.
//!
//! ## A first example
//!
//! A guest PLIC whose context 0 drives vCPU 0: a device raises its line, the vPLIC
//! raises the vCPU's VS external interrupt in its `virq_core` pending set (and asks for
//! a kick), the flush before guest entry writes `hvip`, and the guest claims and
//! completes through trapped MMIO accesses — here on fake CSRs.
//!
//! ```
//! use virq_core::pending::VcpuPending;
//! use virq_riscv::hext::{fake::FakeCsrs, Csr, Csrs, HvipSync, PendingSink, HVIP_VSEIP};
//! use virq_riscv::plic::VPlic;
//! use virq_riscv::{MmioDevice, NoEoi};
//!
//! let pending = [VcpuPending::new()];
//! let kicked = std::cell::Cell::new(0);
//! // The kick: `VcpuBlock::kick` and an IPI to the vCPU's home hart, in a hypervisor.
//! let sink = PendingSink::new(&pending, |_vcpu| kicked.set(kicked.get() + 1));
//! let mut plic: VPlic<_, _, 1> = VPlic::new(32, &[Some(0)], sink, NoEoi).unwrap();
//! let (csrs, mut hvip) = (FakeCsrs::new(0), HvipSync::new());
//!
//! // The guest's driver: priority 1 for source 5, enabled in context 0.
//! plic.write(4 * 5, 4, 1);
//! plic.write(0x2000, 4, 1 << 5);
//!
//! plic.set_input(5, true); // a device model raises its line
//! assert_eq!(kicked.get(), 1);
//! hvip.flush(&pending[0], &csrs); // right before guest entry
//! assert_ne!(csrs.read(Csr::Hvip) & HVIP_VSEIP, 0);
//!
//! assert_eq!(plic.read(0x20_0004, 4), 5); // claim (a trapped load)
//! plic.set_input(5, false); // the driver serviced the device
//! plic.write(0x20_0004, 4, 5); // complete (a trapped store)
//! hvip.flush(&pending[0], &csrs);
//! assert_eq!(csrs.read(Csr::Hvip) & HVIP_VSEIP, 0);
//! ```
//!
//! Complete programs are in `examples/` (`cargo run -p virq-riscv --example <name>`):
//! `vplic` (a vPLIC with a passed-through level interrupt and the VSSIP handoff) and
//! `aia` (a vAPLIC in MSI mode feeding a vCPU's interrupt file that moves between a
//! software file and hardware guest files, with its SGEI doorbell). The integration
//! guide is `docs/integrate.md` in the repository.
//!
//! ## Modules
//!
//! | module | device / mechanism | specification |
//! |---|---|---|
//! | [`plic`] | vPLIC: priorities, gateways, claim/complete, contexts to vCPUs | RISC-V PLIC spec v1.0.0 |
//! | [`aplic`] | vAPLIC: one guest domain, direct (IDC) or MSI delivery | RISC-V AIA v1.0, chapter 4 |
//! | [`imsic`] | software IMSIC interrupt file: `eidelivery`, `eithreshold`, `eip`/`eie`, `stopei` | RISC-V AIA v1.0, chapter 3 |
//! | [`msi`] | MSI sinks; a vCPU's interrupt file on a hardware guest file or in software | AIA v1.0 chapters 3 and 6 |
//! | [`hext`] | `hvip` flush/sync, `hstatus.VGEIN`, SGEI doorbells, fake CSRs | privileged spec (H extension), AIA chapter 6 |
//! | [`mmio`] | the MMIO interface and error counters every device shares | — |
//! | [`insn`] | decoding the guest load/store behind an MMIO trap (`htinst` or raw) | unprivileged spec (RV64I, RV64C), privileged spec (H extension, transformed instructions) |
//! | [`sbi`] | SBI calls from a guest: typed, validated arguments, hart masks to vCPU sets | RISC-V SBI v2.0 |
//!
//! Every device implements [`MmioDevice`]: `read(offset, size)` / `write(offset, size,
//! value)`. Guest mistakes never panic; they read as zero, are ignored when written,
//! and are counted in [`ErrorCounters`] (see [`mmio`]).
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod aplic;
pub mod hext;
pub mod imsic;
pub mod insn;
pub mod mmio;
pub mod msi;
pub mod plic;
pub mod sbi;

mod bits;

#[cfg(test)]
mod tests;

pub use mmio::{ConfigError, EoiSink, ErrorCounters, MmioDevice, NoEoi, VcpuIrqSink};

/// The README's usage snippet, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;
