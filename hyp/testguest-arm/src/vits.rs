//! The guest's own ITS (hyp's vITS on `topology = "vgicv4"`, issue 14): the guest
//! programs it as a driver would — `GICR_PROPBASER`/`PENDBASER` and `EnableLPIs` on
//! each redistributor, the ITS's device and collection tables (`GITS_BASER0/1`), its
//! command queue (`GITS_CBASER`), then MAPD of hyp's virtual test device (DeviceID 0),
//! MAPC of one collection per vCPU, MAPTI of its events, INV, SYNC — and takes the
//! vLPIs that device's events (hyp's `VIRQ_VITS_SEND` call: a host INT on the host
//! device behind DeviceID 0) make pending. Commands are encoded here from IHI 0069H
//! §5.3, not with hyp's encoders.
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::guest::{
    send_sgi, Ctx, Msg, CMD, CMD_DONE, CMD_SPIN, PRIORITY, SPINNING, SPIN_STOP, VITS, WAKE_SGI,
};
use crate::hw;
use crate::regs::{gicd, gicr, psci};

/// The ITS control frame (QEMU `virt`'s address, as hyp's DTB says).
pub const GITS_BASE: u64 = 0x0808_0000;
const CTLR: u64 = 0x0000;
const TYPER: u64 = 0x0008;
const CBASER: u64 = 0x0080;
const CWRITER: u64 = 0x0088;
const CREADR: u64 = 0x0090;
const BASER: u64 = 0x0100;
const VALID: u64 = 1 << 63;

/// SMCCC vendor-hypervisor calls of hyp's vITS (`hyp/hv/src/arm/exit.rs`).
pub const VIRQ_VITS_SEND: u32 = 0x8600_0102;
const VIRQ_VITS_STAT: u32 = 0x8600_0103;
/// `VIRQ_VITS_STAT` counters.
const STAT_CMD_ERRORS: u64 = 0;
const STAT_NO_HOST_DEVICE: u64 = 1;
const STAT_HOST_CMDS: u64 = 2;

/// The test device's DeviceID, and one with no device behind it.
const DEV: u32 = 0;
const NO_DEV: u32 = 1;
/// First vINTID of these tests (hyp's own test vLPIs are 8192..8196).
pub const VINTID0: u32 = 8200;

/// Tables the guest gives its GIC and ITS.
#[repr(C, align(65536))]
struct Mem {
    queue: [u8; 0x1_0000],
    pend: [[u8; 0x1_0000]; 2],
    prop: [u8; 0x1_0000],
    devt: [u8; 0x1000],
    collt: [u8; 0x1000],
    itt: [u8; 0x1000],
}
struct Shared(UnsafeCell<Mem>);
// SAFETY: no Rust reference is ever made to the tables: the guest writes them with
// `hw::write*` at addresses from `addr`, and only vCPU 0's tests do.
unsafe impl Sync for Shared {}
static MEM: Shared = Shared(UnsafeCell::new(Mem {
    queue: [0; 0x1_0000],
    pend: [[0; 0x1_0000]; 2],
    prop: [0; 0x1_0000],
    devt: [0; 0x1000],
    collt: [0; 0x1000],
    itt: [0; 0x1000],
}));

/// The queue's write offset.
static WRITE: AtomicU64 = AtomicU64::new(0);
const QUEUE_BYTES: u64 = 0x1000;

fn mem() -> *mut Mem {
    MEM.0.get()
}
fn prop_addr() -> u64 {
    // SAFETY: only the field's address is taken; nothing is read or written.
    unsafe { core::ptr::addr_of_mut!((*mem()).prop) as u64 }
}

