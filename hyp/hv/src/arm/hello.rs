//! The built-in test guest (`cargo xtask run --arch aarch64 --hello`, suite case
//! `aarch64-hello`): one tiny EL1 guest (`arch::hello_guest`) under stage 2, run when
//! hyp's command line has no `config=`.
//!
//! What it proves: the EL2 entry, the vectors and the world switch (`eret` to EL1 and
//! back through `VBAR_EL2`), stage-2 translation built by the architecture-neutral
//! `gstage` walk over the VMSAv8-64 format (guest RAM at IPA 0x4000_0000, offset-mapped
//! to host 0x4800_0000), `ESR_EL2` decoding (HVC64; a stage-2 data abort with its IPA
//! from `HPFAR_EL2` and `FAR_EL2`), the PL011 console and power-off through PSCI.
use crate::arch::{self, hello_guest, psci, sysreg, Context, Stage2Format};
use crate::gstage::{GStage, R, W, X};
use crate::println;

use super::ec;

/// The guest's RAM: at this IPA ...
const GUEST_RAM_IPA: u64 = 0x4000_0000;
/// ... backed by host RAM here (QEMU `-m 256M`: RAM is 0x4000_0000..0x5000_0000; hyp's
/// image, stacks and heap end below 0x4300_0000) ...
const GUEST_RAM_HOST: u64 = 0x4800_0000;
/// ... of this size.
const GUEST_RAM_SIZE: u64 = 2 << 20;
/// The guest's VMID.
const VMID: u16 = 1;

/// What the exit handler tells the run loop.
enum Next {
    /// Enter the guest again.
    Resume,
    /// Power off; `true` on failure.
    PowerOff(bool),
}

/// Build the guest, run it until it powers off; `Ok(failure)`.
pub fn run_hello_guest() -> Result<bool, &'static str> {
    let payload = hello_guest::payload();
    // SAFETY: [GUEST_RAM_HOST, + GUEST_RAM_SIZE) is RAM of QEMU `virt` with `-m 256M`
    // (xtask's command line), above hyp's image, stacks and heap (checked just below),
    // and no Rust reference points into it.
    let ram =
        unsafe { arch::phys::PhysRange::new(GUEST_RAM_HOST as usize, GUEST_RAM_SIZE as usize) };
    if (arch::image_range().1 as u64) > GUEST_RAM_HOST {
        return Err("guest RAM overlaps hyp's image");
    }
    if !ram.write(0, payload) {
        return Err("payload larger than guest RAM");
    }
    arch::fence_i();

    let mut s2 = GStage::new();
    s2.map(GUEST_RAM_IPA, GUEST_RAM_HOST, GUEST_RAM_SIZE, R | W | X)
        .map_err(|_| "stage-2 map of guest RAM failed")?;
    let vttbr = s2.root_register(VMID);
    sysreg::vtcr_el2::write(arch::vmsa_s2::VTCR);
    sysreg::vttbr_el2::write(vttbr);
    sysreg::hcr_el2::write(sysreg::hcr::VM | sysreg::hcr::TSC | sysreg::hcr::RW);
    sysreg::sctlr_el1::write(sysreg::SCTLR_EL1_RESET);
    arch::hfence_gvma_all();
    println!(
        "hyp: stage 2: IPA {GUEST_RAM_IPA:#x}+{GUEST_RAM_SIZE:#x} -> host {GUEST_RAM_HOST:#x} (Normal WB, RWX), {} root entries, VTCR_EL2 {:#x}, VTTBR_EL2 {vttbr:#x}",
        arch::Stage2::ROOT_ENTRIES,
        arch::vmsa_s2::VTCR,
    );
    println!(
        "hyp: guest: {} bytes of EL1 code at IPA {GUEST_RAM_IPA:#x}",
        payload.len()
    );

    let mut ctx = Context {
        pc: GUEST_RAM_IPA,
        pstate: sysreg::SPSR_EL1H_MASKED as u64,
        ..Context::default()
    };
    let mut exits = 0u32;
    loop {
        arch::enter_guest(&mut ctx);
        exits += 1;
        match handle_exit(&mut ctx) {
            Next::Resume => {}
            Next::PowerOff(failure) => {
                println!("hyp: guest exits: {exits}");
                return Ok(failure);
            }
        }
        if exits > 100 {
            println!("hyp: guest exit limit reached");
            return Ok(true);
        }
    }
}

