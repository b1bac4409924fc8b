//! `virq-bench`: times interrupt paths from S-mode (bare QEMU under OpenSBI) or VS-mode
//! (a guest of hyp) and prints one line per path:
//!
//! ```text
//! VIRQ-BENCH start hart=0 harts=1 intc=aia aplic=0xd000000 imsic=0x28000000 stride=0x4000 n=1000 warmup=100
//! VIRQ-BENCH op=sbi_base n=1000 ticks=T
//! VIRQ-BENCH op=ctrl_read n=1000 ticks=T reg=aplic.domaincfg
//! VIRQ-BENCH op=msi_self skipped=no-imsic
//! VIRQ-BENCH op=uart_thre n=1000 ticks=T intc=aplic-msi src=10 eiid=43
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
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

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
    .globl __bench_secondary
    .align 2
__bench_secondary:
    /* A hart started by SBI HSM hart_start: a0 = hart id, a1 = opaque. */
    li      t0, {max}
    bgeu    a0, t0, 9b
    la      sp, __stacks_start
    addi    t1, a0, 1
    slli    t1, t1, {shift}
    add     sp, sp, t1
    la      t0, __bench_trap
    csrw    stvec, t0
    call    {secondary}
    j       9b

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
    secondary = sym secondary,
    trap = sym trap,
);

// --- SBI --------------------------------------------------------------------

const EID_BASE: usize = 0x10;
const EID_IPI: usize = 0x0073_5049;
const EID_SRST: usize = 0x5352_5354;
const EID_HSM: usize = 0x0048_534d;
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

const SSIE: usize = 1 << 1;
const SEIE: usize = 1 << 9;

/// Enable `bits` in `sie` (with `sstatus.SIE` = 0 they only wake `wfi`: no trap).
fn sie_set(bits: usize) {
    // SAFETY: `sstatus.SIE` stays 0 throughout, so enabling a source in `sie` only lets
    // it end a `wfi`; no interrupt is taken.
    unsafe { core::arch::asm!("csrs sie, {0}", in(reg) bits) };
}

#[inline(always)]
fn wfi() {
    // SAFETY: waits for an enabled interrupt to become pending (interrupts are off
    // globally, so none is taken); it may also return early.
    unsafe { core::arch::asm!("wfi") };
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
    let v: usize;
    // SAFETY: a 32-bit read of a register of the interrupt controller the DTB names;
    // reading it has no side effect.
    unsafe {
        core::arch::asm!("lw {0}, 0({1})", out(reg) v, in(reg) addr, options(nostack, readonly))
    };
    // Only the low 32 bits count: KVM RISC-V as in Linux 6.12 returns an `lw` it emulates
    // zero-extended (upstream sign-extends it now), while compiled code would compare
    // the whole, supposedly sign-extended, register.
    if aplic && (v as u32) >> 24 != 0x80 {
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

// --- a wired device interrupt: the UART's THRE -----------------------------------

/// 16550 registers (byte offsets) and bits.
const UART_IER: usize = 1;
const IER_ETBEI: u8 = 1 << 1;
const SEIP: usize = 1 << 9;
/// The identity the APLIC (MSI mode) sends for the UART's source.
const UART_EIID: usize = 43;
/// APLIC registers (AIA §4.5): `domaincfg`, `sourcecfg[i]` at 4·i, `setienum`,
/// `clrienum`, `setipnum_le`, `target[i]` at 0x3000 + 4·i.
const APLIC_DOMAINCFG_IE: u32 = 1 << 8;
const APLIC_DOMAINCFG_DM: u32 = 1 << 2;
const APLIC_SETIENUM: usize = 0x1edc;
const APLIC_CLRIENUM: usize = 0x1fdc;
const APLIC_SETIPNUM_LE: usize = 0x2000;
const APLIC_TARGET: usize = 0x3000;
const SOURCECFG_LEVEL_HIGH: u32 = 6;
/// PLIC registers: priority[i] at 4·i, a context's enables, threshold and claim.
const PLIC_ENABLE: usize = 0x2000;
const PLIC_CONTEXT: usize = 0x20_0000;

fn mmio_w32(addr: usize, v: u32) {
    // SAFETY: a register of a controller the DTB names (only called with such).
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) };
}

