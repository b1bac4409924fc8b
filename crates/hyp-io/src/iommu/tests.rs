//! Encodings checked against the spec's field layouts, bit by bit.
use super::*;

#[test]
fn spec_5_3_capabilities_fields() {
    let c = Capabilities(
        1 << 17 | 1 << 22 | 1 << 23 | 1 << 25 | 2 << 28 | 1 << 31 | 56 << 32 | 1 << 38 | 0x10,
    );
    assert_eq!(c.version(), (1, 0));
    assert!(c.sv39x4() && c.msi_flat() && c.msi_mrif() && c.ats() && c.dbg());
    assert!(!c.sv48x4() && !c.hpm() && !c.t2gpa());
    assert_eq!((c.igs(), c.pas()), (2, 56));
    assert_eq!(c.pd(), (true, false, false));
    let s = alloc::format!("{c}");
    assert!(
        s.contains("v1.0 Sv39x4 MSI_FLAT MSI_MRIF ATS DBG PD8 IGS=MSI+WSI PAS=56"),
        "{s}"
    );
    assert!(extended_format(c));
}

#[test]
fn spec_5_5_ddtp_encoding() {
    assert_eq!(ddtp(DdtMode::Off, 0x8000_0000), 0);
    assert_eq!(ddtp(DdtMode::Bare, 0x8000_0000), 1);
    assert_eq!(ddtp(DdtMode::TwoLevel, 0x8123_4000), 0x81234 << 10 | 3);
    assert_eq!(
        DdtMode::of(0x81234 << 10 | 3 | regs::DDTP_BUSY),
        Some(DdtMode::TwoLevel)
    );
    assert_eq!(DdtMode::of(7), None);
    assert_eq!(DdtMode::ThreeLevel.levels(), 3);
}

#[test]
fn spec_2_1_device_directory_index() {
    // Extended format: DDI[0] = bits 5:0, DDI[1] = 14:6, DDI[2] = 23:15.
    assert_eq!(ddi(0x10, 1, true), Some([0x10, 0, 0]));
    assert_eq!(ddi(0x40, 1, true), None);
    assert_eq!(ddi(0x0108, 2, true), Some([8, 4, 0]));
    assert_eq!(ddi(0x12_3456, 3, true), Some([0x16, 0xd1, 0x24]));
    assert_eq!(ddi(1 << 15, 2, true), None);
    // Base format: 6:0, 15:7, 23:16.
    assert_eq!(ddi(0x7f, 1, false), Some([0x7f, 0, 0]));
    assert_eq!(ddi(0xffff, 2, false), Some([0x7f, 0x1ff, 0]));
    assert_eq!(ddi(5, 0, true), None);
    assert_eq!(ddte(0x8765_4000), 0x87654 << 10 | 1);
}

#[test]
fn spec_5_6_queue_base_log2sz() {
    // 256 commands of 16 bytes: 4 KiB, LOG2SZ = 7.
    assert_eq!(
        queue_base(0x8100_0000, 256, COMMAND_BYTES),
        Some(0x81000 << 10 | 7)
    );
    // 128 fault records of 32 bytes.
    assert_eq!(
        queue_base(0x8100_1000, 128, FAULT_RECORD_BYTES),
        Some(0x81001 << 10 | 6)
    );
    // An 8 KiB queue must be 8 KiB aligned; sizes are powers of two, at least 2.
    assert_eq!(queue_base(0x8100_1000, 512, COMMAND_BYTES), None);
    assert_eq!(
        queue_base(0x8100_2000, 512, COMMAND_BYTES),
        Some(0x81002 << 10 | 8)
    );
    assert_eq!(queue_base(0x8100_0000, 100, COMMAND_BYTES), None);
    assert_eq!(queue_base(0x8100_0000, 1, COMMAND_BYTES), None);
    assert_eq!(queue_base(0x8100_0800, 2, COMMAND_BYTES), None);
}

#[test]
fn spec_3_1_2_iofence_c() {
    let c = Command::iofence_c(Some((0x8020_1234, 0xdead_beef)));
    assert_eq!(c.opcode(), (2, 0));
    assert_eq!(c.name(), "IOFENCE.C");
    assert_eq!(c.0[0] & (1 << 10), 1 << 10, "AV");
    assert_eq!(c.0[0] & (3 << 12), 3 << 12, "PR, PW");
    assert_eq!(c.0[0] & (1 << 11), 0, "no WSI");
    assert_eq!(c.0[0] >> 32, 0xdead_beef);
    assert_eq!(c.0[1] << 2, 0x8020_1234);
    let plain = Command::iofence_c(None);
    assert_eq!(plain.0, [2 | 3 << 12, 0]);
}

#[test]
fn spec_3_1_3_iodir_inval_ddt() {
    assert_eq!(Command::iodir_inval_ddt(None).0, [3, 0]);
    let c = Command::iodir_inval_ddt(Some(0x10));
    assert_eq!(c.opcode(), (3, 0));
    assert_eq!(c.0[0], 3 | 1 << 33 | 0x10 << 40);
    assert_eq!(c.name(), "IODIR.INVAL_DDT");
}

