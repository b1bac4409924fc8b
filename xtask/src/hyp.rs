//! Build `hyp` and its test guest, run them in QEMU, and the QEMU test suite.
//!
//! - `cargo xtask run [--smp N] [--vcpus N] [--eoi immediate|deferred]` boots the test
//!   guest under hyp interactively (stdio is QEMU's console) and shows its output,
//!   ending with hyp's `ACCT` exit-accounting block.
//! - [`qemu_tests`] (from `cargo xtask test`) boots the test guest in a matrix of
//!   machine shapes and checks every `TEST … PASS` line, the guest's failure count,
//!   QEMU's exit status and, for the storm pair, the `ACCT` claims per completion.
//!
//! hyp is not a member of the host workspace: it is built with an explicit
//! `--target riscv64gc-unknown-none-elf` into `target/hyp`. The test guest's ELF is
//! flattened to a raw image here and loaded by QEMU's generic loader at the host
//! address where hyp's config (`hyp/hv/src/config.rs`, `TESTGUEST.ram_host_base`)
//! expects guest RAM to start.
use anyhow::{bail, ensure, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::checks::{root, run_cmd};

const TARGET: &str = "riscv64gc-unknown-none-elf";
/// Host physical address of the test guest's RAM (`TESTGUEST.ram_host_base` in
/// `hyp/hv/src/config.rs`): QEMU's loader puts the raw image there.
const TESTGUEST_LOAD_ADDR: u64 = 0x9000_0000;
/// Host physical address of the Linux guest's kernel (`LINUX.ram_host_base` + the
/// `Image` offset 2 MiB in `hyp/hv/src/config.rs`).
const LINUX_KERNEL_LOAD_ADDR: u64 = 0x9420_0000;
/// Host physical address of the kernel `Image` of the second guest of profile
/// `two-linux` (`LINUX2` in `hyp/hv/src/config.rs`).
const LINUX2_KERNEL_LOAD_ADDR: u64 = 0xa820_0000;
/// The profile with two Linux guests; the second prints through hyp with this prefix.
const TWO_LINUX: &str = "profile=two-linux";
const LINUX2_PREFIX: &str = "[linux2] ";
/// Default time limit of one QEMU run.
const DEFAULT_TIMEOUT_S: u64 = 60;
/// Time limit of a Linux boot under hyp (TCG, two levels of translation).
const LINUX_TIMEOUT_S: u64 = 600;

/// Arguments of `cargo xtask run`.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Harts of the QEMU machine (`-smp`).
    #[arg(long, default_value_t = 2)]
    pub smp: u32,
    /// vCPUs of the guest (default: the config's count).
    #[arg(long)]
    pub vcpus: Option<u32>,
    /// EOI policy of level passthrough interrupts: `deferred` (default) or
    /// `immediate` (the storm demonstration).
    #[arg(long)]
    pub eoi: Option<String>,
    /// Build hyp with the `immediate_eoi` cargo feature instead of the bootarg.
    #[arg(long)]
    pub immediate_eoi_build: bool,
    /// Boot Debian's Linux (kernel + busybox initramfs with a shell) under hyp instead
    /// of the test guest (profile `linux`).
    #[arg(long)]
    pub linux: bool,
    /// With `--linux`: the initramfs runs the non-interactive test `/init` (prints
    /// `/proc/interrupts`, runs an IPI workload, powers off).
    #[arg(long)]
    pub linux_test: bool,
    /// Seconds before QEMU is killed (default 60, 600 with --linux).
    #[arg(long)]
    pub timeout: Option<u64>,
}

/// Build artefacts.
struct Images {
    hyp: PathBuf,
    guest_bin: PathBuf,
}

/// What hyp boots.
#[derive(Debug, Clone)]
enum Payload {
    /// The bare-metal test guest (profile `test`).
    TestGuest,
    /// Debian Linux (profile `linux`): kernel `Image` and initramfs.
    Linux { kernel: PathBuf, initramfs: PathBuf },
}

fn hyp_target_dir() -> PathBuf {
    root().join("target/hyp")
}

