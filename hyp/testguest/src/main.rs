//! `testguest`: a bare-metal VS-mode guest that tests hyp from the inside.
//!
//! Each test prints `TEST <name> ... PASS` or `TEST <name> ... FAIL (<why>)`; at the
//! end the guest prints `testguest: N passed, M failed` and shuts down through SBI
//! SRST: reason 0 when everything passed, else the vendor reason `0xF000_0000 + M`,
//! which hyp turns into QEMU exit status M.
#![no_std]
#![no_main]
// Test failures carry a fixed-size message (no allocator); size does not matter here.
#![allow(clippy::result_large_err)]

mod hw;

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use hw::{csr, ecall, Frame, Ret};

// SBI extension ids (SBI v2.0).
const EID_BASE: usize = 0x10;
const EID_TIME: usize = 0x5449_4d45;
const EID_IPI: usize = 0x0073_5049;
const EID_RFNC: usize = 0x5246_4e43;
const EID_HSM: usize = 0x0048_534d;
const EID_SRST: usize = 0x5352_5354;
const EID_DBCN: usize = 0x4442_434e;
const EID_SUSP: usize = 0x5355_5350;
const EID_FWFT: usize = 0x4657_4654;
/// hyp's experimental extension (see hyp's `sbi.rs`).
const EID_HYP: usize = 0x0856_4951;

const ERR_NOT_SUPPORTED: isize = -2;
const ERR_INVALID_PARAM: isize = -3;
const ERR_DENIED: isize = -4;
const ERR_INVALID_ADDRESS: isize = -5;
const ERR_ALREADY_AVAILABLE: isize = -6;

// HSM (SBI v2.0 §9).
const HSM_START: usize = 0;
const HSM_STOP: usize = 1;
const HSM_STATUS: usize = 2;
const HSM_SUSPEND: usize = 3;
const STATE_STARTED: usize = 0;
const STATE_STOPPED: usize = 1;
const STATE_SUSPENDED: usize = 4;
const SUSPEND_RETENTIVE: usize = 0;
const SUSPEND_NON_RETENTIVE: usize = 0x8000_0000;
/// `opaque` of a secondary's non-retentive suspend (+ its hart id).
const RESUME_MAGIC: usize = 0x5e5e_0000;
/// `opaque` of the boot vCPU's system suspend (+ its hart id).
const SYSTEM_MAGIC: usize = 0x5e57_0000;

const PLIC: usize = 0x0c00_0000;
const UART: usize = 0x1000_0000;
const UART_IRQ: u32 = 10;
/// Guest-physical address with nothing mapped (QEMU virt's flash, which hyp gives no
/// guest; not the PCIe window, where a function given to the guest has its BARs).
const UNMAPPED: usize = 0x2000_0000;
/// 10 MHz timebase.
const MS: u64 = 10_000;

const SSIP: usize = 1 << 1;
const STIP: usize = 1 << 5;
const SEIP: usize = 1 << 9;
const SIE: usize = 1 << 1;

// --- console -----------------------------------------------------------------

static CONSOLE: spin::Mutex<()> = spin::Mutex::new(());

struct Out;

impl Write for Out {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // DBCN console_write of a buffer in guest RAM (its address is guest-physical,
        // and the guest runs with the VS-stage off).
        let b = s.as_bytes();
        let mut off = 0;
        while off < b.len() {
            let r = ecall(EID_DBCN, 0, b.len() - off, b[off..].as_ptr() as usize, 0);
            if r.error != 0 || r.value == 0 {
                return Err(fmt::Error);
            }
            off += r.value;
        }
        Ok(())
    }
}

fn print(args: fmt::Arguments<'_>) {
    let _g = CONSOLE.lock();
    let _ = Out.write_fmt(args);
}

macro_rules! println {
    ($($arg:tt)*) => { print(format_args!("{}\n", format_args!($($arg)*))) };
}

// --- state shared with the trap handler ----------------------------------------

static IPIS: [AtomicU64; hw::MAX_HARTS] = [const { AtomicU64::new(0) }; hw::MAX_HARTS];
static ONLINE: [AtomicBool; hw::MAX_HARTS] = [const { AtomicBool::new(false) }; hw::MAX_HARTS];
static TIMER_AT: AtomicU64 = AtomicU64::new(0);
static EXT_COUNT: AtomicU64 = AtomicU64::new(0);
static EXT_LAST: AtomicU64 = AtomicU64::new(0);
/// Busy-wait this many ticks in the external interrupt handler before servicing.
static EXT_DELAY: AtomicU64 = AtomicU64::new(0);
/// The test enabled THRE and waits for one service.
static EXT_ARMED: AtomicBool = AtomicBool::new(false);
/// Deliveries after the service (the guest's view of an interrupt storm).
static EXT_SPURIOUS: AtomicU64 = AtomicU64::new(0);
static EXPECT_FAULT: AtomicBool = AtomicBool::new(false);
static FAULT_CAUSE: AtomicUsize = AtomicUsize::new(0);
static FAULT_TVAL: AtomicUsize = AtomicUsize::new(0);
static UNEXPECTED: AtomicU64 = AtomicU64::new(0);

/// Commands for the secondaries (`secondary_loop`), taken after an IPI.
static CMD: [AtomicUsize; hw::MAX_HARTS] = [const { AtomicUsize::new(0) }; hw::MAX_HARTS];
const CMD_SUSPEND_RETENTIVE: usize = 1;
const CMD_SUSPEND_NON_RETENTIVE: usize = 2;
const CMD_STOP: usize = 3;
/// Commands whose SBI call returned, and its error.
static CMD_DONE: [AtomicUsize; hw::MAX_HARTS] = [const { AtomicUsize::new(0) }; hw::MAX_HARTS];
static CMD_ERR: [AtomicUsize; hw::MAX_HARTS] = [const { AtomicUsize::new(0) }; hw::MAX_HARTS];
/// `a1` of each secondary's last start.
static START_OPAQUE: [AtomicUsize; hw::MAX_HARTS] = [const { AtomicUsize::new(0) }; hw::MAX_HARTS];
/// Resumes from a non-retentive suspend, and whether the last one was in the SBI
/// state (1) or not (2).
static RESUMES: [AtomicUsize; hw::MAX_HARTS] = [const { AtomicUsize::new(0) }; hw::MAX_HARTS];
static RESUME_OK: [AtomicUsize; hw::MAX_HARTS] = [const { AtomicUsize::new(0) }; hw::MAX_HARTS];
/// The boot vCPU's counts across its system suspend (its stack does not survive).
static SUSPEND_PASSED: AtomicUsize = AtomicUsize::new(0);
static SUSPEND_FAILED: AtomicUsize = AtomicUsize::new(0);
static SUSPEND_WAKE_AT: AtomicU64 = AtomicU64::new(0);

