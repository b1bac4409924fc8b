//! The QEMU suite case `aarch64-testguest`: hyp on aarch64 runs `hyp/testguest-arm`, the
//! bare-metal EL1 test guest (issue 13, "Proof"), on a guest-visible GICv3.
//!
//! [`case`] builds hyp and the guest for `aarch64-unknown-none` (one cargo build),
//! flattens the guest's ELF into the raw image hyp enters at its first byte
//! ([`crate::qemu::elf_to_flat`]: no objcopy needed), writes the configuration blob
//! with `hyp_config::encode` (one guest, 2 vCPUs, 64 MiB, the PL011 passed through),
//! boots `qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -smp 2` with
//! both loaded by `-device loader`, and checks the console ([`check`]): QEMU's exit
//! status 0; every test of [`TESTS`] once, `PASS` — except the [`KNOWN_HYP_BUGS`],
//! which must still `FAIL` (a fixed one must leave the list); the guest's summary
//! line agreeing; its end through PSCI SYSTEM_OFF (SYSTEM_RESET after failures);
//! hyp's `vGIC errors` exactly the bad accesses the guest says it made; both vCPUs'
//! `ACCT` lines; no `PANIC` or `FATAL`. It takes about 2 s after the build; the log
//! is `target/hyp/logs/aarch64-testguest.log`.
//!
//! `VIRQ_QEMU_CASE=aarch64-testguest cargo test -p xtask --release -- --ignored
//! qemu_suite --nocapture` runs it alone.
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hyp_config::{Config, Device, Eoi, Guest, Load, Options, Topology, GUEST_RAM_BASE};

use crate::qemu::{elf_to_flat, hyp_target_dir, run_command_watched, save_log, Outcome};
use crate::setup::{ARM_TARGET, QEMU_ARM_BINARY};
use crate::util::run_cmd;

/// The case's name (`VIRQ_QEMU_CASE`) and log name.
pub const CASE: &str = "aarch64-testguest";
/// The guest's name in the configuration (hyp prints it).
const GUEST_NAME: &str = "testguest";
/// Host RAM of the guest (QEMU arm `virt`'s RAM starts at 0x4000_0000; hyp's image
/// and heap end below 0x4300_0000).
const RAM_HOST_BASE: u64 = 0x4400_0000;
/// Guest RAM in MiB (the last 2 MiB hold its DTB).
const MEMORY_MB: u32 = 64;
/// vCPUs (hyp on aarch64 gives each its own CPU: `-smp` as many).
const VCPUS: u32 = 2;
/// Where the configuration blob goes (above the guest's RAM).
const BLOB_ADDR: u64 = 0x5400_0000;
/// Time limit of the run (it needs about 2 s).
const TIMEOUT_S: u64 = 60;
/// A run silent this long has hung.
const SILENCE_S: u64 = 20;

/// Every test the guest runs (`hyp/testguest-arm/src/tests.rs`, `LIST`, then the
/// final `no_unexpected_interrupts`), in order. A `TEST` line with another name fails
/// the case, so the two lists cannot drift apart.
pub const TESTS: &[&str] = &[
    "dtb",
    "gic_dist_init",
    "gic_id_regs",
    "gic_cpu_init",
    "icc_iar_spurious",
    "psci_version",
    "psci_features",
    "psci_features_smccc_version",
    "psci_features_32bit_only",
    "psci_cpu_on_errors",
    "psci_cpu_on",
    "sgi_unicast",
    "sgi_broadcast",
    "sgi_self",
    "sgi0r_not_group1",
    "timer",
    "timer_wfi_masked",
    "psci_cpu_suspend",
    "timer_pending_across_exits",
    "uart_level",
    "uart_level_deactivate_first",
    "fault_unmapped_load",
    "fault_unmapped_store",
    "fault_unmapped_fetch",
    "fault_gicr_beyond_last",
    "gic_read_only_writes",
    "gic_access_widths",
    "cntp_raz_wi",
    "smc_not_supported",
    "vlpi_running",
    "vlpi_wfi_doorbell",
    "vlpi_soak",
    "vits_setup",
    "vits_inv",
    "vits_running",
    "vits_doorbell",
    "vits_movi",
    "vits_errors",
    "device_config",
    "device_dma",
    "psci_cpu_off",
    "no_unexpected_interrupts",
];

/// Tests that fail because of a hyp bug not fixed yet: `(test, bug)`. Each must still
/// fail; once hyp is fixed the test passes and the case fails until its entry goes.
pub const KNOWN_HYP_BUGS: &[(&str, &str)] = &[];

/// Build hyp and the test guest (release, `aarch64-unknown-none`, into `target/hyp`) and
/// write the guest's raw image beside its ELF: `(hyp ELF, guest image)`.
pub fn build() -> Result<(PathBuf, PathBuf)> {
    let mut cmd = crate::util::cargo();
    cmd.args(["build", "--manifest-path", "hyp/Cargo.toml"])
        .args(["-p", "hyp", "-p", "testguest-arm"])
        .args(["--target", ARM_TARGET, "--release", "--target-dir"])
        .arg(hyp_target_dir())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    run_cmd(&mut cmd)?;
    let out = hyp_target_dir().join(ARM_TARGET).join("release");
    let elf_path = out.join("testguest-arm");
    let elf =
        std::fs::read(&elf_path).with_context(|| format!("reading {}", elf_path.display()))?;
    let entry = elf_entry(&elf)?;
    ensure!(
        entry == GUEST_RAM_BASE,
        "{}: entry {entry:#x}, but hyp enters the image at its first byte ({GUEST_RAM_BASE:#x})",
        elf_path.display()
    );
    let bin = out.join("testguest-arm.bin");
    std::fs::write(&bin, elf_to_flat(&elf)?)
        .with_context(|| format!("writing {}", bin.display()))?;
    Ok((out.join("hyp"), bin))
}

