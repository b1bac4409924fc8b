//! vAPLIC: spec tests named after RISC-V AIA v1.0 sections, a property test of MSI
//! routing against a reference model, and error paths.

use proptest::prelude::*;

use super::{MsiLog, VseipLog};
use crate::aplic::{SourceMode, VAplic};
use crate::mmio::MmioDevice;
use crate::msi::Msi;

type Aplic<'a> = VAplic<MsiLog, &'a VseipLog, 4>;

const DOMAINCFG: u64 = 0;
const SETIPNUM: u64 = 0x1cdc;
const CLRIPNUM: u64 = 0x1ddc;
const SETIENUM: u64 = 0x1edc;
const CLRIENUM: u64 = 0x1fdc;
const GENMSI: u64 = 0x3000;
const IE: u64 = 1 << 8;
const DM: u64 = 1 << 2;

fn sourcecfg(i: u32) -> u64 {
    4 * u64::from(i)
}
fn target(i: u32) -> u64 {
    0x3000 + 4 * u64::from(i)
}
fn idc(h: u64, reg: u64) -> u64 {
    0x4000 + 32 * h + reg
}
const IDELIVERY: u64 = 0;
const IFORCE: u64 = 4;
const ITHRESHOLD: u64 = 8;
const TOPI: u64 = 0x18;
const CLAIMI: u64 = 0x1c;

fn new(sink: &VseipLog, sources: u32) -> Aplic<'_> {
    VAplic::new(sources, 3, MsiLog::new(3), sink).unwrap()
}

fn msi_domain(sink: &VseipLog) -> Aplic<'_> {
    let mut a = new(sink, 64);
    a.write(DOMAINCFG, 4, IE | DM);
    a
}

fn direct_domain(sink: &VseipLog) -> Aplic<'_> {
    let mut a = new(sink, 64);
    a.write(DOMAINCFG, 4, IE);
    for h in 0..3 {
        a.write(idc(h, IDELIVERY), 4, 1);
    }
    a
}

fn sent(a: &Aplic<'_>) -> Vec<Msi> {
    a.msi_sink().sent.clone()
}

#[test]
fn aia_4_5_1_domaincfg_reads_0x80_and_be_is_read_only_zero() {
    let s = VseipLog::default();
    let mut a = new(&s, 8);
    assert_eq!(a.read(DOMAINCFG, 4), 0x8000_0000);
    a.write(DOMAINCFG, 4, 0xffff_ffff);
    assert_eq!(
        a.read(DOMAINCFG, 4),
        0x8000_0104,
        "IE, DM; BE and bit 7 read zero"
    );
}

#[test]
fn aia_4_5_2_sourcecfg_detached_ignores_input() {
    let s = VseipLog::default();
    let mut a = direct_domain(&s);
    a.write(sourcecfg(3), 4, 1);
    a.write(SETIENUM, 4, 3);
    a.set_input(3, true);
    assert!(!a.is_pending(3));
    assert_eq!(
        a.read(0x1d00, 4),
        0,
        "rectified input of a detached source is 0"
    );
    a.write(SETIPNUM, 4, 3);
    assert!(a.is_pending(3), "detached sources pend through setipnum");
}

#[test]
fn aia_4_5_2_sourcecfg_delegate_bit_in_leaf_domain_writes_zero() {
    let s = VseipLog::default();
    let mut a = new(&s, 8);
    a.write(sourcecfg(2), 4, 6);
    a.write(sourcecfg(2), 4, 0x400 | 6);
    assert_eq!(a.read(sourcecfg(2), 4), 0);
    assert_eq!(a.source_mode(2), SourceMode::Inactive);
}

#[test]
fn aia_4_5_2_sourcecfg_reserved_mode_becomes_inactive() {
    let s = VseipLog::default();
    let mut a = new(&s, 8);
    for sm in [2, 3] {
        a.write(sourcecfg(1), 4, 4);
        a.write(sourcecfg(1), 4, sm);
        assert_eq!(a.read(sourcecfg(1), 4), 0);
    }
    assert_eq!(a.errors().ignored_value, 2);
}

