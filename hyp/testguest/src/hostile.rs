//! The hostile mode (`virq.hostile` in the guest's `/chosen/bootargs`; hyp profiles
//! `linux-hostile` and `linux-hostile-plic`, docs/hyp.md "Isolation").
//!
//! The guest runs next to a Linux guest and tries everything it can against it and
//! against hyp: loads and stores across the physical IMSIC ranges, the physical PLIC /
//! APLIC windows and the other guest's RAM; out-of-range sources, contexts and targets
//! in its own vPLIC / vAPLIC; SBI IPIs, remote fences and HSM calls naming vCPUs it
//! does not own (huge and odd hart-mask bases); DBCN buffers outside its RAM; SRST and
//! SUSP with odd types; storms of sends. Each attack checks its own expected outcome
//! (an access fault, an SBI error code, or no effect) and prints
//! `ATTACK <name> ... PASS (<result>)` or `... FAIL (<why>)`. Then it repeats every
//! attack for [`SIEGE_MS`] while the other guest runs, prints
//! `hostile: N attacks, M failed` and shuts down with SRST (status M).
//!
//! Whether the other guest was hurt is checked outside: the suite case compares the
//! Linux guest's interrupt counts and console, and hyp's `foreign_in` tripwire.
use super::*;

/// How long the attacks are repeated after the first (reported) round: longer than
/// the Linux guest's boot and test `/init` take under hyp, so the attacks go on
/// through its whole run.
const SIEGE_MS: u64 = 20_000;
/// Pause between two siege rounds (one round is ~2,000 exits), so the Linux guest is
/// slowed down but not starved.
const SIEGE_PAUSE_MS: u64 = 200;
/// The physical S-level IMSIC (QEMU virt): hart `h`'s file `g` is at
/// `IMSIC_S + (h << (gib + 12)) + g * 0x1000`; 256 pages cover 8 harts with up to 31
/// guest files each.
const IMSIC_S: usize = 0x2800_0000;
const IMSIC_S_PAGES: usize = 256;
/// The M-level IMSIC (QEMU virt).
const IMSIC_M: usize = 0x2400_0000;
const IMSIC_M_PAGES: usize = 16;
/// QEMU virt's M-level APLIC (AIA machine) or PLIC (plain machine).
const APLIC_M_OR_PLIC: usize = 0x0c00_0000;
/// QEMU virt's S-level APLIC.
const APLIC_S: usize = 0x0d00_0000;
/// The Linux guest's RAM (host `0x9000_0000`, 160 MiB: guest 0 of `configs/linux-hostile.toml`
/// as xtask places it) and kernel load address.
const VICTIM_RAM: usize = 0x9000_0000;
const VICTIM_RAM_END: usize = 0x9a00_0000;
const STORM: usize = 20_000;

/// What the guest found in its DTB.
struct Env {
    ncpus: usize,
    /// An AIA guest (IMSIC pages + vAPLIC) rather than a vPLIC one.
    aia: bool,
    ram_end: usize,
}