/// `e_entry` of an ELF64 file.
fn elf_entry(elf: &[u8]) -> Result<u64> {
    let b = elf.get(0x18..0x20).context("truncated ELF")?;
    Ok(u64::from_le_bytes(b.try_into()?))
}

/// The configuration: one guest of `kernel_size` bytes at the start of its RAM.
pub fn config(kernel_size: u64) -> Config {
    config_for(GUEST_NAME, kernel_size, VCPUS, "")
}

/// The configuration of one guest `name` running the test guest's image
/// (`kernel_size` bytes) on `vcpus` vCPUs with `cmdline` (its DTB's bootargs; the
/// system benchmark's aarch64 target passes `bench.*` words).
pub fn config_for(name: &str, kernel_size: u64, vcpus: u32, cmdline: &str) -> Config {
    Config {
        hyp: Options::default(),
        guests: vec![Guest {
            name: name.into(),
            vcpus,
            memory_mb: MEMORY_MB,
            ram_host_base: RAM_HOST_BASE,
            kernel: Load {
                offset: 0,
                size: kernel_size,
            },
            initramfs: None,
            cmdline: cmdline.into(),
            topology: Topology::Vgicv3,
            devices: vec![Device::Uart],
            eoi: Eoi::Deferred,
            pci: Vec::new(),
        }],
    }
}

/// The suite case `aarch64-gicv4` (issue 14): the same guest with `topology =
/// "vgicv4"` and `gicv4` on its command line, on `-M virt,gic-version=4`: hyp brings
/// up the host ITS and a vPE per vCPU; the guest's `vlpi_running` and
/// `vlpi_wfi_doorbell` tests then take vLPIs (hyp's ITS INT on events it VMAPTI'd)
/// with no exit while running and through a doorbell wake-up while blocked
/// ([`check_gicv4`] reads hyp's counters).
pub const GICV4_CASE: &str = "aarch64-gicv4";

/// The suite case `aarch64-gicv4-migrate` (issue 14, migration): [`GICV4_CASE`] with
/// `[hyp] migrate_ms =` [`MIGRATE_MS`]: the two vCPUs swap CPUs every period, their
/// vPEs with them (VMOVP, MOVI of the doorbell), while the guest's tests run — the
/// soak's 2,000 vLPIs to a vCPU that blocks, wakes and migrates included. The checks
/// of [`GICV4_CASE`] (but `vlpi_running`'s exits: the periods' ends interrupt the
/// running vCPU), and [`check_migration`]: vCPUs migrated, vPE 1 moved, no GICv4
/// error.
pub const GICV4_MIGRATE_CASE: &str = "aarch64-gicv4-migrate";
/// `migrate_ms` of [`GICV4_MIGRATE_CASE`] and of `cargo xtask soak --arch aarch64`.
pub const MIGRATE_MS: u32 = 2;

/// Run [`GICV4_CASE`].
pub fn gicv4_case() -> Result<String> {
    gicv4_run(GICV4_CASE, 0, None)
}

/// Run [`GICV4_MIGRATE_CASE`].
pub fn gicv4_migrate_case() -> Result<String> {
    gicv4_run(GICV4_MIGRATE_CASE, MIGRATE_MS, None)
}

/// The GICv4 test guest as case `name` with `migrate_ms` (0: none) and `soak` vLPIs in
/// its `vlpi_soak` (`None`: its 2,000): boot, save the log, check. The summary.
pub fn gicv4_run(name: &str, migrate_ms: u32, soak: Option<u64>) -> Result<String> {
    let (o, log) = gicv4_boot(name, migrate_ms, soak, None)?;
    let checked = check(&o)
        .and_then(|summary| {
            Ok(format!(
                "{}; {summary}",
                check_gicv4(&o.output, migrate_ms > 0)?
            ))
        })
        .and_then(|s| {
            if migrate_ms > 0 {
                Ok(format!("{}; {s}", check_migration(&o.output)?))
            } else {
                Ok(s)
            }
        });
    match checked {
        Ok(summary) => Ok(format!("{:.1} s, {summary}", o.elapsed.as_secs_f64())),
        Err(e) => bail!("{e:#} (log: {})", log.display()),
    }
}

/// Build, write the blob, boot the GICv4 test guest (see [`gicv4_run`]); `timeout`
/// overrides the suite's limit. The run and its saved log.
pub fn gicv4_boot(
    name: &str,
    migrate_ms: u32,
    soak: Option<u64>,
    timeout: Option<Duration>,
) -> Result<(Outcome, PathBuf)> {
    crate::setup::ensure_arm()?;
    let (hyp, guest) = build()?;
    let size = std::fs::metadata(&guest)?.len();
    let mut cmdline = String::from("gicv4");
    if migrate_ms > 0 {
        cmdline.push_str(" vlpi.migrate");
    }
    if let Some(n) = soak {
        cmdline.push_str(&format!(" vlpi.soak={n}"));
    }
    let mut cfg = config_for(GUEST_NAME, size, VCPUS, &cmdline);
    cfg.guests[0].topology = Topology::Vgicv4;
    cfg.hyp.migrate_ms = migrate_ms;
    hyp_config::validate(&cfg)
        .map_err(|e| anyhow::anyhow!("configuration: {}: {}", e.field, e.message))?;
    let blob = guest.with_file_name(format!("{name}.blob"));
    std::fs::write(&blob, hyp_config::encode(&cfg))
        .with_context(|| format!("writing {}", blob.display()))?;
    let mut cmd4 = on_gicv4(&command(&hyp, &guest, &blob));
    // Every ITS command QEMU skips is a guest error: the case fails on any.
    cmd4.args(["-d", "guest_errors"]);
    // Twice the other cases' limits: the soak's 2,000 vLPIs take most of the run (about
    // 5 s here, 20 s on a loaded 2-core host).
    let o = run_command_watched(
        cmd4,
        timeout.unwrap_or(Duration::from_secs(2 * TIMEOUT_S)),
        soak.is_some(),
        Some(Duration::from_secs(2 * SILENCE_S)),
    )?;
    let log = save_log(name, &o.output)?;
    Ok((o, log))
}

