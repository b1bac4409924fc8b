//! Guest interrupt topologies: the guest-visible interrupt controllers of one guest
//! and everything they need around guest entry and exit. One implementation of
//! [`GuestIrqChip`] per topology:
//!
//! | topology | module | guest sees |
//! |---|---|---|
//! | vPLIC | [`vplic`] | a PLIC (trap-and-emulate, `virq_riscv::plic::VPlic`), VSEIP through `hvip` |
//! | AIA | [`aia`] | an APLIC in MSI mode (trap-and-emulate) and one IMSIC page per vCPU, backed by a hardware guest interrupt file when one is free |
//!
//! The trap and scheduling code (`exit`, `sched`, `irq`, above this layer) call only
//! this trait: trap handling decodes the access, writes the guest's registers and
//! injects faults; the topology answers with values.
//!
//! A topology sits below the guest that owns it: it sees that guest through
//! [`GuestView`], the vCPUs and harts through their tables (`vcpu::vcpus`,
//! `hart::harts`), and the passthrough route table through [`routes`]. It never calls
//! up into the trap, interrupt or scheduling code; what those must do after a
//! topology call is in its return value.

pub mod aia;
pub mod vplic;

use spin::{Mutex, Once};
use virq_core::ack::{AckNotifiers, InFlight};
use virq_core::route::RouteTable;
use virq_riscv::imsic::CsrOp;
use virq_riscv::VcpuIrqSink;

use crate::gstage::GStage;
use crate::hart::Hart;
use crate::ids::{Virq, INFLIGHT_SLOTS, MAX_PIRQ, MAX_VIRQS};
use crate::vcpu::{Vcpu, VcpuInner};

/// What a topology sees of the guest it belongs to. The guest owns its topology
/// (`Guest::irqchip`), so the topology cannot name the guest's type; `guest.rs`
/// implements this for it.
pub trait GuestView {
    /// Index in `World::guests` (also its `RouteTable` id).
    fn index(&self) -> u16;
    /// Its name (`ACCT` lines).
    fn name(&self) -> &str;
    /// Its vCPUs in id order (`Guest::vcpu_slice`).
    fn vcpu_slice(&self) -> &'static [Vcpu];
    /// Its G-stage page tables.
    fn gstage(&self) -> &Mutex<GStage>;
    /// Ack notifiers of its passthrough sources: the route's ack token per virq.
    fn acks(&self) -> &AckNotifiers<MAX_VIRQS>;
    /// Its passthrough interrupts delivered and not yet completed.
    fn inflight(&self) -> &InFlight<INFLIGHT_SLOTS>;
}

static ROUTES: Once<&'static RouteTable<MAX_PIRQ>> = Once::new();

/// Publish the passthrough route table (`world::set_world`, boot hart, once).
pub fn publish_routes(routes: &'static RouteTable<MAX_PIRQ>) {
    ROUTES.call_once(|| routes);
}

/// The passthrough route table (`World::routes`).
pub fn routes() -> &'static RouteTable<MAX_PIRQ> {
    ROUTES.get().expect("world built before use")
}

/// Raises a guest vCPU's VSEIP through its `PendingSet` (virq-riscv calls it when a
/// vPLIC context's or a direct-mode vAPLIC IDC's output changes). Its index is the
/// guest's own vCPU id (`GuestVcpuId`), `first_vcpu` turns it into the global one.
pub struct GuestSink {
    /// Global index of the guest's vCPU 0.
    pub first_vcpu: usize,
    /// vCPU count.
    pub vcpus: usize,
}

impl VcpuIrqSink for GuestSink {
    fn set_vseip(&self, vcpu: u32, level: bool) {
        if (vcpu as usize) < self.vcpus {
            let v = &crate::vcpu::vcpus()[self.first_vcpu + vcpu as usize];
            if level {
                v.raise(virq_riscv::hext::IRQ_VS_EXT);
            } else {
                v.lower(virq_riscv::hext::IRQ_VS_EXT);
            }
        }
    }
}

/// An emulated MMIO access, decoded by the trap handler.
#[derive(Clone, Copy, Debug)]
pub enum MmioOp {
    /// A load of `size` bytes.
    Read {
        /// Bytes.
        size: u8,
    },
    /// A store of `value` (`size` bytes).
    Write {
        /// Bytes.
        size: u8,
        /// The value, truncated to `size`.
        value: u64,
    },
}

