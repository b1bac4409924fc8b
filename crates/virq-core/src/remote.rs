//! Requests one hart serves for another (a remote TLB fence), with requesters that
//! *sleep* until served instead of spinning.
//!
//! Seed: none of the five threads; found in hyp (issue 12). A requester that spins on
//! "served?" starves the hart it waits for whenever both share a CPU — QEMU's
//! single-threaded TCG runs one hart until a timer deadline, a nested host deschedules
//! vCPUs — so a spinning remote fence cost 5–50 ms there. Sleeping needs a wake-up that
//! cannot be lost, which is this module's protocol.
//!
//! # Protocol
//!
//! Per serving hart a [`ServeCounter`]: `req` (tickets handed out) and `done` (the last
//! ticket served); machine-wide one [`Sleepers`] mask (bit = a requesting hart asleep,
//! or about to be). Each hart has a *latch* the notification sets (on RISC-V `sip.SSIP`
//! or an IMSIC identity's pending bit) and that `wfi` does not clear.
//!
//! | who | steps |
//! |---|---|
//! | requester | `t = request()`, notify the server; then until `is_served(t)`: [`ServeCounter::prepare_sleep`] — clear its latch, `announce(me)`, `is_served(t)` again — and only if still not served sleep until the latch; `withdraw(me)` |
//! | server | [`ServeCounter::serve`]: if `done != req`, flush, then `done := req`, then notify every hart in `waiting()` |
//!
//! **No lost wake-up.** The requester's announce and the server's `done` store come
//! first on their sides, the reads second, all SeqCst (store-buffering, Dekker): either
//! the requester's second look sees `done ≥ t` and does not sleep, or the server's
//! `waiting()` sees the requester's bit and notifies it — after the requester cleared
//! its latch, so the notification stays set and the sleep ends at once. The latch is
//! cleared *before* announcing: a notification between the clear and the sleep is kept.
//!
//! Every access but the server's own look at `done` is an RMW (`fetch_add(0)`,
//! `fetch_or(0)`, `fetch_max`): loom approximates a SeqCst load as an acquire load
//! (tokio-rs/loom#180) and would report a false lost wake-up; an RMW reads the newest
//! value in both models. (Loom 0.7 also lets an RMW read a value older than a plain
//! store it is ordered after — seen here: `done` written with `store` and read with
//! `fetch_add(0)` lost the store — so the writer of `done` uses `fetch_max`.) Loom's model (below) therefore checks the
//! *order* of the steps; `cargo xtask loom-mutants` breaks the order on either side and
//! the model fails. (An RMW read always sees the newest value under loom, so weakening
//! the `done` store alone is not a mutation loom can show — the SeqCst on it is the
//! C++ model's requirement, written down here.)
use crate::sync::{AtomicU64, Ordering};

/// Tickets of requests to one serving hart (see the [module docs](self)).
pub struct ServeCounter {
    req: AtomicU64,
    done: AtomicU64,
}

impl ServeCounter {
    /// Nothing requested, nothing served.
    pub fn new() -> Self {
        Self {
            req: AtomicU64::new(0),
            done: AtomicU64::new(0),
        }
    }

