//! Targets `vgicd` and `vgicr`: guest MMIO to the vGICv3's distributor or its
//! redistributors (any width and offset), mixed with device lines, SGIs, and vCPU
//! exits (flush, the guest acknowledging and deactivating, sync) on a fake virtual CPU
//! interface. After every step: nothing panicked, no INTID sits in two list registers
//! of a vCPU, every list register names an INTID that exists, and the error counters
//! only grow.
use std::cell::Cell;

use virq_arm::gicv3::{new_inbox, EoiSink, Inbox, Kick, Passthrough, VGicV3};
use virq_arm::lr::{FakeIch, LrState};
use virq_arm::regs::{gicd, gicr};

use crate::Input;

/// Which window the MMIO accesses favour.
#[derive(Clone, Copy)]
pub enum Focus {
    /// The distributor frame.
    Distributor,
    /// The redistributor frames.
    Redistributors,
}

struct Kicks(Cell<u64>);
impl Kick for Kicks {
    fn kick(&self, vcpu: usize) {
        assert!(vcpu < 8, "kicked vCPU {vcpu} that does not exist");
        self.0.set(self.0.get() + 1);
    }
}

struct Eois;
impl EoiSink for Eois {
    fn guest_completed(&self, intid: u32) {
        assert!((32..32 + 128).contains(&intid), "completed INTID {intid}");
    }
}

/// Run `data` against a 4-vCPU vGICv3 with 128 SPIs.
pub fn vgicv3(data: &[u8], focus: Focus) {
    let mut inp = Input(data);
    let vcpus = usize::from(inp.u8() % 4) + 1;
    let mut g: VGicV3<128, 8> = VGicV3::new(vcpus).expect("valid config");
    let kicks = Kicks(Cell::new(0));
    // A vCPU's inbox is built at its first raise: `new_inbox` marks all 1,024 INTIDs
    // as handoff ids, which under coverage instrumentation cost more than most whole
    // inputs. Until then the vCPU flushes with an inbox that is never raised (nothing
    // to take, as from a new one).
    let mut inboxes: Vec<Option<Inbox>> = (0..vcpus).map(|_| None).collect();
    let never_raised = Inbox::new();
    let mut ichs: Vec<FakeIch> = (0..vcpus).map(|v| FakeIch::new(2 + v)).collect();
    let dist = [
        gicd::CTLR,
        gicd::IGROUPR,
        gicd::ISENABLER,
        gicd::ISPENDR,
        gicd::ICACTIVER,
        gicd::IPRIORITYR,
        gicd::ICFGR,
        gicd::IROUTER + 8 * 32,
        gicd::SGIR,
        gicd::PIDR2,
    ]
    .map(u64::from);
    let redist = [
        0,
        u64::from(gicr::TYPER),
        u64::from(gicr::WAKER),
        u64::from(gicr::SGI_BASE + gicr::sgi::ISENABLER0),
        u64::from(gicr::SGI_BASE + gicr::sgi::IPRIORITYR),
        u64::from(gicr::SGI_BASE + gicr::sgi::ICFGR1),
        gicr::STRIDE + u64::from(gicr::SGI_BASE + gicr::sgi::ISPENDR0),
        gicr::STRIDE * 3 + u64::from(gicr::TYPER),
    ];
    let mut last_errors = 0;
    while !inp.done() {
        let op = inp.u8() % 10;
        let v = usize::from(inp.u8()) % vcpus;
        match (op, focus) {
            (0..=2, Focus::Distributor) | (0, Focus::Redistributors) => {
                let (off, size) = (inp.offset(&dist) % 0x1_2000, inp.size());
                let write = (op != 0).then(|| u64::from(inp.u32()) | (u64::from(inp.u8()) << 32));
                g.dist_access(off, size, write, &kicks);
            }
            (0..=2, Focus::Redistributors) | (3, Focus::Distributor) => {
                let (off, size) = (inp.offset(&redist) % 0xa_0000, inp.size());
                let write = (op != 0).then(|| u64::from(inp.u32()));
                g.redist_access(off, size, write, &kicks);
            }
            (3, _) | (4, _) => {
                let id = u32::from(inp.u16()) % 1100;
                g.set_level(v, id, inp.u8() & 1 == 1, &kicks);
            }
            (5, _) => {
                let id = u32::from(inp.u16()) % 1100;
                if inp.u8() & 3 == 0 {
                    let _ = inboxes[v].get_or_insert_with(new_inbox).raise(id);
                } else {
                    g.pulse(v, id, &kicks);
                }
            }
            (6, _) => {
                let val = u64::from(inp.u32()) | (u64::from(inp.u32()) << 32);
                let targets = g.send_sgi(v, val, &kicks);
                assert_eq!(targets >> vcpus, 0, "SGI to a vCPU that does not exist");
            }
            (7, _) => {
                let id = 32 + u32::from(inp.u8()) % 128;
                let pass = match inp.u8() % 3 {
                    0 => Passthrough::None,
                    1 => Passthrough::Software,
                    _ => Passthrough::Hw { pintid: id },
                };
                g.set_passthrough(id, pass);
            }
            (8, _) => {
                let ich = &mut ichs[v];
                match inp.u8() % 3 {
                    0 => {
                        ich.acknowledge();
                    }
                    1 => {
                        let id = ich.lrs[usize::from(inp.u8()) % ich.num].vintid();
                        ich.deactivate(id);
                    }
                    _ => {
                        if let Some(id) = ich.acknowledge() {
                            ich.deactivate(id);
                        }
                    }
                }
            }
            _ => {
                g.sync(v, &mut ichs[v], &Eois);
                let inbox = inboxes[v].as_ref().unwrap_or(&never_raised);
                g.flush(v, inbox, &mut ichs[v], &kicks);
                let ich = &ichs[v];
                let live: Vec<u32> = ich.lrs[..ich.num]
                    .iter()
                    .filter(|l| l.state() != LrState::Invalid)
                    .map(|l| l.vintid())
                    .collect();
                for (i, a) in live.iter().enumerate() {
                    assert!(*a < 32 + 128, "list register names INTID {a}");
                    assert!(
                        !live[i + 1..].contains(a),
                        "INTID {a} in two list registers"
                    );
                }
            }
        }
        let e = g.errors().total();
        assert!(e >= last_errors, "error counters went down");
        last_errors = e;
    }
}
