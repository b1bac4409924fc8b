//! hyp on aarch64 (issue 13): build hyp for `aarch64-unknown-none` and boot it at EL2
//! in `qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -cpu max`, and the
//! aarch64 cases of the QEMU suite ([`CASES`]).
//!
//! - `aarch64-hello` ([`smoke`]; `cargo xtask run --arch aarch64 --hello`): with no
//!   `config=` on its command line hyp runs its tiny built-in EL1 guest (an `hvc`
//!   PSCI_VERSION, an `hvc` HELLO, a load from an unmapped IPA, PSCI SYSTEM_OFF) and
//!   powers off through PSCI; every line [`EXPECTED`] lists and QEMU's exit status are
//!   checked. It takes about a second.
//! - `aarch64-linux` ([`linux_case`]): `configs/linux-arm64.toml` (Debian arm64 Linux,
//!   2 vCPUs on a vGICv3, 2 CPUs, the PL011 passed through) with the test `/init`,
//!   placed and booted like any configuration (`crate::config`, `-device loader`,
//!   `config=ADDR`); [`check_linux`] says what it must show.
//! - `aarch64-linux-smp4` and `aarch64-linux-overcommit`: the same with 4 vCPUs on 4
//!   CPUs, and with 4 vCPUs on 2 CPUs (hyp's scheduler switches vCPUs on each CPU).
//!
//! `cargo xtask run --arch aarch64` boots `configs/linux-arm64.toml` with a shell
//! (`crate::hyp::run`).
use anyhow::{bail, ensure, Context, Result};
use hyp_config::Arch;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::guestcheck::ARM64_ROWS;
use crate::qemu::{
    hyp_target_dir, run_command_watched, save_log, Machine, Outcome, Payload, LINUX_TIMEOUT_S,
};
use crate::setup::ARM_TARGET;
use crate::util::run_cmd;

/// Time limit of one run of the built-in guest (it needs about a second).
const TIMEOUT_S: u64 = 30;
/// The aarch64 cases of the QEMU suite, in the order they run (before the riscv64
/// ones; `VIRQ_QEMU_CASE=aarch64-linux` runs one alone).
pub const CASES: &[&str] = &[
    "aarch64-hello",
    crate::armtest::CASE,
    crate::armtest::STORM_CASE,
    crate::armtest::GICV4_CASE,
    crate::armtest::GICV4_MIGRATE_CASE,
    crate::armiommu::CASE,
    LINUX_CASE,
    LINUX_SMP4_CASE,
    LINUX_OVERCOMMIT_CASE,
    LINUX_GICV4_CASE,
    LINUX_MIGRATE_CASE,
    TWO_LINUX_CASE,
    crate::armnet::CASES[0].0,
    crate::armnet::CASES[1].0,
];
/// Two Debian arm64 guests at once (`configs/two-linux-arm64.toml`).
pub const TWO_LINUX_CASE: &str = "aarch64-two-linux";
/// The second guest's lines (hyp's emulated PL011) carry this prefix.
const LINUX2_PREFIX: &str = "[linux2] ";
/// The Debian arm64 Linux case.
pub const LINUX_CASE: &str = "aarch64-linux";
/// The same with 4 vCPUs on 4 CPUs.
pub const LINUX_SMP4_CASE: &str = "aarch64-linux-smp4";
/// The same with 4 vCPUs on 2 CPUs (hyp's scheduler switches vCPUs on each CPU).
pub const LINUX_OVERCOMMIT_CASE: &str = "aarch64-linux-overcommit";
/// The same on `topology = "vgicv4"` (`-M virt,gic-version=4`): Linux finds hyp's
/// vITS and sets it up ([`check_linux_its`]).
pub const LINUX_GICV4_CASE: &str = "aarch64-linux-gicv4";
/// Linux on `topology = "vgicv4"` with `[hyp] migrate_ms = 20`, 4 vCPUs on 2 CPUs: the
/// vCPUs (EL1 state, timer, GIC CPU interface, vPE) move to the next CPU every 20 ms,
/// into CPUs running other vCPUs, while Linux boots and runs its test `/init`; `ACCT
/// migrations=` and `ACCT arrivals_while_running=` must be above 0.
pub const LINUX_MIGRATE_CASE: &str = "aarch64-linux-migrate";
/// The Linux cases: name and the `--set`s they apply to [`LINUX_CONFIG`].
const LINUX_CASES: &[(&str, &[&str])] = &[
    (LINUX_CASE, &[]),
    (LINUX_SMP4_CASE, &["machine.harts=4", "guest.0.vcpus=4"]),
    (
        LINUX_OVERCOMMIT_CASE,
        &["machine.harts=2", "guest.0.vcpus=4"],
    ),
    (LINUX_GICV4_CASE, &["guest.0.topology=vgicv4"]),
    (
        LINUX_MIGRATE_CASE,
        &[
            "guest.0.topology=vgicv4",
            "hyp.migrate_ms=20",
            "machine.harts=2",
            "guest.0.vcpus=4",
        ],
    ),
];
/// The configuration it boots (with the test `/init`).
const LINUX_CONFIG: &str = "linux-arm64";
/// A Linux run silent this long has hung: QEMU is killed (it prints all along its
/// boot and its `/init`).
const LINUX_SILENCE_S: u64 = 120;

