//! H-extension plumbing: `hvip` flush/sync (seed 000), guest-file management and
//! migration (seed 003), SGEI doorbells (seed 002).

use std::cell::RefCell;

use virq_core::doorbell::{Doorbell, PutOutcome};
use virq_core::hgei::HgeiAllocator;
use virq_core::pending::{PendingSet, VcpuPending};

use super::{FakeHwFiles, VseipLog};
use crate::hext::fake::FakeCsrs;
use crate::hext::{
    handle_sgei, sgei_lines, vgein, Csr, Csrs, HgeieDoorbell, HvipSync, PendingSink, HVIP_VSEIP,
    HVIP_VSSIP, HVIP_VSTIP,
};
use crate::imsic::{CsrOp, ImsicFileState};
use crate::mmio::{MmioDevice, VcpuIrqSink};
use crate::msi::{Backing, VcpuImsic};

fn vcpu_pending() -> VcpuPending {
    PendingSet::with_handoff(&[2]).unwrap()
}

#[test]
fn hvip_flush_writes_only_on_change() {
    let (p, csrs) = (vcpu_pending(), FakeCsrs::new(0));
    let mut h = HvipSync::new();
    assert!(!h.flush(&p, &csrs));
    p.raise(10).unwrap();
    p.raise(6).unwrap();
    assert!(h.flush(&p, &csrs));
    assert_eq!(csrs.read(Csr::Hvip), HVIP_VSEIP | HVIP_VSTIP);
    assert!(!h.flush(&p, &csrs), "nothing changed");
    p.lower(6).unwrap();
    assert!(h.flush(&p, &csrs));
    assert_eq!(csrs.read(Csr::Hvip), HVIP_VSEIP);
    assert_eq!(csrs.hvip_writes(), 2);
}

#[test]
fn seed000_guest_cleared_vssip_is_not_reinjected() {
    let (p, csrs) = (vcpu_pending(), FakeCsrs::new(0));
    let mut h = HvipSync::new();
    p.raise(2).unwrap();
    h.flush(&p, &csrs);
    assert_eq!(csrs.read(Csr::Hvip), HVIP_VSSIP);
    // The guest takes the IPI and clears sip.SSIP.
    csrs.guest_write_ssip(false);
    h.sync(&csrs);
    // An unrelated change must not bring the cleared IPI back.
    p.raise(10).unwrap();
    h.flush(&p, &csrs);
    assert_eq!(csrs.read(Csr::Hvip), HVIP_VSEIP);
}

#[test]
fn seed000_ipi_after_guest_clear_is_delivered() {
    let (p, csrs) = (vcpu_pending(), FakeCsrs::new(0));
    let mut h = HvipSync::new();
    p.raise(2).unwrap();
    h.flush(&p, &csrs);
    csrs.guest_write_ssip(false);
    h.sync(&csrs);
    p.raise(2).unwrap();
    assert!(
        h.flush(&p, &csrs),
        "a new IPI is written even though the shadow once had it"
    );
    assert_eq!(csrs.read(Csr::Hvip), HVIP_VSSIP);
    // The guest may also set its own SSIP: sync keeps it.
    csrs.guest_write_ssip(false);
    h.sync(&csrs);
    csrs.guest_write_ssip(true);
    h.sync(&csrs);
    assert_eq!(h.shadow_hvip(), HVIP_VSSIP);
}

#[test]
fn pending_sink_raises_vseip_and_kicks_once() {
    let vcpus = [vcpu_pending(), vcpu_pending()];
    let kicks = RefCell::new(Vec::new());
    let sink = PendingSink::new(&vcpus, |v| kicks.borrow_mut().push(v));
    sink.set_vseip(1, true);
    sink.set_vseip(1, true);
    sink.set_vseip(7, true); // unknown vCPU: ignored
    assert!(vcpus[1].is_pending(10) && !vcpus[0].is_pending(10));
    assert_eq!(*kicks.borrow(), [1]);
    sink.set_vseip(1, false);
    assert!(!vcpus[1].is_pending(10));
}

fn enable_and_pend(f: &mut VcpuImsic<&FakeHwFiles, &VseipLog>, id: u32) {
    f.ireg(0x70, CsrOp::Write(1)).unwrap();
    f.ireg(0xc0 + 2 * (id / 64), CsrOp::Set(1 << (id % 64)))
        .unwrap();
    f.write(0, 4, id.into());
}

#[test]
fn software_file_drives_vseip_through_sink() {
    let (hw, log) = (FakeHwFiles::default(), VseipLog::default());
    let mut f = VcpuImsic::new(0, 4, 255, &hw, &log).unwrap();
    enable_and_pend(&mut f, 42);
    assert!(log.level(4));
    assert_eq!(f.stopei(CsrOp::Write(0)), Ok(42 << 16 | 42));
    assert!(!log.level(4));
    // seteipnum_be
    f.write(4, 4, 42u32.swap_bytes().into());
    assert!(log.level(4));
    assert_eq!(f.read(0, 4), 0);
    assert_eq!(f.errors().total(), 0);
}

