//! The RISC-V backend of [`crate::arch`]: RV64 with the H extension, in HS-mode under
//! SBI firmware (OpenSBI), on QEMU `virt`.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the contract's functions (`arch`'s module docs list them) |
//! | `entry.rs` | boot: `_start` and `_secondary_start` (a stack per hart), `MAX_HARTS` |
//! | `switch.rs` | the world switch (`Context`, `enter_guest`), the HS trap vector, HLVX (`guest_fetch_u16`), FP save and restore (`FpState`) |
//! | `sv39x4.rs` | the G-stage page-table format (`Stage2`) |
//! | `csr.rs` | CSRs by number, their bits, `HartCsrs` (virq-riscv's view of the H-extension CSRs) |
//! | `sbi.rs` | calls down to the SBI firmware |
//! | `mmio.rs` | the host PLIC, S-level APLIC and IMSIC interrupt-file pages, `sifive_test` |
//! | `pcie.rs` | the host bridge's ECAM window (`Ecam`, one function's `ConfigAccess`) and device register windows (`MmioWindow`: BARs, the IOMMU) |
//!
//! Besides the contract, it exports what only the RISC-V-specific modules of hyp use:
//! `csr`, `mmio`, `pcie`, `sbi` and `switch`'s HLVX and FP state (docs/hyp.md, "Architecture
//! seam", lists those modules).
use super::HartId;

pub mod csr;
pub mod entry;
pub mod mmio;
pub mod sbi;
pub mod sv39x4;
pub mod switch;

pub use entry::MAX_HARTS;
pub use switch::{enter_guest, Context};

/// The G-stage page-table format: Sv39x4.
pub type Stage2 = sv39x4::Sv39x4;

/// Wait for an interrupt (returns when any interrupt enabled in `sie` is pending,
/// whatever `sstatus.SIE` says; hyp keeps `sstatus.SIE = 0`).
pub fn wait_for_interrupt() {
    // SAFETY: `wfi` has no memory or register effects; it only stalls the hart.
    unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
}

/// Full memory fence (`fence rw, rw`).
pub fn fence() {
    // SAFETY: a fence only orders memory accesses.
    unsafe { core::arch::asm!("fence rw, rw", options(nostack)) };
}

/// `fence iorw, iorw`: order hyp's memory accesses (queue entries, device contexts)
/// and device accesses both ways (`arch::pcie`).
pub fn fence_io() {
    // SAFETY: a fence only orders memory and device accesses.
    unsafe { core::arch::asm!("fence iorw, iorw", options(nostack)) };
}

/// `fence.i`: make stores visible to this hart's instruction fetch.
pub fn fence_i() {
    // SAFETY: only synchronises the instruction stream.
    unsafe { core::arch::asm!("fence.i", options(nostack)) };
}

/// `hfence.gvma x0, x0`: flush all G-stage (and combined) translations on this hart.
pub fn hfence_gvma_all() {
    // SAFETY: a TLB flush has no effect on memory; encoded by hand because the
    // assembler is not told about the H extension.
    unsafe { core::arch::asm!(".insn r 0x73, 0, 0x31, x0, x0, x0", options(nostack)) };
}

/// `hfence.vvma x0, x0`: flush all VS-stage translations of the current VMID.
pub fn hfence_vvma_all() {
    // SAFETY: a TLB flush has no effect on memory.
    unsafe { core::arch::asm!(".insn r 0x73, 0, 0x11, x0, x0, x0", options(nostack)) };
}

/// Set the per-hart pointer kept in `tp` (hyp's "current hart" register).
pub fn set_hart_local(ptr: usize) {
    // SAFETY: hyp reserves `tp` for this pointer; the compiler never allocates `tp`
    // (it is the ABI thread pointer) and the world switch saves/restores it.
    unsafe { core::arch::asm!("mv tp, {0}", in(reg) ptr, options(nomem, nostack)) };
}

/// The per-hart pointer set by [`set_hart_local`].
pub fn hart_local() -> usize {
    let v: usize;
    // SAFETY: reads a register.
    unsafe { core::arch::asm!("mv {0}, tp", out(reg) v, options(nomem, nostack)) };
    v
}

/// Current value of the `time` CSR (ticks of `timebase-frequency`).
pub fn time() -> u64 {
    csr::read_time()
}

/// hyp's IPIs through its own S-level IMSIC files (AIA hosts): one reserved identity,
/// written to the target hart's S-file `seteipnum_le` — a store instead of an SBI call
/// into M-mode (OpenSBI's IPI costs about 2,800 instructions under QEMU).
struct ImsicIpis {
    /// The identity (enabled in every hart's S-file, not used by any device).
    id: u32,
    /// Physical address of each hart's S-file page (by hart id; 0: use SBI).
    page: [usize; entry::MAX_HARTS],
}

static IMSIC_IPIS: spin::Once<ImsicIpis> = spin::Once::new();

