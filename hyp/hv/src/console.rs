//! hyp's console: formatted lines written through `arch::console_write` (on riscv64 SBI
//! DBCN: OpenSBI owns the UART driver; hyp never programs the UART, which may be passed
//! through to a guest).
use core::fmt::{self, Write};
use spin::Mutex;

/// Serialises whole lines from different harts.
static LOCK: Mutex<()> = Mutex::new(());

struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn flush(&mut self) {
        crate::arch::console_write(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == self.buf.len() {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Print formatted text (used by the `print!`/`println!` macros).
pub fn print(args: fmt::Arguments<'_>) {
    let _g = LOCK.lock();
    let mut line = Line {
        buf: [0; 256],
        len: 0,
    };
    let _ = line.write_fmt(args);
    line.flush();
}

/// Write raw bytes for a guest (DBCN / legacy putchar), under the same lock.
pub fn write_bytes(bytes: &[u8]) {
    let _g = LOCK.lock();
    crate::arch::console_write(bytes);
}

/// `print!` to the hyp console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// `println!` to the hyp console.
#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
