//! Tests of the guest-visible ITS, one per command and register (IHI 0069H §5.3,
//! §12.19), with commands encoded by hyp-io's host ITS encoders where it has them
//! (MAPD, MAPC, MAPTI, INT, CLEAR, DISCARD, INV, SYNC) and here from the spec's
//! layout for the others (MAPI, MOVI, INVALL, MOVALL); and a property test of random
//! command streams against the host's view of the mappings.
use std::collections::BTreeMap;
use std::vec::Vec;

use hyp_io::gic_its::{cbaser, Baser, Cmd, Creadr, GitsTyper};
use proptest::prelude::*;
use virq_core::mmio::MmioDevice;

use crate::vits::{
    gits, ConfigError, Delivery, GuestMem, GuestMemError, HostAction, ItsConfig, ItsFrames,
    Mapping, VIts,
};

type Its = VIts<4, 64, 8>;

const VCPUS: usize = 4;
const QBASE: u64 = 0x4000_0000;
const QPAGES: usize = 1;
const QBYTES: u64 = 0x1000 * QPAGES as u64;
const DEVTAB: u64 = 0x4010_0000;

fn cfg() -> ItsConfig {
    ItsConfig {
        vcpus: VCPUS,
        intid_bits: 16,
        device_bits: 16,
    }
}

/// Guest RAM: `QBYTES` at `QBASE`; reads outside fail, as do reads at `bad`.
struct Mem {
    bytes: Vec<u8>,
    bad: Option<u64>,
}

impl GuestMem for Mem {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemError> {
        if self.bad == Some(gpa) {
            return Err(GuestMemError);
        }
        let start = gpa.checked_sub(QBASE).ok_or(GuestMemError)? as usize;
        let src = self
            .bytes
            .get(start..start + buf.len())
            .ok_or(GuestMemError)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// An ITS with its device table (one 4 KiB page: 512 DeviceIDs), queue, and enabled.
struct H {
    its: Its,
    mem: Mem,
    acts: Vec<HostAction>,
    wr: u64,
}

impl H {
    fn new() -> H {
        let mut h = H::disabled();
        h.w32(gits::CTLR, 1);
        h
    }

    fn disabled() -> H {
        let mut h = H {
            its: Its::new(cfg()).unwrap(),
            mem: Mem {
                bytes: vec![0; QBYTES as usize],
                bad: None,
            },
            acts: Vec::new(),
            wr: 0,
        };
        let dev = Baser(h.r64(gits::BASER)).flat(DEVTAB, 1).0;
        h.w64(gits::BASER, dev);
        h.w64(gits::CBASER, cbaser(QBASE, QPAGES));
        h
    }

    fn access(&mut self, off: u32, size: u8, v: Option<u64>) -> u64 {
        let acts = &mut self.acts;
        self.its
            .access(u64::from(off), size, v, &self.mem, &mut |a| acts.push(a))
    }
    fn r64(&mut self, off: u32) -> u64 {
        self.access(off, 8, None)
    }
    fn w64(&mut self, off: u32, v: u64) {
        self.access(off, 8, Some(v));
    }
    fn r32(&mut self, off: u32) -> u64 {
        self.access(off, 4, None)
    }
    fn w32(&mut self, off: u32, v: u64) {
        self.access(off, 4, Some(v));
    }

    /// Queue `cmds` and write `GITS_CWRITER` once.
    fn cmds(&mut self, cmds: &[[u64; 4]]) {
        for c in cmds {
            let at = self.wr as usize;
            for (i, w) in c.iter().enumerate() {
                self.mem.bytes[at + 8 * i..at + 8 * i + 8].copy_from_slice(&w.to_le_bytes());
            }
            self.wr = (self.wr + 32) % QBYTES;
        }
        let wr = self.wr;
        self.w64(gits::CWRITER, wr);
    }

    fn run(&mut self, cmds: &[Cmd]) -> Vec<HostAction> {
        let enc: Vec<[u64; 4]> = cmds.iter().map(|c| c.encode()).collect();
        self.cmds(&enc);
        self.take()
    }

    fn take(&mut self) -> Vec<HostAction> {
        std::mem::take(&mut self.acts)
    }

    fn mappings(&self) -> Vec<Mapping> {
        self.its.mappings().collect()
    }

