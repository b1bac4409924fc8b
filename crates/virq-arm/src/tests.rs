//! Spec tests, named by IHI 0069H section, and a property test of delivery against a
//! reference model.
use std::cell::RefCell;
use std::vec::Vec;

use crate::gicv3::{new_inbox, EoiSink, Kick, Passthrough, Sgi, VGicV3};
use crate::lr::{FakeIch, LrState};
use crate::regs::{gicd, gicr, hcr};
use proptest::prelude::*;

type Gic = VGicV3<64, 4>;

#[derive(Default)]
struct Kicks(RefCell<Vec<usize>>);
impl Kick for Kicks {
    fn kick(&self, vcpu: usize) {
        self.0.borrow_mut().push(vcpu);
    }
}

#[derive(Default)]
struct Eois(RefCell<Vec<u32>>);
impl EoiSink for Eois {
    fn guest_completed(&self, intid: u32) {
        self.0.borrow_mut().push(intid);
    }
}

/// Kicks nobody (where the test does not look at kicks).
struct NoKick;
impl Kick for NoKick {
    fn kick(&self, _vcpu: usize) {}
}
const K: NoKick = NoKick;

fn dist_w(g: &mut Gic, off: u32, v: u64) {
    g.dist_access(u64::from(off), 4, Some(v), &K);
}
fn dist_r(g: &mut Gic, off: u32) -> u64 {
    g.dist_access(u64::from(off), 4, None, &K)
}
fn sgi_w(g: &mut Gic, vcpu: usize, off: u32, v: u64) {
    let o = gicr::STRIDE * vcpu as u64 + u64::from(gicr::SGI_BASE + off);
    g.redist_access(o, 4, Some(v), &K);
}

/// Groups on, SPI `id` enabled, group 1, priority `prio`, routed to `vcpu`.
fn enable_spi(g: &mut Gic, id: u32, prio: u8, vcpu: usize) {
    dist_w(g, gicd::CTLR, 3);
    let group = dist_r(g, gicd::IGROUPR + 4 * (id / 32)) | 1 << (id % 32);
    dist_w(g, gicd::IGROUPR + 4 * (id / 32), group);
    dist_w(g, gicd::ISENABLER + 4 * (id / 32), 1 << (id % 32));
    g.dist_access(
        u64::from(gicd::IPRIORITYR + id),
        1,
        Some(u64::from(prio)),
        &K,
    );
    g.dist_access(
        u64::from(gicd::IROUTER + 8 * id),
        8,
        Some(crate::gicv3::affinity_of(vcpu)),
        &K,
    );
}

fn edge(g: &mut Gic, id: u32) {
    let reg = gicd::ICFGR + 4 * (id / 16);
    let v = dist_r(g, reg) | 2 << (2 * (id % 16));
    dist_w(g, reg, v);
}

#[test]
fn s12_9_typer_and_ctlr_describe_an_affinity_routed_single_security_gic() {
    let mut g = Gic::new(2).unwrap();
    let typer = dist_r(&mut g, gicd::TYPER);
    assert_eq!(typer & 0x1f, 2, "ITLinesNumber: 96 INTIDs");
    assert_eq!((typer >> 19) & 0x1f, 9, "IDbits: 10 bits");
    assert_eq!(
        dist_r(&mut g, gicd::CTLR),
        u64::from(gicd::CTLR_ARE | gicd::CTLR_DS)
    );
    dist_w(&mut g, gicd::CTLR, 0xffff_ffff);
    assert_eq!(
        dist_r(&mut g, gicd::CTLR),
        0x53,
        "only EnableGrp0/1 are writable"
    );
    assert_eq!(dist_r(&mut g, gicd::PIDR2) >> 4 & 0xf, 3, "ArchRev 3");
    dist_w(&mut g, gicd::TYPER, 0);
    assert_eq!(g.errors().read_only, 1);
}

#[test]
fn s12_9_without_lpis_typer_says_none_and_lpi_registers_are_raz_wi() {
    let mut g = Gic::new(2).unwrap();
    assert_eq!(dist_r(&mut g, gicd::TYPER) & u64::from(gicd::TYPER_LPIS), 0);
    let rd = |off: u32| u64::from(off);
    assert_eq!(
        g.redist_access(rd(gicr::TYPER), 8, None, &K) & gicr::TYPER_PLPIS,
        0
    );
    g.redist_access(rd(gicr::PROPBASER), 8, Some(0x4000_0000 | 15), &K);
    assert_eq!(g.redist_access(rd(gicr::PROPBASER), 8, None, &K), 0);
    g.redist_access(rd(gicr::CTLR), 4, Some(1), &K);
    assert_eq!(g.redist_access(rd(gicr::CTLR), 4, None, &K), 0);
    assert_eq!(g.propbaser(0), None);
}

