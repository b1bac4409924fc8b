//! `cargo xtask bench --net`: the network test's figures (issue 10, "Figures"): TCP
//! throughput of a 100 MiB stream, the NIC's interrupts per second delivered to the
//! guest, and UDP request/answer round trips, for each target × NIC × clock, with each
//! target's throughput against bare QEMU's in the same run. Written to
//! `target/bench/net.json` and printed as a table.
//!
//! A target is only a QEMU command line ([`Target::command`]): the guest, its traffic,
//! the host peer and the check are [`crate::net::run`] and [`crate::net::check`], the
//! same as the suite's. Today the list has `bare`; the hyp side adds its own entry to
//! [`TARGETS`] (a name and a function returning hyp's QEMU command line with the
//! network initramfs as guest 0's), and the table and JSON get a column of it.
//!
//! Clocks: `wall` runs QEMU as the suite does (guest time follows the host's clock);
//! `icount` adds `-icount shift=0,sleep=off` (one instruction per virtual nanosecond,
//! single-threaded TCG). Under `icount` the guest's seconds are virtual — instructions
//! of the whole machine / 10^9 — but the host peer's are wall seconds, and the virtual
//! clock jumps ahead whenever every hart waits (for the host peer, whose speed is the
//! host's), so the guest-time figures are not instruction counts of the work alone
//! (docs/benchmarks.md, "Network").
use anyhow::{ensure, Context, Result};
use serde::Serialize;
use std::process::Command;
use std::time::Duration;

use crate::images::BootImages;
use crate::net::{Nic, Plan, Summary};

/// A system the guest runs on.
pub struct Target {
    pub name: &'static str,
    pub what: &'static str,
    /// The QEMU command line booting `boot` (Debian's kernel and the network
    /// initramfs) as its only Linux guest, with `nic` on `-netdev
    /// user,…,restrict=on<forwards>` ([`crate::net::run`]'s `forwards`) and `icount` =
    /// `-icount shift=0,sleep=off`.
    pub command: fn(boot: &BootImages, nic: Nic, icount: bool, forwards: &str) -> Result<Command>,
}

/// The targets, in table order; `bare` first (the reference of every ratio).
pub const TARGETS: &[Target] = &[
    Target {
        name: "bare",
        what: "Linux directly under OpenSBI, -M virt,aia=aplic-imsic,aia-guests=3, 2 harts",
        command: bare,
    },
    Target {
        name: "hyp",
        what: "under hyp (configs/net-<nic>.toml): the NIC passed through, 2 vCPUs on 2 harts, hardware guest files",
        command: hyp_hw,
    },
    Target {
        name: "hyp-sw",
        what: "the same with no hardware guest files (aia-guests=0): every device MSI through an MRIF and hyp",
        command: hyp_sw,
    },
];

/// hyp's command line for `configs/net-<nic>.toml` with `boot` as guest 0's images.
fn hyp_command(
    boot: &BootImages,
    nic: Nic,
    icount: bool,
    forwards: &str,
    sets: &[String],
) -> Result<Command> {
    let mut sets = sets.to_vec();
    sets.push(format!(
        "guest.0.initramfs=\"{}\"",
        boot.initramfs.display()
    ));
    sets.push(format!("guest.0.kernel=\"{}\"", boot.kernel.display()));
    let (f, dir) = crate::config::load(
        &crate::config::path_of(&format!("net-{}", nic.name())),
        &sets,
    )?;
    let images = crate::config::NamedImages {
        testguest: None,
        kernel_version: None,
    };
    let cfg = crate::config::resolve(&format!("net-{}", nic.name()), &f, &dir, &images)?;
    let img = crate::qemu::build(false)?;
    let mut m = cfg.machine(std::time::Duration::from_secs(3600), &[])?;
    m.icount = icount;
    m.extra = cfg.machine.qemu_args(forwards);
    Ok(m.command(&img))
}

