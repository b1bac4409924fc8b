//! PCI configuration space (PCI Local Bus Specification 3.0, chapter 6; PCI Express Base
//! Specification 6.0, 7.2.2 ECAM and 7.5.1 the type 0/1 headers; 7.7.1–7.7.2 MSI and
//! MSI-X).
//!
//! hyp reads a function's registers through [`ConfigAccess`] (32-bit, aligned: what
//! every ECAM implementation supports); [`FunctionHeader`], [`probe_bars`] and
//! [`capabilities`] are the logic, run here against a model of a function.
use alloc::vec::Vec;
use core::fmt;

/// Type-0/1 header offsets (PCIe 6.0 7.5.1.1).
pub mod regs {
    /// Vendor ID (16 bits) and Device ID (16 bits) at 0x02.
    pub const VENDOR_ID: u16 = 0x00;
    /// Command (16 bits) and Status (16 bits) at 0x06.
    pub const COMMAND: u16 = 0x04;
    /// Revision ID (8 bits), then the class code (24 bits: prog-if, subclass, base).
    pub const CLASS_REV: u16 = 0x08;
    /// Cache line size, latency timer, header type (at 0x0e), BIST.
    pub const HEADER_WORD: u16 = 0x0c;
    /// The first Base Address Register.
    pub const BAR0: u16 = 0x10;
    /// Type 1: primary, secondary (0x19) and subordinate (0x1a) bus numbers.
    pub const BUS_NUMBERS: u16 = 0x18;
    /// Capabilities pointer (8 bits).
    pub const CAP_PTR: u16 = 0x34;

    /// Command: I/O Space Enable.
    pub const CMD_IO: u16 = 1 << 0;
    /// Command: Memory Space Enable.
    pub const CMD_MEMORY: u16 = 1 << 1;
    /// Command: Bus Master Enable (the function may issue DMA and MSIs).
    pub const CMD_BUS_MASTER: u16 = 1 << 2;
    /// Command: Interrupt Disable (INTx).
    pub const CMD_INTX_DISABLE: u16 = 1 << 10;
    /// Status: Capabilities List.
    pub const STATUS_CAP_LIST: u16 = 1 << 4;
}

/// Capability IDs (PCI Code and ID Assignment Specification 1.11, chapter 2).
pub mod cap_id {
    /// PCI Power Management.
    pub const POWER_MANAGEMENT: u8 = 0x01;
    /// MSI.
    pub const MSI: u8 = 0x05;
    /// Vendor specific.
    pub const VENDOR: u8 = 0x09;
    /// PCI Express.
    pub const PCI_EXPRESS: u8 = 0x10;
    /// MSI-X.
    pub const MSIX: u8 = 0x11;
}

/// A function's address: bus, device (0..32), function (0..8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bdf {
    /// Bus number.
    pub bus: u8,
    /// Device number, 0..32.
    pub dev: u8,
    /// Function number, 0..8.
    pub func: u8,
}

impl Bdf {
    /// The function `bus:dev.func`, if `dev` and `func` are in range.
    pub fn new(bus: u8, dev: u8, func: u8) -> Option<Bdf> {
        (dev < 32 && func < 8).then_some(Bdf { bus, dev, func })
    }

    /// Its requester ID (`bus << 8 | dev << 3 | func`), the number IOMMUs and
    /// `iommu-map`/`msi-map` use.
    pub fn rid(self) -> u16 {
        (self.bus as u16) << 8 | (self.dev as u16) << 3 | self.func as u16
    }

    /// The function with requester ID `rid`.
    pub fn from_rid(rid: u16) -> Bdf {
        Bdf {
            bus: (rid >> 8) as u8,
            dev: ((rid >> 3) & 0x1f) as u8,
            func: (rid & 7) as u8,
        }
    }

