//! Static guest configurations ("how to write a guest config": docs/hyp.md).
//!
//! A *profile* is the set of guests hyp boots together; the bootarg `profile=NAME`
//! (QEMU `-append`) picks one, default [`DEFAULT_PROFILE`]. Further bootargs override
//! single fields for testing: `vcpus=N` (vCPU count of every guest of the profile) and
//! `eoi=immediate|deferred`.

/// Guest-physical base of every guest's RAM.
pub const GUEST_RAM_BASE: u64 = 0x8000_0000;

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
    pub pirq: u32,
    /// Guest vPLIC source.
    pub virq: u32,
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
    /// line, else a software file (virq-riscv `VcpuImsic`); see `crate::aia`. Needs a
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

/// Where the guest's boot image comes from.
#[derive(Clone, Copy, Debug)]
pub enum Image {
    /// Already in the guest's RAM (QEMU `-device loader,file=…,addr=<host RAM base +
    /// offset>`); the boot vCPU starts at `GUEST_RAM_BASE + offset`.
    Preloaded {
        /// Offset in guest RAM of the entry point.
        offset: u64,
    },
}

/// One guest.
#[derive(Clone, Copy, Debug)]
pub struct GuestConfig {
    /// Name (printed, and in the accounting).
    pub name: &'static str,
    /// vCPUs (vCPU `i` runs on hart `i % harts`).
    pub vcpus: usize,
    /// Host physical base of the guest's RAM (2 MiB aligned).
    pub ram_host_base: u64,
    /// RAM size (2 MiB multiple).
    pub ram_size: u64,
    /// Boot image.
    pub image: Image,
    /// Copy the host's `/chosen` initrd (QEMU `-initrd`) into guest RAM at this offset
    /// and describe it in the guest's `/chosen`.
    pub initrd_offset: Option<u64>,
    /// `/chosen/bootargs` of the guest.
    pub bootargs: &'static str,
    /// Interrupt controller.
    pub intc: Intc,
    /// Passthrough devices.
    pub devices: &'static [Passthrough],
    /// EOI policy for level passthrough interrupts.
    pub eoi: EoiMode,
}

/// A set of guests booted together.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    /// Name for `profile=`.
    pub name: &'static str,
    /// The guests.
    pub guests: &'static [GuestConfig],
}