/// The lines the smoke test requires, in this order (each a whole console line, or
/// its start when it ends in `…`). They show: hyp at EL2; the PSCI_VERSION `hvc`
/// answered (1.1) and the answer back in the guest (its HELLO echoes x0); the
/// stage-2 data abort decoded from `ESR_EL2`/`HPFAR_EL2`/`FAR_EL2` (IPA, size,
/// register) and emulated (the next HELLO shows the zero that reached w5, which held
/// 0xffff before); the guest's SYSTEM_OFF; hyp's power-off with status 0.
pub const EXPECTED: &[&str] = &[
    "hyp: virq hypervisor on aarch64, EL2, boot CPU 0, …",
    "hyp: stage 2: IPA 0x40000000+0x200000 -> host 0x48000000 (Normal WB, RWX), 1024 root entries, VTCR_EL2 0x80023558, …",
    "hyp: guest hvc PSCI_VERSION -> 0x10001 (1.1)",
    "hyp: guest hvc HELLO x1=0x10001",
    "hyp: guest data abort: read of 4 bytes at IPA 0x50000010 (FAR_EL2 0x50000010, DFSC 0x6: translation fault level 2), into w5; emulated as read as zero",
    "hyp: guest hvc HELLO x1=0x0",
    "hyp: guest hvc PSCI SYSTEM_OFF",
    "hyp: guest exits: 5",
    "hyp: power off (status 0)",
];

/// Build hyp for [`ARM_TARGET`] (release, into `target/hyp`); the ELF's path.
pub fn build() -> Result<PathBuf> {
    let mut cmd = crate::util::cargo();
    cmd.args(["build", "--manifest-path", "hyp/Cargo.toml", "-p", "hyp"])
        .args(["--target", ARM_TARGET, "--release", "--target-dir"])
        .arg(hyp_target_dir())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    run_cmd(&mut cmd)?;
    Ok(hyp_target_dir().join(ARM_TARGET).join("release/hyp"))
}

/// The machine of the built-in guest: one CPU, 256 MiB (hyp places the guest's RAM at
/// 0x4800_0000), nothing loaded but hyp, no `config=`.
pub fn hello_machine(timeout: Duration) -> Machine {
    Machine {
        arch: Arch::Aarch64,
        smp: 1,
        aia: None,
        gicv4: false,
        bootargs: Vec::new(),
        timeout,
        icount: false,
        extra: Vec::new(),
        payload: Payload::Hyp {
            memory_mb: 256,
            loads: Vec::new(),
        },
    }
}

/// The QEMU command line of the built-in guest (`-no-reboot` so that PSCI
/// SYSTEM_RESET, hyp's failure power-off, ends QEMU too).
pub fn command(hyp: &Path) -> Command {
    hello_machine(Duration::from_secs(TIMEOUT_S)).command_for(hyp)
}

/// `cargo xtask run --arch aarch64 --hello`: build, boot, echo the console, check the
/// result (`dry_run`: print the command line only).
pub fn run_hello(timeout_s: Option<u64>, dry_run: bool) -> Result<()> {
    crate::setup::ensure_arm()?;
    let hyp = build()?;
    let timeout = Duration::from_secs(timeout_s.unwrap_or(TIMEOUT_S));
    let cmd = hello_machine(timeout).command_for(&hyp);
    eprintln!("$ {cmd:?}");
    if dry_run {
        return Ok(());
    }
    let o = run_command_watched(cmd, timeout, true, None)?;
    check(&o)
}