/// One command, four doublewords (IHI 0069H §5.3).
type Cmd = [u64; 4];
fn mapd(dev: u32, bits: u32, itt: u64) -> Cmd {
    [
        0x08 | u64::from(dev) << 32,
        u64::from(bits - 1),
        VALID | (itt & 0x000f_ffff_ffff_ff00),
        0,
    ]
}
fn mapc(icid: u16, rdbase: u64) -> Cmd {
    [0x09, 0, VALID | rdbase << 16 | u64::from(icid), 0]
}
fn mapti(dev: u32, event: u32, vintid: u32, icid: u16) -> Cmd {
    [
        0x0a | u64::from(dev) << 32,
        u64::from(event) | u64::from(vintid) << 32,
        u64::from(icid),
        0,
    ]
}
fn movi(dev: u32, event: u32, icid: u16) -> Cmd {
    [
        0x01 | u64::from(dev) << 32,
        u64::from(event),
        u64::from(icid),
        0,
    ]
}
fn dev_event(code: u64, dev: u32, event: u32) -> Cmd {
    [code | u64::from(dev) << 32, u64::from(event), 0, 0]
}
fn inv(dev: u32, event: u32) -> Cmd {
    dev_event(0x0c, dev, event)
}
fn int(dev: u32, event: u32) -> Cmd {
    dev_event(0x03, dev, event)
}
fn discard(dev: u32, event: u32) -> Cmd {
    dev_event(0x0f, dev, event)
}
fn invall(icid: u16) -> Cmd {
    [0x0d, 0, u64::from(icid), 0]
}
fn sync(rdbase: u64) -> Cmd {
    [0x05, 0, rdbase << 16, 0]
}

/// Queue `cmds`, write `GITS_CWRITER`, and wait (1 s) for `GITS_CREADR` to reach it.
fn submit(c: &Ctx, cmds: &[Cmd]) -> Result<(), Msg> {
    // SAFETY: only the field's address is taken.
    let q = unsafe { core::ptr::addr_of_mut!((*mem()).queue) as u64 };
    let mut w = WRITE.load(Ordering::SeqCst);
    for cmd in cmds {
        for (i, d) in cmd.iter().enumerate() {
            hw::write64(q + w + 8 * i as u64, *d);
        }
        w = (w + 32) % QUEUE_BYTES;
    }
    WRITE.store(w, Ordering::SeqCst);
    hw::dsb();
    hw::write64(GITS_BASE + CWRITER, w);
    ensure!(
        c.wait_until(1000, || hw::read64(GITS_BASE + CREADR) == w),
        "GITS_CREADR {:#x} never reached GITS_CWRITER {w:#x}",
        hw::read64(GITS_BASE + CREADR)
    );
    Ok(())
}

/// Set vINTID `id`'s configuration byte (priority, RES1, Enable).
fn set_config(id: u32, enabled: bool) {
    hw::write8(
        prop_addr() + u64::from(id - 8192),
        PRIORITY | 0b10 | u8::from(enabled),
    );
    hw::dsb();
}

fn stat(which: u64) -> i64 {
    hw::hvc(VIRQ_VITS_STAT, which, 0, 0)
}
fn send(dev: u32, event: u32) -> i64 {
    hw::hvc(VIRQ_VITS_SEND, u64::from(dev), u64::from(event), 0)
}
fn taken(cpu: usize, k: usize) -> u32 {
    VITS[cpu][k].load(Ordering::SeqCst)
}

/// Without `topology = "vgicv4"` there is no vITS: its calls are NOT_SUPPORTED.
fn not_supported() -> Result<(), Msg> {
    let r = send(DEV, 0);
    ensure!(r == psci::NOT_SUPPORTED, "VIRQ_VITS_SEND: {r}");
    Ok(())
}

