//! # virq-arm
//!
//! Guest-visible Arm interrupt controllers, host-testable: `no_std`, no heap, no
//! `asm!`, no system-register access. The hypervisor reaches the hardware through
//! [`lr::IchRegs`] (the EL2 virtual CPU interface registers) and gives the models their
//! side effects through sinks ([`gicv3::Kick`], [`gicv3::EoiSink`], [`vits::ItsSink`]);
//! the ITS reads guest memory only through [`vits::GuestMem`]'s checked copies.
//!
//! | module | device / mechanism | specification |
//! |---|---|---|
//! | [`gicv3`] | vGICv3: distributor, redistributors, SGIs, list-register flush/sync | Arm IHI 0069H (GICv3/v4), chapters 2, 4, 11, 12 |
//! | [`lr`] | list register values, `ICH_*_EL2` behind a trait, a fake that plays the guest | IHI 0069H §12.5 |
//! | [`regs`] | register offsets and fields | IHI 0069H §12 |
//! | [`vits`] | guest-visible ITS: registers, command queue, translation, host actions | IHI 0069H §5.3, §12.19 |
//!
//! Like the RISC-V models, every MMIO window implements
//! [`virq_core::mmio::MmioDevice`] ([`gicv3::Distributor`], [`gicv3::Redistributors`]):
//! guest mistakes never panic, read as zero, are ignored when written, and are counted.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod gicv3;
pub mod lr;
pub mod regs;
pub mod vits;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod vits_tests;

/// The README's usage snippet, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;
