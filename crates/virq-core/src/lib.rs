//! # virq-core
//!
//! Architecture-neutral, `no_std` mechanisms for delivering interrupts to guests:
//! the pieces of a hypervisor's interrupt path that are easy to get subtly wrong, each
//! with its protocol written down and model-checked. No heap and no `asm!`; hardware is
//! reached only through small traits you implement.
//!
//! ## A first example
//!
//! A host program playing a hypervisor: a vCPU thread (its home hart) consumes the
//! interrupts that producer threads raise in its [`pending::PendingSet`], and sleeps
//! when the guest waits (WFI) only when [`block::VcpuBlock`] says no kick can be missed.
//!
//! ```
//! use std::sync::Arc;
//! use std::thread;
//! use virq_core::block::{BlockOutcome, VcpuBlock};
//! use virq_core::pending::VcpuPending;
//!
//! struct Vcpu {
//!     pending: VcpuPending, // written by any producer, lock-free
//!     block: VcpuBlock,     // WFI vs. kick, decided by one atomic word
//! }
//! let vcpu = Arc::new(Vcpu { pending: VcpuPending::new(), block: VcpuBlock::new(0) });
//!
//! // The vCPU's home hart: before each guest entry take the kick, *then* the changes;
//! // on a guest WFI block, and sleep only on `Blocked`.
//! let hart = {
//!     let vcpu = vcpu.clone();
//!     thread::spawn(move || {
//!         let mut hvip = [0usize; 1]; // the consumer's shadow of the hardware register
//!         while hvip[0] != 0b1110 {  // until the guest has seen ids 1, 2 and 3
//!             vcpu.block.take_kick();
//!             vcpu.pending.take_changes().apply(&mut hvip);
//!             if hvip[0] != 0b1110 && vcpu.block.block() == BlockOutcome::Blocked {
//!                 while !vcpu.block.runnable() {
//!                     thread::park(); // `wfi`; an unpark is the IPI
//!                 }
//!                 vcpu.block.unblock();
//!             }
//!         }
//!     })
//! };
//! // Producers (device models, timers, IPIs from other vCPUs) on other threads: raise,
//! // and when `raise` says so, kick and notify the hart `kick` names.
//! let producers: Vec<_> = (1..=3)
//!     .map(|irq| {
//!         let (vcpu, hart) = (vcpu.clone(), hart.thread().clone());
//!         thread::spawn(move || {
//!             if vcpu.pending.raise(irq).unwrap() {
//!                 let _home = vcpu.block.kick();
//!                 hart.unpark();
//!             }
//!         })
//!     })
//!     .collect();
//! for p in producers {
//!     p.join().unwrap();
//! }
//! hart.join().unwrap(); // never hangs: no raise is slept on
//! ```
//!
//! Complete programs, one per mechanism, are in `examples/`
//! (`cargo run -p virq-core --example <name>`): `pending_kick` (pending sets, block and
//! kick, migration between harts), `doorbell`, `passthrough` (routing table and ack
//! notifiers), `hgei`. The integration guide for hypervisor authors is
//! `docs/integrate.md` in the repository: what you provide, where each call goes around
//! guest entry and on vCPU load, put and migration, and the mistakes it rules out.
//!
//! ## The mechanisms
//!
//! Each module is one mechanism and opens with its protocol: who writes which field,
//! every transition, and why each ordering is enough. Atomics come from [`sync`], which is
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
//! | [`msimove`] | moving an interrupt file while a device sends it MSIs (IOMMU entry, MRIF) | `000_…` no lost kick, for the device |
//! | [`mmio`] | the MMIO contract and error counters of every emulated controller | — |
//!
//! No delivery path allocates; every structure has a fixed capacity chosen by a const
//! generic.
//!
//! ## Contracts
//!
//! The shared structures are `Send + Sync` and every call is memory-safe from any
//! thread; what the
//! documentation of a call states as the *caller's* duty (for example "consumer only"
//! or "home hart only") is what the protocol's guarantee — no lost interrupt, no lost
//! wake-up, exactly-once completion — rests on. Errors a caller can cause (an id out of
//! range, a double free, a release by the wrong guest) are typed `Err` values, never a
//! panic or corruption.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod ack;
pub mod block;
pub mod doorbell;
pub mod hgei;
pub mod mmio;
pub mod msimove;
pub mod pending;
pub mod remote;
pub mod route;
pub mod sync;

mod bits;

/// The README's usage snippet, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctest;