#[test]
fn seed003_load_takes_a_line_and_sets_vgein() {
    let (hw, log) = (FakeHwFiles::default(), VseipLog::default());
    let alloc = HgeiAllocator::<2>::new();
    alloc.online(0, 0b1110).unwrap();
    let csrs = FakeCsrs::new(0b1110);
    let mut f = VcpuImsic::new(0, 4, 255, &hw, &log).unwrap();
    enable_and_pend(&mut f, 42);
    assert!(log.level(4));
    assert_eq!(
        f.load(0, &alloc, &csrs),
        Backing::Hardware { hart: 0, line: 1 }
    );
    assert_eq!(vgein(&csrs), 1);
    assert_eq!(alloc.owner(0, 1), Some(4));
    assert!(!log.level(4), "software VSEIP dropped: hgeip now signals");
    let st = hw.state(0, 1);
    assert_eq!(
        (st.eidelivery, st.eip[0], st.eie[0]),
        (1, 1 << 42, 1 << 42),
        "state moved to hardware"
    );
    assert_eq!(
        f.ireg(0x70, CsrOp::Read),
        Err(crate::imsic::IselectError::NotEmulated)
    );
    // Loading again on the same hart keeps the line without touching hardware.
    let n = hw.log.borrow().len();
    f.load(0, &alloc, &csrs);
    assert_eq!(hw.log.borrow().len(), n);
}

#[test]
fn seed003_no_free_line_falls_back_to_software_then_upgrades() {
    let (hw, log) = (FakeHwFiles::default(), VseipLog::default());
    let alloc = HgeiAllocator::<1>::new();
    alloc.online(0, 0b10).unwrap();
    let csrs = FakeCsrs::new(0b10);
    let mut a = VcpuImsic::new(0, 1, 255, &hw, &log).unwrap();
    let mut b = VcpuImsic::new(1, 2, 255, &hw, &log).unwrap();
    assert!(matches!(a.load(0, &alloc, &csrs), Backing::Hardware { .. }));
    assert_eq!(b.load(0, &alloc, &csrs), Backing::Software);
    assert_eq!(vgein(&csrs), 0);
    enable_and_pend(&mut b, 7);
    assert!(log.level(2));
    // a goes away; its line frees; b's next load moves its state into the line.
    a.evict(&alloc);
    assert_eq!(
        hw.state(0, 1),
        ImsicFileState::default(),
        "a's state scrubbed from the line"
    );
    assert_eq!(a.save_state().eip[0], 0);
    assert_eq!(
        b.load(0, &alloc, &csrs),
        Backing::Hardware { hart: 0, line: 1 }
    );
    assert_eq!(hw.state(0, 1).eip[0], 1 << 7);
    assert!(!log.level(2));
}

#[test]
fn seed003_vcpu_moving_hart_carries_its_file() {
    let (hw, log) = (FakeHwFiles::default(), VseipLog::default());
    let alloc = HgeiAllocator::<2>::new();
    alloc.online(0, 0b10).unwrap();
    alloc.online(1, 0b100).unwrap();
    let csrs = FakeCsrs::new(0b110);
    let mut f = VcpuImsic::new(0, 3, 255, &hw, &log).unwrap();
    enable_and_pend(&mut f, 99);
    f.load(0, &alloc, &csrs);
    assert_eq!(
        f.load(1, &alloc, &csrs),
        Backing::Hardware { hart: 1, line: 2 }
    );
    assert_eq!(vgein(&csrs), 2);
    assert_eq!(alloc.owner(0, 1), None, "old line freed");
    assert_eq!(hw.state(1, 2).eip[1], 1 << (99 - 64));
    assert_eq!(hw.state(0, 1), ImsicFileState::default());
}

#[test]
fn seed002_sgei_is_a_doorbell_only_while_blocking() {
    let (hw, log) = (FakeHwFiles::default(), VseipLog::default());
    let alloc = HgeiAllocator::<1>::new();
    alloc.online(0, 0b110).unwrap();
    let csrs = FakeCsrs::new(0b110);
    let mut f = VcpuImsic::new(0, 5, 255, &hw, &log).unwrap();
    let door = Doorbell::new();
    f.load(0, &alloc, &csrs);
    let hwd = f.doorbell(&csrs).unwrap();
    assert!(!door.load(&hwd));
    assert_eq!(csrs.read(Csr::Hgeie), 0, "masked while resident");
    assert_eq!(door.put(&hwd, false), PutOutcome::StayRunnable);
    assert_eq!(csrs.read(Csr::Hgeie), 0, "masked while merely descheduled");
    assert_eq!(door.put(&hwd, true), PutOutcome::Blocked);
    assert_eq!(csrs.read(Csr::Hgeie), 0b10, "enabled while blocking");
    // An MSI lands in the hardware file: hgeip line 1 rises; the SGEI handler runs.
    csrs.set_hgeip(1, true);
    let mut kicked = Vec::new();
    let n = handle_sgei(&csrs, 0, &alloc, |owner, d| {
        assert_eq!(owner, 5);
        if door.fire(d) {
            kicked.push(owner);
        }
    });
    assert_eq!((n, kicked.as_slice()), (1, &[5][..]));
    assert_eq!(csrs.read(Csr::Hgeie), 0, "fired doorbell masked");
    assert!(door.load(&hwd), "the vCPU learns it was woken");
}