fn hyp_hw(boot: &BootImages, nic: Nic, icount: bool, forwards: &str) -> Result<Command> {
    hyp_command(boot, nic, icount, forwards, &[])
}

fn hyp_sw(boot: &BootImages, nic: Nic, icount: bool, forwards: &str) -> Result<Command> {
    hyp_command(
        boot,
        nic,
        icount,
        forwards,
        &["machine.guest_files=0".into()],
    )
}

fn bare(boot: &BootImages, nic: Nic, icount: bool, forwards: &str) -> Result<Command> {
    crate::net::bare_command(boot, nic, 2, icount, forwards)
}

/// The clocks.
pub const CLOCKS: &[&str] = &["wall", "icount"];

/// The plan of a clock: under `icount` no UDP requests. The guest waits for each
/// request with its harts in `wfi`, and with `sleep=off` QEMU then jumps the virtual
/// clock to the next timer deadline at once — the guest's own wait limit — so the
/// guest gives up on requests the host peer is about to send (seen: `NET error waiting
/// for the host` after the stream). Round trips are a wall-clock figure anyway.
pub fn clock_plan(plan: Plan, clock: &str) -> Plan {
    match clock {
        "icount" => Plan {
            udp_requests: 0,
            ..plan
        },
        _ => plan,
    }
}

/// Time limit of one run (wall), and of the guest's `virq-net` (guest time).
const RUN_TIMEOUT_S: u64 = 900;
const GUEST_LIMIT_S: u32 = 600;

/// Arguments of `cargo xtask bench --net`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct NetArgs {
    /// With --net: MiB of the TCP stream.
    #[arg(long, default_value_t = 100, requires = "net")]
    pub net_mib: u64,
    /// With --net: UDP requests.
    #[arg(long, default_value_t = 1000, requires = "net")]
    pub net_udp: u32,
    /// With --net: only these NICs (repeatable: `virtio`, `e1000e`).
    #[arg(long = "nic", requires = "net", value_name = "NIC")]
    pub nics: Vec<String>,
    /// With --net: only these targets (repeatable; `bare`, and whatever [`TARGETS`]
    /// lists).
    #[arg(long = "net-target", requires = "net", value_name = "NAME")]
    pub net_targets: Vec<String>,
    /// With --net: only these clocks (repeatable: `wall`, `icount`).
    #[arg(long = "clock", requires = "net", value_name = "CLOCK")]
    pub clocks: Vec<String>,
    /// With --net: runs of each target × NIC × clock (the table shows the median run).
    #[arg(long, default_value_t = 3, requires = "net")]
    pub net_repeat: u32,
}

/// One run's figures.
#[derive(Serialize, Debug, Clone)]
pub struct RunResult {
    pub target: String,
    pub nic: String,
    pub clock: String,
    pub tcp_bytes: u64,
    /// Guest seconds from the stream's first byte to the host's acknowledgement.
    pub guest_tcp_secs: f64,
    /// Host (wall) seconds from the stream's header to its last byte.
    pub host_tcp_secs: f64,
    /// MB/s (10^6 bytes) by the guest's clock and by the host's.
    pub guest_mb_per_s: f64,
    pub host_mb_per_s: f64,
    /// The NIC's interrupts during the stream, per guest second, and per MiB.
    pub tcp_irqs: u64,
    pub tcp_irqs_per_s: f64,
    pub tcp_irqs_per_mib: f64,
    /// The guest CPUs' non-idle milliseconds during the stream (all CPUs), per MiB;
    /// under `icount` one ms is 10^6 instructions, so this is the guest's instructions
    /// per MiB / 10^6 — the figure that does not move with the host's load.
    pub tcp_busy_ms: u64,
    pub tcp_busy_ms_per_mib: f64,
    pub udp_requests: u32,
    pub guest_udp_secs: f64,
    pub udp_irqs: u64,
    pub udp_irqs_per_s: f64,
    /// Host (wall) round trips: UDP request out, the answer's line back.
    pub udp_rtt_us_mean: f64,
    pub udp_rtt_us_max: u64,
    /// QEMU's run, wall seconds (boot included).
    pub run_secs: f64,
    /// Host MB/s against `bare`'s with the same NIC and clock (1.0 for bare).
    pub host_throughput_vs_bare: Option<f64>,
    /// Under hyp: the guest's exits over the whole run (boot included), from hyp's
    /// `ACCT` lines.
    pub hyp_exits: Option<u64>,
    /// Under hyp: the NIC's MSIs that went through hyp (drained from an MRIF or
    /// written into a file by hyp) — 0 with hardware files: no exit per device MSI.
    pub msis_via_hyp: Option<u64>,
    /// The NIC's MSIs in the guest's `/proc/interrupts` at the end (boot included).
    pub device_msis: u64,
}

