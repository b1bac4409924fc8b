//! In-flight tracking and ack notifiers.
//!
//! Seed: `004_…` (KVM arm64 GICv5: track the SPIs in flight, notice at vCPU exit which
//! ones the guest has deactivated, and call their ack notifiers outside the locks).
//!
//! A passed-through level interrupt must not be completed physically until the guest
//! completes the virtual one (seed `001_…`); an [`AckNotifiers`] token registered for the
//! virtual id tells whoever cares (the routing table) when that happens.
//!
//! # Protocol
//!
//! * [`AckNotifiers`] maps a virtual id to a non-zero token, one atomic word per id.
//!   `register` is a CAS from 0, `unregister` a swap to 0; readers load it (Acquire,
//!   pairing with the Release of `register`, so a token is seen with whatever its owner
//!   set up before registering).
//! * [`InFlight`] (per vCPU) is a short list behind a lock, plus `nr`, the list length,
//!   written only under the lock (Release) and read without it (Acquire) by the fast
//!   path of [`InFlight::fold`]: with nothing in flight, `fold` is that one load. A
//!   `mark` racing a `fold` that reads 0 is fine: the new entry is still active (it was
//!   just delivered) and the next fold sees it.
//! * `mark` captures the id's token *into the in-flight entry*, so a completion always
//!   reaches the notifier that was registered when the interrupt was delivered — never
//!   a notifier registered for the same id after a release and re-route (an ABA a
//!   review found: the stale completion would complete the new route's level interrupt
//!   early). Callers mark **before** the guest can see the interrupt.
//! * `fold` takes the lock, removes every entry the guest has deactivated, copies their
//!   `(virq, token)` pairs to a stack buffer, **drops the lock**, and only then calls
//!   the notifier, so a notifier may itself mark, fold or take any other lock. Its cost
//!   is one check per entry in flight, independent of the number of interrupt ids.

use crate::sync::{array, AtomicU32, AtomicUsize, Mutex, Ordering};

/// Why an ack call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    /// The virtual id is beyond the table.
    NoSuchIrq {
        /// The refused id.
        virq: u32,
    },
    /// Token 0 means "none" and cannot be registered.
    ZeroToken,
    /// The id already has a notifier.
    AlreadyRegistered {
        /// The id.
        virq: u32,
    },
    /// The id has no notifier.
    NotRegistered {
        /// The id.
        virq: u32,
    },
    /// Every in-flight slot is taken.
    InFlightFull {
        /// The id that did not fit.
        virq: u32,
    },
}

impl core::fmt::Display for AckError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::NoSuchIrq { virq } => {
                write!(f, "virtual interrupt {virq} is beyond the notifier table")
            }
            Self::ZeroToken => write!(f, "ack notifier token must be non-zero"),
            Self::AlreadyRegistered { virq } => {
                write!(f, "virtual interrupt {virq} already has an ack notifier")
            }
            Self::NotRegistered { virq } => {
                write!(f, "virtual interrupt {virq} has no ack notifier")
            }
            Self::InFlightFull { virq } => {
                write!(f, "no in-flight slot left for virtual interrupt {virq}")
            }
        }
    }
}

/// Ack notifier tokens for virtual ids `0..N`.
pub struct AckNotifiers<const N: usize> {
    tokens: [AtomicU32; N],
}

impl<const N: usize> AckNotifiers<N> {
    /// No notifiers.
    pub fn new() -> Self {
        Self {
            tokens: array(|_| AtomicU32::new(0)),
        }
    }

    fn slot(&self, virq: u32) -> Result<&AtomicU32, AckError> {
        self.tokens
            .get(virq as usize)
            .ok_or(AckError::NoSuchIrq { virq })
    }

