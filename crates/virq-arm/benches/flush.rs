//! One exit and re-entry of a vCPU on the vGICv3: `sync` then `flush` with the fake
//! list registers, the guest leaving what it was given pending (so every round takes the
//! registers back and chooses again, as hyp does on every exit).
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use virq_arm::gicv3::{affinity_of, new_inbox, EoiSink, Inbox, Kick, VGicV3};
use virq_arm::lr::FakeIch;
use virq_arm::regs::gicd;

struct NoKick;
impl Kick for NoKick {
    fn kick(&self, _vcpu: usize) {}
}
struct NoEoi;
impl EoiSink for NoEoi {
    fn guest_completed(&self, _intid: u32) {}
}

/// A GIC for 2 vCPUs, both groups enabled, `pending` edge SPIs of 32.. enabled, routed
/// to vCPU 1 and pending, their priorities not in INTID order.
fn setup<const SPIS: usize>(pending: u32) -> VGicV3<SPIS, 8> {
    let mut g = VGicV3::<SPIS, 8>::new(2).unwrap();
    let w = |g: &mut VGicV3<SPIS, 8>, off: u32, size: u8, v: u64| {
        g.dist_access(u64::from(off), size, Some(v), &NoKick);
    };
    w(&mut g, gicd::CTLR, 4, 3);
    for id in 32..32 + pending {
        let (word, bit) = (4 * (id / 32), 1u64 << (id % 32));
        w(&mut g, gicd::IGROUPR + word, 4, bit);
        w(&mut g, gicd::ISENABLER + word, 4, bit);
        w(
            &mut g,
            gicd::IPRIORITYR + id,
            1,
            0xa0 - 0x10 * u64::from(id % 3),
        );
        w(&mut g, gicd::IROUTER + 8 * id, 8, affinity_of(1));
        let cfg = gicd::ICFGR + 4 * (id / 16);
        let v = g.dist_access(u64::from(cfg), 4, None, &NoKick) | 2 << (2 * (id % 16));
        w(&mut g, cfg, 4, v);
        g.pulse(1, id, &NoKick);
    }
    g
}

fn round<const SPIS: usize>(g: &mut VGicV3<SPIS, 8>, inbox: &Inbox, ich: &mut FakeIch) {
    g.sync(1, ich, &NoEoi);
    g.flush(1, inbox, ich, &NoKick);
    black_box(ich.lrs[0]);
}

fn flush(c: &mut Criterion) {
    let inbox = new_inbox();
    let cases: [(&str, u32, usize); 4] = [
        ("vgic_sync_flush_64spis_4lrs_3pending", 3, 4),
        ("vgic_sync_flush_64spis_4lrs_0pending", 0, 4),
        ("vgic_sync_flush_64spis_4lrs_8pending", 8, 4),
        ("vgic_sync_flush_64spis_16lrs_8pending", 8, 16),
    ];
    for (name, pending, lrs) in cases {
        let mut g = setup::<64>(pending);
        let mut ich = FakeIch::new(lrs);
        c.bench_function(name, |b| b.iter(|| round(&mut g, &inbox, &mut ich)));
    }
    let mut g = setup::<960>(3);
    let mut ich = FakeIch::new(4);
    c.bench_function("vgic_sync_flush_960spis_4lrs_3pending", |b| {
        b.iter(|| round(&mut g, &inbox, &mut ich))
    });
}

criterion_group!(benches, flush);
criterion_main!(benches);
