//! vPLIC claim cost against the number of sources: one claim + complete round trip with
//! the pending source at the highest id (the end of the word scan), and with every
//! source pending.
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use virq_riscv::plic::VPlic;
use virq_riscv::{MmioDevice, NoEoi, VcpuIrqSink};

struct Nop;
impl VcpuIrqSink for Nop {
    fn set_vseip(&self, _: u32, _: bool) {}
}

const CLAIM: u64 = 0x20_0004;

fn plic(n: u32) -> VPlic<Nop, NoEoi, 2> {
    let mut p = VPlic::new(n, &[Some(0), None], Nop, NoEoi).unwrap();
    for id in 1..=n {
        p.write(4 * u64::from(id), 4, u64::from(id % 7 + 1));
    }
    for k in 0..u64::from(n + 1).div_ceil(32) {
        p.write(0x2000 + 4 * k, 4, 0xffff_ffff);
    }
    p
}

fn claim(c: &mut Criterion) {
    let mut g = c.benchmark_group("vplic_claim_complete");
    for n in [32u32, 256, 1023] {
        g.bench_with_input(BenchmarkId::new("one_pending_last_id", n), &n, |b, &n| {
            let mut p = plic(n);
            p.set_input(n, true);
            b.iter(|| {
                let id = p.read(CLAIM, 4);
                p.write(CLAIM, 4, black_box(id));
                id
            });
        });
        g.bench_with_input(BenchmarkId::new("all_pending", n), &n, |b, &n| {
            let mut p = plic(n);
            for id in 1..=n {
                p.set_input(id, true);
            }
            b.iter(|| {
                let id = p.read(CLAIM, 4);
                p.write(CLAIM, 4, black_box(id));
                id
            });
        });
    }
    g.finish();
}

criterion_group!(benches, claim);
criterion_main!(benches);
