//! The host's PCIe functions: enumerated once at boot from the host bridge's ECAM window
//! ([`PcieHost`], from the host DTB), each with its header, its BARs (sized by the write-all-ones
//! probe while nobody uses the function), its capabilities (MSI, MSI-X) and its IOMMU
//! device ID (`iommu-map`). Architecture-neutral: the registers are reached through
//! `arch::pcie`, the parsing is `hyp_io::pci`'s (host-tested).
//!
//! [`Bus::enable`] assigns a function's memory BARs from the bridge's 32-bit window (no
//! firmware did: neither OpenSBI nor QEMU's aarch64 ELF loader touches PCI) and turns
//! on its memory decode and, on request, its bus mastering (DMA). Built on riscv64
//! (the RISC-V IOMMU) and aarch64 (the SMMUv3, `arm::smmu`).
use alloc::vec::Vec;

use hyp_io::pci::{
    self, assign_bar, cap_id, capabilities, probe_bars, regs, Bar, BarError, BarKind, Bdf,
    CapListError, Capability, ConfigAccess, FunctionHeader, Msi, Msix,
};

use crate::arch::pcie::{Ecam, EcamFunction};
use crate::println;

/// The PCIe host bridge (`pci-host-ecam-generic`).
#[derive(Clone, Debug)]
pub struct PcieHost {
    /// ECAM window `(base, size)` (`reg`).
    pub ecam: (u64, u64),
    /// `bus-range`.
    pub bus_start: u8,
    /// Last bus of `bus-range`.
    pub bus_end: u8,
    /// The 32-bit memory window of `ranges`: `(PCI address, CPU address, size)`.
    pub mem32: Option<(u64, u64, u64)>,
    /// The 64-bit memory window of `ranges`.
    pub mem64: Option<(u64, u64, u64)>,
    /// `msi-parent` (a phandle).
    pub msi_parent: Option<u32>,
    /// `iommu-map`: which IOMMU and device ID each requester ID has.
    pub iommu_map: Vec<hyp_io::pci::IommuMapEntry>,
    /// `iommu-map-mask` (all ones when absent).
    pub iommu_map_mask: u32,
}

impl PcieHost {
    /// A `pci-host-ecam-generic` node of the host DTB (QEMU `virt` on both ISAs:
    /// docs/hyp.md, "PCIe and the RISC-V IOMMU", docs/gicv4.md §3). `ranges` entries are
    /// `<phys.hi phys.mid phys.lo cpu.hi cpu.lo size.hi size.lo>` (3 PCI address cells,
    /// the root's 2, 2 size cells); `phys.hi` bits 25:24 give the space (2: 32-bit
    /// memory, 3: 64-bit memory). `None` without a `reg`.
    pub fn from_node(n: &fdt::node::FdtNode<'_, '_>) -> Option<PcieHost> {
        let u64_of = |hi: u32, lo: u32| (hi as u64) << 32 | lo as u64;
        let r = n.reg().and_then(|mut r| r.next())?;
        let bus = cells(n.property("bus-range"));
        let (mut mem32, mut mem64) = (None, None);
        for e in cells(n.property("ranges")).chunks_exact(7) {
            let w = (u64_of(e[1], e[2]), u64_of(e[3], e[4]), u64_of(e[5], e[6]));
            match e[0] >> 24 & 3 {
                2 => mem32 = Some(w),
                3 => mem64 = Some(w),
                _ => {}
            }
        }
        Some(PcieHost {
            ecam: (r.starting_address as u64, r.size.unwrap_or(0) as u64),
            bus_start: bus.first().copied().unwrap_or(0) as u8,
            bus_end: bus.get(1).copied().unwrap_or(255).min(255) as u8,
            mem32,
            mem64,
            msi_parent: n
                .property("msi-parent")
                .and_then(|p| p.as_usize())
                .map(|p| p as u32),
            iommu_map: hyp_io::pci::parse_iommu_map(&cells(n.property("iommu-map"))),
            iommu_map_mask: n
                .property("iommu-map-mask")
                .and_then(|p| p.as_usize())
                .map_or(!0, |m| m as u32),
        })
    }
}

