//! The guest's device tree: exactly its vCPUs, RAM, vPLIC, passthrough devices and
//! `/chosen`, in the form Linux expects on QEMU virt.
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use sbi_spec::hsm::suspend_type;
use vm_fdt::{FdtWriter, FdtWriterResult};

use crate::config::{DeviceKind, GuestConfig, Intc, GUEST_RAM_BASE};
use crate::platform::Platform;

/// ISA extensions hyp does not offer to guests: the H extension and its `sh*`
/// companions (no nested virtualisation), AIA (Ssaia only to guests with the AIA
/// topology, see [`build`]; never Smaia), and the
/// cache-block operations (hyp does not enable them in `henvcfg`), and Zawrs (its
/// `wrs.*` would trap like WFI; hyp treats them as no-ops, but guests need not try).
fn offered(ext: &str) -> bool {
    !(ext == "h"
        || ext.starts_with("sh")
        || ext.starts_with("smaia")
        || ext.starts_with("ssaia")
        || ext.starts_with("zicbo")
        || ext == "zawrs"
        || ext == "sscofpmf"
        || ext == "smstateen"
        || ext == "ssstateen")
}

/// Everything `build` needs besides the config.
pub struct DtbParams<'a> {
    /// The host platform.
    pub platform: &'a Platform,
    /// vCPU count.
    pub vcpus: usize,
    /// `(start, end)` guest-physical initrd, if any.
    pub initrd: Option<(u64, u64)>,
    /// The guest has PCIe functions (`crate::vpci`): a host-bridge node at the host's
    /// ECAM address with its 32-bit window, and `linux,pci-probe-only`.
    pub pci: bool,
    /// The guest's index: which `rng-seed` it gets (`hyp_config::seed`).
    pub index: u16,
}

