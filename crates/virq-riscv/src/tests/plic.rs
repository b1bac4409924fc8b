//! vPLIC: spec tests (RISC-V PLIC Specification v1.0.0, by chapter), a property test
//! of claim order against a reference model, and error paths.

use proptest::prelude::*;

use super::{EoiLog, VseipLog};
use crate::mmio::{ErrorCounters, MmioDevice, NoEoi};
use crate::plic::{Sense, VPlic};

type Plic<'a> = VPlic<&'a VseipLog, &'a EoiLog, 4>;

const CTX0: [Option<u32>; 2] = [Some(0), Some(1)];

fn prio(p: &mut impl MmioDevice, id: u32, v: u32) {
    p.write(4 * u64::from(id), 4, v.into());
}
fn enable(p: &mut impl MmioDevice, ctx: u64, id: u32) {
    let off = 0x2000 + 0x80 * ctx + 4 * u64::from(id / 32);
    let v = p.read(off, 4) | 1 << (id % 32);
    p.write(off, 4, v);
}
fn threshold(p: &mut impl MmioDevice, ctx: u64, v: u32) {
    p.write(0x20_0000 + 0x1000 * ctx, 4, v.into());
}
fn claim(p: &mut impl MmioDevice, ctx: u64) -> u32 {
    p.read(0x20_0004 + 0x1000 * ctx, 4) as u32
}
fn complete(p: &mut impl MmioDevice, ctx: u64, id: u32) {
    p.write(0x20_0004 + 0x1000 * ctx, 4, id.into());
}

fn new<'a>(sink: &'a VseipLog, eoi: &'a EoiLog, sources: u32) -> Plic<'a> {
    VPlic::new(sources, &CTX0, sink, eoi).unwrap()
}

#[test]
fn plic_3_memory_map_offsets() {
    let (s, e) = (VseipLog::default(), EoiLog::default());
    let mut p = new(&s, &e, 100);
    prio(&mut p, 100, 5);
    assert_eq!(p.read(400, 4), 5);
    enable(&mut p, 1, 99);
    assert_eq!(p.read(0x2080 + 12, 4), 1 << 3);
    threshold(&mut p, 1, 3);
    assert_eq!(p.read(0x20_1000, 4), 3);
    p.set_input(99, true);
    assert_eq!(p.read(0x1000 + 12, 4), 1 << 3, "pending word 3 bit 3");
    assert_eq!(p.region_size(), 0x20_2000);
    assert_eq!(p.errors(), ErrorCounters::default());
}

#[test]
fn plic_4_priority_zero_never_interrupts() {
    let (s, e) = (VseipLog::default(), EoiLog::default());
    let mut p = new(&s, &e, 8);
    enable(&mut p, 0, 3);
    p.set_input(3, true);
    assert_eq!(claim(&mut p, 0), 0);
    assert!(!s.level(0));
    prio(&mut p, 3, 1);
    assert!(s.level(0));
    assert_eq!(claim(&mut p, 0), 3);
}

#[test]
fn plic_4_priority_is_warl_three_bits() {
    let (s, e) = (VseipLog::default(), EoiLog::default());
    let mut p = new(&s, &e, 8);
    prio(&mut p, 1, 0xff);
    assert_eq!(p.read(4, 4), 7);
}

#[test]
fn plic_5_pending_is_read_only() {
    let (s, e) = (VseipLog::default(), EoiLog::default());
    let mut p = new(&s, &e, 8);
    p.write(0x1000, 4, 0xff);
    assert_eq!(p.read(0x1000, 4), 0);
    assert_eq!(p.errors().read_only, 1);
}

#[test]
fn plic_6_enable_bit_zero_and_unimplemented_are_zero() {
    let (s, e) = (VseipLog::default(), EoiLog::default());
    let mut p = new(&s, &e, 40);
    p.write(0x2000, 4, 0xffff_ffff);
    p.write(0x2004, 4, 0xffff_ffff);
    assert_eq!(p.read(0x2000, 4), 0xffff_fffe);
    assert_eq!(p.read(0x2004, 4), 0x1ff, "sources 32..=40 only");
}

#[test]
fn plic_7_threshold_masks_lower_or_equal_priorities() {
    let (s, e) = (VseipLog::default(), EoiLog::default());
    let mut p = new(&s, &e, 8);
    prio(&mut p, 2, 3);
    enable(&mut p, 0, 2);
    p.set_input(2, true);
    threshold(&mut p, 0, 3);
    assert!(!s.level(0));
    assert_eq!(claim(&mut p, 0), 0);
    threshold(&mut p, 0, 2);
    assert!(s.level(0));
    assert_eq!(claim(&mut p, 0), 2);
}

