//! The only unsafe part of the program: the ELF entry point, Linux riscv64 system
//! calls through `ecall` (numbers from the kernel's generic `unistd.h`) and `rdtime`.
//! Each wrapper takes Rust references or slices, so callers stay safe.

use core::arch::{asm, global_asm};

const SYS_OPENAT: usize = 56;
const SYS_CLOSE: usize = 57;
const SYS_PIPE2: usize = 59;
const SYS_READ: usize = 63;
const SYS_WRITE: usize = 64;
const SYS_EXIT_GROUP: usize = 94;
const SYS_SCHED_SETAFFINITY: usize = 122;
const SYS_GETCPU: usize = 168;
const SYS_CLONE: usize = 220;
const SYS_WAIT4: usize = 260;

/// `AT_FDCWD`: paths relative to the current directory.
const AT_FDCWD: isize = -100;
/// `clone` flags of a plain `fork()`: no sharing, `SIGCHLD` to the parent at exit.
const SIGCHLD: usize = 17;

// Linux starts the program with sp -> argc, argv[0..argc], NULL, envp..., NULL, auxv.
global_asm!(
    ".section .text.entry, \"ax\"",
    ".globl _start",
    "_start:",
    "    mv a0, sp",
    "    andi sp, sp, -16",
    "    call {main}",
    "    unimp",
    main = sym crate::start,
);

/// A raw system call with up to four arguments; returns the kernel's value
/// (negative errno on failure).
///
/// # Safety
/// The arguments must be valid for system call `n`: every pointer points to memory
/// of the size the call accesses, writable if the kernel writes it.
unsafe fn syscall4(n: usize, a0: usize, a1: usize, a2: usize, a3: usize) -> isize {
    let ret: isize;
    // SAFETY: the caller guarantees the arguments are valid for call `n`; `ecall`
    // clobbers only a0 (the return value) in user mode.
    unsafe {
        asm!("ecall", in("a7") n, inlateout("a0") a0 as isize => ret, in("a1") a1,
             in("a2") a2, in("a3") a3, options(nostack));
    }
    ret
}

/// The `time` CSR (`rdtime`): ticks of the platform timebase.
pub fn rdtime() -> u64 {
    let t: u64;
    // SAFETY: reading the time CSR has no side effect (Linux enables it for user mode
    // through `scounteren.TM`).
    unsafe { asm!("rdtime {0}", out(reg) t, options(nomem, nostack)) };
    t
}

/// Write `buf` to `fd`; bytes written or negative errno.
pub fn write(fd: i32, buf: &[u8]) -> isize {
    // SAFETY: `buf` is a valid readable slice of `buf.len()` bytes.
    unsafe { syscall4(SYS_WRITE, fd as usize, buf.as_ptr() as usize, buf.len(), 0) }
}

/// Read into `buf` from `fd`; bytes read (0 at end of file) or negative errno.
pub fn read(fd: i32, buf: &mut [u8]) -> isize {
    // SAFETY: `buf` is a valid writable slice of `buf.len()` bytes.
    unsafe {
        syscall4(
            SYS_READ,
            fd as usize,
            buf.as_mut_ptr() as usize,
            buf.len(),
            0,
        )
    }
}

/// Open `path` (NUL-terminated) read-only; fd or negative errno.
pub fn open_read(path: &core::ffi::CStr) -> isize {
    // SAFETY: `path` is a valid NUL-terminated string; flags 0 = O_RDONLY.
    unsafe { syscall4(SYS_OPENAT, AT_FDCWD as usize, path.as_ptr() as usize, 0, 0) }
}

pub fn close(fd: i32) -> isize {
    // SAFETY: no pointer argument.
    unsafe { syscall4(SYS_CLOSE, fd as usize, 0, 0, 0) }
}

/// A pipe: `[read end, write end]`, or negative errno.
pub fn pipe() -> Result<[i32; 2], isize> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is two writable `int`s, as pipe2 expects; flags 0.
    let r = unsafe { syscall4(SYS_PIPE2, fds.as_mut_ptr() as usize, 0, 0, 0) };
    if r < 0 {
        Err(r)
    } else {
        Ok(fds)
    }
}

/// `fork()` (riscv64 has no fork call: `clone(SIGCHLD, 0, …)`): 0 in the child, the
/// child's pid in the parent, or negative errno.
pub fn fork() -> isize {
    // SAFETY: no pointer argument (no new stack, no tid pointers): the child gets a
    // copy of this address space and returns here with 0.
    unsafe { syscall4(SYS_CLONE, SIGCHLD, 0, 0, 0) }
}

/// Restrict the calling process to CPU `cpu` (< 64); 0 or negative errno.
pub fn pin_to_cpu(cpu: usize) -> isize {
    let mask: u64 = 1 << cpu;
    // SAFETY: `mask` is an 8-byte CPU set the kernel only reads.
    unsafe {
        syscall4(
            SYS_SCHED_SETAFFINITY,
            0,
            core::mem::size_of::<u64>(),
            &mask as *const u64 as usize,
            0,
        )
    }
}

/// The CPU the caller runs on, or negative errno.
pub fn getcpu() -> isize {
    let mut cpu: u32 = 0;
    // SAFETY: `cpu` is a writable `unsigned int`; node and cache pointers are NULL.
    let r = unsafe { syscall4(SYS_GETCPU, &mut cpu as *mut u32 as usize, 0, 0, 0) };
    if r < 0 {
        r
    } else {
        cpu as isize
    }
}

/// Wait for any child: `(pid, wait status)` or negative errno.
pub fn wait_any() -> Result<(isize, i32), isize> {
    let mut status: i32 = 0;
    // SAFETY: `status` is a writable `int`; options 0, rusage NULL.
    let r = unsafe {
        syscall4(
            SYS_WAIT4,
            -1isize as usize,
            &mut status as *mut i32 as usize,
            0,
            0,
        )
    };
    if r < 0 {
        Err(r)
    } else {
        Ok((r, status))
    }
}

/// End the process with `code`.
pub fn exit(code: i32) -> ! {
    // SAFETY: exit_group takes no pointer and does not return.
    unsafe { syscall4(SYS_EXIT_GROUP, code as usize, 0, 0, 0) };
    loop {
        core::hint::spin_loop();
    }
}
