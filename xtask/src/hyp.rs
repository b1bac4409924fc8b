//! Build `hyp` and its test guest, run them in QEMU, and the QEMU test suite.
//!
//! - `cargo xtask run` boots `configs/linux-aia.toml` — Debian Linux on the AIA
//!   topology (2 vCPUs on hardware guest interrupt files, `-M
//!   virt,aia=aplic-imsic,aia-guests=3`, 2 harts) — to an interactive shell (stdio is
//!   QEMU's console); `--config` boots another file, `--help` lists them. Every run ends with
//!   hyp's `ACCT` exit-accounting block. `--arch aarch64` boots
//!   `configs/linux-arm64.toml` (Debian arm64 Linux on a vGICv3) the same way, with hyp
//!   built for aarch64 (`crate::arm`); the file's `machine.arch` picks the architecture.
//! - [`qemu_tests`] (from `cargo xtask test`) boots the test guest in a matrix of
//!   machine shapes and checks every `TEST … PASS` line, the guest's failure count,
//!   QEMU's exit status and, for the storm pair, the `ACCT` claims per completion.
//!
//! hyp is not a member of the host workspace: it is built with an explicit
//! `--target riscv64gc-unknown-none-elf` into `target/hyp`. The test guest's ELF is
//! flattened to a raw image here; `crate::config` places it (and every other image)
//! in host RAM for QEMU's generic loader. Every run and every suite case boots a
//! configuration file of `configs/`.
use anyhow::{bail, ensure, Context, Result};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hyp_config::{Arch, Named};

use crate::config::{DEFAULT_CONFIG, DEFAULT_CONFIG_AARCH64};
use crate::qemu::*;

/// The configurations `cargo xtask run` boots (shown by `cargo xtask run --help`).
pub const RUN_CONFIGS: &str = "\
Configurations (configs/*.toml; copy one and edit it, the schema is in docs/hyp.md):
  cargo xtask run                      configs/linux-aia.toml: Debian Linux, 2 vCPUs on the AIA
                                       topology (vAPLIC + IMSIC on hardware guest files), 2 harts,
                                       -M virt,aia=aplic-imsic,aia-guests=3; an interactive busybox
                                       shell (exit powers off)
  cargo xtask run --config configs/linux.toml
                                       Debian Linux on the vPLIC, plain -M virt
  cargo xtask run --config configs/two-linux.toml
                                       two Linux guests at once: one owns the UART, the other
                                       prints through hyp's virtual 16550 as [linux2] lines
  cargo xtask run --config configs/linux-hostile.toml
                                       Linux (AIA) next to the test guest in its hostile mode,
                                       which attacks it and hyp (ATTACK lines); -plic: vPLIC
  cargo xtask run --config configs/test.toml
                                       the bare-metal test guest (TEST lines, ACCT block)
  cargo xtask run --config configs/bench-aia.toml
                                       the system benchmark payload (guest/bench; VIRQ-BENCH lines,
                                       ACCT block); -plic: vPLIC. cargo xtask bench --system runs it
                                       with -icount on every target
  cargo xtask run --set machine.guest_files=1 --set guest.0.vcpus=4
                                       4 vCPUs on 2 harts with 1 guest file per hart:
                                       2 vCPUs on hardware files, 2 on software files
  cargo xtask run --config configs/test.toml --set guest.0.eoi=immediate
                                       the level-interrupt storm (test guest)
  cargo xtask run --set hyp.aia_flip_ms=20
                                       move every vCPU's interrupt file between hardware and
                                       software every 20 ms (hyp test knob)
  cargo xtask run --test-init          the non-interactive test /init instead of the shell
  cargo xtask run --append \"loglevel=4 foo=bar\"
                                       append to guest 0's kernel command line (the test /init
                                       prints /proc/cmdline)
  cargo xtask run --kernel-version V   another Debian 6.12 kernel; --kernel K --initramfs I
                                       boots your own images as guest 0 instead
  cargo xtask run --arch aarch64       configs/linux-arm64.toml: Debian arm64 Linux, 2 vCPUs on a
                                       vGICv3, 2 CPUs, qemu-system-aarch64 -M virt,virtualization=on,
                                       gic-version=3 -cpu max, the PL011; a shell
                                       (--test-init, --append, --set, --config work as above; a
                                       file's machine.arch = \"aarch64\" implies --arch aarch64)
  cargo xtask run --config configs/net-virtio-arm64.toml
                                       Debian arm64 on vgicv4 (gic-version=4) with virtio-net-pci
                                       passed through (SMMUv3): its MSIs are direct vLPIs; a shell
                                       with eth0 up (-e1000e-arm64: QEMU's e1000e)
  cargo xtask run --arch aarch64 --hello
                                       hyp's built-in EL1 test guest, no configuration (the suite's
                                       aarch64-hello)
  cargo xtask run ... --dry-run        build and place everything, print the QEMU command line and
                                       where each image goes, do not start QEMU";

/// `--arch`: a name of [`Arch`].
fn arch_arg() -> impl clap::builder::TypedValueParser<Value = Arch> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Arch::NAMES.iter().map(|(n, _)| *n))
        .map(|s: String| Arch::from_name(&s).expect("one of the listed names"))
}

/// Arguments of `cargo xtask run`.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = RUN_CONFIGS)]
pub struct RunArgs {
    /// The architecture (default: the configuration's `machine.arch`; without
    /// `--config`, riscv64). `aarch64` without `--config` boots
    /// configs/linux-arm64.toml; a `--config` file of the other architecture is refused.
    #[arg(long, value_parser = arch_arg())]
    pub arch: Option<Arch>,
    /// The guest configuration (TOML) to boot [default: configs/linux-aia.toml, with
    /// `--arch aarch64` configs/linux-arm64.toml].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// aarch64: hyp's built-in EL1 test guest instead of a configuration (hyp gets no
    /// `config=`; the QEMU suite's `aarch64-hello`).
    #[arg(long, conflicts_with_all = ["config", "sets", "test_init", "append", "kernel", "kernel_version", "immediate_eoi_build"])]
    pub hello: bool,
    /// Build and place everything and print the QEMU command line (and where each image
    /// goes), but do not start QEMU.
    #[arg(long)]
    pub dry_run: bool,
    /// Override one field of the configuration, `KEY.PATH=VALUE` (repeatable):
    /// `guest.0.vcpus=4`, `machine.harts=1`, `hyp.migrate_ms=20`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Linux guests run the non-interactive test `/init` (prints `/proc/interrupts`,
    /// runs an IPI workload, powers off) instead of a shell.
    #[arg(long)]
    pub test_init: bool,
    /// Build hyp with the `immediate_eoi` cargo feature (every guest completes level
    /// interrupts at claim; riscv64).
    #[arg(long)]
    pub immediate_eoi_build: bool,
    /// Text appended to guest 0's kernel command line.
    #[arg(long)]
    pub append: Option<String>,
    /// Debian kernel version to boot (e.g. `6.12.94+deb13`; default: the newest 6.12).
    #[arg(long, conflicts_with = "kernel")]
    pub kernel_version: Option<String>,
    /// Your own kernel `Image` as guest 0's (needs `--initramfs`).
    #[arg(long, requires = "initramfs")]
    pub kernel: Option<PathBuf>,
    /// Your own initramfs (newc cpio, optionally gzip) as guest 0's (needs `--kernel`).
    #[arg(long, requires = "kernel")]
    pub initramfs: Option<PathBuf>,
    /// Seconds before QEMU is killed (default: 60 for the test guest, 600 for Linux
    /// with the test `/init`, 3600 with a shell).
    #[arg(long)]
    pub timeout: Option<u64>,
}