#[test]
fn s12_9_s12_10_lpis_typer_idbits_plpis_propbaser_pendbaser_enable_lpis() {
    let mut g = Gic::new(2).unwrap();
    assert!(!g.enable_lpis(17), "at most 16 INTID bits");
    assert!(!g.enable_lpis(13));
    assert!(g.enable_lpis(16));
    let typer = dist_r(&mut g, gicd::TYPER);
    assert_ne!(typer & u64::from(gicd::TYPER_LPIS), 0, "LPIS");
    assert_eq!((typer >> 19) & 0x1f, 15, "IDbits: 16 bits");
    let rd1 = |off: u32| gicr::STRIDE + u64::from(off);
    assert_ne!(
        g.redist_access(rd1(gicr::TYPER), 8, None, &K) & gicr::TYPER_PLPIS,
        0
    );
    // PROPBASER: 64-bit write, read back (RES0 bits dropped); 32-bit halves.
    let prop = 0x0000_0000_8123_4000 | (1 << 10) | (7 << 7) | 15 | (1 << 63);
    g.redist_access(rd1(gicr::PROPBASER), 8, Some(prop), &K);
    assert_eq!(
        g.redist_access(rd1(gicr::PROPBASER), 8, None, &K),
        prop & !(1 << 63)
    );
    g.redist_access(rd1(gicr::PENDBASER), 4, Some(0x8124_0000 | (1 << 10)), &K);
    g.redist_access(rd1(gicr::PENDBASER + 4), 4, Some(1 << 30), &K); // PTZ
    assert_eq!(
        g.redist_access(rd1(gicr::PENDBASER), 8, None, &K),
        0x8124_0000 | (1 << 10),
        "PTZ reads as 0"
    );
    assert_eq!(g.propbaser(1), None, "EnableLPIs still 0");
    g.redist_access(rd1(gicr::CTLR), 4, Some(1), &K);
    assert_eq!(g.redist_access(rd1(gicr::CTLR), 4, None, &K), 1);
    assert_eq!(g.propbaser(1), Some(prop & !(1 << 63)));
    assert_eq!(g.propbaser(0), None, "vCPU 0's redistributor is separate");
    // After EnableLPIs: the bases are frozen (counted), EnableLPIs cannot be cleared.
    let before = g.errors().ignored_value;
    g.redist_access(rd1(gicr::PROPBASER), 8, Some(0x9000_0000), &K);
    assert_eq!(g.errors().ignored_value, before + 1);
    g.redist_access(rd1(gicr::CTLR), 4, Some(0), &K);
    assert_eq!(g.redist_access(rd1(gicr::CTLR), 4, None, &K), 1);
    assert_eq!(g.propbaser(1), Some(prop & !(1 << 63)));
    // Bad widths are refused and counted.
    let bw = g.errors().bad_width;
    g.redist_access(rd1(gicr::PROPBASER), 2, Some(0), &K);
    assert_eq!(g.errors().bad_width, bw + 1);
    assert_eq!(g.propbaser(5), None, "no such vCPU");
}

#[test]
fn s12_9_private_intids_are_raz_wi_in_the_distributor_with_are() {
    let mut g = Gic::new(2).unwrap();
    dist_w(&mut g, gicd::ISENABLER, 0xffff_ffff);
    assert_eq!(dist_r(&mut g, gicd::ISENABLER), 0);
    g.dist_access(u64::from(gicd::IPRIORITYR), 4, Some(0x8080_8080), &K);
    assert_eq!(g.dist_access(u64::from(gicd::IPRIORITYR), 4, None, &K), 0);
    // SPIs beyond the implemented ones too.
    dist_w(&mut g, gicd::ISENABLER + 4 * 5, 0xffff_ffff);
    assert_eq!(dist_r(&mut g, gicd::ISENABLER + 4 * 5), 0);
    // Legacy SGIR is ignored and counted.
    dist_w(&mut g, gicd::SGIR, 0x0001_0001);
    assert_eq!(g.errors().ignored_value, 1);
}

#[test]
fn s12_9_bit_registers_set_and_clear() {
    let mut g = Gic::new(2).unwrap();
    dist_w(&mut g, gicd::ISENABLER + 4, 0b1010);
    dist_w(&mut g, gicd::ISENABLER + 4, 0b0100);
    assert_eq!(dist_r(&mut g, gicd::ISENABLER + 4), 0b1110);
    assert_eq!(dist_r(&mut g, gicd::ICENABLER + 4), 0b1110);
    dist_w(&mut g, gicd::ICENABLER + 4, 0b0010);
    assert_eq!(dist_r(&mut g, gicd::ISENABLER + 4), 0b1100);
    dist_w(&mut g, gicd::ISPENDR + 4, 1);
    assert_eq!(dist_r(&mut g, gicd::ICPENDR + 4), 1);
    dist_w(&mut g, gicd::ICPENDR + 4, 1);
    assert_eq!(dist_r(&mut g, gicd::ISPENDR + 4), 0);
    // Byte and word priority accesses see the same bytes.
    g.dist_access(u64::from(gicd::IPRIORITYR + 33), 1, Some(0xa0), &K);
    assert_eq!(
        g.dist_access(u64::from(gicd::IPRIORITYR + 32), 4, None, &K),
        0xa000
    );
}

#[test]
fn s12_9_icfgr_of_sgis_is_read_only_edge_and_spis_are_configurable() {
    let mut g = Gic::new(1).unwrap();
    let o = u64::from(gicr::SGI_BASE + gicr::sgi::ICFGR0);
    assert_eq!(g.redist_access(o, 4, None, &K), 0xaaaa_aaaa);
    g.redist_access(o, 4, Some(0), &K);
    assert_eq!(g.redist_access(o, 4, None, &K), 0xaaaa_aaaa);
    assert_eq!(g.errors().read_only, 1);
    edge(&mut g, 33);
    assert_eq!(dist_r(&mut g, gicd::ICFGR + 8), 0b1000);
}

#[test]
fn s12_10_redistributor_typer_names_affinity_and_the_last_frame() {
    let mut g = Gic::new(3).unwrap();
    let typer = |g: &mut Gic, v: u64| g.redist_access(gicr::STRIDE * v + 8, 8, None, &K);
    assert_eq!(typer(&mut g, 0) & gicr::TYPER_LAST, 0);
    assert_eq!(typer(&mut g, 2) & gicr::TYPER_LAST, gicr::TYPER_LAST);
    assert_eq!(typer(&mut g, 2) >> 32, 2, "Aff0 = 2");
    assert_eq!((typer(&mut g, 1) >> 8) & 0xffff, 1, "Processor_Number");
    // Beyond the last redistributor: unmapped.
    assert_eq!(g.redist_access(gicr::STRIDE * 3 + 8, 8, None, &K), 0);
    assert_eq!(g.errors().unmapped, 1);
    // WAKER: ChildrenAsleep follows ProcessorSleep.
    let w = u64::from(gicr::WAKER);
    assert_ne!(g.redist_access(w, 4, None, &K), 0);
    g.redist_access(w, 4, Some(0), &K);
    assert_eq!(g.redist_access(w, 4, None, &K), 0);
}