type Attack = (&'static str, fn(&Env) -> Result<Msg, Msg>);

/// `ecall` with five arguments (RFNC `remote_sfence_vma` takes mask, base, start, size).
fn ecall5(eid: usize, fid: usize, a: [usize; 5]) -> Ret {
    let (error, value);
    // SAFETY: an SBI call; the hypervisor clobbers only a0/a1.
    unsafe {
        core::arch::asm!("ecall", inlateout("a0") a[0] => error, inlateout("a1") a[1] => value,
            in("a2") a[2], in("a3") a[3], in("a4") a[4], in("a6") fid, in("a7") eid,
            options(nostack));
    }
    Ret { error, value }
}

/// One 32-bit access at `addr` (a store of `value` if `Some`); true if it took an
/// access fault (load 5 / store 7 with `stval` = `addr`).
fn faults(addr: usize, store: Option<u32>) -> bool {
    FAULT_CAUSE.store(0, Ordering::SeqCst);
    FAULT_TVAL.store(0, Ordering::SeqCst);
    EXPECT_FAULT.store(true, Ordering::SeqCst);
    match store {
        Some(v) => hw::mmio_write32(addr, v),
        None => {
            let _ = hw::mmio_read32(addr);
        }
    }
    if EXPECT_FAULT.swap(false, Ordering::SeqCst) {
        return false;
    }
    let want = if store.is_some() { 7 } else { 5 };
    FAULT_CAUSE.load(Ordering::SeqCst) == want && FAULT_TVAL.load(Ordering::SeqCst) == addr
}

/// Every address in `addrs` must fault on a load and on stores of each value.
fn all_fault(what: &str, addrs: impl Iterator<Item = usize>) -> Result<Msg, Msg> {
    let mut n = 0;
    for a in addrs {
        ensure!(faults(a, None), "{what}: load at {a:#x} did not fault");
        for v in [1, 10, 0xffff_ffff] {
            ensure!(
                faults(a, Some(v)),
                "{what}: store {v} at {a:#x} did not fault"
            );
        }
        n += 1;
    }
    Ok(Msg::new(format_args!(
        "{n} addresses: every load and store faulted"
    )))
}

/// Every S-level IMSIC page of every hart (S files and guest files, any guest index
/// bits): only the guest's own vCPUs' pages (AIA guest) take the store (an MSI into its
/// own file, identities it has not enabled); every other page faults.
fn imsic_s_files(e: &Env) -> Result<Msg, Msg> {
    let own = if e.aia { e.ncpus } else { 0 };
    let mut faulted = 0;
    for p in 0..IMSIC_S_PAGES {
        let page = IMSIC_S + p * 0x1000;
        for (off, v) in [(0, None), (0, Some(1)), (0, Some(10)), (4, Some(1 << 24))] {
            let f = faults(page + off, v);
            ensure!(
                f == (p >= own),
                "page {page:#x}+{off}: {} (own pages: {own})",
                if f { "faulted" } else { "accepted" }
            );
            faulted += f as usize;
        }
    }
    Ok(Msg::new(format_args!(
        "{IMSIC_S_PAGES} pages: {faulted} accesses faulted, {own} own pages took stores"
    )))
}

fn imsic_m_files(_e: &Env) -> Result<Msg, Msg> {
    all_fault("M IMSIC", (0..IMSIC_M_PAGES).map(|p| IMSIC_M + p * 0x1000))
}

/// The physical interrupt controllers that are not the guest's own window:
/// on the AIA machine the M-level APLIC (and where a PLIC would be: its claim
/// registers), on the plain machine the APLIC windows.
fn phys_irqchip(e: &Env) -> Result<Msg, Msg> {
    let base = if e.aia { APLIC_M_OR_PLIC } else { APLIC_S };
    let regs = [
        0,         // domaincfg / PLIC priority 0
        0x28,      // sourcecfg[10] / priority 10
        0x1bc8,    // smsiaddrcfg
        0x1cdc,    // setipnum
        0x1edc,    // setienum
        0x2000,    // setipnum_le / PLIC enables
        0x3000,    // genmsi
        0x3028,    // target[10]
        0x4000,    // IDC 0
        0x20_0004, // PLIC context 0 claim/complete
        0x20_1004, // PLIC context 1 claim/complete
    ];
    all_fault("physical irqchip", regs.iter().map(|r| base + r))
}

/// The Linux guest's RAM (its host addresses as guest-physical), the end of the own
/// RAM, QEMU's DTB, and guest-physical addresses beyond the G-stage's reach.
fn foreign_ram(e: &Env) -> Result<Msg, Msg> {
    let addrs = [
        VICTIM_RAM,
        VICTIM_RAM + 0x20_0000,
        VICTIM_RAM_END - 8,
        e.ram_end,
        e.ram_end + 0x1000,
        0xa800_0000,
        0xbfe0_0000,
        0x1_0000_0000,
        0x1ff_ffff_f000,
        0x200_0000_0000,
        0xffff_ffff_ffff_f000,
    ];
    all_fault("foreign RAM", addrs.into_iter())
}

/// The own vPLIC with sources 0 and beyond `ndev`, enables of contexts beyond the own
/// vCPUs (emulated and ignored), their threshold and claim/complete registers (beyond
/// the window: faults), and completions of the other guest's passthrough source (10)
/// in the own contexts: no claim ever returns anything.
fn own_vplic(e: &Env) -> Result<Msg, Msg> {
    let mut n = 0;
    for src in [0usize, 96, 97, 127, 1023] {
        for a in [PLIC + 4 * src, PLIC + 0x1000 + 4 * (src / 32)] {
            ensure!(!faults(a, Some(7)), "vPLIC {a:#x} faulted");
            n += 1;
        }
    }
    for ctx in [e.ncpus, e.ncpus + 1, 3, 15, 15871] {
        let en = PLIC + 0x2000 + 0x80 * ctx;
        ensure!(!faults(en, Some(1 << UART_IRQ)), "enable ctx {ctx} faulted");
        let claim = plic_ctx_base(ctx) + 4;
        ensure!(
            faults(claim - 4, Some(0)),
            "threshold ctx {ctx} did not fault"
        );
        ensure!(faults(claim, None), "claim ctx {ctx} did not fault");
        ensure!(
            faults(claim, Some(UART_IRQ)),
            "complete ctx {ctx} did not fault"
        );
        n += 4;
    }
    for ctx in 0..e.ncpus {
        let claim = plic_ctx_base(ctx) + 4;
        for _ in 0..16 {
            hw::mmio_write32(claim, UART_IRQ);
        }
        let id = hw::mmio_read32(claim);
        ensure!(id == 0, "own claim returned {id}");
        n += 17;
    }
    Ok(Msg::new(format_args!(
        "{n} accesses: out-of-range sources and foreign enables ignored, foreign contexts \
         fault, completions of source 10 ignored, every claim 0"
    )))
}

/// Pose as the other guest on the console: through the UART's registers (hyp's
/// virtual 16550 for this guest) and DBCN. hyp prefixes every line (checked outside:
/// no unprefixed `spoof` line).
fn console_spoof(_e: &Env) -> Result<Msg, Msg> {
    let text = b"\r\nVIRQ-INIT-DONE spoof\r\n";
    for &b in text {
        ensure!(!faults(UART, Some(b as u32)), "UART THR store faulted");
    }
    let r = ecall(EID_DBCN, 0, text.len(), text.as_ptr() as usize, 0);
    ensure!(r.error == 0, "DBCN write: {}", r.error);
    for &b in text {
        ecall(EID_DBCN, 2, b as usize, 0, 0);
    }
    Ok(Msg::new(format_args!(
        "{} bytes through the UART, DBCN write and write_byte",
        text.len()
    )))
}

/// The own vAPLIC in MSI mode: sources beyond `riscv,num-sources`, targets naming
/// harts (vCPUs) and guest indices it does not have, `genmsi` to them, the MSI address
/// registers: emulated, no fault; nothing reaches another guest (checked outside).
fn own_vaplic(e: &Env) -> Result<Msg, Msg> {
    let mut n = 0;
    let mut w = |off: usize, v: u32| -> Result<(), Msg> {
        ensure!(!faults(APLIC_S + off, Some(v)), "vAPLIC {off:#x} faulted");
        n += 1;
        Ok(())
    };
    w(0, 0x80000104)?; // domaincfg: IE | DM (MSI), BE ignored bit
    w(0, 0x104)?;
    for src in [1usize, 10, 95, 96, 97, 500, 1023] {
        w(4 * src, 4)?; // sourcecfg: edge rising
        for hart in [e.ncpus, e.ncpus + 1, 5, 0x3fff] {
            // target: hart index, guest index 1, EIID 1.
            w(0x3000 + 4 * src, ((hart as u32) << 18) | (1 << 12) | 1)?;
            w(0x1edc, src as u32)?; // setienum
            w(0x1cdc, src as u32)?; // setipnum
            w(0x2000, src as u32)?; // setipnum_le
        }
    }
    for hart in [e.ncpus as u32, 3, 0x3fff] {
        w(0x3000, (hart << 18) | 1)?; // genmsi
    }
    // MSI address configuration (root domain only): try to point it elsewhere.
    for off in [0x1bc0, 0x1bc4, 0x1bc8, 0x1bcc] {
        w(off, (IMSIC_S >> 12) as u32 + 2)?;
    }
    // Undo: every source inactive, domain off.
    for src in [1usize, 10, 95, 96, 97, 500, 1023] {
        w(4 * src, 0)?;
    }
    w(0, 0)?;
    Ok(Msg::new(format_args!("{n} stores emulated, no fault")))
}

/// Hart masks naming vCPUs the guest does not own.
fn foreign_masks(n: usize) -> [(usize, usize); 11] {
    [
        (1, n),
        (1, n + 1),
        (1 << n, 0),
        (0b11, n - 1),
        (1 << 63, 0),
        (1, usize::MAX - 1),
        (1, 1 << 63),
        (1, 1 << 40),
        (usize::MAX, 0),
        (0b101, 1),
        (usize::MAX, 1),
    ]
}

fn sbi_ipi_foreign(e: &Env) -> Result<Msg, Msg> {
    for (mask, base) in foreign_masks(e.ncpus) {
        let r = ecall(EID_IPI, 0, mask, base, 0);
        ensure!(
            r.error == ERR_INVALID_PARAM,
            "mask {mask:#x} base {base:#x}: {}",
            r.error
        );
    }
    Ok(Msg::new(format_args!(
        "{} masks: INVALID_PARAM",
        foreign_masks(e.ncpus).len()
    )))
}

fn sbi_rfence_foreign(e: &Env) -> Result<Msg, Msg> {
    let mut n = 0;
    for fid in [0, 1, 2] {
        for (mask, base) in foreign_masks(e.ncpus) {
            let r = ecall5(EID_RFNC, fid, [mask, base, 0, usize::MAX, 0]);
            ensure!(
                r.error == ERR_INVALID_PARAM,
                "fid {fid} mask {mask:#x} base {base:#x}: {}",
                r.error
            );
            n += 1;
        }
    }
    // All own vCPUs (base -1), the whole address space: fine, only own harts.
    let r = ecall5(EID_RFNC, 1, [0, usize::MAX, 0, usize::MAX, 0]);
    ensure!(r.error == 0, "own sfence_vma: {}", r.error);
    Ok(Msg::new(format_args!(
        "{n} calls: INVALID_PARAM; own all-harts fence: success"
    )))
}

fn hsm_foreign(e: &Env) -> Result<Msg, Msg> {
    let ids = [e.ncpus, e.ncpus + 1, 7, 8, 64, 1 << 32, 1 << 63, usize::MAX];
    for id in ids {
        let r = ecall(EID_HSM, HSM_START, id, hw::secondary_entry(), 0);
        ensure!(r.error == ERR_INVALID_PARAM, "start {id:#x}: {}", r.error);
        let r = ecall(EID_HSM, HSM_STATUS, id, 0, 0);
        ensure!(r.error == ERR_INVALID_PARAM, "status {id:#x}: {}", r.error);
    }
    // Own vCPU 1 at an entry in the other guest's RAM / outside RAM.
    for entry in [VICTIM_RAM + 0x20_0000, e.ram_end, 0x1000_0000] {
        let r = ecall(EID_HSM, HSM_START, 1, entry, 0);
        ensure!(
            r.error == ERR_INVALID_ADDRESS || r.error == ERR_ALREADY_AVAILABLE,
            "start own vCPU 1 at {entry:#x}: {}",
            r.error
        );
    }
    Ok(Msg::new(format_args!(
        "{} foreign ids: INVALID_PARAM for start and status; foreign entries refused",
        ids.len()
    )))
}

fn dbcn_outside(e: &Env) -> Result<Msg, Msg> {
    let bufs = [
        (16, VICTIM_RAM + 0x20_0000, 0),
        (16, VICTIM_RAM_END - 16, 0),
        (16, 0x7fff_fff8, 0),
        (16, e.ram_end - 8, 0),
        (1, e.ram_end, 0),
        (usize::MAX, 0x8000_0000, 0),
        (1 << 40, 0x8000_0000, 0),
        (8, 0x8000_0000, 1),
        (8, 0, 0),
        (8, UART, 0),
        (8, IMSIC_S, 0),
        (8, usize::MAX - 3, 0),
    ];
    for fid in [0, 1] {
        for (len, lo, hi) in bufs {
            let r = ecall(EID_DBCN, fid, len, lo, hi);
            ensure!(
                r.error == ERR_INVALID_PARAM,
                "fid {fid} len {len:#x} at {hi:#x}:{lo:#x}: {}",
                r.error
            );
        }
    }
    // The console's input belongs to the UART's owner: a good read gets nothing.
    let mut buf = [0u8; 64];
    let r = ecall(EID_DBCN, 1, buf.len(), buf.as_mut_ptr() as usize, 0);
    ensure!(
        r == Ret { error: 0, value: 0 },
        "read of the console: {r:?}"
    );
    Ok(Msg::new(format_args!(
        "{} buffers x write/read: INVALID_PARAM; console read: 0 bytes",
        bufs.len()
    )))
}

fn srst_odd(_e: &Env) -> Result<Msg, Msg> {
    let calls: [(usize, usize, isize); 10] = [
        (1, 0, ERR_NOT_SUPPORTED), // cold reboot
        (2, 0, ERR_NOT_SUPPORTED), // warm reboot
        (3, 0, ERR_INVALID_PARAM),
        (0xEFFF_FFFF, 0, ERR_INVALID_PARAM),
        (0xF000_0000, 0, ERR_INVALID_PARAM),
        (1 << 32, 0, ERR_INVALID_PARAM), // a shutdown in the low 32 bits
        (usize::MAX, 0, ERR_INVALID_PARAM),
        (0, 2, ERR_INVALID_PARAM),
        (0, 0xDFFF_FFFF, ERR_INVALID_PARAM),
        (0, 1 << 32, ERR_INVALID_PARAM),
    ];
    for (ty, reason, want) in calls {
        let r = ecall(EID_SRST, 0, ty, reason, 0);
        ensure!(
            r.error == want,
            "type {ty:#x} reason {reason:#x}: {}",
            r.error
        );
    }
    let r = ecall(EID_SUSP, 0, 1 << 32, hw::resume_entry(), 0);
    ensure!(r.error == ERR_INVALID_PARAM, "SUSP type 1<<32: {}", r.error);
    let r = ecall(EID_SUSP, 0, 0, hw::resume_entry(), 0);
    ensure!(
        r.error == ERR_DENIED,
        "SUSP with vCPU 1 running: {}",
        r.error
    );
    Ok(Msg::new(format_args!(
        "{} SRST calls: NOT_SUPPORTED/INVALID_PARAM, hyp and the other guest run on; SUSP refused",
        calls.len()
    )))
}

/// hyp's experimental extension about a passthrough source the guest does not have,
/// and the legacy IPI/fence calls that take a mask pointer.
fn sbi_misc(_e: &Env) -> Result<Msg, Msg> {
    for fid in [0, 1, 3] {
        for virq in [10, 0, usize::MAX] {
            let r = ecall(EID_HYP, fid, virq, 0, 0);
            ensure!(
                r.error == ERR_INVALID_PARAM,
                "hyp fid {fid} virq {virq:#x}: {}",
                r.error
            );
        }
    }
    for eid in 3..=7 {
        let r = ecall(eid, 0, VICTIM_RAM, 0, 0);
        ensure!(r.error == ERR_NOT_SUPPORTED, "legacy {eid}: {}", r.error);
    }
    Ok(Msg::new(format_args!(
        "hyp counters of source 10: INVALID_PARAM; legacy 3-7: NOT_SUPPORTED"
    )))
}

/// A storm of sends: IPIs to the own vCPU 1, IPIs naming foreign vCPUs, MSIs into the
/// own IMSIC page (AIA) or vPLIC stores.
fn storm(e: &Env) -> Result<Msg, Msg> {
    let before = IPIS[1].load(Ordering::SeqCst);
    for i in 0..STORM {
        let r = ecall(EID_IPI, 0, 0b10, 0, 0);
        ensure!(r.error == 0, "own IPI {i}: {}", r.error);
        let r = ecall(EID_IPI, 0, 1, e.ncpus + (i & 1), 0);
        ensure!(r.error == ERR_INVALID_PARAM, "foreign IPI {i}: {}", r.error);
    }
    ensure!(
        wait_until(500 * MS, || IPIS[1].load(Ordering::SeqCst) > before),
        "vCPU 1 got none of its {STORM} IPIs"
    );
    let got = IPIS[1].load(Ordering::SeqCst) - before;
    for i in 0..STORM {
        if e.aia {
            // Identities 1..=255 into vCPU 0's (this vCPU's) own file.
            hw::mmio_write32(IMSIC_S, (i % 255) as u32 + 1);
        } else {
            hw::mmio_write32(PLIC + 0x1000, 1 << UART_IRQ);
        }
    }
    if e.aia {
        // Every one of them landed in this vCPU's own file (and so in no other guest's):
        // its `eip` registers (AIA §3.8: eip0, eip2, eip4, eip6 on RV64) hold exactly
        // identities 1..=255; then cleared.
        for k in 0..4 {
            csr::siselect::write(0x80 + 2 * k);
            let eip = csr::sireg::read();
            let want = if k == 0 { !1usize } else { usize::MAX };
            csr::sireg::write(0);
            ensure!(
                eip == want,
                "own file eip{}: {eip:#x}, want {want:#x}",
                2 * k
            );
        }
    }
    Ok(Msg::new(format_args!(
        "{STORM} own IPIs ({got} taken by vCPU 1, coalesced), {STORM} foreign IPIs refused, {STORM} {}",
        if e.aia {
            "MSIs into the own file (eip: exactly ids 1-255)"
        } else {
            "vPLIC pending stores"
        }
    )))
}

/// Sleep in `wfi` until `ms` have passed (the timer interrupt is enabled in `sie` but
/// not taken: `sstatus.SIE` stays 0, a pending enabled interrupt ends the `wfi`).
fn sleep_ms(ms: u64) {
    let until = hw::time() + ms * MS;
    csr::stimecmp::write(until as usize);
    csr::sie::set(STIP);
    while hw::time() < until {
        hw::wfi();
    }
    csr::sie::clear(STIP);
    csr::stimecmp::write(usize::MAX);
}

fn hyp_alive(_e: &Env) -> Result<Msg, Msg> {
    let v = ecall(EID_BASE, 0, 0, 0, 0);
    ensure!(v.error == 0 && v.value == 0x0200_0000, "BASE: {v:?}");
    Ok(Msg::new(format_args!("SBI BASE answers")))
}

/// Run the attacks (called by `main` when the bootargs say `virq.hostile`).
pub fn run(hart: usize, ncpus: usize, dtb: usize) -> ! {
    let fdt = hw::dtb(dtb);
    let aia = fdt
        .as_ref()
        .is_some_and(|f| f.find_compatible(&["riscv,imsics"]).is_some());
    let ram_end = fdt
        .as_ref()
        .and_then(|f| f.memory().regions().next())
        .map(|m| m.starting_address as usize + m.size.unwrap_or(0))
        .unwrap_or(0x8000_0000 + (32 << 20));
    let e = Env {
        ncpus,
        aia,
        ram_end,
    };
    println!(
        "hostile: {} guest, {ncpus} vCPUs, RAM up to {ram_end:#x}",
        if aia { "AIA" } else { "vPLIC" }
    );
    // vCPU 1 receives the own IPIs of the storm.
    let r = ecall(EID_HSM, HSM_START, 1, hw::secondary_entry(), 0);
    if r.error != 0 || !wait_until(1000 * MS, || ONLINE[1].load(Ordering::SeqCst)) || hart != 0 {
        println!("hostile: needs 2 vCPUs (start: {})", r.error);
        shutdown(1);
    }
    let mut attacks: [Attack; 14] = [
        ("imsic_s_files", imsic_s_files),
        ("imsic_m_files", imsic_m_files),
        ("phys_irqchip", phys_irqchip),
        ("foreign_ram", foreign_ram),
        ("own_intc", own_vplic),
        ("sbi_ipi_foreign", sbi_ipi_foreign),
        ("sbi_rfence_foreign", sbi_rfence_foreign),
        ("hsm_foreign", hsm_foreign),
        ("dbcn_outside_ram", dbcn_outside),
        ("srst_susp_odd", srst_odd),
        ("sbi_misc", sbi_misc),
        ("console_spoof", console_spoof),
        ("storm", storm),
        ("hyp_alive", hyp_alive),
    ];
    if aia {
        attacks[4].1 = own_vaplic;
    }
    let (mut passed, mut failed) = (0, 0);
    for (name, f) in attacks {
        match f(&e) {
            Ok(m) => {
                passed += 1;
                println!("ATTACK {name} ... PASS ({})", m.as_str());
            }
            Err(m) => {
                failed += 1;
                println!("ATTACK {name} ... FAIL ({})", m.as_str());
            }
        }
    }
    // The siege: every attack again (the storm without its waits) until SIEGE_MS.
    let t0 = hw::time();
    let (mut rounds, mut bad) = (0u64, 0u64);
    while hw::time() - t0 < SIEGE_MS * MS {
        for (name, f) in attacks {
            if name == "storm" || name == "console_spoof" {
                continue;
            }
            if let Err(m) = f(&e) {
                bad += 1;
                if bad <= 3 {
                    println!("hostile: siege round {rounds}: {name}: {}", m.as_str());
                }
            }
        }
        rounds += 1;
        sleep_ms(SIEGE_PAUSE_MS);
    }
    let r = if bad == 0 && rounds > 0 {
        passed += 1;
        "PASS"
    } else {
        failed += 1;
        "FAIL"
    };
    println!(
        "ATTACK siege ... {r} ({rounds} rounds of every attack in {SIEGE_MS} ms, {bad} unexpected results)"
    );
    let unexpected = UNEXPECTED.load(Ordering::SeqCst);
    if unexpected != 0 {
        failed += 1;
        println!("ATTACK no_unexpected_interrupts ... FAIL ({unexpected})");
    }
    println!("hostile: {passed} attacks passed, {failed} failed");
    shutdown(failed)
}
