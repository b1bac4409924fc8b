//! `virq-bench`: times interrupt paths from S-mode (bare QEMU under OpenSBI) or VS-mode
//! (a guest of hyp) and prints one line per path:
//!
//! ```text
//! VIRQ-BENCH start hart=0 harts=1 intc=aia aplic=0xd000000 imsic=0x28000000 stride=0x4000 n=1000 warmup=100
//! VIRQ-BENCH op=sbi_base n=1000 ticks=T
//! VIRQ-BENCH op=ctrl_read n=1000 ticks=T reg=aplic.domaincfg
//! VIRQ-BENCH op=msi_self skipped=no-imsic
//! VIRQ-BENCH done errors=0
//! ```
//!
//! `ticks` are `rdtime` ticks over `n` operations after `warmup` untimed ones. Under
//! QEMU `-icount shift=0,sleep=off` the virt machine's `time` ticks at 10 MHz and one
//! instruction takes 1 ns, so instructions (of the whole machine) per operation are
//! `ticks * 100 / n`. Then it powers off through SBI SRST (reason "system failure" if
//! any op failed). The kernel command line (`/chosen/bootargs`) may hold
//! `bench.n=N bench.warmup=W bench.ops=a,b,…` (`all`, `none` or op names).
//!
//! The image starts with a RISC-V Linux `Image` header and is linked at 0x8020_0000:
//! OpenSBI starts a `-kernel` there, and xtask puts an `Image`-headed guest kernel 2 MiB
//! into guest RAM (0x8000_0000). a0 = hart id, a1 = DTB.
#![no_std]
#![no_main]

mod fdt;

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

/// Stack bytes per hart (must match `bench.ld`: 16 KiB × 8).
const STACK_SHIFT: usize = 14;
const MAX_HARTS: usize = 8;

core::arch::global_asm!(
    r#"
    .section .text.entry, "ax"
    .option push
    .option norvc
    .globl _start
_start:
    /* RISC-V Linux Image header (Documentation/arch/riscv/boot-image-header.rst). */
    j       1f                      /* code0 */
    .word   0                       /* code1 */
    .dword  0x200000                /* text_offset: 2 MiB into RAM */
    .dword  __image_end - _start    /* image_size */
    .dword  0                       /* flags: little endian */
    .word   2                       /* version 0.2 */
    .word   0                       /* res1 */
    .dword  0                       /* res2 */
    .ascii  "RISCV\0\0\0"           /* magic (deprecated), at 0x30 */
    .ascii  "RSC\x05"               /* magic2, at 0x38 */
    .word   0                       /* res3 */
1:
    .option pop
    li      t0, {max}
    bgeu    a0, t0, 9f
    la      sp, __stacks_start
    addi    t1, a0, 1
    slli    t1, t1, {shift}
    add     sp, sp, t1
    la      t0, __bss_start
    la      t1, __bss_end
2:  bgeu    t0, t1, 3f
    sd      zero, 0(t0)
    addi    t0, t0, 8
    j       2b
3:  la      t0, __bench_trap
    csrw    stvec, t0
    call    {main}
9:  wfi
    j       9b

    .text
    .align 2
__bench_trap:
    /* Any trap is a broken op: report it (on whatever stack there is) and power off. */
    andi    sp, sp, -16
    csrr    a0, scause
    csrr    a1, stval
    csrr    a2, sepc
    call    {trap}
    j       9b
"#,
    max = const MAX_HARTS,
    shift = const STACK_SHIFT,
    main = sym main,
    trap = sym trap,
);

// --- SBI --------------------------------------------------------------------

const EID_BASE: usize = 0x10;
const EID_IPI: usize = 0x0073_5049;
const EID_SRST: usize = 0x5352_5354;
const EID_DBCN: usize = 0x4442_434e;
const EID_LEGACY_PUTCHAR: usize = 0x01;
const BASE_GET_SPEC_VERSION: usize = 0;
const BASE_PROBE_EXTENSION: usize = 3;