#[test]
fn aia_4_5_2_inactive_source_has_read_only_zero_state() {
    let s = VseipLog::default();
    let mut a = direct_domain(&s);
    a.write(sourcecfg(5), 4, 4);
    a.write(target(5), 4, 7);
    a.write(SETIENUM, 4, 5);
    a.write(SETIPNUM, 4, 5);
    assert!(a.is_pending(5) && a.is_enabled(5));
    a.write(sourcecfg(5), 4, 0);
    assert!(!a.is_pending(5) && !a.is_enabled(5));
    assert_eq!(a.read(target(5), 4), 0);
    a.write(target(5), 4, 3);
    a.write(SETIENUM, 4, 5);
    a.write(0x1c00, 4, 1 << 5);
    assert_eq!(
        (a.read(target(5), 4), a.is_enabled(5), a.is_pending(5)),
        (0, false, false)
    );
}

#[test]
fn aia_4_5_2_inverted_level_source_rectifies_input() {
    let s = VseipLog::default();
    let mut a = direct_domain(&s);
    a.write(sourcecfg(7), 4, 7); // Level0
    assert!(a.is_pending(7), "wire low = asserted");
    assert!(a.rectified_input(7));
    assert_eq!(a.read(0x1d00, 4), 1 << 7);
    a.set_input(7, true);
    assert!(!a.is_pending(7));
    assert!(!a.rectified_input(7));
    assert!(
        !a.rectified_input(0) && !a.rectified_input(1000),
        "no such source"
    );
}

#[test]
fn aia_4_5_5_setip_reads_pending_and_sets_active_only() {
    let s = VseipLog::default();
    let mut a = direct_domain(&s);
    a.write(sourcecfg(1), 4, 4);
    a.write(sourcecfg(2), 4, 1);
    a.write(0x1c00, 4, 0xffff_ffff);
    assert_eq!(a.read(0x1c00, 4), 0b110);
}

#[test]
fn aia_4_5_7_in_clrip_clears_edge_but_not_direct_level() {
    let s = VseipLog::default();
    let mut a = direct_domain(&s);
    a.write(sourcecfg(1), 4, 4);
    a.write(sourcecfg(2), 4, 6);
    a.set_input(1, true);
    a.set_input(2, true);
    assert_eq!(a.read(0x1c00, 4), 0b110);
    assert_eq!(a.read(0x1d00, 4), 0b110);
    a.write(0x1d00, 4, 0b110);
    assert_eq!(
        a.read(0x1c00, 4),
        0b100,
        "level pending mirrors the input in direct mode"
    );
    a.write(CLRIPNUM, 4, 2);
    assert!(a.is_pending(2));
}

#[test]
fn aia_4_5_9_setie_clrie_and_by_number() {
    let s = VseipLog::default();
    let mut a = new(&s, 40);
    for i in [1, 33, 40] {
        a.write(sourcecfg(i), 4, 1);
    }
    a.write(0x1e00, 4, !0);
    a.write(0x1e04, 4, !0);
    assert_eq!((a.read(0x1e00, 4), a.read(0x1e04, 4)), (0b10, 0x102));
    a.write(0x1f04, 4, 0x100);
    a.write(CLRIENUM, 4, 1);
    assert_eq!((a.read(0x1e00, 4), a.read(0x1e04, 4)), (0, 0b10));
    assert_eq!(a.read(0x1f04, 4), 0, "clrie reads zero");
    a.write(SETIENUM, 4, 40);
    assert!(a.is_enabled(40));
    a.write(SETIENUM, 4, 39); // inactive
    a.write(SETIENUM, 4, 5000);
    assert_eq!(a.errors().ignored_value, 2);
}

#[test]
fn aia_4_5_13_setipnum_le_and_4_5_14_be() {
    let s = VseipLog::default();
    let mut a = direct_domain(&s);
    a.write(sourcecfg(9), 4, 1);
    a.write(sourcecfg(10), 4, 1);
    a.write(0x2000, 4, 9);
    a.write(0x2004, 4, 10u32.swap_bytes().into());
    assert!(a.is_pending(9) && a.is_pending(10));
    assert_eq!(a.read(0x2000, 4), 0);
}

#[test]
fn aia_4_5_15_genmsi_sends_extempore_msi_even_with_ie_clear() {
    let s = VseipLog::default();
    let mut a = new(&s, 8);
    a.write(GENMSI, 4, 2 << 18 | 77);
    assert!(sent(&a).is_empty(), "read-only zero in direct mode");
    assert_eq!(a.read(GENMSI, 4), 0);
    a.write(DOMAINCFG, 4, DM);
    a.write(GENMSI, 4, 2 << 18 | 77);
    assert_eq!(
        sent(&a),
        [Msi {
            hart: 2,
            guest: 0,
            eiid: 77
        }]
    );
    assert_eq!(a.read(GENMSI, 4) & (1 << 12), 0, "never busy");
}

