//! `cargo xtask soak`: the ping-pong lost-wake-up detector ([`crate::pingpong`]) with
//! many laps on every configuration of issue 12's table — bare QEMU as the baseline,
//! hyp with the vPLIC, hyp with the AIA on hardware and software interrupt files, with
//! and without vCPU migration or file flipping. A configuration fails if any lap takes
//! over 100 ms (a stall: a lost wake-up), the guest does not finish in time, or QEMU
//! does not exit 0; the command prints a table of laps, stalls and worst lap per
//! configuration and fails if any configuration did.
//!
//! `--arch aarch64` soaks GICv4.0 direct injection instead ([`arm_soak`]): hyp on
//! `gic-version=4` runs the aarch64 test guest, whose `vlpi_soak` sends `--vlpis`
//! vLPIs (default 1,000,000) to a vCPU that blocks in WFI, is woken by its doorbell and
//! migrates with its vPE every [`crate::armtest::MIGRATE_MS`] ms; every vLPI must be
//! taken within 1 s and exactly as many taken as sent (0 lost wake-ups).
use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pingpong;
use crate::qemu::{Machine, Payload};

/// The configurations (shown by `cargo xtask soak --help`).
pub const SOAK_CONFIGS: &str = "\
Configurations (2 harts, Debian Linux 6.12 with 2 vCPUs unless said):
  bare           bare QEMU, no hyp: -M virt,aia=aplic-imsic (baseline)
  vplic          hyp, vPLIC (configs/linux.toml), plain -M virt
  vplic-migrate  the same, vCPUs move between harts every 20 ms (migrate_ms=20)
  vplic-aclint   vplic on -M virt,aclint=on: hyp's IPIs are stores into the ACLINT SSWI
  aia            hyp, AIA with hardware guest files (the default of `cargo xtask run`),
                 -M virt,aia=aplic-imsic,aia-guests=3
  aia-migrate    the same with migrate_ms=20
  aia-flip       the same, files move between hardware and software every 20 ms
                 (aia_flip_ms=20)
  aia-sw-vcpus4  aia-guests=1, 4 vCPUs on 2 harts (2 on hardware, 2 on software files);
                 the byte goes round 4 CPUs, so each lap is 4 wake-ups
  aia-direct     aia with wfi=direct: a vCPU alone on its hart idles in the guest's
                 own wfi (no exit) and its hardware file wakes it
  aia-direct-vcpus4  aia-sw-vcpus4 with wfi=direct: vCPUs are alone on a hart only
                 some of the time, so wfi traps or not from one entry to the next

Reading the table: laps = round trips of the byte; slow = laps over 100 ms (stalls, must
be 0; a lost wake-up typically costs 0.9-0.95 s, the guest's next timer); worst = the
slowest lap; >10ms = laps over 10 ms (scheduling noise); wall = seconds QEMU ran; load =
the host's load average at the end; host ms = the longest a host thread (sleeping 1 ms
at a time) waited for a CPU during the run. Guest time is host wall time under TCG: on a
host loaded well beyond its cores, laps stretch and even 100 ms can be crossed without a
lost wake-up (then host ms is of the same order), so soak on an otherwise idle machine.
Logs: target/hyp/logs/soak-*.log";

/// One soak configuration.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub name: &'static str,
    /// `Some(file)`: hyp booting `configs/<file>.toml` with [`Config::sets`];
    /// `None`: bare QEMU, `-M virt,aia=aplic-imsic`, 2 harts, no hyp.
    file: Option<&'static str>,
    /// `--set` overrides of the file.
    sets: &'static [&'static str],
    /// CPUs round which the byte travels.
    pub cpus: u32,
}