fn mmio_r32(addr: usize) -> u32 {
    // SAFETY: as `mmio_w32`.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn mmio_w8(addr: usize, v: u8) {
    // SAFETY: a register of the UART the DTB names.
    unsafe { core::ptr::write_volatile(addr as *mut u8, v) };
}

/// Where the UART's interrupt is taken: the S-level APLIC in MSI mode (our IMSIC file
/// gets [`UART_EIID`]) or a PLIC context.
#[derive(Clone, Copy)]
enum Wired {
    Aplic { aplic: usize },
    Plic { claim: usize },
}

/// One round: enable THRE (the transmitter is empty, so the level line rises at once),
/// take the interrupt (IMSIC: poll `stopei`; PLIC: poll `sip.SEIP`, claim), disable
/// THRE (the UART lowers the line), complete (APLIC MSI mode, AIA §4.9.2: the level
/// source's re-trigger, a `setipnum_le` write, which pends it again only if the line
/// were still high; PLIC: the claim register written back).
#[inline(always)]
fn op_uart_thre(uart: usize, irq: usize, w: Wired) -> OpResult {
    mmio_w8(uart + UART_IER, IER_ETBEI);
    let mut n = 0;
    match w {
        Wired::Aplic { .. } => loop {
            match claim_stopei() {
                0 => {}
                UART_EIID => break,
                _ => return Err("wrong-identity"),
            }
            n += 1;
            if n == POLL_LIMIT {
                return Err("thre-lost");
            }
        },
        Wired::Plic { claim } => {
            while sip() & SEIP == 0 {
                n += 1;
                if n == POLL_LIMIT {
                    return Err("thre-lost");
                }
            }
            if mmio_r32(claim) as usize != irq {
                return Err("wrong-source");
            }
        }
    }
    mmio_w8(uart + UART_IER, 0);
    match w {
        Wired::Aplic { aplic } => mmio_w32(aplic + APLIC_SETIPNUM_LE, irq as u32),
        Wired::Plic { claim } => mmio_w32(claim, irq as u32),
    }
    Ok(())
}

/// Poll `stopei` for the UART's identity (`Err(lost)` after [`POLL_LIMIT`] polls).
fn wait_uart_msi(lost: &'static str) -> Result<(), &'static str> {
    for _ in 0..POLL_LIMIT {
        match claim_stopei() {
            0 => {}
            UART_EIID => return Ok(()),
            _ => return Err("wrong-identity"),
        }
    }
    Err(lost)
}

/// Untimed, before the rounds (APLIC MSI mode): a re-trigger while the line is still
/// high pends the source again (AIA §4.7, §4.9.2), so a second MSI follows; the
/// rounds' own re-triggers find the line low and pend nothing, so without this check
/// a re-trigger that never reached the physical APLIC would go unnoticed. Out of line,
/// so the timed rounds compile as before.
#[inline(never)]
fn retrigger_while_high(uart: usize, aplic: usize, irq: usize) -> Result<(), &'static str> {
    mmio_w8(uart + UART_IER, IER_ETBEI);
    wait_uart_msi("thre-lost")?;
    mmio_w32(aplic + APLIC_SETIPNUM_LE, irq as u32);
    wait_uart_msi("retrigger-lost")?;
    mmio_w8(uart + UART_IER, 0);
    mmio_w32(aplic + APLIC_SETIPNUM_LE, irq as u32);
    while claim_stopei() != 0 {}
    Ok(())
}

