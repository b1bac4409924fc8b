//! hyp's guests as data.
//!
//! A user describes guests in a TOML file (`configs/*.toml`, read by xtask); xtask
//! places each guest's RAM and images in host memory and hands hyp a [`Config`] as a
//! small flattened device tree (the *blob*, [`encode`]), which QEMU's loader puts
//! beside the images. hyp reads it back ([`decode`]) and checks it again with the same
//! [`validate`], because to hyp the blob is input like any other. Every error names
//! the field it is about, spelled as in the TOML file (`guest[1].vcpus`), so a message
//! from hyp's console points at the same line of the file as one from xtask.
//!
//! The blob (`compatible = "virq,hyp-config"`, [`VERSION`]): a `hyp` node with the
//! [`Options`] and one `guest@N` node per [`Guest`]; property names are the TOML keys,
//! numbers are u32 cells or, for addresses, u64 (two cells), `kernel` and `initramfs`
//! are `<offset size>` u64 pairs. `dtc -I dtb -O dts` shows one.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// Guest-physical base of every guest's RAM (QEMU `virt`'s DRAM base).
pub const GUEST_RAM_BASE: u64 = 0x8000_0000;
/// Guests hyp runs at once.
pub const MAX_GUESTS: usize = 8;
/// vCPUs of one guest (vPLIC contexts, IMSIC pages hyp maps).
pub const MAX_VCPUS_PER_GUEST: u32 = 8;
/// vCPUs of all guests together.
pub const MAX_VCPUS: u32 = 64;
/// Guest RAM is mapped with 2 MiB G-stage pages.
pub const RAM_ALIGN: u64 = 2 << 20;
/// hyp writes the guest's DTB into the last [`DTB_AREA`] bytes of its RAM.
pub const DTB_AREA: u64 = 2 << 20;
/// Alignment of an aarch64 guest's kernel in its RAM: an arm64 `Image` goes
/// `text_offset` bytes past a 2 MiB boundary (Documentation/arch/arm64/booting.rst), a
/// multiple of the 4 KiB page.
pub const KERNEL_ALIGN_AARCH64: u64 = 4 << 10;
/// Smallest guest RAM.
pub const MIN_MEMORY_MB: u32 = 4;
/// Longest kernel command line (Linux's riscv `COMMAND_LINE_SIZE`).
pub const MAX_CMDLINE: usize = 1024;
/// Longest guest name.
pub const MAX_NAME: usize = 32;
/// Longest period of hyp's test knobs (`migrate_ms`, `aia_flip_ms`).
pub const MAX_PERIOD_MS: u32 = 60_000;
/// PCIe functions one guest may be given (its ECAM has one bus of 32 devices; slot 0
/// stays empty).
pub const MAX_PCI_FUNCTIONS: usize = 8;
/// Blob format version.
pub const VERSION: u32 = 2;
/// Root `compatible` of the blob.
pub const COMPATIBLE: &str = "virq,hyp-config";

/// Everything hyp boots: its options and the guests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `[hyp]`.
    pub hyp: Options,
    /// `[[guest]]`, in order (guest 0 first).
    pub guests: Vec<Guest>,
}

/// hyp-wide options (`[hyp]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Move every vCPU to the next hart every this many ms (0: never; a test knob).
    pub migrate_ms: u32,
    /// Move every AIA vCPU's interrupt file between hardware and software every this
    /// many ms (0: never; a test knob).
    pub aia_flip_ms: u32,
    /// Idle states offered in the guest DTB.
    pub guest_idle: GuestIdle,
    /// When emulated UARTs print.
    pub vuart: VuartMode,
    /// Whether a guest `wfi` always traps to hyp.
    pub wfi: WfiMode,
}

/// Guest `wfi` handling (`[hyp] wfi`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WfiMode {
    /// Every guest `wfi` traps (`hstatus.VTW = 1`): hyp blocks the vCPU and runs
    /// another, or waits itself (the default).
    #[default]
    Trap,
    /// A vCPU alone on its hart (no other vCPU homed there is eligible to run) runs
    /// with `hstatus.VTW = 0`: its `wfi` stalls the hart in VS-mode and its own
    /// interrupts (hardware guest file, `vstimecmp`) wake it without hyp; any host
    /// interrupt (a kick for another vCPU, a timer) still traps.
    Direct,
}

