//! Per-vCPU pending interrupts: many producers, the vCPU as the single consumer.
//!
//! Seed: `000_…` (Xen RISC-V `irqs_pending` + `irqs_pending_mask`, after KVM RISC-V).
//!
//! # Protocol
//!
//! Two bitmaps per vCPU, each an array of `W` atomic words:
//!
//! * `pending` — the requested state of each interrupt id. Written by producers
//!   (`raise` sets, `lower` clears); for *handoff* ids (below) the consumer also clears
//!   the bits it moves into hardware.
//! * `mask` — the ids whose `pending` bit changed since the consumer last looked.
//!   Producers only ever *set* bits; only the consumer clears them, with one `swap(0)`
//!   per word in [`PendingSet::take_changes`].
//!
//! Transitions:
//!
//! | who | step 1 | step 2 | result |
//! |---|---|---|---|
//! | producer `raise` | `pending.fetch_or` (Relaxed) | `mask.fetch_or` (Release) | kick if **either** old bit was 0 |
//! | producer `lower` | `pending.fetch_and` (Relaxed) | `mask.fetch_or` (Release) | never kicks |
//! | consumer `take_changes` | `mask.swap(0)` (Acquire) | `pending.load` / `fetch_and` (Relaxed) | the changed ids and their state |
//!
//! **Why the orderings are enough.** A producer's `mask` RMW is a release and every
//! later RMW on that word continues its release sequence, so the consumer's acquire
//! `swap` that reads a mask value containing the producer's bit also sees the producer's
//! earlier `pending` write — also when the value it read was written by *another*
//! producer's later RMW on the same word, because RMWs continue the release sequence.
//! Once that write happens-before the consumer's read of `pending`, coherence forbids
//! reading anything older, so the `pending` accesses themselves can be relaxed.
//!
//! **Why "either bit went 0 → 1" is the kick rule** (the review's finding). Kicking only
//! when the *mask* bit flipped misses *lower then raise*: `lower` sets the mask bit
//! without a kick, the vCPU is asleep, and the following `raise` finds the mask bit
//! already set, so nobody wakes the vCPU although the id is now pending. With the rule
//! above the `raise` flips `pending` 0 → 1 and kicks. Conversely, when both old bits were
//! 1 the pending state did not change and a mask bit is outstanding: the consumer's next
//! `swap` reads it (with our release), and whoever set it without kicking was a `lower`
//! whose effect our `raise` has just overridden before any consumer could see it — in
//! that case the `raise` that originally set `pending` kicked already.
//!
//! **The kick.** `raise` only says a kick is needed; the scheduler delivers it. Its
//! "run again" flag must be consumed by the vCPU with an RMW (`swap(false)`, acquire)
//! *before* `take_changes`, and set by the producer with an RMW (`swap(true)`, release)
//! *after* `raise`: a kick
//! then either precedes the consumer's swap (and so happens-before its take, which sees
//! the raise) or leaves the flag set for the next round. A plain `store(false)` does not
//! synchronise and lets a raise slip between the clear and the take unseen.
//!
//! # Handoff ids (guest-clearable bits such as VSSIP)
//!
//! The guest can clear some bits itself (RISC-V `sip.SSIP` aliases `hvip.VSSIP`). The
//! seed resyncs such a bit into the shared `pending` map after guest exit, writing it
//! only if the consumer itself flipped the mask bit 0 → 1. That still loses an update:
//! a producer's `raise` that lands after the guest cleared the bit but before the
//! resync finds `pending` already 1 (stale) and the resync then clears it.
//!
//! virq closes that window instead of narrowing it: for handoff ids the `pending` bit is
//! a *request*, and `take_changes` consumes it (`fetch_and`) when it moves it into the
//! hardware register. While the guest runs, the shared bit is therefore 0, so any raise
//! flips it 0 → 1 and kicks; the guest's own clear only touches the hardware copy, which
//! the consumer re-reads into its private shadow ("sync back") without writing shared
//! state at all. `lower` on a handoff id cancels a request not yet delivered; a
//! delivered one belongs to the guest.

use crate::bits::{split, WORD_BITS};
use crate::sync::{array, AtomicUsize, Ordering};

/// An interrupt id that does not fit the set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqOutOfRange {
    /// The refused id.
    pub irq: u32,
    /// The number of ids the set holds.
    pub capacity: usize,
}

impl core::fmt::Display for IrqOutOfRange {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "interrupt id {} is outside the pending set (capacity {})",
            self.irq, self.capacity
        )
    }
}