fn plic_ctx_base(ctx: usize) -> usize {
    PLIC + 0x20_0000 + 0x1000 * ctx
}

/// The trap handler (called from the assembly entry with the saved frame).
pub extern "C" fn trap(f: &mut Frame) {
    let scause = csr::scause::read();
    let hart = f.x[4]; // tp = our hart id (set at entry of main/secondary)
    if scause >> 63 != 0 {
        match scause & 0xff {
            1 => {
                csr::sip::clear(SSIP);
                if let Some(c) = IPIS.get(hart) {
                    c.fetch_add(1, Ordering::SeqCst);
                }
            }
            5 => {
                TIMER_AT.store(hw::time(), Ordering::SeqCst);
                csr::sie::clear(STIP);
            }
            9 => {
                let claim = plic_ctx_base(hart) + 4;
                let id = hw::mmio_read32(claim);
                if id == UART_IRQ && !EXT_ARMED.swap(false, Ordering::SeqCst) {
                    // Already serviced (a re-delivery of a completed request).
                    EXT_SPURIOUS.fetch_add(1, Ordering::SeqCst);
                } else if id == UART_IRQ {
                    let delay = EXT_DELAY.load(Ordering::SeqCst);
                    if delay != 0 {
                        // A slow driver: it reconfigures the UART while it takes its
                        // time, without servicing THRE (toggling the receive-data
                        // enable). QEMU's PLIC samples a line only when the device
                        // updates it, and every IER change re-asserts the still-high
                        // THRE line, as real hardware would continuously.
                        let t0 = hw::time();
                        let mut rx = false;
                        while hw::time() - t0 < delay {
                            rx = !rx;
                            hw::mmio_write8(UART + 1, 0x02 | rx as u8);
                        }
                    }
                    // Service the UART: read IIR, turn THRE off.
                    let _ = hw::mmio_read8(UART + 2);
                    hw::mmio_write8(UART + 1, 0);
                    EXT_LAST.store(id as u64, Ordering::SeqCst);
                    EXT_COUNT.fetch_add(1, Ordering::SeqCst);
                }
                if id != 0 {
                    hw::mmio_write32(claim, id);
                }
            }
            _ => {
                UNEXPECTED.fetch_add(1, Ordering::SeqCst);
            }
        }
        return;
    }
    if (scause == 5 || scause == 7) && EXPECT_FAULT.swap(false, Ordering::SeqCst) {
        FAULT_CAUSE.store(scause, Ordering::SeqCst);
        FAULT_TVAL.store(csr::stval::read(), Ordering::SeqCst);
        // Skip the faulting instruction.
        f.sepc += hw::insn_len_at(f.sepc);
        return;
    }
    println!(
        "testguest: unexpected trap scause={scause:#x} sepc={:#x} stval={:#x}",
        f.sepc,
        csr::stval::read()
    );
    shutdown(99);
}

fn set_tp(h: usize) {
    // SAFETY: the test guest keeps its hart id in tp; nothing else uses tp.
    unsafe { core::arch::asm!("mv tp, {0}", in(reg) h, options(nomem, nostack)) };
}

/// Secondary vCPUs: count IPIs, and run the boot vCPU's commands.
pub extern "C" fn secondary_main(hartid: usize, opaque: usize) -> ! {
    set_tp(hartid);
    START_OPAQUE[hartid].store(opaque, Ordering::SeqCst);
    csr::sie::write(SSIP);
    ONLINE[hartid].store(true, Ordering::SeqCst);
    secondary_loop(hartid)
}

/// Wait for IPIs; after each, run the command in `CMD` if there is one.
fn secondary_loop(hartid: usize) -> ! {
    loop {
        // Look at the command with interrupts off, so an IPI that comes after the
        // look still ends the `wfi` (a pending enabled interrupt does, SIE or not).
        csr::sstatus::clear(SIE);
        let cmd = CMD[hartid].swap(0, Ordering::SeqCst);
        if cmd == 0 {
            hw::wfi();
            csr::sstatus::set(SIE); // the IPI is taken here
            continue;
        }
        csr::sstatus::set(SIE);
        let r = match cmd {
            CMD_SUSPEND_RETENTIVE => ecall(EID_HSM, HSM_SUSPEND, SUSPEND_RETENTIVE, 0, 0),
            // Returns only on failure: success resumes in `resume_main`.
            CMD_SUSPEND_NON_RETENTIVE => ecall(
                EID_HSM,
                HSM_SUSPEND,
                SUSPEND_NON_RETENTIVE,
                hw::resume_entry(),
                RESUME_MAGIC + hartid,
            ),
            CMD_STOP => {
                csr::sstatus::clear(SIE);
                // Returns only on failure.
                ecall(EID_HSM, HSM_STOP, 0, 0, 0)
            }
            _ => Ret { error: 0, value: 0 },
        };
        CMD_ERR[hartid].store(r.error as usize, Ordering::SeqCst);
        CMD_DONE[hartid].fetch_add(1, Ordering::SeqCst);
    }
}

/// Where a non-retentive suspend (HSM) or a system suspend (SUSP) resumes.
pub extern "C" fn resume_main(hartid: usize, opaque: usize) -> ! {
    // The SBI resume state (SBI v2.0 §9.4, §13.1): satp = 0, sstatus.SIE = 0,
    // a0 = hart id, a1 = opaque. Nothing before this line touches them.
    let sbi_state = csr::satp::read() == 0 && csr::sstatus::read() & SIE == 0;
    set_tp(hartid);
    if opaque == SYSTEM_MAGIC + hartid {
        system_resumed(hartid, sbi_state);
    }
    if opaque != RESUME_MAGIC + hartid {
        // A suspend the guest expected to fail was taken (e.g. a bad resume_addr).
        println!("TEST unexpected_resume ... FAIL (hart {hartid}, a1 = {opaque:#x})");
        shutdown(1);
    }
    let ok = sbi_state && opaque == RESUME_MAGIC + hartid;
    RESUME_OK[hartid].store(if ok { 1 } else { 2 }, Ordering::SeqCst);
    RESUMES[hartid].fetch_add(1, Ordering::SeqCst);
    secondary_loop(hartid)
}

fn shutdown(failures: usize) -> ! {
    let reason = if failures == 0 {
        0
    } else {
        0xF000_0000 + failures.min(0xff)
    };
    ecall(EID_SRST, 0, 0, reason, 0);
    loop {
        hw::wfi();
    }
}