/// Run the aarch64 case `name` of the QEMU suite (one of [`CASES`]): its summary, or
/// why it failed (its log is `target/hyp/logs/<name>.log`).
pub fn run_case(name: &str) -> Result<String> {
    match name {
        n if LINUX_CASES.iter().any(|(c, _)| *c == n) => linux_case(n),
        TWO_LINUX_CASE => two_linux_case(),
        "aarch64-hello" => smoke(),
        crate::armtest::CASE => crate::armtest::case(),
        crate::armtest::STORM_CASE => crate::armtest::storm_case(),
        crate::armtest::GICV4_CASE => crate::armtest::gicv4_case(),
        crate::armtest::GICV4_MIGRATE_CASE => crate::armtest::gicv4_migrate_case(),
        crate::armiommu::CASE => crate::armiommu::case(),
        n if crate::armnet::CASES.iter().any(|(c, _)| *c == n) => crate::armnet::case(n),
        _ => bail!("no aarch64 case {name:?} (there are {CASES:?})"),
    }
}

/// The aarch64 smoke test of the QEMU suite (`aarch64-hello`): build, boot, check; the
/// log goes to `target/hyp/logs/aarch64-hello.log`.
pub fn smoke() -> Result<String> {
    crate::setup::ensure_arm()?;
    let hyp = build()?;
    let o = run_command_watched(
        command(&hyp),
        Duration::from_secs(TIMEOUT_S),
        false,
        Some(Duration::from_secs(10)),
    )?;
    let log = save_log("aarch64-hello", &o.output)?;
    if let Err(e) = check(&o) {
        bail!("{e:#} (log {})", log.display());
    }
    Ok(format!(
        "{} lines checked, {:.1} s",
        EXPECTED.len(),
        o.elapsed.as_secs_f64()
    ))
}

/// The Debian arm64 Linux case of the QEMU suite (`aarch64-linux`): build hyp, boot
/// `configs/linux-arm64.toml` with the test `/init` (600 s limit, killed after 120 s
/// without console output), check it with [`check_linux`]; the log goes to
/// `target/hyp/logs/aarch64-linux.log`. Returns the summary line.
pub fn linux_case(name: &str) -> Result<String> {
    let sets = LINUX_CASES
        .iter()
        .find(|(c, _)| *c == name)
        .map_or(&[][..], |(_, s)| *s);
    crate::setup::ensure_arm()?;
    let hyp = build()?;
    let images = crate::config::NamedImages {
        testguest: None,
        kernel_version: None,
    };
    let cfg = crate::config::suite(name, LINUX_CONFIG, sets, &images)?;
    let vcpus = cfg.config.guests.first().context("no guest")?.vcpus;
    let mut m = cfg.machine(Duration::from_secs(LINUX_TIMEOUT_S), &[])?;
    let its = name == LINUX_GICV4_CASE || name == LINUX_MIGRATE_CASE;
    if its {
        // Every ITS command QEMU skips is a guest error: the case fails on any.
        m.extra.extend(["-d".into(), "guest_errors".into()]);
    }
    let o = run_command_watched(
        m.command_for(&hyp),
        m.timeout,
        false,
        Some(Duration::from_secs(LINUX_SILENCE_S)),
    )?;
    let log = save_log(name, &o.output)?;
    let secs = o.elapsed.as_secs_f64();
    let checked = check_linux(&o, vcpus).and_then(|s| {
        let s = if its {
            format!("{s}; {}", check_linux_its(&o.output)?)
        } else {
            s
        };
        if cfg.config.hyp.migrate_ms > 0 {
            let n = acct_number(&o.output, "migrations")?;
            ensure!(n > 0, "migrate_ms: no vCPU migrated");
            // More vCPUs than CPUs: vCPUs migrate into CPUs that run another one, which
            // must take them in at once (hyp's `ARRIVALS`), not when the running one
            // blocks.
            if vcpus > cfg.machine.harts {
                let a = acct_number(&o.output, "arrivals_while_running")?;
                ensure!(
                    a > 0,
                    "no vCPU that migrated into a busy CPU was taken in while another ran"
                );
                return Ok(format!(
                    "{s}; {n} vCPU migrations, {a} taken in while another vCPU ran"
                ));
            }
            return Ok(format!("{s}; {n} vCPU migrations"));
        }
        Ok(s)
    });
    match checked {
        Ok(s) => Ok(format!("{s}, {secs:.1} s")),
        Err(e) => bail!("{e:#} ({secs:.1} s, log {})", log.display()),
    }
}