/// The time limit of a configuration: the test guest alone is quick, Linux with the
/// test `/init` takes minutes under TCG, a shell is for a person.
fn default_timeout(file: &crate::config::File) -> u64 {
    let init = |which: &str| {
        file.guest
            .iter()
            .any(|g| g.initramfs.as_deref() == Some(which))
    };
    let net_shell = file.guest.iter().any(|g| {
        g.initramfs
            .as_deref()
            .and_then(crate::net::named_initramfs)
            .is_some_and(|(_, test)| !test)
    });
    if init("debian-shell") || net_shell {
        INTERACTIVE_TIMEOUT_S
    } else if file.guest.iter().all(|g| g.kernel == "testguest") {
        DEFAULT_TIMEOUT_S
    } else {
        LINUX_TIMEOUT_S
    }
}

/// The configuration `run` boots: `--config`, or the default of `--arch`.
fn config_path(args: &RunArgs) -> PathBuf {
    args.config.clone().unwrap_or_else(|| {
        PathBuf::from(match args.arch {
            Some(Arch::Aarch64) => DEFAULT_CONFIG_AARCH64,
            _ => DEFAULT_CONFIG,
        })
    })
}

/// The architecture of a run of `config` whose `machine.arch` is `file_arch`: the
/// file's, which `--arch` may repeat but not contradict.
fn run_arch(flag: Option<Arch>, config: &std::path::Path, file_arch: Arch) -> Result<Arch> {
    if let Some(a) = flag.filter(|a| *a != file_arch) {
        bail!(
            "{}: machine.arch = \"{}\", but --arch {} was given (leave --arch out to boot the file as it says)",
            config.display(),
            file_arch.name(),
            a.name()
        );
    }
    Ok(file_arch)
}

/// Boot a configuration file (default [`DEFAULT_CONFIG`], with `--arch aarch64`
/// [`DEFAULT_CONFIG_AARCH64`]; see [`RUN_CONFIGS`]).
pub fn run(args: &RunArgs) -> Result<()> {
    if args.hello {
        ensure!(
            args.arch != Some(Arch::Riscv64),
            "--hello boots hyp's built-in aarch64 test guest (--arch aarch64)"
        );
        return crate::arm::run_hello(args.timeout, args.dry_run);
    }
    let config = config_path(args);
    let (mut file, dir) = crate::config::load(&config, &args.sets)?;
    let arch = run_arch(args.arch, &config, file.machine.arch()?)?;
    match arch {
        Arch::Riscv64 => crate::setup::ensure_all()?,
        Arch::Aarch64 => {
            ensure!(
                !args.immediate_eoi_build,
                "--immediate-eoi-build: riscv64 only (set guest.N.eoi = \"immediate\" instead)"
            );
            crate::setup::ensure_arm().map(drop)?
        }
    }
    if args.test_init {
        crate::config::use_test_init(&mut file);
    }
    let g0 = file
        .guest
        .first_mut()
        .context("the configuration has no [[guest]]")?;
    if let Some(a) = &args.append {
        g0.cmdline = format!("{} {a}", g0.cmdline).trim().to_string();
    }
    if let (Some(k), Some(i)) = (&args.kernel, &args.initramfs) {
        let b = crate::images::user_images(k.clone(), i.clone())?;
        let abs = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
        g0.kernel = abs(b.kernel).display().to_string();
        g0.initramfs = Some(abs(b.initramfs).display().to_string());
    }
    let (hyp, testguest) = match arch {
        Arch::Riscv64 => {
            let img = build(args.immediate_eoi_build)?;
            (img.hyp, Some(img.guest_bin))
        }
        Arch::Aarch64 => (crate::arm::build()?, None),
    };
    let named = crate::config::NamedImages {
        testguest,
        kernel_version: args.kernel_version.clone(),
    };
    let name = config
        .file_stem()
        .map_or("run".into(), |s| s.to_string_lossy().to_string());
    let resolved = crate::config::resolve(&name, &file, &dir, &named)
        .with_context(|| format!("{}", config.display()))?;
    let timeout = args.timeout.unwrap_or(default_timeout(&file));
    let m = resolved.machine(Duration::from_secs(timeout), &[])?;
    let mut cmd = m.command_for(&hyp);
    eprint!("{}", resolved.placement());
    eprintln!("$ {cmd:?}");
    if args.dry_run {
        return Ok(());
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", cmd.get_program().to_string_lossy()))?;
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() > m.timeout {
            kill(&mut child);
            bail!("QEMU did not stop within {timeout} s (killed)");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "QEMU exited with {status} after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    ensure!(
        status.success(),
        "the guest reported failures (QEMU {status})"
    );
    Ok(())
}

/// The `ACCT guest=… claims=N guest_completes=M …` line of the passthrough UART.
fn acct_claims(out: &str) -> Option<(u64, u64)> {
    let line = out.lines().find(|l| {
        l.starts_with("ACCT guest=") && l.contains(" pirq=10 ") && l.contains(" guest_completes=")
    })?;
    let field = |k: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
    };
    Some((field("claims")?, field("guest_completes")?))
}

/// One case of the suite: a configuration file with overrides, and what must show.
#[derive(Clone)]
struct Case {
    name: &'static str,
    /// The configuration it boots.
    cfg: crate::config::Resolved,
    machine: Machine,
    /// `Some(true)`: the storm must show (claims > 10 per completion);
    /// `Some(false)`: exactly one claim per completion.
    storm: Option<bool>,
    /// A Linux guest on the AIA topology: what its `ACCT … aia` lines must show.
    aia: Option<AiaExpect>,
    /// The guest runs the ping-pong (`crate::pingpong`) instead of the test `/init`:
    /// `(laps, cpus)` it must complete with no lap over 100 ms.
    pingpong: Option<(u64, u32)>,
    /// Text appended to guest 0's command line that must reach its `/proc/cmdline`.
    append: Option<&'static str>,
    /// hyp must refuse the configuration with an error naming this field.
    refused: Option<&'static str>,
}

