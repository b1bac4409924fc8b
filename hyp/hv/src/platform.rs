//! What the host DTB says about the machine: harts, RAM, the interrupt controller(s),
//! the console UART, the `sifive,test` exit device, `/chosen`. Parsed once by the boot
//! hart and published ([`set_platform`]); [`exit_machine`] ends the machine.
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use spin::Once;

use crate::ids::HartId;

/// One hart.
#[derive(Clone, Debug)]
pub struct HartInfo {
    /// `reg` of the cpu node.
    pub hartid: HartId,
    /// Host PLIC context of this hart's S-mode external interrupt, if there is a PLIC.
    pub plic_ctx: Option<u32>,
    /// Hart index of this hart in the S-level IMSIC (its position in the IMSIC node's
    /// `interrupts-extended`; also the APLIC MSI target's Hart Index), if there is one.
    pub imsic_index: Option<u32>,
    /// Physical address of this hart's `SETSSIP` register in an ACLINT SSWI
    /// (`riscv,aclint-sswi`, QEMU `-M virt,aclint=on`): a store of 1 there raises its
    /// `sip.SSIP` without M-mode (ACLINT spec §4).
    pub sswi: Option<u64>,
}

/// The host PLIC.
#[derive(Clone, Copy, Debug)]
pub struct PlicInfo {
    /// MMIO base.
    pub base: u64,
    /// MMIO size.
    pub size: u64,
    /// `riscv,ndev`.
    pub ndev: u32,
}

/// Interrupt controllers found.
#[derive(Clone, Copy, Debug, Default)]
pub struct AiaInfo {
    /// APLIC (S-level domain) base and size.
    pub aplic: Option<(u64, u64)>,
    /// `riscv,num-sources` of the S-level APLIC.
    pub aplic_sources: u32,
    /// S-level IMSIC base and size.
    pub imsic: Option<(u64, u64)>,
    /// `riscv,guest-index-bits` of the S-level IMSIC.
    pub guest_index_bits: u32,
    /// `riscv,num-ids` of the S-level IMSIC (its guest files have as many).
    pub num_ids: u32,
}

pub use crate::pci::PcieHost;

/// Where the RISC-V IOMMU is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IommuAt {
    /// A platform device (`riscv,iommu`): its register window `(base, size)`.
    Platform(u64, u64),
    /// A PCI function (`riscv,pci-iommu` under the host bridge): its requester ID.
    Pci(u16),
}

/// The RISC-V IOMMU of the host DTB.
#[derive(Clone, Debug)]
pub struct IommuInfo {
    /// Where it is.
    pub at: IommuAt,
    /// Its phandle (what `iommu-map` names).
    pub phandle: u32,
    /// Wired interrupts (`interrupts`, first cell of each pair): CQ, FQ, HPM, PQ.
    pub irqs: Vec<u32>,
    /// `msi-parent`.
    pub msi_parent: Option<u32>,
}