/// hyp's `hyp: ACCT <key>=<n>` line in `out`: `n`.
pub fn acct_number(out: &str, key: &str) -> Result<u64> {
    let prefix = format!("hyp: ACCT {key}=");
    out.lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix.as_str()))
        .with_context(|| format!("no ACCT {key} line"))?
        .parse()
        .with_context(|| format!("malformed ACCT {key} line"))
}

/// `aarch64-two-linux`: both guests run the test `/init` at once, 2 vCPUs each on 2
/// CPUs; the second's output is kept by hyp until the end (`hyp.vuart=deferred`).
/// Each guest must pass [`check_linux`]: the first on its own lines, the second on
/// the lines hyp printed for it (prefix [`LINUX2_PREFIX`]); QEMU ends with status 0
/// after both powered off.
pub fn two_linux_case() -> Result<String> {
    crate::setup::ensure_arm()?;
    let hyp = build()?;
    let images = crate::config::NamedImages {
        testguest: None,
        kernel_version: None,
    };
    let cfg = crate::config::suite(
        TWO_LINUX_CASE,
        "two-linux-arm64",
        &["hyp.vuart=deferred"],
        &images,
    )?;
    let m = cfg.machine(Duration::from_secs(LINUX_TIMEOUT_S), &[])?;
    let o = run_command_watched(
        m.command_for(&hyp),
        m.timeout,
        false,
        Some(Duration::from_secs(LINUX_SILENCE_S)),
    )?;
    let log = save_log(TWO_LINUX_CASE, &o.output)?;
    let secs = o.elapsed.as_secs_f64();
    match check_two_linux(&o) {
        Ok(s) => Ok(format!("{s}, {secs:.1} s")),
        Err(e) => bail!("{e:#} ({secs:.1} s, log {})", log.display()),
    }
}

/// [`check_linux`] for each guest of `aarch64-two-linux` on its own lines.
pub fn check_two_linux(o: &Outcome) -> Result<String> {
    let first: String = o
        .output
        .lines()
        .filter(|l| !l.starts_with(LINUX2_PREFIX))
        .flat_map(|l| [l, "\n"])
        .collect();
    let second: String = o
        .output
        .lines()
        .filter_map(|l| {
            if l.starts_with(BANNER) {
                Some(l)
            } else {
                l.strip_prefix(LINUX2_PREFIX)
            }
        })
        .flat_map(|l| [l, "\n"])
        .collect();
    let with = |output: String| Outcome {
        output,
        status: o.status,
        timed_out: o.timed_out,
        elapsed: o.elapsed,
    };
    let a = check_linux(&with(first), 2).context("guest linux")?;
    let b = check_linux(&with(second), 2).context("guest linux2")?;
    Ok(format!("linux: {a}; linux2: {b}"))
}

/// hyp's first line on aarch64.
const BANNER: &str = "hyp: virq hypervisor on aarch64";
/// The PL011's interrupt: INTID 33 (SPI 1), as `/proc/interrupts` describes its row.
const PL011_ROW: &str = "GICv3 33 Level uart-pl011";