/// Set up the UART's source on our interrupt controller, time `n` rounds of
/// [`op_uart_thre`], tear down.
fn uart_thre(c: &Ctx, n: u64, warmup: u64) -> Result<Result<Timing, &'static str>, &'static str> {
    let Some((uart, irq)) = c.plat.uart else {
        return Ok(Err("no-uart"));
    };
    if irq == 0 || irq >= 1024 {
        return Err("bad-uart-source");
    }
    mmio_w8(uart + UART_IER, 0);
    let (w, detail) = match (c.plat.aplic, c.plat.imsic, c.plat.plic) {
        (Some(aplic), Some(_), _) => {
            mmio_w32(aplic, APLIC_DOMAINCFG_IE | APLIC_DOMAINCFG_DM);
            mmio_w32(aplic + 4 * irq, SOURCECFG_LEVEL_HIGH);
            // Hart index (our hart / vCPU) in bits 18.., guest index 0, the EIID.
            mmio_w32(
                aplic + APLIC_TARGET + 4 * irq,
                (c.hart << 18 | UART_EIID) as u32,
            );
            iwrite(ISEL_EIDELIVERY, 1);
            iwrite(ISEL_EITHRESHOLD, 0);
            iset(ISEL_EIE0 + UART_EIID / 64 * 2, 1 << (UART_EIID % 64));
            while claim_stopei() != 0 {}
            mmio_w32(aplic + APLIC_SETIENUM, irq as u32);
            retrigger_while_high(uart, aplic, irq)?;
            (Wired::Aplic { aplic }, " intc=aplic-msi")
        }
        (None, _, Some(plic)) => {
            let Some(ctx) = fdt::plic_s_context(&c.plat, c.hart) else {
                return Err("no-plic-context");
            };
            let claim = plic + PLIC_CONTEXT + 0x1000 * ctx + 4;
            mmio_w32(plic + 4 * irq, 1);
            let en = plic + PLIC_ENABLE + 0x80 * ctx + 4 * (irq / 32);
            mmio_w32(en, mmio_r32(en) | 1 << (irq % 32));
            mmio_w32(plic + PLIC_CONTEXT + 0x1000 * ctx, 0);
            // Nothing of ours is pending before the first round.
            loop {
                let id = mmio_r32(claim);
                if id == 0 {
                    break;
                }
                mmio_w32(claim, id);
            }
            (Wired::Plic { claim }, " intc=plic")
        }
        _ => return Ok(Err("no-controller")),
    };
    let r = timed(n, warmup, || op_uart_thre(uart, irq, w));
    mmio_w8(uart + UART_IER, 0);
    match w {
        Wired::Aplic { aplic } => {
            mmio_w32(aplic + APLIC_CLRIENUM, irq as u32);
            iwrite(ISEL_EIDELIVERY, 0);
        }
        Wired::Plic { .. } => {}
    }
    Ok(Ok(plain(r?, detail)))
}

// --- two-hart ping-pong --------------------------------------------------------

/// How the ping-pong's two sides signal, and how they wait for the signal: in `wfi`
/// (with `sstatus.SIE` = 0 and the source enabled in `sie`, so `wfi` returns and no
/// trap is taken), or spinning on the pending bit.
///
/// A spinning hart yields after each poll that found nothing ([`yield_hart`]): under
/// `-icount` QEMU runs the harts round-robin on one thread, and a hart that spins
/// without yielding only gives the thread up at its time budget's end (the next timer
/// deadline, QEMU's 100 ms kick at worst), so the figure would time QEMU's scheduler.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pp {
    /// SBI `send_ipi`; wait in `wfi` for `sip.SSIP`.
    Ipi,
    /// A store to the other hart's `seteipnum_le`; wait in `wfi` for `stopei`.
    Msi,
    /// SBI `send_ipi`; spin on `sip.SSIP`.
    IpiSpin,
    /// A store to the other hart's `seteipnum_le`; spin on `stopei`.
    MsiSpin,
}

impl Pp {
    fn code(self) -> usize {
        match self {
            Pp::Ipi => 1,
            Pp::Msi => 2,
            Pp::IpiSpin => 3,
            Pp::MsiSpin => 4,
        }
    }

    fn from_code(c: usize) -> Option<Pp> {
        match c {
            1 => Some(Pp::Ipi),
            2 => Some(Pp::Msi),
            3 => Some(Pp::IpiSpin),
            4 => Some(Pp::MsiSpin),
            _ => None,
        }
    }

    /// The signal is an MSI (else an SBI IPI).
    fn msi(self) -> bool {
        matches!(self, Pp::Msi | Pp::MsiSpin)
    }

    /// The waiting side spins (else it sits in `wfi`).
    fn spins(self) -> bool {
        matches!(self, Pp::IpiSpin | Pp::MsiSpin)
    }
}