fn wait_until(timeout_ticks: u64, mut cond: impl FnMut() -> bool) -> bool {
    let t0 = hw::time();
    while !cond() {
        if hw::time() - t0 > timeout_ticks {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

// --- tests ------------------------------------------------------------------------

struct Ctx {
    hart: usize,
    ncpus: usize,
    dtb: usize,
    passed: usize,
    failed: usize,
}

impl Ctx {
    fn report(&mut self, name: &str, r: Result<(), alloc_free::Msg>) {
        match r {
            Ok(()) => {
                self.passed += 1;
                println!("TEST {name} ... PASS");
            }
            Err(m) => {
                self.failed += 1;
                println!("TEST {name} ... FAIL ({})", m.as_str());
            }
        }
    }
}

/// A failure message without an allocator.
mod alloc_free {
    use core::fmt::{self, Write};

    /// Up to 160 bytes of text.
    pub struct Msg {
        buf: [u8; 160],
        len: usize,
    }

    impl Msg {
        /// Format a message.
        pub fn new(args: fmt::Arguments<'_>) -> Msg {
            let mut m = Msg {
                buf: [0; 160],
                len: 0,
            };
            let _ = m.write_fmt(args);
            m
        }
        /// The text.
        pub fn as_str(&self) -> &str {
            core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
        }
    }

    impl Write for Msg {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            for &b in s.as_bytes() {
                if self.len < self.buf.len() {
                    self.buf[self.len] = b;
                    self.len += 1;
                }
            }
            Ok(())
        }
    }
}

use alloc_free::Msg;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(Msg::new(format_args!($($arg)*)));
        }
    };
}

// After the macros it uses.
mod device;
mod hostile;

fn expect_err(what: &str, r: Ret, want: isize) -> Result<(), Msg> {
    ensure!(r.error == want, "{what}: error {} want {want}", r.error);
    Ok(())
}

fn test_dtb(c: &Ctx) -> Result<(), Msg> {
    let Some(fdt) = hw::dtb(c.dtb) else {
        return Err(Msg::new(format_args!("no DTB at {:#x}", c.dtb)));
    };
    let cpus = fdt.cpus().count();
    ensure!(cpus == c.ncpus && cpus >= 1, "cpus {cpus}");
    let tb = fdt
        .cpus()
        .next()
        .map(|c| c.timebase_frequency())
        .unwrap_or(0);
    ensure!(tb == 10_000_000, "timebase {tb}");
    let mem = fdt.memory().regions().next();
    ensure!(
        mem.is_some_and(|m| m.starting_address as usize == 0x8000_0000),
        "memory"
    );
    let plic = fdt.find_compatible(&["riscv,plic0"]);
    ensure!(plic.is_some(), "no plic node");
    let uart = fdt.find_compatible(&["ns16550a"]);
    let irq = uart.and_then(|u| u.interrupts()).and_then(|mut i| i.next());
    ensure!(irq == Some(UART_IRQ as usize), "uart irq {irq:?}");
    let isa = fdt
        .cpus()
        .next()
        .and_then(|c| c.property("riscv,isa"))
        .and_then(|p| p.as_str())
        .unwrap_or("");
    ensure!(
        isa.starts_with("rv64") && !isa.contains("h_") && isa.contains("sstc"),
        "isa {isa}"
    );
    Ok(())
}

fn test_sbi_base(_c: &Ctx) -> Result<(), Msg> {
    let v = ecall(EID_BASE, 0, 0, 0, 0);
    ensure!(
        v.error == 0 && v.value == 0x0200_0000,
        "spec version {:#x}",
        v.value
    );
    for eid in [EID_TIME, EID_IPI, EID_RFNC, EID_HSM, EID_SRST, EID_DBCN] {
        let p = ecall(EID_BASE, 3, eid, 0, 0);
        ensure!(p.error == 0 && p.value == 1, "probe {eid:#x} = {}", p.value);
    }
    let p = ecall(EID_BASE, 3, 0x1234_5678, 0, 0);
    ensure!(
        p.error == 0 && p.value == 0,
        "probe of an unknown extension = {}",
        p.value
    );
    Ok(())
}

fn test_sbi_invalid(c: &Ctx) -> Result<(), Msg> {
    expect_err(
        "unknown EID",
        ecall(0x1234_5678, 0, 0, 0, 0),
        ERR_NOT_SUPPORTED,
    )?;
    expect_err(
        "BASE fid 99",
        ecall(EID_BASE, 99, 0, 0, 0),
        ERR_NOT_SUPPORTED,
    )?;
    expect_err("TIME fid 7", ecall(EID_TIME, 7, 0, 0, 0), ERR_NOT_SUPPORTED)?;
    expect_err(
        "HSM start of hart 99",
        ecall(EID_HSM, 0, 99, hw::secondary_entry(), 0),
        ERR_INVALID_PARAM,
    )?;
    expect_err(
        "HSM status of hart 99",
        ecall(EID_HSM, 2, 99, 0, 0),
        ERR_INVALID_PARAM,
    )?;
    if c.ncpus > 1 {
        expect_err(
            "HSM start at an unmapped address",
            ecall(EID_HSM, 0, 1, UNMAPPED, 0),
            ERR_INVALID_ADDRESS,
        )?;
    }
    expect_err(
        "IPI to hart base 99",
        ecall(EID_IPI, 0, 1, 99, 0),
        ERR_INVALID_PARAM,
    )?;
    expect_err(
        "RFENCE to hart base 99",
        ecall(EID_RFNC, 0, 1, 99, 0),
        ERR_INVALID_PARAM,
    )?;
    expect_err(
        "DBCN write outside RAM",
        ecall(EID_DBCN, 0, 4, 0x1000, 0),
        ERR_INVALID_PARAM,
    )?;
    expect_err(
        "DBCN write with base_hi",
        ecall(EID_DBCN, 0, 4, 0x8000_0000, 1),
        ERR_INVALID_PARAM,
    )?;
    expect_err(
        "SRST type 5",
        ecall(EID_SRST, 0, 5, 0, 0),
        ERR_INVALID_PARAM,
    )?;
    expect_err(
        "SRST reason 7",
        ecall(EID_SRST, 0, 0, 7, 0),
        ERR_INVALID_PARAM,
    )?;
    Ok(())
}

fn test_dbcn(_c: &Ctx) -> Result<(), Msg> {
    let r = ecall(EID_DBCN, 2, b'#' as usize, 0, 0);
    ensure!(r.error == 0, "write_byte {}", r.error);
    let msg = b" dbcn write\n";
    let r = ecall(EID_DBCN, 0, msg.len(), msg.as_ptr() as usize, 0);
    ensure!(
        r.error == 0 && r.value == msg.len(),
        "write {} {}",
        r.error,
        r.value
    );
    // Legacy putchar (EID 0x01).
    let r = ecall(0x01, 0, b'\n' as usize, 0, 0);
    ensure!(r.error == 0, "legacy putchar {}", r.error);
    Ok(())
}

