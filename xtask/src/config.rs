//! Guest configuration files (`configs/*.toml`): reading one, applying `--set`
//! overrides, checking it (errors name the field: `guest[1].vcpus: …`), placing each
//! guest's RAM and images in host memory, and the QEMU machine that boots it — hyp
//! with the [`hyp_config`] blob, the images and the blob put in place by QEMU's
//! loader. The schema is in docs/hyp.md ("Guests as data").
//!
//! Host memory, per architecture ([`HostLayout`]):
//! - riscv64 (QEMU `virt`, RAM at `0x8000_0000`): OpenSBI and hyp below
//!   [`CONFIG_BLOB_ADDR`], the blob there, guests from [`FIRST_GUEST_RAM`] up, one after
//!   the other on 2 MiB boundaries, and the last 2 MiB of the machine's RAM left to QEMU
//!   (its DTB).
//! - aarch64 (QEMU arm `virt`, RAM at [`AARCH64_RAM_BASE`]): QEMU's DTB at the base,
//!   hyp's ELF from `0x4020_0000` with its stacks and heap below [`AARCH64_HYP_END`],
//!   guests from there up on 2 MiB boundaries, then the blob on the next 2 MiB boundary
//!   (there is no gap between hyp and the first guest to hold it).
//!
//! A guest's RAM is at [`hyp_config::GUEST_RAM_BASE`] in its own physical address space
//! on both. Its kernel: a RISC-V `Image` 2 MiB into RAM (any other riscv64 image at the
//! first byte), the initramfs as high as it fits below the DTB's last 2 MiB; an arm64
//! `Image` at its header's `text_offset`, the initramfs on the first 2 MiB boundary after
//! its `image_size` ([`Arm64Image`]).
use anyhow::{bail, ensure, Context, Result};
use hyp_config::{guest_field, Arch, Error as FieldError, Load, Named, Topology, RAM_ALIGN};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::qemu::{Machine, Payload};

/// Host physical address of the config blob on riscv64 (`config=` on hyp's command
/// line).
pub const CONFIG_BLOB_ADDR: u64 = 0x8800_0000;
/// The blob may not be larger (hyp copies at most this much).
pub const CONFIG_BLOB_MAX: u64 = 64 << 10;
/// Host RAM base of the first guest on riscv64.
pub const FIRST_GUEST_RAM: u64 = 0x9000_0000;
/// Host RAM base of QEMU arm `virt`.
pub const AARCH64_RAM_BASE: u64 = 0x4000_0000;
/// hyp's aarch64 image (linked at `0x4020_0000`, `hyp/hv/hyp-aarch64.ld`), its stacks
/// and its heap end below this; the first guest's RAM starts here.
pub const AARCH64_HYP_END: u64 = 0x4400_0000;
/// Harts hyp supports (`MAX_HARTS` in `hyp/hv/src/arch/riscv64/entry.rs` and
/// `hyp/hv/hyp-aarch64.ld`).
const MAX_HARTS: u32 = 8;
/// The configuration `cargo xtask run` boots without `--config`.
pub const DEFAULT_CONFIG: &str = "configs/linux-aia.toml";
/// The configuration `cargo xtask run --arch aarch64` boots without `--config`.
pub const DEFAULT_CONFIG_AARCH64: &str = "configs/linux-arm64.toml";

/// Where the config blob goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPlace {
    /// At this host address, below the first guest.
    At(u64),
    /// On the first 2 MiB boundary after the last guest's RAM.
    AfterGuests,
}

/// Host physical memory of one architecture's QEMU `virt` machine, as xtask fills it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLayout {
    /// The machine's RAM base.
    pub ram_base: u64,
    /// The first guest's RAM by default; no guest RAM below (see `below`).
    pub first_guest_ram: u64,
    /// What lies below `first_guest_ram`, for an error message.
    pub below: &'static str,
    /// The config blob.
    pub blob: BlobPlace,
    /// RAM QEMU keeps at the machine's top (riscv64: its DTB's 2 MiB).
    pub qemu_top: u64,
}

/// riscv64: OpenSBI and hyp from `0x8000_0000`, the blob, the guests, QEMU's DTB.
pub const RISCV64_LAYOUT: HostLayout = HostLayout {
    ram_base: 0x8000_0000,
    first_guest_ram: FIRST_GUEST_RAM,
    below: "OpenSBI, hyp and the config blob",
    blob: BlobPlace::At(CONFIG_BLOB_ADDR),
    qemu_top: 2 << 20,
};