/// Commands to the second hart: `(sequence << 8) | code`; it answers by copying the
/// sequence into `PP_READY` once set up, and into `PP_DONE` when its loop is over.
static PP_CMD: AtomicUsize = AtomicUsize::new(0);
static PP_ROUNDS: AtomicUsize = AtomicUsize::new(0);
/// The first hart's id and its IMSIC page (where the second hart signals).
static PP_PEER: AtomicUsize = AtomicUsize::new(0);
static PP_PEER_PAGE: AtomicUsize = AtomicUsize::new(0);
/// The second hart's IMSIC page (where the first signals).
static PP_PAGE: AtomicUsize = AtomicUsize::new(0);
static PP_READY: AtomicUsize = AtomicUsize::new(0);
static PP_DONE: AtomicUsize = AtomicUsize::new(0);
/// The second hart's failure (0: none; else a static string's address).
static PP_ERR: AtomicUsize = AtomicUsize::new(0);
/// The second hart is running [`secondary`].
static PP_STARTED: AtomicBool = AtomicBool::new(false);

/// Make our interrupt file accept [`MSI_ID`] (eidelivery on, threshold 0, `eie`).
fn imsic_setup() {
    iwrite(ISEL_EIDELIVERY, 1);
    iwrite(ISEL_EITHRESHOLD, 0);
    iset(ISEL_EIE0 + MSI_ID / 64 * 2, 1 << (MSI_ID % 64));
    while claim_stopei() != 0 {}
}

/// Signal hart `hart` (its IMSIC page `page`).
#[inline(always)]
fn pp_send(how: Pp, hart: usize, page: usize) -> OpResult {
    if how.msi() {
        // SAFETY: `seteipnum_le` of the other hart's S-level interrupt file (DTB).
        unsafe { core::ptr::write_volatile(page as *mut u32, MSI_ID as u32) };
    } else if ecall(EID_IPI, 0, 1, hart, 0).0 != 0 {
        return Err("sbi-error");
    }
    Ok(())
}

/// `stimecmp` this many ticks ahead in [`yield_hart`]: 100 instructions under
/// `-icount shift=0`.
const YIELD_TICKS: u64 = 1;
/// Yields of both harts in the current spinning ping-pong, counted only while a lap is
/// open ([`LAP_OPEN`]). Each side adds its wait's count when the wait ends, which is
/// before the lap it belongs to ends (the other hart answers after its own wait).
static YIELDS: AtomicUsize = AtomicUsize::new(0);
/// The yields of the timed laps that were no stall ([`laps`]).
static YIELDS_TIMED: AtomicUsize = AtomicUsize::new(0);
/// A lap is being timed: set just before its first `rdtime`, cleared just after its
/// last. A hart's polls outside (the other hart's waits run on while the first one does
/// its bookkeeping between laps) are in no lap's ticks, so they count in no lap's yields.
static LAP_OPEN: AtomicBool = AtomicBool::new(false);

/// Takes our timer deadline away when dropped: a `stimecmp` left in the past keeps
/// `sip.STIP` pending, which a later `wfi` under hyp may take as a wake-up.
struct Disarm;

impl Drop for Disarm {
    fn drop(&mut self) {
        disarm_timer();
    }
}

/// Give the hart up to QEMU's round robin: arm `stimecmp` (Sstc; `sie.STIE` is 0, so
/// it interrupts nothing). A QEMU timer that becomes the earliest deadline kicks the
/// running vCPU out of its execution loop, and the round robin goes on with the next
/// hart. Under hyp and KVM the write is to `vstimecmp`, in the guest, with no exit.
#[inline(always)]
fn yield_hart() {
    let t = rdtime() + YIELD_TICKS;
    // SAFETY: writes our own timer compare register (the DTB lists Sstc); its
    // interrupt is not enabled in `sie`.
    unsafe { core::arch::asm!("csrw 0x14d, {0}", in(reg) t) };
}

/// No timer deadline of ours left (`stimecmp` = all ones).
fn disarm_timer() {
    // SAFETY: as [`yield_hart`].
    unsafe { core::arch::asm!("csrw 0x14d, {0}", in(reg) usize::MAX) };
}