/// What an AIA Linux case must show in hyp's accounting.
#[derive(Clone, Copy, Debug)]
struct AiaExpect {
    /// vCPUs on hardware guest files at the end (with `flips`: only `hw + sw` counts).
    hw: u64,
    /// vCPUs on software files at the end.
    sw: u64,
    /// The run moves files between hardware and software (`aia_flip_ms`).
    flips: bool,
    /// The run migrates vCPUs between harts (`migrate_ms`): a file leaves its hart
    /// through software, so the shutdown split and the trapped MSIs vary.
    migrates: bool,
}

/// The `key=value` numbers of the first output line starting with `prefix`.
fn acct_line<'a>(out: &'a str, prefix: &str) -> Option<Vec<(&'a str, u64)>> {
    let line = out.lines().find(|l| l.starts_with(prefix))?;
    Some(
        line.split_whitespace()
            .filter_map(|t| {
                let (k, v) = t.split_once('=')?;
                Some((k, v.parse().ok()?))
            })
            .collect(),
    )
}

fn field(fields: &[(&str, u64)], k: &str) -> Result<u64> {
    fields
        .iter()
        .find(|(n, _)| *n == k)
        .map(|(_, v)| *v)
        .with_context(|| format!("ACCT field {k} missing"))
}

/// Check an AIA Linux run against `e` and summarise it: hardware/software files, the
/// IPIs and UART interrupts Linux counted (last `/proc/interrupts`) against the ones
/// that went through hyp (SBI IPI calls, trapped IMSIC-page MSIs, vAPLIC re-triggers).
fn check_aia(out: &str, e: AiaExpect) -> Result<String> {
    let a = acct_line(out, "ACCT guest=linux aia files_hw=").context("no ACCT aia line")?;
    let sbi = acct_line(out, "ACCT guest=linux sbi_ipi_calls=").context("no ACCT sbi line")?;
    let src = acct_line(out, "ACCT guest=linux aia pirq=10 ").context("no ACCT aia pirq line")?;
    let (hw, sw) = (field(&a, "files_hw")?, field(&a, "files_sw")?);
    // With `aia_flip_ms` the split at shutdown depends on the flip phase.
    let split_ok = if e.flips || e.migrates {
        hw + sw == e.hw + e.sw
    } else {
        (hw, sw) == (e.hw, e.sw)
    };
    ensure!(
        split_ok,
        "interrupt files: {hw} hardware, {sw} software; expected {} and {}",
        e.hw,
        e.sw
    );
    let sbi_ipis = field(&sbi, "sbi_ipi_calls")?;
    ensure!(
        sbi_ipis == 0,
        "{sbi_ipis} SBI IPI calls: Linux should send its IPIs through the IMSIC"
    );
    let page_traps = field(&a, "imsic_page_traps")?;
    let sw_msis = field(&a, "msis_to_sw_files")?;
    let csr_traps = field(&a, "csr_traps")?;
    let hyp_claims = field(&src, "hyp_claims")?;
    if e.migrates && !e.flips {
        // Trapped MSIs happen only while a file is between harts: no requirement.
    } else if e.sw == 0 && !e.flips {
        ensure!(
            page_traps == 0 && sw_msis == 0 && csr_traps == 0 && hyp_claims == 0,
            "hardware files only, yet {page_traps} trapped IMSIC-page MSIs, {sw_msis} MSIs \
             into software files, {csr_traps} emulated IMSIC CSR accesses, {hyp_claims} \
             UART MSIs claimed by hyp"
        );
    } else {
        ensure!(
            page_traps > 0 && csr_traps > 0,
            "software files, yet no trapped IMSIC-page MSI ({page_traps}) or emulated IMSIC \
             CSR access ({csr_traps})"
        );
    }
    if e.flips {
        let (to_hw, to_sw) = (field(&a, "to_hw")?, field(&a, "to_sw")?);
        ensure!(
            to_sw > 0 && to_hw > e.hw,
            "aia_flip_ms: {to_hw} moves to hardware, {to_sw} to software"
        );
    }
    let dump = crate::guestcheck::last_dump(out).context("no /proc/interrupts dump")?;
    let ipis: u64 = dump.sum(|n, _| n.starts_with("IPI")).iter().sum();
    let uart: u64 = dump.sum(|_, d| d.contains("ttyS0")).iter().sum();
    let retriggers = field(&src, "retriggers")?;
    Ok(format!(
        "aia: {hw} hw + {sw} sw files, to_hw {} to_sw {}; {ipis} IPIs: {sbi_ipis} SBI calls, \
         {page_traps} trapped page MSIs; {uart} UART irqs: {retriggers} setipnum traps, \
         {hyp_claims} claimed by hyp; {} SGEI doorbells",
        field(&a, "to_hw")?,
        field(&a, "to_sw")?,
        field(&a, "sgei_kicks")?
    ))
}