/// aarch64: QEMU's DTB and hyp from `0x4000_0000`, the guests, the blob.
pub const AARCH64_LAYOUT: HostLayout = HostLayout {
    ram_base: AARCH64_RAM_BASE,
    first_guest_ram: AARCH64_HYP_END,
    below: "QEMU's DTB and hyp's image, stacks and heap",
    blob: BlobPlace::AfterGuests,
    qemu_top: 0,
};

impl HostLayout {
    /// The layout of `arch`.
    pub fn of(arch: Arch) -> HostLayout {
        match arch {
            Arch::Riscv64 => RISCV64_LAYOUT,
            Arch::Aarch64 => AARCH64_LAYOUT,
        }
    }
}

/// What the header of a Linux arm64 `Image` says (Documentation/arch/arm64/booting.rst:
/// `text_offset` at 0x08, `image_size` at 0x10, both little-endian u64, magic
/// `ARM\x64` at 0x38).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arm64Image {
    /// Where the image goes past a 2 MiB aligned base (0 since Linux 5.8).
    pub text_offset: u64,
    /// The bytes the kernel uses from its load address, its BSS included.
    pub image_size: u64,
}

impl Arm64Image {
    /// Read the header of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Arm64Image> {
        ensure!(
            bytes.get(0x38..0x3c) == Some(b"ARM\x64".as_slice()),
            "not a Linux arm64 Image (no \"ARM\\x64\" magic at offset 0x38)"
        );
        let u64_at = |o: usize| {
            u64::from_le_bytes(
                bytes[o..o + 8]
                    .try_into()
                    .expect("8 bytes inside the header"),
            )
        };
        let (text_offset, image_size) = (u64_at(0x08), u64_at(0x10));
        ensure!(
            image_size != 0,
            "image_size 0 in its header (a kernel older than Linux 3.17): its size in memory is unknown"
        );
        Ok(Arm64Image {
            text_offset,
            image_size,
        })
    }
}

/// A configuration file as written.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub machine: MachineToml,
    #[serde(default)]
    pub hyp: HypToml,
    #[serde(default)]
    pub guest: Vec<GuestToml>,
}

/// `[machine]`: the QEMU machine.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct MachineToml {
    /// `"riscv64"` (`qemu-system-riscv64`) or `"aarch64"` (`qemu-system-aarch64`).
    pub arch: String,
    /// Harts (`-smp`).
    pub harts: u32,
    /// riscv64: `"plic"` (plain `-M virt`) or `"aia"` (`aia=aplic-imsic`, the default);
    /// aarch64: `"gicv3"` (`gic-version=3`, the default).
    pub interrupts: Option<String>,
    /// Guest interrupt files per hart (`aia-guests=`), with `"aia"`.
    pub guest_files: Option<u32>,
    /// RAM (`-m`), default: enough for the guests, at least 512.
    pub memory_mb: Option<u32>,
    /// riscv64: the RISC-V IOMMU: `"sys"` (`-M virt,iommu-sys=on`, the platform
    /// device) or `"pci"` (`-device riscv-iommu-pci`, at 00:01.0); aarch64:
    /// `"smmuv3"` (`-M virt,iommu=smmuv3`); none by default.
    pub iommu: Option<String>,
    /// riscv64: the ACLINT devices instead of the SiFive CLINT (`-M virt,aclint=on`):
    /// with its S-mode software interrupt device (SSWI) hyp sends its own IPIs by a
    /// store, not an SBI call, on a host without an IMSIC. Off by default.
    pub aclint: bool,
    /// PCIe functions on the host bridge, in slot order after the IOMMU's: `"virtio-net"`
    /// (`virtio-net-pci`, modern only, DMA through the IOMMU), `"e1000e"`, `"edu"`. A NIC
    /// gets QEMU user networking with `restrict=on` (nothing leaves this machine).
    pub pci: Vec<String>,
}

impl Default for MachineToml {
    fn default() -> Self {
        MachineToml {
            arch: "riscv64".into(),
            harts: 2,
            interrupts: None,
            guest_files: None,
            memory_mb: None,
            iommu: None,
            aclint: false,
            pci: Vec::new(),
        }
    }
}

