//! The guests hyp boots, as data (docs/hyp.md "Guests as data").
//!
//! xtask turns a TOML file (`configs/*.toml`) into a [`hyp_config`] blob that QEMU's
//! loader puts into host RAM; the bootarg `config=ADDR` says where. [`load`] copies it,
//! decodes it and checks it again with [`hyp_config::validate`] (to hyp it is input),
//! and [`GuestConfig::from_spec`] turns each guest into what the rest of hyp uses: the
//! topology's addresses and the devices of QEMU `virt`.
use alloc::string::String;
use alloc::vec::Vec;
use hyp_config::{Device, Error, Topology};
use spin::Once;

use crate::ids::{Pirq, Virq};

/// Guest-physical base of every guest's RAM.
pub const GUEST_RAM_BASE: u64 = hyp_config::GUEST_RAM_BASE;

/// How a level-triggered passthrough interrupt is completed at the physical PLIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EoiMode {
    /// After the guest's virtual complete (no storm; the default).
    Deferred,
    /// Right after the claim (the storm, for demonstration); a storm guard masks the
    /// source after [`STORM_LIMIT`] claims without a guest completion.
    Immediate,
}

/// Claims of one source without a guest completion before the storm guard of
/// [`EoiMode::Immediate`] masks it at the physical PLIC until the guest completes.
pub const STORM_LIMIT: u64 = 5000;

/// A device model the guest DTB describes for a passthrough region.
#[derive(Clone, Copy, Debug)]
pub enum DeviceKind {
    /// An NS16550A UART.
    Ns16550a {
        /// `clock-frequency`.
        clock: u32,
    },
    /// hyp's emulated NS16550A (`crate::vuart`): not mapped, every access traps; output
    /// goes to hyp's console prefixed with the guest's name; no interrupt (the guest's
    /// driver polls). `host_base` and `irq` are unused.
    EmulatedNs16550a,
}

/// A passthrough interrupt: physical PLIC source `pirq` appears as vPLIC source `virq`.
#[derive(Clone, Copy, Debug)]
pub struct IrqPassthrough {
    /// Host PLIC source.
    pub pirq: Pirq,
    /// Guest vPLIC source.
    pub virq: Virq,
}

/// A host device region mapped 1:1 into the guest, with its interrupt.
#[derive(Clone, Copy, Debug)]
pub struct Passthrough {
    /// DT node name prefix (`serial`).
    pub name: &'static str,
    /// Device kind (for the DT node).
    pub kind: DeviceKind,
    /// Host physical base (page aligned).
    pub host_base: u64,
    /// Guest physical base (page aligned).
    pub guest_base: u64,
    /// Size (page multiple).
    pub size: u64,
    /// Its interrupt, if routed.
    pub irq: Option<IrqPassthrough>,
}

/// The guest's interrupt controller.
#[derive(Clone, Copy, Debug)]
pub enum Intc {
    /// An emulated PLIC (virq-riscv `VPlic`), one S-mode context per vCPU.
    VPlic {
        /// Guest physical base.
        base: u64,
        /// Number of sources (`riscv,ndev`).
        sources: u32,
    },
    /// The AIA: an APLIC domain in MSI mode (virq-riscv `VAplic`, trap-and-emulate)
    /// and one IMSIC interrupt file per vCPU, each the *hardware* guest interrupt file
    /// of the hart the vCPU runs on when that hart has a free guest external interrupt
    /// line, else a software file (virq-riscv `VcpuImsic`); see `crate::topology::aia`. Needs a
    /// host with an S-level IMSIC (QEMU `-M virt,aia=aplic-imsic,aia-guests=N`).
    Aia {
        /// Guest physical base of the APLIC (`riscv,aplic`).
        aplic_base: u64,
        /// Number of APLIC sources (`riscv,num-sources`).
        sources: u32,
        /// Guest physical address of vCPU 0's IMSIC page; vCPU `i`'s is at
        /// `imsic_base + i * 0x1000` (`riscv,imsics`, guest index bits 0).
        imsic_base: u64,
    },
}