fn check(case: &Case, o: &Outcome) -> Result<(usize, u64, u64)> {
    ensure!(
        !o.timed_out,
        "timed out after {:.0} s",
        o.elapsed.as_secs_f64()
    );
    let passed = if let Some((rounds, cpus)) = case.pingpong {
        // The lost-wake-up detector: every lap within 100 ms.
        let r = crate::pingpong::check(&o.output, rounds, cpus)?;
        println!(
            "      {} laps round {cpus} CPUs: 0 over 100 ms, worst {:.1} ms, mean {} us, {} over 10 ms",
            r.rounds,
            r.worst_us as f64 / 1000.0,
            r.mean_us,
            r.over_10ms
        );
        1
    } else if let Some(field) = case.refused {
        // hyp re-validates the blob: a bad one stops it before any guest runs.
        let want = format!("hyp: configuration error: {field}: ");
        ensure!(
            o.output.contains(&want),
            "hyp did not refuse the configuration with {want:?}"
        );
        ensure!(
            !o.output.contains("hyp: hart ") && o.status == Some(0xff),
            "hyp started anyway (QEMU exit status {:?})",
            o.status
        );
        return Ok((0, 0, 0));
    } else if case.cfg.guest("linux").is_some() {
        // Debian's kernel with the test /init: it must reach the end and power off,
        // with timer, IPIs and the UART counting on every CPU (crate::guestcheck).
        // With two guests, the second one's lines carry its prefix (its console is
        // hyp's emulated UART, which has no interrupt).
        let hostile = case.cfg.guest("hostile").is_some();
        let prefix = if hostile {
            HOSTILE_PREFIX
        } else {
            LINUX2_PREFIX
        };
        let (mut own, second) = crate::guestcheck::split_prefixed(&o.output, prefix);
        if hostile {
            own = cut_interjection(&own, HOSTILE_STOPPED);
            println!("      {}", check_hostile(&o.output, &own, &second)?);
        }
        let mut guests = vec![("linux", own, true)];
        if case.cfg.guest("linux2").is_some() {
            guests.push(("linux2", second, false));
        }
        if let Some(e) = case.aia {
            println!("      {}", check_aia(&o.output, e)?);
        }
        if case.cfg.config.hyp.migrate_ms > 0 {
            let m = acct_line(&o.output, "ACCT migrations=").context("no ACCT migrations line")?;
            let n = field(&m, "migrations")?;
            ensure!(n > 0, "migrate_ms: no vCPU migrated");
            println!("      {n} vCPU migrations between harts");
        }
        if let Some(want) = case.append {
            // `--append`: the text must reach the (first) guest's /proc/cmdline.
            let cmdline = guests[0]
                .1
                .lines()
                .find_map(|l| l.strip_prefix("VIRQ-CMDLINE "))
                .context("no VIRQ-CMDLINE line")?;
            ensure!(
                cmdline.contains(want),
                "/proc/cmdline {cmdline:?} lacks the appended {want:?}"
            );
            println!("      /proc/cmdline: {cmdline}");
        }
        // Linux found SBI SUSP (it offers suspend to RAM).
        if let Some(states) = guests[0]
            .1
            .lines()
            .find_map(|l| l.strip_prefix("VIRQ-SLEEP-STATES"))
        {
            ensure!(
                states.split_whitespace().any(|s| s == "mem"),
                "/sys/power/state {states:?}: no mem (SBI SUSP not found)"
            );
        }
        if case.cfg.config.hyp.guest_idle == hyp_config::GuestIdle::Sbi {
            println!("      {}", check_idle(&guests[0].1)?);
        }
        for (name, out, uart) in &guests {
            let f = crate::guestcheck::check_linux(out, *uart, crate::guestcheck::RISCV64_ROWS)
                .with_context(|| format!("guest {name}"))?;
            ensure!(
                out.contains("VIRQ-INIT-DONE"),
                "{name} did not print VIRQ-INIT-DONE"
            );
            println!(
                "      {name}: {} CPUs, IPIs per CPU during the workload {:?}, UART interrupts per CPU {:?}",
                f.cpus, f.ipis, f.uart
            );
        }
        guests.len()
    } else {
        let tests: Vec<&str> = o
            .output
            .lines()
            .filter(|l| l.starts_with("TEST "))
            .collect();
        let failed: Vec<&&str> = tests.iter().filter(|l| l.contains("... FAIL")).collect();
        ensure!(failed.is_empty(), "failing tests: {failed:?}");
        let passed = tests.iter().filter(|l| l.ends_with("... PASS")).count();
        ensure!(passed >= 8, "only {passed} tests passed");
        ensure!(
            o.output.contains("testguest: ") && o.output.contains(" 0 failed"),
            "no guest summary"
        );
        passed
    };
    ensure!(
        o.status == Some(0),
        "QEMU exit status {:?} (the guest's failure count)",
        o.status
    );
    // `machine.aclint`: hyp's own IPIs go through the SSWI (a lost one would stall the
    // vCPUs that wait for it: the guest's checks above).
    if case.cfg.machine.aclint {
        ensure!(
            o.output.contains("hyp: IPIs through the ACLINT SSWI"),
            "machine.aclint: hyp did not take its IPIs to the ACLINT SSWI"
        );
    }
    // Seed 001's release at guest stop: the route is released and the source disabled.
    ensure!(
        o.output.contains("hyp: released pirq "),
        "hyp did not release the guest's passthrough route when it stopped"
    );
    let (claims, completes) = acct_claims(&o.output).context("no ACCT claims line")?;
    match case.storm {
        Some(true) => ensure!(
            claims > 10 * completes.max(1),
            "immediate EOI: expected a storm, got {claims} claims / {completes} completions"
        ),
        Some(false) => ensure!(
            claims == completes,
            "deferred EOI: {claims} claims / {completes} completions"
        ),
        None => {}
    }
    Ok((passed, claims, completes))
}

/// The attacks every hostile run must report (`hyp/testguest/src/hostile.rs`).
const ATTACKS: &[&str] = &[
    "imsic_s_files",
    "imsic_m_files",
    "phys_irqchip",
    "foreign_ram",
    "own_intc",
    "sbi_ipi_foreign",
    "sbi_rfence_foreign",
    "hsm_foreign",
    "dbcn_outside_ram",
    "srst_susp_odd",
    "sbi_misc",
    "console_spoof",
    "storm",
    "hyp_alive",
    "siege",
];

/// hyp's line when the hostile guest stops (followed by its status).
const HOSTILE_STOPPED: &str = "hyp: guest 1 \"hostile\" shut down, status ";

/// `out` without hyp's line starting with `marker` (up to its newline). hyp prints
/// through the firmware's console, the UART that the Linux guest drives itself: the
/// line can land in the middle of one of Linux's lines (e.g. inside a
/// `/proc/interrupts` row), which is then joined again.
fn cut_interjection(out: &str, marker: &str) -> String {
    match out.find(marker) {
        Some(at) => {
            let end = out[at..].find('\n').map_or(out.len(), |e| at + e + 1);
            format!("{}{}", &out[..at], &out[end..])
        }
        None => out.to_string(),
    }
}

/// Words in a Linux console that mean an interrupt it did not expect.
const LINUX_IRQ_COMPLAINTS: &[&str] = &[
    "Failed to handle interrupt",
    "vector not found",
    "spurious",
    "nobody cared",
    "unexpected IRQ",
    "BUG:",
    "Oops",
    "WARNING:",
];

