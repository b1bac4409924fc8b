//! A host program playing a RISC-V hypervisor around a guest AIA: a vAPLIC in MSI mode
//! ([`virq_riscv::aplic`]) forwarding a device's interrupt as an MSI to a vCPU's
//! interrupt file ([`virq_riscv::msi::VcpuImsic`]), which starts in software
//! (trap-and-emulate), moves to a hardware guest file when its vCPU is loaded on a hart
//! with a free guest external interrupt line (`virq_core::hgei`), wakes the blocked vCPU
//! through its SGEI doorbell (`virq_core::doorbell` + [`virq_riscv::hext::handle_sgei`]),
//! and follows the vCPU to another hart.
//!
//! The hardware is fake: [`FakeCsrs`] for each hart's `hstatus`/`hvip`/`hgeie`/`hgeip`,
//! and `FakeFiles` below for the physical IMSICs' guest files (what hyp reaches with
//! MMIO stores and `vsiselect`/`vsireg`).
//!
//! ```sh
//! cargo run -p virq-riscv --example aia
//! ```
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use virq_core::doorbell::{Doorbell, PutOutcome};
use virq_core::hgei::{guest_files, probe_lines, HgeiAllocator};
use virq_core::pending::VcpuPending;
use virq_riscv::aplic::{regs, VAplic};
use virq_riscv::hext::fake::FakeCsrs;
use virq_riscv::hext::{handle_sgei, vgein, Csr, Csrs, HvipSync, PendingSink, HVIP_VSEIP};
use virq_riscv::imsic::{CsrOp, ImsicFileState, ISELECT_EIDELIVERY, ISELECT_EIE0};
use virq_riscv::msi::{Backing, GuestFileHw};
use virq_riscv::MmioDevice;

const SOURCE: u32 = 3;
const EIID: u32 = 33;
/// Machine-wide vCPU ids (the HGEI allocator's owners) of the guest's vCPUs 0 and 1.
const VCPU_IDS: [u32; 2] = [100, 101];

/// The physical IMSICs' guest interrupt files of two harts. A file's line in `hgeip`
/// is high while it has a pending-and-enabled identity with `eidelivery = 1`.
struct FakeFiles<'a> {
    csrs: &'a [FakeCsrs; 2],
    files: RefCell<HashMap<(usize, u32), ImsicFileState>>,
}

impl FakeFiles<'_> {
    fn update(&self, hart: usize, line: u32) {
        let s = self.state(hart, line);
        let fires = s.eidelivery == 1 && s.eip.iter().zip(s.eie).any(|(p, e)| p & e != 0);
        self.csrs[hart].set_hgeip(line, fires);
    }
    fn state(&self, hart: usize, line: u32) -> ImsicFileState {
        self.files
            .borrow()
            .get(&(hart, line))
            .copied()
            .unwrap_or_default()
    }
}

impl GuestFileHw for FakeFiles<'_> {
    fn send_msi(&self, hart: usize, line: u32, eiid: u32) {
        let mut files = self.files.borrow_mut();
        let s = files.entry((hart, line)).or_default();
        s.eip[eiid as usize / 64] |= 1 << (eiid % 64);
        drop(files);
        self.update(hart, line);
    }
    fn save(&self, hart: usize, line: u32) -> ImsicFileState {
        self.state(hart, line)
    }
    fn restore(&self, hart: usize, line: u32, state: &ImsicFileState) {
        self.files.borrow_mut().insert((hart, line), *state);
        self.update(hart, line);
    }
}

