//! # virq-core
//!
//! Architecture-neutral, `no_std` mechanisms for delivering interrupts to guests. Each
//! module is one mechanism and opens with its protocol: who writes which field, every
//! transition, and why each ordering is enough. Atomics come from [`sync`], which is
//! switched to [loom](https://docs.rs/loom) under `cfg(loom)`; the loom models live
//! beside the protocol they check.
//!
//! | module | mechanism | seed |
//! |---|---|---|
//! | [`pending`] | per-vCPU pending interrupts, many producers, vCPU as consumer | `000_…` Xen RISC-V `irqs_pending` |
//! | [`block`] | vCPU blocking (WFI) and kicks, across migration | `000_…` missed kick; issue 12's lost wake-ups |
//! | [`hgei`] | guest external interrupt lines per physical hart | `003_…` KVM RISC-V AIA HGEI |
//! | [`doorbell`] | doorbells that wake vCPUs that are not running | `002_…` Xen GICv4 doorbells |
//! | [`ack`] | in-flight tracking and ack notifiers | `004_…` KVM GICv5 deactivation |
//! | [`route`] | physical-to-guest interrupt routing, EOI policy | `001_…` Xen RISC-V passthrough |
//! | [`mmio`] | the MMIO contract and error counters of every emulated controller | — |
//!
//! No delivery path allocates; every structure has a fixed capacity chosen by a const
//! generic.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod ack;
pub mod block;
pub mod doorbell;
pub mod hgei;
pub mod mmio;
pub mod pending;
pub mod route;
pub mod sync;

mod bits;
