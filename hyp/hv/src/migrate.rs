//! The `migrate_ms=N` test knob, shared by both schedulers (riscv64 `sched`, aarch64
//! `arm::sched`): where a vCPU belongs in each period is [`Periods`]
//! (`hyp_config::migrate`, host-tested there).
//!
//! What moves with the vCPU is each scheduler's business (its doc's "Migration"); the
//! hand-over is always made by the old home, with the vCPU descheduled, and counted in
//! [`MIGRATIONS`] (printed as `ACCT migrations=`).
use core::sync::atomic::{AtomicU64, Ordering};

pub use hyp_config::migrate::Periods;

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
