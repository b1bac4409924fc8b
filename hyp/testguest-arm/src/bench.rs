//! Bench mode: the aarch64 payload of `cargo xtask bench --system` (the counterpart of
//! `guest/bench` on riscv64). With `bench.*` words in `/chosen/bootargs` the guest runs
//! no tests: it times interrupt paths with `CNTVCT_EL0` and prints one line per path:
//!
//! ```text
//! VIRQ-BENCH start cpu=0 cpus=1 el=1 gicd=0x8000000 freq=1000000000 n=1000 warmup=100
//! VIRQ-BENCH op=hvc n=1000 ticks=T
//! VIRQ-BENCH op=sgi_pingpong n=1000 ticks=T stalls=0 stall_ticks=0 min=… median=… p90=… max=… hist=…
//! VIRQ-BENCH done errors=0
//! ```
//!
//! `ticks` are counter ticks over `n` operations after `warmup` untimed ones. QEMU arm
//! `virt`'s counter runs at 1 GHz and, under `-icount shift=0,sleep=off`, one
//! instruction takes 1 ns: a tick is one instruction of the whole machine (payload,
//! hyp, nothing else). The command line: `bench.n=N bench.warmup=W bench.ops=a,b,…`
//! (`all`, `none` or op names from [`OPS`]).
//!
//! The same ELF runs on bare QEMU (`-M virt,gic-version=3`, no EL2: QEMU starts it at
//! EL1 and answers PSCI `hvc`s itself) and as hyp's guest. IRQs stay masked at PSTATE
//! throughout: every wait polls `ICC_IAR1_EL1` (the virtual CPU interface under hyp)
//! or sits in `wfi`, which a pending interrupt ends whether masked or not. Every vCPU
//! the DTB lists is started (PSCI `CPU_ON`) before the first op, so a boot that runs
//! no op has the same start-up as one that runs the ping-pong (xtask subtracts it from
//! hyp's exit counts). Then the guest powers off through PSCI `SYSTEM_OFF`.
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::guest::{self, send_sgi, Ctx, CMD, CMD_DONE, CMD_PONG, GIC_READY, ONLINE, WAKE_SGI};
use crate::hw::{self, sysreg};
use crate::regs::{cntv, gicd, icc, intid, psci};

/// The ops, in the order they run (xtask's `ARM_OPS`). The `vlpi_*` ones need hyp's
/// vPEs (`gicv4` on the command line: `topology = "vgicv4"`); elsewhere they report
/// themselves skipped (`no-gicv4`).
pub const OPS: &[&str] = &[
    "nop",
    "hvc",
    "gicd_read",
    "eoi",
    "sgi_self",
    "sgi_pingpong",
    "vtimer",
    "vlpi_self",
    "vlpi_call",
    "vlpi_wake",
];

/// The vINTID of hyp's test vLPI `k` (`VIRQ_VLPI_INT`: hyp's ITS INT on the event it
/// VMAPTI'd to vINTID 8192 + k of the vCPU's vPE).
const fn vlpi(k: u32) -> u32 {
    8192 + k
}

/// The SGI the timed ops send (not [`WAKE_SGI`], which the command loop takes).
const BENCH_SGI: u32 = 5;
/// `ICC_IAR1_EL1` reads (or `wfi`s) before an awaited interrupt counts as lost.
const POLL_LIMIT: u32 = 1_000_000;
/// Bucket width of the ping-pong's lap histogram, in ticks (instructions).
const HIST_STEP: u64 = 10;
/// Buckets (the last one: this many steps or more: up to a stall, [`STALL_TICKS`]).
const HIST_LEN: usize = 10_240;
/// A lap this long (100,000 instructions) is a stall of QEMU's round-robin between
/// the CPUs under `-icount` (the other CPU ran late), not the path: counted apart.
const STALL_TICKS: u64 = 100_000;

type OpResult = Result<(), &'static str>;

/// Acknowledge the best pending interrupt; its INTID and the `ICC_IAR1_EL1` value.
#[inline(always)]
fn ack() -> (u32, u64) {
    let iar = sysreg::icc_iar1_el1::read();
    ((iar & icc::IAR_INTID) as u32, iar)
}