#[test]
fn plic_8_claim_highest_priority_then_lowest_id() {
    let (s, e) = (VseipLog::default(), EoiLog::default());
    let mut p = new(&s, &e, 200);
    for (id, pr) in [(150, 2), (7, 2), (199, 5), (64, 5), (3, 1)] {
        prio(&mut p, id, pr);
        enable(&mut p, 0, id);
        p.set_input(id, true);
    }
    let order: Vec<u32> = (0..6).map(|_| claim(&mut p, 0)).collect();
    assert_eq!(order, [64, 199, 7, 150, 3, 0]);
}

#[test]
fn plic_8_claim_closes_gateway_until_complete() {
    let (s, e) = (VseipLog::default(), EoiLog::default());
    let mut p = new(&s, &e, 8);
    prio(&mut p, 5, 1);
    enable(&mut p, 0, 5);
    enable(&mut p, 1, 5);
    p.set_input(5, true);
    assert!(s.level(0) && s.level(1));
    assert_eq!(claim(&mut p, 0), 5);
    assert!(
        !s.level(0) && !s.level(1),
        "claimed: no longer pending anywhere"
    );
    assert_eq!(claim(&mut p, 1), 0);
    // Line still asserted: completion re-pends (level gateway).
    complete(&mut p, 0, 5);
    assert!(s.level(0) && s.level(1));
    assert_eq!(claim(&mut p, 1), 5);
    p.set_input(5, false);
    complete(&mut p, 1, 5);
    assert!(!p.is_pending(5));
}

#[test]
fn plic_9_level_line_dropped_while_claimed_does_not_repend() {
    let (s, e) = (VseipLog::default(), EoiLog::default());
    let mut p = new(&s, &e, 8);
    prio(&mut p, 1, 1);
    enable(&mut p, 0, 1);
    p.set_input(1, true);
    assert_eq!(claim(&mut p, 0), 1);
    p.set_input(1, false);
    p.set_input(1, true);
    assert!(!p.is_pending(1), "gateway closed");
    p.set_input(1, false);
    complete(&mut p, 0, 1);
    assert!(!p.is_pending(1));
}

/// PLIC spec 1.0.0, "Interrupt Gateways": once a level source's request has been
/// forwarded, a falling line does not retract it — the IP bit stays set and a claim
/// returns the source (its handler finds the device needs nothing). QEMU's
/// `sifive_plic` drops it instead; the vPLIC follows the spec.
#[test]
fn plic_gateway_does_not_retract_a_forwarded_level_request() {
    let (s, e) = (VseipLog::default(), EoiLog::default());
    let mut p = new(&s, &e, 32);
    prio(&mut p, 5, 1);
    enable(&mut p, 0, 5);
    p.set_input(5, true);
    assert!(p.is_pending(5) && s.level(0));
    p.set_input(5, false);
    assert!(p.is_pending(5), "the forwarded request stays pending");
    assert!(s.level(0), "and keeps the context's output high");
    assert_eq!(claim(&mut p, 0), 5);
    complete(&mut p, 0, 5);
    assert!(
        !p.is_pending(5),
        "the line is low at completion: no new request"
    );
    assert!(!s.level(0));
}

#[test]
fn plic_edge_gateway_latches_one_edge_while_closed() {
    let (s, e) = (VseipLog::default(), EoiLog::default());
    let mut p = new(&s, &e, 8);
    assert!(p.set_sense(4, Sense::Edge));
    prio(&mut p, 4, 1);
    enable(&mut p, 0, 4);
    p.pulse(4);
    p.pulse(4); // coalesces while pending
    assert_eq!(claim(&mut p, 0), 4);
    assert_eq!(claim(&mut p, 0), 0);
    p.pulse(4);
    p.pulse(4); // latched once
    assert!(!p.is_pending(4));
    complete(&mut p, 0, 4);
    assert_eq!(claim(&mut p, 0), 4);
    complete(&mut p, 0, 4);
    assert_eq!(
        claim(&mut p, 0),
        0,
        "one pending per edge while open, two latched edges are one"
    );
    // Edges on the line: rising edges only.
    p.set_input(4, true);
    p.set_input(4, true);
    p.set_input(4, false);
    assert_eq!(claim(&mut p, 0), 4);
}

#[test]
fn plic_9_completion_of_unenabled_or_unclaimed_source_is_ignored() {
    let (s, e) = (VseipLog::default(), EoiLog::default());
    let mut p = new(&s, &e, 8);
    prio(&mut p, 2, 1);
    enable(&mut p, 0, 2);
    p.set_input(2, true);
    assert_eq!(claim(&mut p, 0), 2);
    complete(&mut p, 1, 2); // not enabled for ctx 1
    complete(&mut p, 0, 3); // not claimed
    complete(&mut p, 0, 0);
    complete(&mut p, 0, 9999);
    assert_eq!(p.errors().ignored_value, 4);
    assert_eq!(claim(&mut p, 0), 0, "gateway still closed");
    complete(&mut p, 0, 2);
    assert_eq!(claim(&mut p, 0), 2);
}

