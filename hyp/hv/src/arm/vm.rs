//! A guest from the configuration on aarch64: its RAM (placed by xtask, mapped at
//! `hyp_config::GUEST_RAM_BASE` by stage 2), its GICv3 (`virq_arm::gicv3::VGicV3`: the
//! distributor and redistributors emulated on stage-2 data aborts, delivery through the
//! list registers), the PL011 passed through with its SPI `HW`-linked, and one
//! [`Vcpu`] per CPU.
//!
//! Guest physical map (the same addresses as QEMU `virt`, so the guest DTB looks
//! familiar): GICD at 0x0800_0000, GICR from 0x080a_0000 (128 KiB per vCPU), PL011 at
//! 0x0900_0000, RAM at 0x8000_0000.
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8};

use hyp_config::{Device, Topology, GUEST_RAM_BASE};
use spin::{Mutex, Once};
use virq_arm::gicv3::{new_inbox, Inbox, Passthrough, VGicV3};
use virq_core::ack::{AckNotifiers, InFlight};
use virq_core::block::VcpuBlock;
use virq_core::route::{RouteTable, Trigger};

use crate::arch::{self, gic, phys::PhysRange, sysreg, HartId};
use crate::gstage::{GStage, R, W, X};
use crate::println;

use super::HostInfo;

/// SPIs of the guest GIC (INTIDs 32..96).
pub const SPIS: usize = 64;
/// vCPUs a guest can have here.
pub const VCPUS: usize = 8;
/// The guest's GIC model.
pub type Gic = VGicV3<SPIS, VCPUS>;

/// Guest-physical distributor.
pub const GICD_IPA: u64 = 0x0800_0000;
/// Its size.
pub const GICD_SIZE: u64 = 0x1_0000;
/// Guest-physical first redistributor.
pub const GICR_IPA: u64 = 0x080a_0000;
/// QEMU `virt`'s PL011, at the same address on both sides.
pub const UART_BASE: u64 = 0x0900_0000;
/// The PL011's INTID (SPI 1), on both sides.
pub const UART_INTID: u32 = 33;
/// The guest's VMID.
const VMID: u16 = 1;
/// Physical INTIDs the route table covers (QEMU `virt`'s SPIs are below 288).
pub const MAX_PIRQ: usize = 288;
/// Virtual INTIDs with ack notifiers (the guest GIC's).
pub const MAX_VIRQ: usize = 32 + SPIS;
/// Software-path interrupts one vCPU can have in flight.
pub const INFLIGHT_SLOTS: usize = 8;
/// Storm guard of [`Link::Immediate`]: claims of a source without a guest completion
/// before hyp masks it until the guest completes.
pub const STORM_LIMIT: u32 = 5000;

/// How a passthrough SPI's physical interrupt is completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// An `HW`-linked list register: the guest's deactivate deactivates the physical
    /// interrupt, in hardware, with no exit (the default).
    Hw,
    /// The software path (seed 004 on the GIC it comes from, with seed 001's deferred
    /// complete): the list register asks for an EOI maintenance interrupt; at the exit
    /// the vGIC's sync reports the guest's deactivate, the vCPU's `InFlight` entry is
    /// folded and its ack notifier — the route's token — runs outside the locks; the
    /// route table says whether to deactivate the physical interrupt now.
    Software,
    /// Deactivate the physical interrupt right after the claim, before the guest ran:
    /// a level source re-fires at once — the storm, for demonstration; after
    /// [`STORM_LIMIT`] claims without a guest completion hyp masks the source until
    /// the guest completes.
    Immediate,
}

/// `Vcpu::power` values (PSCI's view of a vCPU).
pub mod power {
    /// Off: its CPU idles.
    pub const OFF: u8 = 0;
    /// `CPU_ON` accepted; its CPU has not reset it yet.
    pub const ON_PENDING: u8 = 1;
    /// Running (or blocked in WFI).
    pub const ON: u8 = 2;
}

/// One vCPU; vCPU `i` runs on CPU `i` (its home, in `block`).
pub struct Vcpu {
    /// Blocking and kicks (virq-core's protocol).
    pub block: VcpuBlock,
    /// INTIDs raised outside the GIC's lock (flushed before entry).
    pub inbox: Inbox,
    /// [`power`].
    pub power: AtomicU8,
    /// Where `CPU_ON` starts it: entry point and `x0`.
    pub start: Mutex<(u64, u64)>,
    /// Exits by class (see `run::ExitClass`).
    pub exits: [AtomicU64; 8],
    /// Host interrupts its CPU took, by kind (see `run::IRQ_NAMES`).
    pub irqs: [AtomicU64; 5],
    /// Software-path passthrough interrupts delivered and not yet deactivated.
    pub inflight: InFlight<INFLIGHT_SLOTS>,
}

