//! A passed-through function as its guest sees it: the configuration space of one host
//! function, filtered.
//!
//! The guest reads the function's identity, status and capability list from the real
//! function, but never reaches anything that could let it escape or disturb another
//! guest:
//! - **BARs are virtual.** Each register keeps what the guest wrote, masked to the
//!   BAR's size with its read-only flag bits (so the sizing probe answers as hardware
//!   does), and is never written to the device: the host BARs stay where hyp placed
//!   them, which is where hyp maps them in the guest's G-stage.
//! - **Command:** only Memory Space and Bus Master reach the device; INTx stays
//!   disabled (the guest gets MSIs only) and I/O space stays off.
//! - **Capabilities:** read as they are; writes reach only the MSI capability (its
//!   control, address, data and mask words) and MSI-X's Message Control. The MSI address
//!   a guest writes is a guest-physical address: the IOMMU translates it (docs/hyp.md,
//!   "Passing a PCIe function to a guest").
//! - Expansion ROM, INTx line/pin, bridge fields, extended configuration space: read as
//!   zero (an empty extended capability list), writes dropped.
//!
//! Accesses are 1, 2 or 4 bytes, naturally aligned; anything else reads all ones and
//! writes nothing, like a master abort.
use super::{regs, Bar, BarKind, Capability, ConfigAccess, Msi, Msix};

/// One virtual BAR register (a 64-bit BAR is two: the low one with the flags, the
/// high one with all bits writable up to the size).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct VirtBar {
    /// Bits the guest may change.
    writable: u32,
    /// Read-only low bits (type, prefetchable).
    flags: u32,
    /// The address bits the guest last wrote.
    value: u32,
}

impl VirtBar {
    fn read(&self) -> u32 {
        (self.value & self.writable) | self.flags
    }
}

/// What a guest write did that the caller must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing beyond the register.
    None,
    /// A BAR register changed: the guest now says BAR `index` is at `base` (64-bit
    /// BARs: once both halves are written, each write reports the whole address).
    BarMoved {
        /// BAR index.
        index: u8,
        /// The address the guest's registers now hold.
        base: u64,
    },
    /// A write the filter dropped (counted by the caller).
    Dropped,
}

/// The guest's view of one function.
#[derive(Clone, Debug)]
pub struct VirtFunction {
    bars: [VirtBar; 6],
    /// `(index, kind, size)` of each implemented BAR.
    layout: [Option<(BarKind, u64)>; 6],
    msi: Option<Msi>,
    msix: Option<Msix>,
    /// The guest's Command register (what it wrote; the device gets the filtered part).
    command: u16,
    /// Interrupt Line (scratch for the guest's driver; no INTx is routed).
    line: u8,
}

/// Length in bytes of the MSI capability (with the mask and pending words if it has
/// per-vector masking).
fn msi_len(m: &Msi) -> u16 {
    match (m.is_64bit, m.per_vector_mask) {
        (false, false) => 10,
        (true, false) => 14,
        (false, true) => 20,
        (true, true) => 24,
    }
}

impl VirtFunction {
    /// The view of a function with these BARs (their `base` is the address the guest
    /// first sees: where hyp maps them) and capabilities.
    pub fn new(bars: &[Bar], caps: &[Capability], cfg: &impl ConfigAccess) -> VirtFunction {
        let mut v = VirtFunction {
            bars: [VirtBar::default(); 6],
            layout: [None; 6],
            msi: caps
                .iter()
                .find(|c| c.id == super::cap_id::MSI)
                .map(|c| Msi::read(cfg, c.offset)),
            msix: caps
                .iter()
                .find(|c| c.id == super::cap_id::MSIX)
                .map(|c| Msix::read(cfg, c.offset)),
            command: 0,
            line: 0,
        };
        for b in bars {
            let i = b.index as usize;
            if i >= 6 {
                continue;
            }
            v.layout[i] = Some((b.kind, b.size));
            let mask = !(b.size - 1);
            let (flags, low_mask) = match b.kind {
                BarKind::Io => (1, mask as u32 & !3),
                BarKind::Mem32 { prefetchable } => ((prefetchable as u32) << 3, mask as u32 & !0xf),
                BarKind::Mem64 { prefetchable } => {
                    (0b100 | (prefetchable as u32) << 3, mask as u32 & !0xf)
                }
            };
            v.bars[i] = VirtBar {
                writable: low_mask,
                flags,
                value: b.base as u32,
            };
            if matches!(b.kind, BarKind::Mem64 { .. }) && i + 1 < 6 {
                v.bars[i + 1] = VirtBar {
                    writable: (mask >> 32) as u32,
                    flags: 0,
                    value: (b.base >> 32) as u32,
                };
            }
        }
        v
    }

    /// The address BAR `index` holds in the guest's registers.
    pub fn bar_base(&self, index: u8) -> Option<u64> {
        let i = index as usize;
        let (kind, _) = (*self.layout.get(i)?)?;
        let low = u64::from(self.bars[i].read() & self.bars[i].writable);
        Some(match kind {
            BarKind::Mem64 { .. } if i + 1 < 6 => low | u64::from(self.bars[i + 1].read()) << 32,
            _ => low,
        })
    }

