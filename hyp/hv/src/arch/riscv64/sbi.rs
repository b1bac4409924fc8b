//! Calls from hyp (HS-mode) down to the SBI implementation (OpenSBI).
use crate::arch::HartId;

/// Raw SBI return pair.
#[derive(Clone, Copy, Debug)]
pub struct SbiRet {
    /// `a0`: 0 on success, a negative SBI error otherwise.
    pub error: isize,
    /// `a1`.
    pub value: usize,
}

/// `ecall` with extension `eid`, function `fid` and up to six arguments.
pub fn call(eid: usize, fid: usize, args: [usize; 6]) -> SbiRet {
    let (error, value);
    // SAFETY: an `ecall` to M-mode firmware; the SBI calling convention clobbers only
    // a0/a1 (all other registers are preserved by the callee).
    unsafe {
        core::arch::asm!(
            "ecall",
            inlateout("a0") args[0] => error,
            inlateout("a1") args[1] => value,
            in("a2") args[2],
            in("a3") args[3],
            in("a4") args[4],
            in("a5") args[5],
            in("a6") fid,
            in("a7") eid,
            options(nostack)
        );
    }
    SbiRet { error, value }
}

const EID_TIME: usize = 0x5449_4d45;
const EID_IPI: usize = 0x0073_5049;
const EID_HSM: usize = 0x0048_534d;
const EID_SRST: usize = 0x5352_5354;
const EID_DBCN: usize = 0x4442_434e;

/// DBCN `console_write` of a buffer hyp owns (hyp runs with `satp = 0`, so its
/// addresses are physical).
pub fn console_write(bytes: &[u8]) {
    let mut off = 0;
    while off < bytes.len() {
        let rest = &bytes[off..];
        let r = call(
            EID_DBCN,
            0,
            [rest.len(), rest.as_ptr() as usize, 0, 0, 0, 0],
        );
        if r.error != 0 {
            // Fall back to the legacy putchar.
            for &b in rest {
                call(0x01, 0, [b as usize, 0, 0, 0, 0, 0]);
            }
            return;
        }
        off += r.value.max(1);
    }
}

/// DBCN `console_read` into `buf`; returns the number of bytes read.
pub fn console_read(buf: &mut [u8]) -> usize {
    let r = call(
        EID_DBCN,
        1,
        [buf.len(), buf.as_mut_ptr() as usize, 0, 0, 0, 0],
    );
    if r.error == 0 {
        r.value
    } else {
        0
    }
}

/// HSM `hart_start`.
pub fn hart_start(hartid: HartId, start: usize, opaque: usize) -> SbiRet {
    call(EID_HSM, 0, [hartid.0, start, opaque, 0, 0, 0])
}

/// IPI `send_ipi` to one hart.
pub fn send_ipi(hartid: HartId) -> SbiRet {
    call(EID_IPI, 0, [1, hartid.0, 0, 0, 0, 0])
}

/// TIME `set_timer` (used when the hart has no Sstc).
pub fn set_timer(when: u64) {
    call(EID_TIME, 0, [when as usize, 0, 0, 0, 0, 0]);
}

/// SRST `system_reset` shutdown (fallback when there is no sifive_test device).
pub fn shutdown(failure: bool) -> ! {
    call(EID_SRST, 0, [0, failure as usize, 0, 0, 0, 0]);
    crate::arch::halt()
}
