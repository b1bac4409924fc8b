//! Software IMSIC file: spec tests named after RISC-V AIA v1.0 chapter 3 sections.

use crate::imsic::{CsrOp, ImsicFile, ImsicFileState, IselectError};

fn file() -> ImsicFile {
    ImsicFile::new(255).unwrap()
}

#[test]
fn aia_3_1_identity_counts() {
    for n in [63, 127, 255, 2047] {
        assert!(ImsicFile::new(n).is_ok());
    }
    for n in [0, 62, 64, 100, 2048, u32::MAX] {
        assert!(ImsicFile::new(n).is_err());
    }
}

#[test]
fn aia_3_6_seteipnum_ignores_unimplemented_identities() {
    let mut f = file();
    assert!(!f.set_pending(0));
    assert!(!f.set_pending(256));
    assert!(f.set_pending(255));
    assert!(f.is_pending(255));
    assert_eq!(f.save().eip[3], 1 << 63);
}

#[test]
fn aia_3_8_reserved_iselect_reads_zero_writes_ignored() {
    let mut f = file();
    for sel in [0x71, 0x73, 0x7f] {
        assert_eq!(f.ireg(sel, CsrOp::Write(!0)), Ok(0));
        assert_eq!(f.ireg(sel, CsrOp::Read), Ok(0));
    }
    assert_eq!(f.ireg(0x6f, CsrOp::Read), Err(IselectError::NotImsic));
    assert_eq!(f.ireg(0x100, CsrOp::Read), Err(IselectError::NotImsic));
}

#[test]
fn aia_3_8_odd_eip_eie_are_illegal_on_rv64() {
    let mut f = file();
    for sel in [0x81, 0xbf, 0xc1, 0xff] {
        assert_eq!(f.ireg(sel, CsrOp::Read), Err(IselectError::Illegal));
    }
}

#[test]
fn aia_3_8_1_eidelivery_supports_0_and_1_only() {
    let mut f = file();
    f.ireg(0x70, CsrOp::Write(0x4000_0000)).unwrap();
    assert_eq!(f.ireg(0x70, CsrOp::Read), Ok(0));
    f.ireg(0x70, CsrOp::Set(1)).unwrap();
    assert_eq!(f.ireg(0x70, CsrOp::Read), Ok(1));
}

#[test]
fn aia_3_8_3_eip0_bit0_and_unimplemented_words_read_zero() {
    let mut f = file();
    f.ireg(0x80, CsrOp::Write(!0)).unwrap();
    assert_eq!(f.ireg(0x80, CsrOp::Read), Ok(!1));
    f.ireg(0x88, CsrOp::Write(!0)).unwrap(); // identities 256.. not implemented
    assert_eq!(f.ireg(0x88, CsrOp::Read), Ok(0));
    f.ireg(0xc6, CsrOp::Write(!0)).unwrap();
    let old = f.ireg(0xc6, CsrOp::Clear(0xf)).unwrap();
    assert_eq!(old, !0);
    assert_eq!(f.ireg(0xc6, CsrOp::Read), Ok(!0xf));
}

#[test]
fn aia_3_10_topei_lowest_identity_below_threshold() {
    let mut f = file();
    for id in [200, 70, 9] {
        f.set_pending(id);
    }
    assert_eq!(f.topei(), 0, "nothing enabled");
    f.ireg(0xc0, CsrOp::Write(1 << 9)).unwrap();
    f.ireg(0xc2, CsrOp::Write(1 << 6)).unwrap();
    f.ireg(0xc6, CsrOp::Write(1 << 8)).unwrap();
    assert_eq!(f.topei(), 9 << 16 | 9);
    f.ireg(0x72, CsrOp::Write(9)).unwrap();
    assert_eq!(f.topei(), 0, "identities >= threshold masked");
    f.ireg(0x72, CsrOp::Write(71)).unwrap();
    assert_eq!(f.topei(), 9 << 16 | 9);
    f.ireg(0x72, CsrOp::Write(0)).unwrap();
    assert_eq!(
        f.stopei(CsrOp::Write(0)),
        9 << 16 | 9,
        "csrrw claims what it reads"
    );
    assert_eq!(
        f.stopei(CsrOp::Read),
        70 << 16 | 70,
        "a read does not claim"
    );
    assert_eq!(f.stopei(CsrOp::Set(123)), 70 << 16 | 70);
    assert_eq!(f.stopei(CsrOp::Write(0)), 200 << 16 | 200);
    assert_eq!(f.stopei(CsrOp::Write(0)), 0);
}

#[test]
fn aia_3_11_line_needs_eidelivery() {
    let mut f = file();
    f.set_pending(5);
    f.ireg(0xc0, CsrOp::Set(1 << 5)).unwrap();
    assert!(!f.line());
    f.ireg(0x70, CsrOp::Write(1)).unwrap();
    assert!(f.line());
}

#[test]
fn imsic_restore_legalises_foreign_state() {
    let mut f = ImsicFile::new(63).unwrap();
    let s = ImsicFileState {
        eidelivery: 0xff,
        eithreshold: 0xffff,
        eip: [!0; 32],
        eie: [!0; 32],
    };
    f.restore(&s);
    let got = f.save();
    assert_eq!((got.eidelivery, got.eithreshold), (1, 2047));
    assert_eq!((got.eip[0], got.eip[1], got.eie[31]), (!1, 0, 0));
}
