//! hyp on aarch64 (issue 13): EL2 boot on QEMU arm `virt` (`virtualization=on`,
//! `gic-version=3`), then either a Linux guest from the config blob (`config=ADDR` on
//! hyp's command line, as on riscv64) on a guest-visible GICv3, or — with no
//! `config=` — the tiny built-in EL1 test guest.
//!
//! | file | what |
//! |---|---|
//! | `mod.rs` | the entries (`boot_main`, `secondary_main`, fatal traps), the host DTB, `ESR_EL2` classes |
//! | `hello.rs` | the built-in test guest |
//! | `layout.rs` | a guest's physical map (GIC frames, PL011) |
//! | `vm.rs` | a guest from the configuration: RAM, stage 2, vGICv3, vCPUs |
//! | `sched.rs` | each CPU's loop: the vCPUs homed there in turn, host interrupts, blocking, idling, migration (`migrate_ms`) |
//! | `exit.rs` | a vCPU's exits: WFI, PSCI, trapped system registers, vGIC MMIO, injected faults |
//! | `psci.rs` | PSCI and SMCCC for guests (`hvc`) |
//! | `fdt.rs` | the guest's device tree |
//! | `gicv4.rs` | GICv4.0 (`topology = "vgicv4"`): the host ITS driver, host LPIs, a vPE per vCPU, its doorbell through virq-core's `Doorbell`, test vLPIs |
//! | `vits.rs` | a vgicv4 guest's ITS: its frames trapped, `virq_arm::vits` commands applied on the host ITS (VMAPTI, VMOVI, INV, …), guest DeviceID → host DeviceID |
//! | `vpl011.rs` | hyp's emulated PL011, for a guest that does not own QEMU's |
//! | `pcie.rs` | host PCIe functions given to a guest: BARs in its stage 2, its trapped ECAM window, its DTB node, the SMMU attach |
//! | `smmu.rs` | the host SMMUv3: bring-up, a stage-2-only STE per passed PCIe function (the guest's own stage-2 tables), event records counted |
//! | `idregs.rs` | the ID registers guests read: features hyp does not switch hidden |
//!
//! Each vCPU has a home CPU (which moves with the test knob `migrate_ms`:
//! `sched.rs`, "Migration"); a CPU with one vCPU keeps its EL1 system registers,
//! timer and list registers live between exits, one with several switches them
//! (`arch::el1`) when it changes vCPU.
use alloc::vec::Vec;

use crate::arch::{self, sysreg, HartId};
use crate::{heap, println};

mod exit;
mod fdt;
mod gicv4;
mod hello;
mod idregs;
mod layout;
mod pcie;
mod psci;
mod sched;
mod smmu;
mod vits;
mod vm;
mod vpl011;

/// `ESR_EL2.EC` values hyp handles (Arm ARM D24, "ESR_EL2").
pub mod ec {
    /// `wfi`/`wfe` trapped (`HCR_EL2.TWI`).
    pub const WFX: u64 = 0x01;
    /// `hvc` from AArch64.
    pub const HVC64: u64 = 0x16;
    /// `smc` from AArch64 (trapped by `HCR_EL2.TSC`).
    pub const SMC64: u64 = 0x17;
    /// `msr`/`mrs` trapped (here: `ICC_SGI1R_EL1`, the physical timer).
    pub const SYSREG: u64 = 0x18;
    /// Instruction abort from a lower EL.
    pub const IABT_LOW: u64 = 0x20;
    /// Data abort from a lower EL.
    pub const DABT_LOW: u64 = 0x24;
}

/// Where QEMU's ELF loader leaves the DTB when `x0` does not say: the start of RAM
/// (hw/arm/boot.c places it below the ELF image).
const DTB_AT_RAM_START: usize = 0x4000_0000;

/// What hyp takes from the host DTB.
pub struct HostInfo {
    /// `/chosen/bootargs`' `config=` value.
    pub config: Option<alloc::string::String>,
    /// The GICv3's frames.
    pub gic: arch::gic::GicAddrs,
    /// CPUs (`/cpus/cpu@*`).
    pub cpus: usize,
    /// The first RAM region: base and size.
    pub memory: (u64, u64),
    /// The ITS's control frame (`arm,gic-v3-its` under the GIC node), if any.
    pub its: Option<usize>,
    /// The PCIe host bridge (`pci-host-ecam-generic`), if any.
    pub pcie: Option<crate::pci::PcieHost>,
    /// The SMMUv3 (`arm,smmu-v3`; `-M virt,iommu=smmuv3`), if any.
    pub smmu: Option<smmu::SmmuInfo>,
    /// `/chosen/rng-seed` (QEMU: 32 random bytes; empty if none): the key each guest's
    /// own seed is derived from (`hyp_config::seed`).
    pub rng_seed: Vec<u8>,
}