#[test]
fn width_alignment_and_holes_are_counted_never_panic() {
    let mut g = Gic::new(2).unwrap();
    g.dist_access(u64::from(gicd::CTLR), 2, Some(1), &K);
    g.dist_access(u64::from(gicd::ISENABLER + 2), 4, Some(1), &K);
    g.dist_access(0x5000, 4, Some(1), &K);
    g.dist_access(gicd::SIZE + 4, 4, None, &K);
    let e = g.errors();
    assert_eq!((e.bad_width, e.misaligned, e.unmapped), (1, 1, 2));
    assert_eq!(dist_r(&mut g, gicd::CTLR) & 3, 0);
}

#[test]
fn s2_1_irouter_routes_an_spi_to_one_vcpu_and_irm_is_raz_wi() {
    let mut g = Gic::new(4).unwrap();
    enable_spi(&mut g, 40, 0x80, 2);
    let router = g.dist_access(u64::from(gicd::IROUTER + 8 * 40), 8, None, &K);
    assert_eq!(router, 2);
    g.dist_access(
        u64::from(gicd::IROUTER + 8 * 40),
        8,
        Some(2 | gicd::IROUTER_IRM),
        &K,
    );
    assert_eq!(
        g.dist_access(u64::from(gicd::IROUTER + 8 * 40), 8, None, &K),
        2
    );
    let kicks = Kicks::default();
    g.set_level(0, 40, true, &kicks);
    assert_eq!(*kicks.0.borrow(), [2]);
    assert!(g.deliverable(2, 40) && !g.deliverable(0, 40));
    let (inbox, mut ich) = (new_inbox(), FakeIch::new(4));
    g.flush(0, &inbox, &mut ich, &K);
    assert_eq!(ich.acknowledge(), None, "vCPU 0 gets nothing");
    g.flush(2, &inbox, &mut ich, &K);
    assert_eq!(ich.acknowledge(), Some(40));
}

#[test]
fn s12_2_sgi1r_decodes_target_list_range_and_broadcast() {
    // Aff1 = 1, target list bits 0 and 3: vCPUs 16 and 19 (of 20).
    let v = (1 << 16) | 0b1001 | (5 << 24);
    let s = Sgi::decode(v);
    assert_eq!((s.intid, s.broadcast), (5, false));
    assert_eq!(s.targets(0, 20), (1 << 16) | (1 << 19));
    // Targets that do not exist are dropped.
    assert_eq!(s.targets(0, 17), 1 << 16);
    // IRM: everyone but the sender.
    assert_eq!(Sgi::decode(1 << 40).targets(1, 4), 0b1101);
    // RS selects Aff0 16..31, which our vCPUs never have.
    assert_eq!(Sgi::decode((1 << 44) | 1).targets(0, 64), 0);
}

#[test]
fn an_sgi_is_delivered_to_its_targets_only() {
    let mut g = Gic::new(3).unwrap();
    dist_w(&mut g, gicd::CTLR, 3);
    for v in 0..3 {
        sgi_w(&mut g, v, gicr::sgi::IGROUPR0, 0xffff_ffff);
        sgi_w(&mut g, v, gicr::sgi::ISENABLER0, 0xffff);
    }
    let kicks = Kicks::default();
    assert_eq!(g.send_sgi(0, 0b110 | (3 << 24), &kicks), 0b110);
    assert_eq!(*kicks.0.borrow(), [1, 2]);
    let inbox = new_inbox();
    for (v, want) in [(0, None), (1, Some(3)), (2, Some(3))] {
        let mut ich = FakeIch::new(4);
        g.flush(v, &inbox, &mut ich, &K);
        assert_eq!(ich.acknowledge(), want, "vCPU {v}");
    }
}

#[test]
fn s11_flush_fills_by_priority_and_arms_underflow_when_registers_run_out() {
    let mut g = Gic::new(1).unwrap();
    for (id, prio) in [(32, 0xa0), (33, 0x20), (34, 0x60)] {
        enable_spi(&mut g, id, prio, 0);
        edge(&mut g, id);
        g.pulse(0, id, &K);
    }
    let (inbox, mut ich) = (new_inbox(), FakeIch::new(2));
    g.flush(0, &inbox, &mut ich, &K);
    let mut loaded: Vec<u32> = ich.lrs[..2].iter().map(|l| l.vintid()).collect();
    loaded.sort();
    assert_eq!(loaded, [33, 34], "the two best priorities");
    assert_ne!(ich.hcr & hcr::UIE, 0, "one left out: underflow armed");
    assert!(g.overflowed(0));
    // The guest takes both, in priority order, and deactivates them.
    assert_eq!(ich.acknowledge(), Some(33));
    assert!(ich.deactivate(33));
    assert_eq!(ich.acknowledge(), Some(34));
    assert!(ich.deactivate(34));
    assert!(
        ich.underflow(),
        "the maintenance interrupt brings the vCPU back"
    );
    g.sync(0, &mut ich, &Eois::default());
    g.flush(0, &inbox, &mut ich, &K);
    assert_eq!(ich.acknowledge(), Some(32));
    assert_eq!(ich.hcr & hcr::UIE, 0);
}

#[test]
fn s11_a_better_interrupt_never_waits_behind_a_worse_pending_register() {
    let mut g = Gic::new(1).unwrap();
    for id in [32, 33, 34] {
        enable_spi(&mut g, id, 0x80, 0);
        edge(&mut g, id);
    }
    g.dist_access(u64::from(gicd::IPRIORITYR + 34), 1, Some(0x10), &K);
    let (inbox, mut ich) = (new_inbox(), FakeIch::new(2));
    g.pulse(0, 32, &K);
    g.pulse(0, 33, &K);
    g.flush(0, &inbox, &mut ich, &K);
    g.sync(0, &mut ich, &Eois::default());
    g.pulse(0, 34, &K);
    g.flush(0, &inbox, &mut ich, &K);
    assert_eq!(ich.acknowledge(), Some(34), "the best one is in a register");
    // Nothing was lost: the evicted one is still pending in the model.
    assert!(g.deliverable(0, 32) || g.deliverable(0, 33));
}

