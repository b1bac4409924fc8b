//! Assertions on what a Linux guest printed: the two `/proc/interrupts` dumps of the
//! test `/init` (`crate::images::INIT_TEST`) and its workload line.
//!
//! Checked, per guest:
//! - the CPU count in `VIRQ-INIT-START cpus=N` matches the dump's columns;
//! - the timer counts on every CPU;
//! - the IPI rows (`IPI0:` …) move on **every** CPU between the dump before and the
//!   dump after the IPI-heavy workload;
//! - the UART counts on every CPU (the `/init` moves its affinity round the CPUs) —
//!   only when the guest's UART has an interrupt;
//! - the workload finished every run it started (`VIRQ-WORKLOAD-DONE runs=R expected=E`).
//!
//! The timer's and the UART's rows are told by their names ([`Rows`]: riscv64's
//! `riscv-timer` and `ttyS0`, arm64's `arch_timer` and `uart-pl011`).
use anyhow::{ensure, Context, Result};

/// How a Linux guest's `/proc/interrupts` names the rows [`check_linux`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rows {
    /// The per-CPU timer's row.
    pub timer: &'static str,
    /// The console UART's row.
    pub uart: &'static str,
}

/// riscv64: the Sstc/SBI timer, the 16550.
pub const RISCV64_ROWS: Rows = Rows {
    timer: "riscv-timer",
    uart: "ttyS0",
};

/// arm64: the generic timer (its PPI), the PL011.
pub const ARM64_ROWS: Rows = Rows {
    timer: "arch_timer",
    uart: "uart-pl011",
};

/// One parsed `/proc/interrupts` dump.
#[derive(Debug, Default, PartialEq)]
pub struct Interrupts {
    /// CPU columns of the header.
    pub cpus: usize,
    /// `(name, per-CPU counts, description)` per row with per-CPU counts.
    pub rows: Vec<(String, Vec<u64>, String)>,
}

impl Interrupts {
    /// Parse a dump starting at its `CPU0 …` header; stops at the first line that is not
    /// a row.
    pub fn parse(lines: &[&str]) -> Option<Self> {
        let header = lines.first()?;
        let cpus = header
            .split_whitespace()
            .take_while(|t| t.starts_with("CPU"))
            .count();
        if cpus == 0 {
            return None;
        }
        let mut rows = Vec::new();
        for line in &lines[1..] {
            let Some((name, rest)) = line.split_once(':') else {
                break;
            };
            let name = name.trim();
            if name.is_empty() || name.contains(' ') {
                break;
            }
            let mut toks = rest.split_whitespace();
            let counts: Vec<u64> = toks
                .by_ref()
                .take(cpus)
                .map_while(|t| t.parse().ok())
                .collect();
            if counts.len() != cpus {
                // Rows like `ERR:` carry one total, not one count per CPU.
                continue;
            }
            rows.push((name.to_string(), counts, toks.collect::<Vec<_>>().join(" ")));
        }
        Some(Self { cpus, rows })
    }

    /// Per-CPU sum of the rows whose name or description matches.
    pub fn sum(&self, pick: impl Fn(&str, &str) -> bool) -> Vec<u64> {
        let mut sum = vec![0; self.cpus];
        for (name, counts, desc) in &self.rows {
            if pick(name, desc) {
                for (s, c) in sum.iter_mut().zip(counts) {
                    *s += c;
                }
            }
        }
        sum
    }
}

/// What [`check_linux`] measured, for the suite's summary line.
#[derive(Debug, Default)]
pub struct LinuxFigures {
    /// CPUs the guest saw.
    pub cpus: usize,
    /// IPIs per CPU received during the workload.
    pub ipis: Vec<u64>,
    /// UART interrupts per CPU (final dump).
    pub uart: Vec<u64>,
}

fn is_ipi(name: &str, _: &str) -> bool {
    name.starts_with("IPI")
}

/// Check one guest's output (`out` is that guest's part of the console: with two
/// guests, lines prefixed by the other are filtered out by the caller). `uart`: the
/// guest's UART has an interrupt, so it must count on every CPU; `rows`: the names of
/// the timer's and the UART's rows.
pub fn check_linux(out: &str, uart: bool, rows: Rows) -> Result<LinuxFigures> {
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    let start = lines
        .iter()
        .position(|l| l.contains("VIRQ-INIT-START"))
        .context("Linux did not print VIRQ-INIT-START")?;
    let cpus: usize = lines[start]
        .split_whitespace()
        .find_map(|t| t.strip_prefix("cpus=")?.parse().ok())
        .context("VIRQ-INIT-START without cpus=")?;
    let dump_at = |from: usize| -> Result<(usize, Interrupts)> {
        let i = (from..lines.len())
            .find(|&i| lines[i].trim_start().starts_with("CPU0"))
            .context("no /proc/interrupts dump")?;
        Ok((
            i,
            Interrupts::parse(&lines[i..]).context("bad /proc/interrupts header")?,
        ))
    };
    let (first_at, before) = dump_at(start)?;
    let done = lines
        .iter()
        .position(|l| l.starts_with("VIRQ-WORKLOAD-DONE"))
        .context("Linux did not print VIRQ-WORKLOAD-DONE")?;
    ensure!(done > first_at, "workload line before the first dump");
    let field = |k: &str| -> Option<u64> {
        lines[done]
            .split_whitespace()
            .find_map(|t| t.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
    };
    let (runs, expected) = (field("runs"), field("expected"));
    ensure!(
        runs.is_some() && runs == expected,
        "IPI workload: {runs:?} runs finished, {expected:?} expected"
    );
    let (_, after) = dump_at(done)?;
    ensure!(
        before.cpus == cpus && after.cpus == cpus,
        "/proc/interrupts shows {} CPUs, guest has {cpus}",
        after.cpus
    );
    let timer = after.sum(|_, d| d.contains(rows.timer));
    ensure!(
        timer.iter().all(|&c| c > 0),
        "timer interrupts per CPU: {timer:?}"
    );
    let (ipi0, ipi1) = (before.sum(is_ipi), after.sum(is_ipi));
    let ipis: Vec<u64> = ipi1
        .iter()
        .zip(&ipi0)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    ensure!(
        ipis.iter().all(|&d| d > 0),
        "IPIs did not move on every CPU during the workload: {ipi0:?} -> {ipi1:?}"
    );
    let uart_counts = after.sum(|_, d| d.contains(rows.uart));
    if uart {
        ensure!(
            uart_counts.iter().all(|&c| c > 0),
            "UART interrupts per CPU: {uart_counts:?}"
        );
    }
    ensure!(!out.contains("Kernel panic"), "Linux panicked");
    Ok(LinuxFigures {
        cpus,
        ipis,
        uart: uart_counts,
    })
}

/// The last `/proc/interrupts` dump Linux printed.
pub fn last_dump(out: &str) -> Option<Interrupts> {
    let lines: Vec<&str> = out.lines().map(|l| l.trim_end_matches('\r')).collect();
    let at = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with("CPU0"))?;
    Interrupts::parse(&lines[at..])
}

