//! The guest's device tree: memory, one `cpu@N` per vCPU (with the ISA KVM reports),
//! `/chosen/bootargs`, and the AIA KVM emulates in the kernel: an IMSIC per vCPU
//! (`riscv,imsics`, wired to each hart's supervisor external interrupt, cause 9) and an
//! APLIC in MSI mode (`riscv,aplic` with `msi-parent`), bindings as in Linux's
//! `Documentation/devicetree/bindings/interrupt-controller/riscv,imsics.yaml` and
//! `riscv,aplic.yaml`. `guest/bench`'s own parser (`guest/bench/src/fdt.rs`) reads it back
//! in the tests below.
use vm_fdt::{Error, FdtWriter};

/// `KVM_DEV_RISCV_APLIC_SIZE`: one APLIC domain's register space.
pub const APLIC_SIZE: u64 = 0x4000;
/// One IMSIC interrupt file (`KVM_DEV_RISCV_IMSIC_SIZE`).
pub const IMSIC_FILE_SIZE: u64 = 0x1000;
/// The supervisor external interrupt (the IMSIC's line into each hart).
const IRQ_S_EXT: u32 = 9;

/// What the device tree describes.
#[derive(Debug, Clone)]
pub struct Machine {
    pub ram_base: u64,
    pub ram_size: u64,
    pub harts: u32,
    /// `riscv,isa`, e.g. `rv64imafdc_zicsr_zifencei_ssaia`.
    pub isa: String,
    /// `riscv,isa-extensions`: single letters and the multi-letter names.
    pub isa_extensions: Vec<String>,
    /// `mmu-type` (`riscv,sv39`, …), if the vCPU has one.
    pub mmu_type: Option<&'static str>,
    pub timebase_hz: u32,
    /// The first vCPU's IMSIC; vCPU `i`'s is `i << 12` above it.
    pub imsic_base: u64,
    /// `riscv,hart-index-bits` (the AIA device's hart bits).
    pub imsic_hart_bits: u32,
    /// `riscv,num-ids`.
    pub imsic_ids: u32,
    pub aplic_base: u64,
    /// `riscv,num-sources`.
    pub aplic_sources: u32,
    pub bootargs: String,
}

/// Phandles: each CPU's interrupt controller, the IMSIC, the APLIC.
fn intc_phandle(cpu: u32) -> u32 {
    1 + cpu
}
const IMSIC_PHANDLE: u32 = 0x1000;
const APLIC_PHANDLE: u32 = 0x1001;