/// `cmd` (a [`command_for`]) on `-M virt,…,gic-version=4`.
pub fn on_gicv4(cmd: &Command) -> Command {
    let args: Vec<std::ffi::OsString> = cmd
        .get_args()
        .map(|a| {
            if a == crate::qemu::ARM_MACHINE {
                crate::qemu::ARM_MACHINE_GICV4.into()
            } else {
                a.to_owned()
            }
        })
        .collect();
    let mut c = Command::new(cmd.get_program());
    c.args(args);
    c
}

/// The migration proof in a GICv4 run's output: `ACCT migrations=` above 0, vPE 1 moved
/// (its `moves` above 0) — both vCPUs' vPEs moved with them —, no GICv4 error (the
/// `GICv4 errors: 0` line [`check_gicv4`] also requires).
pub fn check_migration(out: &str) -> Result<String> {
    let migrations = crate::arm::acct_number(out, "migrations")?;
    ensure!(migrations > 0, "migrate_ms: no vCPU migrated");
    let moves = |v: u32| -> Result<u64> {
        let prefix = format!("hyp: ACCT {GUEST_NAME} vcpu {v} gicv4: ");
        let l = out
            .lines()
            .find_map(|l| l.trim_end().strip_prefix(prefix.as_str()))
            .with_context(|| format!("no gicv4 ACCT line for vCPU {v}"))?;
        l.rsplit_once(" moves ")
            .and_then(|(_, n)| n.trim().parse().ok())
            .with_context(|| format!("no vPE moves in {l:?}"))
    };
    let (m0, m1) = (moves(0)?, moves(1)?);
    ensure!(m1 > 0, "vCPU 1 migrated but its vPE never moved");
    Ok(format!(
        "migration: {migrations} vCPU migrations, vPE moves (VMOVP + MOVI) {m0} + {m1}"
    ))
}

/// Whether a console line is one of QEMU's `-d guest_errors` reports from its ITS
/// or redistributor models (`hw/intc/arm_gicv3_its.c`, `arm_gicv3_redist.c`: each
/// starts with the reporting function's name): a skipped or malformed ITS command, a
/// bad table entry, a refused register access.
pub fn qemu_gic_error(line: &str) -> bool {
    const FNS: &[&str] = &[
        "process_",
        "do_process_",
        "lookup_",
        "get_dte",
        "get_cte",
        "get_vte",
        "get_ite",
        "update_",
        "its_read",
        "its_write",
        "gicv3_its_",
        "gicr_read",
        "gicr_write",
        "vmovp_",
    ];
    FNS.iter().any(|f| line.starts_with(f))
}

/// The GICv4 proof in a run's output: the guest's two vLPI lines (0 exits of the
/// running vCPU for its vLPIs; a doorbell wake-up per vLPI to the blocked one), hyp's
/// `gicv4` ACCT lines (doorbells ≥ wake-ups ≥ 20 on vCPU 1), no GICv4 error, no ITS
/// guest error from QEMU. A one-line summary with the figures.
pub fn check_gicv4(out: &str, migrating: bool) -> Result<String> {
    if let Some(l) = out.lines().find(|l| qemu_gic_error(l)) {
        bail!("QEMU reports a GIC/ITS guest error: {l:?}");
    }
    let running = out
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("testguest: vlpi_running: "))
        .context("no vlpi_running line")?;
    let exits: u64 = running
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .context("malformed vlpi_running line")?;
    let vlpis: u64 = running
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .context("malformed vlpi_running line")?;
    ensure!(
        vlpis > 0 && (exits == 0 || migrating),
        "{exits} exits for {vlpis} vLPIs to a running vCPU"
    );
    let acct = |v: u32| -> Result<BTreeMap<String, u64>> {
        let prefix = format!("hyp: ACCT {GUEST_NAME} vcpu {v} gicv4: ");
        let line = out
            .lines()
            .find_map(|l| l.trim_end().strip_prefix(prefix.as_str()))
            .with_context(|| format!("no gicv4 ACCT line for vCPU {v}"))?;
        let rest = line.split_once(": ").map_or(line, |(_, r)| r);
        let words: Vec<&str> = rest.split_whitespace().collect();
        let mut m = BTreeMap::new();
        let mut i = 0;
        while i + 1 < words.len() {
            if let Ok(n) = words[i + 1].parse::<u64>() {
                m.insert(words[i].to_string(), n);
                i += 2;
            } else {
                m.insert(
                    format!("{} {}", words[i], words[i + 1]),
                    words.get(i + 2).and_then(|n| n.parse().ok()).unwrap_or(0),
                );
                i += 3;
            }
        }
        Ok(m)
    };
    let soak = out
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("testguest: vlpi_soak: "))
        .context("no vlpi_soak line")?;
    ensure!(soak.contains(", lost 0,"), "vlpi_soak: {soak}");
    let v1 = acct(1)?;
    let get = |k: &str| v1.get(k).copied().unwrap_or(0);
    let (doorbells, wakeups, sent, stay) = (
        get("doorbells"),
        get("wakeups"),
        get("vlpis sent"),
        get("stay_runnable"),
    );
    ensure!(
        wakeups >= 20 && doorbells >= wakeups,
        "vCPU 1: {doorbells} doorbells, {wakeups} wake-ups (want ≥ 20 wake-ups, a doorbell each)"
    );
    ensure!(sent >= vlpis + 20, "vCPU 1: hyp sent {sent} vLPIs");
    acct(0)?;
    ensure!(
        out.lines()
            .any(|l| l.trim_end() == format!("hyp: {GUEST_NAME}: GICv4 errors: 0")),
        "hyp reports GICv4 errors (or none counted)"
    );
    let vits = check_vits(out, migrating)?;
    Ok(format!(
        "GICv4: {vlpis} vLPIs to a running vCPU with {exits} exits; soak: {soak}; vCPU 1: {sent} vLPIs sent, {doorbells} doorbells, {wakeups} doorbell wake-ups ({:.2} doorbells per wake-up), {stay} puts kept runnable by PendingLast; {vits}",
        doorbells as f64 / wakeups.max(1) as f64
    ))
}