/// Poll for our signal (`MSI`: claim from `stopei`; else `sip.SSIP`), yielding after
/// each empty poll, at most `limit` polls: whether it came, and the yields made while a
/// lap was open ([`LAP_OPEN`]). Out of line, so the `yield` op times exactly this loop
/// (with a lap open, as in a timed lap).
#[inline(never)]
fn spin_poll<const MSI: bool>(limit: usize) -> Result<(bool, usize), &'static str> {
    let mut n = 0;
    for _ in 0..limit {
        let got = if MSI {
            match claim_stopei() {
                0 => false,
                MSI_ID => true,
                _ => return Err("wrong-identity"),
            }
        } else {
            sip() & SSIP != 0
        };
        if got {
            return Ok((true, n));
        }
        yield_hart();
        n += usize::from(LAP_OPEN.load(Ordering::Relaxed));
    }
    Ok((false, n))
}

/// Spin on our signal ([`spin_poll`]) and consume it.
#[inline(always)]
fn pp_spin(how: Pp) -> OpResult {
    let (got, n) = if how.msi() {
        spin_poll::<true>(POLL_LIMIT)?
    } else {
        spin_poll::<false>(POLL_LIMIT)?
    };
    if !got {
        return Err(if how.msi() { "msi-lost" } else { "ssip-lost" });
    }
    if !how.msi() {
        clear_ssip();
    }
    YIELDS.fetch_add(n, Ordering::Relaxed);
    Ok(())
}

/// The `yield` op: `n` empty polls and yields of [`spin_poll`] (after `warmup`), with
/// nothing pending and the other harts stopped, so a yield comes straight back: the
/// instructions each yield adds to a spinning ping-pong. `Ok((sip loop, stopei loop))`
/// in ticks, the second only with an IMSIC.
fn op_yield(c: &Ctx, n: u64, warmup: u64) -> Result<(u64, Option<u64>), &'static str> {
    let time = |msi: bool| -> Result<u64, &'static str> {
        let _disarm = Disarm;
        let poll = |k: u64| {
            if msi {
                spin_poll::<true>(k as usize)
            } else {
                spin_poll::<false>(k as usize)
            }
        };
        LAP_OPEN.store(true, Ordering::Relaxed);
        poll(warmup)?;
        let t0 = rdtime();
        let r = poll(n);
        let t = rdtime() - t0;
        LAP_OPEN.store(false, Ordering::Relaxed);
        if r?.0 {
            return Err("unexpected-signal");
        }
        Ok(t)
    };
    clear_ssip();
    let ipi = time(false)?;
    let msi = match c.plat.imsic {
        Some(_) => {
            imsic_setup();
            let t = time(true);
            iwrite(ISEL_EIDELIVERY, 0);
            Some(t?)
        }
        None => None,
    };
    Ok((ipi, msi))
}

/// Wait in `wfi` for our signal and consume it (`wfi` returns at most this often
/// without it before the signal counts as lost).
#[inline(always)]
fn pp_wait(how: Pp) -> OpResult {
    let mut n = 0;
    match how {
        Pp::Ipi | Pp::IpiSpin => {
            while sip() & SSIP == 0 {
                wfi();
                n += 1;
                if n == POLL_LIMIT {
                    return Err("ssip-lost");
                }
            }
            clear_ssip();
        }
        Pp::Msi | Pp::MsiSpin => loop {
            match claim_stopei() {
                0 => {}
                MSI_ID => break,
                _ => return Err("wrong-identity"),
            }
            wfi();
            n += 1;
            if n == POLL_LIMIT {
                return Err("msi-lost");
            }
        },
    }
    Ok(())
}

/// Where a ping-pong puts each lap's ticks (the last bucket: this many or more).
const HIST_LEN: usize = 1024;
static HIST: [AtomicU32; HIST_LEN] = [const { AtomicU32::new(0) }; HIST_LEN];
/// A lap this long (100,000 instructions under `-icount`) is a stall of QEMU's
/// round-robin, not the path: counted apart.
const STALL_TICKS: u64 = 1000;

/// Per-lap figures of a ping-pong (ticks).
struct Laps {
    stalls: u64,
    stall_ticks: u64,
    min: u64,
    median: u64,
    p90: u64,
    max: u64,
}