/// Idle states in the guest DTB (`[hyp] guest_idle`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GuestIdle {
    /// None: the guest idles with `wfi` (the default).
    #[default]
    Wfi,
    /// SBI HSM `hart_suspend` states, retentive and non-retentive (Linux's
    /// cpuidle-riscv-sbi).
    Sbi,
}

/// When an emulated UART's lines reach hyp's console (`[hyp] vuart`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VuartMode {
    /// Line by line as the guest writes them (the default).
    #[default]
    Immediate,
    /// Kept until the last guest stops (tests: no interleaving with the UART owner).
    Deferred,
}

/// One guest (`[[guest]]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guest {
    /// Printed on the console and in the accounting.
    pub name: String,
    /// vCPUs (vCPU `i` starts on hart `i % harts`).
    pub vcpus: u32,
    /// RAM in MiB (even: 2 MiB pages).
    pub memory_mb: u32,
    /// Host physical base of the RAM (2 MiB aligned; xtask places it).
    pub ram_host_base: u64,
    /// The boot image, already in the guest's RAM; the boot vCPU starts at its first
    /// byte.
    pub kernel: Load,
    /// An initramfs, already in the guest's RAM, named in the guest's `/chosen`.
    pub initramfs: Option<Load>,
    /// `/chosen/bootargs`.
    pub cmdline: String,
    /// The guest's interrupt controller.
    pub topology: Topology,
    /// Devices the guest is given.
    pub devices: Vec<Device>,
    /// How a level passthrough interrupt is completed at the physical controller.
    pub eoi: Eoi,
    /// Host PCIe functions given to the guest (`pci = ["00:01.0"]`): each appears in
    /// the guest's own ECAM, its DMA through the IOMMU's second stage (riscv64) or the
    /// SMMUv3's stage 2 (aarch64), its MSIs in the guest's interrupt files (riscv64,
    /// `topology = "aia"`; aarch64 guests get no MSIs yet).
    pub pci: Vec<PciAddr>,
}

/// A PCIe function's address on the host bus, `BB:DD.F` in hex (`00:01.0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciAddr {
    /// Bus (0..=255).
    pub bus: u8,
    /// Device (0..=31).
    pub dev: u8,
    /// Function (0..=7).
    pub func: u8,
}

impl PciAddr {
    /// Parse `BB:DD.F` (hex bus and device, a function digit 0..7).
    pub fn parse(s: &str) -> Option<PciAddr> {
        let (bus, rest) = s.split_once(':')?;
        let (dev, func) = rest.split_once('.')?;
        let hex = |t: &str, max: u8| {
            (!t.is_empty() && t.len() <= 2)
                .then(|| u8::from_str_radix(t, 16).ok())
                .flatten()
                .filter(|v| *v <= max)
        };
        Some(PciAddr {
            bus: hex(bus, 0xff)?,
            dev: hex(dev, 31)?,
            func: (func.len() == 1).then(|| hex(func, 7)).flatten()?,
        })
    }

    /// The requester ID: `bus << 8 | dev << 3 | func`.
    pub fn rid(self) -> u16 {
        (u16::from(self.bus) << 8) | (u16::from(self.dev) << 3) | u16::from(self.func)
    }
}

impl fmt::Display for PciAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.dev, self.func)
    }
}

impl Guest {
    /// RAM size in bytes.
    pub fn ram_size(&self) -> u64 {
        u64::from(self.memory_mb) << 20
    }

    /// Does the guest own the physical UART?
    pub fn owns_uart(&self) -> bool {
        self.devices.contains(&Device::Uart)
    }
}

/// A file QEMU's loader put into a guest's RAM: `offset` from the RAM's base, `size`
/// bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    /// Offset in the guest's RAM.
    pub offset: u64,
    /// Bytes.
    pub size: u64,
}

impl Load {
    fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.size)
    }
}