    /// Ask for one more serving; returns the ticket to wait for. The caller notifies
    /// the serving hart.
    pub fn request(&self) -> u64 {
        self.req.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Has the request with `ticket` been served?
    pub fn is_served(&self, ticket: u64) -> bool {
        self.done.fetch_add(0, Ordering::SeqCst) >= ticket
    }

    /// **Serving hart `me` only.** If a request is outstanding, run `flush`, mark every
    /// ticket handed out before it as served, then `notify` each other hart in
    /// `sleepers`. Returns whether it served.
    pub fn serve(
        &self,
        sleepers: &Sleepers,
        me: usize,
        flush: impl FnOnce(),
        mut notify: impl FnMut(usize),
    ) -> bool {
        let req = self.req.load(Ordering::Acquire);
        if self.done.load(Ordering::Relaxed) == req {
            return false;
        }
        flush();
        // An RMW, like every other access of `done` but the server's own look above.
        self.done.fetch_max(req, Ordering::SeqCst);
        let waiting = sleepers.waiting() & !(1 << (me % 64));
        for i in (0..64).filter(|i| waiting & (1 << i) != 0) {
            notify(i);
        }
        true
    }

    /// **Requester `me`**, not yet served: the steps before sleeping. `clear_latch`
    /// consumes its pending notification; then `me` is announced in `sleepers` and the
    /// ticket looked at again. Returns whether `me` may sleep now (until its latch is
    /// set); either way the caller calls [`Sleepers::withdraw`] after, and loops until
    /// [`Self::is_served`].
    pub fn prepare_sleep(
        &self,
        ticket: u64,
        sleepers: &Sleepers,
        me: usize,
        clear_latch: impl FnOnce(),
    ) -> bool {
        if self.is_served(ticket) {
            return false;
        }
        clear_latch();
        sleepers.announce(me);
        !self.is_served(ticket)
    }
}

impl Default for ServeCounter {
    fn default() -> Self {
        Self::new()
    }
}

/// The harts asleep (or about to sleep) waiting for a serving (bit = hart index, up to
/// 64).
pub struct Sleepers(AtomicU64);

impl Sleepers {
    /// Nobody asleep.
    pub fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Hart `me` is going to sleep (after clearing its latch, before its last look).
    pub fn announce(&self, me: usize) {
        self.0.fetch_or(1 << (me % 64), Ordering::SeqCst);
    }

    /// Hart `me` is awake again.
    pub fn withdraw(&self, me: usize) {
        self.0.fetch_and(!(1 << (me % 64)), Ordering::SeqCst);
    }

    /// The harts a server that just served must notify.
    pub fn waiting(&self) -> u64 {
        self.0.fetch_or(0, Ordering::SeqCst)
    }
}

impl Default for Sleepers {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_is_served_by_the_next_serving() {
        let c = ServeCounter::new();
        let s = Sleepers::new();
        assert!(!c.serve(&s, 0, || panic!("nothing requested"), |_| {}));
        let (a, b) = (c.request(), c.request());
        assert!(!c.is_served(a));
        assert!(c.prepare_sleep(a, &s, 2, || {}));
        let (mut flushes, mut woken) = (0, 0u64);
        assert!(c.serve(&s, 0, || flushes += 1, |i| woken |= 1 << i));
        assert!(c.is_served(a) && c.is_served(b));
        assert_eq!(
            flushes, 1,
            "one flush serves every ticket handed out before it"
        );
        assert_eq!(woken, 1 << 2, "the announced requester is notified");
        s.withdraw(2);
        assert!(!c.prepare_sleep(a, &s, 2, || panic!("served: no latch to clear")));
        assert!(!c.serve(&s, 0, || panic!("already served"), |_| {}));
    }

    #[test]
    fn sleepers_mask() {
        let s = Sleepers::new();
        s.announce(3);
        s.announce(0);
        assert_eq!(s.waiting(), 0b1001);
        s.withdraw(3);
        assert_eq!(s.waiting(), 0b1);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::AtomicBool;
    use loom::sync::Arc;
    use loom::thread;

    /// A requester (hart 1) racing the serving hart: if the requester decides to
    /// sleep, the server must have set its latch. The server only starts serving once
    /// the request exists (in hyp, the request's IPI is what makes it look).
    #[test]
    fn loom_remote_request_never_sleeps_unnotified() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let c = Arc::new(ServeCounter::new());
            let s = Arc::new(Sleepers::new());
            let latch = Arc::new(AtomicBool::new(false));
            let ticket = c.request();
            let (c2, s2, l2) = (c.clone(), s.clone(), latch.clone());
            let server = thread::spawn(move || {
                c2.serve(
                    &s2,
                    0,
                    || {},
                    |i| {
                        if i == 1 {
                            l2.store(true, Ordering::SeqCst);
                        }
                    },
                );
            });
            // The requester's wait loop, one round.
            let sleeps = c.prepare_sleep(ticket, &s, 1, || latch.store(false, Ordering::SeqCst));
            server.join().unwrap();
            assert!(
                !sleeps || latch.load(Ordering::SeqCst),
                "the requester sleeps and nobody will wake it"
            );
            assert!(c.is_served(ticket));
        });
    }
}