/// Split a console shared by two guests: hyp prints each line of the second guest (its
/// emulated UART) in one piece, prefixed with `prefix`, but it can land in the middle
/// of a line the first guest (which owns the real UART) is still writing. Every
/// `prefix … \n` run, wherever it starts, goes to the second guest (without the
/// prefix); the rest, with those runs cut out, is the first guest's.
pub fn split_prefixed(out: &str, prefix: &str) -> (String, String) {
    let (mut own, mut second) = (String::new(), String::new());
    let mut rest = out;
    while let Some(at) = rest.find(prefix) {
        own.push_str(&rest[..at]);
        let tail = &rest[at + prefix.len()..];
        let end = tail.find('\n').map_or(tail.len(), |e| e + 1);
        second.push_str(&tail[..end]);
        rest = &tail[end..];
    }
    own.push_str(rest);
    (own, second)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP1: &str = "           CPU0       CPU1
 10:        396        393  RISC-V INTC   5 Edge      riscv-timer
 11:          3          0  SiFive PLIC  10 Edge      ttyS0
IPI0:        56         31  Rescheduling interrupts
IPI1:       212        158  Function call interrupts
ERR:          0
";
    const DUMP2: &str = "           CPU0       CPU1
 10:        696        693  RISC-V INTC   5 Edge      riscv-timer
 11:         30          4  SiFive PLIC  10 Edge      ttyS0
IPI0:        95         45  Rescheduling interrupts
IPI1:       509        243  Function call interrupts
";

    fn check_linux_rv(out: &str, uart: bool) -> Result<LinuxFigures> {
        check_linux(out, uart, RISCV64_ROWS)
    }

    fn output(dump2: &str, runs: &str) -> String {
        format!("VIRQ-INIT-START cpus=2 kernel=x\n{DUMP1}VIRQ-WORKLOAD-DONE {runs}\n{dump2}VIRQ-INIT-DONE\n")
    }

    /// Seen in the two-guest run: the second guest's line landed inside a row of the
    /// first guest's `/proc/interrupts`.
    #[test]
    fn split_prefixed_cuts_lines_out_of_the_middle_of_others() {
        let out = "a\n 10:   [g2] IPI4: 0\n    696  riscv-timer\n[g2] x\nb";
        let (own, second) = split_prefixed(out, "[g2] ");
        assert_eq!(own, "a\n 10:       696  riscv-timer\nb");
        assert_eq!(second, "IPI4: 0\nx\n");
    }

    #[test]
    fn parses_rows_and_skips_totals() {
        let lines: Vec<&str> = DUMP1.lines().collect();
        let t = Interrupts::parse(&lines).unwrap();
        assert_eq!(t.cpus, 2);
        assert_eq!(t.rows.len(), 4);
        assert_eq!(t.sum(is_ipi), vec![268, 189]);
        assert_eq!(t.rows[1].2, "SiFive PLIC 10 Edge ttyS0");
    }

    #[test]
    fn a_good_run_passes() {
        let f = check_linux_rv(&output(DUMP2, "runs=4 expected=4"), true).unwrap();
        assert_eq!(f.ipis, vec![336, 99]);
        assert_eq!(f.uart, vec![30, 4]);
    }

    #[test]
    fn ipis_must_move_on_every_cpu() {
        let stuck = DUMP2
            .replace("95         45", "95         31")
            .replace("509        243", "509        158");
        let e = check_linux_rv(&output(&stuck, "runs=4 expected=4"), true).unwrap_err();
        assert!(e.to_string().contains("every CPU"), "{e}");
    }

    #[test]
    fn uart_must_count_on_every_cpu_when_it_has_an_irq() {
        let one_cpu = DUMP2.replace("30          4", "30          0");
        assert!(check_linux_rv(&output(&one_cpu, "runs=4 expected=4"), true).is_err());
        assert!(check_linux_rv(&output(&one_cpu, "runs=4 expected=4"), false).is_ok());
    }

    #[test]
    fn unfinished_workload_fails() {
        assert!(check_linux_rv(&output(DUMP2, "runs=3 expected=4"), true).is_err());
        assert!(check_linux_rv(&output(DUMP2, ""), true).is_err());
    }

    #[test]
    fn cpu_count_must_match() {
        let out = output(DUMP2, "runs=4 expected=4").replace("cpus=2", "cpus=4");
        assert!(check_linux_rv(&out, true).is_err());
    }
}
