//! `cargo xtask bench --system`: instructions per interrupt path, counted by QEMU.
//!
//! The payload `guest/bench` (bare-metal, S-mode) times N operations with `rdtime` and
//! prints `VIRQ-BENCH op=<op> n=<n> ticks=<t>` lines. Under `-icount shift=0,sleep=off`
//! one instruction is one virtual nanosecond and QEMU virt's `time` ticks at 10 MHz,
//! so `ticks * 100 / n` is the instructions the whole machine (payload, OpenSBI, hyp)
//! executed per operation — independent of the host's load. The same image runs on
//! bare QEMU (under OpenSBI: the reference), as a hyp guest on both topologies
//! (`configs/bench-aia.toml`, `configs/bench-plic.toml`), one hart, one vCPU, and (full
//! run only) as a guest of KVM RISC-V: Debian's `kvm.ko` in a Debian guest on the AIA
//! machine, run by `tools/kvm-vmm` with KVM's in-kernel AIA (module `kvm`).
//!
//! The full run also boots each hyp configuration once per op with only that op, and
//! once with none, and divides the difference of hyp's `ACCT` exit counters by the
//! operations run (warm-up included): exits per op. Under KVM the VMM prints KVM's
//! exit counters (binary stats) after each of the payload's lines, so the boot that
//! times an op also counts its exits. It writes
//! `target/bench/system.json`, `system-instructions.svg` and `system-exits.svg`
//! (plotters) and prints a table. `--quick` (run by `cargo xtask test`) boots each
//! bare and hyp target once with a small N and fails on a broken payload — a missing
//! or garbled line, an op error, a non-zero exit — never on a figure.
//!
//! aarch64 (issue 13): `arm-bare` and `hyp-arm` run the bench mode of
//! `hyp/testguest-arm` (HVC, a trapped GIC distributor read, EOI, SGIs, the virtual
//! timer; `crate::armbench`). Its counter ticks at 1 GHz, so there a tick is one
//! instruction; the aarch64 figures share `system.json` (each target says its
//! `arch`), get their own table, and plots `system-arm-instructions.svg` (with the
//! KVM arm64 anchors of issue 13's text beside them) and `system-arm-exits.svg`.
//! `--quick` also checks that every aarch64 op printed a plausible figure (at least
//! one instruction, less than 10^7 per op: a sanity bound, not a timing threshold).
use anyhow::{bail, ensure, Context, Result};
use hyp_config::{Arch, Named};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::qemu::{Machine, Outcome, Payload};
use crate::util::root;

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Instead of the criterion benchmarks: instructions per interrupt path in QEMU
    /// (-icount), the guest/bench payload on bare QEMU and under hyp (vPLIC and AIA).
    #[arg(long)]
    pub system: bool,
    /// With --system: small N, one boot per target, no exit counts (the check
    /// `cargo xtask test` runs).
    #[arg(long, requires = "system")]
    pub quick: bool,
    /// With --system: only these targets (repeatable; `bare-aia`, `hyp-aia`, `bare-plic`,
    /// `hyp-plic`, `hyp-aia-direct`, `kvm-aia`, `arm-bare`, `hyp-arm`); the files get a
    /// `-partial` suffix.
    #[arg(long = "target", requires = "system", value_name = "NAME")]
    pub targets: Vec<String>,
    /// Instead: instructions from the kernel's clock start to `/init` for Debian Linux
    /// on bare QEMU and under hyp (vPLIC, AIA), under -icount (`crate::bootbench`).
    #[arg(long, conflicts_with = "system")]
    pub boot: bool,
    /// With --boot: boots per target, QEMU `-seed 1..=N` (the boot's time depends
    /// chaotically on the guest's random seed; the table shows mean, min and max).
    #[arg(long, requires = "boot", default_value_t = crate::bootbench::SEEDS)]
    pub boot_seeds: u32,
    /// Instead: the network test's figures (`crate::netbench`): TCP throughput, NIC
    /// interrupts per second and UDP round trips of a Debian guest with a PCIe NIC,
    /// every target against bare QEMU; target/bench/net.json.
    #[arg(long, conflicts_with_all = ["system", "boot"])]
    pub net: bool,
    #[command(flatten)]
    pub net_args: crate::netbench::NetArgs,
}

/// The riscv64 payload's ops, in the order it runs them (`OPS` in
/// `guest/bench/src/main.rs`; aarch64: `crate::armbench::OPS`).
pub const OPS: &[&str] = &[
    "nop",
    "sbi_base",
    "ctrl_read",
    "ipi_self",
    "msi_self",
    "uart_thre",
    "yield",
    "ipi_pingpong",
    "msi_pingpong",
    "ipi_spin",
    "msi_spin",
];

/// The boots of each target: the ops on one hart (one vCPU), and the ping-pongs
/// between two harts (two vCPUs, one per hart). `(harts, ops)`.
pub const BOOTS: &[(u32, &[&str])] = &[
    (
        1,
        &[
            "nop",
            "sbi_base",
            "ctrl_read",
            "ipi_self",
            "msi_self",
            "uart_thre",
            "yield",
        ],
    ),
    (2, &["ipi_pingpong", "msi_pingpong", "ipi_spin", "msi_spin"]),
];

/// What each op of `arch` measures (table and JSON).
fn op_title(arch: Arch, op: &str) -> &'static str {
    if arch == Arch::Aarch64 {
        return crate::armbench::op_title(op);
    }
    match op {
        "nop" => "empty loop (overhead in every figure)",
        "sbi_base" => "SBI BASE get_spec_version round trip",
        "ctrl_read" => "controller register read (APLIC domaincfg / PLIC priority)",
        "ipi_self" => "SBI send_ipi to self, poll sip.SSIP, clear",
        "msi_self" => "IMSIC self-MSI: seteipnum_le store, claim with stopei",
        "uart_thre" => {
            "UART THRE level interrupt: enable THRE, take it, claim, disable THRE, complete"
        }
        "ipi_pingpong" => "2 harts: SBI IPI round trip, both sides waiting in WFI",
        "msi_pingpong" => "2 harts: IMSIC MSI round trip, both sides waiting in WFI",
        "yield" => "one empty poll and yield of the spinning ping-pongs (their cost per yield)",
        "ipi_spin" => {
            "2 harts: SBI IPI round trip, both sides spinning on sip.SSIP (yields taken out)"
        }
        "msi_spin" => {
            "2 harts: IMSIC MSI round trip, both sides spinning on stopei (yields taken out)"
        }
        _ => "",
    }
}

/// What runs the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// Bare QEMU: the payload in S-mode under OpenSBI.
    Bare,
    /// hyp (`configs/bench-aia.toml` / `bench-plic.toml`).
    Hyp,
    /// KVM RISC-V in a Debian Linux guest (`virq-kvm-vmm`, in-kernel AIA); full run only.
    Kvm,
}

/// One machine the payload runs on.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub name: &'static str,
    /// riscv64 (`guest/bench`) or aarch64 (`hyp/testguest-arm`'s bench mode).
    pub arch: Arch,
    /// `-M virt,aia=aplic-imsic,aia-guests=3` (else plain `-M virt`, PLIC).
    pub aia: bool,
    pub host: Host,
    /// `--set` overrides of the hyp configuration file.
    pub sets: &'static [&'static str],
}

impl Target {
    /// hyp on GICv4.0 with the guest's vPEs (`hyp-arm-v4`: `--set
    /// guest.0.topology=vgicv4`).
    pub fn gicv4(&self) -> bool {
        self.sets.contains(&GICV4_SET)
    }

    /// Under a hypervisor (so it has exit counts and a bare reference).
    pub fn virtualized(&self) -> bool {
        self.host != Host::Bare
    }

    /// Part of `--quick` (the check in `cargo xtask test`)? Not KVM: a Debian boot
    /// under `-icount` per shape is minutes, not a second.
    pub fn in_quick(&self) -> bool {
        self.host != Host::Kvm
    }