#[test]
fn aia_4_5_16_1_target_iprio_zero_becomes_one() {
    let s = VseipLog::default();
    let mut a = direct_domain(&s);
    a.write(sourcecfg(4), 4, 4);
    a.write(target(4), 4, 1 << 18);
    assert_eq!(a.read(target(4), 4), 1 << 18 | 1);
    a.write(target(4), 4, 0xffff_ffff);
    assert_eq!(a.read(target(4), 4), 0xfffc_00ff);
}

#[test]
fn aia_4_5_16_2_target_msi_guest_index_is_read_only_zero() {
    let s = VseipLog::default();
    let mut a = msi_domain(&s);
    a.write(sourcecfg(4), 4, 4);
    a.write(target(4), 4, 0xffff_ffff);
    assert_eq!(a.read(target(4), 4), 0xfffc_07ff);
}

#[test]
fn aia_4_7_level_direct_cannot_be_set_by_setipnum() {
    let s = VseipLog::default();
    let mut a = direct_domain(&s);
    a.write(sourcecfg(3), 4, 6);
    a.write(SETIPNUM, 4, 3);
    assert!(!a.is_pending(3));
}

#[test]
fn aia_4_7_level_msi_setipnum_only_while_input_high() {
    let s = VseipLog::default();
    let mut a = new(&s, 8);
    a.write(DOMAINCFG, 4, DM); // IE = 0: nothing is forwarded yet
    a.write(sourcecfg(3), 4, 6);
    assert!(!a.rectified_input(3));
    a.write(SETIPNUM, 4, 3);
    assert!(!a.is_pending(3));
    a.set_input(3, true);
    assert!(a.rectified_input(3));
    assert!(a.is_pending(3));
    a.write(CLRIPNUM, 4, 3);
    assert!(
        !a.is_pending(3),
        "clripnum clears a level source in MSI mode"
    );
    a.write(SETIPNUM, 4, 3);
    assert!(a.is_pending(3));
    a.set_input(3, false);
    assert!(!a.is_pending(3));
}

#[test]
fn aia_4_8_1_topi_priority_then_lowest_id_and_threshold() {
    let s = VseipLog::default();
    let mut a = direct_domain(&s);
    for (i, p) in [(5, 3), (4, 3), (9, 1), (12, 2)] {
        a.write(sourcecfg(i), 4, 1);
        a.write(target(i), 4, 1 << 18 | p);
        a.write(SETIENUM, 4, i.into());
        a.write(SETIPNUM, 4, i.into());
    }
    assert_eq!(a.read(idc(1, TOPI), 4), 9 << 16 | 1);
    assert_eq!(a.read(idc(0, TOPI), 4), 0, "other harts see nothing");
    a.write(idc(1, ITHRESHOLD), 4, 1);
    assert_eq!(a.read(idc(1, TOPI), 4), 0, "threshold 1 masks everything");
    a.write(idc(1, ITHRESHOLD), 4, 3);
    assert_eq!(a.read(idc(1, TOPI), 4), 9 << 16 | 1);
    a.write(idc(1, ITHRESHOLD), 4, 0);
    let claims: Vec<u64> = (0..5).map(|_| a.read(idc(1, CLAIMI), 4) >> 16).collect();
    assert_eq!(claims, [9, 12, 4, 5, 0]);
}

#[test]
fn aia_4_8_2_output_follows_ie_idelivery_iforce_topi() {
    let s = VseipLog::default();
    let mut a = new(&s, 8);
    a.write(sourcecfg(2), 4, 4);
    a.write(target(2), 4, 1);
    a.write(SETIENUM, 4, 2);
    a.set_input(2, true);
    assert!(!s.level(0), "IE = 0");
    a.write(DOMAINCFG, 4, IE);
    assert!(!s.level(0), "idelivery = 0");
    a.write(idc(0, IDELIVERY), 4, 1);
    assert!(s.level(0));
    assert_eq!(a.read(idc(0, CLAIMI), 4), 2 << 16 | 1);
    assert!(!s.level(0));
    a.write(idc(0, IFORCE), 4, 1);
    assert!(s.level(0), "iforce: spurious interrupt");
    assert_eq!(a.read(idc(0, CLAIMI), 4), 0);
    assert_eq!(a.read(idc(0, IFORCE), 4), 0, "claim of 0 clears iforce");
    assert!(!s.level(0));
}