/// The host DTB's `arm,smmu-v3` node: its window, phandle and named SPIs (`interrupts`
/// cells `<0 spi flags>` → INTID 32 + spi, in `interrupt-names` order).
fn smmu_info(fdt: &::fdt::Fdt<'_>) -> Option<smmu::SmmuInfo> {
    let n = fdt.find_compatible(&["arm,smmu-v3"])?;
    let r = n.reg()?.next()?;
    let cells: Vec<u32> = n
        .property("interrupts")
        .map(|p| {
            p.value
                .chunks_exact(4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
        .unwrap_or_default();
    let names = n
        .property("interrupt-names")
        .map(|p| {
            p.value
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| alloc::string::String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let irqs = names
        .into_iter()
        .zip(cells.chunks_exact(3))
        .filter(|(_, c)| c[0] == 0)
        .map(|(name, c)| (name, 32 + c[1]))
        .collect();
    Some(smmu::SmmuInfo {
        base: r.starting_address as u64,
        size: r.size.unwrap_or(0) as u64,
        phandle: n
            .property("phandle")
            .and_then(|p| p.as_usize())
            .unwrap_or(0) as u32,
        irqs,
    })
}

/// Enumerate the host bridge (one `hyp: pci …` line per function) and bring up the
/// SMMUv3 when the host has them. A host with no bridge has no bus; an SMMU that does
/// not come up is reported, and functions behind it cannot be given to guests.
pub fn pcie_init(host: &HostInfo) -> Option<crate::pci::Bus> {
    let bus = host.pcie.as_ref().map(|h| {
        let b = crate::pci::Bus::enumerate(h);
        b.print();
        b
    });
    if let Some(info) = &host.smmu {
        if let Err(e) = smmu::init(info) {
            println!("hyp: smmu: {e}");
        }
    }
    bus
}

fn host_info(x0: usize) -> Result<HostInfo, &'static str> {
    // SAFETY: the DTB QEMU put at x0 (or at the start of RAM for an ELF kernel), below
    // hyp's image and not yet overwritten; `copy_boot_dtb` checks the magic first.
    let blob: Vec<u8> = [x0, DTB_AT_RAM_START]
        .into_iter()
        .filter(|&a| a != 0)
        .find_map(|a| unsafe { arch::phys::copy_boot_dtb(a) })
        .ok_or("no device tree at x0 or at the start of RAM")?;
    let fdt = ::fdt::Fdt::new(&blob).map_err(|_| "host device tree unreadable")?;
    let config = fdt.chosen().bootargs().and_then(|args| {
        args.split_whitespace()
            .find_map(|w| w.strip_prefix("config="))
            .map(alloc::string::String::from)
    });
    let gic = fdt
        .find_compatible(&["arm,gic-v3"])
        .ok_or("no arm,gic-v3 in the host device tree (need -M virt,gic-version=3)")?;
    let mut reg = gic.reg().ok_or("GICv3 node without reg")?;
    let d = reg.next().ok_or("GICv3 reg without a distributor")?;
    let r = reg.next().ok_or("GICv3 reg without redistributors")?;
    let its = gic
        .children()
        .find(|n| {
            n.compatible()
                .is_some_and(|c| c.all().any(|s| s == "arm,gic-v3-its"))
        })
        .and_then(|n| n.reg()?.next())
        .map(|r| r.starting_address as usize);
    let memory = fdt
        .memory()
        .regions()
        .next()
        .map(|r| (r.starting_address as u64, r.size.unwrap_or(0) as u64))
        .ok_or("no memory in the host device tree")?;
    let pcie = fdt
        .find_compatible(&["pci-host-ecam-generic"])
        .and_then(|n| crate::pci::PcieHost::from_node(&n));
    let smmu = smmu_info(&fdt);
    let rng_seed = fdt
        .find_node("/chosen")
        .and_then(|c| c.property("rng-seed"))
        .map(|p| p.value.to_vec())
        .unwrap_or_default();
    Ok(HostInfo {
        pcie,
        smmu,
        rng_seed,
        config,
        gic: arch::gic::GicAddrs {
            gicd: d.starting_address as usize,
            gicr: r.starting_address as usize,
            gicr_size: r.size.unwrap_or(0),
        },
        cpus: fdt.cpus().count().min(arch::MAX_HARTS),
        memory,
        its,
    })
}

/// Entry of the boot CPU (from `arch::aarch64::entry`): its `MPIDR_EL1.Aff0` and `x0`
/// as QEMU left it.
#[no_mangle]
pub extern "C" fn boot_main(cpu: HartId, x0: usize) -> ! {
    heap::init();
    let el = (sysreg::currentel::read() >> 2) & 3;
    println!(
        "hyp: virq hypervisor on aarch64, EL{el}, boot CPU {cpu}, heap {:x?} image {:x?}, CNTFRQ {} Hz",
        arch::heap_range(),
        arch::image_range(),
        sysreg::cntfrq_el0::read()
    );
    if el != 2 {
        println!("hyp: not started at EL2 (need -M virt,virtualization=on)");
        arch::power_off(true);
    }
    let host = match host_info(x0) {
        Ok(h) => h,
        Err(e) => {
            println!("hyp: {e}");
            arch::power_off(true)
        }
    };
    if host.config.is_none() {
        let failure = hello::run_hello_guest().unwrap_or_else(|e| {
            println!("hyp: {e}");
            true
        });
        println!("hyp: power off (status {})", failure as u8);
        arch::power_off(failure)
    }
    if let Err(e) = vm::boot(&host) {
        println!("hyp: {e}");
        arch::power_off(true)
    }
    sched::cpu_loop(cpu.0)
}

/// Entry of the other CPUs (PSCI `CPU_ON` from [`vm::boot`]).
#[no_mangle]
pub extern "C" fn secondary_main(cpu: HartId, _opaque: usize) -> ! {
    if !arch::gic::init_cpu() {
        println!("hyp: CPU {cpu}: no redistributor");
        arch::halt()
    }
    if let Err(e) = gicv4::init_cpu(cpu.0) {
        println!("hyp: CPU {cpu}: {e}");
        arch::power_off(true)
    }
    sched::cpu_loop(cpu.0)
}

/// An exception taken at EL2 itself (from the vectors): always a hyp bug.
#[no_mangle]
pub extern "C" fn fatal_host_trap(esr: usize, elr: usize, far: usize) -> ! {
    println!("hyp: FATAL exception at EL2: ESR_EL2={esr:#x} ELR_EL2={elr:#x} FAR_EL2={far:#x}");
    arch::power_off(true)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("hyp: PANIC: {info}");
    arch::power_off(true)
}
