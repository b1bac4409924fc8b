//! Building hyp and its test guest (and the system benchmark's payload), and running
//! QEMU: the machine shapes (`Machine`), what runs in them (`Payload`), and the runner
//! with its time-outs and logs. Used by `cargo xtask run`, the QEMU suite, `cargo xtask
//! soak` and `cargo xtask bench --system`; imports none of them.
use anyhow::{ensure, Context, Result};
use hyp_config::Arch;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::util::{root, run_cmd};

pub(crate) const TARGET: &str = "riscv64gc-unknown-none-elf";
/// QEMU's `-M` on aarch64: QEMU arm `virt` with EL2 (`virtualization=on`; no EL3, so
/// an ELF `-kernel` starts at EL2) and a GICv3.
pub(crate) const ARM_MACHINE: &str = "virt,virtualization=on,gic-version=3";
/// The same with a GICv4.0 (its ITS has `GITS_TYPER.Virtual`): for `topology =
/// "vgicv4"` guests (docs/gicv4.md).
pub(crate) const ARM_MACHINE_GICV4: &str = "virt,virtualization=on,gic-version=4";
/// QEMU's `-cpu` on aarch64: everything QEMU models but SVE and SME, whose register
/// state hyp does not switch (it refuses a guest on a CPU that has them).
pub(crate) const ARM_CPU: &str = "max";
/// Laps of the ping-pong cases of the QEMU suite (`cargo xtask soak` runs 1,000,000).
pub(crate) const PINGPONG_LAPS: u64 = 20_000;
/// Default time limit of one QEMU run.
pub(crate) const DEFAULT_TIMEOUT_S: u64 = 60;
/// Time limit of a Linux boot under hyp (TCG, two levels of translation).
pub(crate) const LINUX_TIMEOUT_S: u64 = 600;
/// Time limit of an interactive Linux shell (`cargo xtask run`).
pub(crate) const INTERACTIVE_TIMEOUT_S: u64 = 3600;

/// Build artefacts.
pub(crate) struct Images {
    pub(crate) hyp: PathBuf,
    pub(crate) guest_bin: PathBuf,
}

/// What QEMU boots.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    /// hyp, with files put into RAM by QEMU's loader (the guests' images and
    /// the config blob, placed by the `config` module; none for hyp's built-in aarch64
    /// test guest).
    Hyp {
        /// `-m`.
        memory_mb: u32,
        /// `(file, host physical address)`.
        loads: Vec<(PathBuf, u64)>,
    },
    /// Debian Linux on bare QEMU, without hyp (a baseline): the machine's bootargs are
    /// the kernel command line.
    BareLinux { kernel: PathBuf, initramfs: PathBuf },
    /// A bare-metal S-mode image on bare QEMU (OpenSBI starts it at 0x8020_0000):
    /// the system benchmark's reference for "no hypervisor" (riscv64).
    Bare { kernel: PathBuf },
}

pub(crate) fn hyp_target_dir() -> PathBuf {
    root().join("target/hyp")
}

