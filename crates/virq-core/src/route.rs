//! Passthrough routing: physical interrupts delivered to guests.
//!
//! Seed: `001_…` (Xen RISC-V `route_irq_to_guest` / `release_guest_irq`).
//!
//! A table of physical interrupt descriptors. Each routed descriptor names the guest, the
//! virtual id and the trigger. Its EOI policy follows the trigger:
//!
//! * **edge**: complete the physical interrupt at once ([`EoiAction::CompleteNow`]);
//! * **level**: the device holds its line until the guest services it, so the physical
//!   complete (which reopens the PLIC gateway) waits for the guest's virtual complete
//!   ([`EoiAction::DeferToGuest`]); otherwise the still-asserted line re-fires at once,
//!   over and over, before the guest has even run — the storm of the review. The virtual
//!   complete arrives through [`crate::ack`] and ends in [`RouteTable::guest_completed`].
//!
//! # Protocol
//!
//! Per descriptor, one 64-bit atomic word `state` holds both the route and the number of
//! deliveries in progress, so the delivery/release race is decided by the modification
//! order of a single location (no Dekker pair, no reliance on SeqCst):
//!
//! | bits | field |
//! |---|---|
//! | 0..=31 | virtual id |
//! | 32..=47 | guest |
//! | 48 | level trigger |
//! | 49 | route valid |
//! | 50..=63 | deliveries in progress (at most one per hart, so 14 bits are plenty) |
//!
//! * Delivery ([`RouteTable::deliver`]): `fetch_add(ONE_DELIVERY)` (Acquire). If the old
//!   value has no valid route, `fetch_sub` it back and return `None`; otherwise return a
//!   [`Delivery`] guard carrying the route it read. Dropping the guard does
//!   `fetch_sub(ONE_DELIVERY)` (Release).
//! * Release ([`RouteTable::release`]), under `ctl` (the per-descriptor control-plane
//!   lock that serialises route/release): check the owner, clear the route bits with
//!   `fetch_and` (the count is kept), then spin until the count reads 0 (Acquire), still
//!   under `ctl` so no new route is installed before the old deliveries drain.
//!
//! **Why this is enough.** A delivery whose `fetch_add` precedes the release's
//! `fetch_and` in the word's modification order is counted in the value the release then
//! waits on; one that follows it reads an invalid route and backs out. **The
//! acquire/release pair** the review asked for: each guard's `fetch_sub` (Release)
//! pairs with the releasing CPU's load (Acquire) that reads the count 0 — every access a
//! delivery made happens-before `release` returns. The route fields a delivery uses
//! are copied out of the same RMW that registered it, so a delivery never reads state a
//! concurrent release is tearing down.
//!
//! A double release, or a release by a guest that does not own the route, is an error.
//!
//! **Completion tokens.** Every `route` bumps the descriptor's generation; the route's
//! *ack token* (`generation << 16 | pirq + 1`, never 0) is what the caller registers as
//! the virtual id's ack notifier ([`crate::ack`]). A level delivery stores its token in
//! `awaiting`; [`RouteTable::guest_completed`] clears it only with a compare-exchange on
//! that exact token, and `release` takes it with a swap. So the deferred physical
//! complete happens exactly once, and a stale completion — from a guest whose route was
//! released and the pirq routed again — is refused instead of completing the new
//! route's interrupt before its guest serviced it. (Generations are 16 bits: a stale
//! token would have to survive 65,536 re-routes of the same pirq to alias.)

use crate::sync::{array, spin_hint, AtomicU32, AtomicU64, Mutex, Ordering};

/// A guest's identity in the routing table.
pub type GuestId = u16;

/// How the physical line signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Edge-triggered (or an MSI).
    Edge,
    /// Level-triggered: asserted until serviced.
    Level,
}

/// What to do with the physical interrupt after injecting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EoiAction {
    /// Complete the physical interrupt now.
    CompleteNow,
    /// Complete it when the guest completes the virtual one ([`RouteTable::guest_completed`]).
    DeferToGuest,
}

/// Why a routing call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// The physical id is beyond the table.
    NoSuchPirq {
        /// The refused id.
        pirq: u32,
    },
    /// Another guest owns the physical interrupt.
    OwnedByOther {
        /// The physical id.
        pirq: u32,
        /// Its owner.
        owner: GuestId,
    },
    /// The physical interrupt is already mapped to another virtual id of this guest.
    AlreadyMapped {
        /// The physical id.
        pirq: u32,
        /// The existing virtual id.
        virq: u32,
    },
    /// The physical interrupt is not routed (e.g. a double release).
    NotRouted {
        /// The physical id.
        pirq: u32,
    },
}

