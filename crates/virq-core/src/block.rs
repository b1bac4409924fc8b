//! vCPU blocking and kicks: a vCPU waiting for an interrupt (guest WFI) sleeps only
//! when no producer has asked it to look at its pending set since it last looked, and
//! a producer's kick reaches whichever hart is the vCPU's home — also across a
//! migration.
//!
//! Seed: `000_…` (its review found a missed kick) and the lost wake-ups KVM RISC-V and
//! hyp showed nested in QEMU (issue 12): a halted vCPU that never runs again while an
//! interrupt is pending is the failure this mechanism exists to rule out.
//!
//! # Protocol
//!
//! Per vCPU, two atomics:
//!
//! * `state`: two bits in one word. `BLOCKED` — the vCPU waits for an interrupt; set
//!   and cleared only by its home hart. `KICKED` — a producer asked the vCPU to look at
//!   its pending set; set by any producer ([`VcpuBlock::kick`]), cleared only by the
//!   home hart ([`VcpuBlock::take_kick`]), right before it takes the pending changes.
//!   The vCPU is *runnable* when `!BLOCKED || KICKED`.
//! * `home`: the hart that runs the vCPU. Written only by the current home hart, with
//!   the vCPU descheduled ([`VcpuBlock::migrate`]).
//!
//! Every access is SeqCst and every read of `state` an RMW (loom approximates SeqCst
//! loads as acquire, tokio-rs/loom#180; an RMW reads the newest value in both models).
//!
//! Transitions:
//!
//! | who | call | effect |
//! |---|---|---|
//! | producer | `PendingSet::raise` → "kick", then [`VcpuBlock::kick`] | `state |= KICKED`, then read `home`; the caller notifies that hart (an IPI) unless it is itself |
//! | home hart, before taking the pending changes | [`VcpuBlock::take_kick`] | `state &= !KICKED`; the changes taken *after* it include every raise whose kick it consumed |
//! | home hart, guest WFI | [`VcpuBlock::block`] | `state |= BLOCKED`; if the old state had `KICKED`, undo `BLOCKED` and stay runnable |
//! | home hart: timer expiry, doorbell refused to block, HSM stop | [`VcpuBlock::unblock`] | `state &= !BLOCKED` |
//! | home hart, scheduling | [`VcpuBlock::runnable`] | reads `state` (RMW) |
//! | old home hart, vCPU descheduled | [`VcpuBlock::migrate`] | `home := to`; the caller then notifies `to` |
//!
//! **No lost wake-up.** The decision "sleep or not" and the kick are both RMWs of the
//! *same* word, so they are ordered by its modification order — no Dekker pair, no
//! fence. If the kick comes first, `block` sees `KICKED` and does not sleep. If `block`
//! comes first, the kick leaves `KICKED` set, the vCPU is runnable again, and the home
//! hart is notified. Either way the home hart then calls `take_kick` before it takes
//! the pending changes: its RMW reads the kick's RMW (or a later one in the release
//! sequence), so the producer's `raise`, sequenced before its kick, happens-before the
//! take — a `has_changes` gate that is a relaxed load cannot miss it. **No ordering
//! rests on the IPI**: the notification only wakes a hart from `wfi`; what it must see
//! is published by the atomics above.
//!
//! **Migration.** The producer reads `home` after its kick. If it read the old home,
//! its kick precedes (SeqCst total order) the `home` store, which precedes the new
//! home's first read of `home` naming itself, which precedes that hart's `runnable`
//! check: the new home sees `KICKED`. The old home ignores the stray notification (the
//! vCPU is no longer its). The migrating hart notifies the new home after the store,
//! so a new home asleep in `wfi` wakes and looks.
//!
//! **A lowered level needs no kick** (`PendingSet::lower`): the vCPU drops it at its
//! next entry; a spurious interrupt meanwhile is allowed.
//!
//! The home hart's own sleep (`wfi` with no runnable vCPU) must re-check
//! [`VcpuBlock::runnable`] after it cleared its notification latch (the RISC-V
//! `sip.SSIP`) and before `wfi`: a notification after the check then leaves the latch
//! set and `wfi` returns.