    /// The bare QEMU target on the same machine (the ratio's reference).
    pub fn bare(&self) -> &'static str {
        if self.arch == Arch::Aarch64 {
            "arm-bare"
        } else if self.aia {
            "bare-aia"
        } else {
            "bare-plic"
        }
    }

    /// Time limit of one boot: the payload alone takes about a second; a Debian boot
    /// with KVM under `-icount` minutes.
    fn timeout(&self) -> Duration {
        match self.host {
            Host::Kvm => KVM_RUN_TIMEOUT,
            _ => RUN_TIMEOUT,
        }
    }

    /// The QEMU `-M` value.
    fn machine_option(&self) -> &'static str {
        if self.arch == Arch::Aarch64 {
            match self.host {
                Host::Bare => crate::armbench::BARE_MACHINE,
                _ if self.gicv4() => crate::qemu::ARM_MACHINE_GICV4,
                _ => crate::qemu::ARM_MACHINE,
            }
        } else if self.aia {
            "virt,aia=aplic-imsic,aia-guests=3"
        } else {
            "virt,aclint=on"
        }
    }

    /// The configuration file of a hyp target.
    fn config(&self) -> &'static str {
        if self.aia {
            "bench-aia"
        } else {
            "bench-plic"
        }
    }

    /// Does op `op` run here (else it must report itself skipped, [`Self::skip_reason`])?
    /// The KVM VMM gives its guest no UART.
    fn runs(&self, op: &str) -> bool {
        match op {
            _ if self.arch == Arch::Aarch64 => !crate::armbench::needs_gicv4(op) || self.gicv4(),
            "uart_thre" => self.host != Host::Kvm,
            _ => !op.starts_with("msi_") || self.aia,
        }
    }

    /// Why op `op` says it is skipped where it does not run.
    fn skip_reason(op: &str) -> &'static str {
        match op {
            "uart_thre" => "no-uart",
            _ if crate::armbench::needs_gicv4(op) => "no-gicv4",
            _ => "no-imsic",
        }
    }

    /// The payload's ops.
    pub fn ops(&self) -> &'static [&'static str] {
        match self.arch {
            Arch::Riscv64 => OPS,
            Arch::Aarch64 => crate::armbench::OPS,
        }
    }

    /// The boots of each target (`(harts, ops)`).
    pub fn boots(&self) -> &'static [(u32, &'static [&'static str])] {
        match self.arch {
            Arch::Riscv64 => BOOTS,
            Arch::Aarch64 => crate::armbench::BOOTS,
        }
    }

    /// Instructions per counter tick under `-icount shift=0,sleep=off`: riscv64 `virt`'s
    /// `time` runs at 10 MHz, aarch64 `virt`'s generic timer at 1 GHz.
    pub fn insns_per_tick(&self) -> f64 {
        match self.arch {
            Arch::Riscv64 => 100.0,
            Arch::Aarch64 => 1.0,
        }
    }
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "bare-aia",
        aia: true,
        host: Host::Bare,
        arch: Arch::Riscv64,
        sets: &[],
    },
    Target {
        name: "hyp-aia",
        aia: true,
        host: Host::Hyp,
        arch: Arch::Riscv64,
        sets: &[],
    },
    Target {
        name: "bare-plic",
        aia: false,
        host: Host::Bare,
        arch: Arch::Riscv64,
        sets: &[],
    },
    Target {
        name: "hyp-plic",
        aia: false,
        host: Host::Hyp,
        arch: Arch::Riscv64,
        sets: &[],
    },
    // `wfi = "direct"`: the vCPU is alone on its hart, so its `wfi` does not trap.
    Target {
        name: "hyp-aia-direct",
        aia: true,
        host: Host::Hyp,
        arch: Arch::Riscv64,
        sets: &["hyp.wfi=direct"],
    },
    // Debian's kvm.ko in a Debian guest, in-kernel AIA (MSI mode, IMSIC per vCPU).
    Target {
        name: "kvm-aia",
        aia: true,
        host: Host::Kvm,
        arch: Arch::Riscv64,
        sets: &[],
    },
    // aarch64: the bench mode of hyp/testguest-arm at EL1 on QEMU arm `virt` without EL2
    // (QEMU answers PSCI), and as hyp's guest on a vGICv3 (`crate::armbench`).
    Target {
        name: "arm-bare",
        aia: false,
        host: Host::Bare,
        arch: Arch::Aarch64,
        sets: &[],
    },
    Target {
        name: "hyp-arm",
        aia: false,
        host: Host::Hyp,
        arch: Arch::Aarch64,
        sets: &[],
    },
    // The same on GICv4.0 (issue 14): vPEs, doorbells; the `vlpi_*` ops run here.
    Target {
        name: "hyp-arm-v4",
        aia: false,
        host: Host::Hyp,
        arch: Arch::Aarch64,
        sets: &[GICV4_SET],
    },
];

/// The `--set` of `hyp-arm-v4` (applied by `crate::armbench::command`).
const GICV4_SET: &str = "guest.0.topology=vgicv4";

/// Operations timed and untimed warm-up per op.
#[derive(Debug, Clone, Copy)]
struct Size {
    n: u64,
    warmup: u64,
}

const FULL: Size = Size {
    n: 10_000,
    warmup: 1_000,
};
const QUICK: Size = Size { n: 100, warmup: 10 };
/// One boot of the payload takes about a second; this is for a hang.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// A Debian boot that loads kvm.ko and runs the payload under KVM, all under
/// `-icount`.
const KVM_RUN_TIMEOUT: Duration = Duration::from_secs(1800);

fn out_dir() -> PathBuf {
    root().join("target/bench")
}

/// The images a bench configuration names: only the payload.
struct BenchImages {
    payload: PathBuf,
}

impl crate::config::Images for BenchImages {
    fn testguest(&self) -> Result<PathBuf> {
        bail!("the bench configurations boot the bench payload only")
    }
    fn debian_kernel(&self, _arch: hyp_config::Arch) -> Result<PathBuf> {
        bail!("the bench configurations boot the bench payload only")
    }
    fn debian_initramfs(&self, _arch: hyp_config::Arch, _which: &str) -> Result<PathBuf> {
        bail!("the bench configurations boot the bench payload only")
    }
    fn bench(&self) -> Result<PathBuf> {
        Ok(self.payload.clone())
    }
}

/// The payload's command line: `bench.n=… bench.warmup=… bench.ops=…`.
fn cmdline(size: Size, ops: &str) -> String {
    format!(
        "bench.n={} bench.warmup={} bench.ops={ops}",
        size.n, size.warmup
    )
}

/// What the boots need: riscv64 hyp and the payload, for KVM the Debian boot images;
/// aarch64 hyp and its payload. Each only if a target of its architecture runs.
struct Built {
    riscv: Option<(crate::qemu::Images, PathBuf)>,
    kvm: Option<crate::images::BootImages>,
    arm: Option<crate::armbench::Built>,
}

/// The QEMU command running the payload on `t` with `cmdline` on `harts` harts (under
/// hyp or KVM: as many vCPUs, one per hart), with `-icount`; `log` names the boot.
fn command(t: &Target, built: &Built, cmdline: &str, harts: u32, log: &str) -> Result<Command> {
    if t.arch == Arch::Aarch64 {
        let arm = built
            .arm
            .as_ref()
            .context("hyp for aarch64 was not built")?;
        return crate::armbench::command(arm, t.host == Host::Hyp, t.gicv4(), cmdline, harts, log);
    }
    let (img, _) = built
        .riscv
        .as_ref()
        .context("hyp for riscv64 was not built")?;
    Ok(machine(t, built, cmdline, harts)?.command(img))
}

/// The QEMU machine running the riscv64 payload on `t` with `cmdline` on `harts` harts
/// (under hyp or KVM: as many vCPUs, one per hart), with `-icount`.
fn machine(t: &Target, built: &Built, cmdline: &str, harts: u32) -> Result<Machine> {
    let payload = &built
        .riscv
        .as_ref()
        .context("the riscv64 payload was not built")?
        .1;
    let mut m = if t.host == Host::Kvm {
        let kvm = built
            .kvm
            .as_ref()
            .context("the KVM boot images were not built")?;
        Machine {
            arch: hyp_config::Arch::Riscv64,
            smp: harts,
            aia: Some(crate::config::DEFAULT_GUEST_FILES),
            gicv4: false,
            bootargs: crate::kvm::cmdline(harts, cmdline),
            timeout: t.timeout(),
            icount: false,
            extra: Vec::new(),
            payload: Payload::BareLinux {
                kernel: kvm.kernel.clone(),
                initramfs: kvm.initramfs.clone(),
            },
        }
    } else if t.host == Host::Hyp {
        let mut sets = vec![
            format!("guest.0.cmdline={cmdline:?}"),
            format!("machine.harts={harts}"),
            format!("guest.0.vcpus={harts}"),
        ];
        sets.extend(t.sets.iter().map(|s| s.to_string()));
        let (file, dir) = crate::config::load(&crate::config::path_of(t.config()), &sets)?;
        let images = BenchImages {
            payload: payload.to_path_buf(),
        };
        let r = crate::config::resolve(&format!("bench-{}", t.name), &file, &dir, &images)?;
        ensure!(
            r.config.guests.len() == 1,
            "{}: the bench expects one guest",
            t.config()
        );
        ensure!(
            r.machine.aia.is_some() == t.aia,
            "{}: machine.interrupts",
            t.config()
        );
        ensure!(
            r.machine.aclint != t.aia,
            "{}: machine.aclint (the PLIC machine has the ACLINT, the AIA one not)",
            t.config()
        );
        r.machine(RUN_TIMEOUT, &[])?
    } else {
        Machine {
            arch: hyp_config::Arch::Riscv64,
            smp: harts,
            aia: t.aia.then_some(crate::config::DEFAULT_GUEST_FILES),
            gicv4: false,
            bootargs: cmdline.split_whitespace().map(String::from).collect(),
            timeout: t.timeout(),
            icount: false,
            // The PLIC machine has the ACLINT (as `configs/bench-plic.toml` gives hyp):
            // the same machine under both; OpenSBI's IPIs use its MSWI either way.
            extra: if t.aia {
                Vec::new()
            } else {
                vec!["-M".into(), "aclint=on".into()]
            },
            payload: Payload::Bare {
                kernel: payload.to_path_buf(),
            },
        }
    };
    m.icount = true;
    Ok(m)
}

/// One op's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpLine {
    Timed {
        n: u64,
        ticks: u64,
        /// `reg=…` and any other fields.
        detail: Option<String>,
        /// A ping-pong's per-lap figures.
        laps: Option<Laps>,
    },
    Skipped(String),
}

/// Per-lap figures of a ping-pong, in ticks (100 instructions each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Laps {
    /// Laps of 1,000 ticks or more: QEMU's single-threaded round-robin waking the other
    /// hart late, not the path (typically the first lap of a run).
    pub stalls: u64,
    pub stall_ticks: u64,
    pub min: u64,
    pub median: u64,
    pub p90: u64,
    pub max: u64,
    /// `(ticks, laps)`; the payload's last bucket (1023) holds longer laps too.
    pub hist: Vec<(u64, u64)>,
}

/// The payload's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Fields of the `start` line (`intc`, `aplic`, …).
    pub start: BTreeMap<String, String>,
    pub ops: BTreeMap<String, OpLine>,
}

/// `key=value` words (a word without `=` maps to "").
fn fields(s: &str) -> BTreeMap<String, String> {
    s.split_whitespace()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (w.to_string(), String::new()),
        })
        .collect()
}

