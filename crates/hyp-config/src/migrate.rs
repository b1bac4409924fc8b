//! What `hyp.migrate_ms = N` means (the test knob that makes vCPUs migrate, shared by
//! hyp's two schedulers): time is cut into periods of N ms, and in period `e` a vCPU
//! first placed on CPU (hart) `f` belongs on `(f + e) % n`, `n` the CPUs that run
//! vCPUs.
//!
//! The place is a function of the period, not `home + 1`: CPUs cross a period boundary
//! at different times, and one acting late (after the next boundary) would otherwise
//! move on both its own vCPU and the one it was just handed, and the two would then
//! rotate together on one CPU for good. A late CPU sends each vCPU straight to its
//! place, and the placement stays a permutation (tested below).

/// The migration periods of `migrate_ms` at a counter of `freq` Hz, over `cpus` CPUs.
#[derive(Clone, Copy, Debug)]
pub struct Periods {
    /// Period length in counter ticks (0: no migration).
    ticks: u64,
    cpus: usize,
}

impl Periods {
    /// Periods of `ms` milliseconds (0: none) of a `freq` Hz counter, over `cpus` CPUs
    /// (one CPU: none).
    pub fn new(ms: u32, freq: u64, cpus: usize) -> Self {
        let ticks = if cpus > 1 {
            u64::from(ms) * freq / 1000
        } else {
            0
        };
        Periods { ticks, cpus }
    }

    /// Whether vCPUs migrate at all.
    pub fn on(&self) -> bool {
        self.ticks != 0
    }

    /// The period at counter value `now` (`None`: no migration).
    pub fn epoch(&self, now: u64) -> Option<u64> {
        (self.ticks != 0).then(|| now / self.ticks)
    }

    /// Where a vCPU first placed on `first` belongs at `now` (`None`: no migration).
    pub fn place(&self, first: usize, now: u64) -> Option<usize> {
        let e = self.epoch(now)?;
        Some(((first as u64 + e) % self.cpus as u64) as usize)
    }

    /// The start of the next period after `now` (`u64::MAX`: none).
    pub fn next(&self, now: u64) -> u64 {
        match self.epoch(now) {
            Some(e) => (e + 1).saturating_mul(self.ticks),
            None => u64::MAX,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn no_periods_without_a_period_or_a_second_cpu() {
        for p in [
            Periods::new(0, 10_000_000, 4),
            Periods::new(20, 10_000_000, 1),
        ] {
            assert!(!p.on());
            assert_eq!(
                (p.epoch(5), p.place(0, 5), p.next(5)),
                (None, None, u64::MAX)
            );
        }
    }

    #[test]
    fn twenty_ms_of_a_10_mhz_counter() {
        let p = Periods::new(20, 10_000_000, 2);
        assert!(p.on());
        assert_eq!(p.epoch(199_999), Some(0));
        assert_eq!(p.epoch(200_000), Some(1));
        assert_eq!(
            (p.place(0, 0), p.place(0, 200_000), p.place(1, 200_000)),
            (Some(0), Some(1), Some(0))
        );
        assert_eq!(p.next(0), 200_000);
        assert_eq!(p.next(200_000), 400_000);
    }

    proptest! {
        /// In every period the vCPUs first placed on CPUs 0..n sit on n different CPUs
        /// (two vCPUs never end up rotating together), and each moves on by one CPU
        /// from one period to the next.
        #[test]
        fn every_period_is_a_permutation(ms in 1u32..1000, freq in 1_000u64..2_000_000_000, cpus in 2usize..16, now in any::<u64>()) {
            let p = Periods::new(ms, freq, cpus);
            prop_assume!(p.on());
            let mut seen = alloc::vec![false; cpus];
            for f in 0..cpus {
                let c = p.place(f, now).unwrap();
                prop_assert!(c < cpus);
                prop_assert!(!seen[c]);
                seen[c] = true;
                if let Some(later) = now.checked_add(p.ticks) {
                    prop_assert_eq!(p.place(f, later), Some((c + 1) % cpus));
                }
            }
        }

        /// `next` is the first counter value of the next period: after `now`, and in a
        /// period one later than `now`'s.
        #[test]
        fn next_starts_the_next_period(ms in 1u32..1000, freq in 1_000u64..2_000_000_000, cpus in 2usize..16, now in 0u64..(1 << 60)) {
            let p = Periods::new(ms, freq, cpus);
            prop_assume!(p.on());
            let n = p.next(now);
            prop_assert!(n > now);
            prop_assert_eq!(p.epoch(n), p.epoch(now).map(|e| e + 1));
            prop_assert_eq!(p.epoch(n - 1), p.epoch(now));
        }
    }
}