impl core::fmt::Display for RouteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::NoSuchPirq { pirq } => {
                write!(f, "physical interrupt {pirq} is beyond the routing table")
            }
            Self::OwnedByOther { pirq, owner } => {
                write!(f, "physical interrupt {pirq} is owned by guest {owner}")
            }
            Self::AlreadyMapped { pirq, virq } => {
                write!(
                    f,
                    "physical interrupt {pirq} is already mapped to virtual interrupt {virq}"
                )
            }
            Self::NotRouted { pirq } => write!(f, "physical interrupt {pirq} is not routed"),
        }
    }
}

/// Result of a successful [`RouteTable::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// A level delivery was still waiting for the guest: the caller must complete the
    /// physical interrupt now, or its gateway stays closed forever.
    pub complete_physical: bool,
}

const LEVEL: u64 = 1 << 48;
const VALID: u64 = 1 << 49;
const ROUTE_BITS: u64 = (1 << 50) - 1;
const COUNT_SHIFT: u32 = 50;
const ONE_DELIVERY: u64 = 1 << COUNT_SHIFT;

#[derive(Clone, Copy)]
struct Route(u64);

impl Route {
    fn pack(guest: GuestId, virq: u32, trigger: Trigger) -> Self {
        let level = if trigger == Trigger::Level { LEVEL } else { 0 };
        Self(VALID | level | (u64::from(guest) << 32) | u64::from(virq))
    }
    fn of(state: u64) -> Self {
        Self(state & ROUTE_BITS)
    }
    fn is_valid(self) -> bool {
        self.0 & VALID != 0
    }
    fn guest(self) -> GuestId {
        (self.0 >> 32) as GuestId
    }
    fn virq(self) -> u32 {
        self.0 as u32
    }
    fn trigger(self) -> Trigger {
        if self.0 & LEVEL != 0 {
            Trigger::Level
        } else {
            Trigger::Edge
        }
    }
}

struct Desc {
    /// Serialises `route` and `release` (never taken on the delivery path).
    ctl: Mutex<()>,
    /// Route and delivery count (see the module docs).
    state: AtomicU64,
    /// Bumped by every `route` (under `ctl`), published by the route's Release.
    generation: AtomicU32,
    /// The ack token of a level delivery whose physical complete waits for the guest; 0
    /// when none.
    awaiting: AtomicU32,
}

/// Largest table the 16-bit pirq field of an ack token allows.
pub const MAX_PIRQS: usize = 0xffff;

fn token(pirq: u32, generation: u32) -> u32 {
    (generation << 16) | (pirq + 1)
}

/// The physical id an ack token names.
pub fn pirq_of_token(token: u32) -> u32 {
    (token & 0xffff).wrapping_sub(1)
}

/// Routing table for physical ids `0..N`.
///
/// **Guarantees:** a delivery reads the route it was counted under, and
/// [`Self::release`] returns only when no delivery of the id is in progress on any
/// hart (everything it did happens-before the return); a level delivery's deferred
/// physical complete happens exactly once — by the guest's completion through
/// [`Self::guest_completed`] or handed to the releaser — and a completion carrying a
/// stale token (from before a release and re-route) is refused. `route` and `release`
/// serialise themselves per descriptor. **The caller must:** not call `release` while
/// holding a [`Delivery`] of the same id on the same thread (it would wait for itself);
/// drop each `Delivery` as soon as the injection is done; register
/// the token `route` returns as the virtual id's ack notifier and complete the physical
/// interrupt when `guest_completed` or `Released::complete_physical` says so.
///
/// # Example
///
/// ```
/// use virq_core::route::{EoiAction, RouteTable, Trigger};
///
/// let routes = RouteTable::<64>::new();
/// let token = routes.route(33, 1, 10, Trigger::Level).unwrap();
///
/// // Host interrupt handler: where does physical 33 go, and when to complete it?
/// let d = routes.deliver(33).expect("routed");
/// assert_eq!((d.guest(), d.virq()), (1, 10));
/// assert_eq!(d.eoi(), EoiAction::DeferToGuest, "level: wait for the guest");
/// drop(d); // injected
///
/// // The guest completed virtual 10 (through its ack notifier): complete physical 33.
/// assert_eq!(routes.guest_completed(token), Ok(true));
/// assert_eq!(routes.guest_completed(token), Ok(false), "exactly once");
///
/// assert!(!routes.release(33, 1).unwrap().complete_physical);
/// assert!(routes.release(33, 1).is_err(), "a double release is an error");
/// ```
pub struct RouteTable<const N: usize> {
    descs: [Desc; N],
}