#[derive(Serialize, Debug, Clone)]
pub struct NetResult {
    pub date: String,
    pub qemu: String,
    pub commit: String,
    pub host: String,
    pub command: String,
    pub method: String,
    pub tcp_bytes: u64,
    pub udp_requests: u32,
    pub targets: Vec<(String, String)>,
    /// Every run, in the order they ran.
    pub runs: Vec<RunResult>,
    /// Per target × NIC × clock, the run with the median host throughput (ratios
    /// between medians).
    pub medians: Vec<RunResult>,
}

fn pick<'a>(all: &[&'a str], only: &[String], what: &str) -> Result<Vec<&'a str>> {
    for o in only {
        ensure!(
            all.contains(&o.as_str()),
            "--{what} {o}: not one of {}",
            all.join(", ")
        );
    }
    Ok(all
        .iter()
        .copied()
        .filter(|a| only.is_empty() || only.iter().any(|o| o == a))
        .collect())
}

/// The figures of one passing run.
pub fn result(
    target: &str,
    nic: Nic,
    clock: &str,
    s: &Summary,
    host: &crate::net::HostReport,
    run_secs: f64,
    hyp: Option<crate::net::HypCounters>,
) -> RunResult {
    let per = |n: f64, d: f64| if d > 0.0 { n / d } else { 0.0 };
    let mib = s.tcp_bytes as f64 / (1 << 20) as f64;
    RunResult {
        target: target.into(),
        nic: nic.name().into(),
        clock: clock.into(),
        tcp_bytes: s.tcp_bytes,
        guest_tcp_secs: s.guest_tcp_secs,
        host_tcp_secs: s.host_tcp_secs,
        guest_mb_per_s: per(s.tcp_bytes as f64 / 1e6, s.guest_tcp_secs),
        host_mb_per_s: per(s.tcp_bytes as f64 / 1e6, s.host_tcp_secs),
        tcp_irqs: s.tcp_irqs,
        tcp_irqs_per_s: per(s.tcp_irqs as f64, s.guest_tcp_secs),
        tcp_irqs_per_mib: per(s.tcp_irqs as f64, mib),
        tcp_busy_ms: s.tcp_busy_ms,
        tcp_busy_ms_per_mib: per(s.tcp_busy_ms as f64, mib),
        udp_requests: s.udp_requests,
        guest_udp_secs: s.guest_udp_secs,
        udp_irqs: s.udp_irqs,
        udp_irqs_per_s: per(s.udp_irqs as f64, s.guest_udp_secs),
        udp_rtt_us_mean: per(host.udp_rtt_us_sum as f64, host.udp_answered as f64),
        udp_rtt_us_max: host.udp_rtt_us_max,
        run_secs,
        host_throughput_vs_bare: None,
        hyp_exits: hyp.map(|h| h.exits),
        msis_via_hyp: hyp.map(|h| h.msis_via_hyp),
        device_msis: s.irqs,
    }
}

