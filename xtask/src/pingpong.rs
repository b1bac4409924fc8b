//! The ping-pong lost-wake-up detector (`guest/pingpong`, a static riscv64 Linux
//! program): building it, the initramfs that runs it, and reading its result.
//!
//! The program pins `cpus` processes to CPUs `0..cpus` and sends one byte round the
//! ring of pipes between them `rounds` times, timing each lap with `rdtime`; every
//! hop wakes a process whose CPU is idle (an IPI to a CPU in WFI). A lap over
//! [`SLOW_US`] is a *stall*: a wake-up that was lost until something else (e.g. the
//! CPU's next timer) ran the CPU. `cargo xtask soak` runs it on every configuration;
//! the QEMU suite of `cargo xtask test` runs a short version.
use anyhow::{bail, ensure, Context, Result};

/// A lap slower than this is a stall (the program's own threshold, `SLOW_US` in
/// `guest/pingpong/src/main.rs`).
pub const SLOW_US: u64 = 100_000;

/// Build `guest/pingpong` (release, `riscv64gc-unknown-none-elf`, into
/// `target/guest`) and return the ELF.
pub fn build() -> Result<Vec<u8>> {
    let elf = crate::qemu::build_guest_program("guest/pingpong/Cargo.toml", "virq-pingpong")?;
    std::fs::read(&elf).with_context(|| format!("reading {}", elf.display()))
}

/// `/init` that runs `virq-pingpong rounds cpus`, prints `/proc/interrupts` and
/// powers off (SBI SRST: QEMU exits 0).
pub fn init_script(rounds: u64, cpus: u32) -> String {
    format!(
        r#"#!/bin/sh
# virq ping-pong: {rounds} laps of a byte round {cpus} CPU-pinned processes, then power off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s 2>/dev/null
echo "VIRQ-PINGPONG-START cpus=$(grep -c ^processor /proc/cpuinfo) kernel=$(uname -r)"
/bin/virq-pingpong {rounds} {cpus}
echo "VIRQ-PINGPONG-EXIT status=$?"
cat /proc/interrupts
poweroff -f
"#
    )
}

/// Debian's kernel and an initramfs (`target/images/initramfs-pingpong-R-C.cpio.gz`)
/// holding the program as `/bin/virq-pingpong` and [`init_script`] as `/init`.
pub fn boot_images(rounds: u64, cpus: u32) -> Result<crate::images::BootImages> {
    let elf = build()?;
    crate::images::debian_boot_with(
        hyp_config::Arch::Riscv64,
        None,
        &format!("pingpong-{rounds}-{cpus}"),
        &init_script(rounds, cpus),
        &[("bin/virq-pingpong", &elf)],
    )
}

/// The program's result line `VIRQ-PINGPONG cpus=… rounds=… slow=… …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub cpus: u64,
    pub rounds: u64,
    /// Laps over [`SLOW_US`].
    pub slow: u64,
    pub worst_us: u64,
    pub mean_us: u64,
    pub total_us: u64,
    pub over_10ms: u64,
}

/// Find and parse the result line in a console log. The program's error line
/// (`VIRQ-PINGPONG-ERROR`) or a missing line is an error. Kernel messages may share
/// the console, so the line is looked for anywhere in a line.
pub fn parse(out: &str) -> Result<Summary> {
    if let Some(e) = out
        .lines()
        .find_map(|l| l.find("VIRQ-PINGPONG-ERROR").map(|i| &l[i..]))
    {
        bail!("the guest program failed: {e}");
    }
    let line = out
        .lines()
        .rev()
        .find_map(|l| l.find("VIRQ-PINGPONG cpus=").map(|i| &l[i..]))
        .context("no VIRQ-PINGPONG result line (the guest did not finish)")?;
    let field = |k: &str| -> Result<u64> {
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(k)?.strip_prefix('='))
            .with_context(|| format!("no {k}= in {line:?}"))?
            .parse()
            .with_context(|| format!("{k}= in {line:?}"))
    };
    Ok(Summary {
        cpus: field("cpus")?,
        rounds: field("rounds")?,
        slow: field("slow")?,
        worst_us: field("worst_us")?,
        mean_us: field("mean_us")?,
        total_us: field("total_us")?,
        over_10ms: field("over_10ms")?,
    })
}

