//! `cargo xtask bench --boot`: instructions from kernel start to `/init` for Debian
//! Linux on bare QEMU and under hyp on both topologies (issue 9, op 7 and its target
//! "boot to `/init` within 2 % of bare QEMU").
//!
//! Method: the soak's machines ([`crate::soak::Config::machine`]: bare QEMU on plain
//! `-M virt` (`bare-plic`) and on `-M virt,aia=aplic-imsic,aia-guests=0` (`bare-aia`),
//! `vplic` and `aia` under hyp with their Linux configurations), 2 harts, the ping-pong initramfs with a few laps so that each
//! guest powers off by itself, all under `-icount shift=0,sleep=off`, where one
//! instruction is one nanosecond of virtual time. The figure is the timestamp of the
//! kernel's `Run /init as init process` line: Linux's `sched_clock` since it started
//! counting (early in `time_init`), in nanoseconds, i.e. instructions of the whole
//! machine — guest, OpenSBI and, under hyp, hyp's exits — from then to `/init`. The
//! few million instructions before the kernel's clock starts (firmware, hyp's own
//! boot, the kernel's earliest set-up) are not in it, on any target.
//!
//! One boot says little: the figure depends chaotically on the guest's random seed
//! (QEMU's `/chosen/rng-seed`, which hyp passes on as each guest's own,
//! `hyp_config::seed`) — bare QEMU's boots vary by ±10 % from one seed to the next, and
//! so does a change of a few instructions anywhere (docs/benchmarks.md, op 7). So each
//! target boots with QEMU `-seed 1..=N` (the same seeds for every target) and the RTC
//! on the virtual clock ([`RTC`]), so each boot is deterministic, and the table
//! compares means.
use anyhow::{bail, Context, Result};
use std::time::Duration;

/// The runs: a name, the soak configuration, and whether bare QEMU gets plain `-M virt`
/// (a PLIC) instead of the soak's AIA machine — each hyp topology has its own bare
/// reference: `bare-plic` for `vplic`, `bare-aia` for `aia`.
const RUNS: &[(&str, &str, bool)] = &[
    ("bare-plic", "bare", true),
    ("vplic", "vplic", false),
    ("bare-aia", "bare", false),
    ("aia", "aia", false),
];
/// Laps of the ping-pong program (it only needs to finish and power off).
const ROUNDS: u64 = 20;
/// vCPUs and harts.
const CPUS: u32 = 2;
/// Boots per target (`--boot-seeds`): QEMU `-seed 1..=SEEDS`.
pub const SEEDS: u32 = 5;
/// The RTC on the virtual clock from a fixed date: bare Linux reads the goldfish RTC
/// before `/init` and mixes the wall time into its entropy pool
/// (`do_settimeofday64`), which now and then moved a boot of the same seed by up to
/// 13 % (host time; under hyp the guest has no RTC).
const RTC: &str = "base=2026-01-01T00:00:00,clock=vm";

/// The kernel's `Run /init` timestamp in `out`, in nanoseconds of virtual time.
pub fn init_ns(out: &str) -> Result<u64> {
    let line = out
        .lines()
        .find(|l| l.contains("Run /init as init process"))
        .context("no \"Run /init as init process\" line")?;
    let stamp = line
        .split_once('[')
        .and_then(|(_, r)| r.split_once(']'))
        .map(|(s, _)| s.trim())
        .context("the /init line has no [timestamp]")?;
    let (secs, frac) = stamp.split_once('.').context("timestamp without a '.'")?;
    let secs: u64 = secs.parse().context("timestamp seconds")?;
    if frac.len() != 6 {
        bail!("timestamp {stamp:?}: expected microseconds");
    }
    let micros: u64 = frac.parse().context("timestamp microseconds")?;
    Ok(secs * 1_000_000_000 + micros * 1_000)
}

/// Boot every target with `-seed 1..=seeds` and print instructions to `/init`: mean,
/// min and max per target, and the ratio of means to its bare machine.
pub fn run(seeds: u32) -> Result<()> {
    crate::setup::ensure_all()?;
    let img = crate::qemu::build(false)?;
    let boot = crate::pingpong::boot_images(ROUNDS, CPUS)?;
    let named = crate::config::NamedImages {
        testguest: Some(img.guest_bin.clone()),
        kernel_version: None,
    };
    let seeds = seeds.max(1);
    let mut rows: Vec<(&str, Vec<u64>)> = Vec::new();
    for (i, (name, soak, plain_virt)) in RUNS.iter().enumerate() {
        let mut runs = Vec::new();
        for seed in 1..=seeds {
            eprintln!(
                "bench --boot [{}/{}] {name} -seed {seed}",
                i + 1,
                RUNS.len()
            );
            let c = crate::soak::config(soak)?;
            let (_, mut m) = c.machine(
                &format!("boot-{name}"),
                &boot,
                &named,
                Duration::from_secs(600),
            )?;
            if *plain_virt {
                m.aia = None;
            }
            m.icount = true;
            m.extra.extend(["-seed".to_string(), seed.to_string()]);
            m.extra.extend(["-rtc".to_string(), RTC.to_string()]);
            let o = crate::qemu::run_qemu_watched(&m, &img, false, Some(Duration::from_secs(120)))?;
            let log = format!("bench-boot-{name}-seed{seed}");
            crate::qemu::save_log(&log, &o.output)?;
            runs.push(init_ns(&o.output).with_context(|| format!("{name} (log {log})"))?);
        }
        rows.push((name, runs));
    }
    println!(
        "instructions from the kernel's clock start to /init (-icount; Debian 6.12, {CPUS} harts; \
         QEMU -seed 1..={seeds})"
    );
    println!(
        "{:<10} {:>15} {:>15} {:>15} {:>16}   per seed",
        "target", "mean", "min", "max", "mean vs bare"
    );
    for (k, (name, runs)) in rows.iter().enumerate() {
        // Each hyp run follows its bare reference.
        let bare = mean(&rows[k - k % 2].1).max(1.0);
        let m = mean(runs);
        let (lo, hi) = (
            runs.iter().min().copied().unwrap_or(0),
            runs.iter().max().copied().unwrap_or(0),
        );
        let each: Vec<String> = runs.iter().map(u64::to_string).collect();
        println!(
            "{name:<10} {m:>15.0} {lo:>15} {hi:>15} {:>15.3}x   {}",
            m / bare,
            each.join(" ")
        );
    }
    Ok(())
}

fn mean(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_init_timestamp_is_read_in_nanoseconds() {
        let out = "[    0.000000] Linux version 6.12\n[    2.096136] Run /init as init process\n";
        assert_eq!(init_ns(out).unwrap(), 2_096_136_000);
        assert!(init_ns("[    2.1] Run /init as init process\n").is_err());
        assert!(init_ns("no such line\n").is_err());
        assert_eq!(
            init_ns("[   12.000001] Run /init as init process").unwrap(),
            12_000_001_000
        );
    }
}