/// The guest.
pub struct Vm {
    /// From the configuration.
    pub name: String,
    /// Its RAM in host memory.
    pub ram: PhysRange,
    /// Bytes of RAM.
    pub ram_size: u64,
    /// `VTTBR_EL2`.
    pub vttbr: usize,
    /// The GIC model, shared by the vCPUs.
    pub gic: Mutex<Gic>,
    /// vCPU `i` runs on CPU `i`.
    pub vcpus: Vec<Vcpu>,
    /// Whether the guest owns the PL011.
    pub uart: bool,
    /// How the PL011's SPI is completed.
    pub link: Link,
    /// Physical → virtual routes of the passthrough SPIs (virq-core).
    pub routes: RouteTable<MAX_PIRQ>,
    /// Each virtual INTID's ack notifier (its route's token).
    pub acks: AckNotifiers<MAX_VIRQ>,
    /// Claims of the PL011's SPI since the guest last completed it ([`Link::Immediate`]).
    pub storm: AtomicU32,
    /// Physical deactivates done for guest completions (software path) or at once
    /// (immediate).
    pub deactivations: AtomicU64,
}

impl Vm {
    /// Is `[ipa, ipa + len)` inside the guest's RAM?
    pub fn in_ram(&self, ipa: u64, len: u64) -> bool {
        ipa >= GUEST_RAM_BASE
            && ipa
                .checked_add(len)
                .is_some_and(|e| e <= GUEST_RAM_BASE + self.ram_size)
    }
}

static VM: Once<Vm> = Once::new();

/// The guest, once [`boot`] published it.
pub fn vm() -> Option<&'static Vm> {
    VM.get()
}