/// Every configuration, in the order of issue 12's table.
pub const CONFIGS: &[Config] = &[
    Config {
        name: "bare",
        file: None,
        sets: &[],
        cpus: 2,
    },
    Config {
        name: "vplic",
        file: Some("linux"),
        sets: &[],
        cpus: 2,
    },
    Config {
        name: "vplic-migrate",
        file: Some("linux"),
        sets: &["hyp.migrate_ms=20"],
        cpus: 2,
    },
    Config {
        name: "vplic-aclint",
        file: Some("linux"),
        sets: &["machine.aclint=true"],
        cpus: 2,
    },
    Config {
        name: "aia",
        file: Some("linux-aia"),
        sets: &[],
        cpus: 2,
    },
    Config {
        name: "aia-migrate",
        file: Some("linux-aia"),
        sets: &["hyp.migrate_ms=20"],
        cpus: 2,
    },
    Config {
        name: "aia-flip",
        file: Some("linux-aia"),
        sets: &["hyp.aia_flip_ms=20"],
        cpus: 2,
    },
    Config {
        name: "aia-sw-vcpus4",
        file: Some("linux-aia"),
        sets: &["machine.guest_files=1", "guest.0.vcpus=4"],
        cpus: 4,
    },
    Config {
        name: "aia-direct",
        file: Some("linux-aia"),
        sets: &["hyp.wfi=direct"],
        cpus: 2,
    },
    Config {
        name: "aia-direct-vcpus4",
        file: Some("linux-aia"),
        sets: &["machine.guest_files=1", "guest.0.vcpus=4", "hyp.wfi=direct"],
        cpus: 4,
    },
];

