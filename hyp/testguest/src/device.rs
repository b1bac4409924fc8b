//! Tests of a PCIe function hyp gave this guest (docs/hyp.md, "Passing a PCIe function
//! to a guest"): QEMU's `edu` at 00:01.0 of the guest's ECAM (the suite's
//! `iommu-guest-edu` case, bootarg `virq.device`). A test fails when the DTB has no
//! host bridge.
//!
//! - `device_config`: the filtered configuration space — identity read through, no
//!   function elsewhere, BARs virtual (a guest write moves the register, not the
//!   device), the expansion ROM and extended space empty.
//! - `device_dma`: edu copies guest RAM → its buffer → guest RAM (the IOMMU's second
//!   stage is this guest's G-stage); DMAs to a guest-physical address outside this
//!   guest's RAM change nothing the guest can see (hyp counts the IOMMU's faults).
//! - `device_msi`: edu's MSI, programmed with this vCPU's own IMSIC page, arrives as an
//!   external interrupt identity in this guest's interrupt file; programmed with an
//!   address outside the guest's IMSIC pages, nothing arrives.
use super::*;
use crate::hw::{mmio_read32, mmio_write32};

/// edu's registers (QEMU docs/specs/edu.rst).
const EDU_IDENT: usize = 0x00;
const EDU_LIVENESS: usize = 0x04;
const EDU_IRQ_RAISE: usize = 0x60;
const EDU_IRQ_ACK: usize = 0x64;
const EDU_DMA_SRC: usize = 0x80;
const EDU_DMA_DST: usize = 0x88;
const EDU_DMA_CNT: usize = 0x90;
const EDU_DMA_CMD: usize = 0x98;
const EDU_BUFFER: u64 = 0x40000;

/// The identity edu's MSI uses in the tests.
const MSI_ID: usize = 7;
/// A guest-physical address in no window of this guest: an IMSIC-like page past its
/// pages (the IOMMU's MSI pattern does not match it).
const NOT_MY_IMSIC: u64 = 0x2800_8000;

/// The guest's view: its ECAM window and edu's BAR 0.
struct Edu {
    ecam: usize,
    bar0: usize,
}

/// A configuration read of function `dev` at `off`.
fn cfg_read(ecam: usize, dev: usize, off: usize) -> u32 {
    mmio_read32(ecam + (dev << 15) + off)
}

fn cfg_write(ecam: usize, dev: usize, off: usize, v: u32) {
    mmio_write32(ecam + (dev << 15) + off, v)
}

/// edu's 64-bit registers take one 64-bit write (a 32-bit write at the offset sets the
/// whole register, zero-extended; one at offset + 4 is ignored).
fn reg64_write(addr: usize, v: u64) {
    crate::hw::mmio_write64(addr, v);
}

/// The host bridge of the DTB, if hyp gave this guest one.
fn ecam(dtb: usize) -> Option<usize> {
    let f = hw::dtb(dtb)?;
    let node = f.find_compatible(&["pci-host-ecam-generic"])?;
    let reg = node.reg()?.next()?;
    Some(reg.starting_address as usize)
}

fn edu(c: &Ctx) -> Result<Edu, Msg> {
    let Some(ecam) = ecam(c.dtb) else {
        return Err(Msg::new(format_args!(
            "no pci-host-ecam-generic node in the DTB"
        )));
    };
    let id = cfg_read(ecam, 1, 0);
    ensure!(id == 0x11e8_1234, "00:01.0 is {id:#x}, not edu 1234:11e8");
    let bar0 = (cfg_read(ecam, 1, 0x10) & !0xf) as usize;
    ensure!(bar0 != 0, "edu's BAR 0 is unassigned");
    Ok(Edu { ecam, bar0 })
}

pub(crate) fn test_config(c: &Ctx) -> Result<(), Msg> {
    let e = edu(c)?;
    ensure!(
        cfg_read(e.ecam, 2, 0) == !0 && cfg_read(e.ecam, 0, 0) == !0,
        "a function other than the one given reads {:#x} / {:#x}",
        cfg_read(e.ecam, 2, 0),
        cfg_read(e.ecam, 0, 0)
    );
    // The sizing probe answers edu's 1 MiB; the device stays where it is.
    cfg_write(e.ecam, 1, 0x10, !0);
    let mask = cfg_read(e.ecam, 1, 0x10);
    cfg_write(e.ecam, 1, 0x10, 0x5000_0000);
    let moved = cfg_read(e.ecam, 1, 0x10);
    let ident = mmio_read32(e.bar0 + EDU_IDENT);
    cfg_write(e.ecam, 1, 0x10, e.bar0 as u32);
    ensure!(mask == 0xfff0_0000, "BAR 0 sizing probe read {mask:#x}");
    ensure!(
        moved == 0x5000_0000,
        "BAR 0 reads {moved:#x} after the guest's write"
    );
    ensure!(
        ident & 0xffff == 0x00ed,
        "edu no longer answers at {:#x} after a BAR write: {ident:#x}",
        e.bar0
    );
    cfg_write(e.ecam, 1, 0x30, !0);
    cfg_write(e.ecam, 1, 0x100, !0);
    ensure!(
        cfg_read(e.ecam, 1, 0x30) == 0 && cfg_read(e.ecam, 1, 0x100) == 0,
        "expansion ROM {:#x}, extended space {:#x}",
        cfg_read(e.ecam, 1, 0x30),
        cfg_read(e.ecam, 1, 0x100)
    );
    Ok(())
}