/// A property as big-endian 32-bit cells (empty when absent).
fn cells(p: Option<fdt::node::NodeProperty<'_>>) -> Vec<u32> {
    p.map(|p| {
        p.value
            .chunks_exact(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    })
    .unwrap_or_default()
}

/// One function found on the bus.
#[derive(Clone, Debug)]
pub struct Function {
    /// Its address.
    pub bdf: Bdf,
    /// Its header at boot.
    pub header: FunctionHeader,
    /// Implemented BARs (addresses as found; [`Bus::enable`] assigns them).
    pub bars: Vec<Bar>,
    /// BARs the probe could not size.
    pub bar_errors: Vec<BarError>,
    /// The capability list.
    pub caps: Vec<Capability>,
    /// Why the capability walk stopped early, if it did.
    pub cap_error: Option<CapListError>,
    /// Its MSI capability.
    pub msi: Option<Msi>,
    /// Its MSI-X capability.
    pub msix: Option<Msix>,
    /// `(IOMMU phandle, device ID)` from the bridge's `iommu-map`; `None`: its DMA
    /// reaches memory untranslated.
    pub iommu: Option<(u32, u32)>,
}

/// Why a function could not be enabled.
#[derive(Clone, Copy, Debug)]
pub enum PciError {
    /// No such function was enumerated.
    NoFunction(Bdf),
    /// The bridge has no 32-bit memory window, or it is full.
    NoWindow(Bdf, u8),
}

impl core::fmt::Display for PciError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PciError::NoFunction(b) => write!(f, "{b}: no such function"),
            PciError::NoWindow(b, i) => {
                write!(f, "{b}: bar{i}: no room in the bridge's 32-bit window")
            }
        }
    }
}

/// The host bridge and what is behind it.
pub struct Bus {
    ecam: Ecam,
    host: PcieHost,
    /// Every function found, in bus/device/function order.
    pub functions: Vec<Function>,
    /// Next free PCI address of the 32-bit memory window.
    next_mem32: u64,
}

impl Bus {
    /// Enumerate every bus of `bus-range` the window reaches: function 0 of each device,
    /// functions 1..8 of multi-function devices. Bridges are listed, not configured
    /// (nothing behind an unconfigured bridge is reachable; QEMU `virt` has none
    /// unless asked).
    pub fn enumerate(host: &PcieHost) -> Bus {
        let ecam = Ecam::new(
            host.ecam.0 as usize,
            host.ecam.1 as usize,
            host.bus_start,
            host.bus_end,
        );
        let mut functions = Vec::new();
        for bus in host.bus_start..=ecam.last_bus() {
            for dev in 0..32 {
                for func in 0..8 {
                    let Some(bdf) = Bdf::new(bus, dev, func) else {
                        continue;
                    };
                    let Some(mut cfg) = ecam.function(bdf) else {
                        continue;
                    };
                    let Some(header) = FunctionHeader::read(&cfg) else {
                        if func == 0 {
                            break;
                        }
                        continue;
                    };
                    functions.push(probe(&mut cfg, bdf, header, host));
                    if func == 0 && !header.multi_function {
                        break;
                    }
                }
            }
        }
        Bus {
            ecam,
            next_mem32: host.mem32.map_or(0, |w| w.0),
            host: host.clone(),
            functions,
        }
    }

    /// Print one line per function.
    pub fn print(&self) {
        println!(
            "hyp: pci: host bridge ECAM {:#x}+{:#x} buses {}..={}, {} functions, mem32 {:x?}, mem64 {:x?}, msi-parent {:?}",
            self.host.ecam.0,
            self.host.ecam.1,
            self.host.bus_start,
            self.ecam.last_bus(),
            self.functions.len(),
            self.host.mem32,
            self.host.mem64,
            self.host.msi_parent
        );
        for f in &self.functions {
            let h = &f.header;
            let mut line = alloc::format!(
                "hyp: pci {} {:04x}:{:04x} class {:06x} ({}) rev {:#x} type {}",
                f.bdf,
                h.vendor,
                h.device,
                h.class,
                h.class_name(),
                h.revision,
                h.header_type
            );
            if let Some((_, did)) = f.iommu {
                line += &alloc::format!(" iommu-did {did:#x}");
            }
            for b in &f.bars {
                line += &alloc::format!(" {b}");
            }
            for e in &f.bar_errors {
                line += &alloc::format!(" bar-error {e:?}");
            }
            if !f.caps.is_empty() {
                line += " caps";
                for c in &f.caps {
                    line += &alloc::format!(" {}@{:#x}", c.name(), c.offset);
                }
            }
            if let Some(e) = f.cap_error {
                line += &alloc::format!(" cap-list-error {e:?}");
            }
            if let Some(m) = f.msi {
                line += &alloc::format!(" msi(vectors {}, 64-bit {})", m.vectors, m.is_64bit);
            }
            if let Some(x) = f.msix {
                line += &alloc::format!(
                    " msix(entries {}, table bar{}+{:#x}, pba bar{}+{:#x})",
                    x.table_size,
                    x.table_bir,
                    x.table_offset,
                    x.pba_bir,
                    x.pba_offset
                );
            }
            println!("{line}");
        }
    }

