//! Doorbells: wake a vCPU that is not running when an interrupt arrives for it.
//!
//! Seed: `002_…` (Xen ARM GICv4.1 doorbell LPIs). On RISC-V the supervisor guest external
//! interrupt (SGEI) of the vCPU's hardware guest interrupt file plays this role: the
//! file's `hgeip` line rises while the vCPU is not resident.
//!
//! # Protocol
//!
//! Per vCPU, two atomics and one hardware enable (the [`DoorbellHw`]):
//!
//! * `state`: `RESIDENT` (running; doorbell masked), `DESCHEDULED` (runnable but not
//!   running; masked — it will run anyway), `BLOCKING` (descheduled and waiting; the only
//!   state with the doorbell unmasked), `FIRED` (the doorbell rang; masked, vCPU kicked).
//! * `pending_last`: "an interrupt arrived while the vCPU was not resident". Set only by
//!   [`Doorbell::fire`], cleared only by [`Doorbell::load`]. It is an atomic — the
//!   review's data race was exactly this flag written plainly from the interrupt handler.
//!
//! Transitions (all SeqCst read-modify-writes). [`Doorbell::put`] and
//! [`Doorbell::fire`] each write one word and then read the other's; what decides
//! their race is the modification order of `state`, which both change with an RMW: the
//! later RMW reads the earlier one's value and synchronises with it. So a `fire` whose
//! state RMW comes first has its `pending_last` write visible to `put`'s read after
//! `put`'s `BLOCKING` swap, and a `put` whose swap comes first is seen by `fire` as
//! `BLOCKING`. (The `pending_last` read in `put` is an RMW for uniformity; after the
//! acquiring swap any load would do — a plain SeqCst load there is not a bug and loom
//! rightly accepts it. `cargo xtask loom-mutants` lists the changes that *are* bugs and
//! checks that a model fails for each.)
//!
//! * `put(blocking)`: **unmask first** — and if the hardware reports the source
//!   already pending ([`DoorbellHw::unmask`] returns true: PendingLast), mask again,
//!   record `pending_last`, `state := DESCHEDULED` and report
//!   [`PutOutcome::StayRunnable`] without blocking — then `state := BLOCKING`, then read
//!   `pending_last`. If it is set, take the state back (swap to `DESCHEDULED`; if the
//!   old state was plain `BLOCKING`, no fire won, so mask ourselves) and report
//!   [`PutOutcome::StayRunnable`]. Unmasking before publishing
//!   `BLOCKING` means a `fire` that masks (it must first see `BLOCKING`) always masks
//!   *after* our unmask: a level-triggered doorbell can never be left enabled behind a
//!   fired vCPU (which would storm the hart until the vCPU runs).
//! * `fire` (doorbell interrupt): `pending_last := true`, then `fetch_or(FIRED)` on the
//!   state. Only the fire that finds plain `BLOCKING` masks the doorbell and kicks. A fire in any other state just
//!   leaves `pending_last` for `put`/`load` to find.
//! * `load`: `state := RESIDENT`, mask, then `swap(pending_last, false)`; the caller
//!   checks its interrupt file when it returns true.
//!
//! **Never lost.** If `fire` finds the state not `BLOCKING`, its `pending_last` write
//! precedes its state RMW, which precedes (in the SeqCst order) `put`'s `BLOCKING` swap
//! and so `put`'s read of `pending_last`: `put` returns `StayRunnable`. Otherwise `fire` kicks. A fire
//! racing `load` either lands before the swap (load returns true) or after it, leaving
//! `pending_last` set for the next `put`, which then refuses to block.
//!
//! # Doorbell ids
//!
//! [`DoorbellIds`] hands out ids in blocks of [`BLOCK`]. A failed multi-block allocation
//! unwinds exactly the blocks it took, counting down with a checked subtraction — the
//! seed's `while (--i >= 0)` on an unsigned index never ends.

use crate::sync::{AtomicBool, AtomicU8, Mutex, Ordering};