/// The `pct`-th percentile of the histogram of `n` laps (integer arithmetic: the FPU
/// is off).
fn quantile(n: u64, pct: u64) -> u64 {
    let want = (n * pct / 100).min(n.saturating_sub(1));
    let mut seen = 0;
    for (d, c) in HIST.iter().enumerate() {
        seen += u64::from(c.load(Ordering::Relaxed));
        if seen > want {
            return d as u64;
        }
    }
    HIST_LEN as u64 - 1
}

/// The second hart: wait for commands (spinning on memory, not timed) and answer
/// `PP_ROUNDS` signals of the first hart each.
extern "C" fn secondary(_hart: usize, _opaque: usize) -> ! {
    PP_STARTED.store(true, Ordering::SeqCst);
    let mut seen = 0;
    loop {
        let cmd = PP_CMD.load(Ordering::SeqCst);
        if cmd >> 8 == seen {
            core::hint::spin_loop();
            continue;
        }
        seen = cmd >> 8;
        let Some(how) = Pp::from_code(cmd & 0xff) else {
            pp_fail("bad-command");
            PP_DONE.store(seen, Ordering::SeqCst);
            continue;
        };
        pp_prepare(how);
        let (peer, page) = (
            PP_PEER.load(Ordering::SeqCst),
            PP_PEER_PAGE.load(Ordering::SeqCst),
        );
        PP_READY.store(seen, Ordering::SeqCst);
        // Each mode its own loop: the `wfi` ping-pongs' paths stay as they were before
        // the spinning ones came.
        let rounds = PP_ROUNDS.load(Ordering::SeqCst);
        let r = if how.spins() {
            (0..rounds).try_for_each(|_| pp_spin(how).and_then(|_| pp_send(how, peer, page)))
        } else {
            (0..rounds).try_for_each(|_| pp_wait(how).and_then(|_| pp_send(how, peer, page)))
        };
        if let Err(e) = r {
            pp_fail(e);
        }
        if how.spins() {
            disarm_timer();
        }
        PP_DONE.store(seen, Ordering::SeqCst);
    }
}

/// Set up our side: nothing pending, the signal's source enabled in `sie`.
fn pp_prepare(how: Pp) {
    if how.msi() {
        imsic_setup();
        sie_set(SEIE);
    } else {
        clear_ssip();
        sie_set(SSIE);
    }
}

/// Record a failure of the second hart.
fn pp_fail(e: &'static str) {
    PP_ERR.store(e.as_ptr() as usize | e.len() << 48, Ordering::SeqCst);
}

/// A failure the second hart recorded (address in the low 48 bits, length above).
fn pp_error() -> Option<&'static str> {
    let v = PP_ERR.swap(0, Ordering::SeqCst);
    if v == 0 {
        return None;
    }
    let (ptr, len) = (v & ((1 << 48) - 1), v >> 48);
    // SAFETY: `secondary` stored the address and length of a `&'static str`.
    let b = unsafe { core::slice::from_raw_parts(ptr as *const u8, len.max(1)) };
    Some(core::str::from_utf8(b).unwrap_or("second-hart-error"))
}

