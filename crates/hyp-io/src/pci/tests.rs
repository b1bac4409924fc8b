//! The configuration-space logic against a model of a function: registers in an
//! array, BARs that keep only the address bits their size allows.
use super::*;
use alloc::vec;

/// A function: 1024 registers; `bar_masks[i]` are the writable bits of BAR `i` (the
/// low flag bits are read-only, as in hardware); `writes` counts BAR writes made while
/// memory decode was on (the probe must never do that).
struct Model {
    regs: Vec<u32>,
    bar_masks: [u32; 6],
    writes_while_decoding: usize,
}

impl Model {
    fn new(vendor: u16, device: u16) -> Model {
        let mut regs = vec![0u32; 1024];
        regs[0] = (device as u32) << 16 | vendor as u32;
        Model {
            regs,
            bar_masks: [0; 6],
            writes_while_decoding: 0,
        }
    }

    /// A 32-bit memory BAR of `size` bytes at slot `i` holding `base`.
    fn mem32(mut self, i: usize, size: u32, base: u32, pref: bool) -> Model {
        self.bar_masks[i] = !(size - 1);
        self.regs[4 + i] = base | if pref { 8 } else { 0 };
        self
    }

    /// A 64-bit memory BAR of `size` bytes at slots `i`, `i + 1`.
    fn mem64(mut self, i: usize, size: u64, base: u64) -> Model {
        let mask = !(size - 1);
        self.bar_masks[i] = mask as u32 & !0xf;
        self.bar_masks[i + 1] = (mask >> 32) as u32;
        self.regs[4 + i] = base as u32 | 0b100;
        self.regs[5 + i] = (base >> 32) as u32;
        self
    }

    fn io(mut self, i: usize, size: u32) -> Model {
        self.bar_masks[i] = !(size - 1) & 0xffff & !3;
        self.regs[4 + i] = 1;
        self
    }

    fn caps(mut self, list: &[(u8, u8, u8)]) -> Model {
        self.regs[1] |= (regs::STATUS_CAP_LIST as u32) << 16;
        if let Some(first) = list.first() {
            self.regs[(regs::CAP_PTR / 4) as usize] = first.1 as u32;
        }
        for &(id, off, next) in list {
            let r = &mut self.regs[off as usize / 4];
            *r = (*r & 0xffff_0000) | (next as u32) << 8 | id as u32;
        }
        self
    }
}

impl ConfigAccess for Model {
    fn read32(&self, off: u16) -> u32 {
        if off % 4 != 0 || off >= 4096 {
            return !0;
        }
        self.regs[off as usize / 4]
    }

    fn write32(&mut self, off: u16, v: u32) {
        let i = off as usize / 4;
        if (4..10).contains(&i) {
            if self.regs[1] & regs::CMD_MEMORY as u32 != 0 {
                self.writes_while_decoding += 1;
            }
            let m = self.bar_masks[i - 4];
            self.regs[i] = (v & m) | (self.regs[i] & !m);
        } else if i == 1 {
            self.regs[1] = (self.regs[1] & 0xffff_0000) | (v & 0xffff);
        } else if i < 1024 {
            self.regs[i] = v;
        }
    }
}

#[test]
fn ecam_offset_follows_pcie_7_2_2() {
    let b = Bdf::new(3, 0x1f, 7).unwrap();
    assert_eq!(b.ecam_offset(0), Some(3 << 20 | 0x1f << 15 | 7 << 12));
    assert_eq!(b.ecam_offset(2), Some(1 << 20 | 0x1f << 15 | 7 << 12));
    assert_eq!(b.ecam_offset(4), None);
    assert_eq!(Bdf::new(0, 32, 0), None);
    assert_eq!(Bdf::new(0, 0, 8), None);
}

#[test]
fn requester_id_round_trips() {
    for rid in [0u16, 8, 0x10, 0x0108, 0xffff] {
        assert_eq!(Bdf::from_rid(rid).rid(), rid);
    }
    assert_eq!(Bdf::new(0, 2, 0).unwrap().rid(), 0x10);
    assert_eq!(alloc::format!("{}", Bdf::from_rid(0x0111)), "01:02.1");
}