fn test_hsm(c: &Ctx) -> Result<(), Msg> {
    for h in 0..c.ncpus {
        if h == c.hart {
            continue;
        }
        let r = ecall(EID_HSM, 0, h, hw::secondary_entry(), 0x1234);
        ensure!(r.error == 0, "start {h}: {}", r.error);
    }
    for (h, online) in ONLINE.iter().enumerate().take(c.ncpus) {
        if h == c.hart {
            continue;
        }
        ensure!(
            wait_until(2000 * MS, || online.load(Ordering::SeqCst)),
            "hart {h} did not come up"
        );
        let s = ecall(EID_HSM, 2, h, 0, 0);
        ensure!(
            s.error == 0 && s.value == 0,
            "status of {h}: {} {}",
            s.error,
            s.value
        );
        let r = ecall(EID_HSM, 0, h, hw::secondary_entry(), 0);
        ensure!(
            r.error == ERR_ALREADY_AVAILABLE,
            "second start of {h}: {}",
            r.error
        );
    }
    Ok(())
}

fn timer_test(use_sstc: bool) -> Result<(), Msg> {
    TIMER_AT.store(0, Ordering::SeqCst);
    let target = hw::time() + 20 * MS;
    if use_sstc {
        csr::stimecmp::write(target as usize);
    } else {
        let r = ecall(EID_TIME, 0, target as usize, 0, 0);
        ensure!(r.error == 0, "set_timer {}", r.error);
    }
    csr::sie::set(STIP);
    csr::sstatus::set(SIE);
    let t0 = hw::time();
    while TIMER_AT.load(Ordering::SeqCst) == 0 && hw::time() - t0 < 2000 * MS {
        hw::wfi();
    }
    csr::sstatus::clear(SIE);
    csr::sie::clear(STIP);
    // Quiet the timer again.
    ecall(EID_TIME, 0, usize::MAX, 0, 0);
    let at = TIMER_AT.load(Ordering::SeqCst);
    ensure!(at != 0, "no timer interrupt within 2 s");
    ensure!(at >= target, "fired {} ticks early", target - at);
    ensure!(
        at - target < 1000 * MS,
        "fired {} ms late",
        (at - target) / MS
    );
    Ok(())
}

fn test_timer_sbi(_c: &Ctx) -> Result<(), Msg> {
    timer_test(false)
}

fn test_timer_sstc(_c: &Ctx) -> Result<(), Msg> {
    timer_test(true)
}

fn test_ipi(c: &Ctx) -> Result<(), Msg> {
    ensure!(c.ncpus > 1, "needs 2 vCPUs");
    let target = c.ncpus - 1;
    const N: u64 = 50;
    let base = IPIS[target].load(Ordering::SeqCst);
    for i in 0..N {
        let r = ecall(EID_IPI, 0, 1 << target, 0, 0);
        ensure!(r.error == 0, "send_ipi {}", r.error);
        ensure!(
            wait_until(1000 * MS, || IPIS[target].load(Ordering::SeqCst) > base + i),
            "IPI {i} not received"
        );
    }
    // Nothing more may arrive.
    let t0 = hw::time();
    while hw::time() - t0 < 20 * MS {}
    let got = IPIS[target].load(Ordering::SeqCst) - base;
    ensure!(got == N, "sent {N}, received {got}");
    Ok(())
}

fn test_ipi_broadcast(c: &Ctx) -> Result<(), Msg> {
    let before: [u64; hw::MAX_HARTS] = core::array::from_fn(|h| IPIS[h].load(Ordering::SeqCst));
    // All but us, through hart_mask_base = -1 is "all": send to each explicitly.
    let mut mask = 0usize;
    for h in 0..c.ncpus {
        if h != c.hart {
            mask |= 1 << h;
        }
    }
    let r = ecall(EID_IPI, 0, mask, 0, 0);
    ensure!(r.error == 0, "send_ipi {}", r.error);
    for h in 0..c.ncpus {
        if h != c.hart {
            ensure!(
                wait_until(1000 * MS, || IPIS[h].load(Ordering::SeqCst) > before[h]),
                "hart {h} got no IPI"
            );
        }
    }
    Ok(())
}

fn test_ipi_self_clear(c: &Ctx) -> Result<(), Msg> {
    let h = c.hart;
    csr::sstatus::clear(SIE);
    csr::sie::set(SSIP);
    let base = IPIS[h].load(Ordering::SeqCst);
    let r = ecall(EID_IPI, 0, 1 << h, 0, 0);
    ensure!(r.error == 0, "send_ipi {}", r.error);
    ensure!(
        wait_until(1000 * MS, || csr::sip::read() & SSIP != 0),
        "own IPI never pending"
    );
    // The guest clears its own IPI ...
    csr::sip::clear(SSIP);
    // ... then exits to the hypervisor and comes back (an SBI call).
    let _ = ecall(EID_BASE, 0, 0, 0, 0);
    let still = csr::sip::read() & SSIP != 0;
    csr::sstatus::set(SIE);
    let t0 = hw::time();
    while hw::time() - t0 < 10 * MS {
        let _ = ecall(EID_BASE, 0, 0, 0, 0);
    }
    csr::sstatus::clear(SIE);
    csr::sie::clear(SSIP);
    ensure!(!still, "sip.SSIP came back after an exit");
    let taken = IPIS[h].load(Ordering::SeqCst) - base;
    ensure!(taken == 0, "cleared IPI re-injected ({taken} taken)");
    Ok(())
}

fn hyp_counts() -> (usize, usize) {
    let claims = ecall(EID_HYP, 0, UART_IRQ as usize, 0, 0).value;
    let completes = ecall(EID_HYP, 1, UART_IRQ as usize, 0, 0).value;
    (claims, completes)
}