/// The hardware enable of one vCPU's doorbell.
///
/// **Requirement:** after `unmask`, the doorbell must not lose a condition that became
/// pending while it was masked. Hardware that re-signals it by itself (a level
/// doorbell: the RISC-V SGEI is `hgeip & hgeie`) meets this only if its status bit
/// follows the source; hardware that does not (GICv4.1 reports it through
/// `VPENDBASER.PendingLast` at deschedule; QEMU 10.0.2's `hip.SGEIP` can keep a stale 0
/// after an `hgeie` write that races an MSI, see docs/design.md "Doorbells") must
/// report it: `unmask` re-reads the *source* after enabling and returns whether it is
/// pending. Returning `true` is always safe (the vCPU merely stays runnable);
/// returning `false` while the source is pending and the hardware will not fire is
/// the lost wake-up.
pub trait DoorbellHw {
    /// Stop the doorbell from firing.
    fn mask(&self);
    /// Let the doorbell fire; then read the source back and return whether it is
    /// pending now (the doorbell's *PendingLast*).
    fn unmask(&self) -> bool;
}

const RESIDENT: u8 = 0;
const DESCHEDULED: u8 = 1;
const BLOCKING: u8 = 2;
/// Or-ed into the state by `fire`; meaningful only on top of `BLOCKING`.
const FIRED: u8 = 4;
const WHERE: u8 = 3;

/// A vCPU's doorbell state (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorbellState {
    /// Running; doorbell masked.
    Resident,
    /// Runnable, not running; doorbell masked.
    Descheduled,
    /// Waiting; doorbell enabled.
    Blocking,
    /// The doorbell rang; masked; the vCPU was kicked.
    Fired,
}

/// What the scheduler does after [`Doorbell::put`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum PutOutcome {
    /// The vCPU may sleep until kicked.
    Blocked,
    /// Something is pending: keep the vCPU runnable.
    StayRunnable,
}

/// One vCPU's doorbell.
///
/// **Guarantees:** an interrupt that reaches the vCPU's hardware interrupt file while
/// the vCPU is away is never lost: [`Self::put`] refuses to block, [`Self::fire`]
/// kicks, or [`Self::load`] reports it; the doorbell is unmasked only while the vCPU
/// is blocking, so a level doorbell cannot storm. **The caller must:** call `load` and
/// `put` on the vCPU's home hart around each run (load before entry, put after the
/// last exit, `blocking` = the guest waits); call `fire` from the doorbell interrupt
/// handler and kick the vCPU when it returns `true`; implement [`DoorbellHw::unmask`]
/// with the read-back it documents.
///
/// # Example
///
/// ```
/// use std::cell::Cell;
/// use virq_core::doorbell::{Doorbell, DoorbellHw, PutOutcome};
///
/// #[derive(Default)]
/// struct Hw { enabled: Cell<bool>, source: Cell<bool> }
/// impl DoorbellHw for Hw {
///     fn mask(&self) { self.enabled.set(false) }
///     fn unmask(&self) -> bool { self.enabled.set(true); self.source.get() }
/// }
///
/// let (db, hw) = (Doorbell::new(), Hw::default());
/// // The guest waits: put it blocking; the doorbell is armed.
/// assert_eq!(db.put(&hw, true), PutOutcome::Blocked);
/// assert!(hw.enabled.get());
/// // An interrupt reaches the file; the doorbell handler fires and must kick.
/// hw.source.set(true);
/// assert!(db.fire(&hw));
/// assert!(!hw.enabled.get(), "masked again by fire");
/// // Loaded again: it reports the doorbell rang while away.
/// assert!(db.load(&hw));
/// // Had the source been pending already at put, the vCPU would stay runnable.
/// assert_eq!(db.put(&hw, true), PutOutcome::StayRunnable);
/// ```
pub struct Doorbell {
    state: AtomicU8,
    pending_last: AtomicBool,
}

impl Doorbell {
    /// A resident vCPU with nothing pending.
    pub fn new() -> Self {
        Self {
            state: AtomicU8::new(RESIDENT),
            pending_last: AtomicBool::new(false),
        }
    }

    /// The vCPU becomes resident. Returns whether the doorbell fired while it was away
    /// (the caller then looks at its interrupt file).
    pub fn load(&self, hw: &impl DoorbellHw) -> bool {
        self.state.swap(RESIDENT, Ordering::SeqCst);
        hw.mask();
        self.pending_last.swap(false, Ordering::SeqCst)
    }