/// EOI (EOImode 0: also the deactivate).
#[inline(always)]
fn eoi(iar: u64) {
    sysreg::icc_eoir1_el1::write(iar);
}

/// Poll `ICC_IAR1_EL1` until `want` is acknowledged (`wfi` between polls if `sleep`);
/// returns its IAR value, not yet EOI'd. Another INTID is an error (EOI'd first).
#[inline(always)]
fn take(want: u32, sleep: bool) -> Result<u64, &'static str> {
    let mut n = 0;
    loop {
        let (id, iar) = ack();
        if id == want {
            return Ok(iar);
        }
        if id < intid::SPURIOUS - 3 {
            eoi(iar);
            return Err("unexpected-intid");
        }
        if sleep {
            hw::wfi();
        }
        n += 1;
        if n == POLL_LIMIT {
            return Err("interrupt-lost");
        }
    }
}

/// `PSCI_VERSION` through `hvc`: answered by hyp, or on bare QEMU by QEMU itself.
#[inline(always)]
fn op_hvc() -> OpResult {
    if hw::hvc(psci::VERSION, 0, 0, 0) <= 0 {
        return Err("psci-version");
    }
    Ok(())
}

/// A 32-bit read of `GICD_TYPER` (the distributor hyp emulates).
#[inline(always)]
fn op_gicd_read() -> OpResult {
    if hw::read32(gicd::BASE + gicd::TYPER) & gicd::TYPER_ITLINES == 0 {
        return Err("bad-gicd-typer");
    }
    Ok(())
}

/// Arm the virtual timer to fire now and take its interrupt (not EOI'd); the timer is
/// disabled again, so its level is low by the time the caller EOIs.
#[inline(always)]
fn vtimer_take() -> Result<u64, &'static str> {
    sysreg::cntv_cval_el0::write(hw::now());
    sysreg::cntv_ctl_el0::write(cntv::ENABLE);
    let r = take(intid::VTIMER, false);
    sysreg::cntv_ctl_el0::write(0);
    r
}

/// One EOI of an interrupt already taken, timed alone: the untimed set-up takes the
/// virtual timer's interrupt (under hyp an exit of class `irq`, so a trapped EOI would
/// show as a `sysreg` exit of its own).
#[inline(always)]
fn op_eoi() -> Result<u64, &'static str> {
    let iar = vtimer_take()?;
    let t0 = hw::now();
    eoi(iar);
    Ok(hw::now() - t0)
}

/// An SGI to ourselves (`ICC_SGI1R_EL1`), taken and EOI'd.
#[inline(always)]
fn op_sgi_self(cpu: usize) -> OpResult {
    send_sgi(cpu, BENCH_SGI);
    let iar = take(BENCH_SGI, false)?;
    eoi(iar);
    Ok(())
}

/// Have hyp send vLPI `k` to vCPU `to` (`VIRQ_VLPI_INT`, one `hvc`).
#[inline(always)]
fn send_vlpi(to: usize, k: u32) -> OpResult {
    if hw::hvc(crate::tests::VIRQ_VLPI_INT, to as u64, u64::from(k), 0) != 0 {
        return Err("vlpi-int");
    }
    Ok(())
}

/// A vLPI to this running vCPU, delivered by the GIC with its vPE resident: sent
/// untimed (hyp's test call: the `hvc` and the ITS INT), then timed alone —
/// acknowledge (`ICC_IAR1_EL1` until its vINTID), EOI. The call's exit is the
/// set-up's (xtask leaves it out of the figure); `vlpi_call` times both.
#[inline(always)]
fn op_vlpi_self(cpu: usize) -> Result<u64, &'static str> {
    send_vlpi(cpu, 0)?;
    let t0 = hw::now();
    let iar = take(vlpi(0), false)?;
    eoi(iar);
    Ok(hw::now() - t0)
}

/// [`op_vlpi_self`] with the call timed too: the test call that sends the vLPI (an
/// `hvc`, hyp's INT command to the ITS and its wait for completion), acknowledge, EOI.
#[inline(always)]
fn op_vlpi_call(cpu: usize) -> OpResult {
    send_vlpi(cpu, 0)?;
    let iar = take(vlpi(0), false)?;
    eoi(iar);
    Ok(())
}