fn main() {
    // Two harts, each with guest external interrupt lines 1 and 2 (probed at bring-up,
    // clamped to the guest files its IMSIC has: `riscv,guest-index-bits = 2`).
    let csrs = [FakeCsrs::new(0b110), FakeCsrs::new(0b110)];
    let alloc = HgeiAllocator::<2>::new();
    for (hart, c) in csrs.iter().enumerate() {
        let probe = |all: u64| {
            c.write(Csr::Hgeie, all);
            let kept = c.read(Csr::Hgeie);
            c.write(Csr::Hgeie, 0);
            kept
        };
        alloc
            .online(hart, probe_lines(probe, guest_files(2)))
            .unwrap();
    }

    let pending = [VcpuPending::new(), VcpuPending::new()];
    let kicks = [AtomicU32::new(0), AtomicU32::new(0)];
    let kick = |vcpu: u32| {
        kicks[vcpu as usize].fetch_add(1, Ordering::Relaxed);
    };
    let hw = FakeFiles {
        csrs: &csrs,
        files: RefCell::new(HashMap::new()),
    };
    let files = [0, 1].map(|v| {
        virq_riscv::msi::VcpuImsic::new(v, VCPU_IDS[v as usize], 255, &hw, {
            PendingSink::new(&pending, &kick)
        })
        .unwrap()
    });
    let mut aplic: VAplic<_, _, 2> =
        VAplic::new(8, 2, files, PendingSink::new(&pending, &kick)).unwrap();
    let doorbells = [Doorbell::new(), Doorbell::new()];
    let mut hvip = HvipSync::new();

    // The guest programs its APLIC (MSI mode; source 3 rising edge, to hart 1 as
    // EIID 33) and vCPU 1's interrupt file — trapped accesses while it is in software.
    aplic.write(0, 4, u64::from(regs::DOMAINCFG_IE | regs::DOMAINCFG_DM));
    aplic.write(4 * u64::from(SOURCE), 4, 4);
    aplic.write(
        u64::from(regs::TARGET_BASE) + 4 * u64::from(SOURCE),
        4,
        (1 << regs::TARGET_HART_SHIFT) | u64::from(EIID),
    );
    aplic.write(u64::from(regs::SETIENUM), 4, u64::from(SOURCE));
    let file1 = &mut aplic.msi_sink_mut()[1];
    file1.ireg(ISELECT_EIDELIVERY, CsrOp::Write(1)).unwrap();
    file1.ireg(ISELECT_EIE0, CsrOp::Set(1 << EIID)).unwrap();

    // 1. Software file: the device's edge becomes an MSI, the file raises VSEIP in
    //    vCPU 1's pending set and kicks it; the flush puts it in hvip.
    aplic.set_input(SOURCE, true);
    aplic.set_input(SOURCE, false);
    assert_eq!(kicks[1].load(Ordering::Relaxed), 1);
    hvip.flush(&pending[1], &csrs[1]);
    assert_ne!(csrs[1].read(Csr::Hvip) & HVIP_VSEIP, 0);
    // The guest claims it through the trapped `stopei`.
    let claimed = aplic.msi_sink_mut()[1].stopei(CsrOp::Write(0)).unwrap();
    assert_eq!(claimed >> 16, EIID);
    hvip.flush(&pending[1], &csrs[1]);

    // 2. vCPU load on hart 1: a free line, so the file moves to hardware and
    //    `hstatus.VGEIN` selects it. From now on MSIs reach the guest with no exit.
    let backing = aplic.msi_sink_mut()[1].load(1, &alloc, &csrs[1]);
    assert_eq!(backing, Backing::Hardware { hart: 1, line: 1 });
    assert_eq!(vgein(&csrs[1]), 1);

    // 3. The guest waits (WFI) and vCPU 1 is put blocking: its doorbell (the line's
    //    `hgeie` bit) is unmasked.
    let door = aplic.msi_sink()[1]
        .doorbell(&csrs[1])
        .expect("hardware-backed");
    assert_eq!(doorbells[1].put(&door, true), PutOutcome::Blocked);

    // 4. An interrupt arrives: the MSI lands in the hardware file, `hgeip` rises, the
    //    hart takes an SGEI and its handler fires the owner's doorbell, which kicks.
    aplic.set_input(SOURCE, true);
    assert!(csrs[1].sgeip());
    let handled = handle_sgei(&csrs[1], 1, &alloc, |owner, door| {
        let v = VCPU_IDS.iter().position(|&id| id == owner).unwrap();
        if doorbells[v].fire(door) {
            kick(v as u32);
        }
    });
    assert_eq!(handled, 1);
    assert_eq!(
        kicks[1].load(Ordering::Relaxed),
        2,
        "the doorbell woke vCPU 1"
    );

    // 5. vCPU 1 loaded again: the doorbell is masked and reports it fired.
    assert!(doorbells[1].load(&door));

    // 6. Migration to hart 0 (the vCPU descheduled, on its old hart): the file's
    //    state, with EIID 33 still pending, moves to a line of hart 0.
    let backing = aplic.msi_sink_mut()[1].load(0, &alloc, &csrs[0]);
    assert_eq!(backing, Backing::Hardware { hart: 0, line: 1 });
    assert_eq!(alloc.owner(1, 1), None, "line 1 of hart 1 is free again");
    assert!(
        csrs[0].read(Csr::Hgeip) & (1 << 1) != 0,
        "still pending after the move"
    );
    println!(
        "aia: MSI delivered to a software file, the file moved to hardware line 1 on \
         hart 1, the SGEI doorbell woke the blocked vCPU, and the file followed it to \
         hart 0; kicks per vCPU: {:?}",
        kicks
            .iter()
            .map(|k| k.load(Ordering::Relaxed))
            .collect::<Vec<_>>()
    );
}