    /// The vCPU leaves the hart; `blocking` when it waits for an interrupt (WFI).
    pub fn put(&self, hw: &impl DoorbellHw, blocking: bool) -> PutOutcome {
        if !blocking {
            self.state.swap(DESCHEDULED, Ordering::SeqCst);
            return PutOutcome::StayRunnable;
        }
        if hw.unmask() {
            // The source is already pending (PendingLast): the hardware may never
            // fire for it, so do not block on it. Nothing was published, so no fire
            // can have masked or kicked: take the doorbell back ourselves.
            self.pending_last.swap(true, Ordering::SeqCst);
            self.state.swap(DESCHEDULED, Ordering::SeqCst);
            hw.mask();
            return PutOutcome::StayRunnable;
        }
        self.state.swap(BLOCKING, Ordering::SeqCst);
        if !self.pending_last.fetch_or(false, Ordering::SeqCst) {
            return PutOutcome::Blocked;
        }
        // Something arrived: take the state back. If `fire` won the race, it masks.
        if self.state.swap(DESCHEDULED, Ordering::SeqCst) == BLOCKING {
            hw.mask();
        }
        PutOutcome::StayRunnable
    }

    /// The doorbell interrupt handler. Returns true when the caller must kick the vCPU.
    #[must_use = "a fired doorbell must kick its vCPU"]
    pub fn fire(&self, hw: &impl DoorbellHw) -> bool {
        self.pending_last.swap(true, Ordering::SeqCst);
        if self.state.fetch_or(FIRED, Ordering::SeqCst) == BLOCKING {
            hw.mask();
            return true;
        }
        false
    }

    /// Whether an interrupt arrived since the last [`Self::load`].
    pub fn pending_last(&self) -> bool {
        self.pending_last.load(Ordering::SeqCst)
    }

    /// The current state.
    pub fn state(&self) -> DoorbellState {
        match self.state.load(Ordering::SeqCst) {
            s if s == BLOCKING | FIRED => DoorbellState::Fired,
            s if s & WHERE == RESIDENT => DoorbellState::Resident,
            s if s & WHERE == DESCHEDULED => DoorbellState::Descheduled,
            _ => DoorbellState::Blocking,
        }
    }
}

impl Default for Doorbell {
    fn default() -> Self {
        Self::new()
    }
}

/// Ids per doorbell block.
pub const BLOCK: u32 = 32;

/// Why a doorbell id allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoorbellIdError<E> {
    /// Not enough free blocks for the request.
    Exhausted {
        /// Blocks requested.
        wanted: usize,
    },
    /// `out` is shorter than the blocks needed.
    OutputTooSmall {
        /// Blocks needed.
        needed: usize,
    },
    /// Setting up block `block` failed; every earlier block was torn down and freed.
    Setup {
        /// Index of the failed block within the request.
        block: usize,
        /// The hook's error.
        error: E,
    },
    /// `free` was given an id that does not start an allocated block.
    NotAllocated {
        /// The refused id.
        first: u32,
    },
}

/// Per-block hardware programming during [`DoorbellIds::alloc`].
pub trait BlockHooks {
    /// The hook's error.
    type Error;
    /// Program block `first..first + BLOCK`.
    fn setup(&mut self, first: u32) -> Result<(), Self::Error>;
    /// Undo [`Self::setup`].
    fn teardown(&mut self, first: u32);
}

/// Doorbell id blocks `base + k * BLOCK` for `k < BLOCKS`.
///
/// **Guarantees:** a failed multi-block [`Self::alloc`] tears down exactly the blocks
/// it set up, in reverse, frees exactly the blocks it took, and terminates (seed 002's
/// unsigned `--i >= 0` loop); [`Self::free`] refuses ids it did not hand out, before
/// freeing any.
///
/// # Example
///
/// ```
/// use virq_core::doorbell::{BlockHooks, DoorbellIdError, DoorbellIds};
///
/// /// Programs the interrupt translation for a block; fails at id 64.
/// struct Its { torn_down: Vec<u32> }
/// impl BlockHooks for Its {
///     type Error = &'static str;
///     fn setup(&mut self, first: u32) -> Result<(), &'static str> {
///         if first == 64 { Err("ITS full") } else { Ok(()) }
///     }
///     fn teardown(&mut self, first: u32) { self.torn_down.push(first) }
/// }
///
/// let ids = DoorbellIds::<4>::new(0).unwrap();
/// let mut firsts = [0; 4];
/// let mut its = Its { torn_down: vec![] };
/// // 96 doorbells need 3 blocks of 32; the third one's setup fails.
/// assert_eq!(
///     ids.alloc(96, &mut firsts, &mut its),
///     Err(DoorbellIdError::Setup { block: 2, error: "ITS full" })
/// );
/// assert_eq!(its.torn_down, vec![32, 0], "only what was set up, in reverse");
/// assert_eq!(ids.alloc(64, &mut firsts, &mut its), Ok(2), "all blocks were freed");
/// ids.free::<()>(&firsts[..2]).unwrap();
/// ```
pub struct DoorbellIds<const BLOCKS: usize> {
    base: u32,
    used: Mutex<[bool; BLOCKS]>,
}