/// What the Debian arm64 Linux run must show, with `vcpus` vCPUs:
/// - hyp's banner (it ran under hyp); no panic of Linux or hyp;
/// - the test `/init`'s markers: `VIRQ-INIT-START cpus=<vcpus>`, every CPU online
///   (`VIRQ-CPUS-ONLINE 0-<vcpus-1>`), two `/proc/interrupts` dumps with a column per
///   vCPU, the workload finished, `VIRQ-INIT-DONE`;
/// - in the dumps (`crate::guestcheck`, arm64 rows): the generic timer (`arch_timer`)
///   counting on every CPU, IPIs moving on every CPU during the workload, the PL011's
///   row with INTID 33, `Err: 0`;
/// - the PL011's interrupt moved to each CPU in turn (`VIRQ-UART-ON-CPU c: c`, its
///   effective affinity: Linux wrote the vGICv3's `GICD_IROUTER` for it). Its count is
///   not required: QEMU's PL011 never fills its TX FIFO, so Linux writes without TX
///   interrupts and, with no console input, the count stays 0 even on bare QEMU;
/// - QEMU ended by itself with status 0 (the guest's `poweroff -f`: PSCI SYSTEM_OFF).
pub fn check_linux(o: &Outcome, vcpus: u32) -> Result<String> {
    ensure!(
        !o.timed_out,
        "timed out after {:.0} s",
        o.elapsed.as_secs_f64()
    );
    let out = &o.output;
    ensure!(
        out.lines().any(|l| l.starts_with(BANNER)),
        "no {BANNER:?} line: not run under hyp"
    );
    ensure!(!out.contains("Kernel panic"), "Linux panicked");
    ensure!(
        !out.contains("FATAL") && !out.contains("PANIC"),
        "hyp reported a fatal error"
    );
    let online = out
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("VIRQ-CPUS-ONLINE "))
        .context("Linux did not print VIRQ-CPUS-ONLINE")?;
    let want = match vcpus {
        1 => "0".to_string(),
        n => format!("0-{}", n - 1),
    };
    ensure!(
        online.trim() == want,
        "CPUs online {online:?}, expected {want:?} ({vcpus} vCPUs)"
    );
    let f = crate::guestcheck::check_linux(out, false, ARM64_ROWS)?;
    ensure!(
        f.cpus == vcpus as usize,
        "Linux saw {} CPUs, the guest has {vcpus} vCPUs",
        f.cpus
    );
    let dump = crate::guestcheck::last_dump(out).context("no /proc/interrupts dump")?;
    ensure!(
        dump.rows.iter().any(|(_, _, d)| d == PL011_ROW),
        "no {PL011_ROW:?} row in /proc/interrupts"
    );
    for c in 0..vcpus {
        let moved = format!("VIRQ-UART-ON-CPU {c}: {c}");
        ensure!(
            out.lines().any(|l| l.trim_end() == moved),
            "the PL011's interrupt did not move to CPU {c} (no {moved:?} line)"
        );
    }
    for l in out.lines().filter(|l| l.starts_with("Err:")) {
        ensure!(
            l["Err:".len()..].trim() == "0",
            "Linux counted interrupt errors: {l:?}"
        );
    }
    ensure!(
        out.lines().any(|l| l.trim_end() == "VIRQ-INIT-DONE"),
        "Linux did not print VIRQ-INIT-DONE"
    );
    ensure!(
        o.status == Some(0),
        "QEMU exit status {:?}, not 0",
        o.status
    );
    Ok(format!(
        "{} CPUs online ({online}), IPIs per CPU during the workload {:?}, PL011 (INTID 33) moved to every CPU, its interrupts per CPU {:?}",
        f.cpus, f.ipis, f.uart
    ))
}

/// What Linux on a vgicv4 guest must show besides [`check_linux`]: its ITS driver
/// probed hyp's vITS (`ITS@0x0000000008080000` lines, no "ITS … failed"), LPIs
/// allocated, no QEMU GIC/ITS guest error (`-d guest_errors`), no GICv4 error and no
/// guest command error in hyp's ACCT lines.
pub fn check_linux_its(out: &str) -> Result<String> {
    if let Some(l) = out.lines().find(|l| crate::armtest::qemu_gic_error(l)) {
        bail!("QEMU reports a GIC/ITS guest error: {l:?}");
    }
    let its: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("ITS@0x0000000008080000"))
        .collect();
    ensure!(!its.is_empty(), "Linux did not probe the ITS at 0x08080000");
    ensure!(
        !out.lines()
            .any(|l| l.contains("ITS") && l.contains("failed")),
        "Linux: an ITS step failed"
    );
    ensure!(
        out.lines()
            .any(|l| l.trim_end().ends_with("GICv4 errors: 0")),
        "hyp reports GICv4 errors (or none counted)"
    );
    let acct = out
        .lines()
        .find_map(|l| l.split_once(" vits: ").map(|(_, r)| r))
        .context("no vits ACCT line")?;
    // Every counter inside `CmdErrors { .. }` and `ErrorCounters { .. }` is 0, and no
    // configuration byte was unreadable.
    let counted: u64 = acct
        .split('{')
        .skip(1)
        .filter_map(|p| p.split('}').next())
        .flat_map(|p| p.split(','))
        .filter_map(|f| f.rsplit(": ").next()?.trim().parse::<u64>().ok())
        .sum();
    ensure!(
        counted == 0 && acct.contains("config_unread 0"),
        "hyp's vITS counted guest errors: {acct}"
    );
    Ok(format!(
        "ITS: {} probe lines ({}); hyp vITS: {}",
        its.len(),
        its.iter()
            .map(|l| l
                .split("ITS@0x0000000008080000: ")
                .nth(1)
                .unwrap_or(l)
                .trim())
            .collect::<Vec<_>>()
            .join(" | "),
        acct.split(';').next().unwrap_or(acct)
    ))
}