impl MachineToml {
    /// `arch`, checked.
    pub fn arch(&self) -> Result<Arch> {
        named("machine.arch", &self.arch).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// `[hyp]`: hyp-wide options.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct HypToml {
    pub migrate_ms: u32,
    pub aia_flip_ms: u32,
    pub guest_idle: String,
    pub vuart: String,
    pub wfi: String,
}

impl Default for HypToml {
    fn default() -> Self {
        HypToml {
            migrate_ms: 0,
            aia_flip_ms: 0,
            guest_idle: "wfi".into(),
            vuart: "immediate".into(),
            wfi: "trap".into(),
        }
    }
}

/// `[[guest]]`.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct GuestToml {
    pub name: String,
    /// `"debian"`, `"testguest"`, `"bench"` or a path (relative to the file's folder).
    pub kernel: String,
    /// `"debian-shell"`, `"debian-test"`, `"debian-net-<nic>"`, `"debian-net-test-<nic>"`
    /// (`crate::net::named_initramfs`), a path, or none.
    pub initramfs: Option<String>,
    #[serde(default)]
    pub cmdline: String,
    pub memory_mb: u32,
    pub vcpus: u32,
    pub topology: String,
    #[serde(default)]
    pub devices: Vec<String>,
    #[serde(default = "deferred")]
    pub eoi: String,
    /// Host PCIe functions given to the guest, `"BB:DD.F"` (see `machine.pci`).
    #[serde(default)]
    pub pci: Vec<String>,
    /// Host physical base of the RAM (default: placed after the previous guest).
    pub ram_host_base: Option<u64>,
}

fn deferred() -> String {
    "deferred".into()
}

/// Guest interrupt files per hart when `[machine] interrupts = "aia"` does not say.
pub const DEFAULT_GUEST_FILES: u32 = 3;

/// The machine part of a resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineSpec {
    pub arch: Arch,
    pub harts: u32,
    /// `Some(n)`: `aia=aplic-imsic,aia-guests=n` (riscv64).
    pub aia: Option<u32>,
    pub memory_mb: u32,
    /// The IOMMU and the PCIe functions (`machine.iommu`, `machine.pci`).
    pub pcie: Pcie,
    /// `machine.aclint` (riscv64): `-M virt,aclint=on`.
    pub aclint: bool,
}

impl MachineSpec {
    /// QEMU arguments beyond `-M <machine>`, `-smp`, `-m`: the ACLINT (a second `-M`, which
    /// QEMU merges into the first), the IOMMU and the PCIe functions (`netdev`: as
    /// [`Pcie::qemu_args`]).
    pub fn qemu_args(&self, netdev: &str) -> Vec<String> {
        let mut a = Vec::new();
        if self.aclint {
            a.extend(["-M".into(), "aclint=on".into()]);
        }
        a.extend(self.pcie.qemu_args(netdev));
        a
    }
}

/// The machine's IOMMU and PCIe functions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pcie {
    /// `machine.iommu`.
    pub iommu: Option<IommuKind>,
    /// `machine.pci`, in slot order.
    pub functions: Vec<PciKind>,
}

/// `machine.iommu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IommuKind {
    /// `-M virt,iommu-sys=on`.
    Sys,
    /// `-device riscv-iommu-pci` (function 00:01.0).
    Pci,
    /// aarch64: `-M virt,iommu=smmuv3` (the SMMUv3 at 0x0905_0000; `-nic none` keeps
    /// QEMU's default NIC off 00:01.0).
    Smmuv3,
}

/// One of `machine.pci`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciKind {
    VirtioNet,
    E1000e,
    Edu,
}

impl PciKind {
    const NAMES: [(&'static str, PciKind); 3] = [
        ("virtio-net", PciKind::VirtioNet),
        ("e1000e", PciKind::E1000e),
        ("edu", PciKind::Edu),
    ];

    fn is_nic(self) -> bool {
        matches!(self, PciKind::VirtioNet | PciKind::E1000e)
    }
}

impl Pcie {
    /// The first slot a `machine.pci` function takes (the PCI IOMMU takes slot 1).
    pub fn first_slot(&self) -> u8 {
        if self.iommu == Some(IommuKind::Pci) {
            2
        } else {
            1
        }
    }

