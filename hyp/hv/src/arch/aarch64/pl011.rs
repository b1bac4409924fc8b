//! The PL011 UART (Arm PrimeCell UART TRM, DDI 0183) of QEMU arm `virt` at
//! 0x0900_0000: hyp's console. QEMU's model needs no set-up to transmit; hyp polls
//! `UARTFR.TXFF` before each byte.

/// Base of the PL011 on QEMU arm `virt`.
pub const BASE: usize = 0x0900_0000;
/// `UARTDR`: data register.
const UARTDR: usize = 0x000;
/// `UARTFR`: flag register.
const UARTFR: usize = 0x018;
/// `UARTFR.TXFF`: transmit FIFO full.
const FR_TXFF: u32 = 1 << 5;

/// Write `bytes` to the UART (`\n` as `\r\n`).
pub fn write(bytes: &[u8]) {
    for &b in bytes {
        if b == b'\n' {
            put(b'\r');
        }
        put(b);
    }
}

fn put(b: u8) {
    // SAFETY: BASE is the PL011 of QEMU `virt` (device memory, not RAM); UARTFR and
    // UARTDR are its 32-bit registers, and only hyp's console (under its lock) drives it.
    unsafe {
        while core::ptr::read_volatile((BASE + UARTFR) as *const u32) & FR_TXFF != 0 {}
        core::ptr::write_volatile((BASE + UARTDR) as *mut u32, b as u32);
    }
}