/// Read the `VIRQ-BENCH` lines: fails on an error line, a garbled or repeated op line,
/// a missing `start` or `done` line, or `done errors=N` with N > 0.
pub fn parse(out: &str) -> Result<Report> {
    let mut start = None;
    let mut done = None;
    let mut ops = BTreeMap::new();
    for line in out.lines() {
        let Some(at) = line.find("VIRQ-BENCH ") else {
            continue;
        };
        let rest = &line[at + "VIRQ-BENCH ".len()..];
        let f = fields(rest);
        if let Some(e) = f.get("error") {
            bail!("the payload reported error={e}: {}", line.trim());
        }
        if rest.starts_with("start ") {
            start = Some(f);
        } else if rest.starts_with("done") {
            let errors: u64 = f
                .get("errors")
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("garbled line {:?}", line.trim()))?;
            ensure!(errors == 0, "the payload counted {errors} failed ops");
            done = Some(());
        } else if let Some(op) = f.get("op") {
            let entry = if let Some(why) = f.get("skipped") {
                OpLine::Skipped(why.clone())
            } else {
                let num = |k: &str| -> Result<u64> {
                    f.get(k)
                        .and_then(|v| v.parse().ok())
                        .with_context(|| format!("garbled line {:?}: no {k}=<number>", line.trim()))
                };
                const LAP_KEYS: &[&str] = &["stalls", "stall_ticks", "min", "median", "p90", "max"];
                let detail: Vec<String> = rest
                    .split_whitespace()
                    .filter(|w| {
                        let k = w.split('=').next().unwrap_or("");
                        !["op", "n", "ticks", "hist"].contains(&k) && !LAP_KEYS.contains(&k)
                    })
                    .map(String::from)
                    .collect();
                let laps = match f.get("hist") {
                    None => None,
                    Some(h) => Some(Laps {
                        stalls: num("stalls")?,
                        stall_ticks: num("stall_ticks")?,
                        min: num("min")?,
                        median: num("median")?,
                        p90: num("p90")?,
                        max: num("max")?,
                        hist: h
                            .split(',')
                            .map(|e| {
                                let (d, c) = e.split_once(':')?;
                                Some((d.trim_end_matches('+').parse().ok()?, c.parse().ok()?))
                            })
                            .collect::<Option<Vec<_>>>()
                            .with_context(|| format!("garbled hist= in {:?}", line.trim()))?,
                    }),
                };
                OpLine::Timed {
                    n: num("n")?,
                    ticks: num("ticks")?,
                    detail: (!detail.is_empty()).then(|| detail.join(" ")),
                    laps,
                }
            };
            ensure!(
                ops.insert(op.clone(), entry).is_none(),
                "op {op} reported twice"
            );
        } else {
            bail!("garbled line {:?}", line.trim());
        }
    }
    let start = start.context("no `VIRQ-BENCH start` line: the payload did not run")?;
    done.context("no `VIRQ-BENCH done` line: the payload did not finish")?;
    Ok(Report { start, ops })
}

/// [`parse`] for the KVM target, whose boot must also show the VMM ending with status 0:
/// an error line of the VMM or of `/init` (it says more than a missing payload line), a
/// missing payload line, a VMM status other than 0 are errors.
pub fn parse_kvm(out: &str) -> Result<Report> {
    if let Some(l) = out
        .lines()
        .find(|l| l.contains("VIRQ-KVM-VMM error=") || l.contains("VIRQ-KVM-INIT error="))
    {
        bail!("{}", l.trim());
    }
    let report = parse(out)?;
    let status = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("VIRQ-KVM-VMM-EXIT status="));
    ensure!(
        status == Some("0"),
        "the VMM's exit status is {status:?}, not 0"
    );
    Ok(report)
}

/// `report` has a line for every op in `ops` on `t`: timed with `n` where the op runs,
/// skipped where it does not.
pub fn check_ops(report: &Report, t: &Target, ops: &[&str], n: u64) -> Result<()> {
    for &op in ops {
        match (report.ops.get(op), t.runs(op)) {
            (None, _) => bail!("no line for op {op}"),
            (Some(OpLine::Timed { n: got, .. }), true) => {
                ensure!(*got == n, "op {op}: n={got}, asked for {n}")
            }
            (Some(OpLine::Skipped(why)), false) => {
                ensure!(why == Target::skip_reason(op), "op {op} skipped: {why}")
            }
            (Some(l), _) => bail!("op {op} on {}: unexpected {l:?}", t.name),
        }
    }
    let extra: Vec<&String> = report
        .ops
        .keys()
        .filter(|k| !ops.contains(&k.as_str()))
        .collect();
    ensure!(extra.is_empty(), "ops not asked for: {extra:?}");
    Ok(())
}

/// hyp's exit counters of guest `guest` by cause, summed over its vCPUs (`ACCT vcpu=…
/// guest=… cause=<name>(<code>) count=<n>` lines).
pub fn acct_exits(out: &str, guest: &str) -> Result<BTreeMap<String, u64>> {
    ensure!(
        out.lines().any(|l| l.trim() == "ACCT begin"),
        "no ACCT block (hyp prints it when the last guest stops)"
    );
    let mut m = BTreeMap::new();
    for l in out.lines().filter(|l| l.starts_with("ACCT vcpu=")) {
        let f = fields(l);
        if f.get("guest").map(String::as_str) != Some(guest) {
            continue;
        }
        // Other `ACCT vcpu=` lines (`imsic=hw hart=0 …`) carry no cause.
        let Some(cause) = f.get("cause") else {
            continue;
        };
        let n: u64 = f
            .get("count")
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("garbled {l:?}"))?;
        *m.entry(cause.clone()).or_insert(0) += n;
    }
    Ok(m)
}

/// KVM's counters per op, summed over the vCPUs, from the VMM's lines
/// `VIRQ-KVM-EXITS after=op=<op> vcpu=<i> console_calls=<c> <counter>=<delta> …` (the
/// change since the payload's previous line): `op -> counter -> count`. The window
/// ends with the op's own line, printed through `console_calls` SBI calls, so those
/// are taken out of `exits` and `ecall_exit_stat`. A VMM error line is an error.
pub fn kvm_exits(out: &str) -> Result<BTreeMap<String, BTreeMap<String, u64>>> {
    let mut m: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for l in out.lines() {
        let Some(at) = l.find("VIRQ-KVM-EXITS ") else {
            continue;
        };
        let f = fields(&l[at + "VIRQ-KVM-EXITS ".len()..]);
        if let Some(e) = f.get("error") {
            bail!("the VMM could not read KVM's stats: {e} ({l:?})");
        }
        let Some(op) = f.get("after").and_then(|a| a.strip_prefix("op=")) else {
            continue; // the `start` and `done` lines
        };
        let num = |k: &str| -> Result<u64> {
            f.get(k)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("garbled {l:?}: no {k}=<number>"))
        };
        let console = num("console_calls")?;
        let counters = m.entry(op.to_string()).or_default();
        for k in f.keys() {
            if ["after", "vcpu", "console_calls"].contains(&k.as_str()) {
                continue;
            }
            let mut v = num(k)?;
            if k == "exits" || k == "ecall_exit_stat" {
                v = v.saturating_sub(console);
            }
            *counters.entry(k.clone()).or_insert(0) += v;
        }
        counters.entry("exits".into()).or_insert(0);
    }
    Ok(m)
}

/// The exits KVM's counters give no cause for: SBI calls it answers in the kernel and
/// host interrupts.
const KVM_OTHER_EXITS: &str = "other(in-kernel SBI, host interrupt)";

/// Counters of KVM that count exits by cause (the rest are halt-polling and
/// scheduling counts: in the JSON, not in the cause breakdown).
fn is_kvm_exit_cause(name: &str) -> bool {
    name != "exits"
        && (name.ends_with("_exit_stat")
            || name.ends_with("_exits")
            || name.starts_with("mmio_exit_")
            || name.starts_with("csr_exit_"))
}

/// One boot: the payload on `t` running `ops`; the log goes to `target/bench/logs/`.
fn boot(
    t: &Target,
    built: &Built,
    size: Size,
    harts: u32,
    ops: &str,
    log: &str,
) -> Result<(Outcome, Report)> {
    let cmd = command(t, built, &cmdline(size, ops), harts, log)?;
    let shown = format!("{cmd:?}");
    let o = crate::qemu::run_command_watched(cmd, t.timeout(), false, None)?;
    let path = out_dir().join("logs").join(format!("{log}.log"));
    std::fs::create_dir_all(out_dir().join("logs"))?;
    std::fs::write(&path, format!("$ {shown}\n{}", o.output))?;
    let what = || {
        format!(
            "{}, {harts} hart(s), bench.ops={ops} (log {})",
            t.name,
            path.display()
        )
    };
    ensure!(
        !o.timed_out,
        "{}: QEMU did not stop within {} s",
        what(),
        t.timeout().as_secs()
    );
    let report = if t.host == Host::Kvm {
        parse_kvm(&o.output)
    } else {
        parse(&o.output)
    }
    .with_context(what)?;
    ensure!(
        o.status == Some(0),
        "{}: QEMU exit status {:?}",
        what(),
        o.status
    );
    Ok((o, report))
}

/// One op's figures on one target (JSON).
#[derive(Serialize, Debug, Clone)]
pub struct OpResult {
    pub op: String,
    pub title: String,
    /// Harts (and vCPUs under hyp and KVM) of the boot.
    pub harts: u32,
    pub n: u64,
    pub ticks: u64,
    /// `ticks * 100 / n`; `None` when skipped.
    pub instructions_per_op: Option<f64>,
    pub detail: Option<String>,
    pub skipped: Option<String>,
    /// Ping-pongs: per-lap figures (ticks).
    pub laps: Option<Laps>,
    /// hyp (full run only) and KVM; without [`Self::setup_exits_per_op`].
    pub exits_per_op: Option<f64>,
    pub exits_per_op_by_cause: BTreeMap<String, f64>,
    /// KVM: every counter of its binary stats (exits, halt polling, …) per op, summed
    /// over the vCPUs.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub kvm_counters_per_op: BTreeMap<String, f64>,
    /// hyp on aarch64 (full run): the host interrupts its CPUs took per op, by kind
    /// (`kick`, `vtimer`, …; taken in the guest they are `irq` exits, taken while the
    /// CPU idled they are not exits).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub host_interrupts_per_op: BTreeMap<String, f64>,
    /// Exits of the op's untimed set-up, by cause, left out of `exits_per_op` (aarch64
    /// `eoi`: the timer interrupt each lap takes before its EOI is timed).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub setup_exits_per_op: BTreeMap<String, f64>,
    /// The spinning ping-pongs: both sides' yields per lap and their instructions as
    /// measured (`instructions_per_op` is this minus yields × the `yield` op's figure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spin: Option<SpinFigures>,
}