/// The virtual timer armed to fire now, taken, EOI'd.
#[inline(always)]
fn op_vtimer() -> OpResult {
    let iar = vtimer_take()?;
    eoi(iar);
    Ok(())
}

// --- the ping-pong ------------------------------------------------------------------

/// Rounds the other vCPU answers in a [`CMD_PONG`].
static PONG_ROUNDS: AtomicU64 = AtomicU64::new(0);
/// The vCPU it answers.
static PONG_PEER: AtomicU64 = AtomicU64::new(0);
/// It is in its loop (IRQs masked): the first SGI can go.
static PONG_READY: AtomicBool = AtomicBool::new(false);
/// What it waits for: [`BENCH_SGI`], or a vLPI ([`vlpi`] 1: `vlpi_wake`).
static PONG_WAITS_FOR: AtomicU32 = AtomicU32::new(BENCH_SGI);

/// The other vCPU's side of [`CMD_PONG`] (from its command loop, IRQs masked): wait
/// in `wfi` for [`BENCH_SGI`] (or the vLPI of `vlpi_wake`), EOI it, send an SGI back;
/// `PONG_ROUNDS` times. The result: 0, or -1 if an interrupt was lost.
pub fn pong() -> i64 {
    let peer = PONG_PEER.load(Ordering::SeqCst) as usize;
    let rounds = PONG_ROUNDS.load(Ordering::SeqCst);
    let want = PONG_WAITS_FOR.load(Ordering::SeqCst);
    PONG_READY.store(true, Ordering::SeqCst);
    for _ in 0..rounds {
        match take(want, true) {
            Ok(iar) => eoi(iar),
            Err(_) => return -1,
        }
        send_sgi(peer, BENCH_SGI);
    }
    0
}

/// Per-lap ticks, in [`HIST_STEP`] buckets.
static HIST: [AtomicU32; HIST_LEN] = [const { AtomicU32::new(0) }; HIST_LEN];

/// Per-lap figures of a ping-pong (ticks).
struct Laps {
    stalls: u64,
    stall_ticks: u64,
    min: u64,
    median: u64,
    p90: u64,
    max: u64,
}

/// The `pct`-th percentile of `n` laps (a bucket's lower bound, in ticks).
fn quantile(n: u64, pct: u64) -> u64 {
    let want = (n * pct / 100).min(n.saturating_sub(1));
    let mut seen = 0;
    for (d, c) in HIST.iter().enumerate() {
        seen += u64::from(c.load(Ordering::Relaxed));
        if seen > want {
            return d as u64 * HIST_STEP;
        }
    }
    (HIST_LEN as u64 - 1) * HIST_STEP
}

/// Round trips with vCPU `other`: we send an SGI (`vlpi`: have hyp send it a vLPI), it
/// answers with an SGI, we take it; both sides wait in `wfi`, so with `vlpi` the other
/// vCPU is blocked when its vLPI comes: its doorbell wakes it. Each of `n` laps timed
/// on its own after `warmup`.
fn pingpong(
    c: &Ctx,
    n: u64,
    warmup: u64,
    vlpi_to_other: bool,
) -> Result<Result<(u64, Laps), &'static str>, &'static str> {
    let me = guest::cpu();
    let Some(other) = (0..c.ncpus).find(|&v| v != me) else {
        return Ok(Err("one-vcpu"));
    };
    if !GIC_READY[other].load(Ordering::SeqCst) {
        return Err("other-vcpu-not-up");
    }
    PONG_ROUNDS.store(warmup + n, Ordering::SeqCst);
    PONG_PEER.store(me as u64, Ordering::SeqCst);
    PONG_READY.store(false, Ordering::SeqCst);
    PONG_WAITS_FOR.store(
        if vlpi_to_other { vlpi(1) } else { BENCH_SGI },
        Ordering::SeqCst,
    );
    let done = CMD_DONE[other].load(Ordering::SeqCst);
    CMD[other].store(CMD_PONG, Ordering::SeqCst);
    send_sgi(other, WAKE_SGI);
    if !c.wait_until(1000, || PONG_READY.load(Ordering::SeqCst)) {
        return Err("other-vcpu-silent");
    }
    let lap = || {
        if vlpi_to_other {
            send_vlpi(other, 1)?;
        } else {
            send_sgi(other, BENCH_SGI);
        }
        take(BENCH_SGI, true).map(eoi)
    };
    for _ in 0..warmup {
        lap()?;
    }
    for h in &HIST {
        h.store(0, Ordering::Relaxed);
    }
    let mut l = Laps {
        stalls: 0,
        stall_ticks: 0,
        min: u64::MAX,
        median: 0,
        p90: 0,
        max: 0,
    };
    let mut total = 0;
    for _ in 0..n {
        let t0 = hw::now();
        lap()?;
        let d = hw::now() - t0;
        total += d;
        let b = ((d / HIST_STEP) as usize).min(HIST_LEN - 1);
        HIST[b].fetch_add(1, Ordering::Relaxed);
        l.min = l.min.min(d);
        l.max = l.max.max(d);
        if d >= STALL_TICKS {
            l.stalls += 1;
            l.stall_ticks += d;
        }
    }
    l.median = quantile(n, 50);
    l.p90 = quantile(n, 90);
    if !c.wait_until(1000, || CMD_DONE[other].load(Ordering::SeqCst) != done) {
        return Err("other-vcpu-stuck");
    }
    if guest::CMD_RESULT[other].load(Ordering::SeqCst) != 0 {
        return Err("other-vcpu-lost-sgi");
    }
    Ok(Ok((total, l)))
}

