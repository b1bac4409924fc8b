//! # virq-riscv
//!
//! Guest-visible RISC-V interrupt controllers and the H-extension plumbing behind them,
//! host-testable: `no_std`, no heap, no `asm!`, no raw MMIO. Hardware is reached only
//! through small traits that hyp implements ([`hext::Csrs`], [`msi::GuestFileHw`]);
//! side effects leave through injected sinks ([`VcpuIrqSink`], [`EoiSink`],
//! [`msi::MsiSink`]).
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