#[test]
fn s4_edge_while_active_becomes_pending_and_active_in_the_same_register() {
    let mut g = Gic::new(1).unwrap();
    enable_spi(&mut g, 40, 0x80, 0);
    edge(&mut g, 40);
    let (inbox, mut ich) = (new_inbox(), FakeIch::new(4));
    g.pulse(0, 40, &K);
    g.flush(0, &inbox, &mut ich, &K);
    assert_eq!(ich.acknowledge(), Some(40));
    g.sync(0, &mut ich, &Eois::default());
    g.pulse(0, 40, &K);
    g.flush(0, &inbox, &mut ich, &K);
    let used: Vec<_> = ich.lrs[..4]
        .iter()
        .filter(|l| l.state() != LrState::Invalid)
        .collect();
    assert_eq!(used.len(), 1, "never two registers for one INTID");
    assert_eq!(used[0].state(), LrState::PendingActive);
    assert!(ich.deactivate(40));
    assert_eq!(ich.acknowledge(), Some(40));
}

#[test]
fn seed001_software_passthrough_completes_only_after_the_guests_deactivate() {
    let mut g = Gic::new(1).unwrap();
    enable_spi(&mut g, 33, 0x80, 0);
    assert!(g.set_passthrough(33, Passthrough::Software));
    let (inbox, mut ich, eois) = (new_inbox(), FakeIch::new(4), Eois::default());
    g.set_level(0, 33, true, &K);
    g.flush(0, &inbox, &mut ich, &K);
    assert!(ich.lrs[0].has_eoi());
    assert_eq!(ich.acknowledge(), Some(33));
    g.sync(0, &mut ich, &eois);
    assert!(eois.0.borrow().is_empty(), "active, not yet deactivated");
    // The device lowered its line meanwhile (the guest's handler serviced it).
    g.set_level(0, 33, false, &K);
    g.flush(0, &inbox, &mut ich, &K);
    assert!(ich.deactivate(33));
    g.sync(0, &mut ich, &eois);
    assert_eq!(*eois.0.borrow(), [33]);
    g.flush(0, &inbox, &mut ich, &K);
    assert_eq!(ich.acknowledge(), None, "no storm: the line is low");
}

#[test]
fn a_level_line_still_high_after_deactivate_is_delivered_again() {
    let mut g = Gic::new(1).unwrap();
    enable_spi(&mut g, 33, 0x80, 0);
    let (inbox, mut ich) = (new_inbox(), FakeIch::new(4));
    g.set_level(0, 33, true, &K);
    g.flush(0, &inbox, &mut ich, &K);
    assert_eq!(ich.acknowledge(), Some(33));
    assert!(ich.deactivate(33));
    g.sync(0, &mut ich, &Eois::default());
    g.flush(0, &inbox, &mut ich, &K);
    assert_eq!(ich.acknowledge(), Some(33));
}

#[test]
fn seed004_hw_linked_passthrough_deactivates_the_physical_intid() {
    let mut g = Gic::new(1).unwrap();
    enable_spi(&mut g, 33, 0x80, 0);
    edge(&mut g, 33);
    g.set_passthrough(33, Passthrough::Hw { pintid: 33 });
    let (inbox, mut ich, eois) = (new_inbox(), FakeIch::new(4), Eois::default());
    g.pulse(0, 33, &K);
    g.flush(0, &inbox, &mut ich, &K);
    assert!(ich.lrs[0].is_hw() && ich.lrs[0].pintid() == 33);
    assert_eq!(ich.acknowledge(), Some(33));
    assert!(ich.deactivate(33));
    assert_eq!(&ich.hw_deactivated[..ich.hw_count], [33]);
    g.sync(0, &mut ich, &eois);
    assert!(
        eois.0.borrow().is_empty(),
        "hardware did it; no software completion"
    );
}

#[test]
fn a_raise_in_the_inbox_from_another_thread_is_flushed() {
    let mut g = Gic::new(2).unwrap();
    enable_spi(&mut g, 35, 0x80, 1);
    edge(&mut g, 35);
    let inbox = new_inbox();
    std::thread::scope(|s| {
        s.spawn(|| assert!(inbox.raise(35).unwrap(), "first raise must kick"));
    });
    let mut ich = FakeIch::new(4);
    g.flush(1, &inbox, &mut ich, &K);
    assert_eq!(ich.acknowledge(), Some(35));
}

#[test]
fn disabled_or_group_disabled_interrupts_wait() {
    let mut g = Gic::new(1).unwrap();
    enable_spi(&mut g, 33, 0x80, 0);
    dist_w(&mut g, gicd::CTLR, 0);
    g.set_level(0, 33, true, &K);
    let (inbox, mut ich) = (new_inbox(), FakeIch::new(4));
    g.flush(0, &inbox, &mut ich, &K);
    assert_eq!(ich.acknowledge(), None);
    dist_w(&mut g, gicd::CTLR, 3);
    dist_w(&mut g, gicd::ICENABLER + 4, 1 << 1);
    g.flush(0, &inbox, &mut ich, &K);
    assert_eq!(ich.acknowledge(), None);
    dist_w(&mut g, gicd::ISENABLER + 4, 1 << 1);
    g.flush(0, &inbox, &mut ich, &K);
    assert_eq!(ich.acknowledge(), Some(33));
}

#[derive(Clone, Debug)]
enum Op {
    Pulse(u32),
    Level(u32, bool),
    Prio(u32, u8),
    Enable(u32, bool),
    /// The guest takes the best pending register; with `true` also deactivates it.
    Ack(bool),
    /// The guest deactivates the oldest active one.
    Deactivate,
    /// An exit: sync then flush.
    Exit,
}