    /// Offset of its 4 KiB configuration space in an ECAM window whose first bus is
    /// `bus_start` (PCIe 6.0 7.2.2: bus at bit 20, device at 15, function at 12); `None`
    /// below the window's first bus.
    pub fn ecam_offset(self, bus_start: u8) -> Option<usize> {
        let bus = self.bus.checked_sub(bus_start)? as usize;
        Some(bus << 20 | (self.dev as usize) << 15 | (self.func as usize) << 12)
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.dev, self.func)
    }
}

/// 32-bit access to one function's configuration space. `off` is a multiple of 4
/// below 4096; an implementation ignores any other (and reads it as all ones).
pub trait ConfigAccess {
    /// Read the register at `off`.
    fn read32(&self, off: u16) -> u32;
    /// Write the register at `off`.
    fn write32(&mut self, off: u16, v: u32);

    /// The 16-bit field at `off` (2-byte aligned).
    fn read16(&self, off: u16) -> u16 {
        (self.read32(off & !3) >> (8 * (off & 2))) as u16
    }

    /// The byte at `off`.
    fn read8(&self, off: u16) -> u8 {
        (self.read32(off & !3) >> (8 * (off & 3))) as u8
    }

    /// Write the Command register (the Status half is written with zeros: its bits
    /// are read-only or write-one-to-clear).
    fn write_command(&mut self, cmd: u16) {
        self.write32(regs::COMMAND, cmd as u32);
    }
}

/// What every function's header says (PCIe 6.0 7.5.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionHeader {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Command register.
    pub command: u16,
    /// Status register.
    pub status: u16,
    /// Revision ID.
    pub revision: u8,
    /// Class code: base class << 16 | subclass << 8 | programming interface.
    pub class: u32,
    /// Header layout (bits 6:0 of Header Type): 0 endpoint, 1 PCI-PCI bridge.
    pub header_type: u8,
    /// Header Type bit 7: the device has functions 1..8.
    pub multi_function: bool,
}

impl FunctionHeader {
    /// The header, or `None` when no function answers (Vendor ID all ones).
    pub fn read(cfg: &impl ConfigAccess) -> Option<FunctionHeader> {
        let id = cfg.read32(regs::VENDOR_ID);
        let vendor = id as u16;
        if vendor == 0xffff || vendor == 0 {
            return None;
        }
        let cmd = cfg.read32(regs::COMMAND);
        let cr = cfg.read32(regs::CLASS_REV);
        let ht = cfg.read8(regs::HEADER_WORD + 2);
        Some(FunctionHeader {
            vendor,
            device: (id >> 16) as u16,
            command: cmd as u16,
            status: (cmd >> 16) as u16,
            revision: cr as u8,
            class: cr >> 8,
            header_type: ht & 0x7f,
            multi_function: ht & 0x80 != 0,
        })
    }

    /// Number of BARs of this header layout (6 for type 0, 2 for type 1, else 0).
    pub fn bar_count(&self) -> usize {
        match self.header_type {
            0 => 6,
            1 => 2,
            _ => 0,
        }
    }

    /// A short name of the class code.
    pub fn class_name(&self) -> &'static str {
        class_name(self.class)
    }
}

/// A short name for a class code (base class << 16 | subclass << 8 | prog-if).
pub fn class_name(class: u32) -> &'static str {
    match (class >> 16, (class >> 8) & 0xff) {
        (0x00, _) => "unclassified",
        (0x01, _) => "storage",
        (0x02, 0x00) => "ethernet",
        (0x02, _) => "network",
        (0x03, _) => "display",
        (0x06, 0x00) => "host bridge",
        (0x06, 0x04) => "pci bridge",
        (0x06, _) => "bridge",
        (0x08, 0x06) => "iommu",
        (0x08, _) => "system peripheral",
        (0x0c, 0x03) => "usb",
        (0xff, _) => "other",
        _ => "device",
    }
}

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// I/O space.
    Io,
    /// 32-bit memory space.
    Mem32 {
        /// Prefetchable.
        prefetchable: bool,
    },
    /// 64-bit memory space (this BAR and the next one).
    Mem64 {
        /// Prefetchable.
        prefetchable: bool,
    },
}