/// `(error, value)` of an SBI call.
#[inline(always)]
fn ecall(eid: usize, fid: usize, a0: usize, a1: usize, a2: usize) -> (isize, usize) {
    let (err, val): (usize, usize);
    // SAFETY: an SBI call: the firmware (or hyp) reads a0-a2, a6, a7 and writes a0, a1;
    // it touches no memory of ours except what DBCN is given to read.
    unsafe {
        core::arch::asm!(
            "ecall",
            inlateout("a0") a0 => err,
            inlateout("a1") a1 => val,
            in("a2") a2,
            in("a6") fid,
            in("a7") eid,
        );
    }
    (err as isize, val)
}

// --- console ----------------------------------------------------------------

/// SBI DBCN is there (else the legacy console putchar).
static USE_DBCN: AtomicBool = AtomicBool::new(false);

/// One output line, written with a single SBI call when it is flushed.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    const fn new() -> Self {
        Line {
            buf: [0; 256],
            len: 0,
        }
    }

    fn flush(&mut self) {
        let dbcn = USE_DBCN.load(Ordering::Relaxed);
        let b = &self.buf[..self.len];
        if dbcn {
            // DBCN console_write takes a physical address: satp is 0 on bare QEMU, and
            // a guest's VS-stage is off, so our addresses are (guest-)physical.
            let mut off = 0;
            while off < b.len() {
                let (e, n) = ecall(EID_DBCN, 0, b.len() - off, b[off..].as_ptr() as usize, 0);
                if e != 0 || n == 0 {
                    break;
                }
                off += n;
            }
        } else {
            for &c in b {
                ecall(EID_LEGACY_PUTCHAR, 0, c as usize, 0, 0);
            }
        }
        self.len = 0;
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &c in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = c;
            self.len += 1;
        }
        Ok(())
    }
}

/// Print one line (a newline is added).
fn say(args: fmt::Arguments<'_>) {
    let mut l = Line::new();
    let _ = l.write_fmt(args);
    let _ = l.write_str("\n");
    l.flush();
}

macro_rules! say {
    ($($t:tt)*) => { say(format_args!($($t)*)) };
}

// --- CSRs ---------------------------------------------------------------------

const SSIP: usize = 1 << 1;
/// IMSIC indirect registers (AIA §3.1): `eidelivery`, `eithreshold`, `eie0`.
const ISEL_EIDELIVERY: usize = 0x70;
const ISEL_EITHRESHOLD: usize = 0x72;
const ISEL_EIE0: usize = 0xc0;
/// The identity of the self-MSI.
const MSI_ID: usize = 42;
/// Polls before an awaited interrupt counts as lost.
const POLL_LIMIT: usize = 1_000_000;

#[inline(always)]
fn rdtime() -> u64 {
    let t: u64;
    // SAFETY: reads the `time` CSR; no memory or other state is touched.
    unsafe { core::arch::asm!("csrr {0}, time", out(reg) t) };
    t
}

#[inline(always)]
fn sip() -> usize {
    let v: usize;
    // SAFETY: reads `sip`; no side effects.
    unsafe { core::arch::asm!("csrr {0}, sip", out(reg) v) };
    v
}

#[inline(always)]
fn clear_ssip() {
    // SAFETY: clears our own pending supervisor software interrupt; interrupts are off.
    unsafe { core::arch::asm!("csrc sip, {0}", in(reg) SSIP) };
}

/// Write `v` to the IMSIC indirect register `sel` (`siselect`/`sireg`).
fn iwrite(sel: usize, v: usize) {
    // SAFETY: selects and writes one of our own interrupt file's registers (only
    // reached when the DTB names an S-level IMSIC, so the CSRs exist).
    unsafe { core::arch::asm!("csrw 0x150, {0}", "csrw 0x151, {1}", in(reg) sel, in(reg) v) };
}

/// Set bits `v` of the IMSIC indirect register `sel`.
fn iset(sel: usize, v: usize) {
    // SAFETY: as `iwrite`.
    unsafe { core::arch::asm!("csrw 0x150, {0}", "csrs 0x151, {1}", in(reg) sel, in(reg) v) };
}