/// Fill in every run's ratio to `bare` with the same NIC and clock.
pub fn ratios(runs: &mut [RunResult]) {
    let bare: Vec<(String, String, f64)> = runs
        .iter()
        .filter(|r| r.target == "bare")
        .map(|r| (r.nic.clone(), r.clock.clone(), r.host_mb_per_s))
        .collect();
    for r in runs.iter_mut() {
        r.host_throughput_vs_bare = bare
            .iter()
            .find(|(n, c, _)| *n == r.nic && *c == r.clock)
            .filter(|b| b.2 > 0.0)
            .map(|b| r.host_mb_per_s / b.2);
    }
}

/// `cargo xtask bench --net`.
pub fn run(args: &NetArgs) -> Result<()> {
    crate::setup::ensure_all()?;
    let plan = Plan {
        tcp_bytes: args.net_mib << 20,
        udp_requests: args.net_udp,
    };
    ensure!(
        plan.tcp_bytes > 0 && plan.tcp_bytes <= 1 << 30,
        "--net-mib: 1..1024"
    );
    let nic_names: Vec<&str> = Nic::ALL.iter().map(|n| n.name()).collect();
    let nics = pick(&nic_names, &args.nics, "nic")?;
    let target_names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
    let targets = pick(&target_names, &args.net_targets, "net-target")?;
    let clocks = pick(CLOCKS, &args.clocks, "clock")?;
    let mut runs = Vec::new();
    let repeat = args.net_repeat.max(1);
    let total = nics.len() * targets.len() * clocks.len() * repeat as usize;
    let mut k = 0;
    // Repeats outermost: every target's runs are spread over the same stretch of the
    // host's (shared, varying) load.
    for rep in 0..repeat {
        for nic in Nic::ALL
            .iter()
            .copied()
            .filter(|n| nics.contains(&n.name()))
        {
            for t in TARGETS.iter().filter(|t| targets.contains(&t.name)) {
                for &clock in &clocks {
                    let plan = clock_plan(plan, clock);
                    let boot = crate::net::guest_images(nic, plan, GUEST_LIMIT_S)?;
                    k += 1;
                    let name = format!("bench-net-{}-{}-{clock}-{rep}", t.name, nic.name());
                    eprintln!("bench --net [{k}/{total}] {name}");
                    let r = crate::net::run(Duration::from_secs(RUN_TIMEOUT_S), &name, |fwd| {
                        (t.command)(&boot, nic, clock == "icount", fwd)
                    })?;
                    let log = crate::qemu::log_path(&name);
                    ensure!(
                        !r.outcome.timed_out,
                        "{name}: timed out (log {})",
                        log.display()
                    );
                    let s =
                        crate::net::check(&r.outcome.output, r.outcome.status, &r.host, nic, plan)
                            .with_context(|| format!("{name} (log {})", log.display()))?;
                    runs.push(result(
                        t.name,
                        nic,
                        clock,
                        &s,
                        &r.host,
                        r.outcome.elapsed.as_secs_f64(),
                        crate::net::hyp_counters(&r.outcome.output),
                    ));
                }
            }
        }
    }
    ratios(&mut runs);
    let mut medians = medians(&runs);
    ratios(&mut medians);
    let cl = crate::bench::command_line;
    let mut command = format!("cargo xtask bench --net --net-mib {}", args.net_mib);
    if args.net_repeat != 3 {
        command += &format!(" --net-repeat {}", args.net_repeat);
    }
    if args.net_udp != 1000 {
        command += &format!(" --net-udp {}", args.net_udp);
    }
    for (flag, v) in [
        ("--nic", &args.nics),
        ("--net-target", &args.net_targets),
        ("--clock", &args.clocks),
    ] {
        for x in v {
            command += &format!(" {flag} {x}");
        }
    }
    let result = NetResult {
        date: cl("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
        qemu: cl("qemu-system-riscv64", &["--version"]),
        commit: cl(
            "git",
            &[
                "-C",
                &crate::util::root().display().to_string(),
                "describe",
                "--always",
                "--dirty",
            ],
        ),
        host: cl("uname", &["-sr"]),
        command,
        method: "Debian 6.12 riscv64 Linux with the NIC's own driver on QEMU's user network \
                 (restrict=on, guestfwd/hostfwd on 127.0.0.1 only); guest/net (virq-net) \
                 streams the bytes to xtask's host peer over TCP and answers UDP requests \
                 over the same connection; interrupts are the NIC's rows of the guest's \
                 /proc/interrupts before and after each phase; MB = 10^6 bytes"
            .into(),
        tcp_bytes: plan.tcp_bytes,
        udp_requests: plan.udp_requests,
        targets: TARGETS
            .iter()
            .filter(|t| targets.contains(&t.name))
            .map(|t| (t.name.to_string(), t.what.to_string()))
            .collect(),
        runs,
        medians,
    };
    let dir = crate::util::root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("net.json");
    std::fs::write(&path, serde_json::to_string_pretty(&result)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!("median of {repeat} run(s) each (by host MB/s):");
    print!("{}", table(&result.medians));
    println!("written: {}", path.display());
    Ok(())
}

/// Per target × NIC × clock (in order of first appearance), the run whose host
/// throughput is the median (the lower middle of an even count).
pub fn medians(runs: &[RunResult]) -> Vec<RunResult> {
    let mut keys: Vec<(&str, &str, &str)> = Vec::new();
    for r in runs {
        let k = (r.target.as_str(), r.nic.as_str(), r.clock.as_str());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.iter()
        .filter_map(|&(t, n, c)| {
            let mut group: Vec<&RunResult> = runs
                .iter()
                .filter(|r| r.target == t && r.nic == n && r.clock == c)
                .collect();
            group.sort_by(|a, b| a.host_mb_per_s.total_cmp(&b.host_mb_per_s));
            group.get((group.len() - 1) / 2).map(|r| (*r).clone())
        })
        .collect()
}

/// The runs as a table.
pub fn table(runs: &[RunResult]) -> String {
    let mut s = format!(
        "{:<6} {:<7} {:<7} {:>9} {:>9} {:>8} {:>10} {:>9} {:>10} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8}\n",
        "target",
        "nic",
        "clock",
        "MB/s host",
        "MB/s gst",
        "vs bare",
        "tcp irq/s",
        "irq/MiB",
        "busy ms/MiB",
        "udp irq/s",
        "rtt µs",
        "run s",
        "dev MSIs",
        "via hyp",
        "exits"
    );
    for r in runs {
        s += &format!(
            "{:<6} {:<7} {:<7} {:>9.1} {:>9.1} {:>8} {:>10.0} {:>9.1} {:>10.1} {:>9.0} {:>9.0} {:>8.1} {:>8} {:>9} {:>8}\n",
            r.target,
            r.nic,
            r.clock,
            r.host_mb_per_s,
            r.guest_mb_per_s,
            r.host_throughput_vs_bare
                .map(|v| format!("{v:.2}x"))
                .unwrap_or_else(|| "-".into()),
            r.tcp_irqs_per_s,
            r.tcp_irqs_per_mib,
            r.tcp_busy_ms_per_mib,
            r.udp_irqs_per_s,
            r.udp_rtt_us_mean,
            r.run_secs,
            r.device_msis,
            r.msis_via_hyp.map_or("-".into(), |v| v.to_string()),
            r.hyp_exits.map_or("-".into(), |v| v.to_string()),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        Summary {
            tcp_bytes: 100 << 20,
            guest_tcp_secs: 4.0,
            host_tcp_secs: 5.0,
            tcp_irqs: 4000,
            tcp_busy_ms: 2000,
            udp_requests: 1000,
            guest_udp_secs: 2.0,
            udp_irqs: 2000,
            irq_rows: vec![],
            irqs: 6000,
        }
    }

    #[test]
    fn figures_and_ratios() {
        let host = crate::net::HostReport {
            udp_answered: 1000,
            udp_rtt_us_sum: 500_000,
            udp_rtt_us_max: 900,
            ..Default::default()
        };
        let bare = result("bare", Nic::VirtioNet, "wall", &summary(), &host, 9.0, None);
        assert!((bare.host_mb_per_s - 104.8576 / 5.0).abs() < 1e-9);
        assert_eq!(bare.tcp_irqs_per_s, 1000.0);
        assert_eq!(bare.tcp_irqs_per_mib, 40.0);
        assert_eq!(bare.tcp_busy_ms_per_mib, 20.0);
        assert_eq!(bare.udp_irqs_per_s, 1000.0);
        assert_eq!(bare.udp_rtt_us_mean, 500.0);
        let slow = Summary {
            host_tcp_secs: 10.0,
            ..summary()
        };
        let hyp = result("hyp", Nic::VirtioNet, "wall", &slow, &host, 9.0, None);
        let other = result("hyp", Nic::E1000e, "wall", &slow, &host, 9.0, None);
        let mut runs = vec![bare, hyp, other];
        ratios(&mut runs);
        assert_eq!(runs[0].host_throughput_vs_bare, Some(1.0));
        assert_eq!(runs[1].host_throughput_vs_bare, Some(0.5));
        assert_eq!(runs[2].host_throughput_vs_bare, None);
        let t = table(&runs);
        assert!(t.contains("0.50x") && t.lines().count() == 4, "{t}");
    }

    /// clap's own checks of the whole command line (unique names, `requires`).
    #[test]
    fn the_bench_command_line_is_consistent() {
        use clap::{CommandFactory, Parser};
        crate::Cli::command().debug_assert();
        let cli = crate::Cli::try_parse_from([
            "xtask",
            "bench",
            "--net",
            "--net-mib",
            "8",
            "--nic",
            "e1000e",
            "--clock",
            "wall",
        ])
        .unwrap();
        let crate::Cmd::Bench(b) = cli.cmd else {
            panic!("not bench")
        };
        assert!(b.net && !b.system);
        assert_eq!(b.net_args.net_mib, 8);
        assert_eq!(b.net_args.nics, ["e1000e"]);
        assert!(crate::Cli::try_parse_from(["xtask", "bench", "--nic", "virtio"]).is_err());
        assert!(crate::Cli::try_parse_from(["xtask", "bench", "--net", "--system"]).is_err());
    }

    #[test]
    fn the_median_run_is_kept() {
        let host = crate::net::HostReport::default();
        let mut runs = Vec::new();
        for secs in [5.0, 1.0, 10.0] {
            let s = Summary {
                host_tcp_secs: secs,
                ..summary()
            };
            runs.push(result("bare", Nic::VirtioNet, "wall", &s, &host, 1.0, None));
            runs.push(result("bare", Nic::E1000e, "wall", &s, &host, 1.0, None));
        }
        let m = medians(&runs);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].nic.as_str(), m[0].host_tcp_secs), ("virtio", 5.0));
        assert_eq!((m[1].nic.as_str(), m[1].host_tcp_secs), ("e1000e", 5.0));
    }

    #[test]
    fn icount_runs_no_udp() {
        let p = Plan {
            tcp_bytes: 1,
            udp_requests: 9,
        };
        assert_eq!(clock_plan(p, "wall"), p);
        assert_eq!(clock_plan(p, "icount").udp_requests, 0);
    }

    #[test]
    fn selections_are_checked() {
        assert_eq!(pick(CLOCKS, &[], "clock").unwrap(), ["wall", "icount"]);
        assert_eq!(
            pick(CLOCKS, &["icount".into()], "clock").unwrap(),
            ["icount"]
        );
        assert!(pick(CLOCKS, &["cpu".into()], "clock").is_err());
        assert_eq!(TARGETS[0].name, "bare");
    }
}