/// One implemented BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Its index (0..6); a 64-bit BAR also uses `index + 1`.
    pub index: u8,
    /// What it decodes.
    pub kind: BarKind,
    /// The address it holds now (PCI bus address; 0 when unassigned).
    pub base: u64,
    /// Its size in bytes (a power of two).
    pub size: u64,
}

impl Bar {
    /// Config-space offset of its (low) register.
    pub fn reg(&self) -> u16 {
        regs::BAR0 + 4 * self.index as u16
    }
}

impl fmt::Display for Bar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            BarKind::Io => "io",
            BarKind::Mem32 {
                prefetchable: false,
            } => "mem32",
            BarKind::Mem32 { prefetchable: true } => "mem32-pref",
            BarKind::Mem64 {
                prefetchable: false,
            } => "mem64",
            BarKind::Mem64 { prefetchable: true } => "mem64-pref",
        };
        write!(
            f,
            "bar{} {kind} {:#x}+{:#x}",
            self.index, self.base, self.size
        )
    }
}

/// Why the BAR probe gave up on a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarError {
    /// A 64-bit BAR in the last slot (it has no upper half).
    Mem64InLastSlot(u8),
    /// Reserved memory type (bits 2:1 = 01 or 11).
    ReservedType(u8),
    /// The read-back mask is not a contiguous run of ones from the top: not a size.
    BadMask(u8),
}

/// Size from a read-back mask (the address bits that held the ones): the lowest set
/// bit, if the mask is ones from there to the top.
fn size_of_mask(mask: u64) -> Option<u64> {
    if mask == 0 {
        return None;
    }
    let size = mask & mask.wrapping_neg();
    // Every bit above the lowest one must be set too (`!(size - 1)`).
    (mask == !(size - 1)).then_some(size)
}

/// Size every BAR with the standard probe (PCI 3.0 6.2.5.1): with the function's
/// memory and I/O decode off, write all ones to the BAR, read back which address bits
/// stuck, restore the original value; then restore the Command register. A function
/// nobody drives yet is the only safe subject (its decode is off for the duration).
///
/// Returns the implemented BARs (unimplemented ones read back 0), and the registers the
/// probe could not make sense of.
pub fn probe_bars(cfg: &mut impl ConfigAccess, count: usize) -> (Vec<Bar>, Vec<BarError>) {
    let (mut bars, mut errs) = (Vec::new(), Vec::new());
    let cmd = cfg.read16(regs::COMMAND);
    cfg.write_command(cmd & !(regs::CMD_MEMORY | regs::CMD_IO));
    let mut i = 0;
    while i < count.min(6) {
        let reg = regs::BAR0 + 4 * i as u16;
        let orig = cfg.read32(reg);
        let idx = i as u8;
        if orig & 1 == 1 {
            cfg.write32(reg, !0);
            let back = cfg.read32(reg);
            cfg.write32(reg, orig);
            let mut mask = back & !3;
            if mask != 0 && mask & 0xffff_0000 == 0 {
                // I/O BARs may implement only 16 address bits.
                mask |= 0xffff_0000;
            }
            match (mask != 0)
                .then(|| size_of_mask(mask as u64 | 0xffff_ffff_0000_0000))
                .flatten()
            {
                Some(size) => bars.push(Bar {
                    index: idx,
                    kind: BarKind::Io,
                    base: (orig & !3) as u64,
                    size,
                }),
                None if mask == 0 => {}
                None => errs.push(BarError::BadMask(idx)),
            }
            i += 1;
            continue;
        }
        let prefetchable = orig & 8 != 0;
        match (orig >> 1) & 3 {
            0 => {
                cfg.write32(reg, !0);
                let back = cfg.read32(reg);
                cfg.write32(reg, orig);
                let mask = back & !0xf;
                match (mask != 0)
                    .then(|| size_of_mask(mask as u64 | 0xffff_ffff_0000_0000))
                    .flatten()
                {
                    Some(size) => bars.push(Bar {
                        index: idx,
                        kind: BarKind::Mem32 { prefetchable },
                        base: (orig & !0xf) as u64,
                        size,
                    }),
                    None if mask == 0 => {}
                    None => errs.push(BarError::BadMask(idx)),
                }
                i += 1;
            }
            2 => {
                if i + 1 >= count.min(6) {
                    errs.push(BarError::Mem64InLastSlot(idx));
                    break;
                }
                let hi_reg = reg + 4;
                let orig_hi = cfg.read32(hi_reg);
                cfg.write32(reg, !0);
                cfg.write32(hi_reg, !0);
                let (back, back_hi) = (cfg.read32(reg), cfg.read32(hi_reg));
                cfg.write32(reg, orig);
                cfg.write32(hi_reg, orig_hi);
                let mask = (back_hi as u64) << 32 | (back & !0xf) as u64;
                match size_of_mask(mask) {
                    Some(size) => bars.push(Bar {
                        index: idx,
                        kind: BarKind::Mem64 { prefetchable },
                        base: (orig_hi as u64) << 32 | (orig & !0xf) as u64,
                        size,
                    }),
                    None if mask == 0 => {}
                    None => errs.push(BarError::BadMask(idx)),
                }
                i += 2;
            }
            _ => {
                errs.push(BarError::ReservedType(idx));
                i += 1;
            }
        }
    }
    cfg.write_command(cmd);
    (bars, errs)
}