/// IHI 0069H §5 as a driver does it: LPIs on both redistributors (16 INTID bits,
/// `GICD_TYPER.LPIS`), the ITS's tables and queue, MAPD of DeviceID 0 (8 EventID
/// bits), MAPC of collections 0 and 1 to vCPUs 0 and 1, MAPTI of events 0..4 to
/// vINTIDs 8200..8204 (event 2 on vCPU 0, the others on vCPU 1), INV, SYNC. vINTID
/// 8200 stays disabled (`vits_inv` enables it), the others are enabled. No command
/// error, nothing dropped.
pub fn test_setup(c: &mut Ctx) -> Result<(), Msg> {
    if !c.gicv4 {
        return not_supported();
    }
    let t = hw::read32(gicd::BASE + gicd::TYPER);
    let idbits = ((t >> gicd::TYPER_IDBITS_SHIFT) & 0x1f) + 1;
    ensure!(
        t & gicd::TYPER_LPIS != 0 && idbits == 16,
        "GICD_TYPER {t:#x}: LPIS, {idbits} INTID bits"
    );
    for id in VINTID0..VINTID0 + 4 {
        set_config(id, id != VINTID0);
    }
    for cpu in 0..2 {
        let rd = gicr::rd(cpu);
        ensure!(
            hw::read64(rd + gicr::TYPER) & gicr::TYPER_PLPIS != 0,
            "GICR{cpu}_TYPER: no PLPIS"
        );
        // SAFETY: only the field's address is taken.
        let pend = unsafe { core::ptr::addr_of_mut!((*mem()).pend[cpu]) as u64 };
        // IDbits 15: 16 bits; inner shareable, write-back (Linux's choice).
        let propbaser = prop_addr() | (1 << 10) | (7 << 7) | 15;
        hw::write64(rd + gicr::PROPBASER, propbaser);
        let back = hw::read64(rd + gicr::PROPBASER);
        ensure!(back == propbaser, "GICR{cpu}_PROPBASER reads {back:#x}");
        hw::write64(
            rd + gicr::PENDBASER,
            pend | (1 << 10) | (7 << 7) | (1 << 62),
        );
        hw::write32(rd + gicr::CTLR, gicr::CTLR_ENABLE_LPIS);
        let ctlr = hw::read32(rd + gicr::CTLR);
        ensure!(
            ctlr & gicr::CTLR_ENABLE_LPIS != 0,
            "GICR{cpu}_CTLR {ctlr:#x}"
        );
    }
    let typer = hw::read64(GITS_BASE + TYPER);
    ensure!(
        typer & 1 != 0 && (typer >> 1) & 1 == 0,
        "GITS_TYPER {typer:#x}: want Physical, not Virtual"
    );
    ensure!(
        hw::read32(GITS_BASE + CTLR) & (1 << 31) != 0,
        "GITS_CTLR not Quiescent before enabling"
    );
    // SAFETY: only the fields' addresses are taken.
    let (q, devt, collt) = unsafe {
        (
            core::ptr::addr_of_mut!((*mem()).queue) as u64,
            core::ptr::addr_of_mut!((*mem()).devt) as u64,
            core::ptr::addr_of_mut!((*mem()).collt) as u64,
        )
    };
    for (n, table) in [(0u64, devt), (1, collt)] {
        let reg = GITS_BASE + BASER + 8 * n;
        let b = hw::read64(reg);
        let ty = (b >> 56) & 7;
        ensure!(ty == [1, 4][n as usize], "GITS_BASER{n} {b:#x}: type {ty}");
        // Valid, the read-only type and entry size kept, 4 KiB pages, one page.
        hw::write64(reg, VALID | (b & (0xff << 48)) | table);
        let back = hw::read64(reg);
        ensure!(
            back & VALID != 0 && back & 0x0000_ffff_ffff_f000 == table,
            "GITS_BASER{n} reads {back:#x}"
        );
    }
    hw::write64(GITS_BASE + CBASER, VALID | q); // one 4 KiB page
    hw::write64(GITS_BASE + CWRITER, 0);
    WRITE.store(0, Ordering::SeqCst);
    hw::write32(GITS_BASE + CTLR, 1);
    // SAFETY: only the field's address is taken.
    let itt = unsafe { core::ptr::addr_of_mut!((*mem()).itt) as u64 };
    let (e0, n0) = (stat(STAT_CMD_ERRORS), stat(STAT_NO_HOST_DEVICE));
    submit(
        c,
        &[
            mapd(DEV, 8, itt),
            mapc(0, 0),
            mapc(1, 1),
            mapti(DEV, 0, VINTID0, 1),
            mapti(DEV, 1, VINTID0 + 1, 1),
            mapti(DEV, 2, VINTID0 + 2, 0),
            mapti(DEV, 3, VINTID0 + 3, 1),
            inv(DEV, 0),
            inv(DEV, 1),
            inv(DEV, 2),
            inv(DEV, 3),
            sync(0),
            sync(1),
        ],
    )?;
    let (e, n) = (stat(STAT_CMD_ERRORS) - e0, stat(STAT_NO_HOST_DEVICE) - n0);
    ensure!(e == 0 && n == 0, "{e} command errors, {n} dropped actions");
    println!(
        "testguest: vits_setup: DeviceID 0 mapped (8 EventID bits), 2 collections, 4 events, host commands so far {}",
        stat(STAT_HOST_CMDS)
    );
    Ok(())
}