    /// The first function with this vendor and device ID.
    pub fn find(&self, vendor: u16, device: u16) -> Option<&Function> {
        self.functions
            .iter()
            .find(|f| f.header.vendor == vendor && f.header.device == device)
    }

    /// The function at `bdf`.
    pub fn get(&self, bdf: Bdf) -> Option<&Function> {
        self.functions.iter().find(|f| f.bdf == bdf)
    }

    /// Give `bdf`'s memory BARs naturally aligned addresses in the bridge's 32-bit
    /// window and turn on its memory decode (and bus mastering if `dma`). Returns each
    /// memory BAR with the CPU address it now decodes; I/O BARs stay unassigned (I/O
    /// decode stays off).
    pub fn enable(&mut self, bdf: Bdf, dma: bool) -> Result<Vec<(Bar, u64)>, PciError> {
        let f = self.get(bdf).ok_or(PciError::NoFunction(bdf))?.clone();
        let mut cfg = self.ecam.function(bdf).ok_or(PciError::NoFunction(bdf))?;
        let (pci_base, cpu_base, size) = self.host.mem32.ok_or(PciError::NoWindow(bdf, 0))?;
        let cmd = cfg.read16(regs::COMMAND) & !(regs::CMD_MEMORY | regs::CMD_BUS_MASTER);
        cfg.write_command(cmd);
        let mut out = Vec::new();
        for bar in &f.bars {
            if bar.kind == BarKind::Io {
                // I/O space stays off (hyp never sets CMD_IO): the BAR is left
                // unassigned, and a guest's view of the function does not have it.
                continue;
            }
            // At least a page each: a BAR given to a guest is mapped in whole pages,
            // which must not reach another function's registers.
            let span = bar.size.max(4096);
            let addr = self.next_mem32.next_multiple_of(span);
            if addr + span > pci_base + size || !assign_bar(&mut cfg, bar, addr) {
                return Err(PciError::NoWindow(bdf, bar.index));
            }
            self.next_mem32 = addr + span;
            out.push((Bar { base: addr, ..*bar }, addr - pci_base + cpu_base));
        }
        let mut cmd = cmd | regs::CMD_MEMORY | regs::CMD_INTX_DISABLE;
        if dma {
            cmd |= regs::CMD_BUS_MASTER;
        }
        cfg.write_command(cmd);
        Ok(out)
    }

    /// `bdf`'s configuration space.
    pub fn config(&self, bdf: Bdf) -> Option<EcamFunction> {
        self.ecam.function(bdf)
    }

    /// Turn off `bdf`'s bus mastering (no more DMA or MSIs from it).
    pub fn stop_dma(&mut self, bdf: Bdf) {
        if let Some(mut cfg) = self.ecam.function(bdf) {
            let cmd = cfg.read16(regs::COMMAND);
            cfg.write_command(cmd & !regs::CMD_BUS_MASTER);
        }
    }
}

/// Everything about one function that can be learnt without using it.
fn probe(cfg: &mut EcamFunction, bdf: Bdf, header: FunctionHeader, host: &PcieHost) -> Function {
    let (bars, bar_errors) = probe_bars(cfg, header.bar_count());
    let (caps, cap_error) = capabilities(cfg);
    let msi = caps
        .iter()
        .find(|c| c.id == cap_id::MSI)
        .map(|c| Msi::read(cfg, c.offset));
    let msix = caps
        .iter()
        .find(|c| c.id == cap_id::MSIX)
        .map(|c| Msix::read(cfg, c.offset));
    Function {
        bdf,
        header,
        bars,
        bar_errors,
        caps,
        cap_error,
        msi,
        msix,
        iommu: pci::map_rid(&host.iommu_map, bdf.rid(), host.iommu_map_mask),
    }
}