    /// Attach `token` (non-zero) to `virq`.
    pub fn register(&self, virq: u32, token: u32) -> Result<(), AckError> {
        if token == 0 {
            return Err(AckError::ZeroToken);
        }
        self.slot(virq)?
            .compare_exchange(0, token, Ordering::Release, Ordering::Relaxed)
            .map(drop)
            .map_err(|_| AckError::AlreadyRegistered { virq })
    }

    /// Detach the notifier of `virq`, returning its token.
    pub fn unregister(&self, virq: u32) -> Result<u32, AckError> {
        match self.slot(virq)?.swap(0, Ordering::AcqRel) {
            0 => Err(AckError::NotRegistered { virq }),
            token => Ok(token),
        }
    }

    /// The token of `virq`, if any.
    pub fn token(&self, virq: u32) -> Option<u32> {
        let token = self.slot(virq).ok()?.load(Ordering::Acquire);
        (token != 0).then_some(token)
    }
}

impl<const N: usize> Default for AckNotifiers<N> {
    fn default() -> Self {
        Self::new()
    }
}

struct List<const SLOTS: usize> {
    /// `(virq, token)`: the token is captured when the interrupt is marked, so a
    /// notifier re-registered for the same id later never receives this completion.
    entries: [(u32, u32); SLOTS],
    len: usize,
}

/// The interrupts one vCPU has in flight (delivered, not yet deactivated).
///
/// **Guarantees:** each deactivated entry is removed once and its notifier — the token
/// registered when it was *marked* — is called once, after the lock is dropped, so a
/// notifier may take any lock or re-enter this tracker; [`Self::fold`] with nothing in
/// flight is one atomic load. **The caller must:** [`Self::mark`] an interrupt before
/// the guest can see it; call `fold` at vCPU exit (or `deactivate` on a trapped
/// completion) from the vCPU's own thread.
///
/// # Example
///
/// ```
/// use virq_core::ack::{AckNotifiers, InFlight};
///
/// let acks = AckNotifiers::<64>::new();
/// let inflight = InFlight::<8>::new();
/// acks.register(10, 0x1_0022).unwrap(); // a route's ack token (see `route`)
///
/// inflight.mark(&acks, 10).unwrap(); // before injecting virtual 10
/// inflight.mark(&acks, 11).unwrap(); // no notifier: tracked, never notified
///
/// // At vCPU exit: the guest deactivated 10 and still has 11 active.
/// let mut notified = vec![];
/// let removed = inflight.fold(|virq| virq == 11, |virq, token| notified.push((virq, token)));
/// assert_eq!(removed, 1);
/// assert_eq!(notified, vec![(10, 0x1_0022)]);
/// assert_eq!(inflight.len(), 1);
/// ```
pub struct InFlight<const SLOTS: usize> {
    nr: AtomicUsize,
    list: Mutex<List<SLOTS>>,
}

impl<const SLOTS: usize> InFlight<SLOTS> {
    /// Nothing in flight.
    pub fn new() -> Self {
        Self {
            nr: AtomicUsize::new(0),
            list: Mutex::new(List {
                entries: [(0, 0); SLOTS],
                len: 0,
            }),
        }
    }

    /// Record `virq` as delivered to the guest, capturing its current notifier token.
    ///
    /// **Mark before the guest can see the interrupt** (before raising it): a `fold`
    /// that reads "nothing in flight" must not be able to miss a completion that
    /// already happened. Marking an id already in flight is a no-op (a level interrupt
    /// re-asserted before deactivation stays one entry).
    pub fn mark<const N: usize>(
        &self,
        notifiers: &AckNotifiers<N>,
        virq: u32,
    ) -> Result<(), AckError> {
        let token = notifiers.token(virq).unwrap_or(0);
        let mut list = self.list.lock();
        let len = list.len;
        if list.entries[..len].iter().any(|&(v, _)| v == virq) {
            return Ok(());
        }
        if len == SLOTS {
            return Err(AckError::InFlightFull { virq });
        }
        list.entries[len] = (virq, token);
        list.len = len + 1;
        self.nr.store(len + 1, Ordering::Release);
        Ok(())
    }