/// Run `f` while vCPU 1 spins with IRQs unmasked (its vPE resident), then stop it.
fn with_vcpu1_spinning(c: &Ctx, f: impl FnOnce() -> Result<(), Msg>) -> Result<(), Msg> {
    let done = CMD_DONE[1].load(Ordering::SeqCst);
    SPIN_STOP.store(false, Ordering::SeqCst);
    CMD[1].store(CMD_SPIN, Ordering::SeqCst);
    send_sgi(1, WAKE_SGI);
    ensure!(
        c.wait_until(1000, || SPINNING.load(Ordering::SeqCst)),
        "vCPU 1 did not start spinning"
    );
    let r = f();
    SPIN_STOP.store(true, Ordering::SeqCst);
    ensure!(
        c.wait_until(1000, || CMD_DONE[1].load(Ordering::SeqCst) > done),
        "vCPU 1 did not stop spinning"
    );
    r
}

/// §5.3.9 INV re-reads the configuration: event 0 (vINTID 8200, disabled) sent to
/// running vCPU 1 is not taken in 50 ms; the guest enables it in its table and
/// issues INV + SYNC: the pending vLPI is taken then (hyp copied the byte into the
/// VM's vLPI table before the host INV). Then the same round with INVALL (§5.3.10)
/// for the disable and the enable (hyp copies vCPU 1's whole table, then VINVALL).
pub fn test_inv(c: &mut Ctx) -> Result<(), Msg> {
    if !c.gicv4 {
        return not_supported();
    }
    with_vcpu1_spinning(c, || {
        let base = taken(1, 0);
        ensure!(send(DEV, 0) == 0, "VIRQ_VITS_SEND refused event 0");
        c.delay_ms(50);
        ensure!(taken(1, 0) == base, "disabled vINTID 8200 was taken");
        set_config(VINTID0, true);
        submit(c, &[inv(DEV, 0), sync(1)])?;
        ensure!(
            c.wait_until(1000, || taken(1, 0) > base),
            "vINTID 8200 not taken after enable + INV"
        );
        // The same with §5.3.10 INVALL of collection 1 (vCPU 1's).
        set_config(VINTID0, false);
        submit(c, &[invall(1), sync(1)])?;
        ensure!(send(DEV, 0) == 0, "VIRQ_VITS_SEND refused event 0");
        c.delay_ms(50);
        ensure!(
            taken(1, 0) == base + 1,
            "vINTID 8200 taken after disable + INVALL"
        );
        set_config(VINTID0, true);
        submit(c, &[invall(1), sync(1)])?;
        ensure!(
            c.wait_until(1000, || taken(1, 0) > base + 1),
            "vINTID 8200 not taken after enable + INVALL"
        );
        println!(
            "testguest: vits_inv: disabled vLPI held pending, taken after enable + INV; the same with INVALL"
        );
        Ok(())
    })
}