/// Round trips between us and another hart: we signal, it answers, we take the answer.
/// `n` timed after `warmup`. The other hart is started on first use.
fn pingpong(
    c: &Ctx,
    how: Pp,
    n: u64,
    warmup: u64,
) -> Result<Result<(u64, Laps), &'static str>, &'static str> {
    let Some(other) = (0..c.plat.harts).find(|&h| h != c.hart) else {
        return Ok(Err("one-hart"));
    };
    let page_of = |h: usize| c.plat.imsic.map(|b| b + h * c.plat.imsic_stride);
    if how.msi() && c.plat.imsic.is_none() {
        return Ok(Err("no-imsic"));
    }
    if how.spins() && !c.plat.sstc {
        return Ok(Err("no-sstc"));
    }
    YIELDS.store(0, Ordering::Relaxed);
    YIELDS_TIMED.store(0, Ordering::Relaxed);
    let _disarm = how.spins().then_some(Disarm);
    if !PP_STARTED.load(Ordering::SeqCst) {
        extern "C" {
            fn __bench_secondary();
        }
        let entry = __bench_secondary as *const () as usize;
        if ecall(EID_HSM, 0, other, entry, 0).0 != 0 {
            return Err("hart-start");
        }
        let mut k = 0;
        while !PP_STARTED.load(Ordering::SeqCst) {
            k += 1;
            if k == POLL_LIMIT * 100 {
                return Err("second-hart-silent");
            }
        }
    }
    let rounds = warmup + n;
    PP_ROUNDS.store(rounds as usize, Ordering::SeqCst);
    PP_PEER.store(c.hart, Ordering::SeqCst);
    PP_PEER_PAGE.store(page_of(c.hart).unwrap_or(0), Ordering::SeqCst);
    PP_PAGE.store(page_of(other).unwrap_or(0), Ordering::SeqCst);
    pp_prepare(how);
    let seq = (PP_CMD.load(Ordering::SeqCst) >> 8) + 1;
    PP_CMD.store(seq << 8 | how.code(), Ordering::SeqCst);
    while PP_READY.load(Ordering::SeqCst) != seq {
        if PP_DONE.load(Ordering::SeqCst) == seq {
            return Err(pp_error().unwrap_or("second-hart"));
        }
        core::hint::spin_loop();
    }
    let page = PP_PAGE.load(Ordering::SeqCst);
    let r = if how.spins() {
        laps(n, warmup, || {
            pp_send(how, other, page).and_then(|_| pp_spin(how))
        })
    } else {
        laps(n, warmup, || {
            pp_send(how, other, page).and_then(|_| pp_wait(how))
        })
    };
    let mut k = 0;
    while PP_DONE.load(Ordering::SeqCst) != seq {
        k += 1;
        if k == POLL_LIMIT * 100 {
            return Err("second-hart-stuck");
        }
    }
    if let Some(e) = pp_error() {
        return Err(e);
    }
    if how.msi() {
        iwrite(ISEL_EIDELIVERY, 0);
    }
    Ok(Ok(r?))
}