/// A delivery in progress; holds the route alive. Drop it only when done injecting:
/// [`RouteTable::release`] waits for it.
pub struct Delivery<'a> {
    desc: &'a Desc,
    route: Route,
    token: u32,
}

impl Delivery<'_> {
    /// The owning guest.
    pub fn guest(&self) -> GuestId {
        self.route.guest()
    }
    /// The virtual id to inject.
    pub fn virq(&self) -> u32 {
        self.route.virq()
    }
    /// The trigger of the route.
    pub fn trigger(&self) -> Trigger {
        self.route.trigger()
    }
    /// The route's ack token (see the module docs).
    pub fn ack_token(&self) -> u32 {
        self.token
    }
    /// The EOI policy for this delivery.
    pub fn eoi(&self) -> EoiAction {
        match self.trigger() {
            Trigger::Edge => EoiAction::CompleteNow,
            Trigger::Level => EoiAction::DeferToGuest,
        }
    }
}

impl Drop for Delivery<'_> {
    fn drop(&mut self) {
        self.desc.state.fetch_sub(ONE_DELIVERY, Ordering::Release);
    }
}

impl<const N: usize> RouteTable<N> {
    /// Nothing routed.
    pub fn new() -> Self {
        const {
            assert!(
                N <= MAX_PIRQS,
                "a RouteTable holds at most MAX_PIRQS descriptors"
            )
        };
        Self {
            descs: array(|_| Desc {
                ctl: Mutex::new(()),
                state: AtomicU64::new(0),
                generation: AtomicU32::new(0),
                awaiting: AtomicU32::new(0),
            }),
        }
    }

    fn desc(&self, pirq: u32) -> Result<&Desc, RouteError> {
        self.descs
            .get(pirq as usize)
            .ok_or(RouteError::NoSuchPirq { pirq })
    }

    /// Route `pirq` to `virq` of `guest`, returning the route's ack token (register it
    /// as `virq`'s ack notifier). Routing the same mapping again returns the same token.
    pub fn route(
        &self,
        pirq: u32,
        guest: GuestId,
        virq: u32,
        trigger: Trigger,
    ) -> Result<u32, RouteError> {
        let desc = self.desc(pirq)?;
        let _ctl = desc.ctl.lock();
        let old = Route::of(desc.state.load(Ordering::Relaxed));
        if old.is_valid() {
            if old.guest() != guest {
                return Err(RouteError::OwnedByOther {
                    pirq,
                    owner: old.guest(),
                });
            }
            if old.virq() != virq || old.trigger() != trigger {
                return Err(RouteError::AlreadyMapped {
                    pirq,
                    virq: old.virq(),
                });
            }
            return Ok(token(pirq, desc.generation.load(Ordering::Relaxed)));
        }
        let generation = desc.generation.load(Ordering::Relaxed).wrapping_add(1) & 0xffff;
        desc.generation.store(generation, Ordering::Relaxed);
        // An RMW: deliveries may be bumping the count of the unrouted word right now. Its
        // Release publishes the generation to every delivery that sees the route.
        desc.state
            .fetch_or(Route::pack(guest, virq, trigger).0, Ordering::Release);
        Ok(token(pirq, generation))
    }

    /// Unroute `pirq` from `guest`. Returns only when no delivery of it is in progress
    /// on any hart.
    pub fn release(&self, pirq: u32, guest: GuestId) -> Result<Released, RouteError> {
        let desc = self.desc(pirq)?;
        let _ctl = desc.ctl.lock();
        let old = Route::of(desc.state.load(Ordering::Relaxed));
        if !old.is_valid() {
            return Err(RouteError::NotRouted { pirq });
        }
        if old.guest() != guest {
            return Err(RouteError::OwnedByOther {
                pirq,
                owner: old.guest(),
            });
        }
        desc.state.fetch_and(!ROUTE_BITS, Ordering::AcqRel);
        // Pairs with `Delivery::drop` (Release): every delivery's accesses happen-before
        // the load that reads a zero count.
        while desc.state.load(Ordering::Acquire) >> COUNT_SHIFT != 0 {
            spin_hint();
        }
        let complete_physical = desc.awaiting.swap(0, Ordering::AcqRel) != 0;
        Ok(Released { complete_physical })
    }