/// Device MSIs through the guest's ITS to a running vCPU: 100 events 1 (vINTID 8201)
/// sent while vCPU 1 spins, all taken with no exit of vCPU 1.
pub fn test_running(c: &mut Ctx) -> Result<(), Msg> {
    if !c.gicv4 {
        return not_supported();
    }
    const N: u32 = 100;
    with_vcpu1_spinning(c, || {
        let base = taken(1, 1);
        let e0 = crate::tests::vlpi_stat(1, 0);
        for i in 0..N {
            let r = send(DEV, 1);
            ensure!(r == 0, "VIRQ_VITS_SEND: {r}");
            ensure!(
                c.wait_until(1000, || taken(1, 1) > base + i),
                "event 1 ({} of {N}) not taken by running vCPU 1 in 1 s",
                i + 1
            );
        }
        let exits = crate::tests::vlpi_stat(1, 0) - e0;
        let got = taken(1, 1) - base;
        println!(
            "testguest: vits_running: {got} device vLPIs through the guest ITS taken by running vCPU 1, its exits meanwhile: {exits}"
        );
        // With `vlpi.migrate` the periods' ends interrupt vCPU 1: exits, counted.
        ensure!(
            got == N && (exits == 0 || c.migrate),
            "{got} taken, {exits} exits"
        );
        Ok(())
    })
}

/// The same to vCPU 1 blocked in WFI: 20 rounds, each event's vLPI wakes it through
/// its doorbell (the vCPU's doorbell was in the VMAPTI hyp made for the guest's
/// MAPTI).
pub fn test_doorbell(c: &mut Ctx) -> Result<(), Msg> {
    if !c.gicv4 {
        return not_supported();
    }
    const N: u32 = 20;
    let f0 = crate::tests::vlpi_fires(1);
    for i in 0..N {
        ensure!(
            c.wait_until(1000, || crate::tests::vlpi_stat(1, 3) == 2),
            "round {}: vCPU 1 not blocking (state {})",
            i + 1,
            crate::tests::vlpi_stat(1, 3)
        );
        let base = taken(1, 3);
        ensure!(send(DEV, 3) == 0, "VIRQ_VITS_SEND refused event 3");
        ensure!(
            c.wait_until(1000, || taken(1, 3) > base),
            "round {}: event 3 not taken by blocked vCPU 1 in 1 s",
            i + 1
        );
    }
    let (d, w) = crate::tests::vlpi_fires_since(1, f0);
    println!(
        "testguest: vits_doorbell: {N} device vLPIs to blocked vCPU 1: {d} doorbells, {w} doorbell wake-ups"
    );
    ensure!(w >= i64::from(N) && d >= w, "{d} doorbells, {w} wake-ups");
    Ok(())
}

/// §5.3.12 MOVI: event 2 (vINTID 8202) goes to vCPU 0 (collection 0); after MOVI to
/// collection 1 and SYNC it goes to vCPU 1 (hyp's VMOVI to vCPU 1's vPE).
pub fn test_movi(c: &mut Ctx) -> Result<(), Msg> {
    if !c.gicv4 {
        return not_supported();
    }
    let b0 = taken(0, 2);
    hw::irq_unmask();
    ensure!(send(DEV, 2) == 0, "VIRQ_VITS_SEND refused event 2");
    let ok = c.wait_until(1000, || taken(0, 2) > b0);
    hw::irq_mask();
    ensure!(ok, "event 2 not taken by vCPU 0");
    submit(c, &[movi(DEV, 2, 1), sync(1)])?;
    with_vcpu1_spinning(c, || {
        let b1 = taken(1, 2);
        ensure!(send(DEV, 2) == 0, "VIRQ_VITS_SEND refused event 2");
        ensure!(
            c.wait_until(1000, || taken(1, 2) > b1),
            "event 2 not taken by vCPU 1 after MOVI"
        );
        Ok(())
    })?;
    ensure!(taken(0, 2) == b0 + 1, "vCPU 0 took event 2 after the MOVI");
    println!("testguest: vits_movi: event 2 taken by vCPU 0, then by vCPU 1 after MOVI");
    Ok(())
}