impl<const BLOCKS: usize> DoorbellIds<BLOCKS> {
    /// An allocator of `BLOCKS` blocks starting at id `base`; `None` when the range
    /// `base .. base + BLOCKS * BLOCK` does not fit in `u32`.
    pub fn new(base: u32) -> Option<Self> {
        u32::try_from(BLOCKS)
            .ok()?
            .checked_mul(BLOCK)?
            .checked_add(base)?;
        Some(Self {
            base,
            used: Mutex::new([false; BLOCKS]),
        })
    }

    fn first(&self, block: usize) -> u32 {
        self.base + block as u32 * BLOCK
    }

    /// Allocate enough blocks for `count` doorbells, writing each block's first id to
    /// `out` and calling `hooks.setup` on each. On any failure, exactly the blocks taken
    /// so far are torn down (in reverse) and freed.
    pub fn alloc<H: BlockHooks>(
        &self,
        count: usize,
        out: &mut [u32],
        hooks: &mut H,
    ) -> Result<usize, DoorbellIdError<H::Error>> {
        let needed = count.div_ceil(BLOCK as usize);
        if out.len() < needed {
            return Err(DoorbellIdError::OutputTooSmall { needed });
        }
        {
            let mut used = self.used.lock();
            if used.iter().filter(|u| !**u).count() < needed {
                return Err(DoorbellIdError::Exhausted { wanted: needed });
            }
            let mut free = used.iter_mut().enumerate().filter(|(_, u)| !**u);
            for slot in out.iter_mut().take(needed) {
                let (block, u) = free
                    .next()
                    .expect("free blocks were counted under the lock");
                *u = true;
                *slot = self.first(block);
            }
        }
        let mut taken = needed;
        for (i, &first) in out[..needed].iter().enumerate() {
            if let Err(error) = hooks.setup(first) {
                // Unwind the blocks set up so far, then free every block taken. The index
                // counts down with checked_sub: it cannot wrap and loop forever.
                let mut done = i;
                while let Some(j) = done.checked_sub(1) {
                    hooks.teardown(out[j]);
                    done = j;
                }
                let mut used = self.used.lock();
                while let Some(j) = taken.checked_sub(1) {
                    used[((out[j] - self.base) / BLOCK) as usize] = false;
                    taken = j;
                }
                return Err(DoorbellIdError::Setup { block: i, error });
            }
        }
        Ok(needed)
    }