/// Every line of [`EXPECTED`] in order, QEMU ended by itself with status 0.
pub fn check(o: &Outcome) -> Result<()> {
    ensure!(!o.timed_out, "QEMU timed out");
    ensure!(
        o.status == Some(0),
        "QEMU exit status {:?}, not 0",
        o.status
    );
    check_lines(&o.output)
}

fn check_lines(out: &str) -> Result<()> {
    let mut lines = out.lines().map(str::trim_end);
    for want in EXPECTED {
        let matches = |l: &str| match want.strip_suffix('…') {
            Some(prefix) => l.starts_with(prefix),
            None => l == *want,
        };
        ensure!(lines.any(matches), "missing (in this order): {want:?}");
    }
    ensure!(
        !out.contains("FATAL") && !out.contains("PANIC"),
        "hyp reported a fatal error"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
hyp: virq hypervisor on aarch64, EL2, boot CPU 0, heap (40408000, 42408000) image (40200000, 42408000), CNTFRQ 1000000000 Hz
hyp: stage 2: IPA 0x40000000+0x200000 -> host 0x48000000 (Normal WB, RWX), 1024 root entries, VTCR_EL2 0x80023558, VTTBR_EL2 0x1000040408000
hyp: guest: 72 bytes of EL1 code at IPA 0x40000000
hyp: guest hvc PSCI_VERSION -> 0x10001 (1.1)
hyp: guest hvc HELLO x1=0x10001
hyp: guest data abort: read of 4 bytes at IPA 0x50000010 (FAR_EL2 0x50000010, DFSC 0x6: translation fault level 2), into w5; emulated as read as zero
hyp: guest hvc HELLO x1=0x0
hyp: guest hvc PSCI SYSTEM_OFF
hyp: guest exits: 5
hyp: power off (status 0)
";

    fn outcome(output: &str, status: Option<i32>) -> Outcome {
        Outcome {
            output: output.into(),
            status,
            timed_out: status.is_none(),
            elapsed: Duration::from_secs(1),
        }
    }

    #[test]
    fn linux_its_checks() {
        let good = "[    0.000000] ITS@0x0000000008080000: allocated 65536 Devices @82a00000 (flat, esz 8, psz 64K, shr 1)\n\
                    hyp: ACCT linux vits: actions 6 host_cmds 6 no_host_device 0 config_copies 0 config_unread 0 msis 0 msis_dropped 0; command errors CmdErrors { unknown: 0, read_failed: 0 }; register errors ErrorCounters { bad_width: 0, ignored_value: 0 }\n\
                    hyp: linux: GICv4 errors: 0\n";
        let s = check_linux_its(good).unwrap();
        assert!(s.contains("1 probe lines"), "{s}");
        for bad in [
            good.replace("ITS@0x0000000008080000", "ITS@0x0000000008090000"),
            good.replace("unknown: 0", "unknown: 2"),
            good.replace("ignored_value: 0", "ignored_value: 1"),
            good.replace("config_unread 0", "config_unread 3"),
            good.replace("GICv4 errors: 0", "GICv4 errors: 1"),
            good.replace(" vits: ", " its: "),
            format!("{good}process_mapti: invalid collection\n"),
            format!("{good}[    1.0] ITS: failed to allocate device\n"),
        ] {
            assert!(check_linux_its(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn recorded_run_passes() {
        check(&outcome(GOOD, Some(0))).unwrap();
    }

    #[test]
    fn wrong_ipa_missing_line_or_bad_status_fail() {
        let wrong_ipa = GOOD.replace("IPA 0x50000010 (", "IPA 0x50000000 (");
        assert!(check(&outcome(&wrong_ipa, Some(0))).is_err());
        let no_off = GOOD.replace("hyp: power off (status 0)\n", "");
        assert!(check(&outcome(&no_off, Some(0))).is_err());
        let not_echoed = GOOD.replace("HELLO x1=0x10001", "HELLO x1=0xffff");
        assert!(check(&outcome(&not_echoed, Some(0))).is_err());
        assert!(check(&outcome(GOOD, Some(1))).is_err());
        assert!(check(&outcome(GOOD, None)).is_err());
        let panic = format!("{GOOD}hyp: PANIC: x\n");
        assert!(check(&outcome(&panic, Some(0))).is_err());
    }

    #[test]
    fn lines_out_of_order_fail() {
        let swapped = GOOD.replace(
            "hyp: guest hvc PSCI SYSTEM_OFF\nhyp: guest exits: 5\n",
            "hyp: guest exits: 5\nhyp: guest hvc PSCI SYSTEM_OFF\n",
        );
        assert!(check(&outcome(&swapped, Some(0))).is_err());
    }

    /// The test `/init` of Debian 6.12.117 arm64, recorded on bare QEMU 10.0.2 (`-M
    /// virt,gic-version=3 -cpu max -smp 2 -m 160M`: EL1, as under hyp), with hyp's
    /// banner line added.
    const LINUX_GOOD: &str = "\
hyp: virq hypervisor on aarch64, EL2, boot CPU 0, (the rest of hyp's lines)
[    2.831904] Run /init as init process
VIRQ-INIT-START cpus=2 kernel=6.12.117+deb13-arm64
VIRQ-CPUS-ONLINE 0-1
VIRQ-CMDLINE console=ttyAMA0 earlycon=pl011,0x9000000
VIRQ-SLEEP-STATES freeze mem disk
           CPU0       CPU1       
 11:        557        576     GICv3  27 Level     arch_timer
 13:          0          0     GICv3  33 Level     uart-pl011
 16:          0          0     GICv3  34 Level     rtc-pl031
 17:          0          0     GICv3  23 Level     arm-pmu
IPI0:        73         79       Rescheduling interrupts
IPI1:       162        128       Function call interrupts
IPI2:         0          0       CPU stop interrupts
IPI3:         0          0       CPU stop NMIs
IPI4:         0          0       Timer broadcast interrupts
IPI5:         0          0       IRQ work interrupts
IPI6:         0          0       CPU backtrace interrupts
IPI7:         0          0       KGDB roundup interrupts
Err:          0
[    4.621513] init (1): drop_caches: 3
[    4.637522] init (1): drop_caches: 3
[    4.643670] init (1): drop_caches: 3
VIRQ-WORKLOAD-DONE runs=4 expected=4
VIRQ-UART-ON-CPU 0: the console interrupt now targets CPU 0
VIRQ-UART-ON-CPU 0: 0
VIRQ-UART-ON-CPU 1: the console interrupt now targets CPU 1
VIRQ-UART-ON-CPU 1: 1
           CPU0       CPU1       
 11:        823        866     GICv3  27 Level     arch_timer
 13:          0          0     GICv3  33 Level     uart-pl011
 16:          0          0     GICv3  34 Level     rtc-pl031
 17:          0          0     GICv3  23 Level     arm-pmu
IPI0:        99        109       Rescheduling interrupts
IPI1:       176        144       Function call interrupts
IPI2:         0          0       CPU stop interrupts
IPI3:         0          0       CPU stop NMIs
IPI4:         0          0       Timer broadcast interrupts
IPI5:         0          0       IRQ work interrupts
IPI6:         0          0       CPU backtrace interrupts
IPI7:         0          0       KGDB roundup interrupts
Err:          0
VIRQ-INIT-DONE
[    5.784860] reboot: Power down
";

    #[test]
    fn recorded_linux_run_passes() {
        let s = check_linux(&outcome(LINUX_GOOD, Some(0)), 2).unwrap();
        assert!(
            s.starts_with("2 CPUs online (0-1), IPIs per CPU during the workload [40, 46]"),
            "{s}"
        );
        assert!(s.ends_with("its interrupts per CPU [0, 0]"), "{s}");
    }

    /// Two guests: the first's lines as recorded, the second's the same lines
    /// prefixed as hyp prints them (its banner line excepted).
    fn two_guests(second_without: &str) -> String {
        let mut out = String::from(LINUX_GOOD);
        for l in LINUX_GOOD.lines().filter(|l| !l.starts_with(BANNER)) {
            if !second_without.is_empty() && l.contains(second_without) {
                continue;
            }
            out.push_str(LINUX2_PREFIX);
            out.push_str(l);
            out.push('\n');
        }
        out
    }

    #[test]
    fn two_guests_each_checked_on_its_own_lines() {
        let s = check_two_linux(&outcome(&two_guests(""), Some(0))).unwrap();
        assert!(
            s.contains("linux: 2 CPUs") && s.contains("linux2: 2 CPUs"),
            "{s}"
        );
        let e = check_two_linux(&outcome(&two_guests("VIRQ-INIT-DONE"), Some(0))).unwrap_err();
        assert!(format!("{e:#}").contains("guest linux2"), "{e:#}");
        let first_only = two_guests("").replace("\nVIRQ-CPUS-ONLINE 0-1\n", "\n");
        let e = check_two_linux(&outcome(&first_only, Some(0))).unwrap_err();
        assert!(format!("{e:#}").contains("guest linux:"), "{e:#}");
        assert!(check_two_linux(&outcome(&two_guests(""), Some(1))).is_err());
    }

    #[test]
    fn linux_run_missing_a_marker_or_a_cpu_fails() {
        let fails = |out: &str, why: &str| {
            let e = check_linux(&outcome(out, Some(0)), 2).unwrap_err();
            assert!(format!("{e:#}").contains(why), "{why}: {e:#}");
        };
        fails(
            &LINUX_GOOD.replace("VIRQ-INIT-DONE\n", ""),
            "VIRQ-INIT-DONE",
        );
        fails(
            &LINUX_GOOD.replace("VIRQ-CPUS-ONLINE 0-1", "VIRQ-CPUS-ONLINE 0"),
            "CPUs online \"0\"",
        );
        fails(
            &LINUX_GOOD.replace("VIRQ-CPUS-ONLINE 0-1\n", ""),
            "VIRQ-CPUS-ONLINE",
        );
        fails(
            &LINUX_GOOD.replace("hyp: virq hypervisor on aarch64", "bare"),
            "not run under hyp",
        );
        // CPU 1's timer never ticked.
        fails(&LINUX_GOOD.replace("866     GICv3", "0     GICv3"), "timer");
        // No IPI reached CPU 1 during the workload.
        fails(
            &LINUX_GOOD
                .replace("IPI0:        99        109", "IPI0:        99         79")
                .replace("IPI1:       176        144", "IPI1:       176        128"),
            "every CPU",
        );
        fails(
            &LINUX_GOOD.replace("runs=4 expected", "runs=3 expected"),
            "workload",
        );
        fails(
            &LINUX_GOOD.replace("GICv3  33 Level", "GICv3  34 Level"),
            "uart-pl011",
        );
        fails(
            &LINUX_GOOD.replace("VIRQ-UART-ON-CPU 1: 1", "VIRQ-UART-ON-CPU 1: 0"),
            "CPU 1",
        );
        fails(
            &LINUX_GOOD.replace(
                "Err:          0\nVIRQ-INIT-DONE",
                "Err:          2\nVIRQ-INIT-DONE",
            ),
            "errors",
        );
        fails(
            &format!("{LINUX_GOOD}[    5.9] Kernel panic - not syncing\n"),
            "panicked",
        );
        // More vCPUs than Linux brought up.
        let e = check_linux(&outcome(LINUX_GOOD, Some(0)), 4).unwrap_err();
        assert!(format!("{e:#}").contains("expected \"0-3\""), "{e:#}");
        // QEMU's status and a time-out count too.
        assert!(check_linux(&outcome(LINUX_GOOD, Some(1)), 2).is_err());
        assert!(check_linux(&outcome(LINUX_GOOD, None), 2).is_err());
    }

    /// Only the aarch64 smoke test: `cargo test -p xtask -- --ignored aarch64_smoke`.
    #[test]
    #[ignore = "boots QEMU; run explicitly"]
    fn aarch64_smoke() {
        eprintln!("{}", smoke().unwrap());
    }
}