/// Everything hyp uses from the host DTB.
#[derive(Clone, Debug)]
pub struct Platform {
    /// Enabled harts.
    pub harts: Vec<HartInfo>,
    /// `timebase-frequency`.
    pub timebase: u64,
    /// RAM regions `(base, size)`.
    pub memory: Vec<(u64, u64)>,
    /// Reserved regions (`/memreserve/` and `/reserved-memory`).
    pub reserved: Vec<(u64, u64)>,
    /// Host PLIC.
    pub plic: Option<PlicInfo>,
    /// AIA controllers.
    pub aia: AiaInfo,
    /// `sifive,test0` base.
    pub test_dev: Option<u64>,
    /// ns16550a UART `(base, size, irq)`.
    pub uart: Option<(u64, u64, u32)>,
    /// `/chosen/bootargs` up to a `--` word: hyp's own `KEY=VALUE` arguments.
    pub bootargs: String,
    /// `/chosen/bootargs` after the first `--` word (`cargo xtask run --append`):
    /// appended to every guest's kernel command line (`dtb::build`).
    pub guest_append: String,
    /// ISA extensions of the boot hart (`riscv,isa-extensions`), single-letter ones too.
    pub isa_extensions: Vec<String>,
    /// `mmu-type` of the boot hart.
    pub mmu_type: String,
    /// Every hart has Sstc.
    pub sstc: bool,
    /// The DTB blob's own location (must not be overwritten before parsing).
    pub dtb_range: (u64, u64),
    /// The PCIe host bridge.
    pub pcie: Option<PcieHost>,
    /// The RISC-V IOMMU.
    pub iommu: Option<IommuInfo>,
    /// `/chosen/rng-seed` (QEMU: 32 random bytes; empty if none): the key each guest's
    /// own seed is derived from (`hyp_config::seed`), never given to a guest itself.
    pub rng_seed: Vec<u8>,
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Platform {
    /// Parse the host DTB.
    pub fn parse(blob: &[u8], blob_addr: u64) -> Result<Platform, &'static str> {
        let fdt = fdt::Fdt::new(blob).map_err(|_| "bad host DTB")?;
        let mut harts = Vec::new();
        let mut timebase = 0;
        let mut isa_extensions = Vec::new();
        let mut mmu_type = String::new();
        let mut sstc = true;
        // cpu-intc phandle -> hart id.
        let mut intc_of = Vec::new();
        for cpu in fdt.cpus() {
            let status = cpu
                .property("status")
                .and_then(|p| p.as_str())
                .unwrap_or("okay");
            if status != "okay" && status != "ok" {
                continue;
            }
            let hartid = HartId(cpu.ids().first());
            timebase = cpu.timebase_frequency() as u64;
            let exts: Vec<String> = match cpu.property("riscv,isa-extensions") {
                Some(p) => p
                    .value
                    .split(|&b| b == 0)
                    .filter(|s| !s.is_empty())
                    .filter_map(|s| core::str::from_utf8(s).ok())
                    .map(|s| s.to_string())
                    .collect(),
                None => Vec::new(),
            };
            let has_sstc = exts.iter().any(|e| e == "sstc")
                || cpu
                    .property("riscv,isa")
                    .and_then(|p| p.as_str())
                    .is_some_and(|s| s.contains("_sstc"));
            sstc &= has_sstc;
            if harts.is_empty() {
                isa_extensions = exts;
                mmu_type = cpu
                    .property("mmu-type")
                    .and_then(|p| p.as_str())
                    .unwrap_or("riscv,sv39")
                    .to_string();
            }
            harts.push(HartInfo {
                hartid,
                plic_ctx: None,
                sswi: None,
                imsic_index: None,
            });
        }
        // The cpu nodes' interrupt-controller children.
        if let Some(cpus) = fdt.find_node("/cpus") {
            for cpu in cpus.children() {
                let Some(reg) = cpu.reg().and_then(|mut r| r.next()) else {
                    continue;
                };
                for child in cpu.children() {
                    if let Some(ph) = child.property("phandle").and_then(|p| p.as_usize()) {
                        intc_of.push((ph as u32, HartId(reg.starting_address as usize)));
                    }
                }
            }
        }
        if harts.is_empty() {
            return Err("no harts in the host DTB");
        }
        if timebase == 0 {
            timebase = 10_000_000;
        }

        let mut memory = Vec::new();
        for r in fdt.memory().regions() {
            memory.push((r.starting_address as u64, r.size.unwrap_or(0) as u64));
        }
        let mut reserved = Vec::new();
        for r in fdt.memory_reservations() {
            reserved.push((r.address() as u64, r.size() as u64));
        }
        if let Some(rm) = fdt.find_node("/reserved-memory") {
            for n in rm.children() {
                if let Some(r) = n.reg().and_then(|mut r| r.next()) {
                    reserved.push((r.starting_address as u64, r.size.unwrap_or(0) as u64));
                }
            }
        }

        let mut plic = None;
        if let Some(n) = fdt.find_compatible(&["riscv,plic0", "sifive,plic-1.0.0"]) {
            if let Some(r) = n.reg().and_then(|mut r| r.next()) {
                let ndev = n
                    .property("riscv,ndev")
                    .and_then(|p| p.as_usize())
                    .unwrap_or(0) as u32;
                plic = Some(PlicInfo {
                    base: r.starting_address as u64,
                    size: r.size.unwrap_or(0) as u64,
                    ndev,
                });
                if let Some(ie) = n.property("interrupts-extended") {
                    for (ctx, pair) in ie.value.chunks_exact(8).enumerate() {
                        let (ph, irq) = (be_u32(&pair[..4]), be_u32(&pair[4..]));
                        if irq != 9 {
                            continue;
                        }
                        let Some(&(_, hartid)) = intc_of.iter().find(|(p, _)| *p == ph) else {
                            continue;
                        };
                        if let Some(h) = harts.iter_mut().find(|h| h.hartid == hartid) {
                            h.plic_ctx = Some(ctx as u32);
                        }
                    }
                }
            }
        }
        // ACLINT SSWI devices (one per socket): register i belongs to the hart whose
        // cpu-intc is the i-th entry of `interrupts-extended` (irq 1: S-mode software).
        for n in fdt.all_nodes().filter(|n| {
            n.compatible()
                .is_some_and(|c| c.all().any(|s| s == "riscv,aclint-sswi"))
        }) {
            let (Some(r), Some(ie)) = (
                n.reg().and_then(|mut r| r.next()),
                n.property("interrupts-extended"),
            ) else {
                continue;
            };
            let size = r.size.unwrap_or(0) as u64;
            for (i, pair) in ie.value.chunks_exact(8).enumerate() {
                let (ph, irq) = (be_u32(&pair[..4]), be_u32(&pair[4..]));
                let reg = 4 * i as u64;
                if irq != 1 || reg + 4 > size {
                    continue;
                }
                let Some(&(_, hartid)) = intc_of.iter().find(|(p, _)| *p == ph) else {
                    continue;
                };
                if let Some(h) = harts.iter_mut().find(|h| h.hartid == hartid) {
                    h.sswi = Some(r.starting_address as u64 + reg);
                }
            }
        }
        let mut aia = AiaInfo::default();
        // The S-level IMSIC is the `riscv,imsics` node whose interrupts-extended name
        // irq 9 (S-mode external); the S-level APLIC domain is the `riscv,aplic` node
        // that delivers to it (`msi-parent`) or to irq 9 directly (direct mode).
        let mut s_imsic_phandle = None;
        for n in fdt.all_nodes() {
            let Some(compat) = n.compatible() else {
                continue;
            };
            if !compat.all().any(|x| x == "riscv,imsics") {
                continue;
            }
            let Some(ie) = n.property("interrupts-extended") else {
                continue;
            };
            if !ie.value.chunks_exact(8).any(|c| be_u32(&c[4..]) == 9) {
                continue;
            }
            aia.imsic = n
                .reg()
                .and_then(|mut r| r.next())
                .map(|r| (r.starting_address as u64, r.size.unwrap_or(0) as u64));
            let prop = |k: &str| n.property(k).and_then(|p| p.as_usize()).unwrap_or(0) as u32;
            aia.guest_index_bits = prop("riscv,guest-index-bits");
            aia.num_ids = prop("riscv,num-ids");
            s_imsic_phandle = n.property("phandle").and_then(|p| p.as_usize());
            for (index, pair) in ie.value.chunks_exact(8).enumerate() {
                let Some(&(_, hartid)) = intc_of.iter().find(|(p, _)| *p == be_u32(pair)) else {
                    continue;
                };
                if let Some(h) = harts.iter_mut().find(|h| h.hartid == hartid) {
                    h.imsic_index = Some(index as u32);
                }
            }
            break;
        }
        for n in fdt.all_nodes() {
            let Some(compat) = n.compatible() else {
                continue;
            };
            if !compat.all().any(|x| x == "riscv,aplic") {
                continue;
            }
            let to_s_imsic = s_imsic_phandle.is_some()
                && n.property("msi-parent").and_then(|p| p.as_usize()) == s_imsic_phandle;
            let direct_s = n
                .property("interrupts-extended")
                .is_some_and(|p| p.value.chunks_exact(8).any(|c| be_u32(&c[4..]) == 9));
            if to_s_imsic || direct_s {
                aia.aplic = n
                    .reg()
                    .and_then(|mut r| r.next())
                    .map(|r| (r.starting_address as u64, r.size.unwrap_or(0) as u64));
                aia.aplic_sources = n
                    .property("riscv,num-sources")
                    .and_then(|p| p.as_usize())
                    .unwrap_or(0) as u32;
                break;
            }
        }

        let test_dev = fdt
            .find_compatible(&["sifive,test1", "sifive,test0"])
            .and_then(|n| n.reg().and_then(|mut r| r.next()))
            .map(|r| r.starting_address as u64);
        let uart = fdt.find_compatible(&["ns16550a"]).and_then(|n| {
            let r = n.reg()?.next()?;
            let irq = n.interrupts().and_then(|mut i| i.next()).unwrap_or(0) as u32;
            Some((
                r.starting_address as u64,
                r.size.unwrap_or(0x100) as u64,
                irq,
            ))
        });
        let (pcie, iommu) = parse_pcie(&fdt);
        let (bootargs, guest_append) = split_bootargs(fdt.chosen().bootargs().unwrap_or(""));
        let (bootargs, guest_append) = (bootargs.to_string(), guest_append.to_string());
        let rng_seed = fdt
            .find_node("/chosen")
            .and_then(|c| c.property("rng-seed"))
            .map(|p| p.value.to_vec())
            .unwrap_or_default();
        Ok(Platform {
            harts,
            timebase,
            memory,
            reserved,
            plic,
            aia,
            test_dev,
            uart,
            bootargs,
            guest_append,
            isa_extensions,
            mmu_type,
            sstc,
            dtb_range: (blob_addr, blob_addr + blob.len() as u64),
            pcie,
            iommu,
            rng_seed,
        })
    }

