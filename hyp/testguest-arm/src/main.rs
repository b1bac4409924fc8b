//! `testguest-arm`: a bare-metal EL1 guest that tests hyp on aarch64 from the inside —
//! the counterpart of the RISC-V `testguest`.
//!
//! hyp enters vCPU 0 at the image's first byte (IPA 0x8000_0000) at EL1h with the MMU
//! off, DAIF masked and x0 = the DTB; vCPU 1 starts through PSCI `CPU_ON` (a test).
//! The guest programs its GICv3 the way Linux does and takes its interrupts through
//! `ICC_IAR1_EL1` / `ICC_EOIR1_EL1` (EOImode 0: the EOI also deactivates).
//!
//! Each test prints `TEST <name> ... PASS` or `TEST <name> ... FAIL (<why>)`; at the end
//! the guest prints `testguest: N passed, M failed`. With no failure it powers off
//! through PSCI `SYSTEM_OFF`; with failures it says so on the console and calls PSCI
//! `SYSTEM_RESET` instead (hyp also powers off then, printing which call it got), so
//! `PSCI SYSTEM_OFF` in hyp's log means "all passed" and a missing summary means the
//! guest died. xtask (`xtask/src/armtest.rs`) checks all of it.
//!
//! With `bench.*` words on its command line (`/chosen/bootargs`) it is instead the
//! aarch64 payload of `cargo xtask bench --system` (`bench.rs`): on bare QEMU at EL1
//! and under hyp, it times HVC, trapped MMIO, EOI, SGI and timer paths and prints
//! `VIRQ-BENCH` lines (`xtask/src/armbench.rs` runs it).
//!
//! On any other architecture the crate is an empty stub: the riscv64 build of the hyp
//! workspace compiles every member.
#![no_std]
#![no_main]
// Test failures carry a fixed-size message (no allocator); size does not matter here.
#![allow(clippy::result_large_err)]

/// Print a line on the console (the PL011 hyp passes through).
#[cfg(target_arch = "aarch64")]
macro_rules! println {
    ($($arg:tt)*) => { $crate::guest::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Fail the current test with a formatted message unless `cond` holds.
#[cfg(target_arch = "aarch64")]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err($crate::guest::Msg::new(format_args!($($arg)*)));
        }
    };
}

#[cfg(target_arch = "aarch64")]
mod bench;
#[cfg(target_arch = "aarch64")]
mod device;
#[cfg(target_arch = "aarch64")]
mod guest;
#[cfg(target_arch = "aarch64")]
mod hw;
#[cfg(target_arch = "aarch64")]
mod regs;
#[cfg(target_arch = "aarch64")]
mod tests;
#[cfg(target_arch = "aarch64")]
mod vits;

#[cfg(target_arch = "aarch64")]
pub use guest::{exception, main, secondary_main};

#[cfg(not(target_arch = "aarch64"))]
mod stub {
    /// Not an aarch64 build: nothing to run.
    #[no_mangle]
    pub extern "C" fn _start() -> ! {
        loop {
            core::hint::spin_loop();
        }
    }

    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
        loop {
            core::hint::spin_loop();
        }
    }
}
