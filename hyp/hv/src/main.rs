//! `hyp`: a small bare-metal RISC-V hypervisor for QEMU `virt` (HS-mode payload of
//! OpenSBI at 0x8020_0000), built on `virq-core` and `virq-riscv`.
//!
//! Boot (`boot_main`, one hart): parse the host DTB, build the guests of the selected
//! profile (`config`), publish the [`world::World`], start the other harts with SBI
//! HSM, and run the scheduler (`sched`) on every hart. See `docs/hyp.md`.
//!
//! On aarch64 only `arch`, `blob`, `console`, `heap` and `gstage` of these are built,
//! and `arm/` provides the entries: EL2 boot, then a Linux guest from the config blob
//! on a vGICv3 (or, with no `config=`, the tiny built-in EL1 test guest).
#![no_std]
#![no_main]
// The aarch64 image (`arm/`) uses only the architecture-neutral modules and a part of
// each.
#![cfg_attr(target_arch = "aarch64", allow(dead_code))]

extern crate alloc;

#[cfg(target_arch = "riscv64")]
mod acct;
mod arch;
#[cfg(target_arch = "aarch64")]
mod arm;
mod blob;
#[cfg(target_arch = "riscv64")]
mod config;
mod console;
#[cfg(target_arch = "riscv64")]
mod counts;
#[cfg(target_arch = "riscv64")]
mod dmatest;
#[cfg(target_arch = "riscv64")]
mod dtb;
#[cfg(target_arch = "riscv64")]
mod exit;
mod gstage;
#[cfg(target_arch = "riscv64")]
mod guest;
#[cfg(target_arch = "riscv64")]
mod hart;
mod heap;
#[cfg(target_arch = "riscv64")]
mod hostirq;
#[cfg(target_arch = "riscv64")]
mod ids;
#[cfg(target_arch = "riscv64")]
mod iommu;
#[cfg(target_arch = "riscv64")]
mod irq;
mod migrate;
mod pci;
#[cfg(target_arch = "riscv64")]
mod platform;
#[cfg(target_arch = "riscv64")]
mod sbi;
#[cfg(target_arch = "riscv64")]
mod sched;
#[cfg(target_arch = "riscv64")]
mod shutdown;
#[cfg(target_arch = "riscv64")]
mod topology;
#[cfg(target_arch = "riscv64")]
mod vcpu;
mod vpci;
#[cfg(target_arch = "riscv64")]
mod vuart;
#[cfg(target_arch = "riscv64")]
mod world;

#[cfg(target_arch = "riscv64")]
use alloc::vec::Vec;
#[cfg(target_arch = "riscv64")]
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

#[cfg(target_arch = "riscv64")]
use arch::csr::{self, henvcfg_bits, irq_bits};
#[cfg(target_arch = "riscv64")]
use config::{EoiMode, GuestConfig};
#[cfg(target_arch = "riscv64")]
use hart::Hart;
#[cfg(target_arch = "riscv64")]
use ids::HartId;
#[cfg(target_arch = "riscv64")]
use platform::exit_machine;
#[cfg(target_arch = "riscv64")]
use world::{world, World};