/// Point a memory BAR at bus address `addr` (its size alignment is the caller's
/// business); refused for an I/O BAR or an address a 32-bit BAR cannot hold.
pub fn assign_bar(cfg: &mut impl ConfigAccess, bar: &Bar, addr: u64) -> bool {
    match bar.kind {
        BarKind::Io => false,
        BarKind::Mem32 { .. } => {
            if addr > u32::MAX as u64 {
                return false;
            }
            cfg.write32(bar.reg(), addr as u32);
            true
        }
        BarKind::Mem64 { .. } => {
            cfg.write32(bar.reg(), addr as u32);
            cfg.write32(bar.reg() + 4, (addr >> 32) as u32);
            true
        }
    }
}

/// One entry of the capability list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// Capability ID ([`cap_id`]).
    pub id: u8,
    /// Its offset in configuration space.
    pub offset: u8,
}

impl Capability {
    /// A short name of the ID.
    pub fn name(&self) -> &'static str {
        match self.id {
            cap_id::POWER_MANAGEMENT => "pm",
            cap_id::MSI => "msi",
            cap_id::VENDOR => "vendor",
            cap_id::PCI_EXPRESS => "pcie",
            cap_id::MSIX => "msix",
            _ => "cap",
        }
    }
}

/// Why a capability-list walk stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapListError {
    /// A pointer into the header (below 0x40).
    PointerIntoHeader(u8),
    /// A pointer to an entry already seen: the list loops.
    Loop(u8),
}

/// The capability list (PCI 3.0 6.7): from the Capabilities Pointer, each entry's ID and
/// next pointer (bits 1:0 of pointers are reserved and masked). A damaged list (a
/// pointer into the header, a loop) ends the walk with what was found so far and the
/// error; at most 48 entries fit in the 192 bytes after the header.
pub fn capabilities(cfg: &impl ConfigAccess) -> (Vec<Capability>, Option<CapListError>) {
    let mut caps: Vec<Capability> = Vec::new();
    if cfg.read16(regs::COMMAND + 2) & regs::STATUS_CAP_LIST == 0 {
        return (caps, None);
    }
    let mut ptr = cfg.read8(regs::CAP_PTR) & 0xfc;
    while ptr != 0 {
        if ptr < 0x40 {
            return (caps, Some(CapListError::PointerIntoHeader(ptr)));
        }
        if caps.iter().any(|c| c.offset == ptr) || caps.len() >= 48 {
            return (caps, Some(CapListError::Loop(ptr)));
        }
        let word = cfg.read32(ptr as u16);
        caps.push(Capability {
            id: word as u8,
            offset: ptr,
        });
        ptr = (word >> 8) as u8 & 0xfc;
    }
    (caps, None)
}

