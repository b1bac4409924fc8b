//! The IOMMU proof (bootarg `iommu_test=edu`, the suite's `iommu-*` cases): QEMU's
//! `edu` test device (docs/specs/edu.rst: a 4 KiB buffer at device address 0x40000 and
//! a DMA engine) given guest 0's G-stage as its second stage, then made to DMA:
//!
//! 1. guest RAM → edu → guest RAM through the second stage: hyp writes a pattern at one
//!    guest-physical page and reads it back from another (through the guest's RAM
//!    window), no fault;
//! 2. to the first page past the guest's RAM (mapped nowhere): exactly one fault record,
//!    cause 23 (write guest-page fault) at that address, and nothing written;
//! 3. after `Iommu::detach` (context invalid, IODIR.INVAL_DDT, IOFENCE.C), to a page the
//!    context used to map: exactly one fault record, cause 258 (DDT entry not valid),
//!    and nothing written. Without the invalidation the IOMMU could keep using the
//!    context it cached in step 1 (QEMU does), and the write would land.
//!
//! The bytes the test writes into guest RAM are put back afterwards, before the guest
//! runs. Each step prints `hyp: dma-test: ...`; the last line is `hyp: dma-test:
//! passed` or `hyp: dma-test: FAILED: <why>`. hyp keeps running either way.
use alloc::format;
use alloc::string::String;

use hyp_io::iommu::{cause, FaultRecord, MsiPte};
use hyp_io::pci::Bdf;

use crate::arch::pcie::MmioWindow;
use crate::config::GUEST_RAM_BASE;
use crate::guest::Guest;
use crate::iommu::Iommu;
use crate::pci::Bus;
use crate::println;

/// QEMU's edu device: vendor 0x1234, device 0x11e8.
pub const EDU_ID: (u16, u16) = (0x1234, 0x11e8);

/// edu registers (QEMU docs/specs/edu.rst).
mod edu {
    /// Identification: 0xRRrr00edu (major, minor version).
    pub const IDENT: usize = 0x00;
    /// Liveness check: reads back the inverse of what was written.
    pub const LIVENESS: usize = 0x04;
    /// DMA source address (64-bit).
    pub const DMA_SRC: usize = 0x80;
    /// DMA destination address.
    pub const DMA_DST: usize = 0x88;
    /// DMA byte count.
    pub const DMA_CNT: usize = 0x90;
    /// DMA command: bit 0 start (reads 1 while running), bit 1 direction (1: edu to
    /// RAM), bit 2 raise an interrupt when done.
    pub const DMA_CMD: usize = 0x98;
    /// Interrupt raise: the value is ORed into the interrupt status, and the interrupt
    /// (its MSI, when enabled) is raised.
    pub const IRQ_RAISE: usize = 0x60;
    /// Interrupt acknowledge: clears these status bits (and lowers the interrupt).
    pub const IRQ_ACK: usize = 0x64;
    /// The device-side address of edu's 4 KiB DMA buffer.
    pub const BUFFER: u64 = 0x40000;
    /// `DMA_CMD` bits.
    pub const CMD_RUN: u64 = 1;
    /// Direction: from the buffer to RAM.
    pub const CMD_TO_RAM: u64 = 2;
}

/// Bytes each good DMA moves.
const LEN: usize = 64;
/// Bytes each bad DMA tries to write: one 32-bit access. QEMU 10.0.2 splits a DMA that
/// faults into 4-byte accesses and reports a fault record for each (docs/hyp.md, "PCIe
/// and the RISC-V IOMMU", quirks), so a 64-byte write to an unmapped page gives 16
/// records; 4 bytes gives the one record the spec's one transaction would.
const BAD_LEN: usize = 4;

/// The edu device, its BAR 0 mapped.
struct Edu {
    regs: MmioWindow,
    timebase: u64,
}