#[cfg(target_arch = "riscv64")]
/// Entry of the boot hart (from the backend's boot code, declared in `arch`): its hart
/// id and the firmware's DTB.
#[no_mangle]
pub extern "C" fn boot_main(hartid: HartId, dtb: usize) -> ! {
    heap::init();
    println!(
        "hyp: virq hypervisor, boot hart {hartid}, heap {:x?} image {:x?}",
        arch::heap_range(),
        arch::image_range()
    );
    // SAFETY: `dtb` is the address OpenSBI passed in a1 and nothing has written RAM yet.
    let Some(blob) = (unsafe { arch::phys::copy_boot_dtb(dtb) }) else {
        println!("hyp: no valid DTB at {dtb:#x}");
        arch::halt();
    };
    let platform = match platform::Platform::parse(&blob, dtb as u64) {
        Ok(p) => platform::set_platform(p),
        Err(e) => {
            println!("hyp: {e}");
            arch::halt();
        }
    };
    println!(
        "hyp: {} harts, timebase {} Hz, sstc={}, plic={:x?}, aplic={:x?}, imsic={:x?}, uart={:x?}, bootargs \"{}\", guest cmdline += \"{}\"",
        platform.harts.len(),
        platform.timebase,
        platform.sstc,
        platform.plic.map(|p| p.base),
        platform.aia.aplic.map(|a| a.0),
        platform.aia.imsic.map(|a| a.0),
        platform.uart,
        platform.bootargs,
        platform.guest_append
    );
    let mut bus = pcie_init(platform);
    let world = match build_world(platform, hartid, bus.as_mut()) {
        Ok(w) => world::set_world(w),
        Err(e) => {
            println!("hyp: configuration error: {e}");
            exit_machine(0xff);
        }
    };
    let me = world
        .harts
        .iter()
        .position(|h| h.hartid == hartid)
        .unwrap_or(0);
    hostirq::init();
    irq::setup_routes();
    hart_init(me);
    attach_functions(world);
    if platform.bootarg("iommu_test") == Some("edu") {
        iommu_test(platform, bus.as_mut(), world);
    }
    for g in &world.guests {
        let v0 = &world.vcpus[g.first_vcpu];
        *v0.start.lock() = (g.entry as usize, g.dtb_gpa as usize);
        v0.hsm.store(vcpu::HSM_START_PENDING, Ordering::Release);
        println!(
            "hyp: guest {} \"{}\": {} vCPUs, RAM {:#x}+{:#x} at host {:#x}, image at host {:#x}, entry {:#x}, dtb {:#x}, eoi {}",
            g.index,
            g.cfg.name,
            g.vcpus,
            config::GUEST_RAM_BASE,
            g.cfg.ram_size,
            g.cfg.ram_host_base,
            g.cfg.ram_host_base + g.cfg.entry_offset,
            g.entry,
            g.dtb_gpa,
            if g.immediate_eoi { "immediate" } else { "deferred" }
        );
    }
    for h in &world.harts {
        if h.index == me {
            continue;
        }
        if let Err(e) = arch::start_hart(h.hartid, h.index) {
            println!("hyp: hart {} did not start ({e})", h.hartid);
        }
    }
    let (used, total) = heap::usage();
    println!("hyp: heap {used}/{total} bytes used at boot");
    sched::run()
}

#[cfg(target_arch = "riscv64")]
/// PCIe and the IOMMU (docs/hyp.md, "PCIe and the RISC-V IOMMU"): enumerate the host
/// bridge and bring the IOMMU up with every device off, before the guests are built
/// (they take their functions from the bus). Nothing here stops hyp: an IOMMU that does
/// not come up is reported and left alone (a guest that needs it is then refused).
fn pcie_init(p: &platform::Platform) -> Option<pci::Bus> {
    let mut bus = p.pcie.as_ref().map(|h| {
        let b = pci::Bus::enumerate(h);
        b.print();
        b
    });
    let info = p.iommu.as_ref()?;
    let window = match (info.at, bus.as_mut()) {
        (platform::IommuAt::Platform(base, size), _) => Some((base, size)),
        (platform::IommuAt::Pci(rid), Some(bus)) => {
            let bdf = hyp_io::pci::Bdf::from_rid(rid);
            // The PCI IOMMU reads its queues and tables by DMA: bus mastering on.
            match bus.enable(bdf, true) {
                Ok(bars) => bars
                    .iter()
                    .find(|(b, _)| b.index == 0)
                    .map(|&(b, cpu)| (cpu, b.size)),
                Err(e) => {
                    println!("hyp: iommu: {e}");
                    None
                }
            }
        }
        (platform::IommuAt::Pci(_), None) => None,
    };
    let Some((base, _)) = window.filter(|w| w.1 >= hyp_io::iommu::regs::SIZE as u64) else {
        println!("hyp: iommu: {:?}: no register window", info.at);
        return bus;
    };
    // SAFETY: the IOMMU's register window: a `reg` of the host DTB, or BAR 0 of the
    // PCI IOMMU function that hyp just assigned; only hyp drives it.
    let regs = unsafe { arch::pcie::MmioWindow::new(base as usize, hyp_io::iommu::regs::SIZE) };
    println!(
        "hyp: iommu: {:?} phandle {:#x}, registers at {base:#x}, irqs {:?}, msi-parent {:?}, capabilities {}",
        info.at,
        info.phandle,
        info.irqs,
        info.msi_parent,
        hyp_io::iommu::Capabilities(regs.read64(hyp_io::iommu::regs::CAPABILITIES))
    );
    match iommu::Iommu::init(regs, p.timebase) {
        Ok(i) => {
            iommu::set_iommu(i);
        }
        Err(e) => println!("hyp: iommu: not used: {e}"),
    }
    bus
}

