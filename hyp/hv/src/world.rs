//! The global state, built once by the boot hart before any other hart starts and
//! read-only afterwards (interior mutability only through atomics and locks).
//!
//! The world is the top of the data: the layers below it cannot name it, so
//! [`set_world`] also publishes the tables they use — the harts and their line
//! allocator (`hart`), the vCPUs (`vcpu`), the route table (`topology`).
use alloc::vec::Vec;
use core::sync::atomic::AtomicUsize;
use spin::Once;
use virq_core::hgei::HgeiAllocator;
use virq_core::route::RouteTable;

use crate::arch::mmio::HostPlic;
use crate::arch::MAX_HARTS;
use crate::counts::PirqCounts;
use crate::guest::Guest;
use crate::hart::Hart;
pub use crate::ids::MAX_PIRQ;
use crate::vcpu::Vcpu;

/// Everything.
pub struct World {
    /// Harts.
    pub harts: Vec<Hart>,
    /// Guests.
    pub guests: Vec<Guest>,
    /// All vCPUs of all guests.
    pub vcpus: Vec<Vcpu>,
    /// Passthrough routing.
    pub routes: RouteTable<MAX_PIRQ>,
    /// Claims/completions per physical source.
    pub pirqs: Vec<PirqCounts>,
    /// HGEI lines per hart.
    pub hgei: HgeiAllocator<MAX_HARTS>,
    /// Host PLIC.
    pub host_plic: Option<HostPlic>,
    /// Harts have Sstc.
    pub sstc: bool,
    /// Guests still alive.
    pub alive_guests: AtomicUsize,
}

static WORLD: Once<World> = Once::new();

/// Publish the world (boot hart, once, before secondaries start), and its tables to
/// the layers below.
pub fn set_world(w: World) -> &'static World {
    let w = WORLD.call_once(|| w);
    crate::hart::publish(&w.harts, &w.hgei);
    crate::vcpu::publish(&w.vcpus);
    crate::topology::publish_routes(&w.routes);
    w
}

/// The world.
pub fn world() -> &'static World {
    WORLD.get().expect("world built before use")
}