#[test]
fn absent_function_has_no_header() {
    let mut m = Model::new(0xffff, 0xffff);
    assert_eq!(FunctionHeader::read(&m), None);
    m.regs[0] = 0x11e8_1234;
    m.regs[2] = 0x00ff_0010;
    m.regs[3] = 0x0080_0000;
    let h = FunctionHeader::read(&m).unwrap();
    assert_eq!(
        (h.vendor, h.device, h.revision, h.class),
        (0x1234, 0x11e8, 0x10, 0x00ff00)
    );
    assert_eq!(
        (h.header_type, h.multi_function, h.bar_count()),
        (0, true, 6)
    );
    assert_eq!(h.class_name(), "unclassified");
}

#[test]
fn bar_probe_sizes_32_and_64_bit_memory_and_io() {
    let mut m = Model::new(0x8086, 0x10d3)
        .mem32(0, 0x2_0000, 0, false)
        .mem32(1, 0x2_0000, 0x4000_0000, true)
        .io(2, 0x20)
        .mem64(3, 0x4000, 0x4_0000_0000);
    m.regs[1] = regs::CMD_MEMORY as u32 | regs::CMD_BUS_MASTER as u32;
    let before = m.regs.clone();
    let (bars, errs) = probe_bars(&mut m, 6);
    assert!(errs.is_empty());
    assert_eq!(
        bars,
        vec![
            Bar {
                index: 0,
                kind: BarKind::Mem32 {
                    prefetchable: false
                },
                base: 0,
                size: 0x2_0000
            },
            Bar {
                index: 1,
                kind: BarKind::Mem32 { prefetchable: true },
                base: 0x4000_0000,
                size: 0x2_0000
            },
            Bar {
                index: 2,
                kind: BarKind::Io,
                base: 0,
                size: 0x20
            },
            Bar {
                index: 3,
                kind: BarKind::Mem64 {
                    prefetchable: false
                },
                base: 0x4_0000_0000,
                size: 0x4000
            },
        ]
    );
    // Every register is back as it was, and no BAR moved while memory decode was on.
    assert_eq!(m.regs, before);
    assert_eq!(m.writes_while_decoding, 0);
}

#[test]
fn unimplemented_bars_are_skipped() {
    let mut m = Model::new(0x1234, 0x11e8).mem32(0, 1 << 20, 0, false);
    let (bars, errs) = probe_bars(&mut m, 6);
    assert_eq!(bars.len(), 1);
    assert_eq!(bars[0].size, 1 << 20);
    assert!(errs.is_empty());
}

#[test]
fn broken_bars_are_reported_not_trusted() {
    // A 64-bit BAR in slot 5 has no upper half; a reserved type; a mask with a hole.
    let mut m = Model::new(0x1234, 0x1);
    m.regs[4 + 5] = 0b100;
    m.bar_masks[5] = 0xffff_fff0;
    m.regs[4] = 0b010;
    m.bar_masks[0] = 0xffff_fff0;
    m.bar_masks[1] = 0xfff0_f000;
    let (bars, errs) = probe_bars(&mut m, 6);
    assert!(bars.is_empty());
    assert_eq!(
        errs,
        vec![
            BarError::ReservedType(0),
            BarError::BadMask(1),
            BarError::Mem64InLastSlot(5)
        ]
    );
}

#[test]
fn bar_assignment_writes_both_halves() {
    let mut m = Model::new(0x1234, 0x1)
        .mem64(0, 0x1000, 0)
        .mem32(2, 0x1000, 0, false);
    let (bars, _) = probe_bars(&mut m, 6);
    assert!(assign_bar(&mut m, &bars[0], 0x4_0000_1000));
    assert!(!assign_bar(&mut m, &bars[1], 0x1_0000_0000));
    assert!(assign_bar(&mut m, &bars[1], 0x4000_0000));
    let (bars, _) = probe_bars(&mut m, 6);
    assert_eq!(bars[0].base, 0x4_0000_1000);
    assert_eq!(bars[1].base, 0x4000_0000);
}