/// A Linux guest next to the hostile test guest: every attack reported its expected
/// result, the attacker stopped cleanly (status 0) while hyp ran on, and the Linux
/// guest (`linux`: its console without the attacker's prefixed lines) saw nothing of
/// it: no attacker text in its console, no interrupt complaint, `ERR: 0`, and — the
/// isolation claim, counted by hyp — every SBI IPI that reached a guest's vCPUs was
/// sent by that guest (`sbi_ipis_in` = `sbi_ipi_targets`, per guest) and no SBI request
/// named a vCPU of another guest (`foreign_in` = 0).
fn check_hostile(out: &str, linux: &str, hostile: &str) -> Result<String> {
    let attacks: Vec<&str> = hostile
        .lines()
        .filter(|l| l.starts_with("ATTACK "))
        .collect();
    let failed: Vec<&&str> = attacks
        .iter()
        .filter(|l| !l.contains(" ... PASS"))
        .collect();
    ensure!(
        failed.is_empty(),
        "attacks with unexpected results: {failed:?}"
    );
    for name in ATTACKS {
        ensure!(
            attacks
                .iter()
                .any(|l| l.starts_with(&format!("ATTACK {name} ... PASS"))),
            "attack {name} not reported"
        );
    }
    ensure!(
        hostile.contains(&format!(
            "hostile: {} attacks passed, 0 failed",
            ATTACKS.len()
        )),
        "no clean summary from the hostile guest"
    );
    ensure!(
        out.contains(&format!("{HOSTILE_STOPPED}0")),
        "the hostile guest did not shut down with status 0"
    );
    for l in linux.lines() {
        ensure!(
            !l.contains("spoof") && !l.contains("ATTACK") && !l.starts_with("hostile:"),
            "the attacker's text reached the Linux console: {l:?}"
        );
        if let Some(w) = LINUX_IRQ_COMPLAINTS.iter().find(|w| l.contains(*w)) {
            bail!("Linux complains ({w}): {l:?}");
        }
        if let Some(err) = l.trim_start().strip_prefix("ERR:") {
            ensure!(err.trim() == "0", "Linux counted interrupt errors: {l:?}");
        }
    }
    let mut summary = Vec::new();
    for g in ["linux", "hostile"] {
        let f = acct_line(out, &format!("ACCT guest={g} sbi_ipi_calls="))
            .with_context(|| format!("no ACCT sbi line of {g}"))?;
        let (into, sent) = (field(&f, "sbi_ipis_in")?, field(&f, "sbi_ipi_targets")?);
        let foreign = field(&f, "foreign_in")?;
        ensure!(
            foreign == 0,
            "{foreign} SBI requests of another guest named vCPUs of {g}"
        );
        ensure!(
            into == sent,
            "{g}: {into} SBI IPIs reached its vCPUs, it sent {sent}"
        );
        summary.push(format!("{g} {into} SBI IPIs in = sent"));
    }
    // Where in Linux's run the siege ended (information: it depends on the load).
    let at = |m: &str| out.find(m);
    let stop = at("hyp: guest 1 \"hostile\" shut down");
    let until = if stop > at("hyp: guest 0 \"linux\" shut down") {
        "after Linux stopped"
    } else if stop > at("VIRQ-INIT-START") {
        "during Linux's test /init"
    } else {
        "during Linux's boot"
    };
    Ok(format!(
        "hostile: {} attacks as expected, siege ended {until}; {}; foreign_in 0",
        attacks.len(),
        summary.join(", ")
    ))
}

/// With `[hyp] guest_idle = "sbi"`: Linux entered both of hyp's idle states (`VIRQ-IDLE
/// cpuN/stateM NAME USAGE` lines of the test `/init`), i.e. idled through HSM
/// `hart_suspend`, retentive and non-retentive, and came back each time.
fn check_idle(out: &str) -> Result<String> {
    let mut used = std::collections::BTreeMap::<&str, u64>::new();
    for l in out.lines().filter_map(|l| l.strip_prefix("VIRQ-IDLE ")) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if let [_, name, usage] = f[..] {
            *used.entry(name).or_default() += usage.parse::<u64>().unwrap_or(0);
        }
    }
    for state in ["cpu-ret", "cpu-nonret"] {
        ensure!(
            used.get(state).copied().unwrap_or(0) > 0,
            "idle state {state} never entered: {used:?}"
        );
    }
    Ok(format!("SBI idle states entered (all CPUs): {used:?}"))
}

/// The second guest's console lines (hyp's virtual 16550) carry `[name] `.
const LINUX2_PREFIX: &str = "[linux2] ";
const HOSTILE_PREFIX: &str = "[hostile] ";