/// Enable the UART's THRE interrupt and wait until the handler serviced it.
fn uart_thre_once(ctx: usize, delay: u64) -> Result<(), Msg> {
    EXT_DELAY.store(delay, Ordering::SeqCst);
    let before = EXT_COUNT.load(Ordering::SeqCst);
    hw::mmio_write32(PLIC + 4 * UART_IRQ as usize, 1);
    let en = PLIC + 0x2000 + 0x80 * ctx + 4 * (UART_IRQ as usize / 32);
    hw::mmio_write32(en, hw::mmio_read32(en) | (1 << (UART_IRQ % 32)));
    hw::mmio_write32(plic_ctx_base(ctx), 0);
    csr::sie::set(SEIP);
    csr::sstatus::set(SIE);
    // THRE: the transmitter is empty, so this asserts the (level) line at once.
    EXT_ARMED.store(true, Ordering::SeqCst);
    hw::mmio_write8(UART + 1, 0x02);
    let ok = wait_until(2000 * MS, || EXT_COUNT.load(Ordering::SeqCst) > before);
    // Let re-deliveries (if any) drain before masking.
    let t0 = hw::time();
    while hw::time() - t0 < MS {}
    csr::sstatus::clear(SIE);
    csr::sie::clear(SEIP);
    hw::mmio_write8(UART + 1, 0);
    if !ok {
        println!(
            "testguest: no THRE interrupt: lsr={:#x} ier={:#x} sip={:#x}",
            hw::mmio_read8(UART + 5),
            hw::mmio_read8(UART + 1),
            csr::sip::read()
        );
    }
    ensure!(ok, "no external interrupt within 2 s");
    let last = EXT_LAST.load(Ordering::SeqCst);
    ensure!(last == UART_IRQ as u64, "claimed {last}");
    Ok(())
}

fn test_uart_thre(c: &Ctx) -> Result<(), Msg> {
    uart_thre_once(c.hart, 0)
}

fn test_no_storm(c: &Ctx) -> Result<(), Msg> {
    let immediate = ecall(EID_HYP, 2, 0, 0, 0).value == 1;
    let (c0, m0) = hyp_counts();
    const ROUNDS: usize = 3;
    for _ in 0..ROUNDS {
        // Slow to service: 30 ms in the handler with the line asserted.
        uart_thre_once(c.hart, 30 * MS)?;
    }
    let (c1, m1) = hyp_counts();
    let (claims, completes) = (c1 - c0, m1 - m0);
    println!("testguest: storm check ({}): {claims} physical claims for {completes} guest completions ({} re-deliveries)",
        if immediate { "immediate EOI" } else { "deferred EOI" }, EXT_SPURIOUS.load(Ordering::SeqCst));
    ensure!(completes >= ROUNDS, "only {completes} guest completions");
    if immediate {
        ensure!(
            claims > 10 * completes,
            "expected a storm, got {claims} claims / {completes} completions"
        );
    } else {
        ensure!(
            claims == completes,
            "{claims} claims for {completes} completions"
        );
    }
    Ok(())
}

fn test_unmapped(_c: &Ctx) -> Result<(), Msg> {
    for (store, cause) in [(false, 5usize), (true, 7)] {
        FAULT_CAUSE.store(0, Ordering::SeqCst);
        EXPECT_FAULT.store(true, Ordering::SeqCst);
        if store {
            hw::mmio_write32(UNMAPPED, 0xdead);
        } else {
            let _ = hw::mmio_read32(UNMAPPED + 8);
        }
        let got = FAULT_CAUSE.load(Ordering::SeqCst);
        ensure!(
            got == cause,
            "access {} gave cause {got}, want {cause}",
            if store { "store" } else { "load" }
        );
        let tval = FAULT_TVAL.load(Ordering::SeqCst);
        let want = if store { UNMAPPED } else { UNMAPPED + 8 };
        ensure!(tval == want, "stval {tval:#x} want {want:#x}");
    }
    // hyp is still there.
    let v = ecall(EID_BASE, 0, 0, 0, 0);
    ensure!(v.error == 0, "hyp gone after the fault");
    Ok(())
}

fn test_rfence(c: &Ctx) -> Result<(), Msg> {
    let all = (1usize << c.ncpus) - 1;
    let r = ecall(EID_RFNC, 0, all, 0, 0);
    ensure!(r.error == 0, "remote_fence_i {}", r.error);
    let r = ecall(EID_RFNC, 1, usize::MAX, usize::MAX, 0);
    ensure!(r.error == 0, "remote_sfence_vma (all harts) {}", r.error);
    Ok(())
}

/// A guard for calls that must fail at once: if hyp wrongly suspends the caller, the
/// timer (enabled in `sie`, SIE off: wakes a suspend, never traps) brings it back in
/// 50 ms, and the call's unexpected result fails the test instead of a hang.
fn with_wake_guard<T>(f: impl FnOnce() -> T) -> T {
    csr::sstatus::clear(SIE);
    csr::stimecmp::write((hw::time() + 50 * MS) as usize);
    csr::sie::set(STIP);
    let r = f();
    csr::sie::clear(STIP);
    csr::stimecmp::write(usize::MAX);
    r
}

fn hsm_status(h: usize) -> Ret {
    ecall(EID_HSM, HSM_STATUS, h, 0, 0)
}

fn wait_status(h: usize, want: usize) -> Result<(), Msg> {
    ensure!(
        wait_until(1000 * MS, || hsm_status(h)
            == Ret {
                error: 0,
                value: want
            }),
        "hart {h}: status {:?}, want {want}",
        hsm_status(h)
    );
    Ok(())
}

/// Give secondary `h` a command (an IPI makes it look).
fn command(h: usize, cmd: usize) -> Result<(), Msg> {
    CMD[h].store(cmd, Ordering::SeqCst);
    let r = ecall(EID_IPI, 0, 1 << h, 0, 0);
    ensure!(r.error == 0, "send_ipi {}", r.error);
    Ok(())
}

/// SBI v2.0 §9.4: reserved and unimplemented platform-specific suspend types
/// (INVALID_PARAM, including values above 32 bits, whose low half is a valid type),
/// a non-retentive suspend with a bad `resume_addr` (INVALID_ADDRESS), an undefined
/// HSM function (NOT_SUPPORTED).
fn test_hsm_suspend_errors(_c: &Ctx) -> Result<(), Msg> {
    let entry = hw::resume_entry();
    for ty in [
        1,
        0x0fff_ffff,
        0x1000_0000,
        0x7fff_ffff,
        0x8000_0001,
        0x8fff_ffff,
        0x9000_0000,
        0xffff_ffff,
        1 << 32,
        (1 << 32) | SUSPEND_NON_RETENTIVE,
    ] {
        let r = with_wake_guard(|| ecall(EID_HSM, HSM_SUSPEND, ty, entry, 0));
        ensure!(
            r.error == ERR_INVALID_PARAM,
            "suspend type {ty:#x}: error {}",
            r.error
        );
    }
    for addr in [UNMAPPED, entry + 1, 0x7fff_fffe, usize::MAX - 1] {
        let r = with_wake_guard(|| ecall(EID_HSM, HSM_SUSPEND, SUSPEND_NON_RETENTIVE, addr, 0));
        ensure!(
            r.error == ERR_INVALID_ADDRESS,
            "non-retentive resume_addr {addr:#x}: error {}",
            r.error
        );
    }
    expect_err("HSM fid 4", ecall(EID_HSM, 4, 0, 0, 0), ERR_NOT_SUPPORTED)?;
    expect_err(
        "HSM start of hart -1",
        ecall(EID_HSM, HSM_START, usize::MAX, hw::secondary_entry(), 0),
        ERR_INVALID_PARAM,
    )?;
    expect_err(
        "HSM status of hart -1",
        hsm_status(usize::MAX),
        ERR_INVALID_PARAM,
    )?;
    Ok(())
}