/// A guest's interrupt topology, as the trap and scheduling code see it. Every method
/// gets the guest it belongs to; `vcpu` is always one of that guest's vCPUs and the
/// caller runs on the vCPU's home hart unless said otherwise.
pub trait GuestIrqChip: Send + Sync {
    /// Does guest-physical address `gpa` fall in one of this topology's trapped
    /// windows?
    fn mmio_window(&self, gpa: u64) -> bool;
    /// Emulate one access of `vcpu` to such a window; a read returns its value (a
    /// write returns 0). The guest's registers are the caller's.
    fn mmio(&self, g: &dyn GuestView, vcpu: &Vcpu, gpa: u64, op: MmioOp) -> u64;
    /// A trapped access to interrupt CSR `csr` (a virtual-instruction exception):
    /// `None` when this topology does not emulate it, `Some(Err(()))` for an access
    /// the guest gets an illegal-instruction exception for, else the old value.
    fn csr(&self, g: &dyn GuestView, vcpu: &Vcpu, csr: u32, op: CsrOp) -> Option<Result<u64, ()>>;
    /// Take the passthrough sources the guest completed since the last call (the
    /// vPLIC's complete writes), calling `f(virq)` for each. Called by
    /// `irq::fold_completions` after the trapped access dropped every lock.
    fn take_completed(&self, f: &mut dyn FnMut(Virq)) {
        let _ = f;
    }
    /// hyp claimed a physical interrupt routed to virtual source `virq`: deliver it.
    /// Returns whether the topology ends the physical interrupt itself (the AIA
    /// re-trigger) — otherwise `irq` applies the route's EOI policy.
    fn inject(&self, g: &dyn GuestView, virq: Virq) -> bool;
    /// `vcpu` is about to run on `hart` (its VS CSRs are loaded). Returns whether it
    /// wrote `hgeie`: one such write that raced an MSI to another blocked vCPU's line
    /// can have left `hip.SGEIP` at a stale 0, so the caller then serves this hart's
    /// SGEI (`irq::handle_sgei`) from what the source says, before entering the guest.
    fn vcpu_load(&self, g: &dyn GuestView, hart: &Hart, vcpu: &Vcpu, inner: &mut VcpuInner)
        -> bool;
    /// Right before a guest entry (after `HvipSync::flush`): the first after
    /// `vcpu_load`, and every one at which `hvip.VSEIP` (the `HvipSync` shadow) differs
    /// from the previous call's — the only input a topology may take from `inner` here
    /// (`sched::run_vcpu` skips the call otherwise, on its lean and delivery paths).
    fn before_entry(&self, g: &dyn GuestView, vcpu: &Vcpu, inner: &VcpuInner);
    /// `vcpu` leaves its hart (blocked in WFI when `vcpu.block.is_blocked()`).
    fn vcpu_put(&self, g: &dyn GuestView, vcpu: &Vcpu);
    /// Migration step 1, on the old home hart with `vcpu` descheduled: nothing of the
    /// vCPU may stay on this hart.
    fn vcpu_migrate_out(&self, g: &dyn GuestView, vcpu: &Vcpu);
    /// Migration step 3: `vcpu`'s new home is stored.
    fn vcpu_migrated(&self, g: &dyn GuestView, vcpu: &Vcpu);
    /// A guest external interrupt line of this hart owned by `vcpu` rang (SGEI): fire
    /// its doorbell; returns whether the vCPU must be kicked.
    fn sgei(
        &self,
        g: &dyn GuestView,
        vcpu: &Vcpu,
        door: &virq_riscv::hext::HgeieDoorbell<'_, crate::arch::csr::HartCsrs>,
    ) -> bool;
    /// Print the topology's `ACCT` lines.
    fn print_acct(&self, g: &dyn GuestView);
    /// The AIA state, for the host interrupt code that must know whether a guest is an
    /// AIA guest (`hostirq`'s APLIC routing at boot); `None` otherwise.
    fn as_aia(&self) -> Option<&aia::GuestAia> {
        None
    }
}
