//! The accounting counters: per-vCPU traps by cause ([`ExitCounts`]), per physical
//! source claims against guest completions ([`PirqCounts`]); vCPU migrations are
//! `crate::migrate`'s, shared with aarch64. Bumped everywhere below the top; `acct`
//! prints them at shutdown as `ACCT` lines.
use core::sync::atomic::{AtomicU64, Ordering};

use crate::ids::GuestVcpuId;

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

impl ExitCounts {
    /// Print one `ACCT vcpu=…` line per trap cause counted, for vCPU `vcpu` (global
    /// index) of guest `guest`, guest hart id `id`.
    pub fn print_causes(&self, vcpu: usize, guest: &str, id: GuestVcpuId) {
        for (code, c) in self.exc.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n != 0 {
                crate::println!(
                    "ACCT vcpu={} guest={} id={} cause={}({}) count={}",
                    vcpu,
                    guest,
                    id.0,
                    exc_name(code),
                    code,
                    n
                );
            }
        }
        for (code, c) in self.int.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n != 0 {
                crate::println!(
                    "ACCT vcpu={} guest={} id={} cause={}(int{}) count={}",
                    vcpu,
                    guest,
                    id.0,
                    int_name(code),
                    code,
                    n
                );
            }
        }
    }
}