/// Boot CPU: the host GIC, the configuration, the guest; then start the other CPUs.
pub fn boot(host: &HostInfo) -> Result<(), String> {
    let spis = gic::init_distributor(host.gic);
    if !gic::init_cpu() {
        return Err("boot CPU: no redistributor".into());
    }
    let (img_start, img_end) = arch::image_range();
    let (mem_base, mem_size) = host.memory;
    let allowed = |addr: u64, len: u64| {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        addr >= mem_base
            && end <= mem_base + mem_size
            && (end <= img_start as u64 || addr >= img_end as u64)
    };
    let config = crate::blob::load(host.config.as_deref(), allowed)
        .map_err(|e| format!("configuration: {}: {}", e.field, e.message))?;
    let [g] = config.guests.as_slice() else {
        return Err(format!(
            "configuration: guest: {} guests; hyp on aarch64 runs one so far",
            config.guests.len()
        ));
    };
    if g.topology != Topology::Vgicv3 {
        return Err("configuration: guest[0].topology: aarch64 guests need vgicv3".into());
    }
    let vcpus = g.vcpus as usize;
    if vcpus > host.cpus.min(VCPUS) {
        return Err(format!(
            "configuration: guest[0].vcpus: {vcpus} vCPUs, but {} CPUs (hyp on aarch64 gives each vCPU its own CPU so far)",
            host.cpus.min(VCPUS)
        ));
    }
    if g.devices.contains(&Device::Vuart) {
        return Err("configuration: guest[0].devices: vuart is not on aarch64 yet".into());
    }
    let ram_size = g.ram_size();
    if !allowed(g.ram_host_base, ram_size) {
        return Err("configuration: guest[0].memory_mb: RAM outside free host RAM".into());
    }
    // SAFETY: the range is host RAM outside hyp's image, stacks and heap (checked by
    // `allowed` just above), given to this guest alone; hyp holds no reference into it.
    let ram = unsafe { PhysRange::new(g.ram_host_base as usize, ram_size as usize) };

    let mut s2 = GStage::new();
    s2.map(GUEST_RAM_BASE, g.ram_host_base, ram_size, R | W | X)
        .map_err(|_| String::from("stage 2: guest RAM"))?;
    let uart = g.owns_uart();
    if uart {
        s2.map(UART_BASE, UART_BASE, 0x1000, R | W)
            .map_err(|_| String::from("stage 2: PL011"))?;
    }
    let vttbr = s2.root_register(VMID);
    // The tables live as long as the guest: for good.
    core::mem::forget(s2);

    let mut model = Gic::new(vcpus).map_err(|e| format!("vGIC: {e:?}"))?;
    for v in 0..vcpus {
        model.set_ppi_passthrough(
            v,
            gic::VTIMER_PPI,
            Passthrough::Hw {
                pintid: gic::VTIMER_PPI,
            },
        );
    }
    let link = match g.eoi {
        hyp_config::Eoi::Immediate => Link::Immediate,
        hyp_config::Eoi::Deferred => Link::Software,
        hyp_config::Eoi::Hw => Link::Hw,
    };
    let routes = RouteTable::new();
    let acks = AckNotifiers::new();
    if uart {
        let pass = match link {
            Link::Hw => Passthrough::Hw { pintid: UART_INTID },
            Link::Software | Link::Immediate => Passthrough::Software,
        };
        model.set_passthrough(UART_INTID, pass);
        let token = routes
            .route(UART_INTID, 0, UART_INTID, Trigger::Level)
            .map_err(|e| format!("route of the PL011's SPI: {e:?}"))?;
        acks.register(UART_INTID, token)
            .map_err(|e| format!("ack notifier of the PL011's SPI: {e}"))?;
    }

    let dtb_off = ram_size - hyp_config::DTB_AREA;
    let dtb = super::fdt::build(g, vcpus, uart).map_err(|e| format!("guest DTB: {e:?}"))?;
    if dtb.len() as u64 > hyp_config::DTB_AREA || !ram.write(dtb_off as usize, &dtb) {
        return Err("guest DTB larger than its area".into());
    }
    let entry = GUEST_RAM_BASE + g.kernel.offset;
    let dtb_ipa = GUEST_RAM_BASE + dtb_off;
    let vcpu_table = (0..vcpus)
        .map(|i| Vcpu {
            block: VcpuBlock::new(i),
            inbox: new_inbox(),
            power: AtomicU8::new(if i == 0 {
                power::ON_PENDING
            } else {
                power::OFF
            }),
            start: Mutex::new(if i == 0 { (entry, dtb_ipa) } else { (0, 0) }),
            exits: Default::default(),
            irqs: Default::default(),
            inflight: InFlight::new(),
        })
        .collect();
    println!(
        "hyp: guest {}: {} vCPUs, {} MiB RAM at IPA {GUEST_RAM_BASE:#x} (host {:#x}), kernel at {entry:#x}, DTB at {dtb_ipa:#x} ({} bytes), vGICv3 (GICD {GICD_IPA:#x}, GICR {GICR_IPA:#x}), {}",
        g.name,
        vcpus,
        g.memory_mb,
        g.ram_host_base,
        dtb.len(),
        if uart { alloc::format!("PL011 passed through (INTID 33, {link:?} link)") } else { "no UART".into() }
    );
    VM.call_once(|| Vm {
        name: g.name.clone(),
        ram,
        ram_size,
        vttbr,
        gic: Mutex::new(model),
        vcpus: vcpu_table,
        uart,
        link,
        routes,
        acks,
        storm: AtomicU32::new(0),
        deactivations: AtomicU64::new(0),
    });
    if uart {
        if UART_INTID >= gic::SPI_BASE + spis {
            return Err("host GIC has no SPI for the PL011".into());
        }
        gic::enable_spi(UART_INTID, false, 0);
    }
    for cpu in 1..vcpus {
        if let Err(e) = arch::start_hart(HartId(cpu), cpu) {
            return Err(format!("PSCI CPU_ON of CPU {cpu}: error {e}"));
        }
    }
    Ok(())
}

/// This CPU's EL2 state for running vCPU `cpu` of `vm`: traps, stage 2, timer, the
/// vCPU's identity registers.
pub fn setup_cpu(vm: &Vm, cpu: usize) {
    use sysreg::hcr;
    sysreg::vtcr_el2::write(arch::vmsa_s2::VTCR);
    sysreg::vttbr_el2::write(vm.vttbr);
    sysreg::hcr_el2::write(
        hcr::VM
            | hcr::FMO
            | hcr::IMO
            | hcr::AMO
            | hcr::FB
            | hcr::BSU_IS
            | hcr::TWI
            | hcr::TID3
            | hcr::TSC
            | hcr::RW
            | hcr::APK
            | hcr::API,
    );
    // FEAT_HCX (ID_AA64MMFR1_EL1.HCX, bits 43:40): let the guest use FEAT_MOPS, which
    // Linux advertises to user space when the CPU has it.
    if (sysreg::id_aa64mmfr1_el1::read() >> 40) & 0xf != 0 {
        sysreg::hcrx_el2::write(sysreg::HCRX_MSCEN);
    }
    sysreg::cnthctl_el2::write(sysreg::CNTHCTL_EL1PCTEN);
    sysreg::cntvoff_el2::write(0);
    sysreg::vpidr_el2::write(sysreg::midr_el1::read());
    sysreg::vmpidr_el2::write((1 << 31) | virq_arm::gicv3::affinity_of(cpu) as usize);
    arch::hfence_gvma_all();
}