/// The pending interrupts of one vCPU: `W` words of `usize`, so `W * usize::BITS` ids.
///
/// **Guarantees:** any number of producers may `raise`/`lower` concurrently, lock-free;
/// a `raise` that returns `Ok(true)` is the only one that needs a kick, and no raise is
/// ever unseen by a vCPU that was kicked when `raise` asked for it (lower-then-raise
/// included). **The caller must:** have a single consumer (the vCPU's own thread)
/// call [`Self::take_changes`]; kick the vCPU whenever `raise` returns `Ok(true)`
/// ([`crate::block::VcpuBlock::kick`]); consume the kick *before* taking the changes.
///
/// # Example
///
/// ```
/// use virq_core::pending::PendingSet;
///
/// let set = PendingSet::<1>::new();
/// assert_eq!(set.raise(9), Ok(true), "first raise: kick the vCPU");
/// assert_eq!(set.raise(9), Ok(false), "already pending and unseen: no second kick");
///
/// // The vCPU, before guest entry: fold the changes into its shadow of the hardware.
/// let mut hvip = [0usize; 1];
/// set.take_changes().apply(&mut hvip);
/// assert_eq!(hvip[0], 1 << 9);
///
/// // Lower then raise before the vCPU looks again: the raise must kick (seed 000).
/// set.lower(9).unwrap();
/// assert_eq!(set.raise(9), Ok(true));
/// assert!(set.raise(64).is_err(), "ids beyond the set are refused, not wrapped");
/// ```
pub struct PendingSet<const W: usize> {
    pending: [AtomicUsize; W],
    mask: [AtomicUsize; W],
    /// Ids whose pending bit is a request consumed by the consumer. Immutable.
    handoff: [usize; W],
}

/// The per-vCPU set used by the RISC-V code: at least 64 ids on 32- and 64-bit hosts.
pub type VcpuPending = PendingSet<{ 64 / WORD_BITS }>;

/// What changed since the consumer last looked, returned by [`PendingSet::take_changes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changes<const W: usize> {
    /// Ids whose state changed.
    pub changed: [usize; W],
    /// New state of the changed level ids (bits outside `changed` are meaningless).
    pub level: [usize; W],
    /// Handoff ids with a delivery request (always within `changed`).
    pub handoff: [usize; W],
    /// Which of the changed ids are handoff ids.
    handoff_ids: [usize; W],
}

impl<const W: usize> Changes<W> {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changed.iter().all(|&w| w == 0)
    }

    /// Fold the changes into the consumer's shadow of the hardware state: changed level
    /// ids take their new level, requested handoff ids are set, all else is untouched
    /// (a handoff id with no request keeps whatever the guest left in hardware).
    pub fn apply(&self, shadow: &mut [usize; W]) {
        for (i, word) in shadow.iter_mut().enumerate() {
            let level_changed = self.changed[i] & !self.handoff_ids[i];
            *word = (*word & !level_changed) | (self.level[i] & level_changed) | self.handoff[i];
        }
    }
}

impl<const W: usize> PendingSet<W> {
    /// Number of interrupt ids the set holds.
    pub const NR_IRQS: usize = W * WORD_BITS;

    /// An empty set in which every id is a level id.
    pub fn new() -> Self {
        Self {
            pending: array(|_| AtomicUsize::new(0)),
            mask: array(|_| AtomicUsize::new(0)),
            handoff: [0; W],
        }
    }

    /// An empty set in which `ids` are handoff ids (see the module docs).
    pub fn with_handoff(ids: &[u32]) -> Result<Self, IrqOutOfRange> {
        let mut set = Self::new();
        for &irq in ids {
            let (w, b) = Self::locate(irq)?;
            set.handoff[w] |= b;
        }
        Ok(set)
    }

    fn locate(irq: u32) -> Result<(usize, usize), IrqOutOfRange> {
        let n = irq as usize;
        if n >= Self::NR_IRQS {
            return Err(IrqOutOfRange {
                irq,
                capacity: Self::NR_IRQS,
            });
        }
        Ok(split(n))
    }

    /// Make `irq` pending. Returns `Ok(true)` when the caller must kick the vCPU: the
    /// raise could otherwise go unseen (see the module docs for the rule).
    #[must_use = "a raise that returns true must kick the vCPU"]
    pub fn raise(&self, irq: u32) -> Result<bool, IrqOutOfRange> {
        let (w, b) = Self::locate(irq)?;
        let old_pending = self.pending[w].fetch_or(b, Ordering::Relaxed);
        let old_mask = self.mask[w].fetch_or(b, Ordering::Release);
        Ok(old_pending & b == 0 || old_mask & b == 0)
    }