/// Run the QEMU test suite.
pub fn qemu_tests() -> Result<()> {
    let suite = Instant::now();
    // hyp on aarch64 first (`crate::arm::CASES`: the built-in guest, about a second,
    // and Debian arm64 Linux); a failure is counted and the RISC-V cases run on.
    let only = std::env::var("VIRQ_QEMU_CASE").ok();
    let names: Vec<&str> = only
        .as_deref()
        .map(|o| o.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let skip_linux = std::env::var_os("VIRQ_SKIP_LINUX").is_some();
    let (arm, arm_only) = arm_selection(only.as_deref(), skip_linux);
    let (mut ok, mut bad) = arm_cases(&arm);
    if arm_only {
        println!("qemu suite: {:.1} s", suite.elapsed().as_secs_f64());
        println!("qemu: {ok} passed, {bad} failed");
        ensure!(bad == 0, "{bad} QEMU configuration(s) failed");
        return Ok(());
    }
    crate::setup::ensure_all()?;
    let img = build(false)?;
    let images = crate::config::NamedImages {
        testguest: Some(img.guest_bin.clone()),
        kernel_version: None,
    };
    let mut cases = Vec::new();
    let mut add = |name: &'static str,
                   file: &str,
                   sets: &[&str],
                   timeout_s: u64,
                   storm: Option<bool>,
                   aia: Option<AiaExpect>|
     -> Result<()> {
        let cfg = crate::config::suite(name, file, sets, &images)?;
        let machine = cfg.machine(Duration::from_secs(timeout_s), &[])?;
        cases.push(Case {
            name,
            cfg,
            machine,
            storm,
            aia,
            pingpong: None,
            append: None,
            refused: None,
        });
        Ok(())
    };
    let t = DEFAULT_TIMEOUT_S;
    // The test guest on the vPLIC, in several machine shapes; on an AIA machine its
    // UART goes through the host APLIC (MSI mode) into hyp's S-level IMSIC file.
    for (name, sets, storm) in [
        ("smp1", &["machine.harts=1"][..], false),
        ("smp2", &[][..], false),
        (
            "smp4-vcpus4",
            &["machine.harts=4", "guest.0.vcpus=4"][..],
            false,
        ),
        (
            "smp1-vcpus3",
            &["machine.harts=1", "guest.0.vcpus=3"][..],
            false,
        ),
        ("smp2-vcpus5", &["guest.0.vcpus=5"][..], false),
        ("smp2-storm", &["guest.0.eoi=immediate"][..], true),
        ("aia-smp2", &["machine.interrupts=aia"][..], false),
        (
            "aia-smp2-storm",
            &["machine.interrupts=aia", "guest.0.eoi=immediate"][..],
            true,
        ),
    ] {
        add(name, "test", sets, t, Some(storm), None)?;
    }
    if std::env::var_os("VIRQ_SKIP_LINUX").is_none() {
        let t = LINUX_TIMEOUT_S;
        // Linux idles through SBI HSM suspend (hyp's DT idle states).
        add(
            "linux-smp2",
            "linux",
            &["hyp.guest_idle=sbi"],
            t,
            Some(false),
            None,
        )?;
        add(
            "linux-smp1-vcpus2",
            "linux",
            &["machine.harts=1"],
            t,
            Some(false),
            None,
        )?;
        // The second guest's console lines are printed after both stopped, so they
        // cannot interleave with the first guest's.
        add(
            "linux-two-guests",
            "two-linux",
            &["hyp.vuart=deferred"],
            t,
            Some(false),
            None,
        )?;
        // Linux (vPLIC) next to the hostile test guest (docs/hyp.md "Isolation").
        add(
            "linux-hostile-plic",
            "linux-hostile-plic",
            &[],
            t,
            Some(false),
            None,
        )?;
        // vCPUs moving between harts on the vPLIC (the UART stays on hart 0), on a host
        // whose harts have an ACLINT SSWI: every kick of a migration is hyp's IPI by a
        // store (`arch::use_sswi_ipis`), not an SBI call.
        add(
            "linux-smp2-migrate",
            "linux",
            &["hyp.migrate_ms=20", "machine.aclint=true"],
            t,
            Some(false),
            None,
        )?;
        // Linux on the AIA topology: hardware guest files for every vCPU (2 on 2 harts,
        // 4 on 4 harts, 4 taking turns on 2 harts), too few files (1 per hart for 2
        // vCPUs per hart: 2 vCPUs fall back to software files), files moving
        // between hardware and software every 20 ms, and vCPUs (with their files)
        // moving between harts every 20 ms. No hyp claims on the AIA path: the guest's
        // re-triggers end its interrupts (checked by `check_aia`).
        let hw = |n| AiaExpect {
            hw: n,
            sw: 0,
            flips: false,
            migrates: false,
        };
        for (name, file, sets, expect) in [
            ("linux-aia-smp2", "linux-aia", &[][..], hw(2)),
            (
                "linux-aia-smp4-vcpus4",
                "linux-aia",
                &[
                    "machine.harts=4",
                    "machine.guest_files=1",
                    "guest.0.vcpus=4",
                ][..],
                hw(4),
            ),
            (
                "linux-aia-smp2-vcpus4",
                "linux-aia",
                &["guest.0.vcpus=4"][..],
                hw(4),
            ),
            (
                "linux-aia-smp2-vcpus4-sw",
                "linux-aia",
                &["machine.guest_files=1", "guest.0.vcpus=4"][..],
                AiaExpect {
                    hw: 2,
                    sw: 2,
                    flips: false,
                    migrates: false,
                },
            ),
            (
                "linux-aia-flip",
                "linux-aia",
                &["hyp.aia_flip_ms=20"][..],
                AiaExpect {
                    flips: true,
                    ..hw(2)
                },
            ),
            ("linux-hostile", "linux-hostile", &[][..], hw(2)),
            (
                "linux-aia-migrate",
                "linux-aia",
                &["hyp.migrate_ms=20"][..],
                AiaExpect {
                    migrates: true,
                    ..hw(2)
                },
            ),
        ] {
            add(name, file, sets, t, None, Some(expect))?;
        }
        // The default configuration also checks `--append` end to end.
        let append = "virq.append=linux-aia-smp2";
        let c = cases.iter_mut().find(|c| c.name == "linux-aia-smp2");
        if let Some(c) = c {
            c.cfg.config.guests[0].cmdline += &format!(" {append}");
            c.machine = c.cfg.machine(Duration::from_secs(t), &[])?;
            c.append = Some(append);
        }
    }
    // hyp checks the blob again (it is input): a configuration xtask would refuse,
    // written past xtask's checks, must stop hyp with an error naming the field.
    for (name, field, damage) in [
        (
            "refused-vcpus",
            "guest[0].vcpus",
            (|c: &mut hyp_config::Config| c.guests[0].vcpus = 9) as fn(&mut hyp_config::Config),
        ),
        ("refused-two-uart-owners", "guest[1].devices", |c| {
            let mut second = c.guests[0].clone();
            second.name = "second".into();
            second.ram_host_base += 64 << 20;
            c.guests.push(second);
        }),
    ] {
        let mut cfg = crate::config::suite(name, "test", &[], &images)?;
        damage(&mut cfg.config);
        let machine = cfg.machine(Duration::from_secs(DEFAULT_TIMEOUT_S), &[])?;
        cases.push(Case {
            name,
            cfg,
            machine,
            storm: None,
            aia: None,
            pingpong: None,
            append: None,
            refused: Some(field),
        });
    }
    if std::env::var_os("VIRQ_SKIP_LINUX").is_none() {
        // Lost wake-ups (issue 12): the short version of `cargo xtask soak` — the
        // ping-pong on the default AIA configuration (hardware files, vCPUs blocking in
        // WFI with their doorbells armed), on software files with 4 vCPUs on 2 harts, with
        // `wfi = "direct"`, and on the vPLIC with hyp's IPIs through an ACLINT SSWI.
        for (name, config, rounds) in [
            ("pingpong-aia", "aia", PINGPONG_LAPS),
            ("pingpong-aia-sw-vcpus4", "aia-sw-vcpus4", PINGPONG_LAPS / 8),
            ("pingpong-aia-direct", "aia-direct", PINGPONG_LAPS / 4),
            // A PLIC host with an ACLINT SSWI: hyp's kicks are stores into it.
            ("pingpong-vplic-aclint", "vplic-aclint", PINGPONG_LAPS / 4),
        ] {
            let c = crate::soak::config(config)?;
            let boot = crate::pingpong::boot_images(rounds, c.cpus)?;
            let timeout = crate::soak::default_timeout(rounds, c.cpus);
            let (cfg, machine) = c.machine(name, &boot, &images, timeout)?;
            cases.push(Case {
                name,
                cfg: cfg.context("the suite's ping-pong runs under hyp")?,
                machine,
                storm: None,
                aia: None,
                pingpong: Some((rounds, c.cpus)),
                append: None,
                refused: None,
            });
        }
    }
    // The IOMMU cases (`crate::iommu`): edu DMA through hyp's IOMMU driver.
    let iommu_cases = crate::iommu::selection(only.as_deref());
    // The network cases (`crate::net`): Linux with a NIC on bare QEMU.
    let net_cases = if skip_linux {
        Vec::new()
    } else {
        crate::net::selection(only.as_deref())
    };
    // `VIRQ_QEMU_CASE=a,b`: only the cases with these names.
    if let Some(only) = &only {
        cases.retain(|c| names.contains(&c.name));
        ensure!(
            !cases.is_empty() || !iommu_cases.is_empty() || !net_cases.is_empty(),
            "VIRQ_QEMU_CASE={only}: no such case"
        );
    }
    let (o, b) = crate::iommu::run_cases(&iommu_cases, &img, &images);
    (ok, bad) = (ok + o, bad + b);
    let (o, b) = crate::net::run_cases(&net_cases);
    (ok, bad) = (ok + o, bad + b);
    for case in &cases {
        let probe = crate::soak::HostProbe::start();
        let mut o = run_qemu(&case.machine, &img, false)?;
        let host_worst = probe.finish();
        let mut result = check(case, &o);
        // Guest time is host time under TCG: a ping-pong lap over 100 ms while the host
        // itself kept a thread off the CPU that long may be the host's. Such a case runs
        // once more; a lost wake-up (about one per 1,000–2,000 laps) fails it again.
        if let (Some(_), Err(e)) = (case.pingpong, &result) {
            if host_worst.as_micros() as u64 > crate::pingpong::SLOW_US {
                println!(
                    "qemu {:<18} again: {e:#}, but the host stalled a thread for {} ms",
                    case.name,
                    host_worst.as_millis()
                );
                save_log(&format!("{}-first", case.name), &o.output)?;
                o = run_qemu(&case.machine, &img, false)?;
                result = check(case, &o);
            }
        }
        let log = save_log(case.name, &o.output)?;
        match result {
            Ok((passed, claims, completes)) => {
                ok += 1;
                println!(
                    "qemu {:<18} ok    {passed:>2} guest tests, {claims} claims / {completes} completions, {:.1} s",
                    case.name,
                    o.elapsed.as_secs_f64()
                );
            }
            Err(e) => {
                bad += 1;
                println!(
                    "qemu {:<18} FAIL  {e:#} ({:.1} s, log {})",
                    case.name,
                    o.elapsed.as_secs_f64(),
                    log.display()
                );
                print_tail(&o.output);
            }
        }
    }
    println!("qemu suite: {:.1} s", suite.elapsed().as_secs_f64());
    println!("qemu: {ok} passed, {bad} failed");
    ensure!(bad == 0, "{bad} QEMU configuration(s) failed");
    Ok(())
}

/// The last 15 lines of a failed case's console.
fn print_tail(out: &str) {
    let lines: Vec<&str> = out.lines().collect();
    for l in &lines[lines.len().saturating_sub(15)..] {
        println!("    | {l}");
    }
}

/// The aarch64 cases (`crate::arm::CASES`) to run for `VIRQ_QEMU_CASE` = `only` (all
/// without it; not `aarch64-linux` with `VIRQ_SKIP_LINUX`), and whether `only` names
/// aarch64 cases alone (then the riscv64 suite is not built or run).
fn arm_selection(only: Option<&str>, skip_linux: bool) -> (Vec<&'static str>, bool) {
    let names: Vec<&str> = only
        .map(|o| o.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let cases = crate::arm::CASES
        .iter()
        .copied()
        .filter(|c| only.is_none() || names.contains(c))
        .filter(|c| !(skip_linux && c.contains("linux")))
        .collect();
    let arm_only = !names.is_empty() && names.iter().all(|n| crate::arm::CASES.contains(n));
    (cases, arm_only)
}

/// Run the aarch64 `cases`, printing a line each: `(passed, failed)`.
fn arm_cases(cases: &[&str]) -> (usize, usize) {
    let (mut ok, mut bad) = (0, 0);
    for &name in cases {
        let _ = std::fs::remove_file(log_path(name));
        match crate::arm::run_case(name) {
            Ok(summary) => {
                ok += 1;
                println!("qemu {name:<18} ok    {summary}");
            }
            Err(e) => {
                bad += 1;
                println!("qemu {name:<18} FAIL  {e:#}");
                if let Ok(out) = std::fs::read_to_string(log_path(name)) {
                    print_tail(&out);
                }
            }
        }
    }
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `run`'s arguments, parsed as clap would.
    fn run_args(args: &[&str]) -> Result<RunArgs, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let argv = std::iter::once("run").chain(args.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).map(|c| c.run)
    }

    #[test]
    fn the_config_and_the_arch_of_a_run() {
        let path = |a: &[&str]| config_path(&run_args(a).unwrap());
        assert_eq!(path(&[]), PathBuf::from(DEFAULT_CONFIG));
        assert_eq!(path(&["--arch", "riscv64"]), PathBuf::from(DEFAULT_CONFIG));
        assert_eq!(
            path(&["--arch", "aarch64"]),
            PathBuf::from(DEFAULT_CONFIG_AARCH64)
        );
        assert_eq!(
            path(&["--arch", "aarch64", "--config", "my.toml"]),
            PathBuf::from("my.toml")
        );
        assert!(run_args(&["--arch", "arm64"]).is_err());
        // The file's machine.arch decides; --arch may repeat it, not contradict it.
        let p = std::path::Path::new("configs/linux-arm64.toml");
        assert_eq!(run_arch(None, p, Arch::Aarch64).unwrap(), Arch::Aarch64);
        assert_eq!(
            run_arch(Some(Arch::Aarch64), p, Arch::Aarch64).unwrap(),
            Arch::Aarch64
        );
        let e = run_arch(Some(Arch::Riscv64), p, Arch::Aarch64).unwrap_err();
        assert!(
            e.to_string().contains(
                "configs/linux-arm64.toml: machine.arch = \"aarch64\", but --arch riscv64"
            ),
            "{e}"
        );
    }

    #[test]
    fn hello_is_the_builtin_guest_alone() {
        let a = run_args(&["--arch", "aarch64", "--hello", "--dry-run"]).unwrap();
        assert!(a.hello && a.dry_run);
        for other in [
            &["--hello", "--config", "x.toml"][..],
            &["--hello", "--test-init"],
            &["--hello", "--set", "guest.0.vcpus=1"],
            &["--hello", "--append", "x"],
        ] {
            assert!(run_args(other).is_err(), "{other:?}");
        }
    }

    #[test]
    fn the_suite_runs_the_aarch64_cases_first_or_alone() {
        assert_eq!(
            arm_selection(None, false),
            (
                vec![
                    "aarch64-hello",
                    "aarch64-testguest",
                    "aarch64-testguest-storm",
                    "aarch64-gicv4",
                    "aarch64-gicv4-migrate",
                    "aarch64-iommu-edu",
                    "aarch64-linux",
                    "aarch64-linux-smp4",
                    "aarch64-linux-overcommit",
                    "aarch64-linux-gicv4",
                    "aarch64-linux-migrate",
                    "aarch64-two-linux",
                    "aarch64-linux-net-virtio",
                    "aarch64-linux-net-e1000e"
                ],
                false
            )
        );
        assert_eq!(
            arm_selection(None, true),
            (
                vec![
                    "aarch64-hello",
                    "aarch64-testguest",
                    "aarch64-testguest-storm",
                    "aarch64-gicv4",
                    "aarch64-gicv4-migrate",
                    "aarch64-iommu-edu"
                ],
                false
            )
        );
        assert_eq!(
            arm_selection(Some("aarch64-linux"), false),
            (vec!["aarch64-linux"], true)
        );
        assert_eq!(
            arm_selection(Some("aarch64-hello, aarch64-linux"), false),
            (vec!["aarch64-hello", "aarch64-linux"], true)
        );
        assert_eq!(
            arm_selection(Some("aarch64-linux,smp1"), false),
            (vec!["aarch64-linux"], false)
        );
        assert_eq!(arm_selection(Some("smp1"), false), (vec![], false));
    }

    #[test]
    fn acct_line_is_parsed() {
        let out = "x\nACCT guest=linux aia pirq=10 virq=10 retriggers=72 hyp_claims=0\nACCT guest=testguest pirq=10 virq=10 claims=5504 guest_completes=7 storm_masks=1 eoi=immediate\n";
        assert_eq!(acct_claims(out), Some((5504, 7)));
    }

    /// The whole QEMU suite on its own: `cargo test -p xtask -- --ignored qemu_suite`.
    #[test]
    #[ignore = "boots QEMU; run explicitly"]
    fn qemu_suite() {
        qemu_tests().unwrap();
    }

    const AIA_OUT: &str = "\
           CPU0       CPU1
 11:         17          4  APLIC-MSI-d000000.interrupt-controller  10 Level   -fasteoi   ttyS0
IPI0:        53         65  Rescheduling interrupts
IPI1:       329        248  Function call interrupts
VIRQ-INIT-DONE
ACCT guest=linux sbi_ipi_calls=0 sbi_rfence_calls=0
ACCT guest=linux pirq=10 virq=10 claims=0 guest_completes=0 storm_masks=0 eoi=deferred
ACCT guest=linux aia files_hw=2 files_sw=0 to_hw=2 to_sw=0 imsic_page_traps=0 msis_to_sw_files=0 msis_to_hw_files_by_hyp=0 csr_traps=0 iprio_traps=0 sgei=473 sgei_kicks=473 aplic_reads=2 aplic_writes=273 aplic_forwards=0
ACCT guest=linux aia pirq=10 virq=10 retriggers=71 hyp_claims=0 phys_target=0x41002 enabled=true
";

    #[test]
    fn aia_hardware_run_passes_and_counts_ipis() {
        let e = AiaExpect {
            hw: 2,
            sw: 0,
            flips: false,
            migrates: false,
        };
        let s = check_aia(AIA_OUT, e).unwrap();
        assert!(
            s.contains("695 IPIs: 0 SBI calls, 0 trapped page MSIs"),
            "{s}"
        );
        assert!(s.contains("21 UART irqs: 71 setipnum traps"), "{s}");
    }

    #[test]
    fn aia_software_path_or_sbi_ipis_on_hardware_files_fail() {
        let e = AiaExpect {
            hw: 2,
            sw: 0,
            flips: false,
            migrates: false,
        };
        let trapped = AIA_OUT.replace("imsic_page_traps=0", "imsic_page_traps=5");
        assert!(check_aia(&trapped, e).is_err());
        let sbi = AIA_OUT.replace("sbi_ipi_calls=0", "sbi_ipi_calls=3");
        assert!(check_aia(&sbi, e).is_err());
        let split = AiaExpect { hw: 1, sw: 1, ..e };
        assert!(check_aia(AIA_OUT, split).is_err());
        // Software files must show the software path.
        assert!(check_aia(AIA_OUT, AiaExpect { flips: true, ..e }).is_err());
    }

    /// A clean hostile run: (whole output, Linux's part, the attacker's part).
    fn hostile_run() -> (String, String, String) {
        let mut h = String::new();
        for a in ATTACKS {
            h += &format!("ATTACK {a} ... PASS (x)\n");
        }
        h += &format!("hostile: {} attacks passed, 0 failed\n", ATTACKS.len());
        let linux = "VIRQ-INIT-DONE\nERR:          0\n".to_string();
        let out = "hyp: guest 1 \"hostile\" shut down, status 0\n\
ACCT guest=linux sbi_ipi_calls=0 sbi_rfence_calls=0 sbi_ipi_targets=0 sbi_ipis_in=0 foreign_in=0
ACCT guest=hostile sbi_ipi_calls=40050 sbi_rfence_calls=48 sbi_ipi_targets=20000 sbi_ipis_in=20000 foreign_in=0
"
        .to_string();
        (out, linux, h)
    }

    /// Seen in a run: hyp's line in the middle of Linux's `/proc/interrupts`.
    #[test]
    fn hyp_line_inside_a_linux_row_is_cut_out() {
        let out = "IPI0:        78         65  Rescheduling interrupts\n\
IPI1:  hyp: guest 1 \"hostile\" shut down, status 0\n     465        550  Function call interrupts\n\
IPI2:         0          0  CPU stop interrupts\n";
        let cut = cut_interjection(out, HOSTILE_STOPPED);
        assert!(
            cut.contains("IPI1:       465        550  Function call interrupts\n"),
            "{cut}"
        );
        assert!(!cut.contains("hyp:"), "{cut}");
        assert_eq!(cut_interjection("a\nb\n", HOSTILE_STOPPED), "a\nb\n");
    }

    #[test]
    fn hostile_clean_run_passes() {
        let (out, linux, h) = hostile_run();
        let s = check_hostile(&out, &linux, &h).unwrap();
        assert!(s.contains("15 attacks as expected"), "{s}");
    }

    /// The ACCT lines of a run with hyp's hart masks broken on purpose (a mask could
    /// name the other guest's vCPUs): 49 of the attacker's IPIs reached Linux.
    #[test]
    fn hostile_ipis_reaching_linux_fail() {
        let (out, linux, h) = hostile_run();
        let broken = out.replace("sbi_ipis_in=0 foreign_in=0", "sbi_ipis_in=49 foreign_in=49");
        assert!(check_hostile(&broken, &linux, &h).is_err());
        // Even with the tripwire silent, the receive count gives it away.
        let broken = out.replace("sbi_ipis_in=0 foreign_in=0", "sbi_ipis_in=49 foreign_in=0");
        assert!(check_hostile(&broken, &linux, &h).is_err());
    }

    #[test]
    fn hostile_failed_missing_or_leaking_attacks_fail() {
        let (out, linux, h) = hostile_run();
        let failed = h.replace(
            "ATTACK sbi_ipi_foreign ... PASS (x)",
            "ATTACK sbi_ipi_foreign ... FAIL (mask 0x1 base 0x2: 0)",
        );
        assert!(check_hostile(&out, &linux, &failed).is_err());
        let missing = h.replace("ATTACK siege ... PASS (x)\n", "");
        assert!(check_hostile(&out, &linux, &missing).is_err());
        for leak in [
            "VIRQ-INIT-DONE spoof",
            "riscv-intc: Failed to handle interrupt (cause: 1)",
            "ERR:          3",
        ] {
            let l = format!("{linux}{leak}\n");
            assert!(check_hostile(&out, &l, &h).is_err(), "{leak}");
        }
        let stopped = out.replace("status 0", "status 2");
        assert!(check_hostile(&stopped, &linux, &h).is_err());
    }

    #[test]
    fn elf_without_magic_is_refused() {
        assert!(elf_to_flat(b"not an elf").is_err());
    }
}