#[test]
fn capability_walk_finds_msi_and_msix() {
    let mut m = Model::new(0x8086, 0x10d3).caps(&[
        (0x01, 0xc8, 0xd0),
        (0x05, 0xd0, 0xe0),
        (0x10, 0xe0, 0xa0),
        (0x11, 0xa0, 0),
    ]);
    // MSI: 64-bit, 4 vectors capable (MMC = 2), enabled.
    m.regs[0xd0 / 4] |= (1 << 7 | 2 << 1 | 1) << 16;
    // MSI-X: 5 entries, function-masked, table in BAR 3 at 0, PBA in BAR 3 at 0x2000.
    m.regs[0xa0 / 4] |= (4 | 1 << 14) << 16;
    m.regs[0xa4 / 4] = 3;
    m.regs[0xa8 / 4] = 0x2000 | 3;
    let (caps, err) = capabilities(&m);
    assert_eq!(err, None);
    let names: Vec<&str> = caps.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["pm", "msi", "pcie", "msix"]);
    let msi = Msi::read(&m, 0xd0);
    assert_eq!(
        (msi.vectors, msi.is_64bit, msi.per_vector_mask, msi.enabled),
        (4, true, false, true)
    );
    let x = Msix::read(&m, 0xa0);
    assert_eq!(
        (
            x.table_size,
            x.table_bir,
            x.table_offset,
            x.pba_bir,
            x.pba_offset
        ),
        (5, 3, 0, 3, 0x2000)
    );
    assert!(x.function_masked && !x.enabled);
    assert_eq!(x.table_bytes(), 80);
}

#[test]
fn capability_walk_survives_loops_and_header_pointers() {
    let m = Model::new(1, 1).caps(&[(0x05, 0x40, 0x50), (0x11, 0x50, 0x40)]);
    let (caps, err) = capabilities(&m);
    assert_eq!(caps.len(), 2);
    assert_eq!(err, Some(CapListError::Loop(0x40)));
    let m = Model::new(1, 1).caps(&[(0x05, 0x40, 0x10)]);
    assert_eq!(
        capabilities(&m).1,
        Some(CapListError::PointerIntoHeader(0x10))
    );
    // No Capabilities List bit: no walk at all.
    let mut m = Model::new(1, 1).caps(&[(0x05, 0x40, 0)]);
    m.regs[1] = 0;
    assert_eq!(capabilities(&m), (vec![], None));
}

#[test]
fn iommu_map_of_qemu_virt() {
    // `iommu-sys=on`: QEMU 10.0.2 writes a zero-length entry before the real one.
    let sys = parse_iommu_map(&[0, 0x8000, 0, 0, 0, 0x8000, 0, 0xffff]);
    assert_eq!(map_rid(&sys, 0x10, !0), Some((0x8000, 0x10)));
    assert_eq!(map_rid(&sys, 0, !0), Some((0x8000, 0)));
    assert_eq!(map_rid(&sys, 0xffff, !0), None);
    // `-device riscv-iommu-pci` at 00:01.0 (RID 8): every RID but its own.
    let pci = parse_iommu_map(&[0, 0x8000, 0, 8, 9, 0x8000, 9, 0xfff7]);
    assert_eq!(map_rid(&pci, 8, !0), None);
    assert_eq!(map_rid(&pci, 0x10, !0), Some((0x8000, 0x10)));
    assert_eq!(map_rid(&pci, 7, !0), Some((0x8000, 7)));
    // An offset map and a mask.
    let off = parse_iommu_map(&[0x100, 7, 0x2000, 0x100, 0x99]);
    assert_eq!(off.len(), 1);
    assert_eq!(map_rid(&off, 0x105, !0), Some((7, 0x2005)));
    assert_eq!(map_rid(&off, 0x105, 0xff), None);
}