fn op() -> impl Strategy<Value = Op> {
    let id = 32u32..40;
    prop_oneof![
        id.clone().prop_map(Op::Pulse),
        (id.clone(), any::<bool>()).prop_map(|(i, l)| Op::Level(i, l)),
        (id.clone(), prop::sample::select(vec![0x10u8, 0x40, 0x80]))
            .prop_map(|(i, p)| Op::Prio(i, p)),
        (id, any::<bool>()).prop_map(|(i, e)| Op::Enable(i, e)),
        any::<bool>().prop_map(Op::Ack),
        Just(Op::Deactivate),
        Just(Op::Exit),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Against a reference: SPIs 32..35 are edge, 36..39 level; two list registers
    /// for eight interrupts. Invariants: no INTID in two registers; what the guest
    /// acknowledges is never worse than a deliverable interrupt left outside the
    /// registers at the last flush (no priority inversion); and once the guest
    /// services everything, every pulse made while enabled was acknowledged at
    /// least once after it (nothing lost), and nothing deliverable remains.
    #[test]
    fn delivery_matches_the_reference(ops in prop::collection::vec(op(), 1..80)) {
        let mut g = Gic::new(1).unwrap();
        for id in 32..40 {
            enable_spi(&mut g, id, 0x80, 0);
            if id < 36 {
                edge(&mut g, id);
            }
        }
        let (inbox, mut ich, eois) = (new_inbox(), FakeIch::new(2), Eois::default());
        // Pulses not yet acknowledged, per edge INTID.
        let mut owed = [false; 40];
        let mut enabled = [true; 40];
        let mut prio = [0x80u8; 40];
        let mut active: Vec<u32> = Vec::new();
        g.flush(0, &inbox, &mut ich, &K);
        for op in ops {
            match op {
                Op::Pulse(i) if i < 36 => {
                    g.pulse(0, i, &K);
                    if enabled[i as usize] {
                        owed[i as usize] = true;
                    }
                }
                Op::Pulse(_) => {}
                Op::Level(i, l) => {
                    if i >= 36 {
                        g.set_level(0, i, l, &K);
                    }
                }
                Op::Prio(i, p) => {
                    g.dist_access(u64::from(gicd::IPRIORITYR + i), 1, Some(u64::from(p)), &K);
                    prio[i as usize] = p;
                }
                Op::Enable(i, e) => {
                    let reg = if e { gicd::ISENABLER } else { gicd::ICENABLER };
                    dist_w(&mut g, reg + 4, 1 << (i - 32));
                    enabled[i as usize] = e;
                }
                Op::Ack(deact) => {
                    // The best the registers offer must be at least as good as any
                    // deliverable interrupt the model holds outside them (when the
                    // registers were filled at the last flush and nothing is active).
                    if let Some(id) = ich.acknowledge() {
                        owed[id as usize] = false;
                        if deact {
                            prop_assert!(ich.deactivate(id));
                        } else {
                            active.push(id);
                        }
                    }
                }
                Op::Deactivate => {
                    if !active.is_empty() {
                        let id = active.remove(0);
                        prop_assert!(ich.deactivate(id));
                    }
                }
                Op::Exit => {
                    g.sync(0, &mut ich, &eois);
                    g.flush(0, &inbox, &mut ich, &K);
                    // No INTID twice, and priority: nothing outside beats a pending
                    // register while registers are full.
                    let live: Vec<_> = ich.lrs[..2].iter().filter(|l| l.state() != LrState::Invalid).collect();
                    for (a, la) in live.iter().enumerate() {
                        for lb in &live[a + 1..] {
                            prop_assert_ne!(la.vintid(), lb.vintid());
                        }
                    }
                    let worst_pending = live.iter().filter(|l| l.state() == LrState::Pending)
                        .map(|l| (l.priority(), l.vintid())).max();
                    if let (Some(w), true) = (worst_pending, live.len() == 2) {
                        for id in 32..40u32 {
                            let in_lr = live.iter().any(|l| l.vintid() == id);
                            if !in_lr && g.deliverable(0, id) {
                                prop_assert!((prio[id as usize], id) >= w,
                                    "{id} (prio {:#x}) left out for {w:?}", prio[id as usize]);
                            }
                        }
                    }
                }
            }
        }
        // Quiesce: lower every line, enable everything, and let the guest service
        // all until nothing is left.
        for id in 36..40 {
            g.set_level(0, id, false, &K);
        }
        for id in 32..40u32 {
            if !enabled[id as usize] {
                dist_w(&mut g, gicd::ISENABLER + 4, 1 << (id - 32));
            }
        }
        for id in active.drain(..) {
            prop_assert!(ich.deactivate(id));
        }
        for _ in 0..40 {
            g.sync(0, &mut ich, &eois);
            g.flush(0, &inbox, &mut ich, &K);
            while let Some(id) = ich.acknowledge() {
                owed[id as usize] = false;
                prop_assert!(ich.deactivate(id));
            }
        }
        g.sync(0, &mut ich, &eois);
        prop_assert!(owed.iter().all(|o| !o), "lost edges: {owed:?}");
        for id in 32..40 {
            prop_assert!(!g.deliverable(0, id), "{id} still deliverable");
        }
    }
}

#[test]
fn hw_linked_ppi_of_one_vcpu_only() {
    let mut g = Gic::new(2).unwrap();
    assert!(
        !g.set_ppi_passthrough(0, 33, Passthrough::Hw { pintid: 33 }),
        "an SPI"
    );
    assert!(
        !g.set_ppi_passthrough(0, 7, Passthrough::Hw { pintid: 7 }),
        "an SGI"
    );
    assert!(
        !g.set_ppi_passthrough(2, 27, Passthrough::Hw { pintid: 27 }),
        "no vCPU 2"
    );
    assert!(g.set_ppi_passthrough(1, 27, Passthrough::Hw { pintid: 27 }));
    dist_w(&mut g, gicd::CTLR, 3);
    for v in 0..2 {
        sgi_w(&mut g, v, gicr::sgi::IGROUPR0, 1 << 27);
        sgi_w(&mut g, v, gicr::sgi::ISENABLER0, 1 << 27);
    }
    let inbox = new_inbox();
    let (mut ich0, mut ich1) = (FakeIch::new(4), FakeIch::new(4));
    g.pulse(0, 27, &K);
    g.pulse(1, 27, &K);
    g.flush(0, &inbox, &mut ich0, &K);
    g.flush(1, &inbox, &mut ich1, &K);
    assert!(!ich0.lrs[0].is_hw(), "vCPU 0's timer PPI stays virtual");
    assert!(ich1.lrs[0].is_hw() && ich1.lrs[0].pintid() == 27);
}

/// Found booting Linux under hyp: the virtual timer's PPI is level-configured and
/// `HW`-linked; an exit while it was still pending in its register took it back and
/// dropped it, leaving the physical PPI active for good (the CPU's timer dead).
#[test]
fn a_pending_hw_linked_level_interrupt_taken_back_is_not_lost() {
    let mut g = Gic::new(1).unwrap();
    dist_w(&mut g, gicd::CTLR, 3);
    sgi_w(&mut g, 0, gicr::sgi::IGROUPR0, 1 << 27);
    sgi_w(&mut g, 0, gicr::sgi::ISENABLER0, 1 << 27);
    // Level (ICFGR1 bit for 27 clear: the reset value).
    assert!(g.set_ppi_passthrough(0, 27, Passthrough::Hw { pintid: 27 }));
    let (inbox, mut ich, eois) = (new_inbox(), FakeIch::new(4), Eois::default());
    g.pulse(0, 27, &K);
    g.flush(0, &inbox, &mut ich, &K);
    assert!(ich.lrs[0].is_hw());
    // The guest had interrupts masked: the register is still pending at the exit.
    g.sync(0, &mut ich, &eois);
    g.flush(0, &inbox, &mut ich, &K);
    assert_eq!(ich.acknowledge(), Some(27), "delivered after the take-back");
    assert!(ich.deactivate(27));
    assert_eq!(&ich.hw_deactivated[..ich.hw_count], [27]);
}

/// The software passthrough path: the register asks for the EOI maintenance interrupt
/// even when the guest configured the SPI as edge, a take-back keeps a pending
/// delivery, and the deactivated register is cleared (a stale `EOI` bit would keep the
/// maintenance interrupt asserted).
#[test]
fn software_passthrough_completes_once_and_clears_its_register() {
    let mut g = Gic::new(1).unwrap();
    enable_spi(&mut g, 33, 0x80, 0);
    edge(&mut g, 33);
    assert!(g.set_passthrough(33, Passthrough::Software));
    let (inbox, mut ich, eois) = (new_inbox(), FakeIch::new(4), Eois::default());
    g.pulse(0, 33, &K);
    g.flush(0, &inbox, &mut ich, &K);
    assert!(
        ich.lrs[0].has_eoi(),
        "EOI maintenance requested for an edge SPI"
    );
    g.sync(0, &mut ich, &eois);
    g.flush(0, &inbox, &mut ich, &K);
    assert_eq!(
        ich.acknowledge(),
        Some(33),
        "still delivered after a take-back"
    );
    assert!(ich.deactivate(33));
    g.sync(0, &mut ich, &eois);
    assert_eq!(*eois.0.borrow(), [33]);
    assert_eq!(ich.lrs[0].0, 0, "register cleared");
    g.flush(0, &inbox, &mut ich, &K);
    g.sync(0, &mut ich, &eois);
    assert_eq!(*eois.0.borrow(), [33], "one completion per delivery");
}

/// Equal priorities go by INTID, lowest first, across SGIs, PPIs and SPIs; the best
/// goes into the lowest free register; what does not fit waits for the next flush.
#[test]
fn s11_equal_priorities_are_delivered_lowest_intid_first() {
    let mut g = Gic::new(1).unwrap();
    dist_w(&mut g, gicd::CTLR, 3);
    sgi_w(&mut g, 0, gicr::sgi::IGROUPR0, (1 << 3) | (1 << 20));
    sgi_w(&mut g, 0, gicr::sgi::ISENABLER0, (1 << 3) | (1 << 20));
    for id in [3u32, 20] {
        let o = u64::from(gicr::SGI_BASE + gicr::sgi::IPRIORITYR + id);
        g.redist_access(o, 1, Some(0x80), &K);
    }
    for id in [60, 40, 34, 33] {
        enable_spi(&mut g, id, if id == 60 { 0x40 } else { 0x80 }, 0);
        edge(&mut g, id);
    }
    let ppi_edge = u64::from(gicr::SGI_BASE + gicr::sgi::ICFGR1);
    g.redist_access(ppi_edge, 4, Some(2 << (2 * (20 - 16))), &K);
    // Raised worst INTID first, so the order is not the order of arrival.
    for id in [60, 40, 34, 33, 20, 3] {
        g.pulse(0, id, &K);
    }
    let (inbox, mut ich) = (new_inbox(), FakeIch::new(3));
    g.flush(0, &inbox, &mut ich, &K);
    let ids: Vec<u32> = ich.lrs[..3].iter().map(|l| l.vintid()).collect();
    assert_eq!(
        ids,
        [60, 3, 20],
        "best priority, then lowest INTID, in slot order"
    );
    assert_ne!(ich.hcr & hcr::UIE, 0, "33, 34 and 40 left out");
    for want in [60, 3, 20] {
        assert_eq!(ich.acknowledge(), Some(want));
        assert!(ich.deactivate(want));
    }
    g.sync(0, &mut ich, &Eois::default());
    g.flush(0, &inbox, &mut ich, &K);
    let ids: Vec<u32> = ich.lrs[..3].iter().map(|l| l.vintid()).collect();
    assert_eq!(ids, [33, 34, 40]);
    assert_eq!(ich.hcr & hcr::UIE, 0, "everything fitted");
}

/// INTIDs the selection test plays with: SGIs, PPIs and SPIs at both ends.
const SEL_IDS: [u32; 12] = [0, 3, 15, 16, 20, 27, 32, 33, 40, 63, 64, 95];

#[derive(Clone, Debug)]
enum SelOp {
    Prio(usize, u32, u8),
    Enable(usize, u32, bool),
    Group(usize, u32, bool),
    Edge(usize, u32, bool),
    Ctlr(u8),
    Route(u32, usize),
    Pulse(usize, u32),
    Level(usize, u32, bool),
    ClearPending(usize, u32),
    Sgi(usize, u64),
    Pass(u32, u8),
    /// The guest of a vCPU acknowledges the best register, and with `true`
    /// deactivates it.
    Ack(usize, bool),
    /// The guest of a vCPU deactivates whatever register `n` holds.
    Deactivate(usize, usize),
    /// The vCPU exits and re-enters: sync, then flush.
    Exit(usize),
}

fn sel_op() -> impl Strategy<Value = SelOp> {
    let v = 0usize..3;
    let id = prop::sample::select(SEL_IDS.to_vec());
    let spi = prop::sample::select(SEL_IDS[6..].to_vec());
    prop_oneof![
        (
            v.clone(),
            id.clone(),
            prop::sample::select(vec![0x10u8, 0x40, 0x80])
        )
            .prop_map(|(v, i, p)| SelOp::Prio(v, i, p)),
        (v.clone(), id.clone(), any::<bool>()).prop_map(|(v, i, e)| SelOp::Enable(v, i, e)),
        (v.clone(), id.clone(), any::<bool>()).prop_map(|(v, i, e)| SelOp::Group(v, i, e)),
        (v.clone(), id.clone(), any::<bool>()).prop_map(|(v, i, e)| SelOp::Edge(v, i, e)),
        prop::sample::select(vec![0u8, 1, 2, 3, 3, 3]).prop_map(SelOp::Ctlr),
        (spi.clone(), 0usize..4).prop_map(|(i, v)| SelOp::Route(i, v)),
        (v.clone(), id.clone()).prop_map(|(v, i)| SelOp::Pulse(v, i)),
        (v.clone(), id.clone()).prop_map(|(v, i)| SelOp::Pulse(v, i)),
        (v.clone(), id.clone(), any::<bool>()).prop_map(|(v, i, l)| SelOp::Level(v, i, l)),
        (v.clone(), id).prop_map(|(v, i)| SelOp::ClearPending(v, i)),
        (v.clone(), 0u64..16, 0u64..8, any::<bool>()).prop_map(|(v, sgi, list, all)| {
            SelOp::Sgi(v, (sgi << 24) | list | (u64::from(all) << 40))
        }),
        (spi, 0u8..3).prop_map(|(i, k)| SelOp::Pass(i, k)),
        (v.clone(), any::<bool>()).prop_map(|(v, d)| SelOp::Ack(v, d)),
        (v.clone(), 0usize..4).prop_map(|(v, n)| SelOp::Deactivate(v, n)),
        v.clone().prop_map(SelOp::Exit),
        v.prop_map(SelOp::Exit),
    ]
}

/// `off` of the bit register at `base` for `id`: the distributor's for an SPI, vCPU
/// `v`'s redistributor's for a private one (`base` is then the SGI-frame offset).
fn bit_w(g: &mut Gic, v: usize, id: u32, dist_base: u32, sgi_base: u32, set: bool) {
    let bit = 1u64 << (id % 32);
    if id >= 32 {
        let reg = dist_base + 4 * (id / 32);
        let now = dist_r(g, reg);
        let want = if set { now | bit } else { now & !bit };
        dist_w(g, reg, want);
    } else {
        let o = gicr::STRIDE * v as u64 + u64::from(gicr::SGI_BASE + sgi_base);
        let now = g.redist_access(o, 4, None, &K);
        let want = if set { now | bit } else { now & !bit };
        g.redist_access(o, 4, Some(want), &K);
    }
}

/// The priority of `id` as vCPU `v` sees it, read through the registers.
fn prio_r(g: &mut Gic, v: usize, id: u32) -> u8 {
    if id >= 32 {
        g.dist_access(u64::from(gicd::IPRIORITYR + id), 1, None, &K) as u8
    } else {
        let o = gicr::STRIDE * v as u64 + u64::from(gicr::SGI_BASE + gicr::sgi::IPRIORITYR + id);
        g.redist_access(o, 1, None, &K) as u8
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// What `flush` puts in the free list registers, against a selection by scan
    /// through the public API: after `sync`, the candidates are every INTID
    /// `deliverable` to the vCPU and not in a live register; they go, ordered by
    /// (priority, INTID), into the free registers lowest first, and `UIE` is set
    /// exactly when some are left over. Three vCPUs with 1, 2 and 4 registers; SGIs,
    /// PPIs and SPIs with few priorities (many ties), edge and level, both groups,
    /// routing, passthrough, and a guest that acknowledges and deactivates.
    #[test]
    fn flush_selects_like_a_scan_of_every_intid(ops in prop::collection::vec(sel_op(), 1..120)) {
        let mut g = Gic::new(3).unwrap();
        let inbox = new_inbox();
        let eois = Eois::default();
        let mut ichs = [FakeIch::new(1), FakeIch::new(2), FakeIch::new(4)];
        // Start with everything enabled in group 1, SPIs spread over the vCPUs.
        dist_w(&mut g, gicd::CTLR, 3);
        for id in SEL_IDS {
            for v in 0..3 {
                bit_w(&mut g, v, id, gicd::IGROUPR, gicr::sgi::IGROUPR0, true);
                bit_w(&mut g, v, id, gicd::ISENABLER, gicr::sgi::ISENABLER0, true);
            }
            if id >= 32 {
                let router = crate::gicv3::affinity_of(id as usize % 3);
                g.dist_access(u64::from(gicd::IROUTER + 8 * id), 8, Some(router), &K);
            }
        }
        for op in ops {
            match op {
                SelOp::Prio(v, id, p) => {
                    let o = if id >= 32 {
                        u64::from(gicd::IPRIORITYR + id)
                    } else {
                        gicr::STRIDE * v as u64 + u64::from(gicr::SGI_BASE + gicr::sgi::IPRIORITYR + id)
                    };
                    if id >= 32 {
                        g.dist_access(o, 1, Some(u64::from(p)), &K);
                    } else {
                        g.redist_access(o, 1, Some(u64::from(p)), &K);
                    }
                }
                SelOp::Enable(v, id, e) => {
                    let (d, s) = if e {
                        (gicd::ISENABLER, gicr::sgi::ISENABLER0)
                    } else {
                        (gicd::ICENABLER, gicr::sgi::ICENABLER0)
                    };
                    bit_w(&mut g, v, id, d, s, true);
                }
                SelOp::Group(v, id, on) => {
                    bit_w(&mut g, v, id, gicd::IGROUPR, gicr::sgi::IGROUPR0, on);
                }
                SelOp::Edge(v, id, e) => {
                    let field = 2u64 << (2 * (id % 16));
                    if id >= 32 {
                        let reg = gicd::ICFGR + 4 * (id / 16);
                        let now = dist_r(&mut g, reg);
                        dist_w(&mut g, reg, if e { now | field } else { now & !field });
                    } else if id >= 16 {
                        let o = gicr::STRIDE * v as u64 + u64::from(gicr::SGI_BASE + gicr::sgi::ICFGR1);
                        let now = g.redist_access(o, 4, None, &K);
                        g.redist_access(o, 4, Some(if e { now | field } else { now & !field }), &K);
                    }
                }
                SelOp::Ctlr(c) => dist_w(&mut g, gicd::CTLR, u64::from(c)),
                SelOp::Route(id, v) => {
                    g.dist_access(
                        u64::from(gicd::IROUTER + 8 * id),
                        8,
                        Some(crate::gicv3::affinity_of(v)),
                        &K,
                    );
                }
                SelOp::Pulse(v, id) => g.pulse(v, id, &K),
                SelOp::Level(v, id, l) => g.set_level(v, id, l, &K),
                SelOp::ClearPending(v, id) => {
                    bit_w(&mut g, v, id, gicd::ICPENDR, gicr::sgi::ICPENDR0, true);
                }
                SelOp::Sgi(v, raw) => {
                    g.send_sgi(v, raw, &K);
                }
                SelOp::Pass(id, k) => {
                    let pass = match k {
                        0 => Passthrough::None,
                        1 => Passthrough::Software,
                        _ => Passthrough::Hw { pintid: id },
                    };
                    g.set_passthrough(id, pass);
                }
                SelOp::Ack(v, deact) => {
                    if let Some(id) = ichs[v].acknowledge() {
                        if deact {
                            prop_assert!(ichs[v].deactivate(id));
                        }
                    }
                }
                SelOp::Deactivate(v, n) => {
                    let ich = &mut ichs[v];
                    let id = ich.lrs[n % ich.num].vintid();
                    ich.deactivate(id);
                }
                SelOp::Exit(v) => {
                    let ich = &mut ichs[v];
                    g.sync(v, ich, &eois);
                    let n = ich.num;
                    let live: Vec<u32> = ich.lrs[..n]
                        .iter()
                        .filter(|l| l.state() != LrState::Invalid)
                        .map(|l| l.vintid())
                        .collect();
                    let free: Vec<usize> =
                        (0..n).filter(|&i| ich.lrs[i].state() == LrState::Invalid).collect();
                    let mut want: Vec<(u8, u32)> = (0..96)
                        .filter(|&id| g.deliverable(v, id) && !live.contains(&id))
                        .collect::<Vec<u32>>()
                        .into_iter()
                        .map(|id| (prio_r(&mut g, v, id), id))
                        .collect();
                    want.sort();
                    let ich = &mut ichs[v];
                    g.flush(v, &inbox, ich, &K);
                    for (k, &slot) in free.iter().enumerate() {
                        let l = ich.lrs[slot];
                        match want.get(k) {
                            Some(&(p, id)) => {
                                prop_assert_eq!(l.state(), LrState::Pending, "slot {}", slot);
                                prop_assert_eq!((l.priority(), l.vintid()), (p, id), "slot {}", slot);
                            }
                            None => prop_assert_eq!(l.state(), LrState::Invalid, "slot {}", slot),
                        }
                    }
                    let over = want.len() > free.len();
                    prop_assert_eq!(g.overflowed(v), over);
                    prop_assert_eq!(ich.hcr & hcr::UIE != 0, over);
                }
            }
            prop_assert!(g.ready_summary_in_step());
        }
    }
}

/// `sync` says whether a register changed; when it did not (and nothing was left out
/// or raised), a flush changes nothing: hyp skips it on such exits.
#[test]
fn sync_reports_change_and_an_unchanged_flush_is_a_no_op() {
    let mut g = Gic::new(1).unwrap();
    enable_spi(&mut g, 33, 0x80, 0);
    edge(&mut g, 33);
    let (inbox, mut ich, eois) = (new_inbox(), FakeIch::new(4), Eois::default());
    g.flush(0, &inbox, &mut ich, &K);
    assert!(!g.sync(0, &mut ich, &eois), "nothing in the registers");
    g.pulse(0, 33, &K);
    g.flush(0, &inbox, &mut ich, &K);
    assert!(g.sync(0, &mut ich, &eois), "a pending register taken back");
    g.flush(0, &inbox, &mut ich, &K);
    assert_eq!(ich.acknowledge(), Some(33));
    assert!(!g.sync(0, &mut ich, &eois), "active: stays where it is");
    assert!(!g.overflowed(0));
    let before = ich.lrs;
    g.flush(0, &inbox, &mut ich, &K);
    assert_eq!(
        ich.lrs, before,
        "a flush after an unchanged sync is a no-op"
    );
    assert!(ich.deactivate(33));
    assert!(g.sync(0, &mut ich, &eois), "deactivated: freed");
}