/// The configuration named `name`.
pub fn config(name: &str) -> Result<Config> {
    match CONFIGS.iter().find(|c| c.name == name) {
        Some(c) => Ok(*c),
        None => bail!(
            "no soak configuration {name:?}; there are: {}",
            CONFIGS
                .iter()
                .map(|c| c.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Seconds to boot, run and power off a Linux guest: boot and shutdown, plus a
/// generous bound per wake-up (a lap is `cpus` wake-ups: about 0.5–1 ms each under
/// hyp in TCG on an idle host, up to 3 ms with vCPUs sharing harts on a loaded one).
/// A hung guest is caught sooner by [`SILENCE`].
pub fn default_timeout(rounds: u64, cpus: u32) -> Duration {
    Duration::from_secs(240 + rounds * u64::from(cpus) / 100)
}

/// A guest that prints nothing for this long is stuck (the program prints a progress
/// line every 10,000 laps: at most a few minutes apart).
pub const SILENCE: Duration = Duration::from_secs(900);

impl Config {
    /// The QEMU machine running the ping-pong images `boot` (from
    /// [`pingpong::boot_images`]) as guest 0, and the resolved configuration (none on
    /// bare QEMU).
    pub fn machine(
        &self,
        run_name: &str,
        boot: &crate::images::BootImages,
        images: &dyn crate::config::Images,
        timeout: Duration,
    ) -> Result<(Option<crate::config::Resolved>, Machine)> {
        let Some(file) = self.file else {
            return Ok((
                None,
                Machine {
                    arch: hyp_config::Arch::Riscv64,
                    smp: 2,
                    aia: Some(0),
                    gicv4: false,
                    bootargs: vec!["console=ttyS0".into(), "earlycon=sbi".into()],
                    timeout,
                    icount: false,
                    extra: Vec::new(),
                    payload: Payload::BareLinux {
                        kernel: boot.kernel.clone(),
                        initramfs: boot.initramfs.clone(),
                    },
                },
            ));
        };
        let sets: Vec<String> = self.sets.iter().map(|s| s.to_string()).collect();
        let (mut f, dir) = crate::config::load(&crate::config::path_of(file), &sets)?;
        let g0 = f.guest.first_mut().context("no [[guest]]")?;
        g0.kernel = boot.kernel.display().to_string();
        g0.initramfs = Some(boot.initramfs.display().to_string());
        let cfg = crate::config::resolve(run_name, &f, &dir, images)?;
        let m = cfg.machine(timeout, &[])?;
        Ok((Some(cfg), m))
    }
}

/// Check one run: finished in time, QEMU exit status 0, `rounds` laps, no stall.
pub fn check(o: &crate::qemu::Outcome, rounds: u64, cpus: u32) -> Result<pingpong::Summary> {
    if o.timed_out {
        let progress = o
            .output
            .lines()
            .rev()
            .find(|l| l.contains("VIRQ-PINGPONG-PROGRESS"))
            .unwrap_or("no progress line");
        bail!(
            "did not finish within {:.0} s ({progress}; stalls so far: {:?})",
            o.elapsed.as_secs_f64(),
            pingpong::slow_laps(&o.output)
        );
    }
    let r = pingpong::check(&o.output, rounds, cpus)?;
    ensure!(o.status == Some(0), "QEMU exit status {:?}", o.status);
    Ok(r)
}

/// Arguments of `cargo xtask soak`.
#[derive(clap::Args, Debug)]
#[command(after_help = SOAK_CONFIGS)]
pub struct SoakArgs {
    /// Laps (round trips of the byte) per configuration.
    #[arg(long, default_value_t = 1_000_000)]
    pub rounds: u64,
    /// Run only this configuration (repeatable; default: all, in the table's order).
    #[arg(long = "config", value_name = "NAME")]
    pub configs: Vec<String>,
    /// Seconds before a configuration's QEMU is killed (default: 240 + 10 ms per
    /// wake-up, i.e. rounds × CPUs / 100; a guest silent for 15 minutes is killed
    /// earlier).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Echo each guest's console while it runs.
    #[arg(long)]
    pub verbose: bool,
    /// Run QEMU with `-icount shift=0,sleep=off`: laps are measured in instructions
    /// (1 virtual ns each), not host time, so a loaded host cannot stretch them — a
    /// slow lap is then hyp's, never the host's. Single-threaded TCG: QEMU's own
    /// multi-threaded races (docs/design.md §3) do not occur, so this complements the
    /// default mode rather than replacing it.
    #[arg(long)]
    pub icount: bool,
    /// The architecture: `riscv64` (the ping-pong table above) or `aarch64` (the GICv4
    /// vLPI soak: `--vlpis` vLPIs to a vCPU that blocks, wakes and migrates).
    #[arg(long, default_value = "riscv64")]
    pub arch: String,
    /// `--arch aarch64`: vLPIs to send.
    #[arg(long, default_value_t = 1_000_000)]
    pub vlpis: u64,
}

/// `cargo xtask soak --arch aarch64`: the GICv4 test guest with `vlpi.soak=<vlpis>` and
/// `migrate_ms` (see the module docs), its console echoed (progress every 10,000
/// vLPIs), then the checks of the suite case `aarch64-gicv4-migrate` and a summary:
/// vLPIs sent and taken, doorbells, doorbell wake-ups, migrations, vPE moves, lost.
pub fn arm_soak(args: &SoakArgs) -> Result<()> {
    use crate::armtest;
    ensure!(args.vlpis > 0, "--vlpis must be at least 1");
    ensure!(
        args.vlpis <= u64::from(u32::MAX),
        "--vlpis: at most {}",
        u32::MAX
    );
    // About 1 ms per vLPI under TCG on a 2-core host; twice that, and 5 minutes more.
    let timeout = Duration::from_secs(args.timeout.unwrap_or(300 + args.vlpis / 500));
    eprintln!(
        "soak aarch64-gicv4: {} vLPIs to vCPU 1, migrate_ms={} (time limit {} s)",
        args.vlpis,
        armtest::MIGRATE_MS,
        timeout.as_secs()
    );
    let name = "soak-aarch64-gicv4";
    let (o, log) = armtest::gicv4_boot(name, armtest::MIGRATE_MS, Some(args.vlpis), Some(timeout))?;
    let checked = armtest::check(&o)
        .and_then(|_| armtest::check_gicv4(&o.output, true))
        .and_then(|g| Ok((g, armtest::check_migration(&o.output)?)));
    let (gicv4, migration) = match checked {
        Ok(s) => s,
        Err(e) => bail!("soak aarch64-gicv4 failed: {e:#} (log {})", log.display()),
    };
    let soak = o
        .output
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("testguest: vlpi_soak: "))
        .context("no vlpi_soak line")?;
    ensure!(
        soak.starts_with(&format!("{} vLPIs", args.vlpis))
            && soak.contains(&format!("taken {}, lost 0,", args.vlpis)),
        "vlpi_soak: {soak}"
    );
    println!("soak aarch64-gicv4: {:.0} s wall", o.elapsed.as_secs_f64());
    println!("  guest: {soak}");
    println!("  hyp: {migration}");
    println!("  {gicv4}");
    println!("  log: {}", log.display());
    Ok(())
}

/// One row of the table.
struct Row {
    name: &'static str,
    cpus: u32,
    summary: Option<pingpong::Summary>,
    wall_s: f64,
    /// The host's 1-minute load average when the run ended: guest time is host wall
    /// time under TCG, so a loaded host stretches laps.
    load: Option<f64>,
    /// The longest a host thread waited beyond a 1 ms sleep during the run.
    host_worst: Duration,
    error: Option<String>,
}

/// A host thread sleeping 1 ms at a time, recording how late it wakes: how long a
/// runnable thread (such as a QEMU vCPU thread) can wait for a host CPU during the run.
/// Under TCG guest time is host time, so a lap about as slow as this is host noise,
/// not a lost wake-up.
pub(crate) struct HostProbe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Duration>,
}

impl HostProbe {
    pub(crate) fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                std::thread::sleep(Duration::from_millis(1));
                worst = worst.max(t.elapsed().saturating_sub(Duration::from_millis(1)));
            }
            worst
        });
        HostProbe { stop, thread }
    }

    /// Stop the probe; the worst lateness it saw.
    pub(crate) fn finish(self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The host's 1-minute load average (`/proc/loadavg`).
fn host_load() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `cargo xtask soak`.
pub fn soak(args: &SoakArgs) -> Result<()> {
    match args.arch.as_str() {
        "riscv64" => {}
        "aarch64" => return arm_soak(args),
        a => bail!("--arch {a:?}: riscv64 or aarch64"),
    }
    ensure!(args.rounds > 0, "--rounds must be at least 1");
    let configs = if args.configs.is_empty() {
        CONFIGS.to_vec()
    } else {
        args.configs
            .iter()
            .map(|n| config(n))
            .collect::<Result<_>>()?
    };
    crate::setup::ensure_all()?;
    let img = crate::qemu::build(false)?;
    let mut boots = BTreeMap::new();
    let mut rows = Vec::new();
    for c in &configs {
        if let std::collections::btree_map::Entry::Vacant(e) = boots.entry(c.cpus) {
            e.insert(pingpong::boot_images(args.rounds, c.cpus)?);
        }
        let timeout = args
            .timeout
            .map(Duration::from_secs)
            .unwrap_or_else(|| default_timeout(args.rounds, c.cpus));
        let named = crate::config::NamedImages {
            testguest: Some(img.guest_bin.clone()),
            kernel_version: None,
        };
        let (_, mut m) = c.machine(
            &format!("soak-{}", c.name),
            &boots[&c.cpus],
            &named,
            timeout,
        )?;
        m.icount = args.icount;
        eprintln!(
            "soak {}: {} laps round {} CPUs (time limit {} s)",
            c.name,
            args.rounds,
            c.cpus,
            timeout.as_secs()
        );
        let probe = HostProbe::start();
        let o = crate::qemu::run_qemu_watched(&m, &img, args.verbose, Some(SILENCE));
        let host_worst = probe.finish();
        let o = o?;
        let load = host_load();
        let mode = if args.icount { "-icount" } else { "" };
        let log = crate::qemu::save_log(
            &format!("soak-{}{mode}", c.name),
            &format!("$ {:?}\n{}", m.command(&img), o.output),
        )?;
        let (summary, error) = match check(&o, args.rounds, c.cpus) {
            Ok(s) => (Some(s), None),
            Err(e) => {
                let hint = if args.icount {
                    // Guest time is instructions: the host cannot stretch a lap, so a
                    // slow lap is hyp's or the guest's. Single-threaded TCG runs one
                    // hart until it halts or a timer deadline: a hart that spins for
                    // another starves it (hyp's remote fences sleep for that reason).
                    "; under -icount the host cannot stretch a lap: a slow lap is a \
                     lost wake-up or a hart that spins for another (one TCG thread)"
                        .to_string()
                } else if host_worst.as_micros() as u64 > pingpong::SLOW_US {
                    format!(
                        "; the host itself stalled a thread for {} ms: overloaded, rerun \
                         on an idle machine",
                        host_worst.as_millis()
                    )
                } else {
                    String::new()
                };
                (
                    pingpong::parse(&o.output).ok(),
                    Some(format!("{e:#}{hint} (log {})", log.display())),
                )
            }
        };
        let row = Row {
            name: c.name,
            cpus: c.cpus,
            summary,
            wall_s: o.elapsed.as_secs_f64(),
            load,
            host_worst,
            error,
        };
        println!("{}", format_row(&row));
        rows.push(row);
    }
    println!();
    println!("{}", header());
    for r in &rows {
        println!("{}", format_row(r));
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| r.name)
        .collect();
    ensure!(
        failed.is_empty(),
        "soak failed on {} of {} configurations: {}",
        failed.len(),
        rows.len(),
        failed.join(", ")
    );
    println!(
        "soak: {} configurations, {} laps each, no lap over {} ms",
        rows.len(),
        args.rounds,
        pingpong::SLOW_US / 1000
    );
    Ok(())
}

fn header() -> String {
    format!(
        "{:<14} {:>4} {:>9} {:>6} {:>10} {:>8} {:>6} {:>8} {:>5} {:>7}  result",
        "config",
        "cpus",
        "laps",
        "slow",
        "worst ms",
        "mean us",
        ">10ms",
        "wall s",
        "load",
        "host ms"
    )
}

fn format_row(r: &Row) -> String {
    let (laps, slow, worst, mean, over10) = match &r.summary {
        Some(s) => (
            s.rounds.to_string(),
            s.slow.to_string(),
            format!("{:.1}", s.worst_us as f64 / 1000.0),
            s.mean_us.to_string(),
            s.over_10ms.to_string(),
        ),
        None => Default::default(),
    };
    format!(
        "{:<14} {:>4} {:>9} {:>6} {:>10} {:>8} {:>6} {:>8.1} {:>5} {:>7}  {}",
        r.name,
        r.cpus,
        laps,
        slow,
        worst,
        mean,
        over10,
        r.wall_s,
        r.load.map(|l| format!("{l:.1}")).unwrap_or_default(),
        r.host_worst.as_millis(),
        match &r.error {
            None => "ok".to_string(),
            Some(e) => format!("FAIL {e}"),
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configuration_of_the_table_is_there_once() {
        let names: Vec<&str> = CONFIGS.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "bare",
                "vplic",
                "vplic-migrate",
                "vplic-aclint",
                "aia",
                "aia-migrate",
                "aia-flip",
                "aia-sw-vcpus4",
                "aia-direct",
                "aia-direct-vcpus4"
            ]
        );
        for n in &names {
            assert!(
                SOAK_CONFIGS.contains(&format!("  {n} ")),
                "{n} undocumented"
            );
        }
        assert!(config("nope").is_err());
    }

    #[test]
    fn machines_match_the_table() {
        let images = crate::config::tests::FakeImages::new("soak");
        let boot = crate::images::BootImages {
            kernel: images.dir().join("Image"),
            initramfs: images.dir().join("initramfs"),
        };
        let t = Duration::from_secs(1);
        let m = |name: &str| {
            config(name)
                .unwrap()
                .machine(name, &boot, &images, t)
                .unwrap()
        };
        let (cfg, aia) = m("aia");
        assert_eq!((aia.smp, aia.aia), (2, Some(3)));
        let cfg = cfg.unwrap();
        assert_eq!(cfg.config.guests[0].topology, hyp_config::Topology::Aia);
        assert!(matches!(aia.payload, Payload::Hyp { .. }));
        // The ping-pong images are guest 0's.
        assert!(cfg.loads.iter().any(|(p, _)| *p == boot.initramfs));
        let (cfg, sw) = m("aia-sw-vcpus4");
        assert_eq!(
            (sw.aia, config("aia-sw-vcpus4").unwrap().cpus),
            (Some(1), 4)
        );
        assert_eq!(cfg.unwrap().config.guests[0].vcpus, 4);
        let (cfg, _) = m("vplic-migrate");
        assert_eq!(cfg.unwrap().config.hyp.migrate_ms, 20);
        let (cfg, bare) = m("bare");
        assert!(cfg.is_none() && matches!(bare.payload, Payload::BareLinux { .. }));
        assert!(m("vplic").1.aia.is_none());
        let (cfg, aclint) = m("vplic-aclint");
        assert!(cfg.unwrap().machine.aclint);
        assert!(aclint.extra.windows(2).any(|w| w == ["-M", "aclint=on"]));
    }

    fn outcome(output: &str, status: Option<i32>, timed_out: bool) -> crate::qemu::Outcome {
        crate::qemu::Outcome {
            output: output.into(),
            status,
            timed_out,
            elapsed: Duration::from_secs(3),
        }
    }

    #[test]
    fn a_run_must_finish_cleanly_without_stalls() {
        let ok = "VIRQ-PINGPONG cpus=2 rounds=10 slow=0 worst_us=900 mean_us=300 \
                  total_us=3000 over_1ms=0 over_10ms=0 timebase_hz=10000000\n";
        assert!(check(&outcome(ok, Some(0), false), 10, 2).is_ok());
        assert!(check(&outcome(ok, Some(1), false), 10, 2).is_err());
        let e = check(
            &outcome(
                "VIRQ-PINGPONG-PROGRESS done=100000 slow=1 worst_us=950000\n",
                None,
                true,
            ),
            1_000_000,
            2,
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("done=100000"), "{e:#}");
        let stalled = ok.replace("slow=0 worst_us=900", "slow=1 worst_us=950000");
        assert!(check(&outcome(&stalled, Some(0), false), 10, 2).is_err());
    }
}