impl Edu {
    /// Start a DMA and wait (2 s at most: edu starts it 100 ms of virtual time after the
    /// command) until the device reports it finished.
    fn dma(&self, src: u64, dst: u64, len: usize, to_ram: bool) -> Result<(), String> {
        self.regs.write64(edu::DMA_SRC, src);
        self.regs.write64(edu::DMA_DST, dst);
        self.regs.write64(edu::DMA_CNT, len as u64);
        let dir = if to_ram { edu::CMD_TO_RAM } else { 0 };
        self.regs.write64(edu::DMA_CMD, edu::CMD_RUN | dir);
        let start = crate::arch::time();
        while self.regs.read64(edu::DMA_CMD) & edu::CMD_RUN != 0 {
            if crate::arch::time().wrapping_sub(start) > 2 * self.timebase {
                return Err(format!(
                    "edu DMA {src:#x} -> {dst:#x} did not finish in 2 s"
                ));
            }
            core::hint::spin_loop();
        }
        Ok(())
    }
}

/// Run the proof with the edu function `bdf` and guest 0; prints its result.
/// `iommu` is the IOMMU and its phandle (what the bridge's `iommu-map` must name).
pub fn run(
    bus: &mut Bus,
    bdf: Bdf,
    iommu: (&spin::Mutex<Iommu>, u32),
    guest: &Guest,
    timebase: u64,
) {
    match prove(bus, bdf, iommu, guest, timebase) {
        Ok(()) => println!("hyp: dma-test: passed"),
        Err(e) => println!("hyp: dma-test: FAILED: {e}"),
    }
    bus.stop_dma(bdf);
}

/// Step 4: an MSI through the MSI page table. The guest's IMSIC pages (GPA
/// `0x2800_0000`, one per vCPU) get an MSI page table whose entry 1 points at guest file
/// 2 of this hart; edu's MSI (its capability programmed with vCPU 1's page and identity
/// 5, raised through its interrupt-raise register) goes through it, and the proof reads
/// which file took it: the spec's is file 2 (the entry's PPN with the MSI's page
/// offset). Then the context is taken away again. (A DMA write to the page would not
/// do: QEMU refuses MSI-range writes without a requester ID, and edu's DMA has none.)
fn msi_table(
    edu: &Edu,
    mut cfg: crate::arch::pcie::EcamFunction,
    iommu: &spin::Mutex<Iommu>,
    guest: &Guest,
    did: u32,
) -> Result<(), String> {
    use hyp_io::pci::ConfigAccess;
    const IMSIC: u64 = 0x2800_0000;
    const EIID: u32 = 5;
    let gscid = guest.index + 1;
    let hart = crate::arch::hart_local();
    let (Some(file2), Some(file3)) = (
        crate::topology::aia::file_addr(hart, 2),
        crate::topology::aia::file_addr(hart, 3),
    ) else {
        println!("hyp: dma-test: MSI page table: skipped (no guest files 2 and 3 on this hart)");
        return Ok(());
    };
    let mut i = iommu.lock();
    let table = i
        .msi_table(gscid, IMSIC, guest.vcpus.max(2) as u64)
        .map_err(|e| format!("MSI table: {e}"))?;
    i.attach_with_msi(did, guest.hgatp as u64, table)
        .map_err(|e| format!("attach with MSI table: {e}"))?;
    i.write_msi_pte(gscid, IMSIC + 0x1000, MsiPte::flat(file2))
        .map_err(|e| format!("MSI PTE: {e}"))?;
    i.fence().map_err(|e| format!("fence: {e}"))?;
    drop(i);
    let before = (take_eip0(2), take_eip0(3));
    let (caps, _) = hyp_io::pci::capabilities(&cfg);
    let msi = caps
        .iter()
        .find(|c| c.id == hyp_io::pci::cap_id::MSI)
        .map(|c| hyp_io::pci::Msi::read(&cfg, c.offset))
        .ok_or("edu has no MSI capability")?;
    let at = u16::from(msi.offset);
    let data_at = if msi.is_64bit { at + 12 } else { at + 8 };
    cfg.write32(at + 4, (IMSIC + 0x1000) as u32);
    if msi.is_64bit {
        cfg.write32(at + 8, ((IMSIC + 0x1000) >> 32) as u32);
    }
    let d = cfg.read32(data_at & !3);
    cfg.write32(data_at & !3, (d & 0xffff_0000) | EIID);
    let ctrl = cfg.read32(at);
    cfg.write32(at, ctrl | 1 << 16);
    edu.regs.write32(edu::IRQ_RAISE, 1);
    edu.regs.write32(edu::IRQ_ACK, 1);
    cfg.write32(at, ctrl & !(1 << 16));
    let (in2, in3) = (take_eip0(2), take_eip0(3));
    let mut i = iommu.lock();
    let faults = i.poll_faults();
    i.drop_msi_table(gscid);
    i.detach(did).map_err(|e| format!("detach: {e}"))?;
    drop(i);
    println!(
        "hyp: dma-test: MSI page table {:#x} (mask {:#x}, pattern {:#x}), entry 1 -> file 2 at {file2:#x}: edu wrote {EIID} to GPA {:#x}: file 2 eip0 {in2:#x}, file 3 ({file3:#x}) eip0 {in3:#x}, {} faults (before: {before:x?})",
        table.base,
        table.mask,
        table.pattern,
        IMSIC + 0x1000,
        faults.len()
    );
    if in2 != 1 << EIID || in3 != 0 || !faults.is_empty() {
        return Err(format!(
            "MSI through the MSI page table: file 2 eip0 {in2:#x}, file 3 eip0 {in3:#x} (wanted {:#x} in file 2), {} faults",
            1u64 << EIID,
            faults.len()
        ));
    }
    Ok(())
}

