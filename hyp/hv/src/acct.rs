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
//! ```
use core::sync::atomic::{AtomicU64, Ordering};

use crate::world::World;

const EXC: usize = 24;
const INT: usize = 16;

/// Trap counts of one vCPU, written only by its home hart (except `sbi_ipis_in` and
/// `foreign_in`, bumped by the sender's hart).
pub struct ExitCounts {
    exc: [AtomicU64; EXC],
    int: [AtomicU64; INT],
    /// SBI sPI `send_ipi` calls.
    pub sbi_ipi: AtomicU64,
    /// SBI RFNC calls.
    pub sbi_rfence: AtomicU64,
    /// SBI IPIs this vCPU's `send_ipi` calls raised (one per target vCPU).
    pub sbi_ipi_targets: AtomicU64,
    /// SBI IPIs raised on this vCPU (by any vCPU's `send_ipi`).
    pub sbi_ipis_in: AtomicU64,
    /// SBI requests (IPI, remote fence, HSM start) that named this vCPU from a vCPU of
    /// *another* guest: an isolation failure (docs/hyp.md "Isolation"); always 0.
    pub foreign_in: AtomicU64,
    /// Trapped vPLIC claim reads (including those that found nothing).
    pub vplic_claims: AtomicU64,
    /// Trapped vPLIC completion writes.
    pub vplic_completes: AtomicU64,
    /// Other trapped vPLIC accesses.
    pub vplic_other: AtomicU64,
}

impl ExitCounts {
    /// All zero.
    pub fn new() -> Self {
        ExitCounts {
            exc: core::array::from_fn(|_| AtomicU64::new(0)),
            int: core::array::from_fn(|_| AtomicU64::new(0)),
            sbi_ipi: AtomicU64::new(0),
            sbi_rfence: AtomicU64::new(0),
            sbi_ipi_targets: AtomicU64::new(0),
            sbi_ipis_in: AtomicU64::new(0),
            foreign_in: AtomicU64::new(0),
            vplic_claims: AtomicU64::new(0),
            vplic_completes: AtomicU64::new(0),
            vplic_other: AtomicU64::new(0),
        }
    }

    /// Count one `c`.
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a trapped vPLIC access at `offset`: claim/complete registers are at
    /// `0x20_0004 + 0x1000 * context`.
    pub fn vplic_access(&self, offset: u64, write: bool) {
        let claim_reg = offset >= 0x20_0000 && offset % 0x1000 == 4;
        Self::bump(match (claim_reg, write) {
            (true, false) => &self.vplic_claims,
            (true, true) => &self.vplic_completes,
            _ => &self.vplic_other,
        });
    }

    /// Count one exit with `scause`.
    pub fn count(&self, scause: usize) {
        let code = scause & !(1 << 63);
        let slot = if scause >> 63 != 0 {
            self.int.get(code)
        } else {
            self.exc.get(code)
        };
        if let Some(c) = slot {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Claims and completions of one physical source.
pub struct PirqCounts {
    /// Physical claims.
    pub claims: AtomicU64,
    /// Guest (virtual) completions.
    pub completes: AtomicU64,
    /// Claims since the last guest completion (storm guard).
    pub since_complete: AtomicU64,
    /// Times the storm guard masked the source.
    pub storm_masks: AtomicU64,
}

impl PirqCounts {
    /// Zero.
    pub fn new() -> Self {
        PirqCounts {
            claims: AtomicU64::new(0),
            completes: AtomicU64::new(0),
            since_complete: AtomicU64::new(0),
            storm_masks: AtomicU64::new(0),
        }
    }
}

fn exc_name(code: usize) -> &'static str {
    match code {
        0 => "insn_misaligned",
        1 => "insn_access",
        2 => "illegal_insn",
        3 => "breakpoint",
        4 => "load_misaligned",
        5 => "load_access",
        6 => "store_misaligned",
        7 => "store_access",
        8 => "u_ecall",
        9 => "s_ecall",
        10 => "vs_ecall",
        12 => "insn_page_fault",
        13 => "load_page_fault",
        15 => "store_page_fault",
        20 => "insn_guest_page_fault",
        21 => "load_guest_page_fault",
        22 => "virtual_insn",
        23 => "store_guest_page_fault",
        _ => "exception",
    }
}

fn int_name(code: usize) -> &'static str {
    match code {
        1 => "irq_ssi",
        5 => "irq_sti",
        9 => "irq_sei",
        12 => "irq_sgei",
        _ => "irq",
    }
}

/// Print the accounting block.
pub fn print(w: &World) {
    crate::println!("ACCT begin");
    for v in &w.vcpus {
        let g = &w.guests[v.guest];
        for (code, c) in v.acct.exc.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n != 0 {
                crate::println!(
                    "ACCT vcpu={} guest={} id={} cause={}({}) count={}",
                    v.index,
                    g.cfg.name,
                    v.id,
                    exc_name(code),
                    code,
                    n
                );
            }
        }
        for (code, c) in v.acct.int.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n != 0 {
                crate::println!(
                    "ACCT vcpu={} guest={} id={} cause={}(int{}) count={}",
                    v.index,
                    g.cfg.name,
                    v.id,
                    int_name(code),
                    code,
                    n
                );
            }
        }
    }
    let (mut claims, mut completes) = (0, 0);
    for g in &w.guests {
        let vs = &w.vcpus[g.first_vcpu..g.first_vcpu + g.vcpus];
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
            let Some(p) = w.pirqs.get(pirq as usize) else {
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
    crate::println!(
        "ACCT migrations={}",
        crate::sched::MIGRATIONS.load(Ordering::Relaxed)
    );
    crate::println!("ACCT claims={} guest_completes={}", claims, completes);
    crate::println!("ACCT end");
}