    /// Number in flight (a snapshot).
    pub fn len(&self) -> usize {
        self.nr.load(Ordering::Acquire)
    }

    /// Nothing in flight (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// At vCPU exit: remove every entry for which `active(virq)` is false and, after the
    /// lock is released, call `notify(virq, token)` for those that had a notifier when
    /// they were marked. Returns the number removed. With nothing in flight this is a
    /// single atomic load.
    pub fn fold(&self, mut active: impl FnMut(u32) -> bool, notify: impl FnMut(u32, u32)) -> usize {
        if self.nr.load(Ordering::Acquire) == 0 {
            return 0;
        }
        let mut done = [(0u32, 0u32); SLOTS];
        let mut nr_done = 0;
        {
            let mut list = self.list.lock();
            let mut i = 0;
            while i < list.len {
                if active(list.entries[i].0) {
                    i += 1;
                    continue;
                }
                done[nr_done] = list.entries[i];
                nr_done += 1;
                list.len -= 1;
                let last = list.len;
                list.entries[i] = list.entries[last];
            }
            self.nr.store(list.len, Ordering::Release);
        }
        Self::notify_all(&done[..nr_done], notify);
        nr_done
    }

    /// The guest deactivated `virq` in a trapped access (e.g. a PLIC complete): remove
    /// it and notify outside the lock. Returns whether it was in flight.
    pub fn deactivate(&self, virq: u32, notify: impl FnMut(u32, u32)) -> bool {
        let entry = {
            let mut list = self.list.lock();
            let len = list.len;
            let Some(i) = list.entries[..len].iter().position(|&(v, _)| v == virq) else {
                return false;
            };
            let entry = list.entries[i];
            list.entries[i] = list.entries[len - 1];
            list.len = len - 1;
            self.nr.store(len - 1, Ordering::Release);
            entry
        };
        Self::notify_all(&[entry], notify);
        true
    }

    fn notify_all(entries: &[(u32, u32)], mut notify: impl FnMut(u32, u32)) {
        for &(virq, token) in entries {
            if token != 0 {
                notify(virq, token);
            }
        }
    }
}