/// Build hyp and the test guest (release), and flatten the guest to a raw image.
pub(crate) fn build(immediate_eoi: bool) -> Result<Images> {
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

/// Build one of the `guest/` programs (its own workspace; release,
/// `riscv64gc-unknown-none-elf`, into `target/guest`, without the host's RUSTFLAGS)
/// and return the path of its ELF `bin`.
pub(crate) fn build_guest_program(manifest: &str, bin: &str) -> Result<PathBuf> {
    let target_dir = root().join("target/guest");
    let mut cmd = crate::util::cargo();
    cmd.args(["build", "--manifest-path", manifest, "--target", TARGET])
        .args(["--release", "--target-dir"])
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    run_cmd(&mut cmd)?;
    Ok(target_dir.join(TARGET).join("release").join(bin))
}

/// Build `guest/bench` (release, into `target/guest`) and write its raw image to
/// `target/bench/virq-bench.bin` (the payload of `cargo xtask bench --system`).
pub(crate) fn build_bench() -> Result<PathBuf> {
    let elf_path = build_guest_program("guest/bench/Cargo.toml", "virq-bench")?;
    let elf =
        std::fs::read(&elf_path).with_context(|| format!("reading {}", elf_path.display()))?;
    let flat = elf_to_flat(&elf)?;
    ensure!(
        flat.get(0x38..0x3c) == Some(b"RSC\x05".as_slice()),
        "{}: no RISC-V Image header",
        elf_path.display()
    );
    let out = root().join("target/bench");
    let bin = out.join("virq-bench.bin");
    std::fs::create_dir_all(&out)?;
    std::fs::write(&bin, flat).with_context(|| format!("writing {}", bin.display()))?;
    Ok(bin)
}

/// Flatten an ELF64 little-endian executable: the bytes of its `PT_LOAD` segments
/// placed at their physical addresses relative to the lowest one (gaps are zero;
/// `.bss` beyond the file size is left out — the guest clears it).
pub(crate) fn elf_to_flat(elf: &[u8]) -> Result<Vec<u8>> {
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
pub(crate) struct Machine {
    /// `qemu-system-riscv64` (`-M virt`, OpenSBI) or `qemu-system-aarch64` (`-M`
    /// [`ARM_MACHINE`] `-cpu` [`ARM_CPU`], no firmware, `-no-reboot`).
    pub(crate) arch: Arch,
    pub(crate) smp: u32,
    /// riscv64: `Some(n)`: `-M virt,aia=aplic-imsic,aia-guests=n` (S-level APLIC + IMSIC
    /// with `n` guest interrupt files per hart); `None`: plain `-M virt` (PLIC).
    pub(crate) aia: Option<u32>,
    /// aarch64: [`ARM_MACHINE_GICV4`] instead of [`ARM_MACHINE`] (a guest has
    /// `topology = "vgicv4"`: hyp needs the host ITS's GICv4).
    pub(crate) gicv4: bool,
    pub(crate) bootargs: Vec<String>,
    pub(crate) timeout: Duration,
    pub(crate) payload: Payload,
    /// `-icount shift=0,sleep=off`: one instruction is one virtual nanosecond and the
    /// guest's clock no longer follows the host's (single-threaded TCG).
    pub(crate) icount: bool,
    /// More QEMU arguments: the IOMMU and PCIe functions (`config::Pcie::qemu_args`).
    pub(crate) extra: Vec<String>,
}

impl Machine {
    pub(crate) fn command(&self, img: &Images) -> Command {
        self.command_for(&img.hyp)
    }

    /// The QEMU command line, `hyp` being hyp's ELF (for [`Payload::Hyp`]).
    pub(crate) fn command_for(&self, hyp: &Path) -> Command {
        let memory = match &self.payload {
            Payload::Hyp { memory_mb, .. } => format!("{memory_mb}M"),
            Payload::BareLinux { .. } => "512M".into(),
            Payload::Bare { .. } => "256M".into(),
        };
        let mut cmd = match self.arch {
            Arch::Riscv64 => {
                let mut cmd = Command::new("qemu-system-riscv64");
                let machine = match self.aia {
                    Some(n) => format!("virt,aia=aplic-imsic,aia-guests={n}"),
                    None => "virt".into(),
                };
                cmd.args([
                    "-M",
                    &machine,
                    "-m",
                    &memory,
                    "-nographic",
                    "-bios",
                    "default",
                    "-smp",
                ])
                .arg(self.smp.to_string());
                cmd
            }
            Arch::Aarch64 => {
                // `-no-reboot`: PSCI SYSTEM_RESET (hyp's failure power-off) ends QEMU.
                let mut cmd = Command::new(crate::setup::QEMU_ARM_BINARY);
                let machine = if self.gicv4 {
                    ARM_MACHINE_GICV4
                } else {
                    ARM_MACHINE
                };
                cmd.args(["-M", machine, "-cpu", ARM_CPU, "-m", &memory, "-smp"])
                    .arg(self.smp.to_string())
                    .args(["-nographic", "-no-reboot"]);
                cmd
            }
        };
        if self.icount {
            cmd.args(["-icount", "shift=0,sleep=off"]);
        }
        cmd.args(&self.extra);
        cmd.arg("-kernel");
        match &self.payload {
            Payload::BareLinux { kernel, initramfs } => {
                cmd.arg(kernel).arg("-initrd").arg(initramfs);
            }
            Payload::Bare { kernel } => {
                cmd.arg(kernel);
            }
            Payload::Hyp { loads, .. } => {
                cmd.arg(hyp);
                for (file, addr) in loads {
                    cmd.arg("-device").arg(format!(
                        "loader,file={},addr={addr:#x},force-raw=on",
                        file.display()
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
pub(crate) struct Outcome {
    pub(crate) output: String,
    pub(crate) status: Option<i32>,
    pub(crate) timed_out: bool,
    pub(crate) elapsed: Duration,
}

pub(crate) fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Run QEMU with a time limit, capturing stdout (and echoing it if `echo`).
pub(crate) fn run_qemu(m: &Machine, img: &Images, echo: bool) -> Result<Outcome> {
    run_qemu_watched(m, img, echo, None)
}

/// [`run_qemu`], also killing QEMU (as timed out) once its console has been silent for
/// `silence`: a guest that hangs is stopped long before a generous overall limit.
pub(crate) fn run_qemu_watched(
    m: &Machine,
    img: &Images,
    echo: bool,
    silence: Option<Duration>,
) -> Result<Outcome> {
    run_command_watched(m.command(img), m.timeout, echo, silence)
}

/// Run the QEMU command `cmd` as [`run_qemu_watched`] does (killed after `timeout`, or
/// after `silence` without console output).
pub(crate) fn run_command_watched(
    mut cmd: Command,
    timeout: Duration,
    echo: bool,
    silence: Option<Duration>,
) -> Result<Outcome> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "starting {} (run `cargo xtask setup`)",
            cmd.get_program().to_string_lossy()
        )
    })?;
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
    let mut last_line = Instant::now();
    let status = loop {
        while let Ok(line) = rx.try_recv() {
            last_line = Instant::now();
            if echo {
                println!("{line}");
            }
            output.push_str(&line);
            output.push('\n');
        }
        if let Some(st) = child.try_wait()? {
            break st.code();
        }
        if start.elapsed() > timeout {
            timed_out = true;
            kill(&mut child);
            break None;
        }
        if let Some(quiet) = silence.filter(|q| last_line.elapsed() > *q) {
            timed_out = true;
            kill(&mut child);
            output.push_str(&format!(
                "xtask: no console output for {} s: QEMU killed\n",
                quiet.as_secs()
            ));
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

pub(crate) fn log_path(name: &str) -> PathBuf {
    hyp_target_dir().join("logs").join(format!("{name}.log"))
}

pub(crate) fn save_log(name: &str, out: &str) -> Result<PathBuf> {
    let p = log_path(name);
    std::fs::create_dir_all(p.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&p, out)?;
    Ok(p)
}

/// The names among `all` that `VIRQ_QEMU_CASE` = `only` selects (all without it).
pub(crate) fn select_cases(
    all: impl Iterator<Item = &'static str>,
    only: Option<&str>,
) -> Vec<&'static str> {
    let names: Vec<&str> = only
        .map(|o| o.split(',').map(str::trim).collect())
        .unwrap_or_default();
    all.filter(|c| only.is_none() || names.contains(c))
        .collect()
}

/// Run each of `names` with `run`, printing the suite's line for it: `(passed, failed)`.
pub(crate) fn run_named_cases(
    names: &[&str],
    mut run: impl FnMut(&str) -> Result<String>,
) -> (usize, usize) {
    let (mut ok, mut bad) = (0, 0);
    for &name in names {
        match run(name) {
            Ok(summary) => {
                ok += 1;
                println!("qemu {name:<18} ok    {summary}");
            }
            Err(e) => {
                bad += 1;
                println!("qemu {name:<18} FAIL  {e:#}");
            }
        }
    }
    (ok, bad)
}
