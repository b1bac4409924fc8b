//! HVIP flush (before guest entry) and sync (after exit) with the fake CSRs.
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use virq_core::pending::{PendingSet, VcpuPending};
use virq_riscv::hext::fake::FakeCsrs;
use virq_riscv::hext::HvipSync;

fn hvip(c: &mut Criterion) {
    let p: VcpuPending = PendingSet::with_handoff(&[2]).unwrap();
    let csrs = FakeCsrs::new(0);
    let mut h = HvipSync::new();
    c.bench_function("hvip_flush_sync_nothing_changed", |b| {
        b.iter(|| {
            black_box(h.flush(&p, &csrs));
            h.sync(&csrs);
        });
    });
    let mut on = false;
    c.bench_function("hvip_flush_sync_vseip_toggles", |b| {
        b.iter(|| {
            on = !on;
            if on {
                p.raise(10).unwrap();
            } else {
                p.lower(10).unwrap();
            }
            black_box(h.flush(&p, &csrs));
            h.sync(&csrs);
        });
    });
}

criterion_group!(benches, hvip);
criterion_main!(benches);
