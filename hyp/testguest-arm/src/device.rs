//! Tests of a PCIe function hyp gave this guest (docs/hyp.md, "PCIe passthrough on
//! aarch64"): QEMU's `edu` at 00:01.0 of the guest's ECAM (the suite case
//! `aarch64-iommu-edu`, `virq.device` on the command line). Without `virq.device` the
//! tests check that the DTB has no host bridge (hyp gave no function).
//!
//! - `device_config`: the filtered configuration space — edu's identity read through,
//!   no other function, BARs virtual (a guest write moves the register, not the
//!   device), INTx off (Interrupt Pin 0), the expansion ROM and extended space empty.
//! - `device_dma`: edu copies guest RAM → its buffer → guest RAM through the SMMUv3's
//!   stage 2 (this guest's own tables); two DMAs to guest-physical addresses outside
//!   this guest's RAM change nothing it can see (hyp counts the SMMU's events).
use crate::guest::{Ctx, Msg};
use crate::hw;

/// edu's registers (QEMU docs/specs/edu.rst).
const EDU_IDENT: u64 = 0x00;
const EDU_LIVENESS: u64 = 0x04;
const EDU_DMA_SRC: u64 = 0x80;
const EDU_DMA_DST: u64 = 0x88;
const EDU_DMA_CNT: u64 = 0x90;
const EDU_DMA_CMD: u64 = 0x98;
const EDU_BUFFER: u64 = 0x40000;
/// The second refused DMA's target: a guest-physical address far outside this guest's
/// RAM (and inside host RAM on `virt`, which the SMMU must keep it from).
pub const BAD_DMA_FAR: u64 = 0x1_0000_0000;

/// The guest's view: its ECAM window and edu's BAR 0.
struct Edu {
    ecam: u64,
    bar0: u64,
}

fn cfg_read(ecam: u64, dev: u64, off: u64) -> u32 {
    hw::read32(ecam + (dev << 15) + off)
}

fn cfg_write(ecam: u64, dev: u64, off: u64, v: u32) {
    hw::write32(ecam + (dev << 15) + off, v)
}

/// The host bridge of the DTB, if hyp gave this guest one.
fn ecam(c: &Ctx) -> Option<u64> {
    let f = hw::dtb(c.dtb)?;
    let node = f.find_compatible(&["pci-host-ecam-generic"])?;
    Some(node.reg()?.next()?.starting_address as u64)
}

fn edu(c: &Ctx) -> Result<Edu, Msg> {
    let Some(ecam) = ecam(c) else {
        return Err(Msg::new(format_args!(
            "no pci-host-ecam-generic node in the DTB"
        )));
    };
    let id = cfg_read(ecam, 1, 0);
    ensure!(id == 0x11e8_1234, "00:01.0 is {id:#x}, not edu 1234:11e8");
    let bar0 = u64::from(cfg_read(ecam, 1, 0x10) & !0xf);
    ensure!(bar0 != 0, "edu's BAR 0 is unassigned");
    Ok(Edu { ecam, bar0 })
}

/// Without `virq.device`: hyp gave this guest no host bridge.
fn no_device(c: &Ctx) -> Result<(), Msg> {
    ensure!(
        ecam(c).is_none(),
        "a pci-host-ecam-generic node without virq.device on the command line"
    );
    Ok(())
}

