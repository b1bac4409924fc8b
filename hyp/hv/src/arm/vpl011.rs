//! hyp's emulated PL011 (`devices = ["vuart"]` on aarch64): the UART of a guest that
//! does not own QEMU's, at the same guest address (0x0900_0000, INTID 33). Every
//! access traps (the page is not mapped); output goes to hyp's console line by line,
//! prefixed with the guest's name; there is no input.
//!
//! Registers (ARM DDI 0183G, "PL011 Technical Reference Manual"): `UARTDR` writes
//! transmit at once, so the transmit FIFO is always empty: `UARTFR` reads TXFE and
//! RXFE, never BUSY or TXFF, and the transmit interrupt's raw status (`UARTRIS.TXRIS`)
//! is always set. The interrupt line is `UARTMIS = UARTRIS & UARTIMSC` ≠ 0, a level
//! on the guest's virtual SPI 33: Linux's driver unmasks TXIM to send more than the
//! FIFO's worth and masks it when done, so its interrupt-driven output works. The
//! AMBA identification registers read as a PL011 r1p5, which Linux's AMBA bus matches
//! its driver by. Other registers hold what is written (`UARTCR`, `UARTLCR_H`, …) or
//! read as zero.

use alloc::string::String;
use alloc::vec::Vec;

/// Register offsets.
mod reg {
    pub const DR: u64 = 0x000;
    pub const FR: u64 = 0x018;
    pub const IBRD: u64 = 0x024;
    pub const FBRD: u64 = 0x028;
    pub const LCR_H: u64 = 0x02c;
    pub const CR: u64 = 0x030;
    pub const IFLS: u64 = 0x034;
    pub const IMSC: u64 = 0x038;
    pub const RIS: u64 = 0x03c;
    pub const MIS: u64 = 0x040;
    pub const ICR: u64 = 0x044;
    pub const DMACR: u64 = 0x048;
    /// `UARTPeriphID0` .. `UARTPCellID3`, one byte per word.
    pub const ID: u64 = 0xfe0;
}

/// `UARTFR`: receive FIFO empty, transmit FIFO empty.
const FR_RXFE: u64 = 1 << 4;
const FR_TXFE: u64 = 1 << 7;
/// `UARTRIS.TXRIS`.
const TXRIS: u32 = 1 << 5;
/// `UARTPeriphID0-3`, `UARTPCellID0-3` (a PL011 r1p5, as QEMU's).
const ID: [u8; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];
/// Longest line kept before it is printed anyway.
const LINE_MAX: usize = 200;

/// One emulated PL011.
#[derive(Default)]
pub struct VPl011 {
    imsc: u32,
    cr: u32,
    lcr_h: u32,
    ibrd: u32,
    fbrd: u32,
    ifls: u32,
    dmacr: u32,
    line: Vec<u8>,
}

impl VPl011 {
    /// The interrupt line (`UARTMIS` ≠ 0).
    pub fn level(&self) -> bool {
        self.mis() != 0
    }

    fn mis(&self) -> u32 {
        TXRIS & self.imsc
    }

    /// A guest load of `size` bytes at `offset`.
    pub fn read(&mut self, offset: u64, _size: u8) -> u64 {
        match offset {
            reg::FR => FR_RXFE | FR_TXFE,
            reg::IBRD => self.ibrd.into(),
            reg::FBRD => self.fbrd.into(),
            reg::LCR_H => self.lcr_h.into(),
            reg::CR => self.cr.into(),
            reg::IFLS => self.ifls.into(),
            reg::IMSC => self.imsc.into(),
            reg::RIS => TXRIS.into(),
            reg::MIS => self.mis().into(),
            reg::DMACR => self.dmacr.into(),
            o if (reg::ID..reg::ID + 32).contains(&o) && o % 4 == 0 => {
                ID[((o - reg::ID) / 4) as usize].into()
            }
            _ => 0,
        }
    }

    /// A guest store; a completed line comes back for the console.
    pub fn write(&mut self, offset: u64, _size: u8, value: u64) -> Option<String> {
        let v = value as u32;
        match offset {
            reg::DR => return self.put(v as u8),
            reg::IBRD => self.ibrd = v & 0xffff,
            reg::FBRD => self.fbrd = v & 0x3f,
            reg::LCR_H => self.lcr_h = v & 0xff,
            reg::CR => self.cr = v & 0xffff,
            reg::IFLS => self.ifls = v & 0x3f,
            reg::IMSC => self.imsc = v & 0x7ff,
            // Clearing TXRIS does not hold: the FIFO is still empty.
            reg::ICR => {}
            reg::DMACR => self.dmacr = v & 0x7,
            _ => {}
        }
        None
    }

    fn put(&mut self, b: u8) -> Option<String> {
        match b {
            b'\n' => Some(self.take_line()),
            b'\r' => None,
            _ => {
                self.line.push(b);
                (self.line.len() >= LINE_MAX).then(|| self.take_line())
            }
        }
    }

    fn take_line(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        s
    }
}