// --- timing and the run -------------------------------------------------------------

/// Run `f` `warmup` times, then time `n` runs: their ticks.
#[inline(always)]
fn timed(n: u64, warmup: u64, mut f: impl FnMut() -> OpResult) -> Result<u64, &'static str> {
    for _ in 0..warmup {
        f()?;
    }
    let t0 = hw::now();
    for _ in 0..n {
        f()?;
    }
    Ok(hw::now() - t0)
}

/// Run `f` `warmup + n` times; the sum of the ticks the last `n` return (each run
/// times its own window).
fn windows(
    n: u64,
    warmup: u64,
    mut f: impl FnMut() -> Result<u64, &'static str>,
) -> Result<u64, &'static str> {
    for _ in 0..warmup {
        f()?;
    }
    let mut total = 0;
    for _ in 0..n {
        total += f()?;
    }
    Ok(total)
}

/// A timed op: total ticks, extra fields, per-lap figures of a ping-pong.
struct Timing {
    ticks: u64,
    detail: &'static str,
    laps: Option<Laps>,
}

fn plain(ticks: u64, detail: &'static str) -> Timing {
    Timing {
        ticks,
        detail,
        laps: None,
    }
}

/// Run op `name`: `Ok(Ok(timing))`, `Ok(Err(why))` when it does not apply here, or the
/// error.
fn run_op(
    c: &Ctx,
    name: &str,
    n: u64,
    warmup: u64,
) -> Result<Result<Timing, &'static str>, &'static str> {
    let cpu = guest::cpu();
    Ok(match name {
        // The loop alone: what every other figure includes besides its op.
        "nop" => Ok(plain(
            timed(n, warmup, || {
                // SAFETY: an empty asm statement, a compiler barrier only.
                unsafe { core::arch::asm!("", options(nomem, nostack)) };
                Ok(())
            })?,
            "",
        )),
        "hvc" => Ok(plain(timed(n, warmup, op_hvc)?, " call=psci_version")),
        "gicd_read" => Ok(plain(timed(n, warmup, op_gicd_read)?, " reg=gicd.typer")),
        "eoi" => Ok(plain(windows(n, warmup, op_eoi)?, " intid=27")),
        "sgi_self" => Ok(plain(timed(n, warmup, || op_sgi_self(cpu))?, "")),
        "sgi_pingpong" => pingpong(c, n, warmup, false)?.map(|(ticks, laps)| Timing {
            ticks,
            detail: "",
            laps: Some(laps),
        }),
        "vtimer" => Ok(plain(timed(n, warmup, op_vtimer)?, "")),
        "vlpi_self" | "vlpi_call" | "vlpi_wake" if !c.gicv4 => Err("no-gicv4"),
        "vlpi_self" => Ok(plain(
            windows(n, warmup, || op_vlpi_self(cpu))?,
            " vintid=8192",
        )),
        "vlpi_call" => Ok(plain(
            timed(n, warmup, || op_vlpi_call(cpu))?,
            " vintid=8192",
        )),
        "vlpi_wake" => pingpong(c, n, warmup, true)?.map(|(ticks, laps)| Timing {
            ticks,
            detail: "",
            laps: Some(laps),
        }),
        _ => return Err("unknown-op"),
    })
}