/// What a spinning ping-pong's figure was made from ([`take_out_yields`]).
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct SpinFigures {
    /// Instructions per lap as timed, yields included.
    pub measured_per_op: f64,
    /// Yields of both harts per timed lap (the payload's `yields=` over `n`).
    pub yields_per_op: f64,
    /// Instructions per yield (the same target's `yield` op).
    pub instructions_per_yield: f64,
}

#[derive(Serialize, Debug, Clone)]
pub struct TargetResult {
    pub name: String,
    /// `riscv64` or `aarch64`.
    pub arch: String,
    pub machine: String,
    pub hypervisor: String,
    /// Operations timed and warm-up per op on this target.
    pub n: u64,
    pub warmup: u64,
    pub start: BTreeMap<String, String>,
    pub ops: Vec<OpResult>,
}

/// A KVM arm64 figure from the text of issue 13 (not measured here).
#[derive(Serialize, Debug, Clone)]
pub struct Anchor {
    pub op: String,
    pub instructions_per_op: f64,
    /// The issue's words for it.
    pub issue_text: String,
}

#[derive(Serialize, Debug, Clone)]
pub struct SystemResult {
    pub date: String,
    pub qemu: String,
    /// `qemu-system-aarch64 --version`, if an aarch64 target ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qemu_aarch64: Option<String>,
    pub opensbi: String,
    /// The commit measured (`git describe --always --dirty`).
    pub commit: String,
    /// The host's kernel (`uname -sr`).
    pub host: String,
    pub command: String,
    pub method: String,
    pub quick: bool,
    pub n: u64,
    pub warmup: u64,
    /// The KVM target's guest kernel and module (`kvm.ko`'s vermagic), if it ran.
    pub kvm: Option<String>,
    pub targets: Vec<TargetResult>,
    /// If an aarch64 target ran: KVM arm64 per-op figures quoted from issue 13
    /// ("Speed"; Debian 6.12 KVM nested in this QEMU), for comparison, not measured.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kvm_arm64_anchors: Vec<Anchor>,
}

/// An op's figures on `t` from its line: instructions per op are `ticks *
/// insns_per_tick / n` (riscv64: `ticks * 100 / n`), for a ping-pong over the laps that
/// were not stalls.
fn op_result(t: &Target, op: &str, harts: u32, line: &OpLine) -> OpResult {
    let mut r = OpResult {
        op: op.into(),
        title: op_title(t.arch, op).into(),
        harts,
        n: 0,
        ticks: 0,
        instructions_per_op: None,
        detail: None,
        skipped: None,
        laps: None,
        exits_per_op: None,
        exits_per_op_by_cause: BTreeMap::new(),
        kvm_counters_per_op: BTreeMap::new(),
        host_interrupts_per_op: BTreeMap::new(),
        setup_exits_per_op: BTreeMap::new(),
        spin: None,
    };
    match line {
        OpLine::Timed {
            n,
            ticks,
            detail,
            laps,
        } => {
            let (d, k) = match laps {
                Some(l) => (ticks - l.stall_ticks.min(*ticks), n - l.stalls.min(*n)),
                None => (*ticks, *n),
            };
            r.n = *n;
            r.ticks = *ticks;
            r.instructions_per_op = (k > 0).then(|| d as f64 * t.insns_per_tick() / k as f64);
            r.detail = detail.clone();
            r.laps = laps.clone();
        }
        OpLine::Skipped(why) => r.skipped = Some(why.clone()),
    }
    r
}

/// The spinning ping-pongs (`ipi_spin`, `msi_spin`) as the path alone: each empty poll
/// of a spinning side ends in a yield to QEMU's round robin (guest/bench `yield_hart`),
/// and those polls are instructions of no path; the payload counts them (`yields=`, both
/// harts, while a timed lap that was no stall was open) and its `yield` op times one (`ticks`: the `sip` loop,
/// `msi_ticks`: the `stopei` loop), so they are taken out exactly. Without the `yield`
/// op in the run (`--target` runs always have it) the measured figure stays.
fn take_out_yields(ops: &mut [OpResult]) -> Result<()> {
    let per_yield = |key: Option<&str>| -> Option<f64> {
        let y = ops.iter().find(|o| o.op == "yield")?;
        let per = y.instructions_per_op?;
        match key {
            None => Some(per),
            Some(k) => {
                let ticks: f64 = y
                    .detail
                    .as_deref()?
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix(k)?.strip_prefix('=')?.parse().ok())?;
                Some(ticks * 100.0 / y.n as f64)
            }
        }
    };
    let costs = [
        ("ipi_spin", per_yield(None)),
        ("msi_spin", per_yield(Some("msi_ticks"))),
    ];
    for o in ops.iter_mut() {
        let Some((_, Some(cost))) = costs.iter().find(|(name, _)| *name == o.op) else {
            continue;
        };
        let (Some(measured), Some(detail)) = (o.instructions_per_op, o.detail.as_deref()) else {
            continue;
        };
        let yields: u64 = detail
            .split_whitespace()
            .find_map(|w| w.strip_prefix("yields=")?.parse().ok())
            .with_context(|| format!("{}: no yields=<number> in {detail:?}", o.op))?;
        // `yields=` are those of the laps that were no stall, as the measured figure.
        let laps = o.n - o.laps.as_ref().map_or(0, |l| l.stalls.min(o.n));
        ensure!(laps > 0, "{}: no lap", o.op);
        let yields_per_op = yields as f64 / laps as f64;
        let path = measured - yields_per_op * cost;
        ensure!(
            path > 0.0,
            "{}: {measured} instructions per lap, {yields_per_op} yields of {cost} each",
            o.op
        );
        o.instructions_per_op = Some(path);
        o.spin = Some(SpinFigures {
            measured_per_op: measured,
            yields_per_op,
            instructions_per_yield: *cost,
        });
    }
    Ok(())
}

pub(crate) fn command_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// `cargo xtask bench [--system [--quick] [--target NAME]…]`.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.boot {
        return crate::bootbench::run(args.boot_seeds);
    }
    if args.net {
        return crate::netbench::run(&args.net_args);
    }
    if !args.system {
        return criterion();
    }
    system(args.quick, &args.targets).map(|_| ())
}

/// The quick check `cargo xtask test` runs.
pub fn quick() -> Result<()> {
    system(true, &[]).map(|_| ())
}

