//! hyp on aarch64, first step (issue 13): build hyp for `aarch64-unknown-none`, boot it
//! at EL2 in `qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -cpu max`,
//! where it runs its tiny built-in EL1 guest (an `hvc` PSCI_VERSION, an `hvc` HELLO, a
//! load from an unmapped IPA, PSCI SYSTEM_OFF) and powers off through PSCI.
//!
//! `cargo xtask run --arch aarch64` boots it; [`smoke`] (the first case of the QEMU
//! suite) checks every line [`EXPECTED`] lists and QEMU's exit status. It takes about
//! a second. No configurations, guest images or GIC yet (docs/hyp.md, "aarch64 (first
//! step)").
use anyhow::{bail, ensure, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::qemu::{hyp_target_dir, run_command_watched, save_log, Outcome};
use crate::setup::{ARM_TARGET, QEMU_ARM_BINARY};
use crate::util::run_cmd;

/// QEMU's `-M`.
pub const MACHINE: &str = "virt,virtualization=on,gic-version=3";
/// Time limit of one run (it needs about a second).
const TIMEOUT_S: u64 = 30;

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

/// The QEMU command line: one CPU, 256 MiB (hyp places the guest's RAM at 0x4800_0000),
/// `-no-reboot` so that PSCI SYSTEM_RESET (hyp's failure power-off) ends QEMU too.
pub fn command(hyp: &Path) -> Command {
    let mut cmd = Command::new(QEMU_ARM_BINARY);
    cmd.args(["-M", MACHINE, "-cpu", "max", "-m", "256M", "-smp", "1"])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(hyp);
    cmd
}

/// `cargo xtask run --arch aarch64`: build, boot, echo the console, check the result.
pub fn run(timeout_s: Option<u64>) -> Result<()> {
    crate::setup::ensure_arm()?;
    let hyp = build()?;
    let timeout = Duration::from_secs(timeout_s.unwrap_or(TIMEOUT_S));
    let o = run_command_watched(command(&hyp), timeout, true, None)?;
    check(&o)
}

/// The aarch64 smoke test of the QEMU suite: build, boot, check; the log goes to
/// `target/hyp/logs/aarch64-hello.log`.
pub fn smoke() -> Result<()> {
    crate::setup::ensure_arm()?;
    let hyp = build()?;
    let o = run_command_watched(
        command(&hyp),
        Duration::from_secs(TIMEOUT_S),
        false,
        Some(Duration::from_secs(10)),
    )?;
    let log = save_log("aarch64-hello", &o.output)?;
    match check(&o) {
        Ok(()) => {
            eprintln!(
                "qemu aarch64-hello: PASS ({:.1} s, {} lines checked)",
                o.elapsed.as_secs_f64(),
                EXPECTED.len()
            );
            Ok(())
        }
        Err(e) => bail!("qemu aarch64-hello: FAIL: {e:#} (log: {})", log.display()),
    }
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

    /// Only the aarch64 smoke test: `cargo test -p xtask -- --ignored aarch64_smoke`.
    #[test]
    #[ignore = "boots QEMU; run explicitly"]
    fn aarch64_smoke() {
        smoke().unwrap();
    }
}
