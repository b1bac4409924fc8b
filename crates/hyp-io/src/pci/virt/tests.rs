//! The filter against a model of virtio-net-pci's configuration space (QEMU 10.0.2,
//! modern only: BAR 1 mem32 4 KiB with the MSI-X table, BAR 4 mem64 prefetchable
//! 16 KiB, MSI-X at 0x98, vendor capabilities, plus an MSI capability for the test).
use super::*;
use crate::pci::{capabilities, probe_bars};
use alloc::vec;
use alloc::vec::Vec;

/// Registers in an array; BARs keep only their writable bits; every write is logged.
struct Device {
    regs: Vec<u32>,
    bar_masks: [u32; 6],
    writes: Vec<(u16, u32)>,
}

impl ConfigAccess for Device {
    fn read32(&self, off: u16) -> u32 {
        self.regs[off as usize / 4]
    }
    fn write32(&mut self, off: u16, v: u32) {
        self.writes.push((off, v));
        let i = off as usize / 4;
        if (4..10).contains(&i) {
            let m = self.bar_masks[i - 4];
            self.regs[i] = (v & m) | (self.regs[i] & !m);
        } else if i == 1 {
            // Status is read-only here.
            self.regs[1] = (self.regs[1] & 0xffff_0000) | (v & 0xffff);
        } else {
            self.regs[i] = v;
        }
    }
}

fn virtio_net() -> Device {
    let mut r = vec![0u32; 1024];
    r[0] = 0x1041_1af4;
    r[1] = 0x0010_0000; // status: capability list
    r[2] = 0x0200_0001;
    r[3] = 0x0080_0000; // multi-function bit set, to see it hidden
    r[0x2c / 4] = 0x1100_1af4;
    r[0x34 / 4] = 0x98;
    r[0x3c / 4] = 0x0000_0100; // pin A
                               // MSI-X at 0x98 -> MSI at 0x60 -> vendor at 0x80 -> end.
    r[0x98 / 4] = 0x0003_6011; // 4 entries, next 0x60
    r[0x9c / 4] = 0x0000_0001; // table: BAR 1 + 0
    r[0xa0 / 4] = 0x0000_0801; // PBA: BAR 1 + 0x800
    r[0x60 / 4] = 0x0180_8005; // MSI: 64-bit + per-vector mask, next 0x80
    r[0x80 / 4] = 0x0010_0009; // vendor, len 16, end
    r[0x100 / 4] = 0x0001_0001; // an extended capability the guest must not see
    r[4 + 1] = 0x4000_0000;
    r[4 + 4] = 0x4000_4000 | 0b1100;
    r[4 + 5] = 0;
    let mut bar_masks = [0; 6];
    bar_masks[1] = !(0x1000 - 1);
    bar_masks[4] = !(0x4000 - 1) & !0xf;
    bar_masks[5] = !0;
    Device {
        regs: r,
        bar_masks,
        writes: Vec::new(),
    }
}

fn view(d: &mut Device) -> VirtFunction {
    let (bars, errs) = probe_bars(d, 6);
    assert!(errs.is_empty());
    let (caps, err) = capabilities(d);
    assert!(err.is_none());
    d.writes.clear();
    VirtFunction::new(&bars, &caps, d)
}

#[test]
fn identity_and_capabilities_read_through_and_the_rest_is_hidden() {
    let mut d = virtio_net();
    let v = view(&mut d);
    assert_eq!(v.read(&d, 0, 4), 0x1041_1af4);
    assert_eq!(v.read(&d, 2, 2), 0x1041);
    assert_eq!(v.read(&d, 0x0b, 1), 0x02, "class byte");
    assert_eq!(
        v.read(&d, 0x0e, 1),
        0,
        "one function: no multi-function bit"
    );
    assert_eq!(v.read(&d, 0x2c, 4), 0x1100_1af4);
    assert_eq!(v.read(&d, 0x34, 1), 0x98);
    assert_eq!(v.read(&d, 0x98, 4), 0x0003_6011);
    assert_eq!(v.read(&d, 0x3d, 1), 0, "no INTx pin");
    assert_eq!(v.read(&d, 0x30, 4), 0, "no expansion ROM");
    assert_eq!(v.read(&d, 0x100, 4), 0, "no extended capabilities");
    assert_eq!(v.read(&d, 0x06, 2), 0x0010, "status from the device");
    for (off, size) in [(1, 2), (2, 4), (0, 3), (0x1000, 4)] {
        assert_eq!(v.read(&d, off, size), !0, "{off:#x}/{size}");
    }
}