#[test]
fn aia_4_8_claimi_does_not_clear_direct_level_source() {
    let s = VseipLog::default();
    let mut a = direct_domain(&s);
    a.write(sourcecfg(6), 4, 6);
    a.write(SETIENUM, 4, 6);
    a.set_input(6, true);
    assert_eq!(a.read(idc(0, CLAIMI), 4) >> 16, 6);
    assert!(a.is_pending(6));
    a.set_input(6, false);
    assert_eq!(a.read(idc(0, CLAIMI), 4), 0);
}

#[test]
fn aia_4_9_msi_sent_for_pending_enabled_and_pending_cleared() {
    let s = VseipLog::default();
    let mut a = msi_domain(&s);
    a.write(sourcecfg(8), 4, 4);
    a.write(target(8), 4, 1 << 18 | 42);
    a.set_input(8, true);
    assert!(sent(&a).is_empty(), "not enabled");
    assert!(a.is_pending(8));
    a.write(SETIENUM, 4, 8);
    assert_eq!(
        sent(&a),
        [Msi {
            hart: 1,
            guest: 0,
            eiid: 42
        }]
    );
    assert!(!a.is_pending(8));
    assert_eq!(s.changes(), 0, "no wired output in MSI mode");
}

#[test]
fn aia_4_9_ie_clear_holds_msis_until_set() {
    let s = VseipLog::default();
    let mut a = new(&s, 8);
    a.write(DOMAINCFG, 4, DM);
    a.write(sourcecfg(1), 4, 1);
    a.write(target(1), 4, 5);
    a.write(SETIENUM, 4, 1);
    a.write(SETIPNUM, 4, 1);
    assert!(sent(&a).is_empty());
    a.write(DOMAINCFG, 4, DM | IE);
    assert_eq!(
        sent(&a),
        [Msi {
            hart: 0,
            guest: 0,
            eiid: 5
        }]
    );
}

#[test]
fn aia_4_9_2_level_source_forwarded_once_until_deasserted() {
    let s = VseipLog::default();
    let mut a = msi_domain(&s);
    a.write(sourcecfg(2), 4, 6);
    a.write(target(2), 4, 9);
    a.write(SETIENUM, 4, 2);
    a.set_input(2, true);
    a.set_input(2, true);
    assert_eq!(sent(&a).len(), 1);
    // The "second option": setipnum re-pends while the line is still high.
    a.write(SETIPNUM, 4, 2);
    assert_eq!(sent(&a).len(), 2);
    a.set_input(2, false);
    a.write(SETIPNUM, 4, 2);
    assert_eq!(sent(&a).len(), 2);
    a.set_input(2, true);
    assert_eq!(sent(&a).len(), 3);
}

#[test]
fn aplic_msi_to_hart_not_given_is_dropped_and_counted() {
    let s = VseipLog::default();
    let mut a = msi_domain(&s);
    a.write(sourcecfg(1), 4, 1);
    a.write(target(1), 4, 3 << 18 | 1); // 3 harts: 0..=2
    a.write(SETIENUM, 4, 1);
    a.write(SETIPNUM, 4, 1);
    assert!(sent(&a).is_empty());
    assert_eq!(a.errors().ignored_value, 1);
    assert_eq!(a.read(idc(3, TOPI), 4), 0, "no IDC for hart 3");
    assert_eq!(a.errors().unmapped, 1);
}

#[test]
fn aplic_bad_accesses_are_counted() {
    let s = VseipLog::default();
    let mut a = new(&s, 8);
    a.write(sourcecfg(1), 4, 4);
    assert_eq!(a.read(sourcecfg(1), 2), 0);
    a.write(sourcecfg(1), 8, 0);
    a.write(sourcecfg(1) + 1, 4, 0);
    assert_eq!(a.read(sourcecfg(1), 4), 4);
    for off in [
        sourcecfg(9),
        0x1bc0,
        target(9),
        0x1c04,
        0x4010,
        0x5000,
        u64::MAX - 3,
    ] {
        assert_eq!(a.read(off, 4), 0);
        a.write(off, 4, !0);
    }
    a.write(idc(0, TOPI), 4, 1);
    let e = a.errors();
    assert_eq!(
        (e.bad_width, e.misaligned, e.unmapped, e.read_only),
        (2, 1, 14, 1)
    );
    assert_eq!(a.region_size(), 0x5000);
}

