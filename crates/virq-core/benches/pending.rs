//! raise + take-changes: the lockless pending set against a `Mutex<bitmap>` baseline,
//! uncontended and with 2 producer threads, measured in the same run.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use virq_core::pending::VcpuPending;

/// The baseline: what a hypervisor writes first — one lock around pending + changed.
#[derive(Default)]
struct LockedBitmap {
    inner: Mutex<(u64, u64)>,
}

impl LockedBitmap {
    fn raise(&self, irq: u32) -> bool {
        let mut g = self.inner.lock().unwrap();
        let kick = g.0 & (1 << irq) == 0 || g.1 & (1 << irq) == 0;
        g.0 |= 1 << irq;
        g.1 |= 1 << irq;
        kick
    }
    fn take(&self) -> (u64, u64) {
        let mut g = self.inner.lock().unwrap();
        let changed = std::mem::take(&mut g.1);
        (changed, g.0 & changed)
    }
}

trait Set: Send + Sync + 'static {
    fn raise(&self, irq: u32) -> bool;
    fn take(&self) -> u64;
}

impl Set for VcpuPending {
    fn raise(&self, irq: u32) -> bool {
        VcpuPending::raise(self, irq).unwrap()
    }
    fn take(&self) -> u64 {
        self.take_changes().changed[0] as u64
    }
}

impl Set for LockedBitmap {
    fn raise(&self, irq: u32) -> bool {
        LockedBitmap::raise(self, irq)
    }
    fn take(&self) -> u64 {
        LockedBitmap::take(self).0
    }
}

/// One raise then one take, on one thread.
fn uncontended<S: Set>(set: &S, iters: u64) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        black_box(set.raise((i % 3) as u32 * 4 + 2));
        black_box(set.take());
    }
    start.elapsed()
}

/// Two producer threads raise continuously; the consumer's raise + take pairs are timed.
fn contended<S: Set>(set: Arc<S>, iters: u64) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..2u32)
        .map(|p| {
            let (set, stop) = (set.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    black_box(set.raise(10 + p));
                }
            })
        })
        .collect();
    let elapsed = uncontended(&*set, iters);
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.join().unwrap();
    }
    elapsed
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("raise_take");
    g.bench_function("lockless/uncontended", |b| {
        let set = VcpuPending::new();
        b.iter_custom(|n| uncontended(&set, n))
    });
    g.bench_function("mutex/uncontended", |b| {
        let set = LockedBitmap::default();
        b.iter_custom(|n| uncontended(&set, n))
    });
    g.bench_function("lockless/2_producers", |b| {
        b.iter_custom(|n| contended(Arc::new(VcpuPending::new()), n))
    });
    g.bench_function("mutex/2_producers", |b| {
        b.iter_custom(|n| contended(Arc::new(LockedBitmap::default()), n))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
