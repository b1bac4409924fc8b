//! The tiny EL1 test payload of hyp's first aarch64 step: position-independent code
//! that hyp copies to the start of the guest's RAM and enters at EL1h, MMU off.
//!
//! 1. `hvc` `PSCI_VERSION` (0x8400_0000); the answer stays in x0.
//! 2. `hvc` `HELLO` (0xc600_0001, a vendor-specific hypervisor service call) with
//!    x1 = that answer, so hyp prints what the guest received.
//! 3. Loads a word from IPA 0x5000_0010, which stage 2 does not map (x5 = 0xffff
//!    before): a stage-2 data abort that hyp decodes and emulates (read as zero).
//! 4. `hvc` `HELLO` with x1 = the loaded value.
//! 5. `hvc` PSCI `SYSTEM_OFF` (0x8400_0008).

/// `HELLO`: print x1 (SMCCC fast call, SMC64, owner 6: vendor-specific hypervisor
/// service, function 1).
pub const HELLO: u32 = 0xc600_0001;
/// The unmapped IPA the payload loads from.
pub const UNMAPPED_IPA: u64 = 0x5000_0010;

core::arch::global_asm!(
    r#"
    .section .rodata.hello_guest, "a"
    .balign 4
    .globl __hello_guest_start
__hello_guest_start:
    movz    x0, #0x8400, lsl #16
    hvc     #0
    mov     x1, x0
    movz    x0, #0xc600, lsl #16
    movk    x0, #0x0001
    hvc     #0
    movz    x5, #0xffff
    movz    x2, #0x5000, lsl #16
    movk    x2, #0x0010
    ldr     w5, [x2]
    mov     x1, x5
    movz    x0, #0xc600, lsl #16
    movk    x0, #0x0001
    hvc     #0
    movz    x0, #0x8400, lsl #16
    movk    x0, #0x0008
    hvc     #0
1:  b       1b
    .globl __hello_guest_end
__hello_guest_end:
"#
);

/// The payload's bytes (in hyp's read-only data).
pub fn payload() -> &'static [u8] {
    extern "C" {
        static __hello_guest_start: u8;
        static __hello_guest_end: u8;
    }
    let start = core::ptr::addr_of!(__hello_guest_start);
    let end = core::ptr::addr_of!(__hello_guest_end);
    // SAFETY: both symbols label the same `.rodata` block above, start before end; it
    // is immutable and lives as long as hyp's image.
    unsafe { core::slice::from_raw_parts(start, end as usize - start as usize) }
}