/// A retentive suspend of another vCPU: `hart_get_status` says SUSPENDED (4) while it
/// sleeps, `hart_start` of it is ALREADY_AVAILABLE, an IPI resumes it (the call
/// returns SBI_SUCCESS) and it is STARTED again.
fn test_hsm_suspend_retentive(c: &Ctx) -> Result<(), Msg> {
    let t = c.ncpus - 1;
    let done = CMD_DONE[t].load(Ordering::SeqCst);
    command(t, CMD_SUSPEND_RETENTIVE)?;
    wait_status(t, STATE_SUSPENDED)?;
    // Still suspended a while later (nothing woke it).
    let t0 = hw::time();
    while hw::time() - t0 < 5 * MS {}
    ensure!(
        hsm_status(t).value == STATE_SUSPENDED && CMD_DONE[t].load(Ordering::SeqCst) == done,
        "hart {t} left its suspend by itself"
    );
    expect_err(
        "start of a suspended hart",
        ecall(EID_HSM, HSM_START, t, hw::secondary_entry(), 0),
        ERR_ALREADY_AVAILABLE,
    )?;
    let r = ecall(EID_IPI, 0, 1 << t, 0, 0);
    ensure!(r.error == 0, "send_ipi {}", r.error);
    ensure!(
        wait_until(1000 * MS, || CMD_DONE[t].load(Ordering::SeqCst) > done),
        "hart {t} did not resume after an IPI"
    );
    let err = CMD_ERR[t].load(Ordering::SeqCst) as isize;
    ensure!(err == 0, "retentive suspend returned {err}");
    wait_status(t, STATE_STARTED)
}

/// A non-retentive suspend of another vCPU: SUSPENDED while it sleeps; an IPI wakes
/// it at `resume_addr` with a0 = hart id, a1 = opaque, satp = 0, sstatus.SIE = 0
/// (checked there), without returning from the call; STARTED again.
fn test_hsm_suspend_non_retentive(c: &Ctx) -> Result<(), Msg> {
    let t = c.ncpus - 1;
    let done = CMD_DONE[t].load(Ordering::SeqCst);
    let resumes = RESUMES[t].load(Ordering::SeqCst);
    command(t, CMD_SUSPEND_NON_RETENTIVE)?;
    wait_status(t, STATE_SUSPENDED)?;
    let r = ecall(EID_IPI, 0, 1 << t, 0, 0);
    ensure!(r.error == 0, "send_ipi {}", r.error);
    ensure!(
        wait_until(1000 * MS, || RESUMES[t].load(Ordering::SeqCst) > resumes),
        "hart {t} did not resume at resume_addr (call returned: {})",
        CMD_DONE[t].load(Ordering::SeqCst) > done
    );
    ensure!(
        RESUME_OK[t].load(Ordering::SeqCst) == 1,
        "hart {t} resumed, but not with a0 = hartid, a1 = opaque, satp = 0, SIE = 0"
    );
    ensure!(
        CMD_DONE[t].load(Ordering::SeqCst) == done,
        "the non-retentive suspend call returned"
    );
    wait_status(t, STATE_STARTED)?;
    // It still works: an IPI reaches it.
    let before = IPIS[t].load(Ordering::SeqCst);
    let r = ecall(EID_IPI, 0, 1 << t, 0, 0);
    ensure!(r.error == 0, "send_ipi {}", r.error);
    ensure!(
        wait_until(1000 * MS, || IPIS[t].load(Ordering::SeqCst) > before),
        "no IPI after the resume"
    );
    Ok(())
}

/// `hart_stop` of another vCPU (STOPPED; the call does not return), a second
/// `hart_start` with a new opaque (STARTED, a1 seen), and ALREADY_AVAILABLE again.
fn test_hsm_stop_start(c: &Ctx) -> Result<(), Msg> {
    let t = c.ncpus - 1;
    let done = CMD_DONE[t].load(Ordering::SeqCst);
    command(t, CMD_STOP)?;
    wait_status(t, STATE_STOPPED)?;
    ensure!(
        CMD_DONE[t].load(Ordering::SeqCst) == done,
        "hart_stop returned (error {})",
        CMD_ERR[t].load(Ordering::SeqCst) as isize
    );
    // An IPI to a stopped hart is accepted and does not start it.
    let r = ecall(EID_IPI, 0, 1 << t, 0, 0);
    ensure!(r.error == 0, "send_ipi to a stopped hart {}", r.error);
    expect_err(
        "start of a stopped hart at an odd address",
        ecall(EID_HSM, HSM_START, t, hw::secondary_entry() + 1, 0),
        ERR_INVALID_ADDRESS,
    )?;
    ensure!(
        hsm_status(t).value == STATE_STOPPED,
        "hart {t} is not STOPPED after an IPI and a refused start"
    );
    ONLINE[t].store(false, Ordering::SeqCst);
    let r = ecall(EID_HSM, HSM_START, t, hw::secondary_entry(), 0x5678);
    ensure!(r.error == 0, "restart {t}: {}", r.error);
    ensure!(
        wait_until(1000 * MS, || ONLINE[t].load(Ordering::SeqCst)),
        "hart {t} did not come up again"
    );
    let op = START_OPAQUE[t].load(Ordering::SeqCst);
    ensure!(op == 0x5678, "a1 at restart {op:#x}");
    wait_status(t, STATE_STARTED)?;
    expect_err(
        "second start",
        ecall(EID_HSM, HSM_START, t, hw::secondary_entry(), 0),
        ERR_ALREADY_AVAILABLE,
    )
}

