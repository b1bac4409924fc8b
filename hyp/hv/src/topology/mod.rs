//! Guest interrupt topologies: the guest-visible interrupt controllers of one guest
//! and everything they need around guest entry and exit. One implementation of
//! [`GuestIrqChip`] per topology:
//!
//! | topology | module | guest sees |
//! |---|---|---|
//! | vPLIC | [`vplic`] | a PLIC (trap-and-emulate, `virq_riscv::plic::VPlic`), VSEIP through `hvip` |
//! | AIA | [`aia`] | an APLIC in MSI mode (trap-and-emulate) and one IMSIC page per vCPU, backed by a hardware guest interrupt file when one is free |
//!
//! The trap and scheduling code (`crate::exit`, `crate::sched`, `crate::irq`) call
//! only this trait: trap handling decodes the access, writes the guest's registers and
//! injects faults; the topology answers with values.

pub mod aia;
pub mod vplic;

use virq_riscv::imsic::CsrOp;
use virq_riscv::VcpuIrqSink;

use crate::guest::Guest;
use crate::vcpu::{Vcpu, VcpuInner};
use crate::world::{world, Hart};

/// Raises a guest vCPU's VSEIP through its `PendingSet` (virq-riscv calls it when a
/// vPLIC context's or a direct-mode vAPLIC IDC's output changes). Its index is the
/// guest's own vCPU index.
pub struct GuestSink {
    /// Global index of the guest's vCPU 0.
    pub first_vcpu: usize,
    /// vCPU count.
    pub vcpus: usize,
}

impl VcpuIrqSink for GuestSink {
    fn set_vseip(&self, vcpu: u32, level: bool) {
        if (vcpu as usize) < self.vcpus {
            let v = &world().vcpus[self.first_vcpu + vcpu as usize];
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
    fn mmio(&self, g: &Guest, vcpu: &Vcpu, gpa: u64, op: MmioOp) -> u64;
    /// A trapped access to interrupt CSR `csr` (a virtual-instruction exception):
    /// `None` when this topology does not emulate it, `Some(Err(()))` for an access
    /// the guest gets an illegal-instruction exception for, else the old value.
    fn csr(&self, g: &Guest, vcpu: &Vcpu, csr: u32, op: CsrOp) -> Option<Result<u64, ()>>;
    /// Take the passthrough sources the guest completed since the last call (the
    /// vPLIC's complete writes), calling `f(virq)` for each. Called by
    /// `crate::irq::fold_completions` after the trapped access dropped every lock.
    fn take_completed(&self, f: &mut dyn FnMut(u32)) {
        let _ = f;
    }
    /// hyp claimed a physical interrupt routed to virtual source `virq`: deliver it.
    /// Returns whether the topology ends the physical interrupt itself (the AIA
    /// re-trigger) — otherwise `crate::irq` applies the route's EOI policy.
    fn inject(&self, g: &Guest, virq: u32) -> bool;
    /// `vcpu` is about to run on `hart` (its VS CSRs are loaded).
    fn vcpu_load(&self, g: &Guest, hart: &Hart, vcpu: &Vcpu, inner: &mut VcpuInner);
    /// Right before each guest entry (after `HvipSync::flush`).
    fn before_entry(&self, g: &Guest, vcpu: &Vcpu, inner: &VcpuInner);
    /// `vcpu` leaves its hart (blocked in WFI when `vcpu.block.is_blocked()`).
    fn vcpu_put(&self, g: &Guest, vcpu: &Vcpu);
    /// Migration step 1, on the old home hart with `vcpu` descheduled: nothing of the
    /// vCPU may stay on this hart.
    fn vcpu_migrate_out(&self, g: &Guest, vcpu: &Vcpu);
    /// Migration step 3: `vcpu`'s new home is stored.
    fn vcpu_migrated(&self, g: &Guest, vcpu: &Vcpu);
    /// A guest external interrupt line of this hart owned by `vcpu` rang (SGEI): fire
    /// its doorbell; returns whether the vCPU must be kicked.
    fn sgei(
        &self,
        g: &Guest,
        vcpu: &Vcpu,
        door: &virq_riscv::hext::HgeieDoorbell<'_, crate::arch::csr::HartCsrs>,
    ) -> bool;
    /// Print the topology's `ACCT` lines.
    fn print_acct(&self, g: &Guest);
    /// The AIA state, for the host-level AIA code that starts from a guest index or a
    /// hardware line (virq-riscv's sinks, the host APLIC routing); `None` otherwise.
    fn as_aia(&self) -> Option<&aia::GuestAia> {
        None
    }
}