/// Claim the top pending interrupt of our interrupt file (`csrrw stopei, zero`);
/// returns its identity, 0 if none.
#[inline(always)]
fn claim_stopei() -> usize {
    let v: usize;
    // SAFETY: reads and claims from our own interrupt file (`stopei`, 0x15C).
    unsafe { core::arch::asm!("csrrw {0}, 0x15c, zero", out(reg) v) };
    v >> 16
}

// --- the operations -----------------------------------------------------------

/// What the DTB told us, for the ops.
struct Ctx {
    hart: usize,
    plat: fdt::Platform,
}

type OpResult = Result<(), &'static str>;

/// `get_spec_version`: one round trip into the firmware or hypervisor.
#[inline(always)]
fn op_sbi_base() -> OpResult {
    let (e, v) = ecall(EID_BASE, BASE_GET_SPEC_VERSION, 0, 0, 0);
    if e != 0 || v == 0 {
        return Err("sbi-error");
    }
    Ok(())
}

/// A read of a controller register: APLIC `domaincfg` (its top byte reads 0x80) or PLIC
/// priority 1.
#[inline(always)]
fn op_ctrl_read(addr: usize, aplic: bool) -> OpResult {
    // SAFETY: a 32-bit read of a register of the interrupt controller the DTB names;
    // reading it has no side effect.
    let v = unsafe { core::ptr::read_volatile(addr as *const u32) };
    if aplic && v >> 24 != 0x80 {
        return Err("bad-domaincfg");
    }
    Ok(())
}

/// SBI `send_ipi` to ourselves, wait for `sip.SSIP` (interrupts disabled), clear it.
#[inline(always)]
fn op_ipi_self(hart: usize) -> OpResult {
    let (e, _) = ecall(EID_IPI, 0, 1, hart, 0);
    if e != 0 {
        return Err("sbi-error");
    }
    let mut n = 0;
    while sip() & SSIP == 0 {
        n += 1;
        if n == POLL_LIMIT {
            return Err("ssip-lost");
        }
    }
    clear_ssip();
    Ok(())
}

/// Store [`MSI_ID`] to our own interrupt file's `seteipnum_le`, claim it with `stopei`.
#[inline(always)]
fn op_msi_self(page: usize) -> OpResult {
    // SAFETY: `seteipnum_le` (offset 0) of our own S-level interrupt file, from the DTB.
    unsafe { core::ptr::write_volatile(page as *mut u32, MSI_ID as u32) };
    let mut n = 0;
    loop {
        match claim_stopei() {
            0 => {}
            MSI_ID => return Ok(()),
            _ => return Err("wrong-identity"),
        }
        n += 1;
        if n == POLL_LIMIT {
            return Err("msi-lost");
        }
    }
}

/// Run `f` `warmup` times, then time `n` runs; the `rdtime` ticks of those.
#[inline(always)]
fn timed(n: u64, warmup: u64, mut f: impl FnMut() -> OpResult) -> Result<u64, &'static str> {
    for _ in 0..warmup {
        f()?;
    }
    let t0 = rdtime();
    for _ in 0..n {
        f()?;
    }
    Ok(rdtime() - t0)
}

/// The ops, in the order they run.
const OPS: &[&str] = &["nop", "sbi_base", "ctrl_read", "ipi_self", "msi_self"];

/// Run op `name`: `Ok(Some((ticks, detail)))`, `Ok(None)` with the reason it does not
/// apply here, or the error.
fn run_op(
    c: &Ctx,
    name: &str,
    n: u64,
    warmup: u64,
) -> Result<Result<(u64, &'static str), &'static str>, &'static str> {
    Ok(match name {
        // The loop alone: what every other figure includes besides its op.
        "nop" => Ok((
            timed(n, warmup, || {
                // SAFETY: an empty asm statement, a compiler barrier only.
                unsafe { core::arch::asm!("") };
                Ok(())
            })?,
            "",
        )),
        "sbi_base" => Ok((timed(n, warmup, op_sbi_base)?, "")),
        "ctrl_read" => match (c.plat.aplic, c.plat.plic) {
            (Some(a), _) => Ok((
                timed(n, warmup, || op_ctrl_read(a, true))?,
                " reg=aplic.domaincfg",
            )),
            (None, Some(p)) => Ok((
                timed(n, warmup, || op_ctrl_read(p + 4, false))?,
                " reg=plic.priority1",
            )),
            (None, None) => Err("no-controller"),
        },
        "ipi_self" => Ok((timed(n, warmup, || op_ipi_self(c.hart))?, "")),
        "msi_self" => match c.plat.imsic {
            Some(base) => {
                let page = base + c.hart * c.plat.imsic_stride;
                iwrite(ISEL_EIDELIVERY, 1);
                iwrite(ISEL_EITHRESHOLD, 0);
                iset(ISEL_EIE0 + MSI_ID / 64 * 2, 1 << (MSI_ID % 64));
                while claim_stopei() != 0 {}
                let r = timed(n, warmup, || op_msi_self(page));
                iwrite(ISEL_EIDELIVERY, 0);
                Ok((r?, ""))
            }
            None => Err("no-imsic"),
        },
        _ => return Err("unknown-op"),
    })
}

