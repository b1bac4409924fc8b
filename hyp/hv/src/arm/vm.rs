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
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};

use hyp_config::{Device, Topology, GUEST_RAM_BASE};
use spin::{Mutex, Once};
use virq_arm::gicv3::{new_inbox, Inbox, Passthrough, VGicV3};
use virq_core::ack::{AckNotifiers, InFlight};
use virq_core::block::VcpuBlock;
use virq_core::route::{RouteTable, Trigger};

use crate::arch::el1::El1State;
use crate::arch::{self, gic, phys::PhysRange, sysreg, Context, HartId};
use crate::gstage::{GStage, R, W, X};
use crate::println;

use super::gicv4::{self, VmLpis, Vpe};
use super::layout::{GICD_IPA, GICR_IPA, UART_BASE, UART_INTID};
use super::vpl011::VPl011;
use super::HostInfo;

/// SPIs of the guest GIC (INTIDs 32..96).
pub const SPIS: usize = 64;
/// vCPUs a guest can have here.
pub const VCPUS: usize = 8;
/// The guest's GIC model.
pub type Gic = VGicV3<SPIS, VCPUS>;

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

/// A vCPU's state while it is not in the CPU (only its home CPU touches it).
pub struct Saved {
    /// General, FP/SIMD and exception registers.
    pub ctx: Context,
    /// EL1 system registers, timer, GIC CPU interface (valid while not loaded).
    pub el1: El1State,
}

/// One vCPU, run by its home CPU (in `block`).
pub struct Vcpu {
    /// Its registers; locked by its home CPU while it runs it.
    pub saved: Mutex<Saved>,
    /// Blocking and kicks (virq-core's protocol).
    pub block: VcpuBlock,
    /// INTIDs raised outside the GIC's lock (flushed before entry).
    pub inbox: Inbox,
    /// [`power`].
    pub power: AtomicU8,
    /// Where `CPU_ON` starts it: entry point and `x0`.
    pub start: Mutex<(u64, u64)>,
    /// Exits by class (see `exit::ExitClass`).
    pub exits: [AtomicU64; 8],
    /// Host interrupts its CPU took while it was loaded, by kind (see
    /// `sched::IRQ_NAMES`).
    pub irqs: [AtomicU64; 8],
    /// Its vPE (`topology = "vgicv4"`).
    pub vpe: Option<Vpe>,
    /// Software-path passthrough interrupts delivered and not yet deactivated.
    pub inflight: InFlight<INFLIGHT_SLOTS>,
    /// The CPU it was first placed on (`migrate_ms`: its place in each period follows
    /// from it, `crate::migrate`).
    pub first_cpu: usize,
    /// It migrated and has not run since: its new CPU drops this VMID's stage-1 TLB
    /// entries before it runs (the guest's local invalidations on the CPUs it ran on
    /// did not reach this one).
    pub moved: AtomicBool,
}

/// A guest.
pub struct Vm {
    /// Index in the configuration (`guest[id]`).
    pub id: usize,
    /// Its stage-2 VMID (`id + 1`).
    pub vmid: u16,
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
    /// Its vCPUs.
    pub vcpus: Vec<Vcpu>,
    /// Whether the guest owns the PL011.
    pub uart: bool,
    /// hyp's emulated PL011, for a guest that does not own the real one
    /// (`devices = ["vuart"]`).
    pub vuart: Option<Mutex<VPl011>>,
    /// `[hyp] vuart = "deferred"`: its lines are kept until the machine powers off
    /// (no interleaving with the UART owner's output, for tests).
    pub vuart_deferred: Option<Mutex<Vec<String>>>,
    /// How the PL011's SPI is completed.
    pub link: Link,
    /// The CPU the physical PL011 SPI is routed to (the home of its virtual target).
    pub uart_cpu: AtomicUsize,
    /// Physical → virtual routes of the passthrough SPIs (virq-core).
    pub routes: RouteTable<MAX_PIRQ>,
    /// Each virtual INTID's ack notifier (its route's token).
    pub acks: AckNotifiers<MAX_VIRQ>,
    /// Claims of the PL011's SPI since the guest last completed it ([`Link::Immediate`]).
    pub storm: AtomicU32,
    /// The guest has stopped (PSCI SYSTEM_OFF/RESET): its vCPUs never run again.
    pub stopped: AtomicBool,
    /// It stopped on a failure.
    pub failed: AtomicBool,
    /// Physical deactivates done for guest completions (software path) or at once
    /// (immediate).
    pub deactivations: AtomicU64,
    /// Its vLPI configuration table (`topology = "vgicv4"`).
    pub lpis: Option<VmLpis>,
    /// Its guest-visible ITS (`topology = "vgicv4"`).
    pub vits: Option<super::vits::VmIts>,
    /// Host PCIe functions it owns (`pci = [...]`), in its trapped ECAM window.
    pub pci: super::pcie::GuestPci,
}