/// Start a DMA and wait (2 s at most) until edu reports it done.
fn dma(e: &Edu, src: u64, dst: u64, len: u64, to_ram: bool) -> Result<(), Msg> {
    reg64_write(e.bar0 + EDU_DMA_SRC, src);
    reg64_write(e.bar0 + EDU_DMA_DST, dst);
    reg64_write(e.bar0 + EDU_DMA_CNT, len);
    mmio_write32(e.bar0 + EDU_DMA_CMD, 1 | if to_ram { 2 } else { 0 });
    ensure!(
        wait_until(2000 * MS, || mmio_read32(e.bar0 + EDU_DMA_CMD) & 1 == 0),
        "edu DMA {src:#x} -> {dst:#x} did not finish"
    );
    Ok(())
}

#[repr(align(64))]
struct Buf([u8; 128]);
static mut SRC: Buf = Buf([0; 128]);
static mut DST: Buf = Buf([0; 128]);

pub(crate) fn test_dma(c: &Ctx) -> Result<(), Msg> {
    let e = edu(c)?;
    // Memory space and bus mastering on.
    cfg_write(e.ecam, 1, 0x04, 0x6);
    ensure!(
        mmio_read32(e.bar0 + EDU_LIVENESS) != 0 || {
            mmio_write32(e.bar0 + EDU_LIVENESS, 0x1234_5678);
            mmio_read32(e.bar0 + EDU_LIVENESS) == !0x1234_5678
        },
        "edu does not answer"
    );
    let src = &raw mut SRC;
    let dst = &raw mut DST;
    for i in 0..128 {
        // SAFETY: only this test touches the buffers, on one vCPU, with no DMA running.
        unsafe {
            (*src).0[i] = (i as u8) ^ 0x5a;
            (*dst).0[i] = 0;
        }
    }
    let (s, d) = (src as u64, dst as u64);
    dma(&e, s, EDU_BUFFER, 128, false)?;
    dma(&e, EDU_BUFFER, d, 128, true)?;
    // SAFETY: the DMA is over (edu reported it done); volatile, the device wrote it.
    let back: [u8; 128] = unsafe { core::ptr::read_volatile(dst as *const [u8; 128]) };
    ensure!(
        back.iter().enumerate().all(|(i, b)| *b == (i as u8) ^ 0x5a),
        "DMA through the second stage: got {:02x?}",
        &back[..8]
    );
    // Outside this guest's RAM (past its end, and a host address of another guest's
    // RAM as a guest-physical one): refused by the IOMMU, nothing here changes.
    let ram_end = hw::dtb(c.dtb)
        .and_then(|f| {
            f.memory()
                .regions()
                .next()
                .map(|r| r.starting_address as u64 + r.size.unwrap_or(0) as u64)
        })
        .unwrap_or(0x8800_0000);
    for bad in [ram_end + 0x10_0000, 0x1_0000_0000] {
        dma(&e, EDU_BUFFER, bad, 4, true)?;
    }
    // SAFETY: as above.
    let again: [u8; 128] = unsafe { core::ptr::read_volatile(dst as *const [u8; 128]) };
    ensure!(again == back, "a refused DMA changed this guest's RAM");
    Ok(())
}

/// The IMSIC registers through `siselect`/`sireg` (AIA §2.5).
fn ireg_write(sel: usize, v: usize) {
    hw::csr::siselect::write(sel);
    hw::csr::sireg::write(v);
}

fn ireg_read(sel: usize) -> usize {
    hw::csr::siselect::write(sel);
    hw::csr::sireg::read()
}

/// Program edu's MSI (its capability at 0x40, 64-bit) with `addr` and identity
/// [`MSI_ID`], raise it, and say whether the identity became pending in this vCPU's
/// interrupt file within 100 ms (it is then cleared).
fn msi_arrives(e: &Edu, addr: u64) -> bool {
    let cap = 0x40;
    cfg_write(e.ecam, 1, cap + 4, addr as u32);
    cfg_write(e.ecam, 1, cap + 8, (addr >> 32) as u32);
    cfg_write(e.ecam, 1, cap + 12, MSI_ID as u32);
    let ctrl = cfg_read(e.ecam, 1, cap);
    cfg_write(e.ecam, 1, cap, ctrl | 1 << 16);
    mmio_write32(e.bar0 + EDU_IRQ_RAISE, 1);
    let got = wait_until(100 * MS, || ireg_read(0x80) & (1 << MSI_ID) != 0);
    mmio_write32(e.bar0 + EDU_IRQ_ACK, 1);
    cfg_write(e.ecam, 1, cap, ctrl & !(1 << 16));
    hw::csr::siselect::write(0x80);
    hw::csr::sireg::clear(1 << MSI_ID);
    got
}

pub(crate) fn test_msi(c: &Ctx) -> Result<(), Msg> {
    let e = edu(c)?;
    let Some(imsic) = hw::dtb(c.dtb)
        .and_then(|f| {
            f.find_compatible(&["riscv,imsics"])
                .and_then(|n| n.reg()?.next())
        })
        .map(|r| r.starting_address as u64)
    else {
        return Err(Msg::new(format_args!("no riscv,imsics node in the DTB")));
    };
    // This vCPU's file: delivery on, the identity enabled (no trap: the test polls
    // the pending bit, with sie.SEIE off).
    ireg_write(0x70, 1);
    ireg_write(0x72, 0);
    hw::csr::siselect::write(0xc0);
    hw::csr::sireg::set(1 << MSI_ID);
    let mine = imsic + (c.hart as u64) * 0x1000;
    let own = msi_arrives(&e, mine);
    let other = msi_arrives(&e, NOT_MY_IMSIC);
    hw::csr::siselect::write(0xc0);
    hw::csr::sireg::clear(1 << MSI_ID);
    ensure!(
        own,
        "edu's MSI to this vCPU's IMSIC page {mine:#x} did not arrive"
    );
    ensure!(
        !other,
        "an MSI to {NOT_MY_IMSIC:#x} (not this guest's) arrived"
    );
    Ok(())
}