#[test]
fn bars_are_virtual_and_answer_the_sizing_probe() {
    let mut d = virtio_net();
    let mut v = view(&mut d);
    assert_eq!(v.read(&d, 0x14, 4), 0x4000_0000);
    assert_eq!(v.read(&d, 0x20, 4), 0x4000_400c);
    assert_eq!(v.read(&d, 0x10, 4), 0, "BAR 0 is not implemented");
    // The probe: all ones, read the mask back, restore.
    assert!(matches!(
        v.write(&mut d, 0x14, 4, !0),
        Effect::BarMoved { index: 1, .. }
    ));
    assert_eq!(v.read(&d, 0x14, 4), 0xffff_f000);
    assert_eq!(
        v.write(&mut d, 0x20, 4, !0),
        Effect::BarMoved {
            index: 4,
            base: 0xffff_c000
        }
    );
    assert_eq!(v.read(&d, 0x20, 4), 0xffff_c00c);
    assert_eq!(
        v.write(&mut d, 0x24, 4, 0x1),
        Effect::BarMoved {
            index: 4,
            base: 0x1_ffff_c000
        },
        "the high half belongs to BAR 4"
    );
    v.write(&mut d, 0x20, 4, 0x4000_4000);
    v.write(&mut d, 0x24, 4, 0);
    assert_eq!(v.bar_base(4), Some(0x4000_4000));
    assert_eq!(v.write(&mut d, 0x10, 4, !0), Effect::Dropped);
    assert!(
        d.writes.iter().all(|(off, _)| !(0x10..0x28).contains(off)),
        "no BAR write reached the device: {:x?}",
        d.writes
    );
    assert_eq!(
        d.regs[5], 0x4000_0000,
        "the device's BAR 1 is where hyp put it"
    );
}

#[test]
fn command_passes_memory_and_bus_master_only_with_intx_disabled() {
    let mut d = virtio_net();
    let mut v = view(&mut d);
    v.write(&mut d, 0x04, 2, 0x0007);
    assert_eq!(v.read(&d, 0x04, 2), 0x0007, "the guest reads what it wrote");
    assert_eq!(
        d.writes,
        vec![(0x04, 0x0406)],
        "I/O off, INTx disabled on the device"
    );
    d.writes.clear();
    v.write(&mut d, 0x06, 2, 0xffff);
    assert!(
        d.writes.is_empty(),
        "status writes stay away from the device"
    );
    v.write(&mut d, 0x04, 1, 0x00);
    assert_eq!(d.writes, vec![(0x04, 0x0400)]);
}

#[test]
fn only_msi_and_msix_control_writes_reach_the_device() {
    let mut d = virtio_net();
    let mut v = view(&mut d);
    // MSI: control, address low/high, data, mask.
    for (off, size, val) in [
        (0x62, 2, 0x0181u32),
        (0x64, 4, 0x2800_0000),
        (0x68, 4, 0),
        (0x6c, 2, 42),
        (0x70, 4, 0),
    ] {
        assert_eq!(
            v.write(&mut d, off, size, val),
            Effect::None,
            "{off:#x} {:?}",
            v.msi
        );
    }
    assert_eq!(d.regs[0x64 / 4], 0x2800_0000);
    assert_eq!(d.regs[0x6c / 4] & 0xffff, 42);
    assert_eq!(
        d.regs[0x60 / 4] >> 16,
        0x0181,
        "MSI enable set by the guest's read-modify-write"
    );
    // MSI-X: Message Control only.
    v.write(&mut d, 0x9a, 2, 0xc003);
    assert_eq!(
        d.regs[0x98 / 4],
        0xc003_6011,
        "enable + function mask, ID/next kept"
    );
    // A dword write at the capability's start reaches Message Control only; one at the
    // data word reaches the data (and the reserved half after it, in the capability).
    d.writes.clear();
    v.write(&mut d, 0x60, 4, 0x0180_ffff);
    assert_eq!(
        d.regs[0x60 / 4],
        0x0180_8005,
        "ID and next pointer kept, control written"
    );
    assert_eq!(v.write(&mut d, 0x6c, 4, 0x0000_002a), Effect::None);
    assert_eq!(d.regs[0x6c / 4] & 0xffff, 42);
    let before = d.regs.clone();
    for (off, size) in [
        (0x98, 1),
        (0x9c, 4),
        (0xa0, 4),
        (0x80, 4),
        (0x60, 2),
        (0x100, 4),
        (0x30, 4),
    ] {
        assert_eq!(
            v.write(&mut d, off, size, 0xdead_beef),
            Effect::Dropped,
            "{off:#x}"
        );
    }
    assert_eq!(d.regs, before, "dropped writes changed nothing");
}