impl Vm {
    /// Kick vCPU `v` from CPU `me`: its block state, then an SGI to its home CPU
    /// unless that is `me` (which looks again before it enters any guest).
    pub fn kick(&self, me: usize, v: usize) {
        if let Some(t) = self.vcpus.get(v) {
            let home = t.block.kick();
            if home != me {
                arch::send_ipi(HartId(home));
            }
        }
    }

    /// Is `[ipa, ipa + len)` inside the guest's RAM?
    pub fn in_ram(&self, ipa: u64, len: u64) -> bool {
        ipa >= GUEST_RAM_BASE
            && ipa
                .checked_add(len)
                .is_some_and(|e| e <= GUEST_RAM_BASE + self.ram_size)
    }
}

static VMS: Once<Vec<Vm>> = Once::new();
/// `[hyp]` of the configuration and the CPUs that run vCPUs, once [`boot`] read them.
static MACHINE: Once<(hyp_config::Options, usize)> = Once::new();

/// hyp's options (`[hyp]`; the defaults before [`boot`] read them).
pub fn options() -> hyp_config::Options {
    MACHINE.get().map(|m| m.0).unwrap_or_default()
}

/// How many CPUs run vCPUs (CPUs `0..n`; each starts with at least one).
pub fn cpus() -> usize {
    MACHINE.get().map_or(1, |m| m.1)
}

/// The guests, once [`boot`] published them (empty before).
pub fn vms() -> &'static [Vm] {
    VMS.get().map_or(&[], |v| v.as_slice())
}

/// Boot CPU: the host GIC, the configuration, the guests; then start the other CPUs.
/// vCPUs are spread over the CPUs in order (the `k`-th vCPU of all guests on CPU
/// `k % cpus`); a CPU with several runs them in turn (`sched`).
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
    let cpus = host.cpus.max(1);
    if let Some(i) = config
        .guests
        .iter()
        .position(|g| g.topology == Topology::Vgicv4)
    {
        let its = host.its.ok_or_else(|| {
            format!("configuration: guest[{i}].topology: \"vgicv4\" needs a host ITS (arm,gic-v3-its; -M virt,gic-version=4)")
        })?;
        gicv4::init(its, cpus)
            .map_err(|e| format!("configuration: guest[{i}].topology: \"vgicv4\": {e}"))?;
        gicv4::init_cpu(0)?;
    }
    let mut bus = super::pcie_init(host);
    let mut next = 0usize;
    let mut vms = Vec::new();
    let deferred = config.hyp.vuart == hyp_config::VuartMode::Deferred;
    for (i, g) in config.guests.iter().enumerate() {
        let pci = super::pcie::take(i, g, bus.as_mut(), host)?;
        let seed = u16::try_from(i)
            .ok()
            .and_then(|i| hyp_config::seed::guest_rng_seed(&host.rng_seed, i));
        let given = Given { pci, seed };
        vms.push(build(i, g, &allowed, cpus, &mut next, deferred, given)?);
    }
    let uart_owner = vms.iter().any(|v| v.uart);
    VMS.call_once(|| vms);
    MACHINE.call_once(|| (config.hyp, cpus.min(next).max(1)));
    if uart_owner {
        if UART_INTID >= gic::SPI_BASE + spis {
            return Err("host GIC has no SPI for the PL011".into());
        }
        gic::enable_spi(UART_INTID, false, 0);
    }
    for cpu in 1..cpus.min(next) {
        if let Err(e) = arch::start_hart(HartId(cpu), cpu) {
            return Err(format!("PSCI CPU_ON of CPU {cpu}: error {e}"));
        }
    }
    Ok(())
}

/// What the host hands guest `i` besides its configuration.
struct Given {
    /// The host PCIe functions it owns.
    pci: super::pcie::GuestPci,
    /// Its `/chosen/rng-seed`, derived from the host's (`hyp_config::seed`).
    seed: Option<[u8; hyp_config::seed::GUEST_SEED_LEN]>,
}