    /// The value of `key=` in hyp's bootargs, if any.
    pub fn bootarg(&self, key: &str) -> Option<&str> {
        self.bootargs
            .split_whitespace()
            .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
    }

    /// Is `[base, base + size)` inside one RAM region?
    pub fn is_ram(&self, base: u64, size: u64) -> bool {
        self.memory
            .iter()
            .any(|&(b, s)| base >= b && base.checked_add(size).is_some_and(|e| e <= b + s))
    }
}

fn cells(p: Option<fdt::node::NodeProperty<'_>>) -> Vec<u32> {
    p.map(|p| p.value.chunks_exact(4).map(be_u32).collect())
        .unwrap_or_default()
}

/// The host bridge and the IOMMU (QEMU `virt`: docs/hyp.md, "PCIe and the RISC-V
/// IOMMU"). `ranges` entries are `<phys.hi phys.mid phys.lo cpu.hi cpu.lo size.hi
/// size.lo>` (3 PCI address cells, the root's 2, 2 size cells); `phys.hi` bits 25:24
/// give the space (2: 32-bit memory, 3: 64-bit memory).
fn parse_pcie(fdt: &fdt::Fdt<'_>) -> (Option<PcieHost>, Option<IommuInfo>) {
    let mut pcie = None;
    let mut iommu = None;
    for n in fdt.all_nodes() {
        let Some(compat) = n.compatible() else {
            continue;
        };
        let phandle = n
            .property("phandle")
            .and_then(|p| p.as_usize())
            .unwrap_or(0) as u32;
        if compat.all().any(|c| c == "pci-host-ecam-generic") && pcie.is_none() {
            pcie = PcieHost::from_node(&n);
        } else if compat.all().any(|c| c == "riscv,iommu") && iommu.is_none() {
            let Some(r) = n.reg().and_then(|mut r| r.next()) else {
                continue;
            };
            iommu = Some(IommuInfo {
                at: IommuAt::Platform(r.starting_address as u64, r.size.unwrap_or(0) as u64),
                phandle,
                irqs: cells(n.property("interrupts"))
                    .iter()
                    .step_by(2)
                    .copied()
                    .collect(),
                msi_parent: n
                    .property("msi-parent")
                    .and_then(|p| p.as_usize())
                    .map(|p| p as u32),
            });
        } else if compat.all().any(|c| c == "riscv,pci-iommu") && iommu.is_none() {
            // `reg` is a PCI address: phys.hi holds bus << 16 | devfn << 8.
            let reg = cells(n.property("reg"));
            let Some(hi) = reg.first() else {
                continue;
            };
            iommu = Some(IommuInfo {
                at: IommuAt::Pci((hi >> 8 & 0xffff) as u16),
                phandle,
                irqs: Vec::new(),
                msi_parent: None,
            });
        }
    }
    (pcie, iommu)
}