#[cfg(target_arch = "riscv64")]
/// Give each guest's PCIe functions a device context whose second stage is the
/// guest's G-stage: from here on their DMA and MSIs reach that guest only.
fn attach_functions(w: &World) {
    let Some(iommu) = iommu::iommu() else { return };
    // Faults reported as they happen: the fault queue's wired interrupt (an APLIC
    // source routed to this hart's S-level file), else its MSI to that file. QEMU
    // 10.0.2's platform IOMMU sets `ipsr.fip` but sends no MSI (`fctl.WSI` = 0), so
    // the wired one is tried first.
    let wired = platform::platform().iommu.as_ref().and_then(|info| {
        let vec = iommu.lock().enable_fault_wsi()?;
        let src = *info.irqs.get(vec)?;
        hostirq::aia::take_wired_source(src).then_some(src)
    });
    match wired {
        Some(src) => println!("hyp: iommu: fault interrupts on: wired, APLIC source {src}"),
        None => {
            if let Some((addr, id)) = hostirq::aia::iommu_fault_target(arch::hart_local()) {
                if iommu.lock().enable_fault_msi(addr, id) {
                    println!("hyp: iommu: fault interrupts on: MSI to {addr:#x}, identity {id}");
                }
            }
        }
    }
    for g in &w.guests {
        // The guest's MSI page table: each vCPU's IMSIC page translated to the file
        // behind it (`topology::aia` keeps the entries current as files move).
        let gscid = g.index + 1;
        let table = g.irqchip.as_aia().filter(|_| !g.vpci.is_empty()).and_then(|aia| {
            let (base, n) = aia.imsic_pages();
            let mut i = iommu.lock();
            let t = i
                .msi_table(gscid, base, n as u64)
                .map_err(|e| println!("hyp: guest {}: no MSI page table ({e}): device MSIs follow the G-stage", g.index))
                .ok()?;
            for (gpa, pte) in aia.device_msi_ptes() {
                if let Err(e) = i.write_msi_pte(gscid, gpa, pte) {
                    println!("hyp: guest {}: MSI PTE {gpa:#x}: {e}", g.index);
                }
            }
            Some(t)
        });
        for f in &g.vpci {
            let attached = match table {
                Some(t) => iommu.lock().attach_with_msi(f.device_id, g.hgatp as u64, t),
                None => iommu.lock().attach(f.device_id, g.hgatp as u64),
            };
            match attached {
                Ok(io) => println!(
                    "hyp: guest {} \"{}\": pci {} (device ID {:#x}) attached, iohgatp {io:#x}, MSIs through {}, bars {:x?}",
                    g.index,
                    g.cfg.name,
                    f.bdf,
                    f.device_id,
                    match table {
                        Some(t) => alloc::format!("the MSI page table at {:#x}", t.base),
                        None => "the G-stage".into(),
                    },
                    f.bars.iter().map(|(b, cpu)| (b.index, *cpu, b.size)).collect::<Vec<_>>()
                ),
                Err(e) => println!(
                    "hyp: guest {} \"{}\": pci {}: not attached: {e} (its DMA faults)",
                    g.index, g.cfg.name, f.bdf
                ),
            }
        }
    }
}

