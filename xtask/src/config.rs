//! Guest configuration files (`configs/*.toml`): reading one, applying `--set`
//! overrides, checking it (errors name the field: `guest[1].vcpus: …`), placing each
//! guest's RAM and images in host memory, and the QEMU machine that boots it — hyp
//! with the [`hyp_config`] blob, the images and the blob put in place by QEMU's
//! loader. The schema is in docs/hyp.md ("Guests as data").
//!
//! Host memory (QEMU `virt`, RAM at `0x8000_0000`): OpenSBI and hyp below
//! [`CONFIG_BLOB_ADDR`], the blob there, guests from [`FIRST_GUEST_RAM`] up, one after
//! the other on 2 MiB boundaries, and the last 2 MiB of the machine's RAM left to QEMU
//! (its DTB).
use anyhow::{bail, ensure, Context, Result};
use hyp_config::{guest_field, Error as FieldError, Load, Named, RAM_ALIGN};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::qemu::{Machine, Payload};

/// Host physical address of the config blob (`config=` on hyp's command line).
pub const CONFIG_BLOB_ADDR: u64 = 0x8800_0000;
/// The blob may not be larger (hyp copies at most this much).
pub const CONFIG_BLOB_MAX: u64 = 64 << 10;
/// Host RAM base of the first guest.
pub const FIRST_GUEST_RAM: u64 = 0x9000_0000;
/// Host RAM base of QEMU `virt`.
const HOST_RAM_BASE: u64 = 0x8000_0000;
/// Harts hyp supports (`MAX_HARTS` in `hyp/hv/src/arch/riscv64/entry.rs`).
const MAX_HARTS: u32 = 8;
/// The configuration `cargo xtask run` boots without `--config`.
pub const DEFAULT_CONFIG: &str = "configs/linux-aia.toml";

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
    /// Harts (`-smp`).
    pub harts: u32,
    /// `"plic"` (plain `-M virt`) or `"aia"` (`aia=aplic-imsic`).
    pub interrupts: String,
    /// Guest interrupt files per hart (`aia-guests=`), with `"aia"`.
    pub guest_files: Option<u32>,
    /// RAM (`-m`), default: enough for the guests, at least 512.
    pub memory_mb: Option<u32>,
}