/// The targets of a run: `--quick` leaves KVM out; `only` (names) restricts.
fn selected(quick: bool, only: &[String]) -> Result<Vec<&'static Target>> {
    for name in only {
        ensure!(
            TARGETS.iter().any(|t| t.name == name),
            "--target {name}: not one of {}",
            TARGETS
                .iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let picked: Vec<&Target> = TARGETS
        .iter()
        .filter(|t| !quick || t.in_quick())
        .filter(|t| only.is_empty() || only.iter().any(|n| n == t.name))
        .collect();
    ensure!(
        !picked.is_empty(),
        "no target left (the KVM target is not part of --quick)"
    );
    Ok(picked)
}

/// Build, boot every target (of `only`, if given), write the JSON and the plots, print
/// the table.
pub fn system(quick: bool, only: &[String]) -> Result<SystemResult> {
    let began = Instant::now();
    let targets_run = selected(quick, only)?;
    let with_riscv = targets_run.iter().any(|t| t.arch == Arch::Riscv64);
    let with_arm = targets_run.iter().any(|t| t.arch == Arch::Aarch64);
    let with_kvm = targets_run.iter().any(|t| t.host == Host::Kvm);
    if with_riscv {
        crate::setup::ensure_all()?;
    }
    if with_kvm {
        crate::setup::ensure_kvm_vmm()?;
    }
    let riscv = if with_riscv {
        Some((crate::qemu::build(false)?, crate::qemu::build_bench()?))
    } else {
        None
    };
    let (kvm, kvm_versions) = match (with_kvm, &riscv) {
        (true, Some((_, payload))) => {
            let guest = crate::images::ensure_debian(Arch::Riscv64, None)?;
            let versions = format!(
                "Debian linux-image-{}-riscv64, kvm.ko vermagic \"{}\"",
                guest.kernel_version,
                crate::kvm::kvm_vermagic(&guest.modules)?
            );
            (Some(crate::kvm::boot_images(payload)?), Some(versions))
        }
        _ => (None, None),
    };
    let arm = if with_arm {
        Some(crate::armbench::build()?)
    } else {
        None
    };
    let built = Built { riscv, kvm, arm };
    let size = if quick { QUICK } else { FULL };
    // Boots: each shape of each target; in the full run also, per hyp target and shape,
    // one with no op and one per op (exit counts; KVM counts them in its one boot).
    let total: usize = targets_run
        .iter()
        .map(|t| {
            let exits = !quick && t.host == Host::Hyp;
            t.boots()
                .iter()
                .map(|b| 1 + if exits { b.1.len() + 1 } else { 0 })
                .sum::<usize>()
        })
        .sum();
    let mut step = 0;
    let mut progress = |what: &str| {
        step += 1;
        eprintln!(
            "bench --system [{step}/{total}] {what} (at {:.1} s)",
            began.elapsed().as_secs_f64()
        );
    };
    let mut opensbi = String::from("unknown");
    let mut targets = Vec::new();
    for t in targets_run {
        let mut ops = Vec::new();
        let mut start = BTreeMap::new();
        for &(harts, boot_ops) in t.boots() {
            let list = boot_ops.join(",");
            progress(&format!(
                "{}, {harts} hart(s): {list}, n={}",
                t.name, size.n
            ));
            let log = format!("{}-{harts}", t.name);
            let (o, report) = boot(t, &built, size, harts, &list, &log)?;
            check_ops(&report, t, boot_ops, size.n).with_context(|| log.clone())?;
            match t.host {
                Host::Hyp => {
                    hyp_exits(t, &o.output).with_context(|| log.clone())?;
                }
                Host::Kvm => {}
                Host::Bare => {
                    if let Some(v) = o.output.lines().find_map(|l| {
                        l.trim()
                            .strip_prefix("OpenSBI ")
                            .filter(|v| v.starts_with('v'))
                    }) {
                        opensbi = v.to_string();
                    }
                }
            }
            if harts == 1 {
                start = report.start.clone();
            }
            let first = ops.len();
            for &op in boot_ops {
                ops.push(op_result(t, op, harts, &report.ops[op]));
            }
            if t.arch == Arch::Aarch64 {
                check_plausible(&ops[first..]).with_context(|| log.clone())?;
            }
            let per = (size.n + size.warmup) as f64;
            if t.host == Host::Kvm {
                let counts = kvm_exits(&o.output).with_context(|| log.clone())?;
                for r in ops[first..].iter_mut().filter(|r| r.skipped.is_none()) {
                    let c = counts.get(&r.op).with_context(|| {
                        format!("{log}: no KVM counters after op {} (VIRQ-KVM-EXITS)", r.op)
                    })?;
                    r.exits_per_op = Some(c["exits"] as f64 / per);
                    let mut by_cause = 0;
                    for (k, &v) in c {
                        if v > 0 && k != "exits" {
                            r.kvm_counters_per_op.insert(k.clone(), v as f64 / per);
                        }
                        if v > 0 && is_kvm_exit_cause(k) {
                            r.exits_per_op_by_cause.insert(k.clone(), v as f64 / per);
                            by_cause += v;
                        }
                    }
                    // KVM counts no cause for the SBI calls it answers itself (only those
                    // it forwards, as `ecall_exit_stat`) nor for host interrupts.
                    let other = c["exits"].saturating_sub(by_cause);
                    if other > 0 {
                        r.exits_per_op_by_cause
                            .insert(KVM_OTHER_EXITS.into(), other as f64 / per);
                    }
                }
            }
            if t.host != Host::Hyp || quick {
                continue;
            }
            progress(&format!(
                "{}, {harts} hart(s): no op (exit baseline)",
                t.name
            ));
            let (o, r) = boot(t, &built, size, harts, "none", &format!("{log}-none"))?;
            check_ops(&r, t, &[], size.n)?;
            let (base, base_irqs) = hyp_exits(t, &o.output)?;
            for r in ops[first..].iter_mut().filter(|r| r.skipped.is_none()) {
                progress(&format!(
                    "{}, {harts} hart(s): {} alone (exits)",
                    t.name, r.op
                ));
                let (o, rep) = boot(t, &built, size, harts, &r.op, &format!("{log}-{}", r.op))?;
                check_ops(&rep, t, &[r.op.as_str()], size.n)?;
                let (with, with_irqs) = hyp_exits(t, &o.output)?;
                let delta = |with: &BTreeMap<String, u64>, base: &BTreeMap<String, u64>| {
                    let mut m = BTreeMap::new();
                    for (cause, &c) in with {
                        let d =
                            c.saturating_sub(base.get(cause).copied().unwrap_or(0)) as f64 / per;
                        if d > 0.0 {
                            m.insert(cause.clone(), d);
                        }
                    }
                    m
                };
                r.exits_per_op_by_cause = delta(&with, &base);
                if let Some((cause, per_lap)) = setup_exits(t, &r.op) {
                    let c = r.exits_per_op_by_cause.entry(cause.into()).or_insert(0.0);
                    ensure!(
                        *c >= per_lap,
                        "{log}-{}: {c} {cause} exits per lap, fewer than its set-up's {per_lap}",
                        r.op
                    );
                    *c -= per_lap;
                    if *c < 1e-9 {
                        r.exits_per_op_by_cause.remove(cause);
                    }
                    r.setup_exits_per_op.insert(cause.into(), per_lap);
                }
                r.exits_per_op = Some(r.exits_per_op_by_cause.values().fold(0.0, |a, b| a + b));
                r.host_interrupts_per_op = delta(&with_irqs, &base_irqs);
            }
        }
        if t.arch == Arch::Riscv64 {
            take_out_yields(&mut ops).with_context(|| t.name)?;
        }
        targets.push(TargetResult {
            name: t.name.into(),
            arch: t.arch.name().into(),
            machine: t.machine_option().into(),
            hypervisor: match (t.host, t.arch) {
                (Host::Hyp, Arch::Riscv64) => {
                    let sets: String = t.sets.iter().map(|s| format!(" --set {s}")).collect();
                    format!("hyp (configs/{}.toml{sets})", t.config())
                }
                (Host::Hyp, Arch::Aarch64) => format!(
                    "hyp at EL2 (one guest {:?}, a vCPU per CPU, {}, the PL011 passed \
                     through; xtask/src/armbench.rs)",
                    crate::armbench::GUEST,
                    if t.gicv4() {
                        "vGICv3 with a GICv4.0 vPE per vCPU (topology vgicv4)"
                    } else {
                        "vGICv3"
                    }
                ),
                (Host::Kvm, _) => format!(
                    "KVM RISC-V (Debian's kvm.ko, {}, in a Debian guest with smp = vCPUs; \
                     tools/kvm-vmm, in-kernel AIA, hwaccel)",
                    crate::kvm::KVM_PARAMS.join(" ")
                ),
                (Host::Bare, Arch::Riscv64) => "none (OpenSBI only)".into(),
                (Host::Bare, Arch::Aarch64) => {
                    "none: EL1 on a machine without EL2/EL3; QEMU answers PSCI hvc itself".into()
                }
            },
            n: size.n,
            warmup: size.warmup,
            start,
            ops,
        });
    }
    let result = SystemResult {
        date: command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        qemu: command_line("qemu-system-riscv64", &["--version"]),
        qemu_aarch64: with_arm.then(|| command_line(crate::setup::QEMU_ARM_BINARY, &["--version"])),
        opensbi,
        commit: command_line(
            "git",
            &[
                "-C",
                &root().display().to_string(),
                "describe",
                "--always",
                "--dirty",
            ],
        ),
        host: command_line("uname", &["-sr"]),
        command: format!(
            "cargo xtask bench --system{}{}",
            if quick { " --quick" } else { "" },
            only.iter()
                .map(|t| format!(" --target {t}"))
                .collect::<String>(),
        ),
        method: "QEMU -icount shift=0,sleep=off: one instruction per ns. riscv64: rdtime \
                 ticks at 10 MHz, instructions per op = ticks * 100 / n; aarch64: CNTVCT_EL0 \
                 at 1 GHz, instructions per op = ticks / n. Of the whole machine \
                 (payload, OpenSBI, hyp; under KVM also the Debian host kernel and the VMM). \
                 Ops on 1 hart (1 vCPU); ping-pongs on 2 harts \
                 (2 vCPUs), timed per lap, laps of 100,000 instructions or more (QEMU's \
                 round-robin waking the other hart late) left out of the mean and counted \
                 as stalls. \
                 Exits per op: hyp ACCT counters (all vCPUs) of a boot running only that op \
                 minus a boot of the same shape running none, over n + warmup; KVM: its \
                 binary stats (all vCPUs) between the payload's lines, less the console \
                 calls that print them, over n + warmup."
            .into(),
        quick,
        n: size.n,
        warmup: size.warmup,
        kvm: kvm_versions,
        targets,
        kvm_arm64_anchors: if with_arm {
            crate::armbench::KVM_ANCHORS
                .iter()
                .map(|&(op, v, text)| Anchor {
                    op: op.into(),
                    instructions_per_op: v,
                    issue_text: text.into(),
                })
                .collect()
        } else {
            Vec::new()
        },
    };
    let suffix = match (quick, only.is_empty()) {
        (true, _) => "-quick",
        (false, false) => "-partial",
        (false, true) => "",
    };
    let json = out_dir().join(format!("system{suffix}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(&result)? + "\n")?;
    let mut files = vec![json];
    for (arch, present, stem) in [
        (Arch::Riscv64, with_riscv, "system"),
        (Arch::Aarch64, with_arm, "system-arm"),
    ] {
        if !present {
            continue;
        }
        let insn_svg = out_dir().join(format!("{stem}-instructions{suffix}.svg"));
        plot_instructions(&result, arch, &insn_svg)?;
        files.push(insn_svg);
        if !quick {
            let exits_svg = out_dir().join(format!("{stem}-exits{suffix}.svg"));
            plot_exits(&result, arch, &exits_svg)?;
            files.push(exits_svg);
            let laps_svg = out_dir().join(format!("{stem}-pingpong{suffix}.svg"));
            if plot_pingpong(&result, arch, &laps_svg)? {
                files.push(laps_svg);
            }
        }
    }
    println!("{}", table(&result));
    println!(
        "wrote {} ({:.1} s)",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        began.elapsed().as_secs_f64()
    );
    Ok(result)
}

/// hyp's exit counters of the guest `bench` on `t`: by cause, and (aarch64) its CPUs'
/// host interrupts by kind.
fn hyp_exits(t: &Target, out: &str) -> Result<(BTreeMap<String, u64>, BTreeMap<String, u64>)> {
    match t.arch {
        Arch::Riscv64 => Ok((acct_exits(out, "bench")?, BTreeMap::new())),
        Arch::Aarch64 => crate::armbench::acct(out, crate::armbench::GUEST),
    }
}

/// The exits of `op`'s untimed set-up on `t` (see `crate::armbench::setup_exits`).
fn setup_exits(t: &Target, op: &str) -> Option<(&'static str, f64)> {
    match t.arch {
        Arch::Riscv64 => None,
        Arch::Aarch64 => crate::armbench::setup_exits(op),
    }
}

/// Every timed op printed a plausible figure: at least one instruction per op and
/// fewer than 10^7 (10 ms of virtual time each: a lost interrupt or a garbled count,
/// not a slow path). A sanity bound, not a timing threshold.
fn check_plausible(ops: &[OpResult]) -> Result<()> {
    for o in ops.iter().filter(|o| o.skipped.is_none()) {
        let v = o
            .instructions_per_op
            .with_context(|| format!("op {}: no figure (every lap a stall?)", o.op))?;
        ensure!(
            (1.0..1e7).contains(&v),
            "op {}: {v:.1} instructions per op is not a plausible figure",
            o.op
        );
    }
    Ok(())
}

fn find<'a>(r: &'a SystemResult, target: &str, op: &str) -> Option<&'a OpResult> {
    r.targets
        .iter()
        .find(|t| t.name == target)?
        .ops
        .iter()
        .find(|o| o.op == op)
}

/// The table: instructions per op on each target that ran; under a hypervisor as a
/// ratio to bare QEMU on the same machine, with its exits per op. One section per
/// architecture; the aarch64 one also gives issue 13's KVM arm64 anchors and hyp's
/// ratio to them.
pub fn table(r: &SystemResult) -> String {
    let mut s = format!(
        "instructions per op (n={}, warm-up {}; ops on 1 hart, ping-pongs on 2; hyp, kvm: ratio to \
         bare on the same machine, exits per op)\n",
        r.n, r.warmup
    );
    for t in r.targets.iter().filter(|t| t.n != r.n) {
        s += &format!("{}: n={}, warm-up {}\n", t.name, t.n, t.warmup);
    }
    for arch in [Arch::Riscv64, Arch::Aarch64] {
        let cols: Vec<&Target> = TARGETS
            .iter()
            .filter(|t| t.arch == arch && r.targets.iter().any(|x| x.name == t.name))
            .collect();
        let Some(first) = cols.first() else {
            continue;
        };
        let anchors = arch == Arch::Aarch64;
        if anchors {
            s += "aarch64 (KVM anchor: issue 13's text, not measured here; hyp/KVM: the \
                  hyp-arm figure over it)\n";
        }
        let width = |t: &Target| if t.virtualized() { 26 } else { 10 };
        s += &format!("{:<12}", "op");
        for t in &cols {
            s += &format!(" {:>w$}", t.name, w = width(t));
        }
        if anchors {
            s += &format!(" {:>11} {:>8}", "KVM anchor", "hyp/KVM");
        }
        s += "\n";
        for &op in first.ops() {
            s += &format!("{op:<12}");
            for t in &cols {
                let v = find(r, t.name, op).and_then(|o| o.instructions_per_op);
                let mut c = v.map_or("-".to_string(), |v| format!("{v:.1}"));
                if let (true, Some(v), Some(h)) = (t.virtualized(), v, find(r, t.name, op)) {
                    let comparable =
                        arch != Arch::Aarch64 || crate::armbench::bare_is_reference(op);
                    let ratio = find(r, t.bare(), op)
                        .and_then(|o| o.instructions_per_op)
                        .map(|b| {
                            if b > 0.0 && comparable {
                                format!("{:.2}x", v / b)
                            } else {
                                "-".into()
                            }
                        });
                    let exits = h.exits_per_op.map(|e| format!("{e:.2} ex"));
                    let parts: Vec<String> = ratio.into_iter().chain(exits).collect();
                    if !parts.is_empty() {
                        c += &format!(" ({})", parts.join(", "));
                    }
                }
                s += &format!(" {c:>w$}", w = width(t));
            }
            if anchors {
                let a = crate::armbench::anchor(op);
                let hyp = find(r, "hyp-arm", op).and_then(|o| o.instructions_per_op);
                s += &format!(
                    " {:>11} {:>8}",
                    a.map_or("-".into(), |(v, _)| format!("{v:.0}")),
                    match (a, hyp) {
                        (Some((k, _)), Some(h)) if k > 0.0 => format!("{:.2}x", h / k),
                        _ => "-".into(),
                    }
                );
            }
            s += "\n";
        }
    }
    s
}

/// Series colours: bare, hyp-AIA, hyp-PLIC, bare-PLIC, KVM; aarch64 bare, hyp, and the
/// KVM anchors.
fn colour(target: &str) -> plotters::style::RGBColor {
    use plotters::style::RGBColor;
    match target {
        "bare-aia" | "arm-bare" => RGBColor(0x55, 0x55, 0x55),
        "bare-plic" => RGBColor(0xaa, 0xaa, 0xaa),
        "hyp-aia" | "hyp-arm" => RGBColor(0x1f, 0x77, 0xb4),
        "hyp-aia-direct" | "hyp-arm-v4" => RGBColor(0x2c, 0xa0, 0x2c),
        "kvm-aia" | ARM_ANCHOR_SERIES => RGBColor(0xd6, 0x27, 0x28),
        _ => RGBColor(0xff, 0x7f, 0x0e),
    }
}

/// The series of issue 13's KVM arm64 figures in the aarch64 plot.
const ARM_ANCHOR_SERIES: &str = "KVM arm64 (issue 13 text)";

/// The ops of `arch` that are plotted (all but `nop`).
fn plotted_ops(arch: Arch) -> Vec<&'static str> {
    let ops = match arch {
        Arch::Riscv64 => OPS,
        Arch::Aarch64 => crate::armbench::OPS,
    };
    ops.iter().copied().filter(|o| *o != "nop").collect()
}