fn take_eip0(line: u32) -> u64 {
    crate::topology::aia::take_file_eip0(line).unwrap_or(0)
}

/// The one fault record a bad DMA must produce: `want` cause at `addr` from `did`.
fn expect_one_fault(
    faults: &[FaultRecord],
    want: u16,
    addr: Option<u64>,
    did: u32,
) -> Result<(), String> {
    match faults {
        [r] if r.cause == want && r.did == did && addr.is_none_or(|a| r.iotval == a) => Ok(()),
        _ => Err(format!(
            "expected exactly one fault record with cause {want} did {did:#x}{}, got {}: {faults:?}",
            addr.map(|a| format!(" iotval {a:#x}")).unwrap_or_default(),
            faults.len()
        )),
    }
}

fn prove(
    bus: &mut Bus,
    bdf: Bdf,
    (iommu, phandle): (&spin::Mutex<Iommu>, u32),
    guest: &Guest,
    timebase: u64,
) -> Result<(), String> {
    let did = bus
        .get(bdf)
        .and_then(|f| f.iommu)
        .filter(|(ph, _)| *ph == phandle)
        .map(|(_, did)| did)
        .ok_or_else(|| format!("{bdf}: not behind the IOMMU (iommu-map)"))?;
    let bars = bus.enable(bdf, true).map_err(|e| format!("{e}"))?;
    let &(bar0, cpu) = bars
        .iter()
        .find(|(b, _)| b.index == 0)
        .ok_or("edu has no BAR 0")?;
    // SAFETY: edu's BAR 0, just assigned by hyp from the bridge's memory window and
    // used by nobody else; its DMA goes through the IOMMU context hyp sets below.
    let regs = unsafe { MmioWindow::new(cpu as usize, bar0.size as usize) };
    let edu = Edu { regs, timebase };
    let ident = edu.regs.read32(edu::IDENT);
    edu.regs.write32(edu::LIVENESS, 0x1234_5678);
    let live = edu.regs.read32(edu::LIVENESS);
    if ident & 0xffff != 0x00ed || live != !0x1234_5678 {
        return Err(format!(
            "edu at {cpu:#x} does not answer: ident {ident:#x} liveness {live:#x}"
        ));
    }
    println!("hyp: dma-test: edu {bdf} (device ID {did:#x}) bar0 at {cpu:#x}, ident {ident:#x}");

    // Step 1: through the second stage.
    let ram = guest.cfg.ram_size;
    let gpa_src = GUEST_RAM_BASE + ram / 2;
    let gpa_dst = gpa_src + 0x1000;
    let gpa_unmapped = GUEST_RAM_BASE + ram;
    let off = |gpa: u64| (gpa - GUEST_RAM_BASE) as usize;
    let (mut saved_src, mut saved_dst) = ([0u8; LEN], [0u8; LEN]);
    guest.ram.read(off(gpa_src), &mut saved_src);
    guest.ram.read(off(gpa_dst), &mut saved_dst);
    let mut pattern = [0u8; LEN];
    for (i, b) in pattern.iter_mut().enumerate() {
        *b = b"virq iommu dma "[i % 15] ^ (i as u8 & 0x80);
    }
    guest.ram.write(off(gpa_src), &pattern);
    guest.ram.write(off(gpa_dst), &[0; LEN]);
    let result = (|| {
        let iohgatp = iommu
            .lock()
            .attach(did, guest.hgatp as u64)
            .map_err(|e| format!("attach: {e}"))?;
        println!(
            "hyp: dma-test: device ID {did:#x} attached to guest {} \"{}\": iohgatp {iohgatp:#x} (= its hgatp), IODIR.INVAL_DDT + IOTINVAL.GVMA + IOFENCE.C completed",
            guest.index, guest.cfg.name
        );
        edu.dma(gpa_src, edu::BUFFER, LEN, false)?;
        edu.dma(edu::BUFFER, gpa_dst, LEN, true)?;
        let faults = iommu.lock().poll_faults();
        let mut back = [0u8; LEN];
        guest.ram.read(off(gpa_dst), &mut back);
        if back != pattern || !faults.is_empty() {
            return Err(format!(
                "DMA through the second stage: GPA {gpa_dst:#x} holds {:02x?}…, {} faults",
                &back[..8],
                faults.len()
            ));
        }
        println!(
            "hyp: dma-test: DMA through the second stage landed: GPA {gpa_src:#x} -> edu -> GPA {gpa_dst:#x} (host {:#x}), {LEN} bytes match, 0 faults",
            guest.cfg.ram_host_base + off(gpa_dst) as u64
        );

        // Step 2: a guest-physical page mapped nowhere.
        edu.dma(edu::BUFFER, gpa_unmapped, BAD_LEN, true)?;
        let faults = iommu.lock().poll_faults();
        expect_one_fault(&faults, cause::WRITE_GUEST_PAGE, Some(gpa_unmapped), did)?;
        println!(
            "hyp: dma-test: DMA to unmapped GPA {gpa_unmapped:#x} ({BAD_LEN} bytes): 1 fault record, {}",
            faults[0]
        );

        // Step 3: the context taken away; the page it mapped is refused.
        guest.ram.write(off(gpa_dst), &[0; LEN]);
        iommu
            .lock()
            .detach(did)
            .map_err(|e| format!("detach: {e}"))?;
        edu.dma(edu::BUFFER, gpa_dst, BAD_LEN, true)?;
        let faults = iommu.lock().poll_faults();
        guest.ram.read(off(gpa_dst), &mut back);
        if back != [0; LEN] {
            return Err(format!(
                "DMA after detach landed at GPA {gpa_dst:#x}: the IOMMU used a stale context"
            ));
        }
        expect_one_fault(&faults, cause::DDT_INVALID, None, did)?;
        println!(
            "hyp: dma-test: DMA to GPA {gpa_dst:#x} after detach (context invalid, IODIR.INVAL_DDT, IOFENCE.C): refused, 1 fault record, {}",
            faults[0]
        );
        let cfg = bus.config(bdf).ok_or("edu's configuration space")?;
        msi_table(&edu, cfg, iommu, guest, did)
    })();
    guest.ram.write(off(gpa_src), &saved_src);
    guest.ram.write(off(gpa_dst), &saved_dst);
    result
}
