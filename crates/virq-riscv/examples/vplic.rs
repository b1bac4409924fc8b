//! A host program playing a RISC-V hypervisor around a guest PLIC: the vPLIC
//! ([`virq_riscv::plic`]) driven through its MMIO interface, its interrupt output
//! reaching each vCPU's pending set ([`virq_riscv::hext::PendingSink`]), the `hvip`
//! flush before guest entry and sync after exit ([`virq_riscv::hext::HvipSync`]) on fake
//! CSRs, and a passed-through level interrupt whose physical complete waits for the
//! guest's (an [`virq_riscv::EoiSink`] over `virq_core`'s in-flight tracking and
//! routing table).
//!
//! ```sh
//! cargo run -p virq-riscv --example vplic
//! ```
//!
//! What the hypervisor provides: a [`Csrs`] implementation (here [`FakeCsrs`]; on
//! hardware `csrr`/`csrw`), a kick (an IPI to the vCPU's home hart), and the MMIO
//! decode of a guest page fault into `read`/`write` calls (see `virq_riscv::insn`).
use std::cell::RefCell;
use std::sync::atomic::{AtomicU32, Ordering};

use virq_core::ack::{AckNotifiers, InFlight};
use virq_core::pending::VcpuPending;
use virq_core::route::{RouteTable, Trigger};
use virq_riscv::hext::fake::FakeCsrs;
use virq_riscv::hext::{Csr, Csrs, HvipSync, PendingSink, HVIP_VSEIP, HVIP_VSSIP, IRQ_VS_SOFT};
use virq_riscv::plic::VPlic;
use virq_riscv::{EoiSink, MmioDevice};

const UART: u32 = 10; // an emulated device's source
const NIC: u32 = 7; // a passed-through device's source
const NIC_PIRQ: u32 = 40; // its physical interrupt
const GUEST: u16 = 1;

/// PLIC register offsets (PLIC spec 1.0.0, "Memory Map").
fn priority(source: u32) -> u64 {
    4 * u64::from(source)
}
fn enable(ctx: u64, source: u32) -> u64 {
    0x2000 + 0x80 * ctx + 4 * u64::from(source / 32)
}
fn claim_complete(ctx: u64) -> u64 {
    0x20_0004 + 0x1000 * ctx
}

/// The passthrough half. The vPLIC calls [`EoiSink::guest_completed`] from inside the
/// guest's MMIO access — in a hypervisor, with the vPLIC's lock held — so the sink only
/// records; the hypervisor runs the ack notifiers after it dropped that lock
/// ([`Passthrough::fold_completions`]), because a notifier may need it (seed 004).
struct Passthrough<'a> {
    inflight: &'a InFlight<8>,
    routes: &'a RouteTable<64>,
    completed: RefCell<Vec<u32>>,
    physical_completes: RefCell<Vec<u32>>,
}

impl EoiSink for Passthrough<'_> {
    fn guest_completed(&self, source: u32) {
        self.completed.borrow_mut().push(source);
    }
}

impl Passthrough<'_> {
    /// After the trapped access, with no device lock held.
    fn fold_completions(&self) {
        for source in self.completed.take() {
            self.inflight.deactivate(source, |_, token| {
                if self.routes.guest_completed(token) == Ok(true) {
                    let pirq = RouteTable::<64>::pirq_of_token(token);
                    // Here the hypervisor writes the physical PLIC's complete register.
                    self.physical_completes.borrow_mut().push(pirq);
                }
            });
        }
    }
}