/// Hart masks (SBI v2.0 §3 "hart list", sPI §7, RFNC §8): a base or mask bit naming
/// no vCPU is INVALID_PARAM, whatever its size; an empty mask is fine.
fn test_sbi_hart_masks(c: &Ctx) -> Result<(), Msg> {
    let n = c.ncpus;
    for (eid, what) in [(EID_IPI, "IPI"), (EID_RFNC, "RFENCE")] {
        for (mask, base) in [
            (1, n),
            (1 << n, 0),
            (1, usize::MAX - 1),
            (1 << 63, 1),
            (usize::MAX, 0),
            (1, 1 << 40),
        ] {
            let r = ecall(eid, 0, mask, base, 0);
            ensure!(
                r.error == ERR_INVALID_PARAM,
                "{what} mask {mask:#x} base {base:#x}: error {}",
                r.error
            );
        }
        let r = ecall(eid, 0, 0, 0, 0);
        ensure!(r.error == 0, "{what} with an empty mask: {}", r.error);
    }
    Ok(())
}

/// Unknown extensions and, in every supported extension, an unknown function:
/// NOT_SUPPORTED (SBI v2.0 §3); probe says 0 for the unknown ones, 1 for SUSP and FWFT.
fn test_sbi_unknown_ids(_c: &Ctx) -> Result<(), Msg> {
    for eid in [
        0x1234_5678,
        0x0800_0000,
        0x08ff_ffff,
        0x0900_0000,
        0x4e41_434c,
    ] {
        expect_err("unknown EID", ecall(eid, 0, 0, 0, 0), ERR_NOT_SUPPORTED)?;
        let p = ecall(EID_BASE, 3, eid, 0, 0);
        ensure!(p == Ret { error: 0, value: 0 }, "probe {eid:#x}: {p:?}");
    }
    // Legacy extensions 3..=7 (clear IPI, send IPI, remote fences) are not offered.
    for eid in 3..=7 {
        let r = ecall(eid, 0, 0, 0, 0);
        ensure!(
            r.error == ERR_NOT_SUPPORTED,
            "legacy {eid}: a0 = {}",
            r.error
        );
    }
    for (eid, fid) in [
        (EID_BASE, 7),
        (EID_TIME, 1),
        (EID_IPI, 1),
        (EID_RFNC, 3),
        (EID_RFNC, 7),
        (EID_HSM, 4),
        (EID_SRST, 1),
        (EID_DBCN, 3),
        (EID_SUSP, 1),
        (EID_FWFT, 2),
    ] {
        let r = ecall(eid, fid, 0, 0, 0);
        ensure!(
            r.error == ERR_NOT_SUPPORTED,
            "EID {eid:#x} FID {fid}: error {}",
            r.error
        );
    }
    for eid in [EID_SUSP, EID_FWFT] {
        let p = ecall(EID_BASE, 3, eid, 0, 0);
        ensure!(p == Ret { error: 0, value: 1 }, "probe {eid:#x}: {p:?}");
    }
    Ok(())
}

/// DBCN (SBI v2.0 §12): buffers not entirely in guest RAM are INVALID_PARAM for write
/// and read (below RAM, across its end, huge lengths, base_hi != 0); write_byte works.
fn test_dbcn_errors(c: &Ctx) -> Result<(), Msg> {
    let end = hw::dtb(c.dtb)
        .and_then(|f| f.memory().regions().next())
        .map(|m| m.starting_address as usize + m.size.unwrap_or(0))
        .unwrap_or(0);
    ensure!(end > 0x8000_0000, "no RAM size in the DTB");
    for fid in [0, 1] {
        for (len, lo, hi) in [
            (4, 0x7fff_fffe, 0),
            (4, end - 2, 0),
            (1, end, 0),
            (usize::MAX, 0x8000_0000, 0),
            (usize::MAX - 0x7fff_ffff, 0x8000_0000, 0),
            (1, 0x8000_0000, 1),
        ] {
            let r = ecall(EID_DBCN, fid, len, lo, hi);
            ensure!(
                r.error == ERR_INVALID_PARAM,
                "fid {fid} len {len:#x} at {hi:#x}:{lo:#x}: error {}",
                r.error
            );
        }
    }
    // A read into a good buffer: success, at most the length (there is no input).
    let mut buf = [0u8; 8];
    let r = ecall(EID_DBCN, 1, buf.len(), buf.as_mut_ptr() as usize, 0);
    ensure!(
        r.error == 0 && r.value <= buf.len(),
        "read: {} {}",
        r.error,
        r.value
    );
    let r = ecall(EID_DBCN, 0, 0, end, 0);
    ensure!(
        r.error == 0 || r.error == ERR_INVALID_PARAM,
        "empty write at the end: {}",
        r.error
    );
    Ok(())
}

/// FWFT (SBI v3.0 §18) with no feature implemented: the defined features (0..=5) are
/// NOT_SUPPORTED for get and set, reserved and platform-specific ones DENIED, flags
/// other than LOCK INVALID_PARAM.
fn test_fwft(_c: &Ctx) -> Result<(), Msg> {
    for f in 0..=5 {
        expect_err("FWFT get", ecall(EID_FWFT, 1, f, 0, 0), ERR_NOT_SUPPORTED)?;
        expect_err("FWFT set", ecall(EID_FWFT, 0, f, 1, 0), ERR_NOT_SUPPORTED)?;
        expect_err(
            "FWFT set LOCK",
            ecall(EID_FWFT, 0, f, 0, 1),
            ERR_NOT_SUPPORTED,
        )?;
    }
    for f in [
        6,
        0x3fff_ffff,
        0x4000_0000,
        0x8000_0000,
        0xc000_0000,
        1 << 32,
    ] {
        let r = ecall(EID_FWFT, 1, f, 0, 0);
        ensure!(r.error == ERR_DENIED, "get of feature {f:#x}: {}", r.error);
        let r = ecall(EID_FWFT, 0, f, 0, 0);
        ensure!(r.error == ERR_DENIED, "set of feature {f:#x}: {}", r.error);
    }
    expect_err(
        "FWFT set with flags 2",
        ecall(EID_FWFT, 0, 0, 1, 2),
        ERR_INVALID_PARAM,
    )?;
    Ok(())
}

/// SUSP (SBI v2.0 §13) errors while other vCPUs run: reserved and platform-specific
/// sleep types INVALID_PARAM (with a bad address, so a wrongly accepted type shows as
/// INVALID_ADDRESS instead of suspending), SUSPEND_TO_RAM with other vCPUs started
/// DENIED. The suspend itself is [`system_suspend`], the last test.
fn test_susp_errors(c: &Ctx) -> Result<(), Msg> {
    for ty in [1, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 1 << 32] {
        let r = with_wake_guard(|| ecall(EID_SUSP, 0, ty, UNMAPPED, 0));
        ensure!(
            r.error == ERR_INVALID_PARAM,
            "sleep type {ty:#x}: error {}",
            r.error
        );
    }
    if c.ncpus > 1 {
        let r = with_wake_guard(|| ecall(EID_SUSP, 0, 0, hw::resume_entry(), 0));
        ensure!(
            r.error == ERR_DENIED,
            "suspend to RAM with other harts started: error {}",
            r.error
        );
    }
    Ok(())
}