/// Decode and handle one exit of the guest.
fn handle_exit(ctx: &mut Context) -> Next {
    if ctx.vector != arch::switch::vector::SYNC {
        println!(
            "hyp: unexpected guest exit through vector {} at pc {:#x}",
            ctx.vector, ctx.pc
        );
        return Next::PowerOff(true);
    }
    let esr = ctx.esr;
    match (esr >> 26) & 0x3f {
        ec::HVC64 => hvc(ctx),
        ec::SMC64 => {
            // SMC is trapped before it executes: skip it, answer "not supported".
            ctx.x[0] = psci::NOT_SUPPORTED as u64;
            ctx.pc += 4;
            Next::Resume
        }
        ec::DABT_LOW => data_abort(ctx),
        ec => {
            println!(
                "hyp: unhandled guest exit: EC {ec:#x}, ESR_EL2 {esr:#x}, pc {:#x}, FAR_EL2 {:#x}",
                ctx.pc, ctx.far
            );
            Next::PowerOff(true)
        }
    }
}

/// An SMCCC call through `hvc` (`ELR_EL2` already points past it): the function id in
/// w0, arguments from x1, the result in x0.
fn hvc(ctx: &mut Context) -> Next {
    let fid = ctx.x[0] as u32;
    match fid {
        psci::PSCI_VERSION => {
            // PSCI 1.1: major in bits 30:16, minor in 15:0 (DEN 0022, 5.1.1).
            ctx.x[0] = 0x0001_0001;
            println!("hyp: guest hvc PSCI_VERSION -> 0x10001 (1.1)");
        }
        hello_guest::HELLO => {
            println!("hyp: guest hvc HELLO x1={:#x}", ctx.x[1]);
            ctx.x[0] = 0;
        }
        psci::SYSTEM_OFF => {
            println!("hyp: guest hvc PSCI SYSTEM_OFF");
            return Next::PowerOff(false);
        }
        _ => {
            println!("hyp: guest hvc {fid:#x}: not supported");
            ctx.x[0] = psci::NOT_SUPPORTED as u64;
        }
    }
    Next::Resume
}

/// A stage-2 data abort: the IPA from `HPFAR_EL2.FIPA` (bits 43:4 = IPA 51:12) and the
/// page offset from `FAR_EL2`; with a valid syndrome (`ISV`), the access from `SAS`,
/// `SRT`, `WnR`. Emulated as a device that reads as zero and ignores writes.
fn data_abort(ctx: &mut Context) -> Next {
    let esr = ctx.esr;
    let iss = esr & 0x1ff_ffff;
    let ipa = (((ctx.hpfar >> 4) & ((1 << 40) - 1)) << 12) | (ctx.far & 0xfff);
    let isv = iss & (1 << 24) != 0;
    let dfsc = iss & 0x3f;
    if !isv {
        println!(
            "hyp: guest data abort at IPA {ipa:#x} (FAR_EL2 {:#x}) without a valid syndrome, ESR_EL2 {esr:#x}, DFSC {dfsc:#x}",
            ctx.far
        );
        return Next::PowerOff(true);
    }
    let size = 1u32 << ((iss >> 22) & 3);
    let srt = ((iss >> 16) & 0x1f) as usize;
    let write = iss & (1 << 6) != 0;
    let sf = iss & (1 << 15) != 0;
    let reg = if srt == 31 {
        alloc::string::String::from("zr")
    } else {
        alloc::format!("{}{srt}", if sf { 'x' } else { 'w' })
    };
    println!(
        "hyp: guest data abort: {} of {size} bytes at IPA {ipa:#x} (FAR_EL2 {:#x}, DFSC {dfsc:#x}: translation fault level {}), {} {reg}; emulated as {}",
        if write { "write" } else { "read" },
        ctx.far,
        dfsc & 3,
        if write { "from" } else { "into" },
        if write { "write ignored" } else { "read as zero" },
    );
    if !write && srt != 31 {
        ctx.x[srt] = 0;
    }
    // IL: a 32-bit instruction (always, from AArch64).
    ctx.pc += if esr & (1 << 25) != 0 { 4 } else { 2 };
    Next::Resume
}