fn main() {
    // Per vCPU: the pending set (VSSIP is the guest-clearable handoff id), the hvip
    // shadow, and (here) one fake hart's CSRs.
    let pending = [
        VcpuPending::with_handoff(&[IRQ_VS_SOFT]).unwrap(),
        VcpuPending::with_handoff(&[IRQ_VS_SOFT]).unwrap(),
    ];
    let mut hvip = [HvipSync::new(), HvipSync::new()];
    let csrs = [FakeCsrs::new(0), FakeCsrs::new(0)];
    let kicks = [AtomicU32::new(0), AtomicU32::new(0)];
    // A kick: `VcpuBlock::kick` and an IPI to the home hart in a real hypervisor.
    let kick = |vcpu: u32| {
        kicks[vcpu as usize].fetch_add(1, Ordering::Relaxed);
    };

    // Control plane: route the NIC's physical level interrupt to source 7 of the guest.
    let routes = RouteTable::<64>::new();
    let acks = AckNotifiers::<64>::new();
    let inflight = InFlight::<8>::new();
    let token = routes.route(NIC_PIRQ, GUEST, NIC, Trigger::Level).unwrap();
    acks.register(NIC, token).unwrap();
    let pt = Passthrough {
        inflight: &inflight,
        routes: &routes,
        completed: RefCell::new(Vec::new()),
        physical_completes: RefCell::new(Vec::new()),
    };

    // A two-context PLIC: context 0 drives vCPU 0, context 1 vCPU 1.
    let mut plic: VPlic<_, _, 2> = VPlic::new(
        32,
        &[Some(0), Some(1)],
        PendingSink::new(&pending, kick),
        &pt,
    )
    .unwrap();
    plic.set_passthrough(NIC, true);

    // The guest's driver programs the PLIC (trapped stores, decoded by the hypervisor).
    for s in [UART, NIC] {
        plic.write(priority(s), 4, 1);
    }
    plic.write(enable(0, UART), 4, (1 << UART) | (1 << NIC));
    plic.write(0x20_0000, 4, 0); // context 0 threshold

    // The vUART raises its line: vCPU 0's VSEIP goes up and it is kicked.
    plic.set_input(UART, true);
    assert_eq!(kicks[0].load(Ordering::Relaxed), 1);
    // vCPU 0 enters the guest: flush the pending changes into hvip.
    assert!(hvip[0].flush(&pending[0], &csrs[0]));
    assert_ne!(
        csrs[0].read(Csr::Hvip) & HVIP_VSEIP,
        0,
        "VSEIP reaches the guest"
    );
    // The guest's handler: claim (a trapped load), service the UART, complete.
    let id = plic.read(claim_complete(0), 4) as u32;
    assert_eq!(id, UART);
    plic.set_input(UART, false);
    plic.write(claim_complete(0), 4, u64::from(id));
    pt.fold_completions(); // not a passthrough source: nothing to notify
    hvip[0].flush(&pending[0], &csrs[0]);
    assert_eq!(csrs[0].read(Csr::Hvip) & HVIP_VSEIP, 0, "and leaves it");

    // The NIC's physical interrupt arrives at the host: deliver it through the route,
    // mark it in flight *before* the guest can see it, inject, and keep the physical
    // gateway closed (level: `EoiAction::DeferToGuest`).
    let d = routes.deliver(NIC_PIRQ).expect("routed");
    inflight.mark(&acks, d.virq()).unwrap();
    plic.set_input(d.virq(), true);
    drop(d);
    hvip[0].flush(&pending[0], &csrs[0]);
    let id = plic.read(claim_complete(0), 4) as u32;
    assert_eq!(id, NIC);
    assert!(
        pt.physical_completes.borrow().is_empty(),
        "no storm: deferred"
    );
    // The guest services the NIC (its line drops) and completes: now the physical one.
    plic.set_input(NIC, false);
    plic.write(claim_complete(0), 4, u64::from(id));
    pt.fold_completions(); // the vPLIC lock is dropped: run the ack notifiers
    assert_eq!(*pt.physical_completes.borrow(), vec![NIC_PIRQ]);

    // VSSIP, the handoff id: an IPI to vCPU 1, which the guest acknowledges by clearing
    // `sip.SSIP` itself; `sync` after exit reads it back, and the next IPI is delivered.
    for round in 0..2 {
        if pending[1].raise(IRQ_VS_SOFT).unwrap() {
            kick(1);
        }
        hvip[1].flush(&pending[1], &csrs[1]);
        assert_ne!(
            csrs[1].read(Csr::Hvip) & HVIP_VSSIP,
            0,
            "IPI {round} delivered"
        );
        csrs[1].guest_write_ssip(false); // the guest, while running
        hvip[1].sync(&csrs[1]); // right after the exit
    }

    // A broken guest access: counted, never a panic.
    plic.write(3, 4, 1);
    println!(
        "vplic: UART and passed-through NIC delivered and completed on vCPU 0, 2 IPIs on \
         vCPU 1 ({} kicks); physical completes after the guest's: {:?}; ignored guest \
         accesses: {:?}",
        kicks[1].load(Ordering::Relaxed),
        pt.physical_completes.borrow(),
        plic.errors()
    );
    assert_eq!(plic.errors().misaligned, 1);
}