#[cfg(target_arch = "riscv64")]
/// `iommu_test=edu`: the DMA proof (`dmatest`) against guest 0 before any guest runs.
fn iommu_test(p: &platform::Platform, bus: Option<&mut pci::Bus>, w: &World) {
    let (Some(iommu), Some(info)) = (iommu::iommu(), p.iommu.as_ref()) else {
        println!("hyp: dma-test: FAILED: no IOMMU");
        return;
    };
    let edu = bus
        .as_ref()
        .and_then(|b| b.find(dmatest::EDU_ID.0, dmatest::EDU_ID.1))
        .map(|f| f.bdf);
    match (edu, bus, w.guests.first()) {
        (Some(bdf), Some(bus), Some(g)) => {
            dmatest::run(bus, bdf, (iommu, info.phandle), g, p.timebase)
        }
        _ => println!("hyp: dma-test: FAILED: no edu device or no guest"),
    }
}

#[cfg(target_arch = "riscv64")]
/// Entry of the other harts (`arch::start_hart`'s `opaque`: the index in `World::harts`).
#[no_mangle]
pub extern "C" fn secondary_main(_hartid: HartId, index: usize) -> ! {
    hart_init(index);
    sched::run()
}

#[cfg(target_arch = "riscv64")]
fn hart_init(index: usize) {
    let w = world();
    arch::set_hart_local(index);
    let hart = &w.harts[index];
    // Exceptions the guest handles itself: misaligned fetch, illegal instruction,
    // breakpoint, U-mode ecall, and its own page faults.
    csr::hedeleg::write(
        (1 << 0) | (1 << 2) | (1 << 3) | (1 << 8) | (1 << 12) | (1 << 13) | (1 << 15),
    );
    csr::hideleg::write(irq_bits::VSSI | irq_bits::VSTI | irq_bits::VSEI);
    csr::hcounteren::write(!0);
    let mut envcfg = 0;
    if w.sstc {
        envcfg |= henvcfg_bits::STCE;
    }
    if platform::platform()
        .isa_extensions
        .iter()
        .any(|e| e == "svadu")
    {
        envcfg |= henvcfg_bits::ADUE;
    }
    csr::henvcfg::write(envcfg);
    csr::hvip::write(0);
    csr::hgatp::write(0);
    // Only lines with a guest interrupt file behind them (seed 003's review).
    let files = virq_core::hgei::guest_files(platform::platform().aia.guest_index_bits);
    let lines = virq_core::hgei::probe_lines(
        |v| {
            csr::hgeie::write(v as usize);
            let r = csr::hgeie::read() as u64;
            csr::hgeie::write(0);
            r
        },
        files,
    );
    hart.hgei_lines.store(lines, Ordering::Relaxed);
    let n = w.hgei.online(index, lines).unwrap_or(0);
    if w.sstc {
        csr::stimecmp::write(usize::MAX);
        csr::vstimecmp::write(usize::MAX);
    }
    if let (Some(plic), Some(ctx)) = (w.host_plic, hart.plic_ctx) {
        plic.set_threshold(ctx, 0);
    }
    irq::enable_routes_on(hart);
    hostirq::aia::hart_init();
    csr::sie::write(irq_bits::SSI | irq_bits::STI | irq_bits::SEI);
    hart.online.store(true, Ordering::Release);
    println!(
        "hyp: hart {} online (index {}), hgeie {:#x} = {} guest external lines",
        hart.hartid, index, lines, n
    );
}

