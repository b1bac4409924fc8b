//! The device tree an aarch64 guest boots with (Linux's arm64 booting.rst: `x0` holds
//! its address): memory, the vCPUs (PSCI enable method, `reg` = the affinity hyp puts
//! in `VMPIDR_EL2`), PSCI 1.0 over `hvc`, the GICv3 (`arm,gic-v3`), the generic timer
//! (`arm,armv8-timer`: the guest uses the virtual timer, PPI 11 = INTID 27), the PL011
//! if the guest owns it, its PCIe host bridge if it has functions (`arm::pcie`), and
//! `/chosen` (bootargs, initramfs, stdout, `linux,pci-probe-only`).
use alloc::format;
use alloc::vec::Vec;

use hyp_config::{Guest, GUEST_RAM_BASE};
use vm_fdt::{FdtWriter, FdtWriterResult};

use super::layout::{
    gicr_size, GICD_IPA, GICD_SIZE, GICR_IPA, ITS_IPA, ITS_SIZE, UART_BASE, UART_INTID,
};

/// `interrupts` cell 0: an SPI / a PPI.
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
/// `interrupts` cell 2: level, active high.
const IRQ_LEVEL_HIGH: u32 = 4;
const GIC_PHANDLE: u32 = 1;
const CLK_PHANDLE: u32 = 2;
/// The ITS node's (`msi-map`/`msi-parent` of devices that send MSIs name it).
pub const ITS_PHANDLE: u32 = 3;

/// Build the DTB of guest `g` with `vcpus` vCPUs; `uart`: it has a PL011 (QEMU's,
/// passed through, or hyp's emulated one: the same node); `its`: its GIC has an ITS
/// (`topology = "vgicv4"`: an `arm,gic-v3-its` child of the GIC node); `pcie`: its PCIe
/// host bridge, if hyp gave it functions (`arm::pcie`); `seed`: its `/chosen/rng-seed`
/// (`hyp_config::seed`: none when the host DTB has none).
pub fn build(
    g: &Guest,
    vcpus: usize,
    uart: bool,
    its: bool,
    pcie: Option<&super::pcie::PcieNode>,
    seed: Option<&[u8; hyp_config::seed::GUEST_SEED_LEN]>,
) -> FdtWriterResult<Vec<u8>> {
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_string("model", "virq hyp guest")?;
    fdt.property_u32("interrupt-parent", GIC_PHANDLE)?;

    let chosen = fdt.begin_node("chosen")?;
    if !g.cmdline.is_empty() {
        fdt.property_string("bootargs", &g.cmdline)?;
    }
    if uart {
        fdt.property_string("stdout-path", &format!("/pl011@{UART_BASE:x}"))?;
    }
    if let Some(seed) = seed {
        // Without it Linux's pool is not ready before `/init` (unless the CPU has an RNG
        // instruction: QEMU's `-cpu max` has FEAT_RNG), and every early random number
        // takes the slow unbatched path (docs/benchmarks.md, op 7).
        fdt.property("rng-seed", seed)?;
    }
    if let Some(r) = g.initramfs {
        fdt.property_u64("linux,initrd-start", GUEST_RAM_BASE + r.offset)?;
        fdt.property_u64("linux,initrd-end", GUEST_RAM_BASE + r.offset + r.size)?;
    }
    if pcie.is_some() {
        // Keep the BARs where hyp placed (and mapped) them.
        fdt.property_u32("linux,pci-probe-only", 1)?;
    }
    fdt.end_node(chosen)?;

    let mem = fdt.begin_node(&format!("memory@{GUEST_RAM_BASE:x}"))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &[GUEST_RAM_BASE, g.ram_size()])?;
    fdt.end_node(mem)?;

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    for v in 0..vcpus {
        let aff = virq_arm::gicv3::affinity_of(v) as u32;
        let cpu = fdt.begin_node(&format!("cpu@{aff:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,armv8")?;
        fdt.property_u32("reg", aff)?;
        fdt.property_string("enable-method", "psci")?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)?;

    let psci = fdt.begin_node("psci")?;
    fdt.property_string_list(
        "compatible",
        alloc::vec!["arm,psci-1.0".into(), "arm,psci-0.2".into()],
    )?;
    fdt.property_string("method", "hvc")?;
    fdt.end_node(psci)?;

    let gic = fdt.begin_node(&format!("intc@{GICD_IPA:x}"))?;
    fdt.property_string("compatible", "arm,gic-v3")?;
    fdt.property_u32("#interrupt-cells", 3)?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("#redistributor-regions", 1)?;
    fdt.property_array_u64("reg", &[GICD_IPA, GICD_SIZE, GICR_IPA, gicr_size(vcpus)])?;
    // The maintenance interrupt (PPI 9) is hyp's, not the guest's: no virtualization
    // for the guest, so no `interrupts` here.
    fdt.property_u32("phandle", GIC_PHANDLE)?;
    if its {
        // As QEMU `virt` describes its ITS: `ranges` so the child's `reg` is a CPU
        // address.
        fdt.property_u32("#address-cells", 2)?;
        fdt.property_u32("#size-cells", 2)?;
        fdt.property_null("ranges")?;
        let n = fdt.begin_node(&format!("its@{ITS_IPA:x}"))?;
        fdt.property_string("compatible", "arm,gic-v3-its")?;
        fdt.property_null("msi-controller")?;
        fdt.property_u32("#msi-cells", 1)?;
        fdt.property_array_u64("reg", &[ITS_IPA, ITS_SIZE])?;
        fdt.property_u32("phandle", ITS_PHANDLE)?;
        fdt.end_node(n)?;
    }
    fdt.end_node(gic)?;

    let timer = fdt.begin_node("timer")?;
    fdt.property_string("compatible", "arm,armv8-timer")?;
    // Secure physical, non-secure physical, virtual, hypervisor (PPIs 13, 14, 11, 10).
    let ppis: Vec<u32> = [13, 14, 11, 10]
        .iter()
        .flat_map(|&p| [GIC_PPI, p, IRQ_LEVEL_HIGH])
        .collect();
    fdt.property_array_u32("interrupts", &ppis)?;
    fdt.property_null("always-on")?;
    fdt.end_node(timer)?;

    if uart {
        let clk = fdt.begin_node("apb-pclk")?;
        fdt.property_string("compatible", "fixed-clock")?;
        fdt.property_u32("#clock-cells", 0)?;
        fdt.property_u32("clock-frequency", 24_000_000)?;
        fdt.property_string("clock-output-names", "clk24mhz")?;
        fdt.property_u32("phandle", CLK_PHANDLE)?;
        fdt.end_node(clk)?;

        let pl011 = fdt.begin_node(&format!("pl011@{UART_BASE:x}"))?;
        fdt.property_string_list(
            "compatible",
            alloc::vec!["arm,pl011".into(), "arm,primecell".into()],
        )?;
        fdt.property_array_u64("reg", &[UART_BASE, 0x1000])?;
        fdt.property_array_u32("interrupts", &[GIC_SPI, UART_INTID - 32, IRQ_LEVEL_HIGH])?;
        fdt.property_array_u32("clocks", &[CLK_PHANDLE, CLK_PHANDLE])?;
        fdt.property_string_list(
            "clock-names",
            alloc::vec!["uartclk".into(), "apb_pclk".into()],
        )?;
        fdt.end_node(pl011)?;
    }

    if let Some(p) = pcie {
        pcie_node(&mut fdt, p, its)?;
    }

    fdt.end_node(root)?;
    fdt.finish()
}