/// The last test: stop every other vCPU, then SUSPEND_TO_RAM with the timer as wake-up
/// event; a bad resume address first (INVALID_ADDRESS). On success the call does not
/// return: [`system_resumed`] reports and ends the run.
fn system_suspend(c: &mut Ctx) {
    let r = (|| -> Result<(), Msg> {
        for h in (0..c.ncpus).filter(|&h| h != c.hart) {
            command(h, CMD_STOP)?;
            wait_status(h, STATE_STOPPED)?;
        }
        let r = with_wake_guard(|| ecall(EID_SUSP, 0, 0, UNMAPPED, 0));
        ensure!(
            r.error == ERR_INVALID_ADDRESS,
            "bad resume address: error {}",
            r.error
        );
        SUSPEND_PASSED.store(c.passed, Ordering::SeqCst);
        SUSPEND_FAILED.store(c.failed, Ordering::SeqCst);
        let wake = hw::time() + 20 * MS;
        SUSPEND_WAKE_AT.store(wake, Ordering::SeqCst);
        csr::sstatus::set(SIE);
        csr::sie::write(STIP);
        csr::stimecmp::write(wake as usize);
        let r = ecall(EID_SUSP, 0, 0, hw::resume_entry(), SYSTEM_MAGIC + c.hart);
        csr::sie::write(0);
        Err(Msg::new(format_args!(
            "system suspend returned {}",
            r.error
        )))
    })();
    c.report("susp_system_suspend", r);
}

/// The boot vCPU back from its system suspend (via `resume_main`): check the resume
/// state and that the timer woke it, report, and end the run.
fn system_resumed(hartid: usize, sbi_state: bool) -> ! {
    csr::sie::write(0);
    let mut c = Ctx {
        hart: hartid,
        ncpus: 1,
        dtb: 0,
        passed: SUSPEND_PASSED.load(Ordering::SeqCst),
        failed: SUSPEND_FAILED.load(Ordering::SeqCst),
    };
    let now = hw::time();
    let wake = SUSPEND_WAKE_AT.load(Ordering::SeqCst);
    let r = if !sbi_state {
        Err(Msg::new(format_args!("resumed with satp != 0 or SIE set")))
    } else if now < wake {
        Err(Msg::new(format_args!(
            "resumed {} ticks before the timer",
            wake - now
        )))
    } else {
        Ok(())
    };
    c.report("susp_system_suspend", r);
    finish(&mut c)
}

/// A test: name, function, needs two vCPUs.
type Test = (&'static str, fn(&Ctx) -> Result<(), Msg>, bool);

/// The boot vCPU: run every test, report, shut down.
pub extern "C" fn main(hartid: usize, dtb: usize) -> ! {
    set_tp(hartid);
    let ncpus = hw::dtb(dtb)
        .map(|f| f.cpus().count())
        .unwrap_or(1)
        .clamp(1, hw::MAX_HARTS);
    println!("testguest: hello from VS-mode, hart {hartid} of {ncpus}, dtb {dtb:#x}");
    let hostile = hw::dtb(dtb)
        .and_then(|f| f.chosen().bootargs())
        .is_some_and(|a| a.split_whitespace().any(|w| w == "virq.hostile"));
    if hostile {
        hostile::run(hartid, ncpus, dtb);
    }
    let mut c = Ctx {
        hart: hartid,
        ncpus,
        dtb,
        passed: 0,
        failed: 0,
    };
    let device_only = hw::dtb(dtb)
        .and_then(|f| f.chosen().bootargs())
        .is_some_and(|a| a.split_whitespace().any(|w| w == "virq.device"));
    if device_only {
        // The device mode (`virq.device`): only the tests of a PCIe function hyp gave
        // this guest, on any topology (the rest assume a vPLIC).
        for (name, f) in [
            (
                "device_config",
                device::test_config as fn(&Ctx) -> Result<(), Msg>,
            ),
            ("device_dma", device::test_dma),
            ("device_msi", device::test_msi),
        ] {
            let r = f(&c);
            c.report(name, r);
        }
        finish(&mut c);
    }
    let tests: &[Test] = &[
        ("dtb", test_dtb, false),
        ("sbi_base", test_sbi_base, false),
        ("sbi_invalid", test_sbi_invalid, false),
        ("dbcn", test_dbcn, false),
        ("hsm_start", test_hsm, true),
        ("timer_sbi", test_timer_sbi, false),
        ("timer_sstc", test_timer_sstc, false),
        ("ipi", test_ipi, true),
        ("ipi_broadcast", test_ipi_broadcast, true),
        ("ipi_self_clear", test_ipi_self_clear, false),
        ("uart_thre", test_uart_thre, false),
        ("no_storm", test_no_storm, false),
        ("unmapped_access", test_unmapped, false),
        ("rfence", test_rfence, false),
        ("sbi_unknown_ids", test_sbi_unknown_ids, false),
        ("sbi_hart_masks", test_sbi_hart_masks, false),
        ("dbcn_errors", test_dbcn_errors, false),
        ("fwft", test_fwft, false),
        ("hsm_stop_start", test_hsm_stop_start, true),
        ("hsm_suspend_retentive", test_hsm_suspend_retentive, true),
        (
            "hsm_suspend_non_retentive",
            test_hsm_suspend_non_retentive,
            true,
        ),
        // After the others: a wrongly accepted suspend at an odd address hangs the
        // boot vCPU (hsm_stop_start has already failed cleanly on that bug).
        ("hsm_suspend_errors", test_hsm_suspend_errors, false),
        ("susp_errors", test_susp_errors, false),
    ];
    for &(name, f, needs_smp) in tests {
        if needs_smp && ncpus < 2 {
            println!("TEST {name} ... SKIP (1 vCPU)");
            continue;
        }
        let r = f(&c);
        c.report(name, r);
    }
    system_suspend(&mut c);
    finish(&mut c)
}

/// Report unexpected interrupts, print the summary and shut down.
fn finish(c: &mut Ctx) -> ! {
    let unexpected = UNEXPECTED.load(Ordering::SeqCst);
    if unexpected != 0 {
        c.failed += 1;
        println!("TEST no_unexpected_interrupts ... FAIL ({unexpected})");
    }
    println!("testguest: {} passed, {} failed", c.passed, c.failed);
    shutdown(c.failed)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("testguest: PANIC {info}");
    shutdown(98)
}