/// Build guest `i`; its vCPUs get homes from `*next` on (modulo `cpus`).
fn build(
    i: usize,
    g: &hyp_config::Guest,
    allowed: &impl Fn(u64, u64) -> bool,
    cpus: usize,
    next: &mut usize,
    deferred: bool,
    given: Given,
) -> Result<Vm, String> {
    let Given { pci, seed } = given;
    let field = |k: &str| format!("configuration: guest[{i}].{k}");
    if !matches!(g.topology, Topology::Vgicv3 | Topology::Vgicv4) {
        return Err(format!(
            "{}: aarch64 guests need vgicv3 or vgicv4",
            field("topology")
        ));
    }
    let vcpus = g.vcpus as usize;
    if vcpus > VCPUS {
        return Err(format!("{}: at most {VCPUS} vCPUs", field("vcpus")));
    }
    let vuart = g.devices.contains(&Device::Vuart);
    let ram_size = g.ram_size();
    if !allowed(g.ram_host_base, ram_size) {
        return Err(format!("{}: RAM outside free host RAM", field("memory_mb")));
    }
    // SAFETY: the range is host RAM outside hyp's image, stacks and heap (checked by
    // `allowed` just above), given to this guest alone (hyp_config::validate refuses
    // overlapping guests); hyp holds no reference into it.
    let ram = unsafe { PhysRange::new(g.ram_host_base as usize, ram_size as usize) };
    let vmid = i as u16 + 1;

    let mut s2 = GStage::new();
    s2.map(GUEST_RAM_BASE, g.ram_host_base, ram_size, R | W | X)
        .map_err(|_| format!("guest[{i}]: stage 2: RAM"))?;
    let uart = g.owns_uart();
    if uart {
        s2.map(UART_BASE, UART_BASE, 0x1000, R | W)
            .map_err(|_| format!("guest[{i}]: stage 2: PL011"))?;
    }
    pci.map_bars(&mut s2)
        .map_err(|e| format!("guest[{i}]: stage 2: {e}"))?;
    let vttbr = s2.root_register(vmid);
    // The tables live as long as the guest: for good.
    core::mem::forget(s2);
    let vgicv4 = g.topology == Topology::Vgicv4;
    if !pci.functions.is_empty() {
        // The functions' DMA walks tables of its own (docs/gicv4.md §10): the CPU's
        // view plus, for a vgicv4 guest, the host ITS's translation frame at the
        // guest's `GITS_TRANSLATER` page, so a device's MSI reaches the host ITS while
        // the guest's CPU stores to that page still trap into its vITS.
        let io = super::pcie::io_stage2(&pci, g.ram_host_base, ram_size, vgicv4)
            .map_err(|e| format!("guest[{i}]: SMMU stage 2: {e}"))?;
        let io_vttbr = io.root_register(vmid);
        core::mem::forget(io);
        pci.attach(io_vttbr)
            .map_err(|e| format!("{}: {e}", field("pci")))?;
    }
    let mut model = Gic::new(vcpus).map_err(|e| format!("vGIC: {e:?}"))?;
    if vgicv4 {
        // LPIs for its vITS, vINTIDs as wide as the vPEs' tables.
        model.enable_lpis(gicv4::VID_BITS);
    }
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
            .route(UART_INTID, i as u16, UART_INTID, Trigger::Level)
            .map_err(|e| format!("route of the PL011's SPI: {e:?}"))?;
        acks.register(UART_INTID, token)
            .map_err(|e| format!("ack notifier of the PL011's SPI: {e}"))?;
    }

    let dtb_off = ram_size - hyp_config::DTB_AREA;
    let dtb = super::fdt::build(
        g,
        vcpus,
        uart || vuart,
        vgicv4,
        pci.dtb_node().as_ref(),
        seed.as_ref(),
    )
    .map_err(|e| format!("guest DTB: {e:?}"))?;
    if dtb.len() as u64 > hyp_config::DTB_AREA || !ram.write(dtb_off as usize, &dtb) {
        return Err("guest DTB larger than its area".into());
    }
    let entry = GUEST_RAM_BASE + g.kernel.offset;
    let dtb_ipa = GUEST_RAM_BASE + dtb_off;
    let homes: Vec<usize> = (0..vcpus).map(|v| (*next + v) % cpus).collect();
    let vits = if vgicv4 {
        let mut v =
            super::vits::new(i, vcpus).map_err(|e| format!("{}: {e}", field("topology")))?;
        // Each function's MSIs: guest DeviceID (its requester ID on the guest's bus,
        // the DTB's identity `msi-map`) → host DeviceID (its host requester ID: QEMU
        // `virt`'s `msi-map` is the identity too).
        for f in &pci.functions {
            let rid = u32::from(f.bdf.rid());
            v.add_device(rid, rid)
                .map_err(|e| format!("{}: {}: {e}", field("pci"), f.bdf))?;
        }
        Some(v)
    } else {
        None
    };
    let (lpis, mut vpes) = if vgicv4 {
        let (l, v) = gicv4::new_vpes(&homes).map_err(|e| format!("{}: {e}", field("topology")))?;
        (Some(l), v.into_iter().map(Some).collect())
    } else {
        (None, (0..vcpus).map(|_| None).collect::<Vec<_>>())
    };
    let vcpu_table: Vec<Vcpu> = (0..vcpus)
        .map(|v| Vcpu {
            vpe: vpes.get_mut(v).and_then(Option::take),
            saved: Mutex::new(Saved {
                ctx: Context::default(),
                el1: El1State::reset(),
            }),
            block: VcpuBlock::new(homes[v]),
            inbox: new_inbox(),
            power: AtomicU8::new(if v == 0 {
                power::ON_PENDING
            } else {
                power::OFF
            }),
            start: Mutex::new(if v == 0 { (entry, dtb_ipa) } else { (0, 0) }),
            exits: Default::default(),
            irqs: Default::default(),
            inflight: InFlight::new(),
            first_cpu: homes[v],
            moved: AtomicBool::new(false),
        })
        .collect();
    println!(
        "hyp: guest {}: {} vCPUs, {} MiB RAM at IPA {GUEST_RAM_BASE:#x} (host {:#x}), kernel at {entry:#x}, DTB at {dtb_ipa:#x} ({} bytes), vGICv3 (GICD {GICD_IPA:#x}, GICR {GICR_IPA:#x}), {}, VMID {vmid}, vCPUs on CPUs {:?}",
        g.name,
        vcpus,
        g.memory_mb,
        g.ram_host_base,
        dtb.len(),
        if uart {
            alloc::format!("PL011 passed through (INTID 33, {link:?} link)")
        } else if vuart {
            "emulated PL011".into()
        } else {
            "no UART".into()
        },
        vcpu_table.iter().map(|v: &Vcpu| v.block.home()).collect::<Vec<_>>(),
    );
    *next += vcpus;
    Ok(Vm {
        id: i,
        vmid,
        name: g.name.clone(),
        ram,
        ram_size,
        vttbr,
        gic: Mutex::new(model),
        vcpus: vcpu_table,
        uart,
        vuart: vuart.then(|| Mutex::new(VPl011::default())),
        uart_cpu: AtomicUsize::new(0),
        vuart_deferred: (vuart && deferred).then(|| Mutex::new(Vec::new())),
        link,
        routes,
        acks,
        storm: AtomicU32::new(0),
        deactivations: AtomicU64::new(0),
        stopped: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        lpis,
        vits,
        pci,
    })
}

/// This CPU's EL2 state for running guests: traps (WFE too if `trap_wfe`), the
/// stage-2 format, the timer controls, the CPU's identity as guests see it
/// (`VPIDR_EL2`).
pub fn setup_cpu(trap_wfe: bool) {
    use sysreg::hcr;
    sysreg::vtcr_el2::write(arch::vmsa_s2::VTCR);
    let wfe = if trap_wfe { hcr::TWE } else { 0 };
    sysreg::hcr_el2::write(
        wfe | hcr::VM
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
}

/// Switch this CPU's stage 2 to `vm` (`VTTBR_EL2`).
pub fn load_vm(vm: &Vm) {
    sysreg::vttbr_el2::write(vm.vttbr);
}

/// vCPU `v`'s identity (`VMPIDR_EL2`: the affinity its guest's DTB and GIC use).
pub fn load_vcpu_id(v: usize) {
    sysreg::vmpidr_el2::write((1 << 31) | virq_arm::gicv3::affinity_of(v) as usize);
}