    /// MAPD `device` (2^`bits` events), MAPC collection `icid` → `vcpu`.
    fn setup(&mut self, device: u32, bits: u32, icid: u16, vcpu: u64) {
        self.run(&[mapd(device, bits, 0x5000_0000), mapc(icid, vcpu)]);
    }
}

fn mapd(device: u32, event_bits: u32, itt: u64) -> Cmd {
    Cmd::Mapd {
        device,
        itt,
        event_bits,
        valid: true,
    }
}
fn unmapd(device: u32) -> Cmd {
    Cmd::Mapd {
        device,
        itt: 0,
        event_bits: 1,
        valid: false,
    }
}
fn mapc(icid: u16, rdbase: u64) -> Cmd {
    Cmd::Mapc {
        icid,
        rdbase,
        valid: true,
    }
}
fn mapti(device: u32, event: u32, pintid: u32, icid: u16) -> Cmd {
    Cmd::Mapti {
        device,
        event,
        pintid,
        icid,
    }
}

// The commands hyp-io does not send, from IHI 0069H §5.3: DW0 [7:0] code,
// DW0 [63:32] DeviceID, DW1 [31:0] EventID, DW2 [15:0] ICID, DW2/DW3 [51:16] RDbase.
fn mapi(device: u32, event: u32, icid: u16) -> [u64; 4] {
    [
        0x0b | u64::from(device) << 32,
        u64::from(event),
        u64::from(icid),
        0,
    ]
}
fn movi(device: u32, event: u32, icid: u16) -> [u64; 4] {
    [
        0x01 | u64::from(device) << 32,
        u64::from(event),
        u64::from(icid),
        0,
    ]
}
fn invall(icid: u16) -> [u64; 4] {
    [0x0d, 0, u64::from(icid), 0]
}
fn movall(rd1: u64, rd2: u64) -> [u64; 4] {
    [0x0e, 0, rd1 << 16, rd2 << 16]
}

fn map(device: u32, event: u32, vintid: u32, vcpu: usize) -> HostAction {
    HostAction::Map {
        device,
        event,
        vintid,
        vcpu,
    }
}
fn unmap(device: u32, event: u32, vintid: u32, vcpu: usize) -> HostAction {
    HostAction::Unmap {
        device,
        event,
        vintid,
        vcpu,
    }
}

#[test]
fn config_is_checked() {
    let bad = |c: ItsConfig| Its::new(c).err();
    assert_eq!(
        bad(ItsConfig { vcpus: 0, ..cfg() }),
        Some(ConfigError::Vcpus)
    );
    assert_eq!(
        bad(ItsConfig {
            intid_bits: 13,
            ..cfg()
        }),
        Some(ConfigError::IntidBits)
    );
    assert_eq!(
        bad(ItsConfig {
            intid_bits: 17,
            ..cfg()
        }),
        Some(ConfigError::IntidBits)
    );
    assert_eq!(
        bad(ItsConfig {
            device_bits: 0,
            ..cfg()
        }),
        Some(ConfigError::DeviceBits)
    );
    assert_eq!(
        VIts::<4, 48, 8>::new(cfg()).err(),
        Some(ConfigError::Events)
    );
    assert_eq!(
        VIts::<4, 64, 256>::new(cfg()).err(),
        Some(ConfigError::Capacity)
    );
}

/// §12.19.21 `GITS_TYPER`, read through hyp-io's decoder.
#[test]
fn spec_12_19_typer_advertises_what_is_implemented() {
    let mut h = H::new();
    let t = GitsTyper(h.r64(gits::TYPER));
    assert!(t.physical());
    assert!(!t.virt(), "no GICv4 to the guest");
    assert_eq!(t.itt_entry_size(), 8);
    assert_eq!(t.event_id_bits(), 6, "64 EventIDs");
    assert_eq!(t.device_id_bits(), 16);
    assert!(!t.pta(), "RDbase is a processor number");
    assert_eq!((t.0 >> 24) & 0xff, 8, "HCC: all 8 collections held");
    assert_eq!(t.0 >> 36 & 1, 1, "CIL");
    assert_eq!((t.0 >> 32) & 0xf, 2, "CIDbits + 1 = 3 bits of ICID");
    assert_eq!(t.0 >> 18 & 1, 0, "SEIS: no SError on command errors");
    // 32-bit halves agree; writes are read-only errors.
    assert_eq!(h.r32(gits::TYPER), t.0 & 0xffff_ffff);
    assert_eq!(h.r32(gits::TYPER + 4), t.0 >> 32);
    h.w64(gits::TYPER, 0);
    assert_eq!(h.its.errors().read_only, 1);
    assert_eq!(h.r64(gits::TYPER), t.0);
}

/// §12.19.6 `GITS_CTLR`: Enabled, Quiescent while disabled; 32-bit only.
#[test]
fn spec_12_19_ctlr_enabled_and_quiescent() {
    let mut h = H::disabled();
    assert_eq!(h.r32(gits::CTLR), u64::from(gits::CTLR_QUIESCENT));
    h.w32(gits::CTLR, 0xffff_ffff);
    assert_eq!(h.r32(gits::CTLR), 1, "only Enabled is writable");
    assert!(h.its.enabled());
    assert_eq!(h.r64(gits::CTLR), 0, "64-bit access to a 32-bit register");
    assert_eq!(h.its.errors().bad_width, 1);
    assert_eq!(h.r32(gits::IIDR), u64::from(crate::regs::IIDR_VIRQ));
    assert_eq!(h.r32(gits::PIDR2) >> 4 & 0xf, 3, "ArchRev: GICv3");
    h.access(gits::CTLR + 2, 2, None);
    assert_eq!(h.its.errors().bad_width, 2);
    h.access(gits::CBASER + 4, 8, None);
    assert_eq!(h.its.errors().misaligned, 1);
    h.access(0x2_0000, 4, None);
    h.access(0x200, 4, None);
    assert_eq!(h.its.errors().unmapped, 2);
}

/// §12.19.1 `GITS_BASER<n>`: Type and Entry_Size read-only, Indirect RAZ/WI, n ≥ 2
/// RAZ/WI, frozen while enabled.
#[test]
fn spec_12_19_baser_types_and_fields() {
    let mut h = H::disabled();
    let b0 = Baser(h.r64(gits::BASER));
    let b1 = Baser(h.r64(gits::BASER + 8));
    assert_eq!(b0.table_type(), hyp_io::gic_its::BaserType::Device);
    assert_eq!(b1.table_type(), hyp_io::gic_its::BaserType::Collection);
    assert_eq!((b0.entry_size(), b1.entry_size()), (8, 8));
    assert_eq!(b0.0 >> 63, 1, "valid as the harness wrote it");
    h.w64(gits::BASER + 8, u64::MAX);
    let b1 = Baser(h.r64(gits::BASER + 8));
    assert_eq!(b1.table_type(), hyp_io::gic_its::BaserType::Collection);
    assert_eq!(b1.entry_size(), 8);
    assert_eq!(b1.0 & Baser::INDIRECT, 0, "Indirect is RAZ/WI");
    h.w64(gits::BASER + 16, u64::MAX);
    assert_eq!(h.r64(gits::BASER + 16), 0);
    h.w32(gits::CTLR, 1);
    h.w64(gits::BASER, 0);
    assert_eq!(h.r64(gits::BASER), b0.0, "frozen while enabled");
    h.w64(gits::CBASER, 0);
    assert_eq!(Creadr(h.r64(gits::CBASER)).0, cbaser(QBASE, QPAGES));
    assert_eq!(h.its.errors().ignored_value, 2);
}

/// §5.3.9 MAPD, §5.3.8 MAPC, §5.3.11 MAPTI: a mapping appears once all three hold,
/// and MSIs translate.
#[test]
fn spec_5_3_mapti_maps_to_the_collection_vcpu() {
    let mut h = H::new();
    h.setup(7, 4, 3, 2);
    assert!(h.take().is_empty());
    assert_eq!(h.its.collection(3), Some(2));
    assert_eq!(h.run(&[mapti(7, 5, 8200, 3)]), [map(7, 5, 8200, 2)]);
    assert_eq!(
        h.its.translate(7, 5),
        Some(Delivery {
            vintid: 8200,
            vcpu: 2
        })
    );
    assert_eq!(h.its.translate(7, 6), None);
    assert_eq!(
        h.mappings(),
        [Mapping {
            device: 7,
            event: 5,
            vintid: 8200,
            vcpu: 2
        }]
    );
    assert_eq!(h.its.cmd_errors().total(), 0);
    assert_eq!(Creadr(h.its.creadr()).offset() as u64, h.wr);
}

/// MAPTI to a collection not mapped yet is kept; MAPC makes it a mapping.
#[test]
fn spec_5_3_mapti_before_mapc() {
    let mut h = H::new();
    h.run(&[mapd(1, 2, 0x5000_0000)]);
    assert!(h.run(&[mapti(1, 0, 9000, 5)]).is_empty());
    assert_eq!(h.its.translate(1, 0), None);
    assert_eq!(h.run(&[mapc(5, 1)]), [map(1, 0, 9000, 1)]);
    assert_eq!(h.its.cmd_errors().total(), 0);
}

/// §5.3.10 MAPI: the vINTID is the EventID.
#[test]
fn spec_5_3_mapi_uses_the_event_id() {
    let mut h = H::new();
    h.setup(1, 6, 0, 0);
    h.take();
    // EventID 8192 does not fit in 6 bits: event_oor.
    h.cmds(&[mapi(1, 8192, 0)]);
    assert_eq!(h.its.cmd_errors().event_oor, 1);
    // A 16-event-bit ITS would map it; here the MAPI of an event < 64 fails on the
    // INTID instead (below 8192).
    h.cmds(&[mapi(1, 3, 0)]);
    assert_eq!(h.its.cmd_errors().intid_oor, 1);
    assert!(h.take().is_empty());
    let mut big: VIts<1, 16384, 1> = VIts::new(cfg()).unwrap();
    let mut acts = Vec::new();
    let mut sink = |a| acts.push(a);
    big.access(
        u64::from(gits::BASER),
        8,
        Some(Baser(0).flat(DEVTAB, 1).0),
        &NoMem,
        &mut sink,
    );
    big.execute(mapd(0, 14, 0).encode(), &mut sink);
    big.execute(mapc(0, 3).encode(), &mut sink);
    big.execute(mapi(0, 8200, 0), &mut sink);
    assert_eq!(acts, [map(0, 8200, 8200, 3)]);
}

struct NoMem;
impl GuestMem for NoMem {
    fn read(&self, _gpa: u64, _buf: &mut [u8]) -> Result<(), GuestMemError> {
        Err(GuestMemError)
    }
}

/// §5.3.12 MOVI: the mapping moves to the new collection's vCPU.
#[test]
fn spec_5_3_movi_moves() {
    let mut h = H::new();
    h.setup(2, 3, 0, 0);
    h.run(&[mapc(1, 3), mapc(2, 0), mapti(2, 1, 8300, 0)]);
    h.cmds(&[movi(2, 1, 1)]);
    assert_eq!(
        h.take(),
        [HostAction::Move {
            device: 2,
            event: 1,
            vintid: 8300,
            from_vcpu: 0,
            to_vcpu: 3
        }]
    );
    assert_eq!(h.its.translate(2, 1).map(|d| d.vcpu), Some(3));
    // To another collection on the same vCPU: nothing for the host.
    h.cmds(&[movi(2, 1, 1), movi(2, 1, 2)]);
    assert_eq!(
        h.take(),
        [HostAction::Move {
            device: 2,
            event: 1,
            vintid: 8300,
            from_vcpu: 3,
            to_vcpu: 0
        }]
    );
    // To an unmapped collection: an error, nothing changes.
    h.cmds(&[movi(2, 1, 6)]);
    assert!(h.take().is_empty());
    assert_eq!(h.its.cmd_errors().collection_unmapped, 1);
    assert_eq!(h.its.translate(2, 1).map(|d| d.vcpu), Some(0));
}

/// §5.3.4 DISCARD: the mapping goes; translation stops.
#[test]
fn spec_5_3_discard_unmaps() {
    let mut h = H::new();
    h.setup(3, 2, 0, 1);
    h.run(&[mapti(3, 2, 8192, 0)]);
    assert_eq!(
        h.run(&[Cmd::Discard {
            device: 3,
            event: 2
        }]),
        [unmap(3, 2, 8192, 1)]
    );
    assert_eq!(h.its.translate(3, 2), None);
    // The vINTID is free again.
    assert_eq!(h.run(&[mapti(3, 3, 8192, 0)]), [map(3, 3, 8192, 1)]);
    // A second DISCARD of the old event: no ITT entry.
    h.run(&[Cmd::Discard {
        device: 3,
        event: 2,
    }]);
    assert_eq!(h.its.cmd_errors().event_unmapped, 1);
}

/// §5.3.6 INV, §5.3.5 INT, §5.3.3 CLEAR, §5.3.7 INVALL, §5.3.15 SYNC, §5.3.13 MOVALL.
#[test]
fn spec_5_3_inv_int_clear_invall_sync_movall() {
    let mut h = H::new();
    h.setup(4, 1, 7, 3);
    h.run(&[mapti(4, 1, 8500, 7)]);
    let (device, event, vintid, vcpu) = (4, 1, 8500, 3);
    assert_eq!(
        h.run(&[
            Cmd::Inv { device, event },
            Cmd::Int { device, event },
            Cmd::Clear { device, event },
            Cmd::Sync { rdbase: 2 },
        ]),
        [
            HostAction::Inv {
                device,
                event,
                vintid,
                vcpu
            },
            HostAction::Int {
                device,
                event,
                vintid,
                vcpu
            },
            HostAction::Clear {
                device,
                event,
                vintid,
                vcpu
            },
            HostAction::Sync { vcpu: 2 },
        ]
    );
    h.cmds(&[invall(7), movall(3, 1), movall(2, 2)]);
    assert_eq!(
        h.take(),
        [
            HostAction::InvAll { vcpu: 3 },
            HostAction::MovAll {
                from_vcpu: 3,
                to_vcpu: 1
            }
        ]
    );
    // On an unmapped event / collection / vCPU: errors, nothing reported.
    h.run(&[Cmd::Int { device, event: 0 }, Cmd::Sync { rdbase: 4 }]);
    h.cmds(&[invall(6), invall(8), movall(0, 9)]);
    assert!(h.take().is_empty());
    let e = h.its.cmd_errors();
    assert_eq!(
        (
            e.event_unmapped,
            e.rdbase_oor,
            e.collection_unmapped,
            e.icid_oor
        ),
        (1, 2, 1, 1)
    );
}

/// MAPD V = 0 unmaps every event of the device; MAPD again with the same ITT keeps
/// what fits, with another ITT starts empty.
#[test]
fn spec_5_3_mapd_remap_and_unmap() {
    let mut h = H::new();
    h.setup(5, 3, 0, 1);
    h.run(&[mapti(5, 0, 8192, 0), mapti(5, 6, 8193, 0)]);
    // Same ITT, 2 event bits: event 6 no longer fits.
    assert_eq!(h.run(&[mapd(5, 2, 0x5000_0000)]), [unmap(5, 6, 8193, 1)]);
    assert_eq!(h.its.translate(5, 0).map(|d| d.vintid), Some(8192));
    // Another ITT: empty.
    assert_eq!(h.run(&[mapd(5, 2, 0x5100_0000)]), [unmap(5, 0, 8192, 1)]);
    h.run(&[mapti(5, 1, 8194, 0)]);
    assert_eq!(h.run(&[unmapd(5)]), [unmap(5, 1, 8194, 1)]);
    assert!(h.mappings().is_empty());
    h.run(&[Cmd::Int {
        device: 5,
        event: 1,
    }]);
    assert_eq!(h.its.cmd_errors().device_unmapped, 1);
    // MAPD V = 0 of an unmapped device is no error.
    h.run(&[unmapd(6)]);
    assert_eq!(h.its.cmd_errors().total(), 1);
}

/// MAPC to another vCPU moves its mappings; MAPC V = 0 unmaps them.
#[test]
fn spec_5_3_mapc_retarget_and_unmap() {
    let mut h = H::new();
    h.setup(1, 2, 4, 0);
    h.run(&[mapti(1, 0, 9000, 4), mapti(1, 1, 9001, 4)]);
    assert_eq!(
        h.run(&[mapc(4, 2)]),
        [
            HostAction::Move {
                device: 1,
                event: 0,
                vintid: 9000,
                from_vcpu: 0,
                to_vcpu: 2
            },
            HostAction::Move {
                device: 1,
                event: 1,
                vintid: 9001,
                from_vcpu: 0,
                to_vcpu: 2
            }
        ]
    );
    assert!(h.run(&[mapc(4, 2)]).is_empty(), "same target: nothing");
    assert_eq!(
        h.run(&[Cmd::Mapc {
            icid: 4,
            rdbase: 0,
            valid: false
        }]),
        [unmap(1, 0, 9000, 2), unmap(1, 1, 9001, 2)]
    );
    assert_eq!(h.its.translate(1, 0), None);
}

/// Every command error of §5.3 the model checks: ignored, counted, nothing reported.
#[test]
fn spec_5_3_command_errors_are_ignored_and_counted() {
    let mut h = H::new();
    h.setup(1, 2, 0, 0);
    h.run(&[mapti(1, 0, 8192, 0)]);
    let before = h.mappings();
    let cmds = [
        mapd(512, 2, 0),       // beyond the 512-entry device table
        mapd(1 << 16, 2, 0),   // beyond Devbits
        mapd(2, 7, 0),         // Size beyond the 6 EventID bits
        mapc(8, 0),            // ICID beyond HCC
        mapc(1, 4),            // RDbase: no vCPU 4
        mapti(2, 0, 8193, 0),  // device not mapped
        mapti(1, 4, 8193, 0),  // EventID beyond the ITT (2 bits)
        mapti(1, 1, 8193, 8),  // ICID beyond HCC
        mapti(1, 1, 8191, 0),  // not an LPI
        mapti(1, 1, 65536, 0), // beyond intid_bits
        mapti(1, 1, 8192, 0),  // vINTID in use by event 0
        Cmd::Inv {
            device: 1,
            event: 3,
        }, // no ITT entry
        Cmd::Vinvall { vpeid: 0 }, // a GICv4 command: unknown here
    ];
    h.run(&cmds);
    assert!(h.take().is_empty());
    assert_eq!(h.mappings(), before);
    let e = h.its.cmd_errors();
    assert_eq!(e.device_oor, 2);
    assert_eq!(e.size_oor, 1);
    assert_eq!(e.icid_oor, 2);
    assert_eq!(e.rdbase_oor, 1);
    assert_eq!(e.device_unmapped, 1);
    assert_eq!(e.event_oor, 1);
    assert_eq!(e.intid_oor, 2);
    assert_eq!(e.intid_in_use, 1);
    assert_eq!(e.event_unmapped, 1);
    assert_eq!(e.unknown, 1);
    assert_eq!(e.total(), cmds.len() as u64);
    // Re-mapping an event to its own vINTID is no conflict.
    assert_eq!(
        h.run(&[mapti(1, 0, 8192, 0)]),
        [unmap(1, 0, 8192, 0), map(1, 0, 8192, 0)]
    );
}

/// The device table's Valid bit gates every DeviceID.
#[test]
fn spec_5_3_device_table_must_be_valid() {
    let mut h = H::disabled();
    h.w64(gits::BASER, 0);
    h.w32(gits::CTLR, 1);
    h.run(&[mapd(0, 1, 0)]);
    assert_eq!(h.its.cmd_errors().device_oor, 1);
}

/// All device slots used: a new device is refused, a mapped one can be remapped.
#[test]
fn mapd_beyond_the_device_slots_is_refused() {
    let mut h = H::new();
    h.run(&[
        mapd(10, 1, 0),
        mapd(11, 1, 0),
        mapd(12, 1, 0),
        mapd(13, 1, 0),
        mapd(14, 1, 0),
        mapd(13, 2, 0),
    ]);
    assert_eq!(h.its.cmd_errors().table_full, 1);
    assert_eq!(h.its.cmd_errors().total(), 1);
    h.run(&[unmapd(10), mapd(14, 1, 0)]);
    assert_eq!(h.its.cmd_errors().total(), 1);
}

/// §12.19.5 `GITS_CREADR.Stalled`: an unreadable command stalls the queue at it;
/// `CWRITER.Retry` restarts it.
#[test]
fn spec_12_19_unreadable_command_stalls_until_retry() {
    let mut h = H::new();
    h.setup(1, 1, 0, 0);
    h.take();
    let at = h.wr;
    h.mem.bad = Some(QBASE + at);
    h.run(&[mapti(1, 0, 8192, 0), mapti(1, 1, 8193, 0)]);
    assert!(h.take().is_empty(), "nothing after the stalled command ran");
    let c = Creadr(h.its.creadr());
    assert!(c.stalled());
    assert_eq!(c.offset() as u64, at);
    assert_eq!(h.its.cmd_errors().read_failed, 1);
    // CWRITER without Retry: still stalled.
    h.mem.bad = None;
    let wr = h.wr;
    h.w64(gits::CWRITER, wr);
    assert!(Creadr(h.its.creadr()).stalled());
    assert!(h.take().is_empty());
    h.w64(gits::CWRITER, wr | gits::CWRITER_RETRY);
    assert!(!Creadr(h.its.creadr()).stalled());
    assert_eq!(h.take(), [map(1, 0, 8192, 0), map(1, 1, 8193, 0)]);
    assert_eq!(Creadr(h.its.creadr()).offset() as u64, h.wr);
}

/// A `CBASER` write (ITS disabled) resets `CREADR` and clears `Stalled`.
#[test]
fn spec_12_19_cbaser_write_resets_creadr() {
    let mut h = H::new();
    h.mem.bad = Some(QBASE + 32);
    h.run(&[Cmd::Sync { rdbase: 0 }, Cmd::Sync { rdbase: 1 }]);
    assert_eq!(h.its.creadr(), 32 | 1);
    h.w32(gits::CTLR, 0);
    h.w64(gits::CBASER, cbaser(QBASE, QPAGES));
    assert_eq!(h.its.creadr(), 0);
    h.w64(gits::CREADR, 64);
    assert_eq!(h.its.errors().read_only, 1);
}

/// The queue wraps; a `CWRITER` beyond the queue is ignored.
#[test]
fn spec_12_19_queue_wraps_and_cwriter_is_checked() {
    let mut h = H::new();
    h.setup(1, 1, 0, 0);
    h.take();
    for round in 0..300u64 {
        let acts = h.run(&[Cmd::Sync {
            rdbase: round % VCPUS as u64,
        }]);
        assert_eq!(
            acts,
            [HostAction::Sync {
                vcpu: (round % VCPUS as u64) as usize
            }]
        );
    }
    assert_eq!(h.its.creadr(), h.wr);
    h.w64(gits::CWRITER, QBYTES);
    assert_eq!(h.its.errors().ignored_value, 1);
    assert_eq!(h.r64(gits::CWRITER), h.wr);
}

/// Commands queued while the ITS is disabled run when it is enabled.
#[test]
fn spec_12_19_disabled_its_runs_nothing_until_enabled() {
    let mut h = H::disabled();
    h.run(&[mapd(1, 1, 0), mapc(0, 1), mapti(1, 0, 8192, 0)]);
    assert_eq!(h.its.creadr(), 0);
    assert_eq!(
        h.its.translate(1, 0),
        None,
        "translation off while disabled"
    );
    h.w32(gits::CTLR, 1);
    assert_eq!(h.take(), [map(1, 0, 8192, 1)]);
    assert_eq!(h.its.creadr(), 96);
}

/// §12.19.22 `GITS_TRANSLATER`: a CPU store has no DeviceID here: dropped, counted.
#[test]
fn spec_12_19_translater_cpu_store_is_dropped() {
    let mut h = H::new();
    h.setup(0, 1, 0, 0);
    h.run(&[mapti(0, 0, 8192, 0)]);
    h.w32(gits::TRANSLATER, 0);
    assert!(h.take().is_empty());
    assert_eq!(h.its.errors().ignored_value, 1);
    assert_eq!(h.r32(gits::TRANSLATER), 0);
    h.access(gits::TRANSLATER, 8, Some(0));
    assert_eq!(h.its.errors().bad_width, 1);
}

/// The MMIO wrapper reaches the same model.
#[test]
fn its_frames_is_an_mmio_device() {
    let mut its = Its::new(cfg()).unwrap();
    let mut acts = Vec::new();
    let mut sink = |a: HostAction| acts.push(a);
    let mem = Mem {
        bytes: vec![0; QBYTES as usize],
        bad: None,
    };
    let mut f = ItsFrames {
        its: &mut its,
        mem: &mem,
        sink: &mut sink,
    };
    assert_eq!(f.region_size(), 0x2_0000);
    f.write(u64::from(gits::CTLR), 4, 1);
    assert_eq!(f.read(u64::from(gits::CTLR), 4), 1);
    f.read(u64::from(gits::CTLR), 8);
    assert_eq!(f.errors().bad_width, 1);
}

/// A random operation on the ITS.
#[derive(Clone, Debug)]
enum Op {
    /// A command, from a small field space so that most of them do something.
    Cmd(u8, u32, u32, u32, u16, u64),
    /// Raw doublewords.
    Raw([u64; 4]),
    /// A register write.
    Reg(u32, u8, u64),
    /// A command that cannot be read, then the retry.
    Stall,
}

fn op() -> impl Strategy<Value = Op> {
    let code = prop::sample::select(vec![
        0x01u8, 0x03, 0x04, 0x05, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x2a,
    ]);
    prop_oneof![
        8 => (code, 0..6u32, 0..10u32, 8190..8230u32, 0..10u16, 0..6u64)
            .prop_map(|(c, d, e, i, ic, rd)| Op::Cmd(c, d, e, i, ic, rd)),
        1 => any::<[u64; 4]>().prop_map(Op::Raw),
        1 => (prop::sample::select(vec![0u32, 4, 8, 0x80, 0x88, 0x90, 0x100, 0x108, 0x1_0040]),
              prop::sample::select(vec![1u8, 2, 4, 8]), any::<u64>())
            .prop_map(|(o, s, v)| Op::Reg(o, s, v)),
        1 => Just(Op::Stall),
    ]
}

fn encode(c: u8, d: u32, e: u32, i: u32, ic: u16, rd: u64) -> [u64; 4] {
    // MAPD: Size in DW1 [4:0] (e % 8 - 1), V in DW2 [63] (unless rd == 5), ITT by rd.
    let dw1 = if c == 0x08 {
        u64::from(e % 8)
    } else {
        u64::from(e) | u64::from(i) << 32
    };
    let v = u64::from(rd != 5) << 63;
    let dw2 = match c {
        0x08 => v | (rd << 12),
        0x09 => v | rd << 16 | u64::from(ic),
        _ => rd << 16 | u64::from(ic),
    };
    [u64::from(c) | u64::from(d) << 32, dw1, dw2, (rd ^ 1) << 16]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random command streams never panic, and the host's table built from the
    /// reported actions alone is always the model's effective mappings: every Map is
    /// of a new mapping to a mapped collection's vCPU, every Unmap/Move of an existing
    /// one, no vINTID twice, counts bounded.
    #[test]
    fn random_commands_keep_the_host_view_exact(ops in prop::collection::vec(op(), 1..120)) {
        let mut h = H::new();
        let mut host: BTreeMap<(u32, u32), (u32, usize)> = BTreeMap::new();
        let mut last_errors = 0;
        h.setup(0, 3, 0, 0);
        for op in ops {
            match op {
                Op::Cmd(c, d, e, i, ic, rd) => h.cmds(&[encode(c, d, e, i, ic, rd)]),
                Op::Raw(w) => h.cmds(&[w]),
                Op::Reg(o, s, v) => { h.access(o, s, Some(v)); }
                Op::Stall => {
                    h.mem.bad = Some(QBASE + h.wr);
                    h.cmds(&[encode(0x05, 0, 0, 0, 0, 0)]);
                    h.mem.bad = None;
                    let wr = h.wr;
                    h.w64(gits::CWRITER, wr | 1);
                }
            }
            let acts = h.take();
            prop_assert!(acts.len() <= 2 * 4 * 64 + 2, "{} actions", acts.len());
            for a in acts {
                match a {
                    HostAction::Map { device, event, vintid, vcpu } => {
                        prop_assert!(vcpu < VCPUS && (8192..65536).contains(&vintid));
                        prop_assert!(host.insert((device, event), (vintid, vcpu)).is_none(),
                            "Map of a mapped event");
                    }
                    HostAction::Unmap { device, event, vintid, vcpu } => {
                        prop_assert_eq!(host.remove(&(device, event)), Some((vintid, vcpu)));
                    }
                    HostAction::Move { device, event, vintid, from_vcpu, to_vcpu } => {
                        prop_assert!(from_vcpu != to_vcpu && to_vcpu < VCPUS);
                        let m = host.get_mut(&(device, event));
                        prop_assert_eq!(m.as_deref().copied(), Some((vintid, from_vcpu)));
                        if let Some(m) = m { m.1 = to_vcpu; }
                    }
                    HostAction::Inv { device, event, vintid, vcpu }
                    | HostAction::Int { device, event, vintid, vcpu }
                    | HostAction::Clear { device, event, vintid, vcpu } => {
                        prop_assert_eq!(host.get(&(device, event)).copied(), Some((vintid, vcpu)));
                    }
                    HostAction::InvAll { vcpu } | HostAction::Sync { vcpu } => prop_assert!(vcpu < VCPUS),
                    HostAction::MovAll { from_vcpu, to_vcpu } => {
                        prop_assert!(from_vcpu < VCPUS && to_vcpu < VCPUS && from_vcpu != to_vcpu);
                    }
                }
            }
            let model: Vec<_> = h.its.mappings().map(|m| ((m.device, m.event), (m.vintid, m.vcpu))).collect();
            let mut sorted = model.clone();
            sorted.sort();
            prop_assert_eq!(&sorted, &host.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
            let mut vintids: Vec<u32> = model.iter().map(|m| m.1 .0).collect();
            vintids.sort();
            vintids.dedup();
            prop_assert_eq!(vintids.len(), model.len(), "a vINTID mapped twice");
            for ((d, e), (vintid, vcpu)) in &model {
                if h.its.enabled() {
                    prop_assert_eq!(h.its.translate(*d, *e), Some(Delivery { vintid: *vintid, vcpu: *vcpu }));
                }
            }
            let total = h.its.cmd_errors().total();
            prop_assert!(total >= last_errors);
            last_errors = total;
            prop_assert!(h.its.creadr() & !1 < 256 * 0x1000);
        }
    }
}

/// §6.1.1 the LPI configuration table: one checked byte per LPI, bounded by
/// `GICR_PROPBASER.IDbits`; hyp-io's encoders write the values.
#[test]
fn spec_6_1_1_lpi_config_is_read_checked() {
    use crate::vits::{lpi_config, LpiConfig, LpiConfigError};
    use hyp_io::gic_its::{lpi_config as byte, propbaser};
    let mut mem = Mem {
        bytes: vec![0; QBYTES as usize],
        bad: None,
    };
    mem.bytes[5] = byte(0xa4, true);
    mem.bytes[6] = byte(0x40, false);
    let pb = propbaser(QBASE, 14); // INTIDs below 16384: 8192 bytes, beyond QBYTES
    assert_eq!(
        lpi_config(&mem, pb, 8197),
        Ok(LpiConfig {
            priority: 0xa4,
            enabled: true
        })
    );
    assert_eq!(
        lpi_config(&mem, pb, 8198),
        Ok(LpiConfig {
            priority: 0x40,
            enabled: false
        })
    );
    assert_eq!(lpi_config(&mem, pb, 8191), Err(LpiConfigError::OutOfRange));
    assert_eq!(lpi_config(&mem, pb, 16384), Err(LpiConfigError::OutOfRange));
    assert_eq!(
        lpi_config(&mem, pb, 16383),
        Err(LpiConfigError::Mem(GuestMemError)),
        "beyond the guest's memory"
    );
    assert_eq!(
        lpi_config(&mem, pb & !0x1f | 12, 8192),
        Err(LpiConfigError::OutOfRange),
        "IDbits 12: no LPIs"
    );
}
