//! A virtual NS16550A for a guest that does not own the physical UART (the second
//! guest of the `two-linux` profile). Output only: every byte the guest writes to THR
//! is collected into lines, and each complete line goes to hyp's console (SBI DBCN)
//! prefixed with the guest's name, in one burst, so it does not split the lines of the
//! guest that owns the real UART more than necessary. The receiver is always empty.
//!
//! With the bootarg `vuart=deferred` (the QEMU suite's two-guest case) the lines are
//! kept in a buffer reserved at boot and printed only when the last guest has stopped,
//! so they cannot interleave with the console owner's output at all; lines beyond the
//! buffer are counted as dropped.
//!
//! The DT node has no `interrupts` property, so Linux's 8250 driver polls it with a
//! timer; the model raises no interrupt line, but its IIR still identifies the
//! transmitter-empty condition (16550: pending while IER.ETBEI is set and THR is empty,
//! cleared by the IIR read that reports it or by a THR write) — the polling driver
//! sends its next FIFO-full of bytes only when IIR says so. Register map (reg-shift 0, byte
//! registers, as QEMU `virt`): RBR/THR, IER, IIR/FCR, LCR, MCR, LSR, MSR, SCR, with the
//! divisor latch behind LCR.DLAB. An access wider than a byte, or beyond the eight
//! registers, reads as zero, is ignored when written, and is counted in `errors`.

/// Size of the guest-visible window (one page, as the DT `reg` covers 0x100 of it).
pub const WINDOW: u64 = 0x1000;

const LSR_THRE: u8 = 1 << 5;
const LSR_TEMT: u8 = 1 << 6;
const LCR_DLAB: u8 = 1 << 7;
const IIR_NO_INT: u8 = 1;
const IIR_FIFO: u8 = 0xc0;
const FCR_FIFO_EN: u8 = 1;
const IER_ETBEI: u8 = 1 << 1;
const IIR_THRE: u8 = 0x02;

/// The device state.
pub struct Vuart {
    prefix: &'static str,
    ier: u8,
    fcr: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    /// The transmitter-empty interrupt condition (see the module docs).
    thre_pending: bool,
    line: [u8; 200],
    len: usize,
    /// `Some`: lines are kept here (capacity fixed at boot) until [`Self::print_deferred`].
    deferred: Option<alloc::vec::Vec<u8>>,
    /// Deferred lines that did not fit.
    dropped: u64,
    /// Accesses outside the register map or of the wrong width.
    pub errors: u64,
}

impl Vuart {
    /// Bytes reserved for deferred output.
    const DEFERRED_CAPACITY: usize = 64 << 10;

    /// A UART whose output lines are prefixed `[prefix] `; `deferred`: keep them until
    /// [`Self::print_deferred`].
    pub fn new(prefix: &'static str, deferred: bool) -> Self {
        Self {
            prefix,
            ier: 0,
            fcr: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            dll: 0,
            dlm: 0,
            thre_pending: false,
            line: [0; 200],
            len: 0,
            deferred: deferred.then(|| alloc::vec::Vec::with_capacity(Self::DEFERRED_CAPACITY)),
            dropped: 0,
            errors: 0,
        }
    }

    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    /// A guest load of `size` bytes at `offset`.
    pub fn read(&mut self, offset: u64, size: u8) -> u64 {
        if size != 1 || offset >= 8 {
            self.errors += 1;
            return 0;
        }
        let v = match offset {
            0 if self.dlab() => self.dll,
            0 => 0, // RBR: nothing received
            1 if self.dlab() => self.dlm,
            1 => self.ier,
            2 => {
                let fifo = if self.fcr & FCR_FIFO_EN != 0 {
                    IIR_FIFO
                } else {
                    0
                };
                if self.ier & IER_ETBEI != 0 && self.thre_pending {
                    self.thre_pending = false;
                    fifo | IIR_THRE
                } else {
                    fifo | IIR_NO_INT
                }
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => LSR_THRE | LSR_TEMT,
            6 => 0xb0, // MSR: DCD, DSR, CTS asserted
            _ => self.scr,
        };
        u64::from(v)
    }

    /// A guest store of `size` bytes at `offset`.
    pub fn write(&mut self, offset: u64, size: u8, value: u64) {
        if size != 1 || offset >= 8 {
            self.errors += 1;
            return;
        }
        let v = value as u8;
        match offset {
            0 if self.dlab() => self.dll = v,
            0 => {
                self.put(v);
                // Sent at once: THR is empty again.
                self.thre_pending = true;
            }
            1 if self.dlab() => self.dlm = v,
            1 => {
                // Enabling ETBEI with THR empty raises the condition.
                if v & IER_ETBEI != 0 && self.ier & IER_ETBEI == 0 {
                    self.thre_pending = true;
                }
                self.ier = v & 0x0f;
            }
            2 => self.fcr = v,
            3 => self.lcr = v,
            4 => self.mcr = v & 0x1f,
            7 => self.scr = v,
            _ => {} // LSR and MSR are read-only: the write is ignored
        }
    }

    /// Bytes the guest wrote to its console some other way (SBI DBCN): the same lines.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.put(b);
        }
    }

    fn put(&mut self, byte: u8) {
        match byte {
            b'\r' => {}
            b'\n' => self.flush(),
            _ => {
                self.line[self.len] = byte;
                self.len += 1;
                if self.len == self.line.len() {
                    self.flush();
                }
            }
        }
    }

    fn flush(&mut self) {
        let text = core::str::from_utf8(&self.line[..self.len]).unwrap_or("<non-UTF-8 line>");
        match &mut self.deferred {
            None => crate::println!("[{}] {}", self.prefix, text),
            Some(buf) => {
                let need = self.prefix.len() + 3 + text.len() + 1;
                // Never grows: the capacity was reserved at boot (no allocation here).
                if buf.len() + need <= buf.capacity() {
                    buf.extend_from_slice(b"[");
                    buf.extend_from_slice(self.prefix.as_bytes());
                    buf.extend_from_slice(b"] ");
                    buf.extend_from_slice(text.as_bytes());
                    buf.push(b'\n');
                } else {
                    self.dropped += 1;
                }
            }
        }
        self.len = 0;
    }

    /// Print the deferred lines (and a partial last line), if any.
    pub fn print_deferred(&mut self) {
        if self.len != 0 {
            self.flush();
        }
        let Some(buf) = &mut self.deferred else {
            return;
        };
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            crate::println!(
                "{}",
                core::str::from_utf8(line).unwrap_or("<non-UTF-8 line>")
            );
        }
        buf.clear();
        if self.dropped != 0 {
            crate::println!("[{}] ({} lines dropped)", self.prefix, self.dropped);
        }
    }
}