#[test]
fn aplic_config_errors() {
    let s = VseipLog::default();
    use crate::ConfigError::*;
    let mk = |n, h| VAplic::<MsiLog, &VseipLog, 4>::new(n, h, MsiLog::new(4), &s).err();
    assert_eq!(mk(0, 1), Some(Sources));
    assert_eq!(mk(1024, 1), Some(Sources));
    assert_eq!(mk(1, 0), Some(Targets));
    assert_eq!(mk(1, 5), Some(Targets));
    assert_eq!(mk(1023, 4), None);
}

// ---- property test: MSI routing against a reference model ----

#[derive(Clone, Debug)]
enum Op {
    Mode(u32, u32),
    Target(u32, u32, u32),
    Enable(u32, bool),
    Input(u32, bool),
    SetIp(u32),
    ClrIp(u32),
    Ie(bool),
}

const NS: u32 = 40;

fn op() -> impl Strategy<Value = Op> {
    let src = 0..=NS + 1;
    prop_oneof![
        // sourcecfg[0] would be domaincfg: only real sourcecfg registers.
        (1..=NS + 1, prop::sample::select(vec![0u32, 1, 4, 5, 6, 7]))
            .prop_map(|(s, m)| Op::Mode(s, m)),
        // target[0] would be genmsi: only real target registers.
        (1..=NS + 1, 0..5u32, 0..300u32).prop_map(|(s, h, e)| Op::Target(s, h, e)),
        (src.clone(), any::<bool>()).prop_map(|(s, on)| Op::Enable(s, on)),
        (src.clone(), any::<bool>()).prop_map(|(s, l)| Op::Input(s, l)),
        (src.clone(), any::<bool>()).prop_map(|(s, l)| Op::Input(s, l)),
        src.clone().prop_map(Op::SetIp),
        src.prop_map(Op::ClrIp),
        any::<bool>().prop_map(Op::Ie),
    ]
}

/// Reference: an MSI-mode APLIC domain, one source at a time, straight from AIA 4.7/4.9.
struct Model {
    mode: Vec<u32>,
    target: Vec<(u32, u32)>,
    enabled: Vec<bool>,
    pending: Vec<bool>,
    wire: Vec<bool>,
    ie: bool,
    out: Vec<Msi>,
}

impl Model {
    fn new() -> Self {
        let b = vec![false; 64];
        Self {
            mode: vec![0; 64],
            target: vec![(0, 0); 64],
            enabled: b.clone(),
            pending: b.clone(),
            wire: b,
            ie: false,
            out: Vec::new(),
        }
    }

    fn rect(&self, i: usize) -> bool {
        match self.mode[i] {
            4 | 6 => self.wire[i],
            5 | 7 => !self.wire[i],
            _ => false,
        }
    }
    fn apply(&mut self, op: &Op) {
        let ok = |s: u32| (1..=NS).contains(&s);
        match *op {
            Op::Mode(s, m) if ok(s) => {
                let i = s as usize;
                if m == 0 {
                    self.enabled[i] = false;
                    self.pending[i] = false;
                    self.target[i] = (0, 0);
                } else if self.mode[i] == 0 {
                    self.target[i] = (0, 0);
                }
                self.mode[i] = m;
                if m == 6 || m == 7 {
                    self.pending[i] = self.rect(i);
                }
            }
            Op::Target(s, h, e) if ok(s) && self.mode[s as usize] != 0 => {
                self.target[s as usize] = (h, e)
            }
            Op::Enable(s, on) if ok(s) && self.mode[s as usize] != 0 => {
                self.enabled[s as usize] = on
            }
            Op::Input(s, l) if ok(s) => {
                let i = s as usize;
                let old = self.rect(i);
                self.wire[i] = l;
                let new = self.rect(i);
                match self.mode[i] {
                    4 | 5 if new && !old => self.pending[i] = true,
                    6 | 7 if new && !old => self.pending[i] = true,
                    6 | 7 if !new => self.pending[i] = false,
                    _ => {}
                }
            }
            Op::SetIp(s) if ok(s) => {
                let i = s as usize;
                match self.mode[i] {
                    1 | 4 | 5 => self.pending[i] = true,
                    6 | 7 if self.rect(i) => self.pending[i] = true,
                    _ => {}
                }
            }
            Op::ClrIp(s) if ok(s) && self.mode[s as usize] != 0 => self.pending[s as usize] = false,
            Op::Ie(on) => self.ie = on,
            _ => {}
        }
        if self.ie {
            for i in 1..=NS as usize {
                if self.pending[i] && self.enabled[i] {
                    self.pending[i] = false;
                    let (hart, eiid) = self.target[i];
                    if hart < 3 {
                        self.out.push(Msi {
                            hart,
                            guest: 0,
                            eiid: eiid & 0x7ff,
                        });
                    }
                }
            }
        }
    }
}