/// Split QEMU's `-append` at the first `--` word: `(hyp's arguments, the guest's)`,
/// both trimmed; the guest's part keeps its spacing (quotes and all).
fn split_bootargs(s: &str) -> (&str, &str) {
    let is_ws = |c: Option<char>| c.is_none_or(char::is_whitespace);
    for (i, _) in s.match_indices("--") {
        let before = s[..i].chars().next_back();
        let after = s[i + 2..].chars().next();
        if is_ws(before) && is_ws(after) {
            return (s[..i].trim(), s[i + 2..].trim());
        }
    }
    (s.trim(), "")
}

static PLATFORM: Once<Platform> = Once::new();

/// Publish the platform (boot hart, once).
pub fn set_platform(p: Platform) -> &'static Platform {
    PLATFORM.call_once(|| p)
}

/// The host platform.
pub fn platform() -> &'static Platform {
    PLATFORM.get().expect("platform parsed before use")
}

/// The platform, if parsed yet.
pub fn platform_opt() -> Option<&'static Platform> {
    PLATFORM.get()
}

/// End the machine with `status`: through the `sifive,test` device if the platform
/// has one, else `arch::power_off` (SBI system reset).
pub fn exit_machine(status: u16) -> ! {
    match platform_opt().and_then(|p| p.test_dev) {
        Some(base) => crate::arch::mmio::TestDevice::new(base as usize).exit(status),
        None => crate::arch::power_off(status != 0),
    }
}