    /// Begin delivering `pirq`. `None` when it is not routed (spurious or just released).
    /// For a level route, the physical complete is now deferred to the guest.
    pub fn deliver(&self, pirq: u32) -> Option<Delivery<'_>> {
        let desc = self.desc(pirq).ok()?;
        let route = Route::of(desc.state.fetch_add(ONE_DELIVERY, Ordering::Acquire));
        if !route.is_valid() {
            desc.state.fetch_sub(ONE_DELIVERY, Ordering::Release);
            return None;
        }
        // Stable while we count: a re-route (which bumps it) waits for us in `release`.
        let token = token(pirq, desc.generation.load(Ordering::Relaxed));
        if route.trigger() == Trigger::Level {
            desc.awaiting.store(token, Ordering::Release);
        }
        Some(Delivery { desc, route, token })
    }

    /// The physical id an ack token names (same as the free [`pirq_of_token`]).
    pub fn pirq_of_token(token: u32) -> u32 {
        pirq_of_token(token)
    }

    /// The guest completed the virtual interrupt of the route `token` names (called from
    /// its ack notifier). Returns whether the caller must now complete the physical
    /// interrupt `pirq_of_token(token)`; false for a stale token or nothing deferred.
    pub fn guest_completed(&self, token: u32) -> Result<bool, RouteError> {
        let desc = self.desc(Self::pirq_of_token(token))?;
        Ok(desc
            .awaiting
            .compare_exchange(token, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok())
    }

    /// Is a level delivery of `pirq` waiting for the guest's completion (parked by
    /// [`Self::deliver`], not yet cleared by [`Self::guest_completed`] or
    /// [`Self::release`])? The *hold* of a controller without a gateway (an APLIC in
    /// MSI mode): its source stays disabled while this is true, so one physical
    /// interrupt is one virtual one. A snapshot: read it where the deliver and the
    /// completion are serialised (e.g. under the guest controller's lock).
    pub fn awaiting_guest(&self, pirq: u32) -> bool {
        self.desc(pirq)
            .is_ok_and(|d| d.awaiting.load(Ordering::Acquire) != 0)
    }

    /// The current route of `pirq`: `(guest, virq, trigger)`.
    pub fn lookup(&self, pirq: u32) -> Option<(GuestId, u32, Trigger)> {
        let route = Route::of(self.desc(pirq).ok()?.state.load(Ordering::Acquire));
        route
            .is_valid()
            .then(|| (route.guest(), route.virq(), route.trigger()))
    }
}