#[test]
fn plic_passthrough_completion_reaches_eoi_sink() {
    let (s, e) = (VseipLog::default(), EoiLog::default());
    let mut p = new(&s, &e, 8);
    p.set_passthrough(6, true);
    for id in [5, 6] {
        prio(&mut p, id, 1);
        enable(&mut p, 0, id);
        p.set_input(id, true);
    }
    assert_eq!(claim(&mut p, 0), 5);
    assert_eq!(claim(&mut p, 0), 6);
    complete(&mut p, 0, 5);
    assert!(
        e.0.borrow().is_empty(),
        "emulated source: no physical complete"
    );
    complete(&mut p, 0, 6);
    assert_eq!(*e.0.borrow(), [6]);
}

#[test]
fn plic_context_without_vcpu_has_no_output() {
    let s = VseipLog::default();
    let mut p: VPlic<&VseipLog, NoEoi, 2> = VPlic::new(4, &[None, Some(3)], &s, NoEoi).unwrap();
    prio(&mut p, 1, 1);
    enable(&mut p, 0, 1);
    p.set_input(1, true);
    assert!(p.output(0));
    assert_eq!(s.changes(), 0);
    enable(&mut p, 1, 1);
    assert_eq!(*s.events.borrow(), [(3, true)]);
}

#[test]
fn plic_config_errors() {
    let s = VseipLog::default();
    let mk = |n, m: &[Option<u32>]| VPlic::<&VseipLog, NoEoi, 2>::new(n, m, &s, NoEoi).err();
    use crate::ConfigError::*;
    assert_eq!(mk(0, &[None]), Some(Sources));
    assert_eq!(mk(1024, &[None]), Some(Sources));
    assert_eq!(mk(1023, &[]), Some(Targets));
    assert_eq!(mk(1, &[None, None, None]), Some(Targets));
    assert_eq!(mk(1, &[Some(1), Some(1)]), Some(DuplicateVcpu));
    assert_eq!(mk(1023, &[None, None]), None);
}

#[test]
fn plic_bad_accesses_read_zero_and_are_counted() {
    let (s, e) = (VseipLog::default(), EoiLog::default());
    let mut p = new(&s, &e, 8);
    prio(&mut p, 1, 1);
    enable(&mut p, 0, 1);
    p.set_input(1, true);
    // Wrong widths and misalignment never claim.
    assert_eq!(p.read(0x20_0004, 8), 0);
    assert_eq!(p.read(0x20_0004, 1), 0);
    assert_eq!(p.read(0x20_0006, 4), 0);
    assert!(p.is_pending(1));
    p.write(4, 2, 7);
    p.write(5, 4, 7);
    assert_eq!(p.read(4, 4), 1);
    // Out of the map: source 9, context 2, holes, far away.
    for off in [
        36u64,
        0x2100,
        0x20_2000,
        0x20_0008,
        0x1080,
        0x1_0000_0000,
        !3,
    ] {
        assert_eq!(p.read(off, 4), 0);
        p.write(off, 4, !0);
    }
    let err = p.errors();
    assert_eq!((err.bad_width, err.misaligned), (3, 2));
    assert_eq!(err.unmapped, 14);
    assert_eq!(err.read_only, 0);
    assert_eq!(p.read(0, 4), 0, "source 0 priority is reserved");
}

// ---- property test: claim order against a reference model ----

#[derive(Clone, Debug)]
enum Op {
    Input(u32, bool),
    Pulse(u32),
    Prio(u32, u32),
    Enable(u64, u32, bool),
    Threshold(u64, u32),
    Claim(u64),
    Complete(u64, u32),
}

const N: u32 = 70;

fn op() -> impl Strategy<Value = Op> {
    let src = 0..=N + 1;
    prop_oneof![
        (src.clone(), any::<bool>()).prop_map(|(s, l)| Op::Input(s, l)),
        src.clone().prop_map(Op::Pulse),
        (src.clone(), 0..9u32).prop_map(|(s, p)| Op::Prio(s, p)),
        (0..2u64, src.clone(), any::<bool>()).prop_map(|(c, s, on)| Op::Enable(c, s, on)),
        (0..2u64, 0..8u32).prop_map(|(c, t)| Op::Threshold(c, t)),
        (0..2u64).prop_map(Op::Claim),
        (0..2u64).prop_map(Op::Claim),
        (0..2u64, src).prop_map(|(c, s)| Op::Complete(c, s)),
    ]
}