use crate::sync::{AtomicUsize, Ordering};

// A whole word, not a byte: RISC-V (and others) have word AMOs; a byte RMW is an
// LR/SC loop with masking.
const BLOCKED: usize = 1;
const KICKED: usize = 2;

/// What the home hart does after [`VcpuBlock::block`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum BlockOutcome {
    /// The vCPU sleeps until a kick (or [`VcpuBlock::unblock`]).
    Blocked,
    /// A kick arrived since the last [`VcpuBlock::take_kick`]: run again (and take it).
    StayRunnable,
}

/// One vCPU's blocking state and home hart (see the module docs).
///
/// **Guarantees:** a vCPU never sleeps through a kick: [`Self::block`] and
/// [`Self::kick`] are RMWs of one word, so either `block` sees the kick or the kick
/// makes the vCPU runnable again and names its home hart — also across a migration.
/// **The caller must:** call [`Self::take_kick`], [`Self::block`], [`Self::unblock`]
/// and [`Self::migrate`] only on the vCPU's home hart; consume the kick before taking
/// the pending changes; notify (IPI) the hart that [`Self::kick`] returns; re-check
/// [`Self::runnable`] after clearing its own wake-up latch and before sleeping.
///
/// # Example
///
/// ```
/// use virq_core::block::{BlockOutcome, VcpuBlock};
///
/// let vcpu = VcpuBlock::new(0);
/// // A producer kicked between the flush and the guest's WFI: the vCPU stays runnable.
/// assert_eq!(vcpu.kick(), 0, "notify hart 0");
/// assert_eq!(vcpu.block(), BlockOutcome::StayRunnable);
/// assert!(vcpu.take_kick(), "consumed before the next flush");
/// // Nothing new: the WFI blocks, and the next kick makes it runnable again.
/// assert_eq!(vcpu.block(), BlockOutcome::Blocked);
/// assert!(!vcpu.runnable());
/// vcpu.migrate(1); // descheduled on hart 0, handed to hart 1
/// assert_eq!(vcpu.kick(), 1, "the kick reaches the new home");
/// assert!(vcpu.runnable());
/// ```
pub struct VcpuBlock {
    state: AtomicUsize,
    home: AtomicUsize,
}

impl VcpuBlock {
    /// A runnable vCPU with no kick outstanding, homed on hart `home`.
    pub fn new(home: usize) -> Self {
        Self {
            state: AtomicUsize::new(0),
            home: AtomicUsize::new(home),
        }
    }

    /// A producer raised something the vCPU must see (`PendingSet::raise` said so).
    /// Returns the hart to notify — the caller sends it an IPI unless it is the
    /// current hart, which re-evaluates before it enters any guest.
    #[must_use = "the returned home hart must be notified"]
    #[inline]
    pub fn kick(&self) -> usize {
        self.state.fetch_or(KICKED, Ordering::SeqCst);
        self.home.load(Ordering::SeqCst)
    }

    /// Home hart, right before taking the pending changes (the HVIP flush): consume the
    /// kick. Returns whether there was one.
    pub fn take_kick(&self) -> bool {
        self.state.fetch_and(!KICKED, Ordering::SeqCst) & KICKED != 0
    }

    /// Home hart, the guest waits for an interrupt: sleep unless a kick arrived since
    /// the last [`Self::take_kick`].
    pub fn block(&self) -> BlockOutcome {
        if self.state.fetch_or(BLOCKED, Ordering::SeqCst) & KICKED != 0 {
            self.state.fetch_and(!BLOCKED, Ordering::SeqCst);
            return BlockOutcome::StayRunnable;
        }
        BlockOutcome::Blocked
    }