/// From now on send IPIs as identity `id` to the S-level IMSIC file at `page(hartid)`
/// (`None`: SBI for that hart). Boot hart, before the other harts start; every hart
/// enables `id` in its own file ([`hostirq::aia::hart_init`](crate::hostirq)).
pub fn use_imsic_ipis(id: u32, page: impl Fn(HartId) -> Option<usize>) {
    IMSIC_IPIS.call_once(|| ImsicIpis {
        id,
        page: core::array::from_fn(|h| page(HartId(h)).unwrap_or(0)),
    });
}

/// The identity hyp's IPIs use in its S-level IMSIC files, if it sends them there.
pub fn imsic_ipi_id() -> Option<u32> {
    IMSIC_IPIS.get().map(|k| k.id)
}

/// hyp's IPIs through an ACLINT SSWI (hosts with no IMSIC but an S-mode software
/// interrupt device, QEMU `-M virt,aclint=on`): a store of 1 to the target hart's
/// `SETSSIP` register raises its `sip.SSIP` — again a store instead of an SBI call.
/// By hart id; 0: use SBI.
static SSWI_IPIS: spin::Once<[usize; entry::MAX_HARTS]> = spin::Once::new();

/// From now on send IPIs to hart `h` by a store to its `SETSSIP` register at `reg(h)`
/// (`None`: SBI for that hart). Boot hart, before the other harts start.
pub fn use_sswi_ipis(reg: impl Fn(HartId) -> Option<u64>) {
    SSWI_IPIS.call_once(|| core::array::from_fn(|h| reg(HartId(h)).unwrap_or(0) as usize));
}

/// Interrupt hart `to`: an MSI into its S-level IMSIC file when [`use_imsic_ipis`] set
/// one up, a store to its ACLINT SSWI register when [`use_sswi_ipis`] did, else SBI sPI
/// `send_ipi`. An error is not looked at: the IPI only makes the
/// hart look at its vCPUs, it carries nothing.
pub fn send_ipi(to: HartId) {
    if let Some(k) = IMSIC_IPIS.get() {
        if let Some(&page) = k.page.get(to.0).filter(|&&p| p != 0) {
            // Every memory access before (the kick's RMW) is ordered before the MSI:
            // the woken hart re-reads that state.
            // SAFETY: a fence only orders accesses.
            unsafe { core::arch::asm!("fence iorw, iorw", options(nostack)) };
            // SAFETY: `seteipnum_le` of a hart's S-level interrupt file, inside the
            // IMSIC window of the host DTB (`use_imsic_ipis`); the store only sets a
            // pending bit of hyp's own file.
            unsafe { core::ptr::write_volatile(page as *mut u32, k.id) };
            return;
        }
    }
    if let Some(regs) = SSWI_IPIS.get() {
        if let Some(&reg) = regs.get(to.0).filter(|&&r| r != 0) {
            // Ordered as the MSI above: the woken hart re-reads the kick's state.
            // SAFETY: a fence only orders accesses.
            unsafe { core::arch::asm!("fence iorw, iorw", options(nostack)) };
            // SAFETY: the `SETSSIP` register of hart `to` in an ACLINT SSWI of the host
            // DTB (`use_sswi_ipis`, `platform::HartInfo::sswi`); writing 1 only sets
            // that hart's `sip.SSIP`.
            unsafe { core::ptr::write_volatile(reg as *mut u32, 1) };
            return;
        }
    }
    let _ = sbi::send_ipi(to);
}

/// Take this hart's pending IPI, if any: clear `sip.SSIP` and, with IMSIC IPIs, the
/// identity's pending bit in the hart's S-file. Returns whether one was pending.
pub fn take_ipi() -> bool {
    let mut took = false;
    if csr::sip::read() & csr::irq_bits::SSI != 0 {
        csr::sip::clear(csr::irq_bits::SSI);
        took = true;
    }
    if let Some(k) = IMSIC_IPIS.get() {
        let bit = 1usize << (k.id % 64);
        // RV64: the even-numbered `eip` registers, 64 identities each.
        csr::siselect::write(0x80 + 2 * (k.id as usize / 64));
        if csr::sireg::read() & bit != 0 {
            csr::sireg::clear(bit);
            took = true;
        }
    }
    took
}

/// Make an IPI pending on this hart again (one [`take_ipi`] consumed for someone else).
pub fn raise_ipi_self() {
    match IMSIC_IPIS.get() {
        Some(k) => {
            csr::siselect::write(0x80 + 2 * (k.id as usize / 64));
            csr::sireg::set(1usize << (k.id % 64));
        }
        None => csr::sip::set(csr::irq_bits::SSI),
    }
}

/// Start hart `hart` at `_secondary_start`, which calls `secondary_main(hart, opaque)`
/// (SBI HSM `hart_start`). The SBI error if the firmware refused.
pub fn start_hart(hart: HartId, opaque: usize) -> Result<(), isize> {
    let r = sbi::hart_start(hart, entry::secondary_entry(), opaque);
    if r.error == 0 {
        Ok(())
    } else {
        Err(r.error)
    }
}

/// Write bytes to the console (SBI DBCN `console_write`; the firmware owns the UART).
pub fn console_write(bytes: &[u8]) {
    sbi::console_write(bytes);
}

/// Power the machine off when there is no exit device (SBI SRST shutdown).
pub fn power_off(failure: bool) -> ! {
    sbi::shutdown(failure)
}