    /// The guest's Command register.
    pub fn command(&self) -> u16 {
        self.command
    }

    /// The byte lanes (bits 0..4) of the register at `reg` (4-byte aligned) that lie
    /// in a capability field the guest may write: the MSI capability from its Message
    /// Control to its end, MSI-X's Message Control.
    fn writable_lanes(&self, reg: u16) -> u32 {
        let mut ranges: [(u16, u16); 2] = [(0, 0); 2];
        if let Some(m) = &self.msi {
            let base = u16::from(m.offset);
            ranges[0] = (base + 2, base + msi_len(m));
        }
        if let Some(x) = &self.msix {
            let base = u16::from(x.offset);
            ranges[1] = (base + 2, base + 4);
        }
        (0..4u16)
            .filter(|b| ranges.iter().any(|&(s, e)| (s..e).contains(&(reg + b))))
            .fold(0, |m, b| m | 1 << b)
    }

    /// The 32-bit register at `off & !3` as the guest sees it.
    fn read_dword(&self, host: &impl ConfigAccess, off: u16) -> u32 {
        match off {
            0x00 | 0x08 | 0x2c => host.read32(off),
            // Header type without the multi-function bit: the guest sees one function.
            0x0c => host.read32(off) & !(1 << 23),
            0x04 => (host.read32(off) & 0xffff_0000) | u32::from(self.command),
            0x10..=0x27 => {
                let i = usize::from((off - regs::BAR0) / 4);
                self.bars[i].read()
            }
            0x34 => host.read32(off) & 0xff,
            // Interrupt Pin 0: no INTx.
            0x3c => u32::from(self.line),
            0x40..=0xff => host.read32(off),
            _ => 0,
        }
    }

    /// A guest read of `size` (1, 2, 4) bytes at `off`.
    pub fn read(&self, host: &impl ConfigAccess, off: u16, size: u8) -> u32 {
        if !matches!(size, 1 | 2 | 4) || off % u16::from(size) != 0 || off >= 0x1000 {
            return !0;
        }
        let v = self.read_dword(host, off & !3) >> (8 * (off & 3));
        match size {
            4 => v,
            n => v & ((1u32 << (8 * n)) - 1),
        }
    }

    /// A guest write of `size` (1, 2, 4) bytes of `value` at `off`.
    pub fn write(
        &mut self,
        host: &mut impl ConfigAccess,
        off: u16,
        size: u8,
        value: u32,
    ) -> Effect {
        if !matches!(size, 1 | 2 | 4) || off % u16::from(size) != 0 || off >= 0x1000 {
            return Effect::Dropped;
        }
        let shift = 8 * u32::from(off & 3);
        let lanes = if size == 4 {
            !0u32
        } else {
            ((1u32 << (8 * u32::from(size))) - 1) << shift
        };
        let merge = |old: u32| (old & !lanes) | ((value << shift) & lanes);
        let reg = off & !3;
        match reg {
            0x04 => {
                if lanes & 0xffff == 0 {
                    // Status only: its error bits are write-one-to-clear on the device,
                    // which the guest does not need to clear.
                    return Effect::None;
                }
                self.command = merge(u32::from(self.command)) as u16;
                let pass = self.command & (regs::CMD_MEMORY | regs::CMD_BUS_MASTER);
                host.write_command(pass | regs::CMD_INTX_DISABLE);
                Effect::None
            }
            0x10..=0x27 => {
                let i = usize::from((reg - regs::BAR0) / 4);
                let b = &mut self.bars[i];
                if b.writable == 0 {
                    return Effect::Dropped;
                }
                b.value = merge(b.read()) & b.writable;
                // The BAR this register belongs to (the low half of a 64-bit BAR).
                let index = if self.layout[i].is_none() && i > 0 {
                    i - 1
                } else {
                    i
                };
                match self.bar_base(index as u8) {
                    Some(base) => Effect::BarMoved {
                        index: index as u8,
                        base,
                    },
                    None => Effect::None,
                }
            }
            0x3c => {
                if lanes & 0xff != 0 {
                    self.line = merge(u32::from(self.line)) as u8;
                }
                Effect::None
            }
            _ => {
                // Only the bytes of writable capability fields (a dword write at the
                // MSI capability's start changes its Message Control, not its ID).
                let allowed = self.writable_lanes(reg);
                let mask = (0..4)
                    .filter(|b| allowed & (1 << b) != 0)
                    .fold(0u32, |m, b| m | 0xff << (8 * b));
                if lanes & mask == 0 {
                    return Effect::Dropped;
                }
                let old = host.read32(reg);
                let keep = !(lanes & mask);
                host.write32(reg, (old & keep) | ((value << shift) & lanes & mask));
                Effect::None
            }
        }
    }
}

#[cfg(test)]
mod tests;