/// The guest's `pci-host-ecam-generic` bridge: one bus at `p.ecam`, a 32-bit memory
/// `ranges` entry per BAR (`phys.hi` 0x0200_0000), DMA coherent; with `its` (a vgicv4
/// guest) `msi-map = <0 &its 0 0x10000>` (requester ID = DeviceID, as QEMU `virt`'s);
/// no `interrupt-map` (INTx stays off).
fn pcie_node(fdt: &mut FdtWriter, p: &super::pcie::PcieNode, its: bool) -> FdtWriterResult<()> {
    let n = fdt.begin_node(&format!("pcie@{:x}", p.ecam.0))?;
    fdt.property_string("compatible", "pci-host-ecam-generic")?;
    fdt.property_string("device_type", "pci")?;
    fdt.property_u32("#address-cells", 3)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_array_u64("reg", &[p.ecam.0, p.ecam.1])?;
    fdt.property_array_u32("bus-range", &[0, 0])?;
    fdt.property_u32("linux,pci-domain", 0)?;
    fdt.property_null("dma-coherent")?;
    let ranges: Vec<u32> = p
        .ranges
        .iter()
        .flat_map(|&(pci, cpu, size)| {
            [
                0x0200_0000,
                (pci >> 32) as u32,
                pci as u32,
                (cpu >> 32) as u32,
                cpu as u32,
                (size >> 32) as u32,
                size as u32,
            ]
        })
        .collect();
    fdt.property_array_u32("ranges", &ranges)?;
    if its {
        fdt.property_array_u32("msi-map", &[0, ITS_PHANDLE, 0, 0x1_0000])?;
    }
    fdt.end_node(n)
}