/// Parse the result and require `rounds` laps round `cpus` CPUs with no stall.
pub fn check(out: &str, rounds: u64, cpus: u32) -> Result<Summary> {
    let r = parse(out)?;
    ensure!(
        r.rounds == rounds && r.cpus == u64::from(cpus),
        "ran {} laps on {} CPUs, expected {rounds} on {cpus}",
        r.rounds,
        r.cpus
    );
    ensure!(
        r.slow == 0 && r.worst_us <= SLOW_US,
        "{} of {} laps over {} ms (worst {:.3} s): lost wake-ups; first: {:?}",
        r.slow,
        r.rounds,
        SLOW_US / 1000,
        r.worst_us as f64 / 1e6,
        slow_laps(out).into_iter().take(5).collect::<Vec<_>>()
    );
    Ok(r)
}

/// The `VIRQ-PINGPONG-SLOW round=I us=U` lines (the first stalls), as `(I, U)`.
pub fn slow_laps(out: &str) -> Vec<(u64, u64)> {
    out.lines()
        .filter_map(|l| {
            let l = &l[l.find("VIRQ-PINGPONG-SLOW ")?..];
            let get = |k: &str| {
                l.split_whitespace()
                    .find_map(|t| t.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
            };
            Some((get("round")?, get("us")?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "VIRQ-PINGPONG-START cpus=2 kernel=6.12\n\
        [   12.3] some kernel line\n\
        VIRQ-PINGPONG cpus=2 rounds=20000 slow=0 worst_us=9123 mean_us=480 total_us=9600000 \
        over_1ms=30 over_10ms=0 timebase_hz=10000000\n\
        VIRQ-PINGPONG-EXIT status=0\n";

    #[test]
    fn result_line_is_parsed_and_passes() {
        let r = check(OK, 20_000, 2).unwrap();
        assert_eq!(
            r,
            Summary {
                cpus: 2,
                rounds: 20_000,
                slow: 0,
                worst_us: 9123,
                mean_us: 480,
                total_us: 9_600_000,
                over_10ms: 0,
            }
        );
    }

    #[test]
    fn stalls_fail_with_the_slow_laps() {
        let out = "VIRQ-PINGPONG-SLOW round=17 us=950123\n\
            VIRQ-PINGPONG-SLOW round=4711 us=948000\n\
            VIRQ-PINGPONG cpus=2 rounds=20000 slow=2 worst_us=950123 mean_us=700 \
            total_us=14000000 over_1ms=40 over_10ms=2 timebase_hz=10000000\n";
        assert_eq!(slow_laps(out), vec![(17, 950_123), (4711, 948_000)]);
        let e = format!("{:#}", check(out, 20_000, 2).unwrap_err());
        assert!(
            e.contains("2 of 20000 laps over 100 ms") && e.contains("(17, 950123)"),
            "{e}"
        );
        // A worst lap over the bound fails even if the count said otherwise.
        let odd = OK.replace("worst_us=9123", "worst_us=100001");
        assert!(check(&odd, 20_000, 2).is_err());
    }

    #[test]
    fn missing_short_or_failed_runs_fail() {
        assert!(check("VIRQ-PINGPONG-START cpus=2\n", 20_000, 2).is_err());
        assert!(check(OK, 1_000_000, 2).is_err());
        assert!(check(OK, 20_000, 4).is_err());
        let err = format!("VIRQ-PINGPONG-ERROR sched_setaffinity failed: errno 22\n{OK}");
        let e = format!("{:#}", check(&err, 20_000, 2).unwrap_err());
        assert!(e.contains("errno 22"), "{e}");
    }

    #[test]
    fn init_runs_the_program_and_powers_off() {
        let s = init_script(1_000_000, 4);
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("/bin/virq-pingpong 1000000 4\n"));
        assert!(s.contains("poweroff -f"));
    }
}
