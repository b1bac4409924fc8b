//! The `migrate_ms=N` test knob, shared by both schedulers (riscv64 `sched`, aarch64
//! `arm::sched`): time is cut into periods of N ms, and in period `e` a vCPU first
//! placed on CPU (hart) `f` belongs on `(f + e) % n`, `n` the CPUs that run vCPUs.
//!
//! The place is a function of the period, not `home + 1`: CPUs cross a period boundary
//! at different times, and one acting late (after the next boundary) would otherwise
//! move on both its own vCPU and the one it was just handed, and the two would then
//! rotate together on one CPU for good. A late CPU sends each vCPU straight to its
//! place, and the placement stays a permutation.
//!
//! What moves with the vCPU is each scheduler's business (its doc's "Migration"); the
//! hand-over is always made by the old home, with the vCPU descheduled, and counted in
//! [`MIGRATIONS`] (printed as `ACCT migrations=`).
use core::sync::atomic::{AtomicU64, Ordering};

/// vCPU migrations made.
pub static MIGRATIONS: AtomicU64 = AtomicU64::new(0);

/// Count one migration.
pub fn count() {
    MIGRATIONS.fetch_add(1, Ordering::Relaxed);
}

/// Migrations made so far.
pub fn migrations() -> u64 {
    MIGRATIONS.load(Ordering::Relaxed)
}

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