    /// Home hart: stop waiting (timer expiry, a doorbell that refused to block, HSM
    /// stop or start).
    pub fn unblock(&self) {
        self.state.fetch_and(!BLOCKED, Ordering::SeqCst);
    }

    /// Not waiting, or kicked since it started waiting.
    pub fn runnable(&self) -> bool {
        let s = self.state.fetch_or(0, Ordering::SeqCst);
        s & BLOCKED == 0 || s & KICKED != 0
    }

    /// Whether a kick is outstanding (given and not yet consumed by
    /// [`Self::take_kick`]). A hint for the home hart's fast path, one relaxed load: a
    /// kick made on the same thread is always seen (program order); one from another
    /// thread may be missed, and then it is that kicker's notification of the home
    /// hart (the IPI it sends after its kick) that brings the vCPU back to
    /// [`Self::take_kick`] — never skip `take_kick` on this hint alone unless such a
    /// notification is certain to interrupt the vCPU. The authoritative read is
    /// [`Self::take_kick`].
    #[inline]
    pub fn kick_pending(&self) -> bool {
        self.state.load(Ordering::Relaxed) & KICKED != 0
    }

    /// Waiting and not kicked.
    pub fn is_blocked(&self) -> bool {
        !self.runnable()
    }

    /// The hart that runs the vCPU.
    pub fn home(&self) -> usize {
        self.home.load(Ordering::SeqCst)
    }