    /// Make `irq` not pending. Never needs a kick: a vCPU that has not seen the change
    /// yet will at its next entry.
    pub fn lower(&self, irq: u32) -> Result<(), IrqOutOfRange> {
        let (w, b) = Self::locate(irq)?;
        self.pending[w].fetch_and(!b, Ordering::Relaxed);
        self.mask[w].fetch_or(b, Ordering::Release);
        Ok(())
    }

    /// Whether any change is waiting for the consumer (one relaxed load per word). A
    /// hint: the authoritative read is [`Self::take_changes`].
    pub fn has_changes(&self) -> bool {
        self.mask.iter().any(|m| m.load(Ordering::Relaxed) != 0)
    }

    /// Take every change since the last call. **Consumer only** (the vCPU, just before
    /// guest entry); see the module docs for the protocol.
    pub fn take_changes(&self) -> Changes<W> {
        let mut changes = Changes {
            changed: [0; W],
            level: [0; W],
            handoff: [0; W],
            handoff_ids: [0; W],
        };
        for w in 0..W {
            let changed = self.mask[w].swap(0, Ordering::Acquire);
            if changed == 0 {
                continue;
            }
            let level_ids = changed & !self.handoff[w];
            let handoff_ids = changed & self.handoff[w];
            changes.changed[w] = changed;
            changes.handoff_ids[w] = handoff_ids;
            if level_ids != 0 {
                changes.level[w] = self.pending[w].load(Ordering::Relaxed) & level_ids;
            }
            if handoff_ids != 0 {
                changes.handoff[w] =
                    self.pending[w].fetch_and(!handoff_ids, Ordering::Relaxed) & handoff_ids;
            }
        }
        changes
    }

    /// Racy snapshot of one id's requested state, for diagnostics and tests.
    pub fn is_pending(&self, irq: u32) -> bool {
        Self::locate(irq).is_ok_and(|(w, b)| self.pending[w].load(Ordering::Relaxed) & b != 0)
    }
}

