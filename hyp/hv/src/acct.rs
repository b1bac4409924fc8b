//! Exit accounting: per-vCPU traps by cause, and per passthrough source the physical
//! claims against the guest's completions. Printed at shutdown as `ACCT` lines:
//!
//! ```text
//! ACCT vcpu=<global> guest=<name> id=<guest hart id> cause=<name>(<code>) count=<n>
//! ACCT guest=<name> pirq=<p> virq=<v> claims=<n> guest_completes=<m> storm_masks=<k>
//! ACCT guest=<name> sbi_ipi_calls=<n> sbi_rfence_calls=<n> sbi_ipi_targets=<n> sbi_ipis_in=<n> foreign_in=<n>
//! ACCT guest=<name> vplic_traps claims=<n> completes=<n> other=<n>     (vPLIC guests)
//! ACCT guest=<name> aia …                                             (AIA guests, crate::topology::aia)
//! ACCT claims=<n> guest_completes=<m>
//! ACCT iommu commands=<n> fences=<n> faults=<n> fault_overflows=<n> queue_memory_faults=<n> gstage_invalidations=<n> msi_pte_updates=<n> fault_interrupts=<n>   (hosts with an IOMMU)
//! ACCT guest=<name> pci=<bdf> device_id=<id> dropped_config_writes=<n>   (per function given to a guest)
//! ```
//!
//! The counters themselves are in `counts` (low: every layer bumps them).
use core::sync::atomic::{AtomicU64, Ordering};

use crate::counts::ExitCounts;
pub use crate::counts::PirqCounts;
use crate::world::World;

/// Print the accounting block.
pub fn print(w: &World) {
    crate::println!("ACCT begin");
    for v in &w.vcpus {
        let g = &w.guests[v.guest];
        v.acct.print_causes(v.index, g.cfg.name, v.id);
    }
    let (mut claims, mut completes) = (0, 0);
    for g in &w.guests {
        let vs = g.vcpu_slice();
        let sum = |f: fn(&ExitCounts) -> &AtomicU64| -> u64 {
            vs.iter().map(|v| f(&v.acct).load(Ordering::Relaxed)).sum()
        };
        crate::println!(
            "ACCT guest={} sbi_ipi_calls={} sbi_rfence_calls={} sbi_ipi_targets={} sbi_ipis_in={} foreign_in={}",
            g.cfg.name,
            sum(|c| &c.sbi_ipi),
            sum(|c| &c.sbi_rfence),
            sum(|c| &c.sbi_ipi_targets),
            sum(|c| &c.sbi_ipis_in),
            sum(|c| &c.foreign_in)
        );
        g.irqchip.print_acct(g);
        for &(virq, pirq) in &g.passthrough {
            let Some(p) = w.pirqs.get(pirq.index()) else {
                continue;
            };
            let (c, m) = (
                p.claims.load(Ordering::Relaxed),
                p.completes.load(Ordering::Relaxed),
            );
            claims += c;
            completes += m;
            crate::println!(
                "ACCT guest={} pirq={} virq={} claims={} guest_completes={} storm_masks={} eoi={}",
                g.cfg.name,
                pirq,
                virq,
                c,
                m,
                p.storm_masks.load(Ordering::Relaxed),
                if g.immediate_eoi {
                    "immediate"
                } else {
                    "deferred"
                }
            );
        }
    }
    crate::println!("ACCT migrations={}", crate::migrate::migrations());
    crate::println!("ACCT claims={} guest_completes={}", claims, completes);
    if let Some(iommu) = crate::iommu::iommu() {
        let mut i = iommu.lock();
        // Faults since the last poll are read (and printed) first.
        i.poll_faults();
        let c = &i.counts;
        crate::println!(
            "ACCT iommu commands={} fences={} faults={} fault_overflows={} queue_memory_faults={} gstage_invalidations={} msi_pte_updates={} fault_interrupts={}",
            c.commands.load(Ordering::Relaxed),
            c.fences.load(Ordering::Relaxed),
            c.faults.load(Ordering::Relaxed),
            c.fault_overflows.load(Ordering::Relaxed),
            c.queue_memory_faults.load(Ordering::Relaxed),
            c.gstage_invalidations.load(Ordering::Relaxed),
            c.msi_pte_updates.load(Ordering::Relaxed),
            c.fault_interrupts.load(Ordering::Relaxed)
        );
    }
    for g in &w.guests {
        for f in &g.vpci {
            crate::println!(
                "ACCT guest={} pci={} device_id={:#x} dropped_config_writes={}",
                g.cfg.name,
                f.bdf,
                f.device_id,
                f.dropped_writes.load(Ordering::Relaxed)
            );
        }
    }
    crate::println!("ACCT end");
}