/// Build hyp and the test guest (release), and flatten the guest to a raw image.
fn build(immediate_eoi: bool) -> Result<Images> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args([
        "build",
        "--manifest-path",
        "hyp/Cargo.toml",
        "--target",
        TARGET,
        "--release",
        "--target-dir",
    ])
    .arg(hyp_target_dir())
    .env_remove("RUSTFLAGS")
    .env_remove("CARGO_BUILD_RUSTFLAGS")
    .env_remove("CARGO_ENCODED_RUSTFLAGS");
    if immediate_eoi {
        cmd.args(["--features", "hyp/immediate_eoi"]);
    }
    run_cmd(&mut cmd)?;
    let out = hyp_target_dir().join(TARGET).join("release");
    let guest_elf = out.join("testguest");
    let guest_bin = out.join("testguest.bin");
    let elf =
        std::fs::read(&guest_elf).with_context(|| format!("reading {}", guest_elf.display()))?;
    std::fs::write(&guest_bin, elf_to_flat(&elf)?)?;
    Ok(Images {
        hyp: out.join("hyp"),
        guest_bin,
    })
}

/// Flatten an ELF64 little-endian executable: the bytes of its `PT_LOAD` segments
/// placed at their physical addresses relative to the lowest one (gaps are zero;
/// `.bss` beyond the file size is left out — the guest clears it).
fn elf_to_flat(elf: &[u8]) -> Result<Vec<u8>> {
    let u16_at = |o: usize| -> Result<u16> {
        Ok(u16::from_le_bytes(
            elf.get(o..o + 2).context("truncated ELF")?.try_into()?,
        ))
    };
    let u32_at = |o: usize| -> Result<u32> {
        Ok(u32::from_le_bytes(
            elf.get(o..o + 4).context("truncated ELF")?.try_into()?,
        ))
    };
    let u64_at = |o: usize| -> Result<u64> {
        Ok(u64::from_le_bytes(
            elf.get(o..o + 8).context("truncated ELF")?.try_into()?,
        ))
    };
    ensure!(
        elf.get(..4) == Some(b"\x7fELF".as_slice()),
        "not an ELF file"
    );
    ensure!(elf[4] == 2 && elf[5] == 1, "not a little-endian ELF64 file");
    let (phoff, phentsize, phnum) = (
        u64_at(0x20)? as usize,
        u16_at(0x36)? as usize,
        u16_at(0x38)? as usize,
    );
    let mut segs = Vec::new();
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph)? != 1 {
            continue; // not PT_LOAD
        }
        let (off, paddr, filesz) = (
            u64_at(ph + 8)? as usize,
            u64_at(ph + 0x18)?,
            u64_at(ph + 0x20)? as usize,
        );
        if filesz > 0 {
            segs.push((
                paddr,
                elf.get(off..off + filesz)
                    .context("segment beyond the file")?,
            ));
        }
    }
    let base = segs
        .iter()
        .map(|s| s.0)
        .min()
        .context("no loadable segment")?;
    let end = segs
        .iter()
        .map(|s| s.0 + s.1.len() as u64)
        .max()
        .unwrap_or(base);
    ensure!(end - base < 64 << 20, "image spans {} bytes", end - base);
    let mut out = vec![0u8; (end - base) as usize];
    for (paddr, data) in segs {
        let at = (paddr - base) as usize;
        out[at..at + data.len()].copy_from_slice(data);
    }
    Ok(out)
}

/// One QEMU configuration.
#[derive(Debug, Clone)]
struct Machine {
    smp: u32,
    bootargs: Vec<String>,
    timeout: Duration,
    payload: Payload,
}

impl Machine {
    fn command(&self, img: &Images) -> Command {
        let mut cmd = Command::new("qemu-system-riscv64");
        let two = self.bootargs.iter().any(|a| a == TWO_LINUX);
        cmd.args([
            "-M",
            "virt",
            "-m",
            if two { "1G" } else { "512M" },
            "-nographic",
            "-bios",
            "default",
            "-smp",
        ])
        .arg(self.smp.to_string())
        .arg("-kernel")
        .arg(&img.hyp);
        match &self.payload {
            Payload::TestGuest => {
                cmd.arg("-device").arg(format!(
                    "loader,file={},addr={:#x},force-raw=on",
                    img.guest_bin.display(),
                    TESTGUEST_LOAD_ADDR
                ));
            }
            Payload::Linux { kernel, initramfs } => {
                cmd.arg("-device")
                    .arg(format!(
                        "loader,file={},addr={:#x},force-raw=on",
                        kernel.display(),
                        LINUX_KERNEL_LOAD_ADDR
                    ))
                    .arg("-initrd")
                    .arg(initramfs);
                if two {
                    cmd.arg("-device").arg(format!(
                        "loader,file={},addr={:#x},force-raw=on",
                        kernel.display(),
                        LINUX2_KERNEL_LOAD_ADDR
                    ));
                }
            }
        }
        if !self.bootargs.is_empty() {
            cmd.arg("-append").arg(self.bootargs.join(" "));
        }
        cmd
    }
}