/// `key=value` of the command line.
fn arg<'a>(bootargs: &'a str, key: &str) -> Option<&'a str> {
    bootargs
        .split_ascii_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn num(s: Option<&str>, default: u64) -> u64 {
    s.and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Power off: reason "no reason" when everything worked, else "system failure".
fn shutdown(ok: bool) -> ! {
    ecall(EID_SRST, 0, 0, if ok { 0 } else { 1 }, 0);
    loop {
        // SAFETY: waits for an interrupt; nothing else is left to do.
        unsafe { core::arch::asm!("wfi") };
    }
}

extern "C" fn main(hart: usize, dtb: usize) -> ! {
    let dbcn = ecall(EID_BASE, BASE_PROBE_EXTENSION, EID_DBCN, 0, 0);
    USE_DBCN.store(dbcn.0 == 0 && dbcn.1 != 0, Ordering::Relaxed);
    let Some(plat) = fdt::parse(dtb) else {
        say!("VIRQ-BENCH error=no-dtb dtb={dtb:#x}");
        shutdown(false);
    };
    let n = num(arg(plat.bootargs, "bench.n"), 1000);
    let warmup = num(arg(plat.bootargs, "bench.warmup"), 100);
    let ops = arg(plat.bootargs, "bench.ops").unwrap_or("all");
    let intc = match (plat.aplic, plat.imsic, plat.plic) {
        (Some(_), Some(_), _) => "aia",
        (Some(_), None, _) => "aplic",
        (None, _, Some(_)) => "plic",
        _ => "none",
    };
    say!(
        "VIRQ-BENCH start hart={hart} harts={} intc={intc} aplic={:#x} imsic={:#x} stride={:#x} plic={:#x} n={n} warmup={warmup}",
        plat.harts,
        plat.aplic.unwrap_or(0),
        plat.imsic.unwrap_or(0),
        plat.imsic_stride,
        plat.plic.unwrap_or(0),
    );
    let c = Ctx { hart, plat };
    let mut errors = 0;
    for w in ops.split(',').filter(|w| *w != "none" && *w != "all") {
        if !OPS.contains(&w) {
            say!("VIRQ-BENCH op={w} error=unknown-op");
            errors += 1;
        }
    }
    for &op in OPS {
        if ops != "all" && !ops.split(',').any(|w| w == op) {
            continue;
        }
        match run_op(&c, op, n, warmup) {
            Ok(Ok((ticks, detail))) => say!("VIRQ-BENCH op={op} n={n} ticks={ticks}{detail}"),
            Ok(Err(why)) => say!("VIRQ-BENCH op={op} skipped={why}"),
            Err(e) => {
                say!("VIRQ-BENCH op={op} error={e}");
                errors += 1;
            }
        }
    }
    say!("VIRQ-BENCH done errors={errors}");
    shutdown(errors == 0)
}

/// An unexpected trap: report it and power off with a failure.
extern "C" fn trap(scause: usize, stval: usize, sepc: usize) -> ! {
    say!("VIRQ-BENCH error=trap scause={scause:#x} stval={stval:#x} sepc={sepc:#x}");
    shutdown(false)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    say!("VIRQ-BENCH error=panic {info}");
    shutdown(false)
}
