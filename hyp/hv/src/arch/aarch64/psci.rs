//! PSCI (Arm DEN 0022) calls down to the firmware — on QEMU `virt` with
//! `virtualization=on` and no EL3, QEMU itself, through the SMC conduit (the DTB's
//! `/psci` node says `method = "smc"`) — and the function ids hyp answers for guests.

/// `PSCI_VERSION`.
pub const PSCI_VERSION: u32 = 0x8400_0000;
/// `CPU_ON` (SMC64).
pub const CPU_ON_64: u32 = 0xc400_0003;
/// `SYSTEM_OFF`.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// `SYSTEM_RESET`.
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// The SMCCC / PSCI "not supported" return value.
pub const NOT_SUPPORTED: i64 = -1;

/// One SMC64 call: function id and three arguments; `x0` back.
fn smc(fid: u32, a1: usize, a2: usize, a3: usize) -> isize {
    let r: isize;
    // SAFETY: an SMCCC call to the PSCI implementation; SMCCC lets it clobber x0-x17,
    // all marked here; it touches no memory hyp owns.
    unsafe {
        core::arch::asm!(
            "smc #0",
            inlateout("x0") fid as usize => r,
            inlateout("x1") a1 => _, inlateout("x2") a2 => _, inlateout("x3") a3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _, out("x8") _,
            out("x9") _, out("x10") _, out("x11") _, out("x12") _, out("x13") _,
            out("x14") _, out("x15") _, out("x16") _, out("x17") _,
            options(nostack)
        )
    };
    r
}

/// `CPU_ON(target, entry, context)`; the PSCI error code on failure.
pub fn cpu_on(target: usize, entry: usize, context: usize) -> Result<(), isize> {
    match smc(CPU_ON_64, target, entry, context) {
        0 => Ok(()),
        e => Err(e),
    }
}

/// `SYSTEM_OFF`: QEMU exits (status 0).
pub fn system_off() -> ! {
    smc(SYSTEM_OFF, 0, 0, 0);
    crate::arch::halt()
}

/// `SYSTEM_RESET`: with `-no-reboot`, QEMU exits.
pub fn system_reset() -> ! {
    smc(SYSTEM_RESET, 0, 0, 0);
    crate::arch::halt()
}
