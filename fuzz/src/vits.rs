//! Target `vits`: the guest-visible ITS ([`virq_arm::vits`]) driven by a guest that
//! writes its registers (any width and offset), writes commands into its queue in
//! guest memory (well-formed ones from a small field space, and raw bytes), makes
//! queue slots unreadable, and has devices send MSIs. After every step: nothing
//! panicked, the host's table built from the reported actions alone equals the
//! model's mappings (each Map new and to a vCPU that exists, each Unmap/Move of a
//! mapping the host holds), no vINTID is mapped twice, MSIs translate to exactly
//! those mappings, and the error counters only grow.
use std::cell::Cell;
use std::collections::BTreeMap;

use virq_arm::vits::{gits, GuestMem, GuestMemError, HostAction, ItsConfig, VIts};

use crate::Input;

const QBASE: u64 = 0x4000_0000;
const QBYTES: usize = 0x2000;
const VCPUS: usize = 3;

struct Mem {
    bytes: Vec<u8>,
    /// A queue offset whose read fails.
    bad: Cell<Option<u64>>,
}

impl GuestMem for Mem {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemError> {
        let off = gpa.checked_sub(QBASE).ok_or(GuestMemError)?;
        if self.bad.get() == Some(off) {
            return Err(GuestMemError);
        }
        let start = usize::try_from(off).map_err(|_| GuestMemError)?;
        let src = self
            .bytes
            .get(start..start.saturating_add(buf.len()))
            .ok_or(GuestMemError)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// The host's view: (DeviceID, EventID) → (vINTID, vCPU), built from actions only.
type Host = BTreeMap<(u32, u32), (u32, usize)>;

fn apply(host: &mut Host, a: HostAction) {
    match a {
        HostAction::Map {
            device,
            event,
            vintid,
            vcpu,
        } => {
            assert!(vcpu < VCPUS, "Map to vCPU {vcpu}");
            assert!((8192..1 << 15).contains(&vintid), "Map of INTID {vintid}");
            assert!(
                host.insert((device, event), (vintid, vcpu)).is_none(),
                "Map of a mapped event"
            );
        }
        HostAction::Unmap {
            device,
            event,
            vintid,
            vcpu,
        } => assert_eq!(
            host.remove(&(device, event)),
            Some((vintid, vcpu)),
            "Unmap of a mapping the host does not hold"
        ),
        HostAction::Move {
            device,
            event,
            vintid,
            from_vcpu,
            to_vcpu,
        } => {
            assert!(to_vcpu < VCPUS && to_vcpu != from_vcpu);
            let m = host.get_mut(&(device, event)).expect("Move of no mapping");
            assert_eq!(*m, (vintid, from_vcpu), "Move from the wrong vCPU");
            m.1 = to_vcpu;
        }
        HostAction::Inv {
            device,
            event,
            vintid,
            vcpu,
        }
        | HostAction::Int {
            device,
            event,
            vintid,
            vcpu,
        }
        | HostAction::Clear {
            device,
            event,
            vintid,
            vcpu,
        } => assert_eq!(host.get(&(device, event)), Some(&(vintid, vcpu))),
        HostAction::InvAll { vcpu } | HostAction::Sync { vcpu } => assert!(vcpu < VCPUS),
        HostAction::MovAll { from_vcpu, to_vcpu } => {
            assert!(from_vcpu < VCPUS && to_vcpu < VCPUS && from_vcpu != to_vcpu)
        }
    }
}

/// A command from a small field space (so that most of them do something).
fn command(inp: &mut Input) -> [u64; 4] {
    let code = [
        0x01u8, 0x03, 0x04, 0x05, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x29,
    ][usize::from(inp.u8() % 13)];
    let device = u64::from(inp.u8() % 8);
    let event = u64::from(inp.u8() % 20);
    let intid = 8180 + u64::from(inp.u8() % 64);
    let icid = u64::from(inp.u8() % 6);
    let rd = u64::from(inp.u8() % 5);
    let v = u64::from(inp.u8() % 8 != 0) << 63;
    let (dw1, dw2) = match code {
        0x08 => (event % 8, v | (rd << 12)),
        0x09 => (0, v | rd << 16 | icid),
        _ => (event | intid << 32, rd << 16 | icid),
    };
    [u64::from(code) | device << 32, dw1, dw2, (rd ^ 1) << 16]
}

/// Run `data` against an ITS of 4 device slots, 16 events each, 4 collections, for
/// 3 vCPUs, with a 2-page queue.
pub fn vits(data: &[u8]) {
    let mut inp = Input(data);
    let mut its: VIts<4, 16, 4> = VIts::new(ItsConfig {
        vcpus: VCPUS,
        intid_bits: 15,
        device_bits: 8,
    })
    .expect("valid config");
    let mut mem = Mem {
        bytes: vec![0; QBYTES],
        bad: Cell::new(None),
    };
    let mut host = Host::new();
    let mut wr = 0usize;
    let mut last_errors = (0, 0);
    // A usable ITS to start from: a device table, the queue, enabled.
    let setup = [
        (gits::BASER, (1u64 << 63) | 0x4100_0000),
        (gits::CBASER, (1u64 << 63) | QBASE | 1),
        (gits::CTLR, 1),
    ];
    for (off, v) in setup {
        let size = if off == gits::CTLR { 4 } else { 8 };
        its.access(u64::from(off), size, Some(v), &mem, &mut |a| {
            apply(&mut host, a)
        });
    }
    while !inp.done() {
        let mut acts = Vec::new();
        match inp.u8() % 8 {
            0 => {
                let bases: [u64; 9] = [0, 4, 8, 0x80, 0x88, 0x90, 0x100, 0x108, 0x1_0040];
                let off = inp.offset(&bases) % 0x2_1000;
                let (size, v) = (
                    inp.size(),
                    u64::from(inp.u32()) | u64::from(inp.u32()) << 32,
                );
                let write = (inp.u8() & 1 == 1).then_some(v);
                its.access(off, size, write, &mem, &mut |a| acts.push(a));
            }
            1 => {
                let (d, e) = (u32::from(inp.u8() % 9), u32::from(inp.u8() % 20));
                if let Some(t) = its.translate(d, e) {
                    assert_eq!(host.get(&(d, e)), Some(&(t.vintid, t.vcpu)));
                }
            }
            2 => {
                let at = usize::from(inp.u8()) % (QBYTES / 32) * 32;
                mem.bad.set((inp.u8() & 1 == 1).then_some(at as u64));
            }
            op => {
                let n = usize::from(inp.u8() % 4) + 1;
                for _ in 0..n {
                    let cmd = if op == 3 {
                        [0; 4].map(|_: u64| u64::from(inp.u32()) | u64::from(inp.u32()) << 32)
                    } else {
                        command(&mut inp)
                    };
                    for (i, w) in cmd.iter().enumerate() {
                        mem.bytes[wr + 8 * i..wr + 8 * i + 8].copy_from_slice(&w.to_le_bytes());
                    }
                    wr = (wr + 32) % QBYTES;
                }
                let retry = u64::from(inp.u8() % 4 == 0);
                its.access(
                    u64::from(gits::CWRITER),
                    8,
                    Some(wr as u64 | retry),
                    &mem,
                    &mut |a| acts.push(a),
                );
            }
        }
        for a in acts {
            apply(&mut host, a);
        }
        let model: Host = its
            .mappings()
            .map(|m| ((m.device, m.event), (m.vintid, m.vcpu)))
            .collect();
        assert_eq!(model, host, "host view differs from the model's mappings");
        let mut vintids: Vec<u32> = model.values().map(|v| v.0).collect();
        vintids.sort_unstable();
        vintids.dedup();
        assert_eq!(vintids.len(), model.len(), "a vINTID mapped twice");
        let errors = (its.errors().total(), its.cmd_errors().total());
        assert!(
            errors.0 >= last_errors.0 && errors.1 >= last_errors.1,
            "error counters went down"
        );
        last_errors = errors;
    }
}