/// The MSI capability (PCIe 6.0 7.7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msi {
    /// Its offset.
    pub offset: u8,
    /// Vectors the function can use (Multiple Message Capable: 1, 2, 4 … 32).
    pub vectors: u8,
    /// 64-bit message address.
    pub is_64bit: bool,
    /// Per-vector masking.
    pub per_vector_mask: bool,
    /// MSI Enable.
    pub enabled: bool,
}

impl Msi {
    /// Decode the MSI capability at `offset`.
    pub fn read(cfg: &impl ConfigAccess, offset: u8) -> Msi {
        let ctrl = cfg.read16(offset as u16 + 2);
        Msi {
            offset,
            vectors: 1 << ((ctrl >> 1) & 7).min(5),
            is_64bit: ctrl & (1 << 7) != 0,
            per_vector_mask: ctrl & (1 << 8) != 0,
            enabled: ctrl & 1 != 0,
        }
    }
}

/// The MSI-X capability (PCIe 6.0 7.7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msix {
    /// Its offset.
    pub offset: u8,
    /// Table entries (Table Size + 1, up to 2048).
    pub table_size: u16,
    /// BAR holding the table.
    pub table_bir: u8,
    /// Offset of the table in that BAR (8-byte aligned).
    pub table_offset: u32,
    /// BAR holding the Pending Bit Array.
    pub pba_bir: u8,
    /// Offset of the PBA in that BAR.
    pub pba_offset: u32,
    /// MSI-X Enable.
    pub enabled: bool,
    /// Function Mask.
    pub function_masked: bool,
}

impl Msix {
    /// Decode the MSI-X capability at `offset`.
    pub fn read(cfg: &impl ConfigAccess, offset: u8) -> Msix {
        let ctrl = cfg.read16(offset as u16 + 2);
        let table = cfg.read32(offset as u16 + 4);
        let pba = cfg.read32(offset as u16 + 8);
        Msix {
            offset,
            table_size: (ctrl & 0x7ff) + 1,
            table_bir: (table & 7) as u8,
            table_offset: table & !7,
            pba_bir: (pba & 7) as u8,
            pba_offset: pba & !7,
            enabled: ctrl & (1 << 15) != 0,
            function_masked: ctrl & (1 << 14) != 0,
        }
    }

    /// Bytes of its table (16 per entry).
    pub fn table_bytes(&self) -> u32 {
        16 * self.table_size as u32
    }
}

/// One entry of a host bridge's `iommu-map` (Linux
/// Documentation/devicetree/bindings/pci/pci-iommu.txt): requester IDs
/// `rid_base .. rid_base + length` reach the IOMMU `iommu` as device IDs from
/// `iommu_base`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IommuMapEntry {
    /// First requester ID.
    pub rid_base: u32,
    /// The IOMMU's phandle.
    pub iommu: u32,
    /// Device ID of `rid_base`.
    pub iommu_base: u32,
    /// Requester IDs covered (0: the entry covers nothing).
    pub length: u32,
}

/// Parse `iommu-map` cells (`<rid-base iommu-phandle iommu-base length>` each); a
/// trailing partial entry is dropped.
pub fn parse_iommu_map(cells: &[u32]) -> Vec<IommuMapEntry> {
    cells
        .chunks_exact(4)
        .map(|c| IommuMapEntry {
            rid_base: c[0],
            iommu: c[1],
            iommu_base: c[2],
            length: c[3],
        })
        .collect()
}

/// The IOMMU phandle and device ID of requester `rid` (after `iommu-map-mask`), from
/// the first entry that covers it; `None` if none does (its DMA bypasses every IOMMU).
pub fn map_rid(map: &[IommuMapEntry], rid: u16, mask: u32) -> Option<(u32, u32)> {
    let rid = rid as u32 & mask;
    map.iter().find_map(|e| {
        let off = rid.checked_sub(e.rid_base)?;
        (off < e.length).then(|| (e.iommu, e.iommu_base.wrapping_add(off)))
    })
}

pub mod virt;

#[cfg(test)]
mod tests;