/// The op's line (printed in pieces: only this vCPU prints); for a ping-pong also the
/// per-lap figures and the histogram `hist=ticks:laps,…` (bucket lower bounds in
/// ticks; the last bucket is `…+`).
fn report(op: &str, n: u64, t: &Timing) {
    guest::print(format_args!(
        "VIRQ-BENCH op={op} n={n} ticks={}{}",
        t.ticks, t.detail
    ));
    if let Some(p) = &t.laps {
        guest::print(format_args!(
            " stalls={} stall_ticks={} min={} median={} p90={} max={} hist=",
            p.stalls, p.stall_ticks, p.min, p.median, p.p90, p.max
        ));
        let mut first = true;
        for (d, c) in HIST.iter().enumerate() {
            let c = c.load(Ordering::Relaxed);
            if c == 0 {
                continue;
            }
            let sep = if first { "" } else { "," };
            first = false;
            let plus = if d == HIST_LEN - 1 { "+" } else { "" };
            guest::print(format_args!("{sep}{}{plus}:{c}", d as u64 * HIST_STEP));
        }
    }
    guest::print(format_args!("\n"));
}

/// `key=value` of the command line.
fn arg<'a>(bootargs: &'a str, key: &str) -> Option<&'a str> {
    bootargs
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// Whether the command line asks for bench mode.
pub fn wanted(bootargs: &str) -> bool {
    bootargs
        .split_ascii_whitespace()
        .any(|w| w.starts_with("bench."))
}

fn num(s: Option<&str>, default: u64) -> u64 {
    s.and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Start every other vCPU the DTB lists (PSCI `CPU_ON`) and wait for its GIC set-up.
fn start_others(c: &Ctx) -> OpResult {
    for v in 1..c.ncpus {
        let r = hw::hvc(
            psci::CPU_ON | psci::SMC64,
            v as u64,
            hw::secondary_entry(),
            0,
        );
        if r != psci::SUCCESS {
            return Err("cpu-on");
        }
        if !c.wait_until(1000, || {
            ONLINE[v].load(Ordering::SeqCst) == 1 && GIC_READY[v].load(Ordering::SeqCst)
        }) {
            return Err("vcpu-not-up");
        }
    }
    Ok(())
}

/// The bench run on the boot vCPU (its GIC distributor and CPU interface set up, IRQs
/// masked); powers off at the end.
pub fn run(c: &Ctx, bootargs: &str) -> ! {
    let n = num(arg(bootargs, "bench.n"), 1000);
    let warmup = num(arg(bootargs, "bench.warmup"), 100);
    let ops = arg(bootargs, "bench.ops").unwrap_or("all");
    let el = (sysreg::current_el::read() >> 2) & 3;
    println!(
        "VIRQ-BENCH start cpu={} cpus={} el={el} gicd={:#x} freq={} n={n} warmup={warmup}",
        guest::cpu(),
        c.ncpus,
        gicd::BASE,
        sysreg::cntfrq_el0::read()
    );
    let mut errors = 0;
    if let Err(e) = start_others(c) {
        println!("VIRQ-BENCH error={e}");
        errors += 1;
    }
    for w in ops.split(',').filter(|w| *w != "none" && *w != "all") {
        if !OPS.contains(&w) {
            println!("VIRQ-BENCH op={w} error=unknown-op");
            errors += 1;
        }
    }
    for &op in OPS {
        if errors > 0 || (ops != "all" && !ops.split(',').any(|w| w == op)) {
            continue;
        }
        match run_op(c, op, n, warmup) {
            Ok(Ok(t)) => report(op, n, &t),
            Ok(Err(why)) => println!("VIRQ-BENCH op={op} skipped={why}"),
            Err(e) => {
                println!("VIRQ-BENCH op={op} error={e}");
                errors += 1;
            }
        }
    }
    println!("VIRQ-BENCH done errors={errors}");
    guest::power_off(errors == 0)
}