impl Default for MachineToml {
    fn default() -> Self {
        MachineToml {
            harts: 2,
            interrupts: "aia".into(),
            guest_files: None,
            memory_mb: None,
        }
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
    /// `"debian-shell"`, `"debian-test"`, a path, or none.
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
    pub harts: u32,
    /// `Some(n)`: `aia=aplic-imsic,aia-guests=n`.
    pub aia: Option<u32>,
    pub memory_mb: u32,
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
}

/// Where the named images come from.
pub trait Images {
    /// The bare-metal test guest's raw image.
    fn testguest(&self) -> Result<PathBuf>;
    /// Debian's kernel `Image`.
    fn debian_kernel(&self) -> Result<PathBuf>;
    /// A Debian initramfs: `"shell"` or `"test"`.
    fn debian_initramfs(&self, which: &str) -> Result<PathBuf>;
    /// The system benchmark payload (`guest/bench`, an `Image`-headed raw image).
    fn bench(&self) -> Result<PathBuf>;
}

/// Where `cargo xtask run` and the suite find the named images of a configuration.
pub(crate) struct NamedImages {
    pub(crate) testguest: PathBuf,
    pub(crate) kernel_version: Option<String>,
}

impl Images for NamedImages {
    fn testguest(&self) -> Result<PathBuf> {
        Ok(self.testguest.clone())
    }
    fn debian_kernel(&self) -> Result<PathBuf> {
        let v = self.kernel_version.as_deref();
        Ok(crate::images::ensure_debian(hyp_config::Arch::Riscv64, v)?.kernel)
    }
    fn debian_initramfs(&self, which: &str) -> Result<PathBuf> {
        let init = match which {
            "shell" => crate::images::INIT_SHELL,
            _ => crate::images::INIT_TEST,
        };
        let v = self.kernel_version.as_deref();
        Ok(crate::images::debian_boot(hyp_config::Arch::Riscv64, v, which, init)?.initramfs)
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

/// Check `file`, place everything, and name the images (resolved through `images`).
pub fn resolve(name: &str, file: &File, dir: &Path, images: &dyn Images) -> Result<Resolved> {
    let m = &file.machine;
    let fail = |e: FieldError| anyhow::anyhow!("{e}");
    ensure!(
        (1..=MAX_HARTS).contains(&m.harts),
        "machine.harts: {}: 1 to {MAX_HARTS}",
        m.harts
    );
    let aia = match m.interrupts.as_str() {
        "plic" => {
            ensure!(
                m.guest_files.is_none(),
                "machine.guest_files: only with interrupts = \"aia\""
            );
            None
        }
        "aia" => {
            let n = m.guest_files.unwrap_or(DEFAULT_GUEST_FILES);
            ensure!(n <= 7, "machine.guest_files: {n}: QEMU virt has 0 to 7");
            Some(n)
        }
        other => bail!("machine.interrupts: \"{other}\" is not one of plic, aia"),
    };
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
    let mut next = FIRST_GUEST_RAM;
    for (i, g) in file.guest.iter().enumerate() {
        let f = |k: &str| guest_field(i, k);
        let topology: hyp_config::Topology = named(&f("topology"), &g.topology).map_err(fail)?;
        ensure!(
            topology != hyp_config::Topology::Aia || aia.is_some(),
            "{}: \"aia\" needs machine.interrupts = \"aia\"",
            f("topology")
        );
        let devices = g
            .devices
            .iter()
            .map(|d| named(&f("devices"), d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        let kernel = match g.kernel.as_str() {
            "testguest" => images.testguest()?,
            "debian" => images.debian_kernel()?,
            "bench" => images.bench()?,
            p => dir.join(p),
        };
        let kernel_bytes = std::fs::read(&kernel)
            .with_context(|| format!("{}: reading {}", f("kernel"), kernel.display()))?;
        let initramfs = match g.initramfs.as_deref() {
            None => None,
            Some("debian-shell") => Some(images.debian_initramfs("shell")?),
            Some("debian-test") => Some(images.debian_initramfs("test")?),
            Some(p) => Some(dir.join(p)),
        };
        let ram_size = u64::from(g.memory_mb) << 20;
        let base = g.ram_host_base.unwrap_or(next);
        let k = Load {
            offset: if is_linux_image(&kernel_bytes) {
                RAM_ALIGN
            } else {
                0
            },
            size: kernel_bytes.len() as u64,
        };
        loads.push((kernel, base + k.offset));
        let r = match &initramfs {
            Some(p) => {
                let size = std::fs::metadata(p)
                    .with_context(|| format!("{}: {}", f("initramfs"), p.display()))?
                    .len();
                // As high as it fits below the DTB, away from the kernel's BSS.
                let top = ram_size.saturating_sub(hyp_config::DTB_AREA + size);
                let offset = top / RAM_ALIGN * RAM_ALIGN;
                loads.push((p.clone(), base + offset));
                Some(Load { offset, size })
            }
            None => None,
        };
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
        });
    }
    let config = hyp_config::Config { hyp, guests };
    hyp_config::validate(&config).map_err(fail)?;
    for (i, g) in config.guests.iter().enumerate() {
        ensure!(
            g.ram_host_base >= FIRST_GUEST_RAM,
            "{}: {:#x} is below {FIRST_GUEST_RAM:#x} (OpenSBI, hyp and the config blob)",
            guest_field(i, "ram_host_base"),
            g.ram_host_base
        );
    }
    // The machine's RAM: every guest, plus QEMU's DTB in the last 2 MiB.
    let end = config
        .guests
        .iter()
        .map(|g| g.ram_host_base + g.ram_size())
        .max()
        .unwrap_or(FIRST_GUEST_RAM);
    let need_mb = (end + (2 << 20) - HOST_RAM_BASE).div_ceil(1 << 20) as u32;
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
            harts: m.harts,
            aia,
            memory_mb,
        },
        config,
        loads,
    })
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
        loads.push((path, CONFIG_BLOB_ADDR));
        let mut bootargs = vec![format!("config={CONFIG_BLOB_ADDR:#x}")];
        bootargs.extend(extra_bootargs.iter().cloned());
        Ok(Machine {
            smp: self.machine.harts,
            aia: self.machine.aia,
            bootargs,
            timeout,
            icount: false,
            payload: Payload::Hyp {
                memory_mb: self.machine.memory_mb,
                loads,
            },
        })
    }

    /// Guest `name`, if the configuration has it.
    pub fn guest(&self, name: &str) -> Option<&hyp_config::Guest> {
        self.config.guests.iter().find(|g| g.name == name)
    }
}

/// The workspace's `configs/NAME.toml`.
pub fn path_of(name: &str) -> PathBuf {
    crate::util::root()
        .join("configs")
        .join(format!("{name}.toml"))
}

#[cfg(test)]
pub(crate) mod tests;