/// A string-named choice of the schema.
pub trait Named: Sized + Copy + 'static {
    /// Every value with its name, as written in the TOML file.
    const NAMES: &'static [(&'static str, Self)];

    /// The value called `s`.
    fn from_name(s: &str) -> Option<Self> {
        Self::NAMES.iter().find(|(n, _)| *n == s).map(|(_, v)| *v)
    }

    /// This value's name.
    fn name(self) -> &'static str
    where
        Self: PartialEq,
    {
        Self::NAMES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |(n, _)| n)
    }

    /// `a, b, c`: the names, for an error message.
    fn choices() -> String {
        let names: Vec<&str> = Self::NAMES.iter().map(|(n, _)| *n).collect();
        names.join(", ")
    }
}

/// The architecture a configuration is for (xtask's `[machine] arch`). Not in the
/// blob: each guest's [`Topology`] implies it ([`Topology::arch`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Arch {
    /// RISC-V with the H extension, QEMU `virt` (`qemu-system-riscv64`).
    #[default]
    Riscv64,
    /// Arm with EL2, QEMU arm `virt` with `virtualization=on` (`qemu-system-aarch64`).
    Aarch64,
}

impl Named for Arch {
    const NAMES: &'static [(&'static str, Self)] =
        &[("riscv64", Self::Riscv64), ("aarch64", Self::Aarch64)];
}

/// The guest's interrupt controller (`topology`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// An emulated PLIC with one S-mode context per vCPU (any RISC-V host).
    Vplic,
    /// The AIA: a vAPLIC in MSI mode and an IMSIC file per vCPU, hardware guest files
    /// where the hart has them (needs a RISC-V host with an S-level IMSIC).
    Aia,
    /// A GICv3 (IHI 0069) as the guest sees it: a distributor and one redistributor per
    /// vCPU, affinity routing, the virtual CPU interface through the host's list
    /// registers (needs an aarch64 host with a GICv3).
    Vgicv3,
    /// [`Topology::Vgicv3`] plus GICv4.0 direct injection (issue 14): hyp gives each
    /// vCPU a vPE on the host ITS (made resident while the vCPU runs, its doorbell
    /// armed only while it blocks), so vLPIs reach a running vCPU with no exit (needs an
    /// aarch64 host with a GICv4 ITS: QEMU `-M virt,gic-version=4`).
    Vgicv4,
}

impl Topology {
    /// The architecture a guest with this controller runs on.
    pub fn arch(self) -> Arch {
        match self {
            Topology::Vplic | Topology::Aia => Arch::Riscv64,
            Topology::Vgicv3 | Topology::Vgicv4 => Arch::Aarch64,
        }
    }
}

impl Named for Topology {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("vplic", Self::Vplic),
        ("aia", Self::Aia),
        ("vgicv3", Self::Vgicv3),
        ("vgicv4", Self::Vgicv4),
    ];
}

/// A device given to the guest (`devices`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Device {
    /// The machine's UART, passed through with its interrupt at the same guest address:
    /// on riscv64 QEMU `virt`'s NS16550A at `0x1000_0000` (PLIC/APLIC source 10), on
    /// aarch64 QEMU arm `virt`'s PL011 at `0x0900_0000` (INTID 33, SPI 1). One guest
    /// at most: there is one.
    Uart,
    /// hyp's emulated UART at the real one's guest address — on riscv64 an NS16550A
    /// (no interrupt), on aarch64 a PL011 (its transmit interrupt on INTID 33): output
    /// goes to hyp's console prefixed with the guest's name.
    Vuart,
}

impl Named for Device {
    const NAMES: &'static [(&'static str, Self)] = &[("uart", Self::Uart), ("vuart", Self::Vuart)];
}

/// Completion policy of level passthrough interrupts (`eoi`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eoi {
    /// The physical complete waits for the guest's virtual complete (seed 001), done
    /// by hyp when it sees the guest's (a trapped PLIC complete; on a GICv3 the EOI
    /// maintenance interrupt of the list register).
    Deferred,
    /// The physical complete follows the claim at once: the storm, for demonstration.
    Immediate,
    /// The hardware completes the physical interrupt when the guest deactivates the
    /// virtual one, with no exit: a GICv3 `HW`-linked list register (`vgicv3` only).
    Hw,
}

impl Named for Eoi {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("deferred", Self::Deferred),
        ("immediate", Self::Immediate),
        ("hw", Self::Hw),
    ];
}

