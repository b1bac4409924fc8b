//! `virq-pingpong ROUNDS [CPUS]`: a lost-wake-up detector for Linux guests.
//!
//! `CPUS` processes (default 2, at most 8) each pinned to one CPU (process `i` to CPU
//! `i`) form a ring of pipes; process 0 sends one byte round the ring `ROUNDS` times
//! and times every lap with `rdtime`. Each hop wakes a process whose CPU is idle, so
//! each lap is `CPUS` cross-CPU wake-ups (rescheduling / function-call IPIs to a CPU
//! in WFI). With 2 CPUs this is the ping-pong of issue 12: one byte bounced through
//! two pipes between CPU 0 and CPU 1.
//!
//! Output (one line each, on stdout):
//! - `VIRQ-PINGPONG-SLOW round=I us=U`: a lap slower than 100 ms (the first 20);
//! - `VIRQ-PINGPONG-PROGRESS done=I slow=K worst_us=W`: every 10,000 laps;
//! - at the end `VIRQ-PINGPONG cpus=C rounds=N slow=K worst_us=W mean_us=M
//!   total_us=T over_1ms=A over_10ms=B timebase_hz=F`, where `slow` counts the laps
//!   over 100 ms (a "stall": a wake-up lost until something else ran the CPU) —
//!   exit status 0;
//! - or `VIRQ-PINGPONG-ERROR …` and exit status 1 (2 for bad arguments).
//!
//! Times come from the `time` CSR; its frequency is read from
//! `/proc/device-tree/cpus/timebase-frequency` (10 MHz on QEMU `virt` if absent).
#![no_std]
#![no_main]

mod sys;

use core::fmt::{self, Write};

/// A lap slower than this is a stall.
const SLOW_US: u64 = 100_000;
/// Most processes in the ring.
const MAX_CPUS: usize = 8;
/// Stalls printed one by one.
const MAX_SLOW_LINES: u64 = 20;
/// Laps between progress lines.
const PROGRESS_EVERY: u64 = 10_000;
/// QEMU `virt`'s timebase, used when the device tree cannot be read.
const DEFAULT_TIMEBASE_HZ: u64 = 10_000_000;
/// The byte sent round the ring, and the one that stops it.
const TOKEN: u8 = b'x';
const QUIT: u8 = b'q';

/// One output line, built on the stack and written with a single `write`.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn new() -> Self {
        Line {
            buf: [0; 256],
            len: 0,
        }
    }

    fn print(mut self) {
        if self.len == self.buf.len() {
            self.len -= 1;
        }
        self.buf[self.len] = b'\n';
        let _ = sys::write(1, &self.buf[..self.len + 1]);
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

macro_rules! println {
    ($($arg:tt)*) => {{
        let mut l = Line::new();
        let _ = write!(l, $($arg)*);
        l.print();
    }};
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("VIRQ-PINGPONG-ERROR panic: {}", info.message());
    sys::exit(1)
}

/// Called by `_start` with the initial stack pointer.
extern "C" fn start(sp: *const usize) -> ! {
    // SAFETY: Linux puts argc at sp and argc argument pointers after it, each a
    // NUL-terminated string that lives as long as the process.
    let args = unsafe {
        let argc = *sp;
        core::slice::from_raw_parts(sp.add(1) as *const *const core::ffi::c_char, argc)
    };
    let arg = |i: usize| -> Option<&[u8]> {
        // SAFETY: see above: every argv entry below argc is a valid C string.
        args.get(i)
            .map(|&p| unsafe { core::ffi::CStr::from_ptr(p) }.to_bytes())
    };
    let rounds = arg(1).and_then(parse_u64);
    let cpus = match arg(2) {
        None => Some(2),
        Some(s) => parse_u64(s).map(|n| n as usize),
    };
    let (Some(rounds), Some(cpus @ 2..=MAX_CPUS)) = (rounds, cpus) else {
        println!("VIRQ-PINGPONG-ERROR usage: virq-pingpong ROUNDS [CPUS (2..={MAX_CPUS})]");
        sys::exit(2)
    };
    match run(rounds, cpus) {
        Ok(()) => sys::exit(0),
        Err(e) => {
            println!("VIRQ-PINGPONG-ERROR {e}");
            sys::exit(1)
        }
    }
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &c| {
        if c.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(c - b'0'))
        } else {
            None
        }
    })
}

/// What went wrong, with the failing call's errno.
enum Error {
    Sys(&'static str, isize),
    Child(isize, i32),
    Short(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Sys(what, r) => write!(f, "{what} failed: errno {}", -r),
            Error::Child(pid, st) => write!(f, "child {pid} ended with wait status {st:#x}"),
            Error::Short(what) => write!(f, "{what}: end of file"),
        }
    }
}

fn check(what: &'static str, r: isize) -> Result<isize, Error> {
    if r < 0 {
        Err(Error::Sys(what, r))
    } else {
        Ok(r)
    }
}