/// QEMU virt's UART, passed through with its interrupt (PLIC source 10).
pub const VIRT_UART: Passthrough = Passthrough {
    name: "serial",
    kind: DeviceKind::Ns16550a { clock: 3_686_400 },
    host_base: 0x1000_0000,
    guest_base: 0x1000_0000,
    size: 0x1000,
    irq: Some(IrqPassthrough { pirq: 10, virq: 10 }),
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

/// The bare-metal test guest (`hyp/testguest`).
pub const TESTGUEST: GuestConfig = GuestConfig {
    name: "testguest",
    vcpus: 2,
    ram_host_base: 0x9000_0000,
    ram_size: 32 << 20,
    image: Image::Preloaded { offset: 0 },
    initrd_offset: None,
    bootargs: "",
    intc: VIRT_VPLIC,
    devices: &[VIRT_UART],
    eoi: EoiMode::Deferred,
};

/// Debian's Linux kernel `Image` with a busybox initramfs (QEMU `-initrd`).
///
/// With `-m 512M` QEMU puts the `-initrd` at 0x9020_0000 (RAM base + 256 MiB + 2 MiB)
/// and its DTB in the last 2 MiB of RAM, so the guest RAM sits between the two.
pub const LINUX: GuestConfig = GuestConfig {
    name: "linux",
    vcpus: 2,
    ram_host_base: 0x9400_0000,
    ram_size: 160 << 20,
    image: Image::Preloaded { offset: 0x20_0000 },
    initrd_offset: Some(120 << 20),
    bootargs: "console=ttyS0 earlycon=sbi",
    intc: VIRT_VPLIC,
    devices: &[VIRT_UART],
    eoi: EoiMode::Deferred,
};

/// A second Linux guest next to [`LINUX`] (profile `two-linux`, QEMU `-m 1G`): its own
/// RAM above the first guest's, the same kernel (QEMU's loader puts a second copy at
/// `0xa820_0000`; QEMU puts `-initrd` at `0xa020_0000` with 1 GiB) and initramfs (copied from QEMU's `-initrd`), and an emulated console
/// UART instead of the passed-through one. `quiet` keeps its kernel log short, so its
/// prefixed lines interleave less with the first guest's console.
pub const LINUX2: GuestConfig = GuestConfig {
    name: "linux2",
    vcpus: 2,
    ram_host_base: 0xa800_0000,
    ram_size: 160 << 20,
    image: Image::Preloaded { offset: 0x20_0000 },
    initrd_offset: Some(120 << 20),
    bootargs: "console=ttyS0 quiet",
    intc: VIRT_VPLIC,
    devices: &[VIRT_VUART],
    eoi: EoiMode::Deferred,
};

/// The guest AIA at the addresses of QEMU virt's S-level APLIC and IMSIC, with as many
/// sources as QEMU's APLIC.
pub const VIRT_AIA: Intc = Intc::Aia {
    aplic_base: 0x0d00_0000,
    sources: 96,
    imsic_base: 0x2800_0000,
};

/// [`LINUX`] on the AIA topology (profile `linux-aia`, the `cargo xtask run` default):
/// vAPLIC in MSI mode, an IMSIC per vCPU on hardware guest files, the UART's MSIs
/// delivered by the physical APLIC straight into the guest's interrupt file.
pub const LINUX_AIA: GuestConfig = GuestConfig {
    name: "linux",
    intc: VIRT_AIA,
    ..LINUX
};

/// The test guest in its hostile mode (bootarg `virq.hostile` in its `/chosen`), next to
/// [`LINUX`] (profile `linux-hostile-plic`, QEMU `-m 1G`): its own RAM above the Linux
/// guest's (QEMU's loader puts the test guest's image at `0xa800_0000`), an emulated
/// console UART (its lines are prefixed `[hostile] `), no device of its own. It attacks
/// the other guest and hyp (docs/hyp.md "Isolation").
pub const HOSTILE: GuestConfig = GuestConfig {
    name: "hostile",
    vcpus: 2,
    ram_host_base: 0xa800_0000,
    ram_size: 32 << 20,
    image: Image::Preloaded { offset: 0 },
    initrd_offset: None,
    bootargs: "virq.hostile",
    intc: VIRT_VPLIC,
    devices: &[VIRT_VUART],
    eoi: EoiMode::Deferred,
};

/// [`HOSTILE`] on the AIA topology, next to [`LINUX_AIA`] (profile `linux-hostile`):
/// its IMSIC pages are hardware guest files of the same harts as the Linux guest's.
pub const HOSTILE_AIA: GuestConfig = GuestConfig {
    intc: VIRT_AIA,
    ..HOSTILE
};

/// Every profile.
pub const PROFILES: &[Profile] = &[
    Profile {
        name: "linux-aia",
        guests: &[LINUX_AIA],
    },
    Profile {
        name: "two-linux",
        guests: &[LINUX, LINUX2],
    },
    Profile {
        name: "linux-hostile",
        guests: &[LINUX_AIA, HOSTILE_AIA],
    },
    Profile {
        name: "linux-hostile-plic",
        guests: &[LINUX, HOSTILE],
    },
    Profile {
        name: "test",
        guests: &[TESTGUEST],
    },
    Profile {
        name: "linux",
        guests: &[LINUX],
    },
];

/// The profile booted without `profile=`.
pub const DEFAULT_PROFILE: &str = "test";

/// Host physical address where QEMU's loader must put the guest image of `g`.
pub fn image_load_addr(g: &GuestConfig) -> u64 {
    match g.image {
        Image::Preloaded { offset } => g.ram_host_base + offset,
    }
}