#[cfg(target_arch = "riscv64")]
fn build_world(
    p: &'static platform::Platform,
    boot_hartid: HartId,
    mut bus: Option<&mut pci::Bus>,
) -> Result<World, hyp_config::Error> {
    // The guests: the config blob xtask placed (`config=`), outside hyp and the DTB.
    let (hs, he) = arch::image_range();
    let allowed = |addr: u64, len: u64| {
        let end = addr.saturating_add(len);
        p.is_ram(addr, len)
            && (end <= hs as u64 || addr >= he as u64)
            && (end <= p.dtb_range.0 || addr >= p.dtb_range.1)
    };
    let config = config::load(p.bootarg("config"), allowed)?;
    let harts: Vec<Hart> = p
        .harts
        .iter()
        .filter(|h| h.hartid.0 < arch::MAX_HARTS)
        .enumerate()
        .map(|(i, h)| Hart {
            index: i,
            hartid: h.hartid,
            plic_ctx: h.plic_ctx,
            fence: virq_core::remote::ServeCounter::new(),
            online: AtomicBool::new(false),
            hgei_lines: AtomicU64::new(0),
            resched: AtomicBool::new(false),
        })
        .collect();
    if !harts.iter().any(|h| h.hartid == boot_hartid) {
        return Err(hyp_config::Error::new(
            "host DTB",
            "the boot hart is not among the harts",
        ));
    }
    let mut guests = Vec::new();
    let mut vcpus = Vec::new();
    let mut used: Vec<(u64, u64)> = Vec::new();
    for (gi, spec) in config.guests.iter().enumerate() {
        let cfg = GuestConfig::from_spec(spec);
        let cfg = &cfg;
        let n = cfg.vcpus;
        let eoi = if cfg!(feature = "immediate_eoi") {
            EoiMode::Immediate
        } else {
            cfg.eoi
        };
        let first = vcpus.len();
        let immediate = eoi == EoiMode::Immediate;
        let g = guest::Guest::new(
            gi as u16,
            cfg,
            n,
            first,
            immediate,
            &used,
            bus.as_deref_mut(),
        )
        .map_err(|e| {
            let field = hyp_config::guest_field(gi, e.field());
            hyp_config::Error::new(field, alloc::format!("{e}"))
        })?;
        used.push((cfg.ram_host_base, cfg.ram_size));
        // `Guest::new` keeps the count in 1..=MAX_VCPUS_PER_GUEST (<= the decoder's 64).
        let guest_harts = virq_riscv::sbi::GuestHarts::new(g.vcpus).ok_or_else(|| {
            hyp_config::Error::new(hyp_config::guest_field(gi, "vcpus"), "out of range")
        })?;
        for id in 0..n {
            let home = id % harts.len();
            let idx = vcpus.len();
            if idx >= 64 {
                return Err(hyp_config::Error::new(
                    hyp_config::guest_field(gi, "vcpus"),
                    "more than 64 vCPUs in all",
                ));
            }
            vcpus.push(vcpu::Vcpu::new(idx, gi, id as u32, home, guest_harts));
        }
        guests.push(g);
    }
    let pirqs = (0..world::MAX_PIRQ)
        .map(|_| acct::PirqCounts::new())
        .collect();
    let nguests = guests.len();
    Ok(World {
        harts,
        guests,
        vcpus,
        routes: virq_core::route::RouteTable::new(),
        pirqs,
        hgei: virq_core::hgei::HgeiAllocator::new(),
        host_plic: p
            .plic
            .map(|pl| arch::mmio::HostPlic::new(pl.base as usize, pl.size as usize, pl.ndev)),
        sstc: p.sstc,
        alive_guests: AtomicUsize::new(nguests),
    })
}

#[cfg(target_arch = "riscv64")]
/// A trap taken by hyp itself (from the backend's trap vector; RISC-V: in HS-mode):
/// always a hyp bug.
#[no_mangle]
pub extern "C" fn fatal_host_trap(scause: usize, sepc: usize, stval: usize) -> ! {
    println!("hyp: FATAL trap in HS-mode: scause={scause:#x} sepc={sepc:#x} stval={stval:#x}");
    exit_machine(0xfe)
}

#[cfg(target_arch = "riscv64")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("hyp: PANIC: {info}");
    exit_machine(0xfd)
}