/// Run `f` `warmup` times, then time each of `n` runs: the total ticks and the laps;
/// the yields of the laps that were no stall go to [`YIELDS_TIMED`].
fn laps(n: u64, warmup: u64, mut f: impl FnMut() -> OpResult) -> Result<(u64, Laps), &'static str> {
    for _ in 0..warmup {
        f()?;
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
    for i in 0..n {
        // A lap shorter than a tick (100 instructions) is read as 0 or 1 tick: the mean
        // is right when laps start at every phase of the tick. A lap and the loop around
        // it may take a whole number of ticks and lock the phase (bare QEMU's MSI
        // ping-pong read 1 instruction per lap for 40 after an unrelated change): an
        // untimed delay of 0, 3, …, 99 instructions before each lap unlocks it.
        for _ in 0..i % 34 {
            // SAFETY: a `nop`.
            unsafe { core::arch::asm!("nop", options(nomem, nostack)) };
        }
        let y0 = YIELDS.load(Ordering::Relaxed);
        LAP_OPEN.store(true, Ordering::Relaxed);
        let t0 = rdtime();
        let r = f();
        let d = rdtime() - t0;
        LAP_OPEN.store(false, Ordering::Relaxed);
        r?;
        let y = YIELDS.load(Ordering::Relaxed) - y0;
        total += d;
        HIST[(d as usize).min(HIST_LEN - 1)].fetch_add(1, Ordering::Relaxed);
        l.min = l.min.min(d);
        l.max = l.max.max(d);
        if d >= STALL_TICKS {
            l.stalls += 1;
            l.stall_ticks += d;
        } else {
            YIELDS_TIMED.fetch_add(y, Ordering::Relaxed);
        }
    }
    l.median = quantile(n, 50);
    l.p90 = quantile(n, 90);
    Ok((total, l))
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
const OPS: &[&str] = &[
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

/// A timed op: total ticks, extra fields (`detail`, and `extra`: ` key=value`), per-lap
/// figures of a ping-pong.
struct Timing {
    ticks: u64,
    detail: &'static str,
    extra: Option<(&'static str, u64)>,
    laps: Option<Laps>,
}

fn plain(ticks: u64, detail: &'static str) -> Timing {
    Timing {
        ticks,
        detail,
        extra: None,
        laps: None,
    }
}

/// Run op `name`: `Ok(Ok(timing))`, `Ok(Err(why))` when it does not apply here, or
/// the error.
fn run_op(
    c: &Ctx,
    name: &str,
    n: u64,
    warmup: u64,
) -> Result<Result<Timing, &'static str>, &'static str> {
    let pp = |(ticks, laps): (u64, Laps)| Timing {
        ticks,
        detail: "",
        extra: None,
        laps: Some(laps),
    };
    // The spinning ones also say how often both sides yielded in the timed laps.
    let spin = |(ticks, laps): (u64, Laps)| Timing {
        ticks,
        detail: "",
        extra: Some(("yields", YIELDS_TIMED.load(Ordering::Relaxed) as u64)),
        laps: Some(laps),
    };
    Ok(match name {
        // The loop alone: what every other figure includes besides its op.
        "nop" => Ok(plain(
            timed(n, warmup, || {
                // SAFETY: an empty asm statement, a compiler barrier only.
                unsafe { core::arch::asm!("") };
                Ok(())
            })?,
            "",
        )),
        "sbi_base" => Ok(plain(timed(n, warmup, op_sbi_base)?, "")),
        "ctrl_read" => match (c.plat.aplic, c.plat.plic) {
            (Some(a), _) => Ok(plain(
                timed(n, warmup, || op_ctrl_read(a, true))?,
                " reg=aplic.domaincfg",
            )),
            (None, Some(p)) => Ok(plain(
                timed(n, warmup, || op_ctrl_read(p + 4, false))?,
                " reg=plic.priority1",
            )),
            (None, None) => Err("no-controller"),
        },
        "ipi_self" => Ok(plain(timed(n, warmup, || op_ipi_self(c.hart))?, "")),
        "msi_self" => match c.plat.imsic {
            Some(base) => {
                let page = base + c.hart * c.plat.imsic_stride;
                imsic_setup();
                let r = timed(n, warmup, || op_msi_self(page));
                iwrite(ISEL_EIDELIVERY, 0);
                Ok(plain(r?, ""))
            }
            None => Err("no-imsic"),
        },
        "uart_thre" => uart_thre(c, n, warmup)?,
        "ipi_pingpong" => pingpong(c, Pp::Ipi, n, warmup)?.map(pp),
        "msi_pingpong" => pingpong(c, Pp::Msi, n, warmup)?.map(pp),
        "yield" => match c.plat.sstc {
            true => {
                let (ipi, msi) = op_yield(c, n, warmup)?;
                Ok(Timing {
                    ticks: ipi,
                    detail: "",
                    extra: msi.map(|t| ("msi_ticks", t)),
                    laps: None,
                })
            }
            false => Err("no-sstc"),
        },
        "ipi_spin" => pingpong(c, Pp::IpiSpin, n, warmup)?.map(spin),
        "msi_spin" => pingpong(c, Pp::MsiSpin, n, warmup)?.map(spin),
        _ => return Err("unknown-op"),
    })
}

/// The op's line: `VIRQ-BENCH op=… n=… ticks=…`, for a ping-pong also the per-lap
/// figures and the histogram `hist=ticks:laps,…` (the last bucket is `1023+`).
fn report(op: &str, n: u64, t: &Timing) {
    let mut l = Line::new();
    let _ = write!(l, "VIRQ-BENCH op={op} n={n} ticks={}{}", t.ticks, t.detail);
    if let Some((k, v)) = t.extra {
        let _ = write!(l, " {k}={v}");
    }
    if let Some(p) = &t.laps {
        let _ = write!(
            l,
            " stalls={} stall_ticks={} min={} median={} p90={} max={} hist=",
            p.stalls, p.stall_ticks, p.min, p.median, p.p90, p.max
        );
        let mut first = true;
        for (d, c) in HIST.iter().enumerate() {
            let c = c.load(Ordering::Relaxed);
            if c == 0 {
                continue;
            }
            let sep = if first { "" } else { "," };
            first = false;
            let plus = if d == HIST_LEN - 1 { "+" } else { "" };
            let _ = write!(l, "{sep}{d}{plus}:{c}");
        }
    }
    let _ = l.write_str("\n");
    l.flush();
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
            Ok(Ok(t)) => report(op, n, &t),
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
