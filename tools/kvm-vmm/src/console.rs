//! The guest's SBI console: the calls KVM forwards to user space (`KVM_EXIT_RISCV_SBI`),
//! decoded, and the bytes assembled into lines.
//!
//! KVM answers most SBI calls itself (BASE, TIME, IPI, RFENCE, HSM, SRST as a system
//! event); it forwards the legacy `console_putchar` (v0.1 EID 0x01) and, once user space
//! enables the extension, DBCN (SBI 2.0 §12, "Debug Console Extension"): both are
//! handled here.

/// Legacy extension `console_putchar` (SBI v0.1): a0 = the byte.
pub const EID_LEGACY_PUTCHAR: u64 = 0x01;
/// Debug Console Extension, "DBCN".
pub const EID_DBCN: u64 = 0x4442_434e;
/// DBCN `sbi_debug_console_write(num_bytes, base_addr_lo, base_addr_hi)`.
pub const DBCN_WRITE: u64 = 0;
/// DBCN `sbi_debug_console_read(num_bytes, base_addr_lo, base_addr_hi)`.
pub const DBCN_READ: u64 = 1;
/// DBCN `sbi_debug_console_write_byte(byte)`.
pub const DBCN_WRITE_BYTE: u64 = 2;

/// SBI error codes (SBI 2.0 §3.2).
pub const SBI_SUCCESS: i64 = 0;
pub const SBI_ERR_NOT_SUPPORTED: i64 = -2;
pub const SBI_ERR_INVALID_PARAM: i64 = -3;

/// A forwarded SBI call, as decoded from `kvm_run.riscv_sbi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Print one byte.
    PutChar(u8),
    /// Print `len` bytes from guest physical address `gpa`.
    Write { gpa: u64, len: u64 },
    /// Read from the console: there is no input, so 0 bytes.
    Read,
    /// Anything else: answered with `SBI_ERR_NOT_SUPPORTED`.
    Unsupported { eid: u64, fid: u64 },
}

/// Decode a forwarded call from its extension, function and arguments.
pub fn decode(eid: u64, fid: u64, args: &[u64; 6]) -> Call {
    match (eid, fid) {
        (EID_LEGACY_PUTCHAR, _) => Call::PutChar(args[0] as u8),
        (EID_DBCN, DBCN_WRITE) => Call::Write {
            gpa: args[1] | args[2] << 32,
            len: args[0],
        },
        (EID_DBCN, DBCN_READ) => Call::Read,
        (EID_DBCN, DBCN_WRITE_BYTE) => Call::PutChar(args[0] as u8),
        _ => Call::Unsupported { eid, fid },
    }
}

/// Bytes assembled into lines (a line ends at `\n`; `\r` is dropped).
#[derive(Default)]
pub struct Lines {
    partial: Vec<u8>,
}

impl Lines {
    /// Add `bytes`; returns the lines they complete, without their `\n`.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut done = Vec::new();
        for &b in bytes {
            match b {
                b'\n' => {
                    done.push(String::from_utf8_lossy(&self.partial).into_owned());
                    self.partial.clear();
                }
                b'\r' => {}
                _ => self.partial.push(b),
            }
        }
        done
    }

    /// What is left without a newline (printed when the guest stops).
    pub fn take_partial(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| {
            let s = String::from_utf8_lossy(&self.partial).into_owned();
            self.partial.clear();
            s
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_forwarded_calls() {
        let a = |a0, a1, a2| [a0, a1, a2, 0, 0, 0];
        assert_eq!(decode(0x01, 0, &a(b'x' as u64, 0, 0)), Call::PutChar(b'x'));
        assert_eq!(
            decode(EID_DBCN, DBCN_WRITE, &a(12, 0x8020_1000, 0x1)),
            Call::Write {
                gpa: 0x1_8020_1000,
                len: 12
            }
        );
        assert_eq!(
            decode(EID_DBCN, DBCN_WRITE_BYTE, &a(0x141, 0, 0)),
            Call::PutChar(0x41)
        );
        assert_eq!(decode(EID_DBCN, DBCN_READ, &a(1, 0, 0)), Call::Read);
        assert_eq!(
            decode(0x10, 0, &a(0, 0, 0)),
            Call::Unsupported { eid: 0x10, fid: 0 }
        );
    }

    #[test]
    fn lines_end_at_newline() {
        let mut l = Lines::default();
        assert!(l.push(b"VIRQ-BENCH op=").is_empty());
        assert_eq!(l.push(b"nop n=1\r\nnext"), vec!["VIRQ-BENCH op=nop n=1"]);
        assert_eq!(l.push(b"\n\n"), vec!["next", ""]);
        assert_eq!(l.take_partial(), None);
        l.push(b"tail");
        assert_eq!(l.take_partial().as_deref(), Some("tail"));
    }
}