impl<const N: usize> Default for RouteTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_level_delivery_holds_until_the_guest_completes() {
        let t = RouteTable::<16>::new();
        let token = t.route(3, 1, 10, Trigger::Level).unwrap();
        assert!(!t.awaiting_guest(3));
        drop(t.deliver(3).unwrap());
        assert!(t.awaiting_guest(3));
        assert_eq!(t.guest_completed(token), Ok(true));
        assert!(!t.awaiting_guest(3));
        // An edge route never holds; an unknown pirq is not held.
        t.route(4, 1, 11, Trigger::Edge).unwrap();
        drop(t.deliver(4).unwrap());
        assert!(!t.awaiting_guest(4));
        assert!(!t.awaiting_guest(99));
    }

    #[test]
    fn route_conflicts_are_refused() {
        let t = RouteTable::<16>::new();
        assert_eq!(
            t.route(16, 1, 10, Trigger::Level),
            Err(RouteError::NoSuchPirq { pirq: 16 })
        );
        let token = t.route(10, 1, 10, Trigger::Level).unwrap();
        assert_eq!(
            t.route(10, 1, 10, Trigger::Level),
            Ok(token),
            "same mapping, same token"
        );
        assert_eq!(RouteTable::<16>::pirq_of_token(token), 10);
        assert_eq!(
            t.route(10, 2, 10, Trigger::Level),
            Err(RouteError::OwnedByOther { pirq: 10, owner: 1 })
        );
        assert_eq!(
            t.route(10, 1, 11, Trigger::Level),
            Err(RouteError::AlreadyMapped { pirq: 10, virq: 10 })
        );
        assert_eq!(t.lookup(10), Some((1, 10, Trigger::Level)));
        assert!(format!("{}", RouteError::OwnedByOther { pirq: 10, owner: 1 }).contains("guest 1"));
    }

    #[test]
    fn release_errors_and_double_release() {
        let t = RouteTable::<16>::new();
        assert_eq!(t.release(3, 1), Err(RouteError::NotRouted { pirq: 3 }));
        assert_eq!(t.release(99, 1), Err(RouteError::NoSuchPirq { pirq: 99 }));
        let _ = t.route(3, 1, 7, Trigger::Edge).unwrap();
        assert_eq!(
            t.release(3, 2),
            Err(RouteError::OwnedByOther { pirq: 3, owner: 1 })
        );
        assert_eq!(
            t.release(3, 1),
            Ok(Released {
                complete_physical: false
            })
        );
        assert_eq!(
            t.release(3, 1),
            Err(RouteError::NotRouted { pirq: 3 }),
            "double release"
        );
        assert!(t.deliver(3).is_none());
        assert!(t.deliver(99).is_none());
        assert_eq!(
            t.guest_completed(100),
            Err(RouteError::NoSuchPirq { pirq: 99 })
        );
        assert_eq!(
            t.guest_completed(0),
            Err(RouteError::NoSuchPirq { pirq: u32::MAX })
        );
    }

    #[test]
    fn edge_completes_now_level_defers_to_guest() {
        let t = RouteTable::<16>::new();
        let edge = t.route(1, 1, 1, Trigger::Edge).unwrap();
        let level = t.route(2, 1, 2, Trigger::Level).unwrap();
        let d = t.deliver(1).unwrap();
        assert_eq!(
            (d.guest(), d.virq(), d.eoi()),
            (1, 1, EoiAction::CompleteNow)
        );
        drop(d);
        assert_eq!(t.guest_completed(edge), Ok(false));
        let d = t.deliver(2).unwrap();
        assert_eq!((d.eoi(), d.ack_token()), (EoiAction::DeferToGuest, level));
        drop(d);
        assert_eq!(
            t.guest_completed(level),
            Ok(true),
            "physical complete after the virtual one"
        );
        assert_eq!(t.guest_completed(level), Ok(false), "exactly once");
    }

    /// Releasing a level route whose guest never completed must hand the physical
    /// complete to the releaser, or the source stays masked forever.
    #[test]
    fn release_of_pending_level_route_completes_physically() {
        let t = RouteTable::<4>::new();
        let token = t.route(2, 1, 2, Trigger::Level).unwrap();
        drop(t.deliver(2).unwrap());
        assert_eq!(
            t.release(2, 1),
            Ok(Released {
                complete_physical: true
            })
        );
        assert_eq!(t.guest_completed(token), Ok(false));
    }

    /// Review finding (ABA): a completion from the previous owner of a pirq, arriving
    /// after release and re-route, must not complete the new route's deferred interrupt.
    #[test]
    fn regression_stale_completion_after_reroute_is_refused() {
        let t = RouteTable::<4>::new();
        let old = t.route(3, 1, 5, Trigger::Level).unwrap();
        drop(t.deliver(3).unwrap());
        assert!(t.release(3, 1).unwrap().complete_physical);
        let new = t.route(3, 2, 5, Trigger::Level).unwrap();
        assert_ne!(old, new);
        drop(t.deliver(3).unwrap());
        assert_eq!(t.guest_completed(old), Ok(false), "stale token");
        assert_eq!(t.guest_completed(new), Ok(true));
    }

    #[test]
    fn release_waits_for_a_delivery_on_another_thread() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let t = RouteTable::<4>::new();
        let _ = t.route(1, 1, 1, Trigger::Edge).unwrap();
        let using = AtomicBool::new(false);
        std::thread::scope(|s| {
            let d = t.deliver(1).unwrap();
            using.store(true, Ordering::SeqCst);
            let releaser = s.spawn(|| {
                t.release(1, 1).unwrap();
                assert!(
                    !using.load(Ordering::SeqCst),
                    "release returned under a live delivery"
                );
            });
            std::thread::sleep(std::time::Duration::from_millis(20));
            using.store(false, Ordering::SeqCst);
            drop(d);
            releaser.join().unwrap();
        });
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::{AtomicBool, AtomicUsize};
    use loom::sync::Arc;
    use loom::thread;

    /// Two deliveries on other harts race a release: release never returns while a
    /// delivery still uses the route, and no delivery starts after it.
    #[test]
    fn loom_route_release_waits_for_deliveries() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let t = Arc::new(RouteTable::<2>::new());
            let _ = t.route(1, 7, 33, Trigger::Edge).unwrap();
            let using = Arc::new(AtomicUsize::new(0));
            let released = Arc::new(AtomicBool::new(false));
            let harts: Vec<_> = (0..2)
                .map(|_| {
                    let (t, using, released) = (t.clone(), using.clone(), released.clone());
                    thread::spawn(move || {
                        if let Some(d) = t.deliver(1) {
                            assert!(
                                !released.load(Ordering::SeqCst),
                                "delivery after release returned"
                            );
                            using.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(d.virq(), 33);
                            using.fetch_sub(1, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            t.release(1, 7).unwrap();
            assert_eq!(
                using.load(Ordering::SeqCst),
                0,
                "release returned under a live delivery"
            );
            released.store(true, Ordering::SeqCst);
            for h in harts {
                h.join().unwrap();
            }
        });
    }

    /// A level delivery's deferred physical complete happens exactly once, whether the
    /// guest's virtual complete or the release gets there first.
    #[test]
    fn loom_route_level_complete_exactly_once() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let t = Arc::new(RouteTable::<2>::new());
            let token = t.route(1, 7, 33, Trigger::Level).unwrap();
            drop(t.deliver(1).unwrap());
            let t2 = t.clone();
            let guest = thread::spawn(move || t2.guest_completed(token).unwrap());
            let by_release = t.release(1, 7).unwrap().complete_physical;
            let by_guest = guest.join().unwrap();
            assert!(
                by_release ^ by_guest,
                "physical complete must happen exactly once"
            );
        });
    }

    /// A stale completion (old route's token) races release, re-route and a new level
    /// delivery: it never takes the new delivery's physical complete.
    #[test]
    fn loom_route_stale_completion_races_reroute() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let t = Arc::new(RouteTable::<2>::new());
            let old = t.route(1, 7, 33, Trigger::Level).unwrap();
            drop(t.deliver(1).unwrap());
            let t2 = t.clone();
            let stale = thread::spawn(move || t2.guest_completed(old).unwrap());
            let by_release = t.release(1, 7).unwrap().complete_physical;
            let new = t.route(1, 8, 33, Trigger::Level).unwrap();
            drop(t.deliver(1).unwrap());
            let by_stale = stale.join().unwrap();
            assert!(by_release ^ by_stale, "old delivery completed exactly once");
            assert_eq!(
                t.guest_completed(new),
                Ok(true),
                "new delivery still deferred to its guest"
            );
        });
    }

    /// Data a delivery writes while it holds its guard (its use of the route: a loom
    /// `UnsafeCell`, so an access not ordered by happens-before is a detected race) is
    /// visible to the releasing CPU once `release` returns. This is the seed-001
    /// barrier pair: the guard's `fetch_sub` (Release) and the wait loop's load
    /// (Acquire); weaken either and loom reports the race.
    #[test]
    fn loom_route_delivery_writes_visible_after_release() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let t = Arc::new(RouteTable::<2>::new());
            let _ = t.route(1, 7, 33, Trigger::Edge).unwrap();
            let used = Arc::new(loom::cell::UnsafeCell::new(0u32));
            let (t2, u2) = (t.clone(), used.clone());
            let hart = thread::spawn(move || {
                if let Some(d) = t2.deliver(1) {
                    // SAFETY: the route is valid and counted: `release` has not
                    // returned, so the releasing CPU does not touch `used` yet.
                    u2.with_mut(|p| unsafe { *p = d.virq() });
                }
            });
            t.release(1, 7).unwrap();
            // SAFETY: `release` returned: no delivery is in progress, and every one
            // that ran happens-before this point (the property under test).
            let seen = used.with(|p| unsafe { *p });
            assert!(seen == 0 || seen == 33);
            hart.join().unwrap();
        });
    }

    /// A re-route racing a delivery on another hart: a delivery that sees the new route
    /// carries the new route's token (its generation is published by the route's
    /// Release and read after `deliver`'s Acquire), so the guest's completion of it is
    /// accepted — a stale token would be refused and the level line stay masked.
    #[test]
    fn loom_route_delivery_sees_the_new_generation() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let t = Arc::new(RouteTable::<2>::new());
            let _ = t.route(1, 7, 33, Trigger::Level).unwrap();
            t.release(1, 7).unwrap();
            let t2 = t.clone();
            let hart = thread::spawn(move || t2.deliver(1).map(|d| d.ack_token()));
            let new = t.route(1, 8, 34, Trigger::Level).unwrap();
            if let Some(token) = hart.join().unwrap() {
                assert_eq!(token, new, "a delivery of the new route carries its token");
                assert_eq!(t.guest_completed(token), Ok(true));
            }
        });
    }
}