impl Named for GuestIdle {
    const NAMES: &'static [(&'static str, Self)] = &[("wfi", Self::Wfi), ("sbi", Self::Sbi)];
}

impl Named for WfiMode {
    const NAMES: &'static [(&'static str, Self)] =
        &[("trap", Self::Trap), ("direct", Self::Direct)];
}

impl Named for VuartMode {
    const NAMES: &'static [(&'static str, Self)] =
        &[("immediate", Self::Immediate), ("deferred", Self::Deferred)];
}

/// A configuration error: the field (as in the TOML file) and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// `guest[1].vcpus`, `hyp.migrate_ms`, `guest`, …
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl Error {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// `guest[i].key`.
pub fn guest_field(i: usize, key: &str) -> String {
    format!("guest[{i}].{key}")
}

/// Check everything that does not depend on the machine: counts and limits, names,
/// one architecture for all guests (their topologies), RAM shape and overlaps, image
/// placement inside RAM, device owners. The machine
/// (host RAM, an IMSIC for `aia`) is checked where it is known: by xtask against the
/// `[machine]` it starts, by hyp against the host DTB.
pub fn validate(c: &Config) -> Result<(), Error> {
    let o = &c.hyp;
    for (key, v) in [("migrate_ms", o.migrate_ms), ("aia_flip_ms", o.aia_flip_ms)] {
        if v > MAX_PERIOD_MS {
            return Err(Error::new(
                format!("hyp.{key}"),
                format!("{v} is above {MAX_PERIOD_MS} ms"),
            ));
        }
    }
    if c.guests.is_empty() || c.guests.len() > MAX_GUESTS {
        return Err(Error::new(
            "guest",
            format!("{} guests; 1 to {MAX_GUESTS} are supported", c.guests.len()),
        ));
    }
    let mut total_vcpus = 0u32;
    for (i, g) in c.guests.iter().enumerate() {
        validate_guest(i, g)?;
        total_vcpus += g.vcpus;
        if total_vcpus > MAX_VCPUS {
            return Err(Error::new(
                guest_field(i, "vcpus"),
                format!(
                    "the guests have {total_vcpus} vCPUs together; hyp runs at most {MAX_VCPUS}"
                ),
            ));
        }
        let arch = c.guests[0].topology.arch();
        if g.topology.arch() != arch {
            return Err(Error::new(
                guest_field(i, "topology"),
                format!(
                    "\"{}\" is for {}, guest[0]'s \"{}\" for {}: the guests of one machine share its architecture",
                    g.topology.name(),
                    g.topology.arch().name(),
                    c.guests[0].topology.name(),
                    arch.name()
                ),
            ));
        }
        for (j, h) in c.guests[..i].iter().enumerate() {
            if h.name == g.name {
                return Err(Error::new(
                    guest_field(i, "name"),
                    format!("\"{}\" is also the name of guest[{j}]", g.name),
                ));
            }
            let (a, b) = (
                (g.ram_host_base, g.ram_size()),
                (h.ram_host_base, h.ram_size()),
            );
            if a.0 < b.0.saturating_add(b.1) && b.0 < a.0.saturating_add(a.1) {
                return Err(Error::new(
                    guest_field(i, "ram_host_base"),
                    format!(
                        "RAM {:#x}..{:#x} overlaps guest[{j}] \"{}\" ({:#x}..{:#x})",
                        a.0,
                        a.0.saturating_add(a.1),
                        h.name,
                        b.0,
                        b.0.saturating_add(b.1)
                    ),
                ));
            }
            if let Some(a) = g.pci.iter().find(|a| h.pci.contains(a)) {
                return Err(Error::new(
                    guest_field(i, "pci"),
                    format!(
                        "{a} is already given to guest[{j}] \"{}\" (a function has one owner)",
                        h.name
                    ),
                ));
            }
            if g.owns_uart() && h.owns_uart() {
                return Err(Error::new(
                    guest_field(i, "devices"),
                    format!(
                        "uart is already passed through to guest[{j}] \"{}\" (the machine has one UART)",
                        h.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn validate_guest(i: usize, g: &Guest) -> Result<(), Error> {
    let f = |k: &str| guest_field(i, k);
    if g.eoi == Eoi::Hw && g.topology.arch() != Arch::Aarch64 {
        return Err(Error::new(
            f("eoi"),
            "\"hw\" needs a GICv3 list register (topology = \"vgicv3\"); use \"deferred\"",
        ));
    }
    if g.name.is_empty()
        || g.name.len() > MAX_NAME
        || !g
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::new(
            f("name"),
            format!("{:?}: 1 to {MAX_NAME} letters, digits, '-' or '_'", g.name),
        ));
    }
    if g.vcpus == 0 || g.vcpus > MAX_VCPUS_PER_GUEST {
        return Err(Error::new(
            f("vcpus"),
            format!("{}: a guest has 1 to {MAX_VCPUS_PER_GUEST} vCPUs", g.vcpus),
        ));
    }
    if g.memory_mb < MIN_MEMORY_MB || g.memory_mb % 2 != 0 {
        return Err(Error::new(
            f("memory_mb"),
            format!(
                "{}: at least {MIN_MEMORY_MB} and even (RAM is mapped in 2 MiB pages)",
                g.memory_mb
            ),
        ));
    }
    if g.ram_host_base % RAM_ALIGN != 0 || g.ram_host_base.checked_add(g.ram_size()).is_none() {
        return Err(Error::new(
            f("ram_host_base"),
            format!("{:#x} is not 2 MiB aligned", g.ram_host_base),
        ));
    }
    // Images must lie below the DTB area and not overlap; the kernel on a 2 MiB
    // boundary (Linux's riscv64 `Image` requires it) or, on aarch64, `text_offset` past
    // one (Linux's arm64 `Image`: a page multiple, 0 since Linux 5.8).
    let usable = g.ram_size() - DTB_AREA;
    let k = g.kernel;
    let (align, how) = match g.topology.arch() {
        Arch::Riscv64 => (RAM_ALIGN, "2 MiB aligned"),
        Arch::Aarch64 => (KERNEL_ALIGN_AARCH64, "4 KiB aligned"),
    };
    if k.size == 0 || k.offset % align != 0 || k.end().is_none_or(|e| e > usable) {
        return Err(Error::new(
            f("kernel"),
            format!(
                "{} bytes at offset {:#x} do not fit {how} below the last 2 MiB (the DTB's) of {} MiB of RAM",
                k.size, k.offset, g.memory_mb
            ),
        ));
    }
    if let Some(r) = g.initramfs {
        let inside = r.size > 0 && r.end().is_some_and(|e| e <= usable);
        let apart = r.offset >= k.offset + k.size || r.offset + r.size <= k.offset;
        if !inside || !apart {
            return Err(Error::new(
                f("initramfs"),
                format!(
                    "{} bytes at offset {:#x} do not fit in {} MiB of RAM beside the kernel ({:#x}+{:#x}) and below the DTB",
                    r.size, r.offset, g.memory_mb, k.offset, k.size
                ),
            ));
        }
    }
    if g.cmdline.len() > MAX_CMDLINE || g.cmdline.contains('\0') {
        return Err(Error::new(
            f("cmdline"),
            format!("{} bytes; at most {MAX_CMDLINE}, no NUL", g.cmdline.len()),
        ));
    }
    for (n, d) in g.devices.iter().enumerate() {
        if g.devices[..n].contains(d) {
            return Err(Error::new(
                f("devices"),
                format!("{} is listed twice", d.name()),
            ));
        }
    }
    if g.devices.contains(&Device::Uart) && g.devices.contains(&Device::Vuart) {
        return Err(Error::new(
            f("devices"),
            "uart and vuart both sit at guest address 0x1000_0000; give one",
        ));
    }
    for (n, a) in g.pci.iter().enumerate() {
        if g.pci[..n].contains(a) {
            return Err(Error::new(f("pci"), format!("{a} is listed twice")));
        }
    }
    if g.pci.len() > MAX_PCI_FUNCTIONS {
        return Err(Error::new(
            f("pci"),
            format!(
                "{} functions; a guest gets at most {MAX_PCI_FUNCTIONS}",
                g.pci.len()
            ),
        ));
    }
    // riscv64: the MSIs go to interrupt files (AIA); aarch64 (vGICv3/vGICv4): DMA
    // through the SMMUv3's stage 2, no MSIs yet (no guest ITS).
    if !g.pci.is_empty()
        && !matches!(
            g.topology,
            Topology::Aia | Topology::Vgicv3 | Topology::Vgicv4
        )
    {
        return Err(Error::new(
            f("pci"),
            "a PCIe function's MSIs need interrupt files: use topology = \"aia\" (riscv64) or \"vgicv3\"/\"vgicv4\" (aarch64)",
        ));
    }
    Ok(())
}

/// The blob of `c`.
pub fn encode(c: &Config) -> Vec<u8> {
    encode_fdt(c).expect("names and strings of a Config are valid FDT content")
}

fn encode_fdt(c: &Config) -> Result<Vec<u8>, vm_fdt::Error> {
    let mut w = vm_fdt::FdtWriter::new()?;
    let root = w.begin_node("")?;
    w.property_string("compatible", COMPATIBLE)?;
    w.property_u32("version", VERSION)?;
    let h = w.begin_node("hyp")?;
    w.property_u32("migrate_ms", c.hyp.migrate_ms)?;
    w.property_u32("aia_flip_ms", c.hyp.aia_flip_ms)?;
    w.property_string("guest_idle", c.hyp.guest_idle.name())?;
    w.property_string("vuart", c.hyp.vuart.name())?;
    w.property_string("wfi", c.hyp.wfi.name())?;
    w.end_node(h)?;
    for (i, g) in c.guests.iter().enumerate() {
        let n = w.begin_node(&format!("guest@{i}"))?;
        w.property_string("name", &g.name)?;
        w.property_u32("vcpus", g.vcpus)?;
        w.property_u32("memory_mb", g.memory_mb)?;
        w.property_u64("ram_host_base", g.ram_host_base)?;
        w.property_array_u64("kernel", &[g.kernel.offset, g.kernel.size])?;
        if let Some(r) = g.initramfs {
            w.property_array_u64("initramfs", &[r.offset, r.size])?;
        }
        w.property_string("cmdline", &g.cmdline)?;
        w.property_string("topology", g.topology.name())?;
        let devices = g.devices.iter().map(|d| d.name().to_string()).collect();
        w.property_string_list("devices", devices)?;
        w.property_string("eoi", g.eoi.name())?;
        if !g.pci.is_empty() {
            let pci = g.pci.iter().map(|a| a.to_string()).collect();
            w.property_string_list("pci", pci)?;
        }
        w.end_node(n)?;
    }
    w.end_node(root)?;
    w.finish()
}

/// Read a blob back. Errors name the field; the result still needs [`validate`].
pub fn decode(blob: &[u8]) -> Result<Config, Error> {
    let root = blob::parse(blob).map_err(|e| Error::new("config blob", e))?;
    let compatible = root
        .prop("compatible")
        .map(|v| v.strip_suffix(&[0]).unwrap_or(v));
    if compatible != Some(COMPATIBLE.as_bytes()) {
        return Err(Error::new(
            "config blob",
            format!("compatible is not \"{COMPATIBLE}\""),
        ));
    }
    let version = root.prop("version");
    if version != Some(&VERSION.to_be_bytes()[..]) {
        return Err(Error::new(
            "config blob",
            format!("version {version:?}, this hyp reads version {VERSION}"),
        ));
    }
    let mut hyp = Options::default();
    if let Some(h) = root.children.iter().find(|n| n.name == "hyp") {
        let p = Props {
            node: h,
            prefix: "hyp".into(),
        };
        hyp.migrate_ms = p.u32("migrate_ms")?;
        hyp.aia_flip_ms = p.u32("aia_flip_ms")?;
        hyp.guest_idle = p.named("guest_idle")?;
        hyp.vuart = p.named("vuart")?;
        hyp.wfi = p.named("wfi")?;
    }
    let mut guests = Vec::new();
    for node in &root.children {
        let Some(unit) = node.name.strip_prefix("guest@") else {
            continue;
        };
        let i = guests.len();
        if unit.parse::<usize>() != Ok(i) || i >= MAX_GUESTS {
            return Err(Error::new(
                "config blob",
                format!("node {} where guest@{i} was expected", node.name),
            ));
        }
        let p = Props {
            node,
            prefix: format!("guest[{i}]"),
        };
        let devices = p.list("devices")?;
        let devices = devices
            .iter()
            .map(|d| {
                Device::from_name(d).ok_or_else(|| {
                    Error::new(
                        p.field("devices"),
                        format!("\"{d}\" is not one of {}", Device::choices()),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let pci = match node.prop("pci") {
            None => Vec::new(),
            Some(_) => p
                .list("pci")?
                .iter()
                .map(|a| {
                    PciAddr::parse(a).ok_or_else(|| {
                        Error::new(p.field("pci"), format!("\"{a}\" is not BB:DD.F"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        guests.push(Guest {
            name: p.str("name")?.into(),
            vcpus: p.u32("vcpus")?,
            memory_mb: p.u32("memory_mb")?,
            ram_host_base: p.u64("ram_host_base")?,
            kernel: p.load("kernel")?.ok_or_else(|| p.missing("kernel"))?,
            initramfs: p.load("initramfs")?,
            cmdline: p.str("cmdline")?.into(),
            topology: p.named("topology")?,
            devices,
            eoi: p.named("eoi")?,
            pci,
        });
    }
    Ok(Config { hyp, guests })
}

/// The properties of one node, with the TOML spelling of their fields.
struct Props<'n, 'a> {
    node: &'n blob::Node<'a>,
    prefix: String,
}

impl<'a> Props<'_, 'a> {
    fn field(&self, key: &str) -> String {
        format!("{}.{key}", self.prefix)
    }

    fn missing(&self, key: &str) -> Error {
        Error::new(self.field(key), "missing")
    }

    fn raw(&self, key: &str) -> Result<&'a [u8], Error> {
        self.node.prop(key).ok_or_else(|| self.missing(key))
    }

    fn u32(&self, key: &str) -> Result<u32, Error> {
        match self.raw(key)? {
            &[a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
            v => Err(Error::new(
                self.field(key),
                format!("{} bytes, expected a 32-bit cell", v.len()),
            )),
        }
    }

    fn u64s(&self, key: &str, v: &[u8]) -> Result<Vec<u64>, Error> {
        if v.len() % 8 != 0 {
            return Err(Error::new(
                self.field(key),
                format!("{} bytes, expected 64-bit values", v.len()),
            ));
        }
        Ok(v.chunks_exact(8)
            .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect())
    }

    fn u64(&self, key: &str) -> Result<u64, Error> {
        match self.u64s(key, self.raw(key)?)?[..] {
            [v] => Ok(v),
            _ => Err(Error::new(self.field(key), "expected one 64-bit value")),
        }
    }

    fn load(&self, key: &str) -> Result<Option<Load>, Error> {
        let Some(v) = self.node.prop(key) else {
            return Ok(None);
        };
        match self.u64s(key, v)?[..] {
            [offset, size] => Ok(Some(Load { offset, size })),
            _ => Err(Error::new(self.field(key), "expected <offset size>")),
        }
    }

    fn str(&self, key: &str) -> Result<&'a str, Error> {
        let v = self.raw(key)?;
        let s = v.strip_suffix(&[0]).unwrap_or(v);
        core::str::from_utf8(s)
            .ok()
            .filter(|s| !s.contains('\0'))
            .ok_or_else(|| Error::new(self.field(key), "not a UTF-8 string"))
    }

    fn list(&self, key: &str) -> Result<Vec<&'a str>, Error> {
        let v = self.raw(key)?;
        if v.is_empty() {
            return Ok(Vec::new());
        }
        let s = v
            .strip_suffix(&[0])
            .and_then(|s| core::str::from_utf8(s).ok())
            .ok_or_else(|| Error::new(self.field(key), "not a string list"))?;
        Ok(s.split('\0').collect())
    }

    fn named<T: Named + PartialEq>(&self, key: &str) -> Result<T, Error> {
        let s = self.str(key)?;
        T::from_name(s).ok_or_else(|| {
            Error::new(
                self.field(key),
                format!("\"{s}\" is not one of {}", T::choices()),
            )
        })
    }
}

mod blob;
pub mod migrate;
pub mod seed;

#[cfg(test)]
mod tests;