fn run(a: &mut Aplic<'_>, op: &Op) {
    match *op {
        Op::Mode(s, m) => a.write(sourcecfg(s), 4, m.into()),
        Op::Target(s, h, e) => a.write(target(s), 4, u64::from(h << 18 | e)),
        Op::Enable(s, true) => a.write(SETIENUM, 4, s.into()),
        Op::Enable(s, false) => a.write(CLRIENUM, 4, s.into()),
        Op::Input(s, l) => {
            a.set_input(s, l);
        }
        Op::SetIp(s) => a.write(SETIPNUM, 4, s.into()),
        Op::ClrIp(s) => a.write(CLRIPNUM, 4, s.into()),
        Op::Ie(on) => a.write(DOMAINCFG, 4, DM | if on { IE } else { 0 }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn prop_aplic_msi_routing_matches_model(ops in proptest::collection::vec(op(), 1..150)) {
        let s = VseipLog::default();
        let mut a = new(&s, NS);
        a.write(DOMAINCFG, 4, DM);
        let mut m = Model::new();
        for op in &ops {
            run(&mut a, op);
            m.apply(op);
            prop_assert_eq!(&a.msi_sink().sent, &m.out, "after {:?}", op);
            for i in 1..=NS {
                prop_assert_eq!(a.is_pending(i), m.pending[i as usize], "source {} after {:?}", i, op);
            }
        }
    }
}

#[test]
fn aplic_window_size_is_the_decoded_region() {
    let s = VseipLog::default();
    let a = new(&s, 8);
    assert_eq!(crate::aplic::window_size(3), 0x5000);
    assert_eq!(a.region_size(), crate::aplic::window_size(3));
}

/// AIA §4.5: the writes that set sources pending, as a hypervisor decodes them to see a
/// guest's level re-trigger.
#[test]
fn aplic_setip_sources_decodes_every_setip_register() {
    let got = |off: u64, v: u32| {
        let mut out = Vec::new();
        crate::aplic::setip_sources(off, v, |s| out.push(s));
        out
    };
    assert_eq!(got(0x1cdc, 10), [10], "setipnum");
    assert_eq!(got(0x2000, 10), [10], "setipnum_le");
    assert_eq!(got(0x2004, 10u32.swap_bytes()), [10], "setipnum_be");
    assert_eq!(got(0x1c00, 0b1010), [1, 3], "setip[0]");
    assert_eq!(got(0x1c04, 1 << 31), [63], "setip[1]");
    assert_eq!(got(0x1c7c, 1), [992], "setip[31]");
    assert!(got(0x1c80, 1).is_empty(), "past setip[31]");
    assert!(got(0x1c02, 1).is_empty(), "misaligned");
    assert!(got(0x1d00, 1).is_empty(), "in_clrip is not a set");
    assert!(got(0x1ddc, 5).is_empty(), "clripnum is not a set");
}

#[test]
fn pending_and_enabled_words_match_setip_and_setie() {
    let s = VseipLog::default();
    let mut a = new(&s, 100);
    for i in [1, 63, 64, 100] {
        a.write(sourcecfg(i), 4, SourceMode::Detached as u64);
        a.write(SETIPNUM, 4, u64::from(i));
    }
    a.write(SETIENUM, 4, 64);
    a.write(SETIENUM, 4, 100);
    assert_eq!(a.pending_word(0), 1 << 1 | 1 << 63);
    assert_eq!(a.pending_word(1), 1 | 1 << 36);
    assert_eq!(a.enabled_word(1), 1 | 1 << 36);
    assert_eq!(a.enabled_word(0), 0);
    for k in 0..4 {
        let (p, e) = (a.pending_word(k / 2), a.enabled_word(k / 2));
        let shift = (k % 2) * 32;
        assert_eq!(a.read(0x1c00 + 4 * k as u64, 4), p >> shift & 0xffff_ffff);
        assert_eq!(a.read(0x1e00 + 4 * k as u64, 4), e >> shift & 0xffff_ffff);
    }
    assert_eq!(a.pending_word(16), 0, "beyond the bitmap");
    assert_eq!(a.enabled_word(usize::MAX), 0);
}
