//! The vPLIC topology: the guest sees a PLIC, emulated by trapping every access
//! (`virq_riscv::plic::VPlic`); a context's output raises or lowers its vCPU's VSEIP
//! through the vCPU's `PendingSet` (and a kick).
//!
//! # Passthrough (seeds 001 and 004)
//!
//! A physical source routed here is edge-sensed in the vPLIC: the host controller's
//! gateway already turns the level into one request per physical claim. A delivery
//! marks the virtual source in flight (virq-core `InFlight`, capturing the route's ack
//! token) *before* pulsing the vPLIC, so its completion finds it. The guest's
//! completion only sets a bit (the vPLIC's [`EoiSink`], called under the vPLIC lock);
//! once the trapped access dropped that lock, `irq::fold_completions` takes the
//! bits ([`GuestIrqChip::take_completed`]), deactivates them and runs the ack notifier
//! — the route's deferred physical complete — with no lock held.
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use virq_riscv::imsic::CsrOp;
use virq_riscv::plic::{Sense, VPlic};
use virq_riscv::{ConfigError, EoiSink, MmioDevice};

use super::{GuestIrqChip, GuestSink, GuestView, MmioOp};
use crate::counts::ExitCounts;
use crate::hart::Hart;
use crate::ids::{Pirq, Virq, MAX_VCPUS_PER_GUEST, MAX_VIRQS};
use crate::vcpu::{Vcpu, VcpuInner};

/// Size of the vPLIC window for `vcpus` contexts (virq-riscv's decoding).
pub fn window_size(vcpus: usize) -> u64 {
    virq_riscv::plic::window_size(vcpus as u32)
}

/// Records a guest's virtual completion of a passthrough source: one bit per source,
/// set under the vPLIC lock, taken by `irq::fold_completions`.
pub struct Completions([AtomicU64; MAX_VIRQS / 64]);

impl EoiSink for &'static Completions {
    fn guest_completed(&self, source: u32) {
        if let Some(word) = self.0.get(source as usize / 64) {
            word.fetch_or(1 << (source % 64), Ordering::AcqRel);
        }
    }
}

impl Completions {
    fn take(&self, f: &mut dyn FnMut(Virq)) {
        for (i, word) in self.0.iter().enumerate() {
            if word.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut bits = word.swap(0, Ordering::AcqRel);
            while bits != 0 {
                f(Virq(i as u32 * 64 + bits.trailing_zeros()));
                bits &= bits - 1;
            }
        }
    }
}

/// The guest's vPLIC type.
pub type GuestPlic = VPlic<GuestSink, &'static Completions, MAX_VCPUS_PER_GUEST>;

/// A guest's vPLIC: its window, the device and the completions it recorded.
pub struct GuestVplic {
    /// Guest-physical base and size of the window.
    window: (u64, u64),
    /// The device. Lock order: taken inside a vCPU's `inner` lock, never the reverse.
    plic: Mutex<GuestPlic>,
    completed: &'static Completions,
}

impl GuestVplic {
    /// A vPLIC at guest-physical `base` with `sources` sources, one context per vCPU,
    /// and the passthrough sources `passthrough` (`(virq, pirq)`) edge-sensed.
    pub fn new(
        base: u64,
        sources: u32,
        first_vcpu: usize,
        vcpus: usize,
        passthrough: &[(Virq, Pirq)],
    ) -> Result<Self, ConfigError> {
        let completed: &'static Completions = alloc::boxed::Box::leak(alloc::boxed::Box::new(
            Completions(core::array::from_fn(|_| AtomicU64::new(0))),
        ));
        let ctx: alloc::vec::Vec<Option<u32>> = (0..vcpus as u32).map(Some).collect();
        let mut plic = VPlic::new(sources, &ctx, GuestSink { first_vcpu, vcpus }, completed)?;
        for &(virq, _) in passthrough {
            plic.set_sense(virq.0, Sense::Edge);
            plic.set_passthrough(virq.0, true);
        }
        let size = plic.region_size();
        Ok(Self {
            window: (base, size),
            plic: Mutex::new(plic),
            completed,
        })
    }
}

impl GuestIrqChip for GuestVplic {
    fn mmio_window(&self, gpa: u64) -> bool {
        let (b, s) = self.window;
        gpa >= b && gpa - b < s
    }

    fn mmio(&self, _: &dyn GuestView, vcpu: &Vcpu, gpa: u64, op: MmioOp) -> u64 {
        let off = gpa - self.window.0;
        match op {
            MmioOp::Read { size } => {
                vcpu.acct.vplic_access(off, false);
                self.plic.lock().read(off, size)
            }
            MmioOp::Write { size, value } => {
                vcpu.acct.vplic_access(off, true);
                self.plic.lock().write(off, size, value);
                0
            }
        }
    }

    fn csr(&self, _: &dyn GuestView, _: &Vcpu, _: u32, _: CsrOp) -> Option<Result<u64, ()>> {
        None
    }

    fn take_completed(&self, f: &mut dyn FnMut(Virq)) {
        self.completed.take(f);
    }

    fn inject(&self, g: &dyn GuestView, virq: Virq) -> bool {
        // In flight before the guest can see it (virq-core ack: mark, then raise), so
        // its completion finds the token this route registered.
        if g.inflight().mark(g.acks(), virq.0).is_err() {
            crate::println!(
                "hyp: guest {}: no in-flight slot for virq {virq}",
                g.index()
            );
        }
        self.plic.lock().pulse(virq.0);
        false
    }

    fn vcpu_load(&self, _: &dyn GuestView, _: &Hart, _: &Vcpu, inner: &mut VcpuInner) -> bool {
        if crate::hostirq::aia::host().is_some_and(|h| h.has_ssaia()) {
            crate::arch::csr::hstatus::clear(crate::arch::csr::hstatus_bits::VGEIN_MASK);
            crate::arch::csr::hvictl::write(0);
        }
        inner.ctx.guest.hstatus &= !crate::arch::csr::hstatus_bits::VGEIN_MASK;
        false
    }

    fn before_entry(&self, _: &dyn GuestView, _: &Vcpu, _: &VcpuInner) {}

    fn vcpu_put(&self, _: &dyn GuestView, _: &Vcpu) {}

    fn vcpu_migrate_out(&self, _: &dyn GuestView, _: &Vcpu) {}

    fn vcpu_migrated(&self, _: &dyn GuestView, _: &Vcpu) {}

    fn sgei(
        &self,
        _: &dyn GuestView,
        _: &Vcpu,
        _: &virq_riscv::hext::HgeieDoorbell<'_, crate::arch::csr::HartCsrs>,
    ) -> bool {
        false
    }

    fn print_acct(&self, g: &dyn GuestView) {
        let e = self.plic.lock().errors();
        crate::println!(
            "ACCT guest={} vplic_ignored bad_width={} misaligned={} unmapped={} read_only={} ignored_value={}",
            g.name(), e.bad_width, e.misaligned, e.unmapped, e.read_only, e.ignored_value
        );
        let vs = g.vcpu_slice();
        let sum = |f: fn(&ExitCounts) -> &AtomicU64| -> u64 {
            vs.iter().map(|v| f(&v.acct).load(Ordering::Relaxed)).sum()
        };
        crate::println!(
            "ACCT guest={} vplic_traps claims={} completes={} other={}",
            g.name(),
            sum(|c| &c.vplic_claims),
            sum(|c| &c.vplic_completes),
            sum(|c| &c.vplic_other)
        );
    }
}