/// Output and exit status of a QEMU run.
struct Outcome {
    output: String,
    status: Option<i32>,
    timed_out: bool,
    elapsed: Duration,
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Run QEMU with a time limit, capturing stdout (and echoing it if `echo`).
fn run_qemu(m: &Machine, img: &Images, echo: bool) -> Result<Outcome> {
    let mut cmd = m.command(img);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .context("starting qemu-system-riscv64 (run `cargo xtask setup`)")?;
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().context("qemu stdout")?;
    let mut stderr = child.stderr.take().context("qemu stderr")?;
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line).replace('\r', "");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut output = String::new();
    let mut timed_out = false;
    let status = loop {
        while let Ok(line) = rx.try_recv() {
            if echo {
                println!("{line}");
            }
            output.push_str(&line);
            output.push('\n');
        }
        if let Some(st) = child.try_wait()? {
            break st.code();
        }
        if start.elapsed() > m.timeout {
            timed_out = true;
            kill(&mut child);
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    for line in rx.try_iter() {
        if echo {
            println!("{line}");
        }
        output.push_str(&line);
        output.push('\n');
    }
    let err = err_reader.join().unwrap_or_default();
    if !err.trim().is_empty() && !err.contains("terminating on signal") {
        output.push_str(&err);
    }
    let _ = std::io::stdout().flush();
    Ok(Outcome {
        output,
        status,
        timed_out,
        elapsed: start.elapsed(),
    })
}

fn bootargs(vcpus: Option<u32>, eoi: Option<&str>) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(n) = vcpus {
        v.push(format!("vcpus={n}"));
    }
    if let Some(e) = eoi {
        v.push(format!("eoi={e}"));
    }
    v
}

/// Boot the default configuration: the test guest under hyp.
pub fn run(args: &RunArgs) -> Result<()> {
    crate::setup::ensure_all()?;
    if let Some(e) = &args.eoi {
        ensure!(
            e == "immediate" || e == "deferred",
            "--eoi takes immediate or deferred"
        );
    }
    let img = build(args.immediate_eoi_build)?;
    let mut bootargs = bootargs(args.vcpus, args.eoi.as_deref());
    let payload = if args.linux || args.linux_test {
        bootargs.insert(0, "profile=linux".into());
        linux_payload(!args.linux_test)?
    } else {
        Payload::TestGuest
    };
    let default_timeout = if matches!(payload, Payload::Linux { .. }) {
        LINUX_TIMEOUT_S
    } else {
        DEFAULT_TIMEOUT_S
    };
    let timeout = args.timeout.unwrap_or(default_timeout);
    let m = Machine {
        smp: args.smp,
        bootargs,
        timeout: Duration::from_secs(timeout),
        payload,
    };
    eprintln!("$ {:?}", m.command(&img));
    let mut child = m
        .command(&img)
        .spawn()
        .context("starting qemu-system-riscv64")?;
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

/// Debian's kernel and a busybox initramfs (`crate::images`), with the interactive
/// shell `/init` or the test one.
fn linux_payload(interactive: bool) -> Result<Payload> {
    let (name, init) = if interactive {
        ("shell", crate::images::INIT_SHELL)
    } else {
        ("test", crate::images::INIT_TEST)
    };
    let b = crate::images::debian_boot(None, name, init)?;
    Ok(Payload::Linux {
        kernel: b.kernel,
        initramfs: b.initramfs,
    })
}

/// The `ACCT guest=… claims=N guest_completes=M …` line of the passthrough UART.
fn acct_claims(out: &str) -> Option<(u64, u64)> {
    let line = out
        .lines()
        .find(|l| l.starts_with("ACCT guest=") && l.contains(" pirq=10 "))?;
    let field = |k: &str| -> Option<u64> {
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(k)?.strip_prefix('=')?.parse().ok())
    };
    Some((field("claims")?, field("guest_completes")?))
}

/// One case of the suite.
#[derive(Clone)]
struct Case {
    name: &'static str,
    machine: Machine,
    /// `Some(true)`: the storm must show (claims > 10 per completion);
    /// `Some(false)`: exactly one claim per completion.
    storm: Option<bool>,
}

fn check(case: &Case, o: &Outcome) -> Result<(usize, u64, u64)> {
    ensure!(
        !o.timed_out,
        "timed out after {:.0} s",
        o.elapsed.as_secs_f64()
    );
    let passed = if matches!(case.machine.payload, Payload::Linux { .. }) {
        // Debian's kernel with the test /init: it must reach the end and power off,
        // with timer, IPIs and the UART counting on every CPU (crate::guestcheck).
        // With two guests, the second one's lines carry its prefix (its console is
        // hyp's emulated UART, which has no interrupt).
        let (own, second): (Vec<&str>, Vec<&str>) = o
            .output
            .lines()
            .partition(|l| !l.starts_with(LINUX2_PREFIX));
        let mut guests = vec![("linux", own.join("\n"), true)];
        if case.machine.bootargs.iter().any(|a| a == TWO_LINUX) {
            let second: Vec<&str> = second
                .iter()
                .filter_map(|l| l.strip_prefix(LINUX2_PREFIX))
                .collect();
            guests.push(("linux2", second.join("\n"), false));
        }
        for (name, out, uart) in &guests {
            let f = crate::guestcheck::check_linux(out, *uart)
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

fn log_path(name: &str) -> PathBuf {
    hyp_target_dir().join("logs").join(format!("{name}.log"))
}

fn save_log(name: &str, out: &str) -> Result<PathBuf> {
    let p = log_path(name);
    std::fs::create_dir_all(p.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&p, out)?;
    Ok(p)
}

/// Run the QEMU test suite.
pub fn qemu_tests() -> Result<()> {
    crate::setup::ensure_all()?;
    let img = build(false)?;
    let t = Duration::from_secs(DEFAULT_TIMEOUT_S);
    let m = |smp: u32, vcpus: Option<u32>, eoi: Option<&str>| Machine {
        smp,
        bootargs: bootargs(vcpus, eoi),
        timeout: t,
        payload: Payload::TestGuest,
    };
    let cases = [
        Case {
            name: "smp1",
            machine: m(1, None, None),
            storm: Some(false),
        },
        Case {
            name: "smp2",
            machine: m(2, None, None),
            storm: Some(false),
        },
        Case {
            name: "smp4-vcpus4",
            machine: m(4, Some(4), None),
            storm: Some(false),
        },
        Case {
            name: "smp1-vcpus3",
            machine: m(1, Some(3), None),
            storm: Some(false),
        },
        Case {
            name: "smp2-vcpus5",
            machine: m(2, Some(5), None),
            storm: Some(false),
        },
        Case {
            name: "smp2-storm",
            machine: m(2, None, Some("immediate")),
            storm: Some(true),
        },
    ];
    let mut cases = cases.to_vec();
    if std::env::var_os("VIRQ_SKIP_LINUX").is_none() {
        let linux = linux_payload(false)?;
        for (name, smp, vcpus, profile) in [
            ("linux-smp2", 2, None, "profile=linux"),
            ("linux-smp1-vcpus2", 1, Some(2), "profile=linux"),
            ("linux-two-guests", 2, None, TWO_LINUX),
        ] {
            let mut args = vec![profile.to_string()];
            args.extend(bootargs(vcpus, None));
            cases.push(Case {
                name,
                machine: Machine {
                    smp,
                    bootargs: args,
                    timeout: Duration::from_secs(LINUX_TIMEOUT_S),
                    payload: linux.clone(),
                },
                storm: Some(false),
            });
        }
    }
    let suite = Instant::now();
    let (mut ok, mut bad) = (0, 0);
    for case in &cases {
        let o = run_qemu(&case.machine, &img, false)?;
        let log = save_log(case.name, &o.output)?;
        match check(case, &o) {
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
                for l in o
                    .output
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                {
                    println!("    | {l}");
                }
            }
        }
    }
    println!("qemu suite: {:.1} s", suite.elapsed().as_secs_f64());
    println!("qemu: {ok} passed, {bad} failed");
    ensure!(bad == 0, "{bad} QEMU configuration(s) failed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acct_line_is_parsed() {
        let out = "x\nACCT guest=testguest pirq=10 virq=10 claims=5504 guest_completes=7 storm_masks=1 eoi=immediate\n";
        assert_eq!(acct_claims(out), Some((5504, 7)));
    }

    /// The whole QEMU suite on its own: `cargo test -p xtask -- --ignored qemu_suite`.
    #[test]
    #[ignore = "boots QEMU; run explicitly"]
    fn qemu_suite() {
        qemu_tests().unwrap();
    }

    #[test]
    fn elf_without_magic_is_refused() {
        assert!(elf_to_flat(b"not an elf").is_err());
    }
}