/// §5.3 command errors: MAPTI of an unmapped DeviceID, INT of an EventID beyond the
/// ITT, an unknown command code — each ignored and counted (3 errors). DeviceID 1
/// has no device behind it in hyp: its MAPD/MAPTI/INT are valid for the model but
/// reach no host ITS (2 actions dropped, 0 host commands but the SYNC's VSYNC), and
/// its vLPI is never taken; hyp's send call refuses it (-2) and an event the guest
/// never mapped (-3). DISCARD then unmaps event 1: sending it is refused (-3). A
/// command queue outside the guest's RAM stalls (hyp's read of it fails, never more);
/// with the queue back (`GITS_CBASER` resets `GITS_CREADR`) the ITS works again.
pub fn test_errors(c: &mut Ctx) -> Result<(), Msg> {
    if !c.gicv4 {
        return not_supported();
    }
    // SAFETY: only the field's address is taken.
    let itt = unsafe { core::ptr::addr_of_mut!((*mem()).itt) as u64 } + 0x800;
    let (e0, n0, h0) = (
        stat(STAT_CMD_ERRORS),
        stat(STAT_NO_HOST_DEVICE),
        stat(STAT_HOST_CMDS),
    );
    let b = taken(1, 3);
    submit(
        c,
        &[
            mapti(5, 0, VINTID0 + 3, 1), // DeviceID 5 never mapped
            int(DEV, 300),               // beyond 8 EventID bits
            [0x3f, 0, 0, 0],             // no such command
            mapd(NO_DEV, 4, itt),
            mapti(NO_DEV, 0, 9000, 1),
            int(NO_DEV, 0),
            sync(1),
        ],
    )?;
    let (e, n, h) = (
        stat(STAT_CMD_ERRORS) - e0,
        stat(STAT_NO_HOST_DEVICE) - n0,
        stat(STAT_HOST_CMDS) - h0,
    );
    ensure!(e == 3, "{e} command errors counted, want 3");
    ensure!(
        n == 2,
        "{n} actions dropped for DeviceID 1, want 2 (Map, Int)"
    );
    ensure!(h == 1, "{h} host commands, want 1 (the SYNC's VSYNC)");
    ensure!(send(NO_DEV, 0) == -2, "DeviceID 1 has no host device");
    ensure!(send(DEV, 99) == -3, "event 99 was never mapped");
    submit(c, &[discard(DEV, 1), sync(1)])?;
    ensure!(send(DEV, 1) == -3, "event 1 translated after DISCARD");
    c.delay_ms(20);
    ensure!(taken(1, 3) == b, "a vLPI of vCPU 1 taken meanwhile");
    let b = taken(1, 3);
    // A queue outside the guest's RAM: hyp's checked read fails, the queue stalls
    // (`GITS_CREADR.Stalled`, §12.19.6) and nothing runs; the real queue back, the ITS
    // works again.
    hw::write32(GITS_BASE + CTLR, 0);
    hw::write64(GITS_BASE + CBASER, VALID | crate::regs::UNMAPPED);
    hw::write64(GITS_BASE + CWRITER, 0x20);
    hw::write32(GITS_BASE + CTLR, 1);
    let creadr = hw::read64(GITS_BASE + CREADR);
    ensure!(
        creadr == 1,
        "GITS_CREADR {creadr:#x} with the queue outside RAM, want 0 + Stalled"
    );
    hw::write32(GITS_BASE + CTLR, 0);
    // SAFETY: only the field's address is taken.
    let q = unsafe { core::ptr::addr_of_mut!((*mem()).queue) as u64 };
    hw::write64(GITS_BASE + CBASER, VALID | q);
    hw::write64(GITS_BASE + CWRITER, 0);
    WRITE.store(0, Ordering::SeqCst);
    hw::write32(GITS_BASE + CTLR, 1);
    submit(c, &[sync(1)])?;
    ensure!(send(DEV, 3) == 0, "event 3 refused after the stall");
    ensure!(
        c.wait_until(1000, || taken(1, 3) > b),
        "event 3 not taken after the stall"
    );
    println!(
        "testguest: vits_errors: {e} command errors ignored, {n} actions for a DeviceID with no host device dropped, {h} host command; a queue outside RAM stalled (GITS_CREADR {creadr:#x}), the ITS works again after CBASER"
    );
    Ok(())
}
