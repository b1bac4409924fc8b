//! The frame around the tests: console, the state the exception handlers share with
//! the tests, the handlers, the GIC set-up each vCPU does for itself, vCPU 1's command
//! loop, the runner and the end of the run.
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};

use crate::hw::{self, sysreg, Frame, MAX_CPUS};
use crate::regs::{cntv, esr, gicd, gicr, icc, intid, pl011, psci};

// --- console ---------------------------------------------------------------------

static CONSOLE: spin::Mutex<()> = spin::Mutex::new(());

fn putc(b: u8) {
    while hw::read32(pl011::BASE + pl011::FR) & pl011::FR_TXFF != 0 {
        core::hint::spin_loop();
    }
    hw::write32(pl011::BASE + pl011::DR, u32::from(b));
}

struct Out;

impl Write for Out {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if b == b'\n' {
                putc(b'\r');
            }
            putc(b);
        }
        Ok(())
    }
}

/// Print under the console lock (`println!`).
pub fn print(args: fmt::Arguments<'_>) {
    let _g = CONSOLE.lock();
    let _ = Out.write_fmt(args);
}

/// Print without the lock: for a fatal exception, which may have interrupted a print.
fn print_unlocked(args: fmt::Arguments<'_>) {
    let _ = Out.write_fmt(args);
}

/// Write raw bytes to the UART's data register (the UART test's interrupt source:
/// each byte raises the PL011's transmit interrupt).
pub fn put_raw(b: u8) {
    putc(b);
}

// --- test results ----------------------------------------------------------------

/// A failure message without an allocator: up to 160 bytes of text.
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

/// What every test gets.
pub struct Ctx {
    /// The DTB's IPA.
    pub dtb: u64,
    /// vCPUs (from the DTB).
    pub ncpus: usize,
    /// Counter ticks per millisecond (`CNTFRQ_EL0` / 1000).
    pub tick_ms: u64,
    /// `gicv4` on the command line: hyp gave the guest vPEs (`topology = "vgicv4"`)
    /// and its test vLPI calls work.
    pub gicv4: bool,
    /// `virq.device` on the command line: hyp gave the guest QEMU's `edu` at 00:01.0
    /// (the `device_*` tests drive it).
    pub device: bool,
    /// `vlpi.migrate` on the command line: hyp migrates the vCPUs (`migrate_ms`), so a
    /// running vCPU exits at each period's end (`vlpi_running` counts those exits
    /// instead of requiring none).
    pub migrate: bool,
    /// `vlpi.soak=N`: vLPIs of the `vlpi_soak` test (2,000 without it).
    pub soak: u32,
    passed: usize,
    failed: usize,
}