/// Instructions per op of `arch` (ops except `nop`), a bar per target; for aarch64 also
/// issue 13's KVM arm64 anchors.
fn plot_instructions(r: &SystemResult, arch: Arch, path: &Path) -> Result<()> {
    let ops = plotted_ops(arch);
    let mut series: Vec<(&str, Vec<Option<f64>>)> = TARGETS
        .iter()
        .filter(|t| t.arch == arch && r.targets.iter().any(|x| x.name == t.name))
        .map(|t| {
            (
                t.name,
                ops.iter()
                    .map(|op| find(r, t.name, op).and_then(|o| o.instructions_per_op))
                    .collect(),
            )
        })
        .collect();
    if arch == Arch::Aarch64 {
        series.push((
            ARM_ANCHOR_SERIES,
            ops.iter()
                .map(|op| crate::armbench::anchor(op).map(|a| a.0))
                .collect(),
        ));
    }
    let title = match arch {
        Arch::Riscv64 => format!(
            "Instructions per operation (QEMU -icount, n={}; ping-pongs per round trip)",
            r.n
        ),
        Arch::Aarch64 => format!(
            "aarch64: instructions per operation (QEMU -icount, n={}; ping-pong per round trip)",
            r.n
        ),
    };
    bar_chart(path, &title, "instructions per op", &ops, &series, 0)
}

/// Exits per op of `arch` under hyp and KVM.
fn plot_exits(r: &SystemResult, arch: Arch, path: &Path) -> Result<()> {
    let ops = plotted_ops(arch);
    let series: Vec<(&str, Vec<Option<f64>>)> = TARGETS
        .iter()
        .filter(|t| t.arch == arch && t.virtualized() && r.targets.iter().any(|x| x.name == t.name))
        .map(|t| {
            (
                t.name,
                ops.iter()
                    .map(|op| find(r, t.name, op).and_then(|o| o.exits_per_op))
                    .collect(),
            )
        })
        .collect();
    let title = match arch {
        Arch::Riscv64 => "exits per operation (hyp: ACCT counters; KVM: its binary stats)",
        Arch::Aarch64 => {
            "aarch64: hyp exits per operation (ACCT counters; eoi without its set-up's timer exit)"
        }
    };
    bar_chart(path, title, "exits per op", &ops, &series, 2)
}

/// One line of the ping-pong plot: its name, colour and `(instructions, laps)` points.
type LapSeries = (String, plotters::style::RGBColor, Vec<(f64, f64)>);

/// The ping-pongs' per-lap distributions on `arch`: one line per target and ping-pong
/// op, laps per bucket of instructions per lap (the payload's ticks × instructions per
/// tick), the payload's stall bucket (laps of 1,023 ticks or more) left out. False if
/// no ping-pong ran.
fn plot_pingpong(r: &SystemResult, arch: Arch, path: &Path) -> Result<bool> {
    use plotters::prelude::*;
    let mut series: Vec<LapSeries> = Vec::new();
    for tr in &r.targets {
        let Some(t) = TARGETS.iter().find(|t| t.name == tr.name && t.arch == arch) else {
            continue;
        };
        for o in &tr.ops {
            let Some(laps) = &o.laps else {
                continue;
            };
            let points: Vec<(f64, f64)> = laps
                .hist
                .iter()
                .filter(|(ticks, _)| *ticks < 1023)
                .map(|&(ticks, n)| (ticks as f64 * t.insns_per_tick(), n as f64))
                .collect();
            if !points.is_empty() {
                series.push((format!("{} {}", tr.name, o.op), colour(&tr.name), points));
            }
        }
    }
    if series.is_empty() {
        return Ok(false);
    }
    let xmax = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .fold(1.0f64, f64::max)
        * 1.08;
    let ymax = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plotting {}: {e}", path.display());
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title = match arch {
        Arch::Riscv64 => "Ping-pong round trips: laps per instructions-per-lap bucket",
        Arch::Aarch64 => "aarch64: SGI ping-pong round trips, laps per bucket",
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax, 0f64..ymax)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("instructions per round trip")
        .y_desc("laps")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| err(&e))?;
    for (k, (name, c, points)) in series.iter().enumerate() {
        // The same target's ops: solid for the first, dashed-looking (thinner) after.
        let style = ShapeStyle::from(c).stroke_width(if k % 2 == 0 { 2 } else { 1 });
        let c = *c;
        chart
            .draw_series(std::iter::once(PathElement::new(points.clone(), style)))
            .map_err(|e| err(&e))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], c));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperMiddle)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(true)
}