    /// QEMU's arguments; `netdev` is appended to each NIC's `-netdev user,...,restrict=on`
    /// (e.g. `,guestfwd=...`), and must keep every packet on this machine.
    pub fn qemu_args(&self, netdev: &str) -> Vec<String> {
        let mut a = Vec::new();
        match self.iommu {
            Some(IommuKind::Sys) => a.extend(["-M".into(), "iommu-sys=on".into()]),
            Some(IommuKind::Pci) => a.extend(["-device".into(), "riscv-iommu-pci".into()]),
            Some(IommuKind::Smmuv3) => a.extend([
                "-M".into(),
                "iommu=smmuv3".into(),
                "-nic".into(),
                "none".into(),
            ]),
            None => {}
        }
        for (i, f) in self.functions.iter().enumerate() {
            let addr = format!("addr={:#x}.0", self.first_slot() as usize + i);
            if f.is_nic() {
                a.push("-netdev".into());
                a.push(format!("user,id=net{i},restrict=on{netdev}"));
            }
            a.push("-device".into());
            a.push(match f {
                // Modern only (no I/O BAR); `iommu_platform`: its DMA goes through the
                // IOMMU (without it QEMU's virtio bypasses any IOMMU).
                PciKind::VirtioNet => format!(
                    "virtio-net-pci,netdev=net{i},disable-legacy=on,iommu_platform=on,{addr}"
                ),
                PciKind::E1000e => format!("e1000e,netdev=net{i},{addr}"),
                PciKind::Edu => format!("edu,dma_mask=0xffffffffffffffff,{addr}"),
            });
        }
        a
    }
}

/// `machine.iommu` and `machine.pci`, checked.
fn pcie(arch: Arch, m: &MachineToml) -> Result<Pcie> {
    let iommu = match (arch, m.iommu.as_deref()) {
        (_, None) => None,
        (Arch::Riscv64, Some("sys")) => Some(IommuKind::Sys),
        (Arch::Riscv64, Some("pci")) => Some(IommuKind::Pci),
        (Arch::Aarch64, Some("smmuv3")) => Some(IommuKind::Smmuv3),
        (Arch::Riscv64, Some(other)) => {
            bail!("machine.iommu: \"{other}\" is not one of sys, pci (riscv64)")
        }
        (Arch::Aarch64, Some(other)) => {
            bail!("machine.iommu: \"{other}\" is not smmuv3 (aarch64)")
        }
    };
    ensure!(
        arch == Arch::Riscv64 || m.pci.iter().all(|n| n == "edu") || iommu.is_some(),
        "machine.pci: a NIC on aarch64 needs machine.iommu = \"smmuv3\" (its DMA and MSIs go through the SMMU's stage 2)"
    );
    let functions = m
        .pci
        .iter()
        .map(|n| {
            PciKind::NAMES
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| *v)
                .with_context(|| {
                    format!("machine.pci: \"{n}\" is not one of virtio-net, e1000e, edu")
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let p = Pcie { iommu, functions };
    ensure!(
        p.first_slot() as usize + p.functions.len() <= 32,
        "machine.pci: {} functions do not fit in 31 slots",
        p.functions.len()
    );
    Ok(p)
}

/// A configuration ready to boot.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The file's stem (`linux-aia`), or the name it was given.
    pub name: String,
    pub machine: MachineSpec,
    /// What hyp gets.
    pub config: hyp_config::Config,
    /// `(file, host address)` for QEMU's loader.
    pub loads: Vec<(PathBuf, u64)>,
    /// Host address of the config blob (`config=`).
    pub blob_addr: u64,
}

/// Where the named images come from.
pub trait Images {
    /// The bare-metal test guest's raw image (riscv64).
    fn testguest(&self) -> Result<PathBuf>;
    /// Debian's kernel `Image` of `arch`.
    fn debian_kernel(&self, arch: Arch) -> Result<PathBuf>;
    /// A Debian initramfs of `arch`: `"shell"` or `"test"`.
    fn debian_initramfs(&self, arch: Arch, which: &str) -> Result<PathBuf>;
    /// The system benchmark payload (`guest/bench`, an `Image`-headed raw image).
    fn bench(&self) -> Result<PathBuf>;
    /// A network initramfs of `arch` (`debian-net-virtio`, `debian-net-test-e1000e`, …:
    /// [`crate::net::named_initramfs`]; arm64's serve with busybox's httpd,
    /// `crate::armnet`).
    fn net_initramfs(&self, arch: Arch, name: &str) -> Result<PathBuf> {
        match arch {
            Arch::Riscv64 => crate::net::build_named_initramfs(name),
            Arch::Aarch64 => crate::armnet::build_named_initramfs(name),
        }
    }
}

/// Where `cargo xtask run` and the suite find the named images of a configuration.
pub(crate) struct NamedImages {
    /// The riscv64 test guest, when hyp was built for riscv64.
    pub(crate) testguest: Option<PathBuf>,
    pub(crate) kernel_version: Option<String>,
}

impl Images for NamedImages {
    fn testguest(&self) -> Result<PathBuf> {
        self.testguest
            .clone()
            .context("hyp's test guest was not built (it is a riscv64 image)")
    }
    fn debian_kernel(&self, arch: Arch) -> Result<PathBuf> {
        Ok(crate::images::ensure_debian(arch, self.kernel_version.as_deref())?.kernel)
    }
    fn debian_initramfs(&self, arch: Arch, which: &str) -> Result<PathBuf> {
        let init = match which {
            "shell" => crate::images::INIT_SHELL,
            _ => crate::images::INIT_TEST,
        };
        let v = self.kernel_version.as_deref();
        Ok(crate::images::debian_boot(arch, v, which, init)?.initramfs)
    }
    fn bench(&self) -> Result<PathBuf> {
        crate::qemu::build_bench()
    }
}

/// Every guest booting the interactive shell gets the test `/init` instead.
pub(crate) fn use_test_init(file: &mut File) {
    for g in &mut file.guest {
        if g.initramfs.as_deref() == Some("debian-shell") {
            g.initramfs = Some("debian-test".into());
        }
        // The network shell's test counterpart.
        if let Some((nic, false)) = g.initramfs.as_deref().and_then(crate::net::named_initramfs) {
            g.initramfs = Some(format!("debian-net-test-{}", nic.name()));
        }
    }
}

/// Read `path` and apply `sets` (`key.path=value`). A relative path that is not
/// there is looked up from the workspace root too (`configs/…` from any folder).
pub fn load(path: &Path, sets: &[String]) -> Result<(File, PathBuf)> {
    let from_root = crate::util::root().join(path);
    let path = if path.is_relative() && !path.exists() && from_root.exists() {
        from_root.as_path()
    } else {
        path
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration {}", path.display()))?;
    let file = parse(&text, sets).with_context(|| format!("{}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    Ok((file, dir))
}

/// Parse a configuration's text with `sets` applied.
pub fn parse(text: &str, sets: &[String]) -> Result<File> {
    // The file alone first: an unknown key or a wrong type is reported with its line.
    let file: File = toml::from_str(text)?;
    if sets.is_empty() {
        return Ok(file);
    }
    let mut value: toml::Value = toml::from_str(text)?;
    for s in sets {
        apply_set(&mut value, s)?;
    }
    Ok(File::deserialize(value)?)
}

/// `guest.0.vcpus=4`, `machine.harts=1`, `hyp.migrate_ms=20`, `guest.0.cmdline="a b"`:
/// the value is TOML (a bare word is a string).
pub fn apply_set(root: &mut toml::Value, set: &str) -> Result<()> {
    let (path, raw) = set
        .split_once('=')
        .with_context(|| format!("--set {set:?}: expected key.path=value"))?;
    let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").context("value")?,
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let keys: Vec<&str> = path.split('.').collect();
    let mut at = root;
    for (n, k) in keys.iter().enumerate() {
        let last = n + 1 == keys.len();
        at = match at {
            toml::Value::Table(t) => {
                if last {
                    t.insert(k.to_string(), value);
                    return Ok(());
                }
                t.entry(k.to_string())
                    .or_insert_with(|| toml::Value::Table(Default::default()))
            }
            toml::Value::Array(a) => {
                let i: usize = k
                    .parse()
                    .with_context(|| format!("--set {set:?}: {k:?} is not an index"))?;
                let len = a.len();
                let slot = a
                    .get_mut(i)
                    .with_context(|| format!("--set {set:?}: index {i}, there are {len}"))?;
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
            _ => bail!("--set {set:?}: {k:?} is inside a value"),
        };
    }
    bail!("--set {set:?}: empty key")
}

fn named<T: Named + PartialEq>(field: &str, s: &str) -> Result<T, FieldError> {
    T::from_name(s)
        .ok_or_else(|| FieldError::new(field, format!("\"{s}\" is not one of {}", T::choices())))
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Does `bytes` start like a RISC-V Linux `Image` (magic `RSC\x05` at 0x38)? Such a
/// kernel goes 2 MiB into RAM; any other image at RAM's first byte.
fn is_linux_image(bytes: &[u8]) -> bool {
    bytes.get(0x38..0x3c) == Some(b"RSC\x05".as_slice())
}

/// `machine.interrupts` of `m` on `arch`: `Some(n)` for the AIA with `n` guest files.
fn interrupts(arch: Arch, m: &MachineToml) -> Result<Option<u32>> {
    let default = match arch {
        Arch::Riscv64 => "aia",
        Arch::Aarch64 => "gicv3",
    };
    let no_files = || {
        ensure!(
            m.guest_files.is_none(),
            "machine.guest_files: only with interrupts = \"aia\""
        );
        Ok(None)
    };
    match (arch, m.interrupts.as_deref().unwrap_or(default)) {
        (Arch::Riscv64, "plic") | (Arch::Aarch64, "gicv3") => no_files(),
        (Arch::Riscv64, "aia") => {
            let n = m.guest_files.unwrap_or(DEFAULT_GUEST_FILES);
            ensure!(n <= 7, "machine.guest_files: {n}: QEMU virt has 0 to 7");
            Ok(Some(n))
        }
        (Arch::Riscv64, "gicv3") => {
            bail!("machine.interrupts: \"gicv3\" needs machine.arch = \"aarch64\"")
        }
        (Arch::Aarch64, other @ ("plic" | "aia")) => bail!(
            "machine.interrupts: \"{other}\" is a riscv64 controller; machine.arch = \"aarch64\" has gicv3"
        ),
        (Arch::Riscv64, other) => {
            bail!("machine.interrupts: \"{other}\" is not one of plic, aia")
        }
        (Arch::Aarch64, other) => bail!("machine.interrupts: \"{other}\" is not one of gicv3"),
    }
}

/// Check `file`, place everything, and name the images (resolved through `images`).
pub fn resolve(name: &str, file: &File, dir: &Path, images: &dyn Images) -> Result<Resolved> {
    let m = &file.machine;
    let fail = |e: FieldError| anyhow::anyhow!("{e}");
    let arch = m.arch()?;
    let layout = HostLayout::of(arch);
    ensure!(
        (1..=MAX_HARTS).contains(&m.harts),
        "machine.harts: {}: 1 to {MAX_HARTS}",
        m.harts
    );
    let aia = interrupts(arch, m)?;
    let pcie = pcie(arch, m)?;
    ensure!(
        !m.aclint || arch == Arch::Riscv64,
        "machine.aclint: an ACLINT is riscv64's (QEMU's arm virt has none)"
    );
    let h = &file.hyp;
    let hyp = hyp_config::Options {
        migrate_ms: h.migrate_ms,
        aia_flip_ms: h.aia_flip_ms,
        guest_idle: named("hyp.guest_idle", &h.guest_idle).map_err(fail)?,
        vuart: named("hyp.vuart", &h.vuart).map_err(fail)?,
        wfi: named("hyp.wfi", &h.wfi).map_err(fail)?,
    };
    let mut guests = Vec::new();
    let mut loads = Vec::new();
    let mut next = layout.first_guest_ram;
    for (i, g) in file.guest.iter().enumerate() {
        let f = |k: &str| guest_field(i, k);
        let topology: Topology = named(&f("topology"), &g.topology).map_err(fail)?;
        match (arch, topology.arch()) {
            (Arch::Riscv64, Arch::Aarch64) => bail!(
                "{}: \"{}\" needs machine.arch = \"aarch64\"",
                f("topology"),
                g.topology
            ),
            (Arch::Aarch64, Arch::Riscv64) => bail!(
                "{}: \"{}\" is a riscv64 topology; guests of machine.arch = \"aarch64\" have \"vgicv3\" or \"vgicv4\"",
                f("topology"),
                g.topology
            ),
            _ => {}
        }
        ensure!(
            arch == Arch::Riscv64
                || topology == Topology::Vgicv4
                || !g
                    .pci
                    .iter()
                    .any(|a| pcie.functions.iter().enumerate().any(|(k, f)| {
                        f.is_nic() && a == &format!("00:{:02x}.0", pcie.first_slot() as usize + k)
                    })),
            "{}: a NIC's MSIs on aarch64 need topology = \"vgicv4\" (the guest's ITS)",
            f("pci")
        );
        ensure!(
            topology != Topology::Aia || aia.is_some(),
            "{}: \"aia\" needs machine.interrupts = \"aia\"",
            f("topology")
        );
        let devices = g
            .devices
            .iter()
            .map(|d| named(&f("devices"), d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;

        let kernel = match (g.kernel.as_str(), arch) {
            ("testguest" | "bench", Arch::Aarch64) => bail!(
                "{}: \"{}\" is a riscv64 image; an aarch64 guest boots \"debian\" or a path to an arm64 Image",
                f("kernel"),
                g.kernel
            ),
            ("testguest", _) => images.testguest()?,
            ("debian", _) => images.debian_kernel(arch)?,
            ("bench", _) => images.bench()?,
            (p, _) => dir.join(p),
        };
        let kernel_bytes = std::fs::read(&kernel)
            .with_context(|| format!("{}: reading {}", f("kernel"), kernel.display()))?;
        let initramfs = match g.initramfs.as_deref() {
            None => None,
            Some("debian-shell") => Some(images.debian_initramfs(arch, "shell")?),
            Some("debian-test") => Some(images.debian_initramfs(arch, "test")?),
            Some(n) if crate::net::named_initramfs(n).is_some() => {
                Some(images.net_initramfs(arch, n)?)
            }
            Some(p) => Some(dir.join(p)),
        };
        let initramfs_size = match &initramfs {
            Some(p) => Some(
                std::fs::metadata(p)
                    .with_context(|| format!("{}: {}", f("initramfs"), p.display()))?
                    .len(),
            ),
            None => None,
        };
        let ram_size = u64::from(g.memory_mb) << 20;
        let base = g.ram_host_base.unwrap_or(next);
        let size = kernel_bytes.len() as u64;
        let (k, r) = match arch {
            Arch::Riscv64 => {
                let k = Load {
                    offset: if is_linux_image(&kernel_bytes) {
                        RAM_ALIGN
                    } else {
                        0
                    },
                    size,
                };
                // As high as it fits below the DTB, away from the kernel's BSS.
                let r = initramfs_size.map(|size| {
                    let top = ram_size.saturating_sub(hyp_config::DTB_AREA + size);
                    Load {
                        offset: top / RAM_ALIGN * RAM_ALIGN,
                        size,
                    }
                });
                (k, r)
            }
            Arch::Aarch64 => {
                let image = Arm64Image::parse(&kernel_bytes)
                    .with_context(|| format!("{}: {}", f("kernel"), kernel.display()))?;
                place_arm64(&f, ram_size, image, size, initramfs_size)?
            }
        };
        loads.push((kernel, base + k.offset));
        if let (Some(p), Some(r)) = (&initramfs, r) {
            loads.push((p.clone(), base + r.offset));
        }
        next = align_up(base + ram_size, RAM_ALIGN);
        guests.push(hyp_config::Guest {
            name: g.name.clone(),
            vcpus: g.vcpus,
            memory_mb: g.memory_mb,
            ram_host_base: base,
            kernel: k,
            initramfs: r,
            cmdline: g.cmdline.clone(),
            topology,
            devices,
            eoi: named(&f("eoi"), &g.eoi).map_err(fail)?,
            pci: guest_pci(&f("pci"), &g.pci, &pcie)?,
        });
    }
    let config = hyp_config::Config { hyp, guests };
    hyp_config::validate(&config).map_err(fail)?;
    for (i, g) in config.guests.iter().enumerate() {
        ensure!(
            g.ram_host_base >= layout.first_guest_ram,
            "{}: {:#x} is below {:#x} ({})",
            guest_field(i, "ram_host_base"),
            g.ram_host_base,
            layout.first_guest_ram,
            layout.below
        );
    }
    // The machine's RAM: every guest (and on aarch64 the blob after them), plus what
    // QEMU keeps at the top.
    let guests_end = config
        .guests
        .iter()
        .map(|g| g.ram_host_base + g.ram_size())
        .max()
        .unwrap_or(layout.first_guest_ram);
    let (blob_addr, end) = match layout.blob {
        BlobPlace::At(addr) => (addr, guests_end),
        BlobPlace::AfterGuests => {
            let at = align_up(guests_end, RAM_ALIGN);
            (at, at + align_up(CONFIG_BLOB_MAX, RAM_ALIGN))
        }
    };
    let need_mb = (end + layout.qemu_top - layout.ram_base).div_ceil(1 << 20) as u32;
    let memory_mb = match m.memory_mb {
        Some(mb) => {
            ensure!(
                mb >= need_mb,
                "machine.memory_mb: {mb} MiB; the guests need {need_mb} (they end at {end:#x})"
            );
            mb
        }
        None => align_up(u64::from(need_mb.max(512)), 256) as u32,
    };
    Ok(Resolved {
        name: name.to_string(),
        machine: MachineSpec {
            arch,
            harts: m.harts,
            aia,
            memory_mb,
            pcie,
            aclint: m.aclint,
        },
        config,
        loads,
        blob_addr,
    })
}

/// A guest's `pci` list: each names a `machine.pci` function, and the machine has an
/// IOMMU (a passed function's DMA must be translated).
fn guest_pci(field: &str, list: &[String], p: &Pcie) -> Result<Vec<hyp_config::PciAddr>> {
    list.iter()
        .map(|s| {
            let a = hyp_config::PciAddr::parse(s)
                .with_context(|| format!("{field}: \"{s}\" is not BB:DD.F (e.g. 00:01.0)"))?;
            ensure!(
                p.iommu.is_some(),
                "{field}: {a}: a function given to a guest needs machine.iommu (its DMA goes through it)"
            );
            let first = p.first_slot();
            ensure!(
                a.bus == 0
                    && a.func == 0
                    && a.dev >= first
                    && usize::from(a.dev - first) < p.functions.len(),
                "{field}: {a} is not one of machine.pci's functions (00:{first:02x}.0 onwards)"
            );
            Ok(a)
        })
        .collect()
}

/// Place an arm64 `Image` and its initramfs in a guest's `ram_size` bytes of RAM
/// (`f` names the fields): the kernel `text_offset` past the RAM's base (2 MiB
/// aligned), the initramfs on the first 2 MiB boundary after the kernel's `image_size`
/// (its BSS included; the file's `size` if larger), both below the DTB's last 2 MiB.
fn place_arm64(
    f: &dyn Fn(&str) -> String,
    ram_size: u64,
    image: Arm64Image,
    size: u64,
    initramfs_size: Option<u64>,
) -> Result<(Load, Option<Load>)> {
    let usable = ram_size.saturating_sub(hyp_config::DTB_AREA);
    let k = Load {
        offset: image.text_offset,
        size,
    };
    let kernel_end = image
        .text_offset
        .checked_add(image.image_size.max(size))
        .filter(|&e| e <= usable)
        .with_context(|| {
            format!(
                "{}: text_offset {:#x} + image_size {:#x} do not fit below the last 2 MiB (the DTB's) of {} MiB of RAM",
                f("kernel"),
                image.text_offset,
                image.image_size,
                ram_size >> 20
            )
        })?;
    let r = match initramfs_size {
        Some(size) => {
            let offset = align_up(kernel_end, RAM_ALIGN);
            ensure!(
                offset + size <= usable,
                "{}: {size} bytes at offset {offset:#x} (after the kernel's image_size) do not fit below the last 2 MiB (the DTB's) of {} MiB of RAM",
                f("initramfs"),
                ram_size >> 20
            );
            Some(Load { offset, size })
        }
        None => None,
    };
    Ok((k, r))
}

impl Resolved {
    /// The QEMU machine: hyp, the images and the blob (written under `target/hyp/`).
    pub fn machine(&self, timeout: Duration, extra_bootargs: &[String]) -> Result<Machine> {
        let blob = hyp_config::encode(&self.config);
        ensure!(
            (blob.len() as u64) <= CONFIG_BLOB_MAX,
            "the configuration's blob is {} bytes; hyp reads at most {CONFIG_BLOB_MAX}",
            blob.len()
        );
        let path = crate::qemu::hyp_target_dir()
            .join("configs")
            .join(format!("{}.dtb", self.name));
        std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
        std::fs::write(&path, &blob).with_context(|| format!("writing {}", path.display()))?;
        let mut loads = self.loads.clone();
        loads.push((path, self.blob_addr));
        let mut bootargs = vec![format!("config={:#x}", self.blob_addr)];
        bootargs.extend(extra_bootargs.iter().cloned());
        Ok(Machine {
            arch: self.machine.arch,
            smp: self.machine.harts,
            aia: self.machine.aia,
            gicv4: self
                .config
                .guests
                .iter()
                .any(|g| g.topology == Topology::Vgicv4),
            bootargs,
            timeout,
            icount: false,
            extra: self.machine.qemu_args(""),
            payload: Payload::Hyp {
                memory_mb: self.machine.memory_mb,
                loads,
            },
        })
    }

    /// Where everything goes, one line per guest (for `cargo xtask run`).
    pub fn placement(&self) -> String {
        let mut s = format!(
            "{}: {} machine, -m {}M, config blob at {:#x}\n",
            self.name,
            self.machine.arch.name(),
            self.machine.memory_mb,
            self.blob_addr
        );
        let gpa = hyp_config::GUEST_RAM_BASE;
        for (i, g) in self.config.guests.iter().enumerate() {
            let at = |l: Load| {
                format!(
                    "host {:#x} (GPA {:#x}, {} bytes)",
                    g.ram_host_base + l.offset,
                    gpa + l.offset,
                    l.size
                )
            };
            s += &format!(
                "  guest[{i}] {:?}: RAM host {:#x}..{:#x} = GPA {gpa:#x}.., kernel {}",
                g.name,
                g.ram_host_base,
                g.ram_host_base + g.ram_size(),
                at(g.kernel)
            );
            if let Some(r) = g.initramfs {
                s += &format!(", initramfs {}", at(r));
            }
            s += &format!(
                ", DTB from GPA {:#x}\n",
                gpa + g.ram_size() - hyp_config::DTB_AREA
            );
        }
        s
    }

    /// Guest `name`, if the configuration has it.
    pub fn guest(&self, name: &str) -> Option<&hyp_config::Guest> {
        self.config.guests.iter().find(|g| g.name == name)
    }
}

/// Resolve `configs/<file>.toml` with `sets` for the QEMU suite (Linux guests run the
/// test `/init`), as case `name`.
pub fn suite(name: &str, file: &str, sets: &[&str], images: &dyn Images) -> Result<Resolved> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let (mut f, dir) = load(&path_of(file), &sets)?;
    use_test_init(&mut f);
    resolve(name, &f, &dir, images)
}

/// The workspace's `configs/NAME.toml`.
pub fn path_of(name: &str) -> PathBuf {
    crate::util::root()
        .join("configs")
        .join(format!("{name}.toml"))
}

#[cfg(test)]
pub(crate) mod tests;