impl Ctx {
    fn report(&mut self, name: &str, r: Result<(), Msg>) {
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

    /// Wait until `cond()` or `ms` milliseconds passed; whether `cond()` held.
    pub fn wait_until(&self, ms: u64, mut cond: impl FnMut() -> bool) -> bool {
        let t0 = hw::now();
        while !cond() {
            if hw::now() - t0 > ms * self.tick_ms {
                return false;
            }
            core::hint::spin_loop();
        }
        true
    }

    /// Busy-wait `ms` milliseconds.
    pub fn delay_ms(&self, ms: u64) {
        self.wait_until(ms, || false);
    }
}

// --- state shared with the handlers and vCPU 1 --------------------------------------

/// SGIs taken, per vCPU and SGI INTID.
pub static SGIS: [[AtomicU32; 16]; MAX_CPUS] =
    [const { [const { AtomicU32::new(0) }; 16] }; MAX_CPUS];
/// Virtual timer interrupts taken (by the IRQ handler).
pub static TIMER_COUNT: AtomicU32 = AtomicU32::new(0);
/// ... of which the timer condition did not hold (`ISTATUS` clear or the counter
/// before `CNTV_CVAL`): a stale or re-delivered interrupt.
pub static TIMER_EARLY: AtomicU32 = AtomicU32::new(0);
/// The handler re-arms the timer until `TIMER_COUNT` reaches this, then disables it.
pub static TIMER_LIMIT: AtomicU32 = AtomicU32::new(0);
/// The re-arm period in ticks.
pub static TIMER_PERIOD: AtomicU64 = AtomicU64::new(0);
/// PL011 interrupts taken.
pub static UART_DELIVERIES: AtomicU32 = AtomicU32::new(0);
/// ... with the transmit interrupt's cause set (serviced: cause cleared).
pub static UART_SERVICED: AtomicU32 = AtomicU32::new(0);
/// ... with no cause (`UARTMIS` clear): a re-delivery.
pub static UART_STALE: AtomicU32 = AtomicU32::new(0);
/// How the PL011 handler orders its work ([`UART_CLEAR_FIRST`] or
/// [`UART_DEACTIVATE_FIRST`]).
pub static UART_MODE: AtomicU32 = AtomicU32::new(UART_CLEAR_FIRST);
/// A driver done right: clear the cause, then EOI (which deactivates).
pub const UART_CLEAR_FIRST: u32 = 0;
/// A driver in the wrong order: EOI while the line is still high, wait 1 ms, then
/// clear the cause.
pub const UART_DEACTIVATE_FIRST: u32 = 1;
/// `ICC_IAR1_EL1` gave a special INTID in the IRQ handler.
pub static SPURIOUS_IRQS: AtomicU32 = AtomicU32::new(0);
/// INTIDs the handler did not expect, and the last one.
pub static UNEXPECTED_IRQS: AtomicU32 = AtomicU32::new(0);
pub static UNEXPECTED_LAST: AtomicU32 = AtomicU32::new(0);
/// A test expects the next synchronous exception; the vector records it and skips the
/// instruction (or, for an instruction abort, returns to x30).
pub static FAULT_EXPECTED: AtomicBool = AtomicBool::new(false);
pub static FAULT_ESR: AtomicU64 = AtomicU64::new(0);
pub static FAULT_FAR: AtomicU64 = AtomicU64::new(0);
pub static FAULTS_TAKEN: AtomicU32 = AtomicU32::new(0);
/// Starts of each vCPU through CPU_ON, the context (x0) it got, and its entry state
/// (CurrentEL, DAIF, SCTLR_EL1).
pub static ONLINE: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
pub static CONTEXT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
pub static ENTRY_EL: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
pub static ENTRY_DAIF: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
pub static ENTRY_SCTLR: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Accesses the tests make that hyp's vGIC must count as errors (printed at the end;
/// xtask compares them with hyp's `vGIC errors` line): to unmapped offsets, and
/// writes to read-only registers.
pub static GIC_BAD_UNMAPPED: AtomicU32 = AtomicU32::new(0);
pub static GIC_BAD_READ_ONLY: AtomicU32 = AtomicU32::new(0);
/// Whether that vCPU's GIC set-up ([`gic_cpu_init`]) succeeded.
pub static GIC_READY: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// A command for vCPU `i`'s loop ([`CMD_CPU_OFF`]), commands it finished (a CPU_OFF
/// that works never finishes) and the last one's result.
pub static CMD: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
pub static CMD_DONE: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
pub static CMD_RESULT: [AtomicI64; MAX_CPUS] = [const { AtomicI64::new(0) }; MAX_CPUS];
/// PSCI CPU_OFF.
pub const CMD_CPU_OFF: u32 = 1;
/// Bench mode: answer the boot vCPU's SGIs (`bench::pong`).
pub const CMD_PONG: u32 = 2;
/// Command: spin with IRQs unmasked (no exit of its own) until [`SPIN_STOP`].
pub const CMD_SPIN: u32 = 3;
/// vCPU 1 is in [`CMD_SPIN`].
pub static SPINNING: AtomicBool = AtomicBool::new(false);
/// Ends [`CMD_SPIN`].
pub static SPIN_STOP: AtomicBool = AtomicBool::new(false);
/// vLPIs taken per vCPU, by vINTID − 8192.
pub static VLPIS: [[AtomicU32; 4]; MAX_CPUS] =
    [const { [const { AtomicU32::new(0) }; 4] }; MAX_CPUS];
/// vLPIs of the guest's own ITS taken per vCPU, by vINTID − `vits::VINTID0`.
pub static VITS: [[AtomicU32; 4]; MAX_CPUS] =
    [const { [const { AtomicU32::new(0) }; 4] }; MAX_CPUS];
/// The SGI that wakes a vCPU's command loop.
pub const WAKE_SGI: u32 = 0;

/// This vCPU's index (`MPIDR_EL1.Aff0`, as hyp sets `VMPIDR_EL2`).
pub fn cpu() -> usize {
    (sysreg::mpidr_el1::read() & 0xff) as usize
}

// --- exceptions --------------------------------------------------------------------

/// Vector indices (Arm ARM D1.3.1, "Exception vectors"): current EL with SP_ELx.
const VEC_SYNC_SPX: u64 = 4;
const VEC_IRQ_SPX: u64 = 5;

/// Every exception (from `hw`'s vectors): `index` 0-15 as the vector table orders them.
pub extern "C" fn exception(f: &mut Frame, index: u64) {
    match index {
        VEC_IRQ_SPX => irq(cpu()),
        VEC_SYNC_SPX => sync(f),
        _ => fatal(f, index),
    }
}

fn sync(f: &mut Frame) {
    let esr_v = sysreg::esr_el1::read();
    let far = sysreg::far_el1::read();
    if FAULT_EXPECTED.swap(false, Ordering::SeqCst) {
        FAULT_ESR.store(esr_v, Ordering::SeqCst);
        FAULT_FAR.store(far, Ordering::SeqCst);
        FAULTS_TAKEN.fetch_add(1, Ordering::SeqCst);
        if (esr_v >> esr::EC_SHIFT) & 0x3f == esr::EC_IABT_SAME {
            f.elr = f.x[30];
        } else {
            f.elr += 4;
        }
        return;
    }
    fatal(f, VEC_SYNC_SPX);
}

/// An exception no test expected: report it and end the run as failed.
fn fatal(f: &Frame, index: u64) -> ! {
    print_unlocked(format_args!(
        "\ntestguest: unexpected exception (vector {index}) on vCPU {}: ESR_EL1 {:#x} FAR_EL1 {:#x} ELR_EL1 {:#x}\n",
        cpu(),
        sysreg::esr_el1::read(),
        sysreg::far_el1::read(),
        f.elr
    ));
    system_reset()
}

fn irq(cpu: usize) {
    let iar = sysreg::icc_iar1_el1::read();
    let id = (iar & icc::IAR_INTID) as u32;
    match id {
        1020..=1023 => {
            SPURIOUS_IRQS.fetch_add(1, Ordering::SeqCst);
            return;
        }
        0..=15 => {
            if let Some(c) = SGIS.get(cpu) {
                c[id as usize].fetch_add(1, Ordering::SeqCst);
            }
        }
        intid::VTIMER => timer_irq(),
        // The test vLPIs hyp maps (vINTIDs 8192..8196): GICv4 direct injection.
        8192..=8195 => {
            if let Some(c) = VLPIS.get(cpu) {
                c[(id - 8192) as usize].fetch_add(1, Ordering::SeqCst);
            }
        }
        // The vLPIs of the guest's ITS tests (`vits`).
        8200..=8203 => {
            if let Some(c) = VITS.get(cpu) {
                c[(id - crate::vits::VINTID0) as usize].fetch_add(1, Ordering::SeqCst);
            }
        }
        intid::UART => {
            if uart_irq(iar) {
                return;
            }
        }
        _ => {
            UNEXPECTED_LAST.store(id, Ordering::SeqCst);
            UNEXPECTED_IRQS.fetch_add(1, Ordering::SeqCst);
        }
    }
    sysreg::icc_eoir1_el1::write(iar);
}

/// The virtual timer's interrupt: count it, check its condition held, then re-arm it
/// (`CNTV_TVAL_EL0`) or disable it, which lowers the level before the EOI.
fn timer_irq() {
    let ctl = sysreg::cntv_ctl_el0::read();
    let cval = sysreg::cntv_cval_el0::read();
    if ctl & cntv::ISTATUS == 0 || hw::now() < cval {
        TIMER_EARLY.fetch_add(1, Ordering::SeqCst);
    }
    let n = TIMER_COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    if n < TIMER_LIMIT.load(Ordering::SeqCst) {
        sysreg::cntv_tval_el0::write(TIMER_PERIOD.load(Ordering::SeqCst));
    } else {
        sysreg::cntv_ctl_el0::write(0);
    }
}

/// The PL011's interrupt (a level SPI): count it; if the transmit interrupt is the
/// cause, clear it (`UARTICR`) — before the EOI, or after it in the wrong-order mode.
/// True if it did the EOI itself.
fn uart_irq(iar: u64) -> bool {
    UART_DELIVERIES.fetch_add(1, Ordering::SeqCst);
    if hw::read32(pl011::BASE + pl011::MIS) & pl011::INT_TX == 0 {
        UART_STALE.fetch_add(1, Ordering::SeqCst);
        return false;
    }
    let eoi_first = UART_MODE.load(Ordering::SeqCst) == UART_DEACTIVATE_FIRST;
    if eoi_first {
        sysreg::icc_eoir1_el1::write(iar);
        // 1 ms with the line still high: long enough for the re-raised physical
        // interrupt to reach this vCPU's list register.
        let t0 = hw::now();
        while hw::now() - t0 < sysreg::cntfrq_el0::read() / 1000 {
            core::hint::spin_loop();
        }
    }
    hw::write32(pl011::BASE + pl011::ICR, pl011::INT_TX);
    hw::dsb();
    UART_SERVICED.fetch_add(1, Ordering::SeqCst);
    eoi_first
}

// --- GIC set-up --------------------------------------------------------------------

/// Priority of every interrupt the guest uses.
pub const PRIORITY: u8 = 0xa0;
/// `ICC_PMR_EL1`: let everything above priority 0xf0 through.
pub const PMR: u64 = 0xf0;

/// This vCPU's part of the GIC, as Linux's `gic_cpu_init` and `gic_cpu_sys_reg_init`
/// do it: wake the redistributor (`GICR_WAKER`), SGIs and PPIs group 1 at
/// [`PRIORITY`], the SGIs and the virtual timer's PPI enabled, then the CPU interface
/// (`ICC_SRE_EL1`, `ICC_PMR_EL1`, `ICC_BPR1_EL1`, `ICC_CTLR_EL1` with EOImode 0,
/// `ICC_IGRPEN1_EL1`). Every write is read back.
pub fn gic_cpu_init(c: &Ctx, cpu: usize) -> Result<(), Msg> {
    let rd = gicr::rd(cpu);
    let waker = hw::read32(rd + gicr::WAKER);
    hw::write32(rd + gicr::WAKER, waker & !gicr::WAKER_PROCESSOR_SLEEP);
    ensure!(
        c.wait_until(100, || hw::read32(rd + gicr::WAKER)
            & gicr::WAKER_CHILDREN_ASLEEP
            == 0),
        "GICR_WAKER.ChildrenAsleep still set ({:#x})",
        hw::read32(rd + gicr::WAKER)
    );
    let sgi = gicr::sgi(cpu);
    hw::write32(sgi + gicr::ICACTIVER0, u32::MAX);
    hw::write32(sgi + gicr::ICENABLER0, u32::MAX);
    ensure!(
        hw::read32(sgi + gicr::ISENABLER0) == 0,
        "GICR_ISENABLER0 {:#x} after ICENABLER0 = ~0",
        hw::read32(sgi + gicr::ISENABLER0)
    );
    hw::write32(sgi + gicr::IGROUPR0, u32::MAX);
    let g = hw::read32(sgi + gicr::IGROUPR0);
    ensure!(g == u32::MAX, "GICR_IGROUPR0 reads {g:#x}");
    let prio = u32::from_ne_bytes([PRIORITY; 4]);
    for i in 0..8 {
        hw::write32(sgi + gicr::IPRIORITYR + 4 * i, prio);
        let p = hw::read32(sgi + gicr::IPRIORITYR + 4 * i);
        ensure!(p == prio, "GICR_IPRIORITYR{i} reads {p:#x}");
    }
    let enable = 0xffff | (1 << intid::VTIMER);
    hw::write32(sgi + gicr::ISENABLER0, enable);
    let e = hw::read32(sgi + gicr::ISENABLER0);
    ensure!(
        e == enable,
        "GICR_ISENABLER0 reads {e:#x}, want {enable:#x}"
    );

    sysreg::icc_sre_el1::write(sysreg::icc_sre_el1::read() | icc::SRE);
    ensure!(
        sysreg::icc_sre_el1::read() & icc::SRE != 0,
        "ICC_SRE_EL1.SRE reads 0"
    );
    sysreg::icc_pmr_el1::write(PMR);
    let pmr = sysreg::icc_pmr_el1::read();
    ensure!(pmr == PMR, "ICC_PMR_EL1 reads {pmr:#x}");
    sysreg::icc_bpr1_el1::write(0);
    sysreg::icc_ctlr_el1::write(sysreg::icc_ctlr_el1::read() & !icc::CTLR_EOIMODE);
    let ctlr = sysreg::icc_ctlr_el1::read();
    ensure!(
        ctlr & icc::CTLR_EOIMODE == 0,
        "ICC_CTLR_EL1 {ctlr:#x}: EOImode stuck at 1"
    );
    sysreg::icc_igrpen1_el1::write(1);
    let en = sysreg::icc_igrpen1_el1::read();
    ensure!(en & 1 == 1, "ICC_IGRPEN1_EL1 reads {en:#x}");
    Ok(())
}

/// Enable the distributor as Linux does once it is programmed: affinity routing and
/// both groups (`GICD_CTLR` = ARE | EnableGrp1 | EnableGrp0 with `DS` = 1), waiting
/// for `GICD_CTLR.RWP` before and after. Whether the writes took effect.
pub fn gicd_enable(c: &Ctx) -> bool {
    if !gicd_wait_rwp(c) {
        return false;
    }
    hw::write32(
        gicd::BASE + gicd::CTLR,
        gicd::CTLR_ARE | gicd::CTLR_ENABLE_GRP1 | gicd::CTLR_ENABLE_GRP0,
    );
    gicd_wait_rwp(c)
}

/// Wait until the distributor's register writes took effect (`GICD_CTLR.RWP`).
pub fn gicd_wait_rwp(c: &Ctx) -> bool {
    c.wait_until(100, || {
        hw::read32(gicd::BASE + gicd::CTLR) & gicd::CTLR_RWP == 0
    })
}

// --- vCPU 1 ---------------------------------------------------------------------------

/// CPU_ON entry (from `hw`): record the entry state and the context, set up this
/// vCPU's GIC, then serve commands.
pub extern "C" fn secondary_main(cpu: usize, context: u64, el: u64, daif: u64, sctlr: u64) -> ! {
    if cpu >= MAX_CPUS {
        loop {
            hw::wfi();
        }
    }
    CONTEXT[cpu].store(context, Ordering::SeqCst);
    ENTRY_EL[cpu].store(el, Ordering::SeqCst);
    ENTRY_DAIF[cpu].store(daif, Ordering::SeqCst);
    ENTRY_SCTLR[cpu].store(sctlr, Ordering::SeqCst);
    let c = Ctx {
        dtb: 0,
        ncpus: 0,
        tick_ms: (sysreg::cntfrq_el0::read() / 1000).max(1),
        gicv4: false,
        device: false,
        migrate: false,
        soak: 0,
        passed: 0,
        failed: 0,
    };
    let ready = match gic_cpu_init(&c, cpu) {
        Ok(()) => true,
        Err(m) => {
            println!("testguest: vCPU {cpu}: GIC set-up: {}", m.as_str());
            false
        }
    };
    GIC_READY[cpu].store(ready, Ordering::SeqCst);
    ONLINE[cpu].fetch_add(1, Ordering::SeqCst);
    command_loop(cpu)
}

/// Take interrupts (the SGI tests count them) and run the commands vCPU 0 leaves in
/// [`CMD`], each announced with [`WAKE_SGI`].
fn command_loop(cpu: usize) -> ! {
    loop {
        // Look with IRQs masked, so an SGI after the look still ends the `wfi` (a
        // pending interrupt does, masked or not); it is taken at the unmask.
        hw::irq_mask();
        let cmd = CMD[cpu].swap(0, Ordering::SeqCst);
        if cmd == 0 {
            hw::wfi();
            hw::irq_unmask();
            continue;
        }
        let r = match cmd {
            // Returns only on failure.
            CMD_CPU_OFF => hw::hvc(psci::CPU_OFF, 0, 0, 0),
            CMD_PONG => crate::bench::pong(),
            CMD_SPIN => {
                hw::irq_unmask();
                SPINNING.store(true, Ordering::SeqCst);
                while !SPIN_STOP.swap(false, Ordering::SeqCst) {
                    core::hint::spin_loop();
                }
                SPINNING.store(false, Ordering::SeqCst);
                hw::irq_mask();
                0
            }
            _ => psci::NOT_SUPPORTED,
        };
        CMD_RESULT[cpu].store(r, Ordering::SeqCst);
        CMD_DONE[cpu].fetch_add(1, Ordering::SeqCst);
        hw::irq_unmask();
    }
}

/// Send SGI `id` to vCPU `cpu` (Aff1-3 = 0: vCPUs below 16).
pub fn send_sgi(cpu: usize, id: u32) {
    sysreg::icc_sgi1r_el1::write((u64::from(id) << icc::SGI_INTID_SHIFT) | (1 << (cpu & 15)));
}

// --- the run -------------------------------------------------------------------------

/// Where QEMU's loader puts the DTB of an ELF `-kernel` it starts with x0 = 0 (the start
/// of RAM of arm `virt`, below the image): bare QEMU, `cargo xtask bench --system`'s
/// `arm-bare`.
const QEMU_ELF_DTB: u64 = 0x4000_0000;

/// The boot vCPU: every test of [`crate::tests::LIST`], then the summary and the end;
/// or, with `bench.*` words on the command line, the benchmark ([`crate::bench`]).
pub extern "C" fn main(cpu: usize, x0: u64) -> ! {
    // hyp passes the DTB in x0 (as Linux's arm64 boot protocol has it); bare QEMU
    // starts an ELF with x0 = 0 and its DTB at the start of RAM.
    let dtb = if hw::dtb(x0).is_some() {
        x0
    } else {
        QEMU_ELF_DTB
    };
    let fdt = hw::dtb(dtb);
    let ncpus = fdt
        .as_ref()
        .map(|f| f.cpus().count())
        .unwrap_or(1)
        .clamp(1, MAX_CPUS);
    let bootargs = fdt
        .as_ref()
        .and_then(|f| f.chosen().bootargs())
        .unwrap_or("");
    let freq = sysreg::cntfrq_el0::read();
    let mut c = Ctx {
        dtb,
        ncpus,
        tick_ms: (freq / 1000).max(1),
        gicv4: bootargs.split_whitespace().any(|w| w == "gicv4"),
        device: bootargs.split_whitespace().any(|w| w == "virq.device"),
        migrate: bootargs.split_whitespace().any(|w| w == "vlpi.migrate"),
        soak: bootargs
            .split_whitespace()
            .find_map(|w| w.strip_prefix("vlpi.soak="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(2000),
        passed: 0,
        failed: 0,
    };
    if crate::bench::wanted(bootargs) {
        if !gicd_enable(&c) {
            println!("VIRQ-BENCH error=gicd-enable");
            power_off(false);
        }
        if let Err(m) = gic_cpu_init(&c, cpu) {
            println!("VIRQ-BENCH error=gic-cpu-init ({})", m.as_str());
            power_off(false);
        }
        crate::bench::run(&c, bootargs)
    }
    println!(
        "testguest: aarch64 EL1 test guest on vCPU {cpu} of {ncpus}, DTB at {dtb:#x}, counter {freq} Hz"
    );
    for &(name, f, needs_smp) in crate::tests::LIST {
        if needs_smp && ncpus < 2 {
            println!("TEST {name} ... SKIP (1 vCPU)");
            continue;
        }
        let r = f(&mut c);
        c.report(name, r);
    }
    finish(&mut c)
}

/// Interrupts nobody expected count as one more failed test; then the summary, and
/// SYSTEM_OFF (all passed) or SYSTEM_RESET (failures).
fn finish(c: &mut Ctx) -> ! {
    hw::irq_mask();
    let unexpected = UNEXPECTED_IRQS.load(Ordering::SeqCst);
    let spurious = SPURIOUS_IRQS.load(Ordering::SeqCst);
    let r = if unexpected != 0 {
        Err(Msg::new(format_args!(
            "{unexpected} interrupts with unexpected INTIDs, the last {}",
            UNEXPECTED_LAST.load(Ordering::SeqCst)
        )))
    } else if spurious != 0 {
        Err(Msg::new(format_args!(
            "{spurious} IRQ exceptions found nothing to acknowledge (ICC_IAR1_EL1 1023)"
        )))
    } else {
        Ok(())
    };
    c.report("no_unexpected_interrupts", r);
    println!(
        "testguest: bad vGIC accesses made: unmapped {}, read_only {}",
        GIC_BAD_UNMAPPED.load(Ordering::SeqCst),
        GIC_BAD_READ_ONLY.load(Ordering::SeqCst)
    );
    println!("testguest: {} passed, {} failed", c.passed, c.failed);
    if c.failed == 0 {
        hw::hvc(psci::SYSTEM_OFF, 0, 0, 0);
    } else {
        println!(
            "testguest: FAILED: {} test(s) failed: PSCI SYSTEM_RESET",
            c.failed
        );
    }
    system_reset()
}

/// PSCI `SYSTEM_OFF` if `ok`, else `SYSTEM_RESET` (both end the run; hyp prints which).
pub fn power_off(ok: bool) -> ! {
    if ok {
        hw::hvc(psci::SYSTEM_OFF, 0, 0, 0);
    }
    system_reset()
}

fn system_reset() -> ! {
    hw::hvc(psci::SYSTEM_RESET, 0, 0, 0);
    loop {
        hw::irq_mask();
        hw::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    print_unlocked(format_args!("\ntestguest: PANIC {info}\n"));
    system_reset()
}