/// The flattened device tree of `m`.
pub fn build(m: &Machine) -> Result<Vec<u8>, Error> {
    let mut f = FdtWriter::new()?;
    let root = f.begin_node("")?;
    f.property_u32("#address-cells", 2)?;
    f.property_u32("#size-cells", 2)?;
    f.property_string("compatible", "virq,kvm-vmm")?;
    f.property_string("model", "virq KVM VMM (guest/bench payload)")?;

    let chosen = f.begin_node("chosen")?;
    f.property_string("bootargs", &m.bootargs)?;
    f.end_node(chosen)?;

    let mem = f.begin_node(&format!("memory@{:x}", m.ram_base))?;
    f.property_string("device_type", "memory")?;
    f.property_array_u64("reg", &[m.ram_base, m.ram_size])?;
    f.end_node(mem)?;

    let cpus = f.begin_node("cpus")?;
    f.property_u32("#address-cells", 1)?;
    f.property_u32("#size-cells", 0)?;
    f.property_u32("timebase-frequency", m.timebase_hz)?;
    for cpu in 0..m.harts {
        let node = f.begin_node(&format!("cpu@{cpu}"))?;
        f.property_string("device_type", "cpu")?;
        f.property_u32("reg", cpu)?;
        f.property_string("compatible", "riscv")?;
        f.property_string("riscv,isa", &m.isa)?;
        f.property_string("riscv,isa-base", "rv64i")?;
        f.property_string_list("riscv,isa-extensions", m.isa_extensions.clone())?;
        if let Some(mmu) = m.mmu_type {
            f.property_string("mmu-type", mmu)?;
        }
        f.property_string("status", "okay")?;
        let intc = f.begin_node("interrupt-controller")?;
        f.property_u32("#interrupt-cells", 1)?;
        f.property_null("interrupt-controller")?;
        f.property_string("compatible", "riscv,cpu-intc")?;
        f.property_phandle(intc_phandle(cpu))?;
        f.end_node(intc)?;
        f.end_node(node)?;
    }
    f.end_node(cpus)?;

    let soc = f.begin_node("soc")?;
    f.property_u32("#address-cells", 2)?;
    f.property_u32("#size-cells", 2)?;
    f.property_string("compatible", "simple-bus")?;
    f.property_null("ranges")?;

    let imsic = f.begin_node(&format!("interrupt-controller@{:x}", m.imsic_base))?;
    f.property_string_list("compatible", vec!["riscv,imsics".into()])?;
    let files = 1u64 << m.imsic_hart_bits;
    f.property_array_u64("reg", &[m.imsic_base, files * IMSIC_FILE_SIZE])?;
    let wires: Vec<u32> = (0..m.harts)
        .flat_map(|c| [intc_phandle(c), IRQ_S_EXT])
        .collect();
    f.property_array_u32("interrupts-extended", &wires)?;
    f.property_null("interrupt-controller")?;
    f.property_u32("#interrupt-cells", 0)?;
    f.property_null("msi-controller")?;
    f.property_u32("#msi-cells", 0)?;
    f.property_u32("riscv,num-ids", m.imsic_ids)?;
    if m.imsic_hart_bits > 0 {
        f.property_u32("riscv,hart-index-bits", m.imsic_hart_bits)?;
    }
    f.property_phandle(IMSIC_PHANDLE)?;
    f.end_node(imsic)?;

    let aplic = f.begin_node(&format!("interrupt-controller@{:x}", m.aplic_base))?;
    f.property_string("compatible", "riscv,aplic")?;
    f.property_array_u64("reg", &[m.aplic_base, APLIC_SIZE])?;
    f.property_null("interrupt-controller")?;
    f.property_u32("#interrupt-cells", 2)?;
    f.property_u32("msi-parent", IMSIC_PHANDLE)?;
    f.property_u32("riscv,num-sources", m.aplic_sources)?;
    f.property_phandle(APLIC_PHANDLE)?;
    f.end_node(aplic)?;

    f.end_node(soc)?;
    f.end_node(root)?;
    f.finish()
}

#[cfg(test)]
#[allow(dead_code)]
#[path = "../../../guest/bench/src/fdt.rs"]
mod bench_fdt;

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(harts: u32) -> Machine {
        Machine {
            ram_base: 0x8000_0000,
            ram_size: 16 << 20,
            harts,
            isa: "rv64imafdc_zicsr_zifencei_ssaia".into(),
            isa_extensions: ["i", "m", "a", "f", "d", "c", "zicsr", "ssaia"]
                .map(String::from)
                .to_vec(),
            mmu_type: Some("riscv,sv57"),
            timebase_hz: 10_000_000,
            imsic_base: 0x2800_0000,
            imsic_hart_bits: if harts > 1 { 1 } else { 0 },
            imsic_ids: 255,
            aplic_base: 0x0d00_0000,
            aplic_sources: 96,
            bootargs: "bench.n=100 bench.ops=all".into(),
        }
    }

    /// The payload's own parser finds the harts, both controllers, the IMSIC stride
    /// and the command line.
    #[test]
    fn the_bench_payload_reads_it() {
        for harts in [1, 2] {
            let dtb = build(&machine(harts)).unwrap();
            // The parser reads from an address: 4-byte aligned, alive for 'static.
            let words: Vec<u32> = dtb
                .chunks(4)
                .map(|c| {
                    let mut w = [0u8; 4];
                    w[..c.len()].copy_from_slice(c);
                    u32::from_ne_bytes(w)
                })
                .collect();
            let words: &'static [u32] = Box::leak(words.into_boxed_slice());
            let p = bench_fdt::parse(words.as_ptr() as usize).expect("parses");
            assert_eq!(p.harts, harts as usize);
            assert_eq!(p.aplic, Some(0x0d00_0000));
            assert_eq!(p.imsic, Some(0x2800_0000));
            assert_eq!(p.imsic_stride, 0x1000);
            assert_eq!(p.plic, None);
            assert_eq!(p.bootargs, "bench.n=100 bench.ops=all");
        }
    }
}