/// The guest ITS part of the GICv4 proof: the guest's `vits_*` lines (device vLPIs
/// through its own ITS: 0 exits while running, a doorbell wake-up each while blocked;
/// 3 bad commands counted; a DeviceID with no host device dropped; a queue outside RAM
/// stalled) and hyp's `vits` ACCT line (the same errors and `read_failed` 1,
/// `no_host_device` = 2, configuration bytes copied, no unreadable one).
pub fn check_vits(out: &str, migrating: bool) -> Result<String> {
    let line = |p: &str| -> Result<&str> {
        out.lines()
            .find_map(|l| l.trim_end().strip_prefix(p))
            .with_context(|| format!("no {p:?} line"))
    };
    let num = |s: &str, after: &str| -> Option<u64> {
        s.split(after)
            .nth(1)?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    let running = line("testguest: vits_running: ")?;
    let taken = running
        .split(' ')
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .context("malformed vits_running line")?;
    let exits = num(running, "its exits meanwhile: ").context("malformed vits_running line")?;
    ensure!(
        taken == 100 && (exits == 0 || migrating),
        "vits_running: {taken} device vLPIs, {exits} exits"
    );
    let db = line("testguest: vits_doorbell: ")?;
    let (d, w) = (
        num(db, ": ").context("malformed vits_doorbell line")?,
        num(db, "doorbells, ").context("malformed vits_doorbell line")?,
    );
    ensure!(
        w >= 20 && d >= w,
        "vits_doorbell: {d} doorbells, {w} wake-ups"
    );
    line("testguest: vits_inv: ")?;
    line("testguest: vits_movi: ")?;
    let errors = line("testguest: vits_errors: ")?;
    ensure!(
        errors.contains("a queue outside RAM stalled"),
        "vits_errors: {errors}"
    );
    let acct = line(&format!("hyp: ACCT {GUEST_NAME} vits: "))?;
    let get = |k: &str| num(acct, &format!("{k} ")).unwrap_or(u64::MAX);
    ensure!(
        get("no_host_device") == 2,
        "hyp dropped {} actions of the DeviceID with no host device, want 2",
        get("no_host_device")
    );
    ensure!(
        get("config_unread") == 0 && get("config_copies") >= 5,
        "hyp: {} configuration bytes copied, {} unreadable",
        get("config_copies"),
        get("config_unread")
    );
    for (k, want) in [
        ("unknown: ", 1),
        ("device_unmapped: ", 1),
        ("event_oor: ", 1),
        ("read_failed: ", 1),
    ] {
        let n = num(acct, k).unwrap_or(u64::MAX);
        ensure!(n == want, "hyp counted {k}{n}, want {want}");
    }
    Ok(format!(
        "vITS: {taken} device vLPIs to a running vCPU with {exits} exits, {d} doorbells for {w} wake-ups of a blocked one, {} host commands, {} config copies",
        get("host_cmds"),
        get("config_copies")
    ))
}

/// The QEMU command line (`-no-reboot`: hyp's power-off through PSCI SYSTEM_RESET
/// ends QEMU too; SVE and SME off: hyp does not switch their state).
pub fn command(hyp: &Path, guest: &Path, blob: &Path) -> Command {
    command_for(hyp, guest, blob, VCPUS)
}

/// [`command`] with `cpus` CPUs (one per vCPU of the configuration).
pub fn command_for(hyp: &Path, guest: &Path, blob: &Path, cpus: u32) -> Command {
    let mut cmd = Command::new(QEMU_ARM_BINARY);
    cmd.args(["-M", crate::qemu::ARM_MACHINE])
        .args(["-cpu", crate::qemu::ARM_CPU, "-m", "1G"])
        .args(["-smp", &cpus.to_string(), "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(hyp);
    for (file, addr) in [(guest, RAM_HOST_BASE), (blob, BLOB_ADDR)] {
        cmd.arg("-device").arg(format!(
            "loader,file={},addr={addr:#x},force-raw=on",
            file.display()
        ));
    }
    cmd.arg("-append").arg(format!("config={BLOB_ADDR:#x}"));
    cmd
}

/// The suite case: build, write the blob, boot, save the log, check. Prints one line.
pub fn case() -> Result<String> {
    run_case(CASE, Eoi::Deferred)
}

/// The case `aarch64-testguest-storm`: the same guest with `eoi = "immediate"` (hyp
/// deactivates the PL011's SPI right after its claim): the guest still passes (its
/// virtual interrupt coalesces the re-fires), and hyp's counters show the storm its
/// guard stops ([`check_storm`]).
pub fn storm_case() -> Result<String> {
    run_case(STORM_CASE, Eoi::Immediate)
}

/// The storm demonstration's case name.
pub const STORM_CASE: &str = "aarch64-testguest-storm";

fn run_case(name: &str, eoi: Eoi) -> Result<String> {
    crate::setup::ensure_arm()?;
    let (hyp, guest) = build()?;
    let size = std::fs::metadata(&guest)?.len();
    let mut cfg = config(size);
    cfg.guests[0].eoi = eoi;
    hyp_config::validate(&cfg)
        .map_err(|e| anyhow::anyhow!("configuration: {}: {}", e.field, e.message))?;
    let blob = guest.with_file_name("testguest-arm.blob");
    std::fs::write(&blob, hyp_config::encode(&cfg))
        .with_context(|| format!("writing {}", blob.display()))?;
    let o = run_command_watched(
        command(&hyp, &guest, &blob),
        Duration::from_secs(TIMEOUT_S),
        false,
        Some(Duration::from_secs(SILENCE_S)),
    )?;
    let log = save_log(name, &o.output)?;
    let checked = check(&o).and_then(|summary| {
        let pl011 = pl011_completions(&o.output)?;
        Ok(if eoi == Eoi::Immediate {
            format!("{}; {summary}", check_storm(&o.output, pl011)?)
        } else {
            ensure!(
                pl011.deactivates == pl011.interrupts,
                "{} physical deactivates for {} PL011 interrupts: each is completed once",
                pl011.deactivates,
                pl011.interrupts
            );
            format!(
                "{summary}; PL011: {} interrupts, each completed once",
                pl011.interrupts
            )
        })
    });
    match checked {
        Ok(summary) => Ok(format!("{:.1} s, {summary}", o.elapsed.as_secs_f64())),
        Err(e) => bail!("{e:#} (log: {})", log.display()),
    }
}

/// hyp's PL011 counters at power-off: the passthrough interrupts its CPUs took
/// (`host interrupts: … passthrough N`, summed over the vCPUs) and the physical
/// deactivates hyp did (`PL011 INTID 33: <link> link, N physical deactivates by hyp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pl011Counts {
    /// Physical PL011 interrupts hyp acknowledged.
    pub interrupts: u64,
    /// Physical deactivates hyp did.
    pub deactivates: u64,
}

/// Read [`Pl011Counts`] from hyp's output.
pub fn pl011_completions(out: &str) -> Result<Pl011Counts> {
    let interrupts = out
        .lines()
        .filter(|l| l.starts_with("hyp: ACCT "))
        .filter_map(|l| l.split(" passthrough ").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    let deactivates = out
        .lines()
        .find_map(|l| {
            let rest = l.split(" link, ").nth(1)?;
            rest.strip_suffix(" physical deactivates by hyp")?
                .parse()
                .ok()
        })
        .context("no \"physical deactivates by hyp\" line")?;
    Ok(Pl011Counts {
        interrupts,
        deactivates,
    })
}

/// The storm, shown: hyp's guard fired (`storm guard: INTID 33 claimed 5000 times`) and
/// the physical deactivates are at least the guard's limit per interrupt the guest
/// counted (its two UART tests' `PL011 transmit interrupts` lines are short: hyp's
/// lines interleave) — where `eoi = "deferred"` does exactly one each.
pub fn check_storm(out: &str, pl011: Pl011Counts) -> Result<String> {
    const LIMIT: u64 = 5000;
    let guards = out
        .lines()
        .filter(|l| l.contains("hyp: storm guard: INTID 33 claimed 5000 times"))
        .count() as u64;
    ensure!(
        guards > 0,
        "no storm guard line: the immediate deactivate did not storm"
    );
    ensure!(
        pl011.deactivates >= guards * LIMIT,
        "{} physical deactivates for {guards} storm guards of {LIMIT} claims",
        pl011.deactivates
    );
    Ok(format!(
        "storm shown: {} physical claims and deactivates for the PL011, the guard fired {guards} times",
        pl011.deactivates
    ))
}

/// QEMU ended by itself with status 0 and the console says what [`check_output`]
/// wants.
pub fn check(o: &Outcome) -> Result<String> {
    ensure!(!o.timed_out, "QEMU timed out {}", progress(&o.output));
    ensure!(
        o.status == Some(0),
        "QEMU exit status {:?}, not 0 ({})",
        o.status,
        progress(&o.output)
    );
    check_output(&o.output)
}

/// Where the guest got to: after which test, and which one it was in (a guest whose
/// wake-up source is broken hangs in a `wfi` hyp never ends).
fn progress(out: &str) -> String {
    let last = out
        .lines()
        .rev()
        .filter_map(|l| l.strip_prefix("TEST "))
        .find_map(|l| l.split_once(" ... ").map(|(name, _)| name));
    match last {
        None => format!("before the first test ({})", TESTS[0]),
        Some(name) => match TESTS.iter().position(|t| *t == name) {
            Some(i) if i + 1 < TESTS.len() => {
                format!("after TEST {name}, in {}", TESTS[i + 1])
            }
            _ => format!("after TEST {name}"),
        },
    }
}

/// The console of a run (see the module docs); a one-line summary.
pub fn check_output(out: &str) -> Result<String> {
    for bad in ["PANIC", "FATAL", "unexpected exception"] {
        ensure!(!out.contains(bad), "the console shows {bad:?}");
    }
    let mut results: BTreeMap<&str, &str> = BTreeMap::new();
    for line in out.lines().map(str::trim_end) {
        let Some(rest) = line.strip_prefix("TEST ") else {
            continue;
        };
        let (name, result) = rest
            .split_once(" ... ")
            .with_context(|| format!("malformed test line {line:?}"))?;
        ensure!(
            TESTS.contains(&name),
            "unknown test {name:?} (not in TESTS)"
        );
        ensure!(
            results.insert(name, result).is_none(),
            "test {name} reported twice"
        );
    }
    let known = |name: &str| KNOWN_HYP_BUGS.iter().find(|(t, _)| *t == name);
    for name in TESTS {
        let Some(result) = results.get(name) else {
            bail!("test {name} did not report (the guest stopped early?)");
        };
        match (*result == "PASS", known(name)) {
            (true, None) => {}
            (false, None) => bail!("TEST {name} ... {result}"),
            (true, Some((_, bug))) => bail!(
                "test {name} passes now: the hyp bug it shows ({bug}) is fixed, remove it from KNOWN_HYP_BUGS"
            ),
            (false, Some(_)) if result.starts_with("FAIL") => {}
            (false, Some(_)) => bail!("TEST {name} ... {result}"),
        }
    }
    let (passed, failed) = summary(out)?;
    let want_failed = KNOWN_HYP_BUGS.len();
    ensure!(
        (passed, failed) == (TESTS.len() - want_failed, want_failed),
        "summary: {passed} passed, {failed} failed; want {} passed, {want_failed} failed",
        TESTS.len() - want_failed
    );
    let end = if failed == 0 {
        "PSCI SYSTEM_OFF"
    } else {
        "PSCI SYSTEM_RESET"
    };
    ensure!(
        out.lines()
            .any(|l| l.starts_with(&format!("hyp: guest {GUEST_NAME}: {end}"))),
        "no {end} from the guest after {failed} failures"
    );
    ensure!(
        out.lines()
            .any(|l| l.trim_end() == "hyp: power off (status 0)"),
        "hyp did not power off with status 0"
    );
    let mut exits = Vec::new();
    for v in 0..VCPUS {
        let prefix = format!("hyp: ACCT {GUEST_NAME} vcpu {v} exits:");
        let line = out
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .with_context(|| format!("no ACCT line for vCPU {v}"))?;
        exits.push(format!("vCPU {v}:{}", line.trim_end()));
    }
    let made = counters(out, "testguest: bad vGIC accesses made:", ' ')?;
    let seen = counters(
        out,
        &format!("hyp: {GUEST_NAME}: vGIC errors: ErrorCounters {{"),
        ':',
    )?;
    for (name, want) in [
        ("bad_width", 0),
        ("misaligned", 0),
        ("ignored_value", 0),
        (
            "unmapped",
            made.get("unmapped").copied().unwrap_or(u64::MAX),
        ),
        (
            "read_only",
            made.get("read_only").copied().unwrap_or(u64::MAX),
        ),
    ] {
        let got = seen.get(name).copied();
        ensure!(
            got == Some(want),
            "hyp's vGIC counted {name} {got:?}, the guest made {want}"
        );
    }
    let bugs: Vec<&str> = KNOWN_HYP_BUGS.iter().map(|(t, _)| *t).collect();
    Ok(format!(
        "{} tests, {passed} passed, {failed} known hyp bugs {bugs:?}; exits {}",
        TESTS.len(),
        exits.join("; ")
    ))
}

/// `testguest: P passed, F failed`.
fn summary(out: &str) -> Result<(usize, usize)> {
    let line = out
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("testguest: "))
        .find(|l| l.ends_with(" failed") && l.contains(" passed, "))
        .context("no summary line (testguest: N passed, M failed)")?;
    let (p, f) = line
        .trim_end_matches(" failed")
        .split_once(" passed, ")
        .context("malformed summary")?;
    Ok((p.trim().parse()?, f.trim().parse()?))
}

/// The `name N` (`sep` ' ') or `name: N` (`sep` ':') pairs after `prefix` on its line,
/// separated by commas.
fn counters(out: &str, prefix: &str, sep: char) -> Result<BTreeMap<String, u64>> {
    let line = out
        .lines()
        .find_map(|l| l.trim_end().strip_prefix(prefix))
        .with_context(|| format!("no line {prefix:?}"))?;
    line.trim_end_matches('}')
        .split(',')
        .map(|pair| {
            let (k, v) = pair
                .trim()
                .split_once(sep)
                .with_context(|| format!("malformed counter {pair:?}"))?;
            Ok((k.trim().to_string(), v.trim().parse()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The console of a run on the current hyp (known bugs failing).
    fn good() -> String {
        let mut s = String::from(
            "hyp: virq hypervisor on aarch64, EL2, boot CPU 0, heap (40422000, 42422000) image (40200000, 42422000), CNTFRQ 1000000000 Hz\n\
             testguest: aarch64 EL1 test guest on vCPU 0 of 2, DTB at 0x83e00000, counter 1000000000 Hz\n",
        );
        for t in TESTS {
            match KNOWN_HYP_BUGS.iter().find(|(k, _)| k == t) {
                Some(_) => s.push_str(&format!("TEST {t} ... FAIL (because)\n")),
                None => s.push_str(&format!("TEST {t} ... PASS\n")),
            }
            if *t == "uart_level" {
                s.push_str("testguest: PL011 transmit interrupts: 12345\n");
            }
        }
        let failed = KNOWN_HYP_BUGS.len();
        s.push_str("testguest: bad vGIC accesses made: unmapped 2, read_only 5\n");
        s.push_str(&format!(
            "testguest: {} passed, {failed} failed\n",
            TESTS.len() - failed
        ));
        if failed == 0 {
            s.push_str("hyp: guest testguest: PSCI SYSTEM_OFF\n");
        } else {
            s.push_str(&format!(
                "testguest: FAILED: {failed} test(s) failed: PSCI SYSTEM_RESET\n\
                 hyp: guest testguest: PSCI SYSTEM_RESET (hyp powers off)\n"
            ));
        }
        s.push_str(
            "hyp: ACCT testguest vcpu 0 exits: irq 65 wfi 1 hvc 73 sysreg 126 mmio 184 other 3\n\
             hyp: ACCT testguest vcpu 1 exits: irq 3 wfi 112 hvc 1 sysreg 0 mmio 52 other 0\n\
             hyp: testguest: vGIC errors: ErrorCounters { bad_width: 0, misaligned: 0, unmapped: 2, read_only: 5, ignored_value: 0 }\n\
             hyp: power off (status 0)\n",
        );
        s
    }

    fn outcome(output: &str, status: Option<i32>) -> Outcome {
        Outcome {
            output: output.into(),
            status,
            timed_out: status.is_none(),
            elapsed: Duration::from_secs(2),
        }
    }

    #[test]
    fn good_run_passes() {
        let s = check(&outcome(&good(), Some(0))).unwrap();
        assert!(s.contains(&format!("{} tests", TESTS.len())), "{s}");
    }

    #[test]
    fn a_fail_line_fails() {
        let out = good().replace(
            "TEST sgi_unicast ... PASS",
            "TEST sgi_unicast ... FAIL (SGI 10 of 100 not taken in 1 s (9 taken))",
        );
        let e = check_output(&out).unwrap_err().to_string();
        assert!(e.contains("sgi_unicast"), "{e}");
    }

    #[test]
    fn a_missing_summary_fails() {
        let out: String = good()
            .lines()
            .filter(|l| !l.ends_with(" failed") || !l.starts_with("testguest: "))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = check_output(&out).unwrap_err().to_string();
        assert!(e.contains("summary"), "{e}");
    }

    #[test]
    fn a_wrong_count_fails() {
        let failed = KNOWN_HYP_BUGS.len();
        let right = format!("{} passed, {failed} failed", TESTS.len() - failed);
        let wrong = format!("{} passed, {failed} failed", TESTS.len() - failed - 1);
        let out = good().replace(&right, &wrong);
        assert!(check_output(&out).is_err());
    }

    #[test]
    fn a_missing_or_unknown_or_doubled_test_fails() {
        let out = good().replace("TEST timer ... PASS\n", "");
        assert!(check_output(&out).is_err());
        let out = good().replace("TEST timer ... PASS\n", "TEST timer2 ... PASS\n");
        assert!(check_output(&out).is_err());
        let out = good().replace(
            "TEST timer ... PASS\n",
            "TEST timer ... PASS\nTEST timer ... PASS\n",
        );
        assert!(check_output(&out).is_err());
        let out = good().replace("TEST timer ... PASS\n", "TEST timer ... SKIP (1 vCPU)\n");
        assert!(check_output(&out).is_err());
    }

    #[test]
    fn a_known_bug_that_passes_fails() {
        let Some((name, _)) = KNOWN_HYP_BUGS.first() else {
            return;
        };
        let out = good().replace(
            &format!("TEST {name} ... FAIL (because)"),
            &format!("TEST {name} ... PASS"),
        );
        let e = check_output(&out).unwrap_err().to_string();
        assert!(e.contains("KNOWN_HYP_BUGS"), "{e}");
    }

    #[test]
    fn panics_bad_status_and_wrong_end_fail() {
        assert!(check(&outcome(&good(), Some(1))).is_err());
        assert!(check(&outcome(&good(), None)).is_err());
        let out = format!("{}hyp: PANIC: boom\n", good());
        assert!(check_output(&out).is_err());
        let out = good().replace(
            "testguest: PL011",
            "testguest: PANIC at x\ntestguest: PL011",
        );
        assert!(check_output(&out).is_err());
        let out = good().replace("hyp: power off (status 0)", "hyp: power off (status 1)");
        assert!(check_output(&out).is_err());
        let out = good()
            .replace("PSCI SYSTEM_RESET (hyp", "PSCI SYSTEM_OFF (hyp")
            .replace("PSCI SYSTEM_OFF\n", "PSCI SYSTEM_RESET\n");
        assert!(check_output(&out).is_err());
    }

    #[test]
    fn a_hang_names_the_test() {
        let out: String = good()
            .lines()
            .take_while(|l| !l.starts_with("TEST timer "))
            .map(|l| format!("{l}\n"))
            .collect();
        let e = check(&outcome(&out, None)).unwrap_err().to_string();
        assert!(e.contains("after TEST sgi0r_not_group1, in timer"), "{e}");
        let e = check(&outcome("hyp: boots\n", None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("before the first test"), "{e}");
    }

    #[test]
    fn vgic_error_counts_must_match() {
        let out = good().replace("read_only: 5,", "read_only: 4,");
        assert!(check_output(&out).is_err());
        let out = good().replace("bad_width: 0,", "bad_width: 1,");
        assert!(check_output(&out).is_err());
        let out = good().replace(
            "testguest: bad vGIC accesses made: unmapped 2, read_only 5\n",
            "",
        );
        assert!(check_output(&out).is_err());
    }

    #[test]
    fn missing_acct_fails() {
        let out: String = good()
            .lines()
            .filter(|l| !l.starts_with("hyp: ACCT testguest vcpu 1"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(check_output(&out).is_err());
    }

    #[test]
    fn configuration_is_valid_and_command_loads_both() {
        let c = config(0x1_2000);
        hyp_config::validate(&c).unwrap();
        let blob = hyp_config::encode(&c);
        assert_eq!(hyp_config::decode(&blob).unwrap(), c);
        let cmd = command(Path::new("hyp"), Path::new("g.bin"), Path::new("c.blob"));
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("loader,file=g.bin,addr=0x44000000,force-raw=on"));
        assert!(joined.contains("loader,file=c.blob,addr=0x54000000,force-raw=on"));
        assert!(joined.ends_with("-append config=0x54000000"));
        assert!(joined.contains("-smp 2"));
    }

    /// The tail of a good `aarch64-gicv4` run.
    fn gicv4_good() -> String {
        "testguest: vlpi_running: 100 vLPIs taken by running vCPU 1, its exits meanwhile: 0\n\
         testguest: vlpi_wfi_doorbell: 20 vLPIs to blocked vCPU 1: 20 doorbells, 20 doorbell wake-ups\n\
         testguest: vlpi_soak: 2000 vLPIs to vCPU 1 at varying phases, lost 0, doorbell wake-ups 1972\n\
         PL011 data written to disabled UART\n\
         hyp: ACCT testguest vcpu 0 gicv4: vPE 0 doorbell LPI 8192: vlpis sent 0 doorbells 0 wakeups 0 stay_runnable 0 loads 3\n\
         hyp: ACCT testguest vcpu 1 gicv4: vPE 1 doorbell LPI 8193: vlpis sent 120 doorbells 20 wakeups 20 stay_runnable 0 loads 135\n\
         testguest: vits_setup: DeviceID 0 mapped (8 EventID bits), 2 collections, 4 events, host commands so far 10\n\
         testguest: vits_inv: disabled vLPI held pending, taken after enable + INV\n\
         testguest: vits_running: 100 device vLPIs through the guest ITS taken by running vCPU 1, its exits meanwhile: 0\n\
         testguest: vits_doorbell: 20 device vLPIs to blocked vCPU 1: 20 doorbells, 20 doorbell wake-ups\n\
         testguest: vits_movi: event 2 taken by vCPU 0, then by vCPU 1 after MOVI\n\
         testguest: vits_errors: 3 command errors ignored, 2 actions for a DeviceID with no host device dropped, 1 host command; a queue outside RAM stalled (GITS_CREADR 0x1), the ITS works again after CBASER\n\
         hyp: ACCT testguest vits: actions 19 host_cmds 17 no_host_device 2 config_copies 9 config_unread 0 msis 123 msis_dropped 2; command errors CmdErrors { unknown: 1, device_oor: 0, device_unmapped: 1, event_oor: 1, event_unmapped: 0, icid_oor: 0, collection_unmapped: 0, intid_oor: 0, intid_in_use: 0, size_oor: 0, rdbase_oor: 0, table_full: 0, read_failed: 1 }; register errors ErrorCounters { bad_width: 0, misaligned: 0, unmapped: 0, read_only: 0, ignored_value: 2 }\n\
         hyp: testguest: GICv4 errors: 0\n"
            .into()
    }

    #[test]
    fn migration_needs_migrations_and_moved_vpes() {
        let good = gicv4_good()
            .replace(" loads 3\n", " loads 3 moves 12\n")
            .replace(" loads 135\n", " loads 135 moves 11\n")
            + "hyp: ACCT migrations=23\n";
        let s = check_migration(&good).unwrap();
        assert!(
            s.contains("23 vCPU migrations") && s.contains("12 + 11"),
            "{s}"
        );
        for bad in [
            good.replace("ACCT migrations=23", "ACCT migrations=0"),
            good.replace("hyp: ACCT migrations=23\n", ""),
            good.replace(" moves 11", " moves 0"),
            good.replace(" moves 11", ""),
        ] {
            assert!(check_migration(&bad).is_err(), "{bad}");
        }
        // Migrating, the running vCPU's exits are allowed (the periods' ends).
        let exits = gicv4_good().replace("its exits meanwhile: 0", "its exits meanwhile: 7");
        assert!(check_gicv4(&exits, false).is_err());
        check_gicv4(&exits, true).unwrap();
    }

    #[test]
    fn gicv4_good_run_passes_with_its_figures() {
        let s = check_gicv4(&gicv4_good(), false).unwrap();
        assert!(
            s.contains("100 vLPIs to a running vCPU with 0 exits"),
            "{s}"
        );
        assert!(s.contains("20 doorbells, 20 doorbell wake-ups"), "{s}");
        assert!(
            s.contains("vITS: 100 device vLPIs to a running vCPU with 0 exits, 20 doorbells for 20 wake-ups"),
            "{s}"
        );
    }

    #[test]
    fn vits_exits_doorbells_drops_errors_fail() {
        let g = gicv4_good();
        for bad in [
            g.replace(
                "its exits meanwhile: 0\ntestguest: vits_doorbell",
                "its exits meanwhile: 2\ntestguest: vits_doorbell",
            ),
            g.replace(
                "vCPU 1: 20 doorbells, 20 doorbell wake-ups\ntestguest: vits_movi",
                "vCPU 1: 20 doorbells, 19 doorbell wake-ups\ntestguest: vits_movi",
            ),
            g.replace("no_host_device 2", "no_host_device 0"),
            g.replace("config_unread 0", "config_unread 1"),
            g.replace("unknown: 1,", "unknown: 0,"),
            g.replace("event_oor: 1,", "event_oor: 0,"),
            g.replace("read_failed: 1 }", "read_failed: 0 }"),
            g.replace("a queue outside RAM stalled", "a queue outside RAM ran"),
            g.replace("testguest: vits_inv", "testguest: vits_ink"),
            g.replace("testguest: vits_movi", "testguest: vits_move"),
            g.replace("hyp: ACCT testguest vits", "hyp: ACCT testguest its"),
            format!("{g}process_vmovi: invalid vPE\n"),
        ] {
            assert!(check_gicv4(&bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn gicv4_exits_missed_doorbells_errors_fail() {
        let g = gicv4_good();
        for bad in [
            g.replace("meanwhile: 0", "meanwhile: 1"),
            g.replace("doorbells 20 wakeups 20", "doorbells 20 wakeups 19"),
            g.replace("doorbells 20 wakeups 20", "doorbells 19 wakeups 20"),
            g.replace("vlpis sent 120", "vlpis sent 100"),
            g.replace("GICv4 errors: 0", "GICv4 errors: 1"),
            g.replace(
                "hyp: ACCT testguest vcpu 0 gicv4",
                "hyp: ACCT testguest vcpu 0 gicv3",
            ),
            g.replace("testguest: vlpi_running", "testguest: vlpi_walking"),
            g.replace("lost 0,", "lost 1,"),
            g.replace("testguest: vlpi_soak", "testguest: vlpi_sock"),
            format!("{g}process_vmapti: invalid vintid 0x2000\n"),
            format!("{g}gicr_writell: invalid guest write at offset 0x20078\n"),
        ] {
            assert!(check_gicv4(&bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn pl011_counts_and_the_storm_check() {
        let calm = "hyp: ACCT testguest vcpu 0 exits: irq 1; host interrupts: kick 0 maintenance 0 vtimer 53 passthrough 15 hyptimer 0 other 0\n\
                    hyp: ACCT testguest vcpu 1 exits: irq 0; host interrupts: kick 3 maintenance 0 vtimer 0 passthrough 0 hyptimer 0 other 0\n\
                    hyp: testguest: PL011 INTID 33: Software link, 15 physical deactivates by hyp\n";
        let c = pl011_completions(calm).unwrap();
        assert_eq!(
            c,
            Pl011Counts {
                interrupts: 15,
                deactivates: 15
            }
        );
        assert!(check_storm(calm, c).is_err(), "no guard line: no storm");
        let guard = "hyp: storm guard: INTID 33 claimed 5000 times without a guest completion; masked until the guest completes\n";
        let stormy = format!("{guard}{guard}hyp: testguest: PL011 INTID 33: Immediate link, 10000 physical deactivates by hyp\n");
        let s = pl011_completions(&stormy).unwrap();
        assert!(check_storm(&stormy, s).is_ok());
        let short = stormy.replace("10000 physical", "9999 physical");
        assert!(check_storm(&short, pl011_completions(&short).unwrap()).is_err());
        assert!(pl011_completions("hyp: power off (status 0)\n").is_err());
    }
}
