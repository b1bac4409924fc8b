//! The global state, built once by the boot hart before any other hart starts and
//! read-only afterwards (interior mutability only through atomics and locks).
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use spin::Once;
use virq_core::hgei::HgeiAllocator;
use virq_core::route::RouteTable;

use crate::acct::PirqCounts;
use crate::arch::entry::MAX_HARTS;
use crate::arch::mmio::HostPlic;
use crate::guest::Guest;
use crate::platform::Platform;
use crate::vcpu::Vcpu;

/// Physical interrupt ids the route table covers (PLIC sources 0..1023).
pub const MAX_PIRQ: usize = 1024;

/// One physical hart.
pub struct Hart {
    /// Index in `World::harts`.
    pub index: usize,
    /// Hart id.
    pub hartid: usize,
    /// Host PLIC S-mode context.
    pub plic_ctx: Option<u32>,
    /// Remote-fence requests (generation counter, bumped by requesters).
    pub fence_req: AtomicU64,
    /// Remote-fence requests served.
    pub fence_done: AtomicU64,
    /// Running hyp's scheduler.
    pub online: AtomicBool,
    /// Guest external interrupt lines probed on this hart.
    pub hgei_lines: AtomicU64,
}

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

static PLATFORM: Once<Platform> = Once::new();
static WORLD: Once<World> = Once::new();

/// Publish the platform (boot hart, once).
pub fn set_platform(p: Platform) -> &'static Platform {
    PLATFORM.call_once(|| p)
}

/// The host platform.
pub fn platform() -> &'static Platform {
    PLATFORM.get().expect("platform parsed before use")
}

/// Publish the world (boot hart, once, before secondaries start).
pub fn set_world(w: World) -> &'static World {
    WORLD.call_once(|| w)
}

/// The world.
pub fn world() -> &'static World {
    WORLD.get().expect("world built before use")
}

/// The hart hyp is running on (from `tp`).
pub fn this_hart() -> &'static Hart {
    let w = world();
    &w.harts[crate::arch::hart_local()]
}

/// The platform, if parsed yet.
pub fn platform_opt() -> Option<&'static Platform> {
    PLATFORM.get()
}