#[test]
fn sgei_line_without_owner_is_masked() {
    let alloc = HgeiAllocator::<1>::new();
    alloc.online(0, 0b110).unwrap();
    let csrs = FakeCsrs::new(0b110);
    csrs.write(Csr::Hgeie, 0b100);
    csrs.set_hgeip(2, true);
    let n = handle_sgei(&csrs, 0, &alloc, |_, _| panic!("no owner"));
    assert_eq!(n, 1);
    assert_eq!(csrs.read(Csr::Hgeie), 0);
}

#[test]
fn vimsic_page_errors_are_counted() {
    let (hw, log) = (FakeHwFiles::default(), VseipLog::default());
    let mut f = VcpuImsic::new(0, 0, 63, &hw, &log).unwrap();
    f.write(0, 8, 5);
    f.write(2, 4, 5);
    f.write(8, 4, 5);
    f.write(0x1000, 4, 5);
    f.write(0, 4, 64); // identity not implemented
    assert_eq!(f.read(0x10, 4), 0);
    let e = f.errors();
    assert_eq!(
        (e.bad_width, e.misaligned, e.unmapped, e.ignored_value),
        (1, 1, 3, 1)
    );
    assert_eq!(f.save_state(), ImsicFileState::default());
    assert_eq!(
        f.ireg(0x81, CsrOp::Read),
        Err(crate::imsic::IselectError::Illegal)
    );
    assert_eq!(f.errors().ignored_value, 2);
}

/// QEMU 10.0.2's `write_hgeie` race (docs/design.md "Doorbells"): the MSI lands while
/// the blocking vCPU's doorbell is being unmasked and `hip.SGEIP` keeps a stale 0, so
/// no SGEI ever comes. The doorbell reads the source back and the vCPU stays runnable.
#[test]
fn seed002_qemu_sgeip_race_at_unmask_does_not_lose_the_wakeup() {
    let (hw, log) = (FakeHwFiles::default(), VseipLog::default());
    let alloc = HgeiAllocator::<1>::new();
    alloc.online(0, 0b110).unwrap();
    let csrs = FakeCsrs::new(0b110);
    let mut f = VcpuImsic::new(0, 5, 255, &hw, &log).unwrap();
    let door = Doorbell::new();
    f.load(0, &alloc, &csrs);
    let hwd = f.doorbell(&csrs).unwrap();
    assert!(!door.load(&hwd));
    csrs.race_msi_with_next_hgeie_write(1);
    let outcome = door.put(&hwd, true);
    assert_eq!(csrs.read(Csr::Hgeip), 0b10, "the MSI reached the file");
    assert!(!csrs.sgeip(), "the fake reproduces the stale SGEIP");
    assert_eq!(
        outcome,
        PutOutcome::StayRunnable,
        "the vCPU must not sleep on a pending file whose SGEI will never come"
    );
    assert_eq!(csrs.read(Csr::Hgeie), 0, "taken back: masked");
    assert!(door.load(&hwd), "the vCPU learns an interrupt arrived");
}

/// The same race on another line's `hgeie` write: handling line 1's SGEI masks it, and
/// an MSI to line 2 (whose vCPU blocks with its doorbell unmasked) lands inside that
/// write, leaving `hip.SGEIP` 0. The source (`hgeip & hgeie`) still shows line 2:
/// `sgei_lines` reports it and `handle_sgei` keeps reading until it is handled.
#[test]
fn seed002_qemu_sgeip_race_on_another_lines_mask_is_handled() {
    let alloc = HgeiAllocator::<1>::new();
    alloc.online(0, 0b110).unwrap();
    let csrs = FakeCsrs::new(0b110);
    let (a, b) = (Doorbell::new(), Doorbell::new());
    let line_a = alloc.alloc(0, 10).unwrap();
    let line_b = alloc.alloc(0, 11).unwrap();
    assert_eq!((line_a, line_b), (1, 2));
    let (da, db) = (
        HgeieDoorbell::new(&csrs, line_a),
        HgeieDoorbell::new(&csrs, line_b),
    );
    assert_eq!(a.put(&da, true), PutOutcome::Blocked);
    assert_eq!(b.put(&db, true), PutOutcome::Blocked);
    csrs.set_hgeip(line_a, true);
    assert!(csrs.sgeip());
    csrs.race_msi_with_next_hgeie_write(line_b);
    let mut kicked = Vec::new();
    handle_sgei(&csrs, 0, &alloc, |owner, d| {
        let door = if owner == 10 { &a } else { &b };
        if door.fire(d) {
            kicked.push(owner);
        }
    });
    assert_eq!(kicked, [10, 11], "both blocked vCPUs are kicked");
    assert_eq!(sgei_lines(&csrs), 0);
}