/// Pin the caller to `cpu` and check it now runs there.
fn pin(cpu: usize) -> Result<(), Error> {
    check("sched_setaffinity", sys::pin_to_cpu(cpu))?;
    let on = check("getcpu", sys::getcpu())?;
    if on as usize != cpu {
        return Err(Error::Sys("getcpu after sched_setaffinity (wrong CPU)", -1));
    }
    Ok(())
}

fn send(fd: i32, b: u8) -> Result<(), Error> {
    match sys::write(fd, &[b]) {
        1 => Ok(()),
        r => Err(Error::Sys("write", r.min(-1))),
    }
}

fn recv(fd: i32) -> Result<u8, Error> {
    let mut b = [0u8; 1];
    match sys::read(fd, &mut b) {
        1 => Ok(b[0]),
        0 => Err(Error::Short("read")),
        r => Err(Error::Sys("read", r)),
    }
}

/// Process `i > 0` of the ring: forward every byte from `from` to `to` until `QUIT`.
fn forward(cpu: usize, from: i32, to: i32) -> Result<(), Error> {
    pin(cpu)?;
    loop {
        let b = recv(from)?;
        send(to, b)?;
        if b == QUIT {
            return Ok(());
        }
    }
}

/// The platform timebase from the device tree (a big-endian u32 cell).
fn timebase_hz() -> u64 {
    let fd = sys::open_read(c"/proc/device-tree/cpus/timebase-frequency");
    if fd < 0 {
        return DEFAULT_TIMEBASE_HZ;
    }
    let mut b = [0u8; 8];
    let n = sys::read(fd as i32, &mut b);
    sys::close(fd as i32);
    match n {
        4 => u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        8 => u64::from_be_bytes(b),
        _ => DEFAULT_TIMEBASE_HZ,
    }
    .max(1)
}

fn run(rounds: u64, cpus: usize) -> Result<(), Error> {
    let hz = timebase_hz();
    let us = |ticks: u64| (u128::from(ticks) * 1_000_000 / u128::from(hz)) as u64;
    let slow_ticks = (u128::from(SLOW_US) * u128::from(hz) / 1_000_000) as u64;
    // Pipe i carries the byte from process i to process (i + 1) % cpus.
    let mut pipes = [[0i32; 2]; MAX_CPUS];
    for p in pipes.iter_mut().take(cpus) {
        *p = sys::pipe().map_err(|r| Error::Sys("pipe2", r))?;
    }
    for i in 1..cpus {
        if check("fork", sys::fork())? == 0 {
            // Keep only this process's two ends, so nothing else holds a pipe open.
            for (j, p) in pipes.iter().enumerate().take(cpus) {
                if j != i - 1 {
                    sys::close(p[0]);
                }
                if j != i {
                    sys::close(p[1]);
                }
            }
            match forward(i, pipes[i - 1][0], pipes[i][1]) {
                Ok(()) => sys::exit(0),
                Err(e) => {
                    println!("VIRQ-PINGPONG-ERROR process {i}: {e}");
                    sys::exit(1)
                }
            }
        }
    }
    let (to, from) = (pipes[0][1], pipes[cpus - 1][0]);
    for (j, p) in pipes.iter().enumerate().take(cpus) {
        if j != cpus - 1 {
            sys::close(p[0]);
        }
        if j != 0 {
            sys::close(p[1]);
        }
    }
    pin(0)?;
    // One untimed lap: every process has started and pinned itself.
    send(to, TOKEN)?;
    recv(from)?;
    let (mut slow, mut worst, mut total, mut over_1ms, mut over_10ms) = (0u64, 0, 0, 0u64, 0u64);
    let (ms1, ms10) = (hz / 1000, hz / 100);
    for round in 1..=rounds {
        let t0 = sys::rdtime();
        send(to, TOKEN)?;
        if recv(from)? != TOKEN {
            return Err(Error::Short("unexpected byte from the ring"));
        }
        let dt = sys::rdtime().wrapping_sub(t0);
        total += dt;
        worst = worst.max(dt);
        over_1ms += u64::from(dt > ms1);
        over_10ms += u64::from(dt > ms10);
        if dt > slow_ticks {
            slow += 1;
            if slow <= MAX_SLOW_LINES {
                println!("VIRQ-PINGPONG-SLOW round={round} us={}", us(dt));
            }
        }
        if round % PROGRESS_EVERY == 0 && round < rounds {
            println!(
                "VIRQ-PINGPONG-PROGRESS done={round} slow={slow} worst_us={}",
                us(worst)
            );
        }
    }
    send(to, QUIT)?;
    recv(from)?;
    for _ in 1..cpus {
        let (pid, status) = sys::wait_any().map_err(|r| Error::Sys("wait4", r))?;
        if status != 0 {
            return Err(Error::Child(pid, status));
        }
    }
    println!(
        "VIRQ-PINGPONG cpus={cpus} rounds={rounds} slow={slow} worst_us={} mean_us={} \
         total_us={} over_1ms={over_1ms} over_10ms={over_10ms} timebase_hz={hz}",
        us(worst),
        us(total) / rounds.max(1),
        us(total)
    );
    Ok(())
}