    /// Old home hart, with the vCPU descheduled: hand it to hart `to`. The caller
    /// notifies `to` afterwards.
    pub fn migrate(&self, to: usize) {
        self.home.store(to, Ordering::SeqCst);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::pending::PendingSet;

    #[test]
    fn kick_pending_shows_a_kick_until_it_is_taken() {
        let b = VcpuBlock::new(0);
        assert!(!b.kick_pending());
        let _ = b.kick();
        assert!(b.kick_pending(), "a kick on this thread is seen");
        assert_eq!(b.block(), BlockOutcome::StayRunnable);
        assert!(b.kick_pending(), "block does not consume the kick");
        assert!(b.take_kick());
        assert!(!b.kick_pending());
    }

    #[test]
    fn kick_before_block_keeps_the_vcpu_runnable() {
        let b = VcpuBlock::new(3);
        assert_eq!(b.kick(), 3);
        assert_eq!(b.block(), BlockOutcome::StayRunnable);
        assert!(b.runnable());
        assert!(b.take_kick());
        assert!(!b.take_kick(), "one kick is consumed once");
        assert_eq!(b.block(), BlockOutcome::Blocked);
        assert!(b.is_blocked());
    }

    #[test]
    fn kick_after_block_makes_it_runnable_until_taken() {
        let b = VcpuBlock::new(0);
        assert_eq!(b.block(), BlockOutcome::Blocked);
        assert!(!b.runnable());
        let _ = b.kick();
        assert!(b.runnable());
        b.unblock();
        assert!(b.take_kick());
        assert!(b.runnable());
    }

    #[test]
    fn unblock_without_kick() {
        let b = VcpuBlock::new(0);
        assert_eq!(b.block(), BlockOutcome::Blocked);
        b.unblock();
        assert!(b.runnable());
        assert!(!b.take_kick());
    }

    #[test]
    fn migrate_moves_the_kick_target() {
        let b = VcpuBlock::new(0);
        b.migrate(1);
        assert_eq!(b.home(), 1);
        assert_eq!(b.kick(), 1);
    }

    /// The home hart's loop as hyp runs it: take the kick, take the changes (gated on
    /// `has_changes`), block on WFI. A raise after the take is never slept on.
    #[test]
    fn raise_between_take_and_block_is_not_slept_on() {
        let b = VcpuBlock::new(0);
        let p = PendingSet::<1>::new();
        assert!(!b.take_kick());
        assert!(!p.has_changes());
        if p.raise(10).unwrap() {
            let _ = b.kick();
        }
        assert_eq!(b.block(), BlockOutcome::StayRunnable);
        assert!(b.take_kick());
        assert!(p.has_changes());
        assert_ne!(p.take_changes().changed[0] & (1 << 10), 0);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::pending::PendingSet;
    use crate::sync::AtomicBool;
    use loom::sync::Arc;
    use loom::thread;

    /// The consumer side as hyp runs it on the home hart: take the kick, take the
    /// changes gated on `has_changes` (a relaxed load, as `HvipSync::flush` does), and
    /// return whether id 10 was seen.
    fn flush(b: &VcpuBlock, p: &PendingSet<1>) -> bool {
        b.take_kick();
        p.has_changes() && p.take_changes().level[0] & (1 << 10) != 0
    }

    /// A producer's raise + kick racing the home hart's flush → WFI → block: the vCPU
    /// either saw the interrupt, or did not sleep, or was made runnable by the kick and
    /// its home notified — after which its next flush sees the interrupt.
    #[test]
    fn loom_block_kick_races_wfi() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let b = Arc::new(VcpuBlock::new(0));
            let p = Arc::new(PendingSet::<1>::new());
            let (b2, p2) = (b.clone(), p.clone());
            let producer = thread::spawn(move || {
                if p2.raise(10).unwrap() {
                    Some(b2.kick())
                } else {
                    None
                }
            });
            let mut seen = flush(&b, &p);
            let mut slept = false;
            // At most two rounds: flush, WFI, and once more if block refused.
            for _ in 0..2 {
                if seen {
                    break;
                }
                match b.block() {
                    BlockOutcome::Blocked => {
                        slept = true;
                        break;
                    }
                    BlockOutcome::StayRunnable => seen = flush(&b, &p),
                }
            }
            let notified = producer.join().unwrap();
            assert_eq!(notified, Some(0), "the first raise always kicks");
            if slept && !seen {
                // The kick must have made it runnable again; the home hart (notified)
                // runs it and flushes.
                assert!(b.runnable(), "lost wake-up: asleep with id 10 unseen");
                b.unblock();
                assert!(flush(&b, &p), "the flush after the kick sees the raise");
            }
        });
    }

    /// A kick racing a migration of the blocked vCPU from hart 0 to hart 1, while hart
    /// 1's scheduler looks for work. Harts sleep in `wfi` with a notification latch
    /// (`sip.SSIP`): a hart that found nothing sleeps unless a notification came after
    /// it cleared the latch. The raise is never stranded: hart 1 ran the vCPU and saw
    /// it, or hart 1's latch is set.
    #[test]
    fn loom_block_kick_races_migration() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let b = Arc::new(VcpuBlock::new(0));
            let p = Arc::new(PendingSet::<1>::new());
            let latch1 = Arc::new(AtomicBool::new(false));
            assert_eq!(b.block(), BlockOutcome::Blocked);
            let (bp, pp, lp) = (b.clone(), p.clone(), latch1.clone());
            let producer = thread::spawn(move || {
                if pp.raise(10).unwrap() && bp.kick() == 1 {
                    lp.swap(true, Ordering::SeqCst);
                }
            });
            let (bm, lm) = (b.clone(), latch1.clone());
            let migrator = thread::spawn(move || {
                bm.migrate(1);
                lm.swap(true, Ordering::SeqCst);
            });
            // Hart 1's scheduler: clear the latch, look for its runnable vCPUs.
            latch1.swap(false, Ordering::SeqCst);
            let mut seen = false;
            if b.home() == 1 && b.runnable() {
                b.unblock();
                seen = flush(&b, &p);
            }
            producer.join().unwrap();
            migrator.join().unwrap();
            if !seen {
                // Hart 1 goes to `wfi`: it must wake to find the vCPU runnable.
                assert!(
                    latch1.swap(false, Ordering::SeqCst),
                    "hart 1 sleeps although its vCPU was kicked"
                );
                assert!(b.runnable(), "the kick survives the migration");
                b.unblock();
                assert!(flush(&b, &p));
            }
        });
    }
}
