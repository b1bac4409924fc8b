//! The vAPLIC-to-MSI path: a wire edge (or a `setipnum` write) on an enabled source in
//! MSI mode, forwarded into a software vIMSIC file.
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use virq_riscv::aplic::VAplic;
use virq_riscv::imsic::ImsicFileState;
use virq_riscv::msi::{GuestFileHw, VcpuImsic};
use virq_riscv::{MmioDevice, VcpuIrqSink};

struct Nop;
impl VcpuIrqSink for Nop {
    fn set_vseip(&self, _: u32, _: bool) {}
}
impl GuestFileHw for Nop {
    fn send_msi(&self, _: usize, _: u32, _: u32) {}
    fn save(&self, _: usize, _: u32) -> ImsicFileState {
        ImsicFileState::default()
    }
    fn restore(&self, _: usize, _: u32, _: &ImsicFileState) {}
}

fn msi_path(c: &mut Criterion) {
    let files: [_; 4] =
        std::array::from_fn(|h| VcpuImsic::new(h as u32, h as u32, 255, Nop, Nop).unwrap());
    let mut a: VAplic<_, Nop, 4> = VAplic::new(1023, 4, files, Nop).unwrap();
    a.write(0, 4, 1 << 8 | 1 << 2); // IE, MSI mode
    a.write(4 * 700, 4, 4); // source 700: Edge1
    a.write(0x3000 + 4 * 700, 4, 3 << 18 | 77);
    a.write(0x1edc, 4, 700);
    c.bench_function("aplic_edge_to_vimsic", |b| {
        b.iter(|| {
            a.set_input(black_box(700), true);
            a.set_input(700, false);
        });
    });
    c.bench_function("aplic_setipnum_to_vimsic", |b| {
        b.iter(|| a.write(0x2000, 4, black_box(700)));
    });
}

criterion_group!(benches, msi_path);
criterion_main!(benches);