pub fn test_config(c: &mut Ctx) -> Result<(), Msg> {
    if !c.device {
        return no_device(c);
    }
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
    cfg_write(e.ecam, 1, 0x10, 0x3000_0000);
    let moved = cfg_read(e.ecam, 1, 0x10);
    let ident = hw::read32(e.bar0 + EDU_IDENT);
    cfg_write(e.ecam, 1, 0x10, e.bar0 as u32);
    ensure!(mask == 0xfff0_0000, "BAR 0 sizing probe read {mask:#x}");
    ensure!(
        moved == 0x3000_0000,
        "BAR 0 reads {moved:#x} after the guest's write"
    );
    ensure!(
        ident & 0xffff == 0x00ed,
        "edu no longer answers at {:#x} after a BAR write: {ident:#x}",
        e.bar0
    );
    // INTx: no pin, whatever the guest writes to the Command register.
    cfg_write(e.ecam, 1, 0x04, 0x2);
    let pin = (cfg_read(e.ecam, 1, 0x3c) >> 8) & 0xff;
    ensure!(pin == 0, "Interrupt Pin {pin}: INTx is offered");
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
fn dma(c: &Ctx, e: &Edu, src: u64, dst: u64, len: u64, to_ram: bool) -> Result<(), Msg> {
    hw::write64(e.bar0 + EDU_DMA_SRC, src);
    hw::write64(e.bar0 + EDU_DMA_DST, dst);
    hw::write64(e.bar0 + EDU_DMA_CNT, len);
    hw::write32(e.bar0 + EDU_DMA_CMD, 1 | if to_ram { 2 } else { 0 });
    ensure!(
        c.wait_until(2000, || hw::read32(e.bar0 + EDU_DMA_CMD) & 1 == 0),
        "edu DMA {src:#x} -> {dst:#x} did not finish"
    );
    Ok(())
}

#[repr(align(64))]
struct Buf([u8; 128]);
static mut SRC: Buf = Buf([0; 128]);
static mut DST: Buf = Buf([0; 128]);

pub fn test_dma(c: &mut Ctx) -> Result<(), Msg> {
    if !c.device {
        return no_device(c);
    }
    let e = edu(c)?;
    // Memory space and bus mastering on.
    cfg_write(e.ecam, 1, 0x04, 0x6);
    hw::write32(e.bar0 + EDU_LIVENESS, 0x1234_5678);
    let live = hw::read32(e.bar0 + EDU_LIVENESS);
    ensure!(live == !0x1234_5678, "edu does not answer ({live:#x})");
    let src = &raw mut SRC;
    let dst = &raw mut DST;
    for i in 0..128 {
        // SAFETY: only this test touches the buffers, on one vCPU, with no DMA running.
        unsafe {
            (*src).0[i] = (i as u8) ^ 0x5a;
            (*dst).0[i] = 0;
        }
    }
    // With the MMU off, these addresses are IPAs: what the SMMU's stage 2 translates.
    let (s, d) = (src as u64, dst as u64);
    hw::dsb();
    dma(c, &e, s, EDU_BUFFER, 128, false)?;
    dma(c, &e, EDU_BUFFER, d, 128, true)?;
    hw::dsb();
    // SAFETY: the DMA is over (edu reported it done); volatile, the device wrote it.
    let back: [u8; 128] = unsafe { core::ptr::read_volatile(dst as *const [u8; 128]) };
    ensure!(
        back.iter().enumerate().all(|(i, b)| *b == (i as u8) ^ 0x5a),
        "DMA through the SMMU's stage 2: got {:02x?}",
        &back[..8]
    );
    // Outside this guest's RAM (1 MiB past its end, and far above it): refused by the
    // SMMU, nothing here changes.
    for bad in [ram_end(c) + 0x10_0000, BAD_DMA_FAR] {
        dma(c, &e, EDU_BUFFER, bad, 4, true)?;
    }
    // SAFETY: as above.
    let again: [u8; 128] = unsafe { core::ptr::read_volatile(dst as *const [u8; 128]) };
    ensure!(again == back, "a refused DMA changed this guest's RAM");
    println!(
        "testguest: device_dma: 128 bytes {s:#x} -> edu -> {d:#x}; refused DMAs to {:#x} and {BAD_DMA_FAR:#x}",
        ram_end(c) + 0x10_0000
    );
    Ok(())
}

/// The end of guest RAM (the DTB's first memory region).
fn ram_end(c: &Ctx) -> u64 {
    hw::dtb(c.dtb)
        .and_then(|f| {
            f.memory()
                .regions()
                .next()
                .map(|r| r.starting_address as u64 + r.size.unwrap_or(0) as u64)
        })
        .unwrap_or(crate::regs::RAM_BASE + 0x400_0000)
}