/// Build the guest's DTB blob.
pub fn build(cfg: &GuestConfig, p: &DtbParams<'_>) -> FdtWriterResult<Vec<u8>> {
    // An AIA guest has Ssaia: the IMSIC CSRs (`siselect`/`sireg`/`stopei`/`stopi`).
    let aia = matches!(cfg.intc, Intc::Aia { .. });
    let exts: Vec<String> = p
        .platform
        .isa_extensions
        .iter()
        .filter(|e| offered(e) || (aia && e.as_str() == "ssaia"))
        .cloned()
        .collect();
    let mut isa = String::from("rv64");
    for e in exts.iter().filter(|e| e.len() == 1) {
        isa.push_str(e);
    }
    for e in exts.iter().filter(|e| e.len() > 1) {
        isa.push('_');
        isa.push_str(e);
    }
    if exts.is_empty() {
        isa.push_str("imafdc");
    }
    let intc_phandle = |v: usize| 1 + v as u32;
    // `interrupts-extended` of a controller wired to every vCPU's supervisor external
    // interrupt (cause 9).
    let supervisor_external =
        |vcpus: usize| -> Vec<u32> { (0..vcpus).flat_map(|v| [intc_phandle(v), 9]).collect() };
    let plic_phandle = 0x100;
    // `guest_idle=sbi` (hyp bootarg): SBI HSM idle states for Linux's cpuidle-riscv-sbi
    // driver (DT binding `riscv,idle-state`): the default retentive and non-retentive
    // suspend types (`sbi::suspend`), so the guest idles through `hart_suspend`.
    let idle_states: &[(&str, u32, [u32; 3])] =
        if crate::config::options().guest_idle == hyp_config::GuestIdle::Sbi {
            &[
                ("cpu-ret", suspend_type::RETENTIVE, [10, 10, 20]),
                ("cpu-nonret", suspend_type::NON_RETENTIVE, [50, 100, 500]),
            ]
        } else {
            &[]
        };
    let idle_phandle = |i: usize| 0x200 + i as u32;

    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_string("compatible", "riscv-virtio")?;
    fdt.property_string("model", "virq hyp guest")?;

    let chosen = fdt.begin_node("chosen")?;
    // The config's command line, then what the user appended (`--append`).
    let bootargs = match (cfg.bootargs, p.platform.guest_append.as_str()) {
        (c, "") => String::from(c),
        ("", a) => String::from(a),
        (c, a) => format!("{c} {a}"),
    };
    if !bootargs.is_empty() {
        fdt.property_string("bootargs", &bootargs)?;
    }
    if let Some(uart) = cfg.devices.iter().find(|d| {
        matches!(
            d.kind,
            DeviceKind::Ns16550a { .. } | DeviceKind::EmulatedNs16550a
        )
    }) {
        fdt.property_string(
            "stdout-path",
            &format!("/soc/{}@{:x}", uart.name, uart.guest_base),
        )?;
    }
    // Boot entropy, as QEMU gives the host (without it Linux's early boot takes the
    // unseeded `get_random_*` path: docs/benchmarks.md, op 7).
    if let Some(seed) = hyp_config::seed::guest_rng_seed(&p.platform.rng_seed, p.index) {
        fdt.property("rng-seed", &seed)?;
    }
    if let Some((s, e)) = p.initrd {
        fdt.property_u64("linux,initrd-start", s)?;
        fdt.property_u64("linux,initrd-end", e)?;
    }
    let pcie = p.platform.pcie.as_ref().filter(|_| p.pci);
    if pcie.is_some() {
        // hyp placed the BARs and maps them where they are: the guest keeps them.
        fdt.property_u32("linux,pci-probe-only", 1)?;
    }
    fdt.end_node(chosen)?;

    let mem = fdt.begin_node(&format!("memory@{GUEST_RAM_BASE:x}"))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &[GUEST_RAM_BASE, cfg.ram_size])?;
    fdt.end_node(mem)?;

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    fdt.property_u32("timebase-frequency", p.platform.timebase as u32)?;
    for v in 0..p.vcpus {
        let cpu = fdt.begin_node(&format!("cpu@{v}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_u32("reg", v as u32)?;
        fdt.property_string("compatible", "riscv")?;
        fdt.property_string("status", "okay")?;
        fdt.property_string("riscv,isa", &isa)?;
        fdt.property_string("riscv,isa-base", "rv64i")?;
        fdt.property_string_list("riscv,isa-extensions", exts.clone())?;
        fdt.property_string("mmu-type", &p.platform.mmu_type)?;
        if !idle_states.is_empty() {
            let phandles: Vec<u32> = (0..idle_states.len()).map(idle_phandle).collect();
            fdt.property_array_u32("cpu-idle-states", &phandles)?;
        }
        let intc = fdt.begin_node("interrupt-controller")?;
        fdt.property_u32("#interrupt-cells", 1)?;
        fdt.property_null("interrupt-controller")?;
        fdt.property_string("compatible", "riscv,cpu-intc")?;
        fdt.property_phandle(intc_phandle(v))?;
        fdt.end_node(intc)?;
        fdt.end_node(cpu)?;
    }
    if !idle_states.is_empty() {
        let states = fdt.begin_node("idle-states")?;
        for (i, &(name, param, [entry, exit, residency])) in idle_states.iter().enumerate() {
            let st = fdt.begin_node(name)?;
            fdt.property_string("compatible", "riscv,idle-state")?;
            fdt.property_u32("riscv,sbi-suspend-param", param)?;
            fdt.property_u32("entry-latency-us", entry)?;
            fdt.property_u32("exit-latency-us", exit)?;
            fdt.property_u32("min-residency-us", residency)?;
            fdt.property_phandle(idle_phandle(i))?;
            fdt.end_node(st)?;
        }
        fdt.end_node(states)?;
    }
    fdt.end_node(cpus)?;

    let soc = fdt.begin_node("soc")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_string("compatible", "simple-bus")?;
    fdt.property_null("ranges")?;
    match cfg.intc {
        Intc::VPlic { base, sources } => {
            let plic = fdt.begin_node(&format!("plic@{base:x}"))?;
            fdt.property_string_list(
                "compatible",
                alloc::vec!["sifive,plic-1.0.0".into(), "riscv,plic0".into()],
            )?;
            fdt.property_array_u64("reg", &[base, crate::topology::vplic::window_size(p.vcpus)])?;
            fdt.property_array_u32("interrupts-extended", &supervisor_external(p.vcpus))?;
            fdt.property_null("interrupt-controller")?;
            fdt.property_u32("#interrupt-cells", 1)?;
            fdt.property_u32("#address-cells", 0)?;
            fdt.property_u32("riscv,ndev", sources)?;
            fdt.property_phandle(plic_phandle)?;
            fdt.end_node(plic)?;
        }
        Intc::Aia {
            aplic_base,
            sources,
            imsic_base,
        } => {
            // As QEMU virt describes its S-level IMSIC and APLIC (MSI mode).
            let imsic_phandle = plic_phandle + 1;
            let imsics = fdt.begin_node(&format!("interrupt-controller@{imsic_base:x}"))?;
            fdt.property_string_list(
                "compatible",
                alloc::vec!["qemu,imsics".into(), "riscv,imsics".into()],
            )?;
            fdt.property_array_u64(
                "reg",
                &[
                    imsic_base,
                    virq_riscv::msi::IMSIC_PAGE_SIZE * p.vcpus as u64,
                ],
            )?;
            fdt.property_array_u32("interrupts-extended", &supervisor_external(p.vcpus))?;
            fdt.property_null("interrupt-controller")?;
            fdt.property_u32("#interrupt-cells", 0)?;
            fdt.property_null("msi-controller")?;
            fdt.property_u32("#msi-cells", 0)?;
            fdt.property_u32("riscv,num-ids", p.platform.aia.num_ids)?;
            fdt.property_u32("riscv,guest-index-bits", 0)?;
            fdt.property_phandle(imsic_phandle)?;
            fdt.end_node(imsics)?;

            let aplic = fdt.begin_node(&format!("interrupt-controller@{aplic_base:x}"))?;
            fdt.property_string_list(
                "compatible",
                alloc::vec!["qemu,aplic".into(), "riscv,aplic".into()],
            )?;
            fdt.property_array_u64(
                "reg",
                &[aplic_base, crate::topology::aia::aplic_size(p.vcpus)],
            )?;
            fdt.property_u32("msi-parent", imsic_phandle)?;
            fdt.property_null("interrupt-controller")?;
            fdt.property_u32("#interrupt-cells", 2)?;
            fdt.property_u32("#address-cells", 0)?;
            fdt.property_u32("riscv,num-sources", sources)?;
            fdt.property_phandle(plic_phandle)?;
            fdt.end_node(aplic)?;
        }
    }
    if let (Some(h), Intc::Aia { .. }) = (pcie, cfg.intc) {
        let n = fdt.begin_node(&format!("pci@{:x}", h.ecam.0))?;
        fdt.property_string("compatible", "pci-host-ecam-generic")?;
        fdt.property_string("device_type", "pci")?;
        fdt.property_u32("#address-cells", 3)?;
        fdt.property_u32("#size-cells", 2)?;
        fdt.property_array_u64("reg", &[h.ecam.0, h.ecam.1])?;
        fdt.property_array_u32("bus-range", &[h.bus_start.into(), h.bus_end.into()])?;
        fdt.property_u32("linux,pci-domain", 0)?;
        fdt.property_null("dma-coherent")?;
        if let Some((pci, cpu, size)) = h.mem32 {
            // <flags(32-bit memory) pci.hi pci.lo cpu.hi cpu.lo size.hi size.lo>
            let hi = |v: u64| (v >> 32) as u32;
            fdt.property_array_u32(
                "ranges",
                &[
                    0x0200_0000,
                    hi(pci),
                    pci as u32,
                    hi(cpu),
                    cpu as u32,
                    hi(size),
                    size as u32,
                ],
            )?;
        }
        // MSIs go to the guest's IMSIC: the IOMMU translates its addresses.
        fdt.property_u32("msi-parent", plic_phandle + 1)?;
        fdt.end_node(n)?;
    }
    for d in cfg.devices {
        let n = fdt.begin_node(&format!("{}@{:x}", d.name, d.guest_base))?;
        match d.kind {
            DeviceKind::Ns16550a { clock } => {
                fdt.property_string("compatible", "ns16550a")?;
                fdt.property_u32("clock-frequency", clock)?;
                fdt.property_array_u64("reg", &[d.guest_base, 0x100])?;
            }
            DeviceKind::EmulatedNs16550a => {
                fdt.property_string("compatible", "ns16550a")?;
                fdt.property_u32("clock-frequency", 3_686_400)?;
                fdt.property_array_u64("reg", &[d.guest_base, 0x100])?;
            }
        }
        if let Some(irq) = d.irq {
            fdt.property_u32("interrupt-parent", plic_phandle)?;
            if aia {
                // <source, IRQ_TYPE_LEVEL_HIGH>: the APLIC's two interrupt cells.
                fdt.property_array_u32("interrupts", &[irq.virq.0, 4])?;
            } else {
                fdt.property_u32("interrupts", irq.virq.0)?;
            }
        }
        fdt.end_node(n)?;
    }
    fdt.end_node(soc)?;
    fdt.end_node(root)?;
    fdt.finish()
}