impl<const SLOTS: usize> Default for InFlight<SLOTS> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn notifier_error_paths() {
        let n = AckNotifiers::<8>::new();
        assert_eq!(n.register(8, 1), Err(AckError::NoSuchIrq { virq: 8 }));
        assert_eq!(n.register(1, 0), Err(AckError::ZeroToken));
        n.register(1, 5).unwrap();
        assert_eq!(
            n.register(1, 6),
            Err(AckError::AlreadyRegistered { virq: 1 })
        );
        assert_eq!(n.unregister(1), Ok(5));
        assert_eq!(n.unregister(1), Err(AckError::NotRegistered { virq: 1 }));
        assert_eq!(n.token(99), None);
    }

    #[test]
    fn in_flight_full_is_an_error() {
        let n = AckNotifiers::<8>::new();
        let f = InFlight::<2>::new();
        f.mark(&n, 1).unwrap();
        f.mark(&n, 2).unwrap();
        f.mark(&n, 2).unwrap();
        assert_eq!(f.mark(&n, 3), Err(AckError::InFlightFull { virq: 3 }));
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn fold_notifies_deactivated_only() {
        let n = AckNotifiers::<16>::new();
        n.register(3, 33).unwrap();
        n.register(4, 44).unwrap();
        let f = InFlight::<8>::new();
        for v in [3, 4, 5] {
            f.mark(&n, v).unwrap();
        }
        let mut seen = vec![];
        let removed = f.fold(|v| v == 4, |v, t| seen.push((v, t)));
        assert_eq!(removed, 2);
        assert_eq!(seen, vec![(3, 33)], "5 has no notifier, 4 is still active");
        assert_eq!(f.len(), 1);
        assert!(f.deactivate(4, |v, t| seen.push((v, t))));
        assert!(!f.deactivate(4, |_, _| panic!("not in flight")));
        assert_eq!(seen, vec![(3, 33), (4, 44)]);
        assert!(f.is_empty());
    }

    /// The notifier runs with no lock held: it can re-enter the tracker.
    #[test]
    fn notifier_runs_outside_the_lock() {
        let n = AckNotifiers::<4>::new();
        n.register(1, 1).unwrap();
        let f = InFlight::<4>::new();
        f.mark(&n, 1).unwrap();
        f.fold(|_| false, |_, _| f.mark(&n, 2).unwrap());
        assert_eq!(f.len(), 1, "the notifier's mark landed");
    }

    /// Review finding: a completion folded for an old owner of a virtual id must carry
    /// the old token, not whatever was registered for the id since.
    #[test]
    fn token_is_captured_at_mark() {
        let n = AckNotifiers::<4>::new();
        n.register(1, 10).unwrap();
        let f = InFlight::<4>::new();
        f.mark(&n, 1).unwrap();
        n.unregister(1).unwrap();
        n.register(1, 20).unwrap();
        let mut seen = vec![];
        f.fold(|_| false, |v, t| seen.push((v, t)));
        assert_eq!(seen, vec![(1, 10)]);
    }

    proptest! {
        /// Against a reference set: each delivered-then-deactivated id is notified
        /// exactly once, in the fold or deactivate that removed it.
        #[test]
        fn matches_reference_model(ops in proptest::collection::vec((0u8..3, 0u32..12, any::<u16>()), 1..150)) {
            let n = AckNotifiers::<12>::new();
            for v in (0..12).step_by(2) { n.register(v, v + 100).unwrap(); }
            let f = InFlight::<6>::new();
            let mut model = BTreeSet::new();
            for (kind, virq, active_bits) in ops {
                match kind {
                    0 => {
                        let r = f.mark(&n, virq);
                        let fits = model.contains(&virq) || model.len() < 6;
                        prop_assert_eq!(r.is_ok(), fits);
                        if fits { model.insert(virq); }
                    }
                    1 => {
                        let active = |v: u32| active_bits & (1 << v) != 0;
                        let mut seen = BTreeSet::new();
                        let removed = f.fold(active, |v, t| { assert_eq!(t, v + 100); seen.insert(v); });
                        let gone: BTreeSet<u32> = model.iter().copied().filter(|&v| !active(v)).collect();
                        prop_assert_eq!(removed, gone.len());
                        prop_assert_eq!(seen, gone.iter().copied().filter(|v| v % 2 == 0).collect::<BTreeSet<_>>());
                        model.retain(|v| active(*v));
                    }
                    _ => {
                        let was = f.deactivate(virq, |_, _| {});
                        prop_assert_eq!(was, model.remove(&virq));
                    }
                }
                prop_assert_eq!(f.len(), model.len());
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Two producers mark while the vCPU folds with everything deactivated: every mark
    /// is notified exactly once across the racing fold and a final one.
    #[test]
    fn loom_ack_two_producers_fold_exactly_once() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let n = Arc::new(AckNotifiers::<4>::new());
            n.register(1, 11).unwrap();
            n.register(2, 22).unwrap();
            let f = Arc::new(InFlight::<4>::new());
            let producers: Vec<_> = [1u32, 2]
                .into_iter()
                .map(|v| {
                    let (f, n) = (f.clone(), n.clone());
                    thread::spawn(move || f.mark(&*n, v).unwrap())
                })
                .collect();
            let mut seen = [0u32; 3];
            f.fold(|_| false, |v, _| seen[v as usize] += 1);
            for p in producers {
                p.join().unwrap();
            }
            f.fold(|_| false, |v, _| seen[v as usize] += 1);
            assert_eq!(seen, [0, 1, 1]);
            assert!(f.is_empty());
        });
    }
}