/// The obvious sequential PLIC.
struct Model {
    prio: Vec<u32>,
    pending: Vec<bool>,
    claimed: Vec<bool>,
    latched: Vec<bool>,
    input: Vec<bool>,
    edge: Vec<bool>,
    enable: [Vec<bool>; 2],
    threshold: [u32; 2],
}

impl Model {
    fn new() -> Self {
        let b = vec![false; 128];
        Self {
            prio: vec![0; 128],
            pending: b.clone(),
            claimed: b.clone(),
            latched: b.clone(),
            input: b.clone(),
            edge: b.clone(),
            enable: [b.clone(), b],
            threshold: [0; 2],
        }
    }

    fn top(&self, c: usize) -> u32 {
        let mut best = (0, 0);
        for id in 1..=N as usize {
            if self.pending[id]
                && self.enable[c][id]
                && self.prio[id] > self.threshold[c]
                && self.prio[id] > best.1
            {
                best = (id as u32, self.prio[id]);
            }
        }
        best.0
    }
    fn apply(&mut self, op: &Op) -> Option<u32> {
        let ok = |s: u32| (1..=N).contains(&s);
        match *op {
            Op::Input(s, l) if ok(s) => {
                let s = s as usize;
                let was = self.input[s];
                self.input[s] = l;
                if self.edge[s] {
                    if l && !was {
                        self.edge_event(s);
                    }
                } else if l && !self.claimed[s] {
                    // PLIC 1.0.0: a forwarded request is never retracted.
                    self.pending[s] = true;
                }
            }
            Op::Pulse(s) if ok(s) && self.edge[s as usize] => self.edge_event(s as usize),
            Op::Prio(s, p) if ok(s) => self.prio[s as usize] = p & 7,
            Op::Enable(c, s, on) if ok(s) => self.enable[c as usize][s as usize] = on,
            Op::Threshold(c, t) => self.threshold[c as usize] = t,
            Op::Claim(c) => {
                let id = self.top(c as usize);
                if id != 0 {
                    self.pending[id as usize] = false;
                    self.claimed[id as usize] = true;
                }
                return Some(id);
            }
            Op::Complete(c, s)
                if ok(s) && self.enable[c as usize][s as usize] && self.claimed[s as usize] =>
            {
                let s = s as usize;
                self.claimed[s] = false;
                if self.edge[s] && self.latched[s] {
                    self.latched[s] = false;
                    self.pending[s] = true;
                } else if !self.edge[s] && self.input[s] {
                    self.pending[s] = true;
                }
            }
            _ => {}
        }
        None
    }
    fn edge_event(&mut self, s: usize) {
        if self.claimed[s] {
            self.latched[s] = true;
        } else {
            self.pending[s] = true;
        }
    }
}

fn run(p: &mut Plic<'_>, op: &Op) -> Option<u32> {
    match *op {
        Op::Input(s, l) => {
            p.set_input(s, l);
        }
        Op::Pulse(s) => {
            p.pulse(s);
        }
        Op::Prio(s, v) => prio(p, s, v),
        Op::Enable(c, s, on) => {
            let off = 0x2000 + 0x80 * c + 4 * u64::from(s / 32);
            let w = p.read(off, 4);
            let w = if on {
                w | 1 << (s % 32)
            } else {
                w & !(1 << (s % 32))
            };
            p.write(off, 4, w);
        }
        Op::Threshold(c, t) => threshold(p, c, t),
        Op::Claim(c) => return Some(claim(p, c)),
        Op::Complete(c, s) => complete(p, c, s),
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn prop_plic_claim_order_matches_model(edges in proptest::collection::vec(any::<bool>(), N as usize),
                                           ops in proptest::collection::vec(op(), 1..200)) {
        let (s, e) = (VseipLog::default(), EoiLog::default());
        let mut p = new(&s, &e, N);
        let mut m = Model::new();
        for (i, &edge) in edges.iter().enumerate() {
            let id = i as u32 + 1;
            p.set_sense(id, if edge { Sense::Edge } else { Sense::Level });
            m.edge[id as usize] = edge;
        }
        for op in &ops {
            let got = run(&mut p, op);
            let want = m.apply(op);
            prop_assert_eq!(got, want, "after {:?}", op);
            for c in 0..2 {
                prop_assert_eq!(p.output(c), m.top(c) != 0);
                prop_assert_eq!(s.level(c as u32), m.top(c) != 0);
            }
        }
    }
}

#[test]
fn plic_window_size_is_the_decoded_region() {
    let (s, e) = (VseipLog::default(), EoiLog::default());
    let p = new(&s, &e, 8);
    assert_eq!(crate::plic::window_size(2), 0x20_2000);
    assert_eq!(p.region_size(), crate::plic::window_size(2));
}