#[test]
fn spec_3_1_1_iotinval_gvma() {
    assert_eq!(Command::iotinval_gvma(None, None).0, [1 | 1 << 7, 0]);
    let c = Command::iotinval_gvma(Some(1), Some(0x8000_1234));
    assert_eq!(c.opcode(), (1, 1));
    assert_eq!(c.0[0], 1 | 1 << 7 | 1 << 10 | 1 << 33 | 1 << 44);
    assert_eq!(c.0[1] << 2, 0x8000_1000);
    assert_eq!(c.0[0] & (1 << 32), 0, "PSCV must be 0 for GVMA");
}

#[test]
fn spec_2_1_3_iohgatp_is_hgatp() {
    // hyp's Sv39x4 hgatp for VMID 1, root at 0x8030_4000.
    let hgatp = 8u64 << 60 | 1 << 44 | 0x80304;
    let io = Iohgatp::from_hgatp(hgatp).unwrap();
    assert_eq!(
        io,
        Iohgatp {
            mode: GStageMode::Sv39x4,
            gscid: 1,
            root: 0x8030_4000
        }
    );
    assert_eq!(io.encode(), Some(hgatp));
    let misaligned = Iohgatp {
        root: 0x8030_1000,
        ..io
    };
    assert_eq!(misaligned.encode(), None);
    assert_eq!(Iohgatp::from_hgatp(5 << 60), None);
    let caps = Capabilities(1 << 17);
    assert!(GStageMode::Sv39x4.supported(caps) && !GStageMode::Sv48x4.supported(caps));
}

#[test]
fn spec_2_1_device_context_words() {
    let dc = DeviceContext::second_stage(0x8000_1000_0008_0304);
    assert_eq!(dc.words(), [tc::V, 0x8000_1000_0008_0304, 0, 0, 0, 0, 0, 0]);
    assert_eq!(DeviceContext::INVALID.words(), [0; 8]);
}

#[test]
fn spec_3_2_fault_record_fields() {
    // What QEMU wrote for edu (00:01.0) writing to an unmapped guest-physical page.
    let hdr = 23 | 3 << 34 | 8 << 40 | 1 << 32;
    let r = FaultRecord::decode([hdr, 0, 0x8a00_0000, 0]);
    assert_eq!((r.cause, r.ttype, r.did, r.iotval), (23, 3, 8, 0x8a00_0000));
    assert!(r.pv && !r.privileged);
    assert_eq!(r.pid, 0);
    let s = alloc::format!("{r}");
    assert!(s.starts_with("cause=23 (write/AMO guest-page fault) ttype=3 (untranslated write/AMO) did=0x8 iotval=0x8a000000"), "{s}");
    let full = FaultRecord::decode([
        258 | 0xabcde << 12 | 1 << 33 | 2 << 34 | 0xff_ffff << 40,
        0,
        0,
        7,
    ]);
    assert_eq!(
        (full.cause, full.pid, full.privileged, full.ttype, full.did),
        (258, 0xabcde, true, 2, 0xff_ffff)
    );
    assert_eq!(cause_name(258), "DDT entry not valid");
    assert_eq!(cause_name(999), "reserved or custom");
    assert_eq!(ttype_name(4), "reserved");
}

#[test]
fn spec_2_1_3_6_msi_address_pattern_and_index() {
    // A guest's IMSIC pages at GPA 0x2800_0000, 8 files: mask 0b111, pattern 0x28000.
    let t = MsiTable::consecutive(0x8045_0000, 0x2800_0000, 5).unwrap();
    assert_eq!((t.mask, t.pattern), (0x7, 0x28000));
    assert_eq!(t.msiptp(), 1 << 60 | 0x80450);
    assert_eq!(t.index(0x2800_0000), Some(0));
    assert_eq!(t.index(0x2800_3004), Some(3));
    assert_eq!(t.index(0x2800_7000), Some(7));
    assert_eq!(t.index(0x2800_8000), None, "past the 8 pages");
    assert_eq!(t.index(0x2400_1000), None);
    assert_eq!(
        MsiTable::consecutive(0x8045_0000, 0x2800_1000, 2),
        None,
        "not aligned to 2 pages"
    );
    assert_eq!(MsiTable::consecutive(0x8045_0000, 0x2800_0000, 257), None);
    let sparse = MsiTable {
        base: 0,
        mask: 0b1010,
        pattern: 0,
    };
    assert_eq!(
        sparse.index(0b1000 << 12),
        Some(0b10),
        "extract packs the mask's bits"
    );
    let dc = DeviceContext::second_stage_with_msi(0x8000_1000_0008_0448, t);
    assert_eq!(dc.words()[4..7], [1 << 60 | 0x80450, 0x7, 0x28000]);
}

#[test]
fn spec_2_3_2_msi_pte_modes() {
    // Basic: V, M = 3, PPN 53:10.
    assert_eq!(MsiPte::flat(0x2800_5000).0, [0x0a00_1407, 0]);
    let m = MsiPte::mrif(0x8046_0200, 0x2800_0000, 0x4ff);
    assert_eq!(m.0[0] & 0x7, 0b011, "V and M = 1 (MRIF)");
    assert_eq!(
        (m.0[0] >> 7) << 9,
        0x8046_0200,
        "MRIF address bits 55:9 in 53:7"
    );
    assert_eq!(m.0[1] & 0x3ff, 0xff, "NID 9:0");
    assert_eq!(m.0[1] >> 60, 1, "NID bit 10 at bit 60");
    assert_eq!(
        ((m.0[1] >> 10) & ((1 << 44) - 1)) << 12,
        0x2800_0000,
        "NPPN"
    );
    assert_eq!(MsiPte::INVALID.0[0] & 1, 0);
}