/// One guest.
#[derive(Clone, Copy, Debug)]
pub struct GuestConfig {
    /// Name (printed, and in the accounting).
    pub name: &'static str,
    /// vCPUs (vCPU `i` starts on hart `i % harts`).
    pub vcpus: usize,
    /// Host physical base of the guest's RAM (2 MiB aligned).
    pub ram_host_base: u64,
    /// RAM size (2 MiB multiple).
    pub ram_size: u64,
    /// Offset in guest RAM of the boot image QEMU's loader put there: the boot vCPU
    /// starts at `GUEST_RAM_BASE + entry_offset`.
    pub entry_offset: u64,
    /// `(offset, size)` in guest RAM of the initramfs QEMU's loader put there, named
    /// in the guest's `/chosen`.
    pub initrd: Option<(u64, u64)>,
    /// `/chosen/bootargs` of the guest.
    pub bootargs: &'static str,
    /// Interrupt controller.
    pub intc: Intc,
    /// Passthrough devices.
    pub devices: &'static [Passthrough],
    /// EOI policy for level passthrough interrupts.
    pub eoi: EoiMode,
    /// Host PCIe functions given to the guest (`crate::vpci`).
    pub pci: &'static [hyp_io::pci::Bdf],
}

impl GuestConfig {
    /// What hyp runs for guest `g` of a validated configuration. The strings and the
    /// device list live as long as hyp (guests are never destroyed).
    pub fn from_spec(g: &hyp_config::Guest) -> GuestConfig {
        let devices: Vec<Passthrough> = g
            .devices
            .iter()
            .map(|d| match d {
                Device::Uart => VIRT_UART,
                Device::Vuart => VIRT_VUART,
            })
            .collect();
        GuestConfig {
            name: String::leak(g.name.clone()),
            vcpus: g.vcpus as usize,
            ram_host_base: g.ram_host_base,
            ram_size: g.ram_size(),
            entry_offset: g.kernel.offset,
            initrd: g.initramfs.map(|r| (r.offset, r.size)),
            bootargs: String::leak(g.cmdline.clone()),
            intc: match g.topology {
                Topology::Vplic => VIRT_VPLIC,
                Topology::Aia => VIRT_AIA,
                // Refused by `load`.
                Topology::Vgicv3 | Topology::Vgicv4 => VIRT_VPLIC,
            },
            devices: devices.leak(),
            eoi: match g.eoi {
                // `hw` is refused by `hyp_config::validate` outside vgicv3.
                hyp_config::Eoi::Deferred | hyp_config::Eoi::Hw => EoiMode::Deferred,
                hyp_config::Eoi::Immediate => EoiMode::Immediate,
            },
            pci: g
                .pci
                .iter()
                .filter_map(|a| hyp_io::pci::Bdf::new(a.bus, a.dev, a.func))
                .collect::<Vec<_>>()
                .leak(),
        }
    }
}

/// QEMU virt's UART, passed through with its interrupt (PLIC source 10).
pub const VIRT_UART: Passthrough = Passthrough {
    name: "serial",
    kind: DeviceKind::Ns16550a { clock: 3_686_400 },
    host_base: 0x1000_0000,
    guest_base: 0x1000_0000,
    size: 0x1000,
    irq: Some(IrqPassthrough {
        pirq: Pirq(10),
        virq: Virq(10),
    }),
};

/// An emulated console UART at the address of QEMU virt's UART, for a guest that does
/// not own the real one.
pub const VIRT_VUART: Passthrough = Passthrough {
    name: "serial",
    kind: DeviceKind::EmulatedNs16550a,
    host_base: 0,
    guest_base: 0x1000_0000,
    size: 0x1000,
    irq: None,
};

/// The guest vPLIC at the same address as QEMU virt's PLIC.
pub const VIRT_VPLIC: Intc = Intc::VPlic {
    base: 0x0c00_0000,
    sources: 96,
};

/// The guest AIA at the addresses of QEMU virt's S-level APLIC and IMSIC, with as many
/// sources as QEMU's APLIC.
pub const VIRT_AIA: Intc = Intc::Aia {
    aplic_base: 0x0d00_0000,
    sources: 96,
    imsic_base: 0x2800_0000,
};

static OPTIONS: Once<hyp_config::Options> = Once::new();

/// hyp's options from the config blob (defaults until [`load`] ran).
pub fn options() -> hyp_config::Options {
    OPTIONS.get().copied().unwrap_or_default()
}

/// Read the configuration ([`crate::blob::load`]), refuse guests of another
/// architecture, and publish its options.
pub fn load(
    bootarg: Option<&str>,
    allowed: impl Fn(u64, u64) -> bool,
) -> Result<hyp_config::Config, Error> {
    let config = crate::blob::load(bootarg, allowed)?;
    for (i, g) in config.guests.iter().enumerate() {
        if g.topology.arch() == hyp_config::Arch::Aarch64 {
            return Err(Error::new(
                alloc::format!("guest[{i}].topology"),
                "vgicv3 and vgicv4 are the aarch64 GIC; this hyp runs on riscv64 (vplic or aia)",
            ));
        }
    }
    OPTIONS.call_once(|| config.hyp);
    Ok(config)
}