    /// Free blocks returned by [`Self::alloc`] (teardown is the caller's). Checks all
    /// ids before freeing any.
    pub fn free<E>(&self, firsts: &[u32]) -> Result<(), DoorbellIdError<E>> {
        let mut used = self.used.lock();
        let index = |first: u32| -> Option<usize> {
            let off = first.checked_sub(self.base)?;
            let block = (off / BLOCK) as usize;
            (off % BLOCK == 0 && block < BLOCKS).then_some(block)
        };
        for &first in firsts {
            match index(first) {
                Some(b) if used[b] => {}
                _ => return Err(DoorbellIdError::NotAllocated { first }),
            }
        }
        for &first in firsts {
            if let Some(b) = index(first) {
                used[b] = false;
            }
        }
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use core::cell::Cell;

    /// A doorbell whose source is read back at unmask.
    #[derive(Default)]
    struct Hw {
        enabled: Cell<bool>,
        source: Cell<bool>,
    }
    impl DoorbellHw for Hw {
        fn mask(&self) {
            self.enabled.set(false);
        }
        fn unmask(&self) -> bool {
            self.enabled.set(true);
            self.source.get()
        }
    }

    /// Seen on QEMU 10.0.2: the source became pending while masked and the hardware
    /// will not signal it after the unmask (a stale status bit). The read-back makes
    /// `put` stay runnable instead of sleeping on it.
    #[test]
    fn pending_source_at_unmask_refuses_to_block() {
        let (db, hw) = (Doorbell::new(), Hw::default());
        hw.source.set(true);
        assert_eq!(db.put(&hw, true), PutOutcome::StayRunnable);
        assert!(!hw.enabled.get(), "taken back: masked");
        assert_eq!(db.state(), DoorbellState::Descheduled);
        assert!(!db.fire(&hw), "a late fire neither kicks nor unmasks");
        assert!(!hw.enabled.get());
        assert!(db.load(&hw), "load reports it");
    }

    #[test]
    fn block_fire_load_cycle() {
        let (db, hw) = (Doorbell::new(), Hw::default());
        assert_eq!(db.put(&hw, true), PutOutcome::Blocked);
        assert!(hw.enabled.get(), "doorbell enabled only while blocking");
        assert_eq!(db.state(), DoorbellState::Blocking);
        assert!(db.fire(&hw), "fire kicks a blocked vCPU");
        assert!(!hw.enabled.get(), "fired doorbell is masked");
        assert_eq!(db.state(), DoorbellState::Fired);
        assert!(!db.fire(&hw), "a second fire does not kick again");
        assert!(db.load(&hw), "load reports the doorbell");
        assert!(!db.pending_last());
        assert_eq!(db.state(), DoorbellState::Resident);
    }

    #[test]
    fn descheduled_not_blocking_keeps_the_doorbell_masked() {
        let (db, hw) = (Doorbell::new(), Hw::default());
        assert_eq!(db.put(&hw, false), PutOutcome::StayRunnable);
        assert!(!hw.enabled.get());
        assert_eq!(db.state(), DoorbellState::Descheduled);
        assert!(!db.fire(&hw));
        assert!(db.load(&hw));
    }

    #[test]
    fn pending_last_refuses_to_block() {
        let (db, hw) = (Doorbell::new(), Hw::default());
        assert!(!db.fire(&hw), "spurious fire while resident only records");
        assert_eq!(db.put(&hw, true), PutOutcome::StayRunnable);
        assert!(!hw.enabled.get());
        assert_eq!(db.state(), DoorbellState::Descheduled);
    }

    struct Hooks {
        fail_at: Option<u32>,
        setups: Vec<u32>,
        teardowns: Vec<u32>,
    }
    impl BlockHooks for Hooks {
        type Error = &'static str;
        fn setup(&mut self, first: u32) -> Result<(), &'static str> {
            if Some(first) == self.fail_at {
                return Err("no");
            }
            self.setups.push(first);
            Ok(())
        }
        fn teardown(&mut self, first: u32) {
            self.teardowns.push(first);
        }
    }

    fn hooks(fail_at: Option<u32>) -> Hooks {
        Hooks {
            fail_at,
            setups: vec![],
            teardowns: vec![],
        }
    }

    #[test]
    fn ids_alloc_and_free() {
        let ids = DoorbellIds::<4>::new(8192).unwrap();
        assert!(
            DoorbellIds::<4>::new(u32::MAX - 64).is_none(),
            "range overflow is refused"
        );
        let mut out = [0; 4];
        assert_eq!(ids.alloc(33, &mut out, &mut hooks(None)), Ok(2));
        assert_eq!(&out[..2], &[8192, 8224]);
        assert_eq!(
            ids.alloc(100, &mut out, &mut hooks(None)),
            Err(DoorbellIdError::Exhausted { wanted: 4 })
        );
        ids.free::<()>(&[8192]).unwrap();
        assert_eq!(
            ids.free::<()>(&[8192]),
            Err(DoorbellIdError::NotAllocated { first: 8192 })
        );
        assert_eq!(
            ids.free::<()>(&[8193]),
            Err(DoorbellIdError::NotAllocated { first: 8193 })
        );
        assert_eq!(
            ids.free::<()>(&[0]),
            Err(DoorbellIdError::NotAllocated { first: 0 })
        );
        let mut small = [0; 1];
        assert_eq!(
            ids.alloc(64, &mut small, &mut hooks(None)),
            Err(DoorbellIdError::OutputTooSmall { needed: 2 })
        );
    }