/// A grouped bar chart: one group per entry of `groups`, one bar per series (`None`:
/// "n/a"), each labelled with its value (`decimals`).
fn bar_chart(
    path: &Path,
    title: &str,
    y_desc: &str,
    groups: &[&str],
    series: &[(&str, Vec<Option<f64>>)],
    decimals: usize,
) -> Result<()> {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let max = series
        .iter()
        .flat_map(|s| s.1.iter().flatten())
        .fold(0.0f64, |a, &b| a.max(b));
    let top = if max > 0.0 { max * 1.15 } else { 1.0 };
    let root_area = SVGBackend::new(path, (960, 540)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plotting {}: {e}", path.display());
    root_area.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root_area)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..groups.len() as f64, 0f64..top)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(8)
        .y_label_formatter(&|v| format!("{v:.decimals$}"))
        .y_desc(y_desc)
        .draw()
        .map_err(|e| err(&e))?;
    let k = series.len() as f64;
    let width = 0.8 / k;
    let label =
        TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (si, (name, values)) in series.iter().enumerate() {
        let c = colour(name);
        let x0 = |gi: usize| gi as f64 + 0.1 + si as f64 * width;
        chart
            .draw_series(values.iter().enumerate().filter_map(|(gi, v)| {
                v.map(|v| Rectangle::new([(x0(gi), 0.0), (x0(gi) + width * 0.92, v)], c.filled()))
            }))
            .map_err(|e| err(&e))?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
        chart
            .draw_series(values.iter().enumerate().map(|(gi, v)| {
                let text = match v {
                    Some(v) => format!("{v:.decimals$}"),
                    None => "n/a".into(),
                };
                Text::new(
                    text,
                    (x0(gi) + width * 0.46, v.unwrap_or(0.0)),
                    label.clone(),
                )
            }))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    // Group names under the axis, centred on each group.
    let under =
        TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (gi, g) in groups.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(gi as f64 + 0.5, 0.0));
        root_area
            .draw(&Text::new(g.to_string(), (x, y + 8), under.clone()))
            .map_err(|e| err(&e))?;
    }
    root_area.present().map_err(|e| err(&e))?;
    Ok(())
}