impl<const W: usize> Default for PendingSet<W> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Set = PendingSet<2>;

    #[test]
    fn raise_out_of_range_is_an_error() {
        let set = Set::new();
        let cap = Set::NR_IRQS;
        assert_eq!(
            set.raise(cap as u32),
            Err(IrqOutOfRange {
                irq: cap as u32,
                capacity: cap
            })
        );
        assert!(set.lower(u32::MAX).is_err());
        assert!(Set::with_handoff(&[cap as u32]).is_err());
        assert!(!set.is_pending(u32::MAX));
    }

    #[test]
    fn vcpu_pending_holds_64_ids_on_any_word_size() {
        const { assert!(VcpuPending::NR_IRQS >= 64) };
        let set = VcpuPending::new();
        assert_eq!(set.raise(63), Ok(true));
    }

    #[test]
    fn first_raise_kicks_and_repeat_does_not() {
        let set = Set::new();
        assert_eq!(set.raise(70), Ok(true));
        assert_eq!(set.raise(70), Ok(false));
        let c = set.take_changes();
        let mut shadow = [0; 2];
        c.apply(&mut shadow);
        assert_eq!(shadow, [0, 1 << (70 - WORD_BITS)]);
        assert!(set.take_changes().is_empty());
    }

    /// Review of seed 000: `lower` followed by `raise` before the consumer ran must kick,
    /// because `lower` left the mask bit set without kicking.
    #[test]
    fn regression_000_lower_then_raise_kicks() {
        let set = Set::new();
        assert_eq!(set.raise(9), Ok(true));
        let mut shadow = [0; 2];
        set.take_changes().apply(&mut shadow);
        set.lower(9).unwrap();
        assert_eq!(set.raise(9), Ok(true), "lower then raise must kick");
    }

    #[test]
    fn lower_needs_no_kick_and_clears_the_shadow() {
        let set = Set::new();
        let mut shadow = [0; 2];
        let _ = set.raise(10).unwrap();
        set.take_changes().apply(&mut shadow);
        set.lower(10).unwrap();
        assert!(set.has_changes());
        set.take_changes().apply(&mut shadow);
        assert_eq!(shadow, [0, 0]);
    }

    /// Seed 000's sync step: the guest clears VSSIP itself; a raise afterwards must be
    /// delivered again, whatever the shared map said before.
    #[test]
    fn handoff_raise_after_guest_clear_is_delivered() {
        let set = Set::with_handoff(&[2]).unwrap();
        let mut shadow = [0; 2];
        assert_eq!(set.raise(2), Ok(true));
        set.take_changes().apply(&mut shadow);
        assert_eq!(shadow[0], 1 << 2);
        assert!(!set.is_pending(2), "the request moved into hardware");
        shadow[0] &= !(1 << 2); // the guest wrote sip.SSIP = 0; the consumer re-read HVIP
        assert_eq!(
            set.raise(2),
            Ok(true),
            "a raise after the guest's clear must kick"
        );
        set.take_changes().apply(&mut shadow);
        assert_eq!(shadow[0], 1 << 2);
    }

    #[test]
    fn handoff_lower_cancels_only_an_undelivered_request() {
        let set = Set::with_handoff(&[2]).unwrap();
        let mut shadow = [1 << 2, 0]; // delivered earlier, guest has not cleared it
        set.lower(2).unwrap();
        set.take_changes().apply(&mut shadow);
        assert_eq!(
            shadow[0],
            1 << 2,
            "a delivered handoff bit belongs to the guest"
        );
        let _ = set.raise(2).unwrap();
        set.lower(2).unwrap();
        shadow[0] = 0;
        set.take_changes().apply(&mut shadow);
        assert_eq!(shadow[0], 0, "a cancelled request is not delivered");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Raise(u32),
        Lower(u32),
        Take,
        GuestClear,
    }

    fn op() -> impl Strategy<Value = Op> {
        let id = prop_oneof![Just(2u32), 0u32..128];
        prop_oneof![
            id.clone().prop_map(Op::Raise),
            id.prop_map(Op::Lower),
            Just(Op::Take),
            Just(Op::GuestClear),
        ]
    }

    proptest! {
        /// Against a sequential reference: after every `take`, the shadow equals the
        /// reference; between takes, any id the reference has pending but the shadow
        /// lacks is covered by a kick (no missed kicks). Id 2 is a handoff id, modelled
        /// as "in hardware" plus "undelivered request".
        #[test]
        fn matches_reference_model(ops in proptest::collection::vec(op(), 1..200)) {
            let set = Set::with_handoff(&[2]).unwrap();
            let mut shadow = [0usize; 2];
            let mut level = [false; 128];
            let (mut hw2, mut req2) = (false, false);
            let mut kicked = false;
            for op in ops {
                match op {
                    Op::Raise(2) => {
                        kicked |= set.raise(2).unwrap();
                        req2 = true;
                    }
                    Op::Lower(2) => {
                        set.lower(2).unwrap();
                        req2 = false;
                    }
                    Op::Raise(i) => {
                        kicked |= set.raise(i).unwrap();
                        level[i as usize] = true;
                    }
                    Op::Lower(i) => {
                        set.lower(i).unwrap();
                        level[i as usize] = false;
                    }
                    Op::Take => {
                        set.take_changes().apply(&mut shadow);
                        kicked = false;
                        hw2 |= req2;
                        req2 = false;
                        for (i, &m) in level.iter().enumerate().filter(|(i, _)| *i != 2) {
                            let (w, b) = split(i);
                            prop_assert_eq!(shadow[w] & b != 0, m, "id {}", i);
                        }
                        prop_assert_eq!(shadow[0] & 4 != 0, hw2, "handoff id 2");
                    }
                    Op::GuestClear => {
                        shadow[0] &= !(1 << 2);
                        hw2 = false;
                    }
                }
                for (i, &m) in level.iter().enumerate().filter(|(i, _)| *i != 2) {
                    let (w, b) = split(i);
                    if m && shadow[w] & b == 0 {
                        prop_assert!(kicked, "id {} pending but unseen and no kick", i);
                    }
                }
                if req2 {
                    prop_assert!(kicked, "handoff request outstanding and no kick");
                }
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;
    use loom::thread;

    /// A kick in the model: the scheduler's "run me again" flag, set with an RMW.
    fn kick_if(needed: bool, flag: &AtomicBool) {
        if needed {
            flag.swap(true, Ordering::SeqCst);
        }
    }

    /// Two producers (one lowers then raises, one raises another id) race the consumer.
    /// If no kick is outstanding when everyone is done, the consumer's view must already
    /// hold every pending id; after a final take it must equal the final state.
    #[test]
    fn loom_pending_two_producers_no_missed_kick() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let set = Arc::new(PendingSet::<1>::new());
            let kick = Arc::new(AtomicBool::new(false));
            let _ = set.raise(1).unwrap();
            let (s1, k1) = (set.clone(), kick.clone());
            let p1 = thread::spawn(move || {
                s1.lower(1).unwrap();
                kick_if(s1.raise(1).unwrap(), &k1);
            });
            let (s2, k2) = (set.clone(), kick.clone());
            let p2 = thread::spawn(move || kick_if(s2.raise(3).unwrap(), &k2));
            let mut shadow = [0usize; 1];
            // Consume the kick flag with an RMW (acquire): a kick that precedes it in the
            // flag's order then happens-before the take below.
            kick.swap(false, Ordering::SeqCst);
            set.take_changes().apply(&mut shadow);
            p1.join().unwrap();
            p2.join().unwrap();
            if !kick.swap(false, Ordering::SeqCst) {
                assert_eq!(shadow[0] & 0b1010, 0b1010, "missed kick: {:#b}", shadow[0]);
            }
            set.take_changes().apply(&mut shadow);
            assert_eq!(shadow[0], 0b1010);
        });
    }

    /// The handoff id: the guest has cleared VSSIP, a producer raises it again while the
    /// consumer syncs and takes changes. The raise must reach the hardware shadow.
    #[test]
    fn loom_pending_handoff_raise_not_lost() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let set = Arc::new(PendingSet::<1>::with_handoff(&[2]).unwrap());
            let kick = Arc::new(AtomicBool::new(false));
            let mut shadow = [0usize; 1];
            let _ = set.raise(2).unwrap();
            set.take_changes().apply(&mut shadow);
            shadow[0] = 0; // guest cleared sip.SSIP; consumer synced hvip back
            let (s1, k1) = (set.clone(), kick.clone());
            let p1 = thread::spawn(move || kick_if(s1.raise(2).unwrap(), &k1));
            let (s2, k2) = (set.clone(), kick.clone());
            let p2 = thread::spawn(move || kick_if(s2.raise(5).unwrap(), &k2));
            set.take_changes().apply(&mut shadow);
            p1.join().unwrap();
            p2.join().unwrap();
            if kick.swap(false, Ordering::SeqCst) {
                set.take_changes().apply(&mut shadow);
            }
            assert_eq!(
                shadow[0],
                (1 << 2) | (1 << 5),
                "a raise after the guest's clear was lost"
            );
        });
    }

    /// Why handoff ids exist: the seed's resync rule ("write `pending` only if you flipped
    /// the mask bit 0 → 1"), applied after the guest cleared VSSIP, loses a raise that
    /// races it. Loom must find that interleaving; if this test ever stops panicking,
    /// the argument in the module docs is wrong.
    #[test]
    #[should_panic(expected = "seed resync lost a raise")]
    fn loom_pending_seed_resync_rule_loses_a_raise() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let set = Arc::new(PendingSet::<1>::new()); // VSSIP as a plain level id
            let kick = Arc::new(AtomicBool::new(false));
            let mut shadow = [0usize; 1];
            let _ = set.raise(2).unwrap();
            set.take_changes().apply(&mut shadow);
            // The guest has cleared sip.SSIP; now a producer raises it again while the
            // consumer resyncs by the seed's rule.
            shadow[0] = 0;
            let (s1, k1) = (set.clone(), kick.clone());
            let producer = thread::spawn(move || kick_if(s1.raise(2).unwrap(), &k1));
            if set.mask[0].fetch_or(1 << 2, Ordering::AcqRel) & (1 << 2) == 0 {
                set.pending[0].fetch_and(!(1 << 2), Ordering::Relaxed);
            }
            set.take_changes().apply(&mut shadow);
            producer.join().unwrap();
            if kick.swap(false, Ordering::SeqCst) {
                set.take_changes().apply(&mut shadow);
            }
            assert_eq!(shadow[0], 1 << 2, "seed resync lost a raise");
        });
    }

    /// A `lower` racing the consumer: if the consumer's take sees the change, it must
    /// see the new level (0), not the old one. The mask's Release (continued by the
    /// consumer's Acquire swap) is what orders the relaxed `pending` write before the
    /// consumer's relaxed read; with a relaxed mask RMW the consumer could take the
    /// change and keep the lowered line high.
    #[test]
    fn loom_pending_lower_is_observed() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let set = Arc::new(PendingSet::<1>::new());
            let _ = set.raise(10).unwrap();
            let _ = set.take_changes();
            let s1 = set.clone();
            let producer = thread::spawn(move || s1.lower(10).unwrap());
            let c = set.take_changes();
            if c.changed[0] & (1 << 10) != 0 {
                assert_eq!(c.level[0] & (1 << 10), 0, "a lowered line seen high");
            }
            producer.join().unwrap();
        });
    }
}