    /// Review of seed 002: a failure on the *first* block must unwind nothing and return
    /// (the unsigned `--i >= 0` loop never ended), and a later failure unwinds exactly
    /// the blocks set up before it.
    #[test]
    fn regression_002_failed_alloc_unwinds_only_its_blocks() {
        let ids = DoorbellIds::<4>::new(0).unwrap();
        let mut out = [0; 4];
        let mut h = hooks(Some(0));
        assert_eq!(
            ids.alloc(64, &mut out, &mut h),
            Err(DoorbellIdError::Setup {
                block: 0,
                error: "no"
            })
        );
        assert!(h.teardowns.is_empty());
        let mut h = hooks(Some(64));
        assert_eq!(
            ids.alloc(96, &mut out, &mut h),
            Err(DoorbellIdError::Setup {
                block: 2,
                error: "no"
            })
        );
        assert_eq!(
            h.teardowns,
            vec![32, 0],
            "reverse order, only what was set up"
        );
        // Everything was freed: the whole range is allocatable again.
        assert_eq!(ids.alloc(128, &mut out, &mut hooks(None)), Ok(4));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// A doorbell whose source is an atomic flag; `unmask` reads it back. Every
    /// access is an RMW: the enable and the source form a Dekker pair with the MSI
    /// below, and loom treats SeqCst loads as acquire (see the module docs).
    #[derive(Default)]
    struct Hw {
        enabled: AtomicBool,
        source: AtomicBool,
    }
    impl DoorbellHw for Hw {
        fn mask(&self) {
            self.enabled.swap(false, Ordering::SeqCst);
        }
        fn unmask(&self) -> bool {
            self.enabled.swap(true, Ordering::SeqCst);
            self.source.fetch_or(false, Ordering::SeqCst)
        }
    }

    /// Hardware that evaluates its signal only when the source rises (an MSI lands)
    /// and never again at unmask — QEMU 10.0.2's `hip.SGEIP` after the `hgeie` race
    /// (docs/design.md "Doorbells"). An interrupt racing a blocking `put`: the vCPU
    /// must stay runnable or be kicked; the read-back in `unmask` is what guarantees it
    /// (make `unmask` return `false` and this model finds the lost wake-up).
    #[test]
    fn loom_doorbell_msi_races_unmask_without_resignal() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let db = Arc::new(Doorbell::new());
            let hw = Arc::new(Hw::default());
            let (d2, h2) = (db.clone(), hw.clone());
            let msi = thread::spawn(move || {
                h2.source.swap(true, Ordering::SeqCst);
                h2.enabled.fetch_or(false, Ordering::SeqCst) && d2.fire(&*h2)
            });
            let outcome = db.put(&*hw, true);
            let kicked = msi.join().unwrap();
            assert!(
                kicked || outcome == PutOutcome::StayRunnable,
                "lost wake-up: the source is pending, the vCPU blocked, nobody kicked"
            );
        });
    }

    /// A fire racing a blocking put: either put refuses to block or fire kicks, and a
    /// fired doorbell is never left enabled.
    #[test]
    fn loom_doorbell_fire_races_put() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let db = Arc::new(Doorbell::new());
            let hw = Arc::new(Hw::default());
            let (d2, h2) = (db.clone(), hw.clone());
            let firer = thread::spawn(move || d2.fire(&*h2));
            let outcome = db.put(&*hw, true);
            let kicked = firer.join().unwrap();
            assert!(
                kicked || outcome == PutOutcome::StayRunnable,
                "lost doorbell"
            );
            if db.state() != DoorbellState::Blocking {
                assert!(
                    !hw.enabled.fetch_or(false, Ordering::SeqCst),
                    "doorbell left enabled"
                );
            }
        });
    }

    /// Two fires (two producers) racing load then a blocking put: pending-last is never
    /// lost — the vCPU sees it at load, refuses to block, or gets kicked.
    #[test]
    fn loom_doorbell_two_fires_race_load_and_put() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let db = Arc::new(Doorbell::new());
            let hw = Arc::new(Hw::default());
            assert_eq!(db.put(&*hw, false), PutOutcome::StayRunnable);
            let fires: Vec<_> = (0..2)
                .map(|_| {
                    let (d, h) = (db.clone(), hw.clone());
                    thread::spawn(move || d.fire(&*h))
                })
                .collect();
            let seen = db.load(&*hw);
            let outcome = db.put(&*hw, true);
            let kicked = fires
                .into_iter()
                .map(|f| f.join().unwrap())
                .filter(|k| *k)
                .count();
            assert!(kicked <= 1, "one kick per blocking period");
            assert!(
                seen || outcome == PutOutcome::StayRunnable || kicked == 1,
                "lost doorbell: seen={seen} {outcome:?} kicked={kicked} state={:?} pl={}",
                db.state(),
                db.pending_last()
            );
        });
    }
}