/// `cargo xtask bench` without `--system`: the criterion benchmarks.
fn criterion() -> Result<()> {
    crate::util::run_cmd(crate::util::cargo().args(["bench", "-p", "virq-core"]))?;
    crate::util::run_cmd(crate::util::cargo().args(["bench", "-p", "virq-riscv"]))?;
    crate::util::run_cmd(crate::util::cargo().args(["bench", "-p", "virq-arm"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
OpenSBI v1.5
VIRQ-BENCH start hart=0 harts=1 intc=aia aplic=0xd000000 imsic=0x28000000 stride=0x4000 plic=0x0 n=100 warmup=10
VIRQ-BENCH op=nop n=100 ticks=0
VIRQ-BENCH op=sbi_base n=100 ticks=310
VIRQ-BENCH op=ctrl_read n=100 ticks=10 reg=aplic.domaincfg
VIRQ-BENCH op=ipi_self n=100 ticks=2850
VIRQ-BENCH op=msi_self n=100 ticks=10
VIRQ-BENCH op=uart_thre n=100 ticks=14 intc=aplic-msi
VIRQ-BENCH op=yield n=100 ticks=8 msi_ticks=8
VIRQ-BENCH done errors=0
";

    #[test]
    fn a_good_run_parses_and_checks() {
        let r = parse(GOOD).unwrap();
        assert_eq!(r.start["intc"], "aia");
        assert_eq!(
            r.ops["ctrl_read"],
            OpLine::Timed {
                n: 100,
                ticks: 10,
                detail: Some("reg=aplic.domaincfg".into()),
                laps: None,
            }
        );
        let single = BOOTS[0].1;
        check_ops(&r, &TARGETS[0], single, 100).unwrap();
        // On a PLIC target the self-MSI must be skipped.
        assert!(check_ops(&r, &TARGETS[2], single, 100).is_err());
        assert!(check_ops(&r, &TARGETS[0], single, 1000).is_err());
        // Lines for ops not asked for, or missing ones.
        assert!(check_ops(&r, &TARGETS[0], &single[..4], 100).is_err());
        assert!(check_ops(&r, &TARGETS[0], OPS, 100).is_err());
    }

    #[test]
    fn the_wired_interrupt_runs_everywhere_but_under_kvm() {
        let kvm = TARGETS.iter().find(|t| t.host == Host::Kvm).unwrap();
        let single = BOOTS[0].1;
        let skipped = GOOD.replace(
            "op=uart_thre n=100 ticks=14 intc=aplic-msi",
            "op=uart_thre skipped=no-uart",
        );
        // KVM's VMM gives the payload no UART: the op must say so, and only there.
        check_ops(&parse(&skipped).unwrap(), kvm, single, 100).unwrap();
        assert!(check_ops(&parse(GOOD).unwrap(), kvm, single, 100).is_err());
        assert!(check_ops(&parse(&skipped).unwrap(), &TARGETS[1], single, 100).is_err());
        // A lost interrupt is the payload's error line, never a figure.
        let lost = GOOD.replace("n=100 ticks=14 intc=aplic-msi", "error=thre-lost");
        assert!(parse(&lost).is_err());
    }

    #[test]
    fn a_broken_run_fails() {
        let broken = [
            GOOD.replace("ticks=2850", "ticks=28x0"),
            GOOD.replace("VIRQ-BENCH op=ipi_self n=100 ticks=2850\n", ""),
            GOOD.replace("VIRQ-BENCH done errors=0\n", ""),
            GOOD.replace("errors=0", "errors=1"),
            GOOD.replace("ticks=2850", "error=ssip-lost"),
            GOOD.replace("VIRQ-BENCH start", "VIRQ-BENCH strat"),
            GOOD.replace(
                "n=100 ticks=310",
                "n=100 ticks=310\nVIRQ-BENCH op=sbi_base n=100 ticks=310",
            ),
            format!("{GOOD}VIRQ-BENCH error=trap scause=0x5\n"),
        ];
        for b in &broken {
            let r = parse(b).and_then(|r| check_ops(&r, &TARGETS[0], BOOTS[0].1, 100));
            assert!(r.is_err(), "accepted:\n{b}");
        }
    }

    const PINGPONG: &str = "\
VIRQ-BENCH start hart=1 harts=2 intc=plic aplic=0x0 imsic=0x0 stride=0x1000 plic=0xc000000 n=100 warmup=10
VIRQ-BENCH op=ipi_pingpong n=100 ticks=249976 stalls=1 stall_ticks=242660 min=73 median=74 p90=74 max=242660 hist=73:10,74:89,1023+:1
VIRQ-BENCH op=msi_pingpong skipped=no-imsic
VIRQ-BENCH op=ipi_spin n=100 ticks=8000 yields=7000 stalls=0 stall_ticks=0 min=80 median=80 p90=80 max=80 hist=80:100
VIRQ-BENCH op=msi_spin skipped=no-imsic
VIRQ-BENCH done errors=0
";

    #[test]
    fn a_pingpong_counts_laps_without_stalls() {
        let r = parse(PINGPONG).unwrap();
        check_ops(&r, &TARGETS[3], BOOTS[1].1, 100).unwrap();
        let o = op_result(&TARGETS[3], "ipi_pingpong", 2, &r.ops["ipi_pingpong"]);
        let laps = o.laps.as_ref().unwrap();
        assert_eq!(laps.hist, vec![(73, 10), (74, 89), (1023, 1)]);
        assert_eq!((laps.median, laps.stalls), (74, 1));
        // (249976 - 242660) ticks over 99 laps.
        let v = o.instructions_per_op.unwrap();
        assert!((v - 7316.0 * 100.0 / 99.0).abs() < 1e-6, "{v}");
        assert!(parse(&PINGPONG.replace("74:89", "74:8x9")).is_err());
        assert!(parse(&PINGPONG.replace(" median=74", "")).is_err());
    }

    const ARM: &str = "\
VIRQ-BENCH start cpu=0 cpus=1 el=1 gicd=0x8000000 freq=1000000000 n=100 warmup=10
VIRQ-BENCH op=nop n=100 ticks=205
VIRQ-BENCH op=hvc n=100 ticks=347803 call=psci_version
VIRQ-BENCH op=gicd_read n=100 ticks=357503 reg=gicd.typer
VIRQ-BENCH op=eoi n=100 ticks=500 intid=27
VIRQ-BENCH op=sgi_self n=100 ticks=697712
VIRQ-BENCH op=vtimer n=100 ticks=684004
VIRQ-BENCH op=vlpi_self skipped=no-gicv4
VIRQ-BENCH op=vlpi_call skipped=no-gicv4
VIRQ-BENCH done errors=0
";

    fn arm_target(name: &str) -> &'static Target {
        TARGETS.iter().find(|t| t.name == name).unwrap()
    }

    #[test]
    fn an_arm_run_counts_a_tick_as_an_instruction_and_must_be_plausible() {
        let t = arm_target("hyp-arm");
        assert_eq!(t.bare(), "arm-bare");
        let single = t.boots()[0].1;
        let r = parse(ARM).unwrap();
        check_ops(&r, t, single, 100).unwrap();
        let ops: Vec<OpResult> = single
            .iter()
            .map(|op| op_result(t, op, 1, &r.ops[*op]))
            .collect();
        assert_eq!(ops[1].instructions_per_op, Some(3478.03));
        check_plausible(&ops).unwrap();
        // A figure of zero instructions (a counter that does not move) or of 10 ms per
        // op (a lost interrupt) is no figure; a ping-pong of stalls only has none.
        for bad in ["ticks=205", "ticks=0", "ticks=1000000000"] {
            let out = ARM
                .replace("ticks=205", bad)
                .replace("ticks=500 ", "ticks=0 ");
            let r = parse(&out).unwrap();
            let ops: Vec<OpResult> = single
                .iter()
                .map(|op| op_result(t, op, 1, &r.ops[*op]))
                .collect();
            assert!(check_plausible(&ops).is_err(), "{bad}");
        }
        let mut o = ops[0].clone();
        o.instructions_per_op = None;
        assert!(check_plausible(&[o]).is_err());
        assert_eq!(setup_exits(t, "eoi"), Some(("irq", 1.0)));
        assert_eq!(setup_exits(&TARGETS[1], "eoi"), None);
        // The vLPI ops run on hyp-arm-v4 only: skipped there is an error.
        let v4 = arm_target("hyp-arm-v4");
        assert!(v4.gicv4() && !t.gicv4());
        assert_eq!(v4.machine_option(), crate::qemu::ARM_MACHINE_GICV4);
        assert!(check_ops(&r, v4, single, 100).is_err());
        let ran = ARM
            .replace(
                "op=vlpi_self skipped=no-gicv4",
                "op=vlpi_self n=100 ticks=1200 vintid=8192",
            )
            .replace(
                "op=vlpi_call skipped=no-gicv4",
                "op=vlpi_call n=100 ticks=56100 vintid=8192",
            );
        check_ops(&parse(&ran).unwrap(), v4, single, 100).unwrap();
        assert!(check_ops(&parse(&ran).unwrap(), t, single, 100).is_err());
        assert_eq!(setup_exits(v4, "vlpi_self"), Some(("hvc", 1.0)));
    }

    #[test]
    fn acct_exits_sum_by_cause() {
        let out = "ACCT begin\n\
ACCT vcpu=0 guest=bench id=0 cause=vs_ecall(10) count=1200\n\
ACCT vcpu=0 guest=bench id=0 cause=load_guest_page_fault(21) count=7\n\
ACCT vcpu=1 guest=other id=0 cause=vs_ecall(10) count=5\n\
ACCT vcpu=0 guest=bench id=0 imsic=hw hart=0 line=1\n\
ACCT guest=bench sbi_ipi_calls=0 sbi_rfence_calls=0\n";
        let m = acct_exits(out, "bench").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["vs_ecall(10)"], 1200);
        assert!(acct_exits("no block", "bench").is_err());
    }

    #[test]
    fn spinning_ping_pongs_lose_their_yields() {
        let out = "VIRQ-BENCH start hart=0 harts=2 intc=aia\n\
VIRQ-BENCH op=yield n=100 ticks=8 msi_ticks=9\n\
VIRQ-BENCH op=ipi_spin n=10 ticks=100 yields=50 stalls=0 stall_ticks=0 min=10 median=10 p90=10 max=10 hist=10:10\n\
VIRQ-BENCH op=msi_spin n=10 ticks=5 yields=20 stalls=0 stall_ticks=0 min=0 median=0 p90=1 max=1 hist=0:5,1:5\n\
VIRQ-BENCH done errors=0\n";
        let r = parse(out).unwrap();
        let t = &TARGETS[0];
        let mut ops: Vec<OpResult> = ["yield", "ipi_spin", "msi_spin"]
            .iter()
            .map(|op| op_result(t, op, 2, &r.ops[*op]))
            .collect();
        take_out_yields(&mut ops).unwrap();
        // 1,000 instructions per lap, 5 yields of 8 each: 960; 50 per lap, 2 yields of 9
        // (the stopei loop's own figure): 32.
        assert_eq!(ops[1].instructions_per_op, Some(960.0));
        assert_eq!(ops[2].instructions_per_op, Some(32.0));
        let s = ops[1].spin.as_ref().unwrap();
        assert_eq!(
            (s.measured_per_op, s.yields_per_op, s.instructions_per_yield),
            (1000.0, 5.0, 8.0)
        );
        // More yields than the lap had instructions: the figures do not fit, an error.
        let r = parse(&out.replace("ticks=5 yields=20", "ticks=1 yields=20")).unwrap();
        let mut ops2: Vec<OpResult> = ["yield", "msi_spin"]
            .iter()
            .map(|op| op_result(t, op, 2, &r.ops[*op]))
            .collect();
        assert!(take_out_yields(&mut ops2).is_err());
    }

    #[test]
    fn the_table_shows_ratios_to_bare() {
        let op = |op: &str, v: Option<f64>, e: Option<f64>| OpResult {
            op: op.into(),
            title: String::new(),
            harts: 1,
            laps: None,
            n: 10,
            ticks: 0,
            instructions_per_op: v,
            detail: None,
            skipped: None,
            exits_per_op: e,
            exits_per_op_by_cause: BTreeMap::new(),
            kvm_counters_per_op: BTreeMap::new(),
            host_interrupts_per_op: BTreeMap::new(),
            setup_exits_per_op: BTreeMap::new(),
            spin: None,
        };
        let t = |name: &str, v: f64, e: Option<f64>| TargetResult {
            name: name.into(),
            arch: "riscv64".into(),
            machine: String::new(),
            hypervisor: String::new(),
            n: if name == "kvm-aia" { 5 } else { 10 },
            warmup: 1,
            start: BTreeMap::new(),
            ops: vec![op("sbi_base", Some(v), e)],
        };
        let r = SystemResult {
            date: String::new(),
            qemu: String::new(),
            qemu_aarch64: None,
            opensbi: String::new(),
            commit: String::new(),
            host: String::new(),
            command: String::new(),
            method: String::new(),
            quick: false,
            n: 10,
            warmup: 1,
            kvm: None,
            kvm_arm64_anchors: Vec::new(),
            targets: vec![
                t("bare-aia", 300.0, None),
                t("hyp-aia", 450.0, Some(1.0)),
                t("bare-plic", 300.0, None),
                t("hyp-plic", 600.0, None),
                t("kvm-aia", 1200.0, Some(2.0)),
            ],
        };
        let s = table(&r);
        assert!(s.contains("450.0 (1.50x, 1.00 ex)"), "{s}");
        assert!(s.contains("600.0 (2.00x)"), "{s}");
        assert!(s.contains("1200.0 (4.00x, 2.00 ex)"), "{s}");
        assert!(s.contains("kvm-aia: n=5, warm-up 1"), "{s}");
        // Columns only for the targets that ran (no hyp-aia-direct here).
        assert!(!s.contains("hyp-aia-direct"), "{s}");
        // Without its bare reference a hypervisor's cell still shows its exits.
        let mut only_kvm = r.clone();
        only_kvm.targets.retain(|t| t.name == "kvm-aia");
        assert!(table(&only_kvm).contains("1200.0 (2.00 ex)"));
    }

    const KVM_OUT: &str = "\
VIRQ-KVM-VMM start vcpus=2 aia_mode=hwaccel
VIRQ-BENCH start hart=0 harts=2 intc=aia
VIRQ-KVM-EXITS after=start vcpu=0 console_calls=1 exits=900 ecall_exit_stat=40
VIRQ-KVM-EXITS after=start vcpu=1 console_calls=0
VIRQ-BENCH op=ipi_pingpong n=100 ticks=1000
VIRQ-KVM-EXITS after=op=ipi_pingpong vcpu=0 console_calls=2 exits=442 ecall_exit_stat=112 wfi_exit_stat=110 halt_wakeup=110
VIRQ-KVM-EXITS after=op=ipi_pingpong vcpu=1 console_calls=0 exits=220 ecall_exit_stat=110 wfi_exit_stat=110
VIRQ-BENCH done errors=0
VIRQ-KVM-EXITS after=done vcpu=0 console_calls=1 exits=1 ecall_exit_stat=1
VIRQ-KVM-STATS vcpu=0 total exits=2000
";

    #[test]
    fn kvm_exits_per_op_leave_out_the_console() {
        let m = kvm_exits(KVM_OUT).unwrap();
        assert_eq!(m.keys().collect::<Vec<_>>(), ["ipi_pingpong"]);
        let c = &m["ipi_pingpong"];
        assert_eq!(c["exits"], 440 + 220);
        assert_eq!(c["ecall_exit_stat"], 110 + 110);
        assert_eq!(c["wfi_exit_stat"], 220);
        assert_eq!(c["halt_wakeup"], 110);
        assert!(is_kvm_exit_cause("wfi_exit_stat") && is_kvm_exit_cause("mmio_exit_kernel"));
        assert!(!is_kvm_exit_cause("exits") && !is_kvm_exit_cause("halt_wakeup"));
        let bad = KVM_OUT.replace("exits=442", "exits=4x2");
        assert!(kvm_exits(&bad).is_err());
        let err = format!("{KVM_OUT}VIRQ-KVM-EXITS after=op=nop vcpu=0 error=EBADF\n");
        assert!(kvm_exits(&err).is_err());
    }

    #[test]
    fn a_kvm_boot_without_its_lines_or_status_fails() {
        let good = format!("VIRQ-KVM-INIT kernel=6.12\n{GOOD}VIRQ-KVM-VMM-EXIT status=0\n");
        parse_kvm(&good).unwrap();
        let broken = [
            // The VMM never got the payload going: no lines at all.
            "VIRQ-KVM-INIT kernel=6.12\nVIRQ-KVM-VMM-EXIT status=2\n".to_string(),
            format!("VIRQ-KVM-VMM error=KVM_CREATE_DEVICE(RISCV_AIA): ENODEV\n{good}"),
            format!("VIRQ-KVM-INIT error=insmod-kvm\n{good}"),
            good.replace("status=0", "status=1"),
            good.replace("VIRQ-KVM-VMM-EXIT status=0\n", ""),
            good.replace("VIRQ-BENCH done errors=0\n", ""),
        ];
        for b in &broken {
            assert!(parse_kvm(b).is_err(), "accepted:\n{b}");
        }
        let e = format!("{:#}", parse_kvm(&broken[1]).unwrap_err());
        assert!(e.contains("ENODEV"), "{e}");
    }

    #[test]
    fn kvm_is_full_run_only_and_targets_can_be_picked() {
        let quick = selected(true, &[]).unwrap();
        assert!(quick.iter().all(|t| t.host != Host::Kvm));
        assert_eq!(selected(false, &[]).unwrap().len(), TARGETS.len());
        let kvm = selected(false, &["kvm-aia".into()]).unwrap();
        assert_eq!(kvm.len(), 1);
        assert_eq!(kvm[0].bare(), "bare-aia");
        assert!(selected(true, &["kvm-aia".into()]).is_err());
        assert!(selected(false, &["kvm".into()]).is_err());
    }
}
