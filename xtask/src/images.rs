//! Debian guest images (kernel, busybox) for riscv64 and arm64, and the initramfs.
//!
//! Everything is cached under `target/images/`, one set of names per architecture
//! ([`Flavour`]: riscv64's names are the plain ones, arm64's carry `arm64`):
//! - `apt/`, `apt-arm64/`: a private apt configuration and state (the system's apt
//!   setup is never touched): `sources.list` (Debian trixie, `[arch=riscv64]` or
//!   `[arch=arm64]`, the mirror URI of `/etc/apt/sources.list.d/debian.sources`),
//!   `lists/`, `cache/`, an empty `status`, and `apt.log` with the output of the last
//!   apt command;
//! - `debs/`: `.deb` files while they download and extract (then deleted);
//! - `linux-<version>/`, `linux-arm64-<version>/`: the extracted
//!   `linux-image-<version>-riscv64` / `-arm64` package (`boot/vmlinux-<version>-riscv64`
//!   / `boot/vmlinuz-<version>-arm64`, `usr/lib/modules/...`);
//! - `busybox-static/`, `busybox-static-arm64/`: the extracted `busybox-static`
//!   package (`usr/bin/busybox`);
//! - `initramfs-<name>.cpio.gz`, `initramfs-arm64-<name>.cpio.gz`: initramfs files
//!   built by [`debian_boot`].
//!
//! Once extracted, nothing is downloaded again. `.lock` serialises xtask processes
//! that fill the cache at the same time.

// The API is for `hyp.rs` (QEMU runs and tests); until that is wired, parts of it
// are unused in the binary.
#![allow(dead_code)]
use anyhow::{bail, Context, Result};
use flate2::write::GzEncoder;
use hyp_config::{Arch, Named};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub mod cpio;

use cpio::CpioWriter;

/// Kernel series the guests use.
pub const KERNEL_SERIES: &str = "6.12";

/// Debian suite the packages come from.
pub const DEBIAN_SUITE: &str = "trixie";

/// What differs between the architectures' Debian images and their cache names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flavour {
    pub arch: Arch,
    /// Debian's name of the architecture: apt's `[arch=…]` and the kernel package's
    /// suffix (`linux-image-<version>-<deb_arch>`).
    pub deb_arch: &'static str,
    /// The kernel in the package's `boot/`: riscv64's `vmlinux-*` is a PE/EFI image
    /// that is also a RISC-V `Image`; arm64's `vmlinuz-*` is an uncompressed arm64
    /// `Image`.
    kernel_prefix: &'static str,
    /// ELF `e_machine` of its busybox (243 RISC-V, 183 AArch64).
    elf_machine: u16,
    /// Cache folder of the private apt configuration.
    apt_dir: &'static str,
    /// Cache folder of an extracted kernel: this, then the version.
    kernel_dir: &'static str,
    /// Cache folder of the extracted busybox-static.
    busybox_dir: &'static str,
    /// Cache file of an initramfs: this, then its name and `.cpio.gz`.
    initramfs: &'static str,
}

/// riscv64: the names the cache had before arm64 (kept, so old caches stay valid).
pub const RISCV64: Flavour = Flavour {
    arch: Arch::Riscv64,
    deb_arch: "riscv64",
    kernel_prefix: "vmlinux-",
    elf_machine: 243,
    apt_dir: "apt",
    kernel_dir: "linux-",
    busybox_dir: "busybox-static",
    initramfs: "initramfs-",
};

/// arm64.
pub const ARM64: Flavour = Flavour {
    arch: Arch::Aarch64,
    deb_arch: "arm64",
    kernel_prefix: "vmlinuz-",
    elf_machine: 183,
    apt_dir: "apt-arm64",
    kernel_dir: "linux-arm64-",
    busybox_dir: "busybox-static-arm64",
    initramfs: "initramfs-arm64-",
};

/// The images of `arch`.
pub fn flavour(arch: Arch) -> Flavour {
    match arch {
        Arch::Riscv64 => RISCV64,
        Arch::Aarch64 => ARM64,
    }
}

impl Flavour {
    /// `target/images/initramfs-…<name>.cpio.gz`.
    pub fn initramfs_path(&self, name: &str) -> PathBuf {
        cache_dir().join(format!("{}{name}.cpio.gz", self.initramfs))
    }
}

/// Mirror used when the system's apt sources name none.
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Package lists older than this are refreshed before a download.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Applets linked as `/bin/<name>` -> `busybox` in every initramfs, so that any
/// init script finds them before it runs `busybox --install -s`. Names the
/// busybox build lacks only fail when used.
pub const APPLETS: &[&str] = &[
    "sh", "ash", "cat", "chmod", "cp", "cttyhack", "date", "dd", "dmesg", "echo", "env", "false",
    "free", "grep", "halt", "head", "hostname", "kill", "ln", "ls", "mkdir", "mknod", "mount",
    "mv", "nproc", "poweroff", "printf", "ps", "reboot", "rm", "sed", "seq", "setsid", "sleep",
    "sync", "tail", "taskset", "test", "top", "true", "umount", "uname", "uptime", "wc",
];

/// `/init` of the QEMU test suite: mounts proc, sysfs and devtmpfs, prints
/// `VIRQ-INIT-START`, the CPUs online (`VIRQ-CPUS-ONLINE 0-1`) and `/proc/interrupts`,
/// runs an IPI-heavy workload (twice as many parallel fork/exec loops as CPUs, then
/// `sync` and page-cache drops, which call functions on every CPU), moves the console
/// UART's interrupt round the CPUs, prints `/proc/interrupts` again and
/// `VIRQ-INIT-DONE`, and powers off with `poweroff -f` (SBI SRST on riscv64, PSCI
/// SYSTEM_OFF on arm64: QEMU exits 0). Architecture-neutral: the console UART's row of
/// `/proc/interrupts` is `ttyS0` (riscv64's 16550) or `uart-pl011` (arm64's PL011).
/// On bare QEMU (TCG, 2 CPUs) it runs in a few seconds.
pub const INIT_TEST: &str = r#"#!/bin/sh
# virq test guest: interrupts before and after an IPI-heavy workload, then power off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s 2>/dev/null
ncpu=$(grep -c ^processor /proc/cpuinfo)
echo "VIRQ-INIT-START cpus=$ncpu kernel=$(uname -r)"
echo "VIRQ-CPUS-ONLINE $(cat /sys/devices/system/cpu/online)"
echo "VIRQ-CMDLINE $(cat /proc/cmdline)"
echo "VIRQ-SLEEP-STATES $(cat /sys/power/state)"
cat /proc/interrupts
# Short-lived processes on every CPU: wake-ups of the waiting parent on another
# CPU (rescheduling IPIs) and TLB shootdowns at exec/exit. Each loop is pinned to a
# CPU so the wake-ups cross CPUs; each records that it finished.
runs=$((ncpu * 2))
rm -f /tmp/runs
i=0
while [ $i -lt $runs ]; do
    taskset $(printf '%x' $((1 << (i % ncpu)))) sh -c \
        'j=0; while [ $j -lt 25 ]; do /bin/true; j=$((j + 1)); done; echo done >> /tmp/runs' &
    i=$((i + 1))
done
wait
# lru_add_drain_all and friends: work queued on every CPU (function-call IPIs).
for k in 1 2 3; do
    sync
    echo 3 > /proc/sys/vm/drop_caches
done
echo "VIRQ-WORKLOAD-DONE runs=$(wc -l < /tmp/runs) expected=$runs"
# Move the console UART's interrupt (16550 ttyS0 or PL011 uart-pl011) round the
# CPUs, printing on each, so it counts on every CPU. `echo` returns once its line is
# in the tty buffer, before the UART has sent it: wait (bounded) until the interrupt
# has counted on CPU c before moving it on, or the last CPU's line can go out after
# the affinity has already moved back to all CPUs.
uirq=$(grep -E 'ttyS0|uart-pl011' /proc/interrupts | head -n 1 | cut -d: -f1 | tr -d ' ')
uart_count_on() {
    cpu=$1
    set -- $(grep "^ *$uirq:" /proc/interrupts)
    shift $((cpu + 1))
    echo "$1"
}
if [ -n "$uirq" ] && [ -w /proc/irq/$uirq/smp_affinity ]; then
    c=0
    while [ $c -lt $ncpu ]; do
        printf '%x' $((1 << c)) > /proc/irq/$uirq/smp_affinity
        n0=$(uart_count_on $c)
        echo "VIRQ-UART-ON-CPU $c: the console interrupt now targets CPU $c"
        echo "VIRQ-UART-ON-CPU $c: $(cat /proc/irq/$uirq/effective_affinity_list 2>/dev/null)"
        t=0
        while [ "$(uart_count_on $c)" = "$n0" ] && [ $t -lt 30 ]; do
            sleep 0.1
            t=$((t + 1))
        done
        c=$((c + 1))
    done
    printf '%x' $(((1 << ncpu) - 1)) > /proc/irq/$uirq/smp_affinity
fi
cat /proc/interrupts
# The idle states Linux's SBI cpuidle driver uses (with hyp's guest_idle=sbi): name and
# entries, per CPU.
for d in /sys/devices/system/cpu/cpu*/cpuidle/state*; do
    [ -r $d/usage ] && echo "VIRQ-IDLE ${d#/sys/devices/system/cpu/} $(cat $d/name) $(cat $d/usage)"
done
echo VIRQ-INIT-DONE
# Let a polled console (no interrupt: hyp's emulated UART) drain before power-off.
sleep 1
poweroff -f
"#;

/// `/init` for interactive use: mounts, prints a banner and `VIRQ-SHELL-READY`,
/// runs a shell with job control on the console (`setsid cttyhack sh`), and
/// powers off when the shell exits. Architecture-neutral (`cttyhack` finds the
/// console, `ttyS0` or `ttyAMA0`).
pub const INIT_SHELL: &str = concat!(
    r#"#!/bin/sh
# virq interactive guest: a shell on the console; leaving it powers off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s 2>/dev/null
echo
echo "virq guest: Linux $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPUs."
echo "Try: cat /proc/interrupts. Leave the shell (exit) to power off."
"#,
    shell_tail!()
);

/// The end of every interactive `/init` (this one, the network guests'): the line xtask
/// waits for, a shell with job control on the console where busybox can give one, and
/// power-off when it is left.
macro_rules! shell_tail {
    () => {
        r#"echo VIRQ-SHELL-READY
if command -v cttyhack >/dev/null 2>&1; then
    setsid cttyhack sh
else
    sh
fi
poweroff -f
"#
    };
}
pub(crate) use shell_tail;

/// [`shell_tail!`] as a value, for `/init` scripts built at run time.
pub const SHELL_TAIL: &str = shell_tail!();

/// The Debian guest files: kernel and busybox, as cached under `target/images/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImages {
    /// `boot/vmlinux-<version>-riscv64` or `boot/vmlinuz-<version>-arm64`: an `Image`
    /// for QEMU's `-kernel`.
    pub kernel: PathBuf,
    /// Kernel package version, e.g. `6.12.94+deb13` (no `-riscv64`).
    pub kernel_version: String,
    /// The kernel's modules (`usr/lib/modules/<version>-riscv64`), e.g. virtio-mmio.
    pub modules: PathBuf,
    /// The statically linked busybox of the architecture (`usr/bin/busybox` in the
    /// package).
    pub busybox: PathBuf,
}

/// What QEMU boots: a kernel and an initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootImages {
    /// The kernel (`-kernel`).
    pub kernel: PathBuf,
    /// The initramfs (`-initrd`).
    pub initramfs: PathBuf,
}

/// The image cache folder, `target/images/` under the workspace root.
pub fn cache_dir() -> PathBuf {
    crate::util::root().join("target/images")
}

/// Ensure the Debian trixie kernel and busybox of `arch` are downloaded and
/// extracted, and return their paths.
///
/// `kernel_version` selects `linux-image-<version>-riscv64` (`-arm64`): a full version
/// such as `6.12.94+deb13`, or a prefix of one ending at a component (`6.12.94`).
/// `None` takes the newest 6.12 already extracted in the cache or, if there is none,
/// the newest 6.12 Debian publishes (the plain flavour: not `-rt-` or `-cloud-`).
/// Downloads show their progress on stderr.
pub fn ensure_debian(arch: Arch, kernel_version: Option<&str>) -> Result<GuestImages> {
    let f = flavour(arch);
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    // One xtask at a time fills the cache (parallel test runs share it).
    let lock_path = cache.join(".lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let mut apt = Apt::new(&cache, f);

    let version = match kernel_version.map(normalize_version).transpose()? {
        Some(v) => match cached_kernels(&cache, f)?
            .into_iter()
            .find(|c| version_matches(c, &v))
        {
            Some(c) => c,
            None => apt.pick_kernel(Some(&v))?,
        },
        None => match cached_kernels(&cache, f)?.pop() {
            Some(c) => c,
            None => apt.pick_kernel(None)?,
        },
    };

    let kernel_dir = cache.join(format!("{}{version}", f.kernel_dir));
    let a = f.deb_arch;
    if !kernel_dir.is_dir() {
        let pkg = format!("linux-image-{version}-{a}");
        let deb = apt.download(&pkg)?;
        extract_deb(&deb, &kernel_dir)?;
        let _ = std::fs::remove_file(&deb);
    }
    let kernel = find_kernel(&kernel_dir, f)?;
    let modules = first_existing(
        &kernel_dir,
        &[
            format!("usr/lib/modules/{version}-{a}"),
            format!("lib/modules/{version}-{a}"),
        ],
    )
    .with_context(|| format!("no lib/modules/{version}-{a} in {}", kernel_dir.display()))?;

    let busybox_dir = cache.join(f.busybox_dir);
    let busybox = match first_existing(&busybox_dir, &BUSYBOX_PATHS) {
        Some(path) => path,
        None => {
            let deb = apt.download("busybox-static")?;
            if busybox_dir.exists() {
                std::fs::remove_dir_all(&busybox_dir).with_context(|| {
                    format!("removing the incomplete {}", busybox_dir.display())
                })?;
            }
            extract_deb(&deb, &busybox_dir)?;
            let _ = std::fs::remove_file(&deb);
            first_existing(&busybox_dir, &BUSYBOX_PATHS).with_context(|| {
                format!(
                    "no bin/busybox or usr/bin/busybox in {}",
                    busybox_dir.display()
                )
            })?
        }
    };
    let found = elf_arch(&busybox)?;
    if found != arch {
        bail!(
            "busybox {}: an {} ELF file, not {}",
            busybox.display(),
            found.name(),
            arch.name()
        );
    }

    Ok(GuestImages {
        kernel,
        kernel_version: version,
        modules,
        busybox,
    })
}

/// Ensure the Debian images of `arch` and build `target/images/initramfs-<name>.cpio.gz`
/// (arm64: `initramfs-arm64-<name>.cpio.gz`) from `init_script` (e.g.
/// `debian_boot(Arch::Riscv64, None, "test", INIT_TEST)`). The initramfs is rebuilt
/// when its busybox or init script changed.
pub fn debian_boot(
    arch: Arch,
    kernel_version: Option<&str>,
    name: &str,
    init_script: &str,
) -> Result<BootImages> {
    debian_boot_with(arch, kernel_version, name, init_script, &[])
}

/// [`debian_boot`] with extra executables in the initramfs: `(path, bytes)` pairs
/// such as `("bin/virq-pingpong", elf)`, written with mode 0755.
pub fn debian_boot_with(
    arch: Arch,
    kernel_version: Option<&str>,
    name: &str,
    init_script: &str,
    extra: &[(&str, &[u8])],
) -> Result<BootImages> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!("initramfs name {name:?}: use letters, digits, '-', '_' and '.' only");
    }
    let guest = ensure_debian(arch, kernel_version)?;
    let initramfs = flavour(arch).initramfs_path(name);
    build_initramfs_with(&guest.busybox, init_script, extra, &initramfs)?;
    Ok(BootImages {
        kernel: guest.kernel,
        initramfs,
    })
}

/// Use a kernel and an initramfs the user provides (`--kernel`, `--initramfs`),
/// checking that both are readable files.
pub fn user_images(kernel: PathBuf, initramfs: PathBuf) -> Result<BootImages> {
    for (flag, path) in [("--kernel", &kernel), ("--initramfs", &initramfs)] {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("{flag} {}: cannot access the file", path.display()))?;
        if !meta.is_file() {
            bail!("{flag} {}: not a regular file", path.display());
        }
        if meta.len() == 0 {
            bail!("{flag} {}: the file is empty", path.display());
        }
        std::fs::File::open(path)
            .with_context(|| format!("{flag} {}: cannot open the file", path.display()))?;
    }
    Ok(BootImages { kernel, initramfs })
}

/// Build a gzip-compressed `newc` initramfs at `out` holding `/bin/busybox`,
/// `/bin/<applet>` symlinks for [`APPLETS`], the usual top-level folders
/// (`/dev`, `/proc`, `/sys`, ...), `/dev/console` (char 5:1, mode 0600),
/// `/dev/null` (char 1:3) and `/init` (mode 0755) containing `init_script`.
///
/// `busybox` must be a riscv64 or aarch64 ELF file and `init_script` must start with
/// `#!`.
/// `out` is replaced atomically and left alone if its content would not change.
pub fn build_initramfs(busybox: &Path, init_script: &str, out: &Path) -> Result<()> {
    build_initramfs_with(busybox, init_script, &[], out)
}

/// [`build_initramfs`] plus `extra` executables (`(path, bytes)`, mode 0755, e.g.
/// `bin/virq-pingpong`); their folders must be among the standard ones.
pub fn build_initramfs_with(
    busybox: &Path,
    init_script: &str,
    extra: &[(&str, &[u8])],
    out: &Path,
) -> Result<()> {
    if !init_script.starts_with("#!") {
        bail!(
            "init script: must start with `#!` (e.g. `#!/bin/sh`), or the kernel cannot run /init"
        );
    }
    elf_arch(busybox)?;
    let bb =
        std::fs::read(busybox).with_context(|| format!("reading busybox {}", busybox.display()))?;

    let mut w = CpioWriter::new(Vec::with_capacity(bb.len() + 64 * 1024));
    for dir in [
        "bin", "dev", "etc", "mnt", "proc", "root", "run", "sbin", "sys", "tmp", "usr", "usr/bin",
        "usr/sbin",
    ] {
        w.dir(dir, if dir == "tmp" { 0o1777 } else { 0o755 })?;
    }
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.char_dev("dev/null", 0o666, 1, 3)?;
    w.file("bin/busybox", 0o755, &bb)?;
    for applet in APPLETS {
        w.symlink(&format!("bin/{applet}"), "busybox")?;
    }
    for (path, data) in extra {
        w.file(path, 0o755, data)?;
    }
    w.file("init", 0o755, init_script.as_bytes())?;
    let cpio = w.finish()?;

    let mut gz = GzEncoder::new(
        Vec::with_capacity(cpio.len() / 2),
        flate2::Compression::default(),
    );
    gz.write_all(&cpio).context("compressing the initramfs")?;
    let gz = gz.finish().context("compressing the initramfs")?;

    if std::fs::read(out).is_ok_and(|old| old == gz) {
        return Ok(());
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = temp_sibling(out);
    std::fs::write(&tmp, &gz).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out)
        .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))
}

/// Where busybox-static puts the binary (trixie is merged-/usr).
const BUSYBOX_PATHS: [&str; 2] = ["usr/bin/busybox", "bin/busybox"];

/// The first of `dir/<candidate>` that exists.
fn first_existing<S: AsRef<Path>>(dir: &Path, candidates: &[S]) -> Option<PathBuf> {
    candidates.iter().map(|c| dir.join(c)).find(|p| p.exists())
}

/// `path` with `.tmp-<pid>` appended, in the same folder.
fn temp_sibling(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// The architecture of the 64-bit little-endian ELF file at `path` (riscv64 or
/// aarch64; anything else fails).
fn elf_arch(path: &Path) -> Result<Arch> {
    use std::io::Read;
    let mut head = [0u8; 20];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .with_context(|| format!("busybox {}: cannot read an ELF header", path.display()))?;
    if &head[..4] != b"\x7fELF" {
        bail!("busybox {}: not an ELF file", path.display());
    }
    // EI_CLASS 2 = 64-bit, EI_DATA 1 = little-endian, e_machine 243 = RISC-V, 183 =
    // AArch64.
    let machine = u16::from_le_bytes([head[18], head[19]]);
    match [RISCV64, ARM64]
        .into_iter()
        .find(|f| f.elf_machine == machine)
    {
        Some(f) if head[4] == 2 && head[5] == 1 => Ok(f.arch),
        _ => bail!(
            "busybox {}: not a riscv64 or aarch64 ELF file",
            path.display()
        ),
    }
}

/// Accept `6.12.94+deb13`, `6.12.94`, or a package name
/// `linux-image-6.12.94+deb13-riscv64` (`-arm64`); return the bare version.
fn normalize_version(v: &str) -> Result<String> {
    let v = v.trim();
    let v = v.strip_prefix("linux-image-").unwrap_or(v);
    let v = [RISCV64, ARM64]
        .iter()
        .find_map(|f| v.strip_suffix(&format!("-{}", f.deb_arch)))
        .unwrap_or(v);
    let prefix = format!("{KERNEL_SERIES}.");
    if !v.starts_with(&prefix) || v.len() == prefix.len() {
        bail!("kernel version {v:?}: expected {KERNEL_SERIES}.N or {KERNEL_SERIES}.N+debXX (e.g. 6.12.94+deb13)");
    }
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+.~-".contains(c))
    {
        bail!("kernel version {v:?}: unexpected characters");
    }
    Ok(v.to_string())
}

/// Whether `candidate` (e.g. `6.12.94+deb13`) is `wanted` or starts with
/// `wanted` followed by a separator (`6.12.94` matches, `6.12.9` does not).
fn version_matches(candidate: &str, wanted: &str) -> bool {
    candidate == wanted
        || candidate
            .strip_prefix(wanted)
            .is_some_and(|rest| rest.starts_with(['+', '-', '~', '.']))
}

/// Sort key of a version: its numbers in order (`6.12.107+deb13` -> 6,12,107,13).
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(u64::MAX))
        .collect()
}

/// Versions of the kernels of flavour `f` extracted in the cache, oldest first.
fn cached_kernels(cache: &Path, f: Flavour) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let prefix = format!("{}{KERNEL_SERIES}.", f.kernel_dir);
    let entries = match std::fs::read_dir(cache) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e).with_context(|| format!("listing {}", cache.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", cache.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix)
            && !name.contains(".tmp-")
            && find_kernel(&entry.path(), f).is_ok()
        {
            found.push(name[f.kernel_dir.len()..].to_string());
        }
    }
    found.sort_by_key(|v| version_key(v));
    Ok(found)
}

/// `boot/vmlinux-*` (riscv64) or `boot/vmlinuz-*` (arm64) in an extracted kernel
/// package.
fn find_kernel(dir: &Path, f: Flavour) -> Result<PathBuf> {
    let boot = dir.join("boot");
    let entries =
        std::fs::read_dir(&boot).with_context(|| format!("listing {}", boot.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", boot.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(f.kernel_prefix) && entry.path().is_file() {
            return Ok(entry.path());
        }
        names.push(name);
    }
    bail!(
        "no boot/{}* in {} (found: {})",
        f.kernel_prefix,
        dir.display(),
        names.join(", ")
    )
}

/// Extract `deb` into `dest` (which must not exist) through a temporary folder,
/// so that an interrupted extraction leaves no half-filled `dest`.
fn extract_deb(deb: &Path, dest: &Path) -> Result<()> {
    let tmp = temp_sibling(dest);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    eprintln!("images: extracting {}", deb.display());
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(&tmp)
        .output()
        .context("running dpkg-deb (package dpkg)")?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        bail!(
            "dpkg-deb -x {} failed with {}: {}",
            deb.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    match std::fs::rename(&tmp, dest) {
        Ok(()) => Ok(()),
        // Another xtask got there first: keep its copy.
        Err(_) if dest.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => {
            Err(e).with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))
        }
    }
}

/// apt with a private configuration under `target/images/apt/` (arm64:
/// `apt-arm64/`).
struct Apt {
    dir: PathBuf,
    debs: PathBuf,
    /// Debian's name of the architecture (`riscv64`, `arm64`).
    arch: &'static str,
    /// Whether the package lists were refreshed in this run.
    updated: bool,
}

impl Apt {
    fn new(cache: &Path, f: Flavour) -> Self {
        Self {
            dir: cache.join(f.apt_dir),
            debs: cache.join("debs"),
            arch: f.deb_arch,
            updated: false,
        }
    }

    /// Create the private configuration (idempotent).
    fn prepare(&self) -> Result<()> {
        for d in ["lists/partial", "cache/archives/partial"] {
            let p = self.dir.join(d);
            std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        }
        std::fs::create_dir_all(&self.debs)
            .with_context(|| format!("creating {}", self.debs.display()))?;
        let status = self.dir.join("status");
        if !status.exists() {
            std::fs::write(&status, "")
                .with_context(|| format!("creating {}", status.display()))?;
        }
        let sources = format!(
            "deb [arch={}] {} {DEBIAN_SUITE} main\n",
            self.arch,
            system_mirror()
        );
        let list = self.dir.join("sources.list");
        if std::fs::read_to_string(&list).ok().as_deref() != Some(sources.as_str()) {
            std::fs::write(&list, sources)
                .with_context(|| format!("writing {}", list.display()))?;
        }
        Ok(())
    }

    /// An apt command (`apt-get` or `apt-cache`) with the private configuration.
    fn cmd(&self, program: &str) -> Command {
        let d = |p: &str| self.dir.join(p).display().to_string();
        let mut c = Command::new(program);
        for opt in [
            format!("Dir::Etc::SourceList={}", d("sources.list")),
            "Dir::Etc::SourceParts=/dev/null".into(),
            format!("Dir::State::Lists={}", d("lists")),
            format!("Dir::Cache={}", d("cache")),
            format!("Dir::State::status={}", d("status")),
            format!("APT::Architecture={}", self.arch),
            format!("APT::Architectures={}", self.arch),
            // Only the Packages index is needed.
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false".into(),
            "Acquire::Languages=none".into(),
            // Root downloads into our folders without the `_apt` sandbox warning.
            "APT::Sandbox::User=root".into(),
        ] {
            c.arg("-o").arg(opt);
        }
        c
    }

    /// Run an apt command quietly (output to `apt.log`), failing with its log.
    fn run_logged(&self, mut cmd: Command, what: &str) -> Result<()> {
        let log = self.dir.join("apt.log");
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = file
            .try_clone()
            .with_context(|| format!("opening {}", log.display()))?;
        let status = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .status()
            .with_context(|| {
                format!("{what}: starting {cmd:?} (is this a Debian host with apt?)")
            })?;
        if !status.success() {
            bail!("{what}: {cmd:?} failed with {status}:\n{}", log_tail(&log));
        }
        Ok(())
    }

    /// `apt-get update` if the lists are missing or older than a day.
    fn update(&mut self, force: bool) -> Result<()> {
        self.prepare()?;
        if self.updated {
            return Ok(());
        }
        if !force && self.lists_fresh() {
            return Ok(());
        }
        eprintln!(
            "images: updating the Debian {DEBIAN_SUITE} {} package lists",
            self.arch
        );
        let mut cmd = self.cmd("apt-get");
        cmd.arg("update");
        self.run_logged(cmd, "updating the private apt lists")?;
        self.updated = true;
        Ok(())
    }

    /// Whether some `*_Packages` list exists and is recent.
    fn lists_fresh(&self) -> bool {
        let Ok(entries) = std::fs::read_dir(self.dir.join("lists")) else {
            return false;
        };
        entries.flatten().any(|e| {
            e.file_name().to_string_lossy().ends_with("_Packages")
                && e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age < LISTS_MAX_AGE)
        })
    }

    /// Output of `apt-cache <args>`.
    fn cache_query(&self, args: &[&str]) -> Result<String> {
        let out = self
            .cmd("apt-cache")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running apt-cache {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "apt-cache {} failed with {}: {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Published `linux-image-6.12.*-riscv64` (`-arm64`) versions, oldest first: the
    /// plain flavour only (a `-` left in the version is another flavour's:
    /// `6.12.57+deb13-rt` of `linux-image-6.12.57+deb13-rt-arm64`).
    fn kernel_candidates(&self) -> Result<Vec<String>> {
        let prefix = format!("linux-image-{KERNEL_SERIES}.");
        let names = self.cache_query(&["pkgnames", &prefix])?;
        let suffix = format!("-{}", self.arch);
        let mut versions: Vec<String> = names
            .lines()
            .filter_map(|n| n.trim().strip_prefix("linux-image-")?.strip_suffix(&suffix))
            .filter(|v| !v.contains('-') && normalize_version(v).is_ok())
            .map(str::to_string)
            .collect();
        versions.sort_by_key(|v| version_key(v));
        versions.dedup();
        Ok(versions)
    }

    /// The newest published kernel matching `wanted` (any 6.12 if `None`).
    fn pick_kernel(&mut self, wanted: Option<&str>) -> Result<String> {
        self.update(false)?;
        let pick = |all: &[String]| {
            all.iter()
                .rev()
                .find(|v| wanted.is_none_or(|w| version_matches(v, w)))
                .cloned()
        };
        let mut all = self.kernel_candidates()?;
        if pick(&all).is_none() && !self.updated {
            self.update(true)?;
            all = self.kernel_candidates()?;
        }
        pick(&all).with_context(|| {
            format!(
                "no linux-image-{}-{} in Debian {DEBIAN_SUITE} (available: {})",
                wanted.unwrap_or("6.12.*"),
                self.arch,
                if all.is_empty() {
                    "none".into()
                } else {
                    all.join(", ")
                }
            )
        })
    }

    /// Expected `.deb` size of `pkg`, from `apt-cache show`.
    fn deb_size(&self, pkg: &str) -> Option<u64> {
        let text = self.cache_query(&["show", "--no-all-versions", pkg]).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("Size:"))
            .and_then(|s| s.trim().parse().ok())
    }

    /// Download `pkg` into `debs/` (unless already there) and return the file.
    fn download(&mut self, pkg: &str) -> Result<PathBuf> {
        self.update(false)?;
        if self
            .cache_query(&["show", "--no-all-versions", pkg])
            .is_err()
            && !self.updated
        {
            self.update(true)?;
        }
        let size = self.deb_size(pkg);
        let incoming = self.debs.join(format!(".incoming-{}", std::process::id()));
        if incoming.exists() {
            std::fs::remove_dir_all(&incoming)
                .with_context(|| format!("removing {}", incoming.display()))?;
        }
        std::fs::create_dir_all(&incoming)
            .with_context(|| format!("creating {}", incoming.display()))?;
        let result = self.download_into(pkg, size, &incoming);
        let _ = std::fs::remove_dir_all(&incoming);
        result
    }

    fn download_into(&self, pkg: &str, size: Option<u64>, incoming: &Path) -> Result<PathBuf> {
        let log = self.dir.join("apt.log");
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = file
            .try_clone()
            .with_context(|| format!("opening {}", log.display()))?;
        let mut cmd = self.cmd("apt-get");
        cmd.arg("download")
            .arg(pkg)
            .current_dir(incoming)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err);
        let mut child = cmd.spawn().with_context(|| {
            format!("starting apt-get download {pkg} (is this a Debian host with apt?)")
        })?;

        let progress = Progress::new(pkg, size);
        let status = loop {
            if let Some(status) = child
                .try_wait()
                .with_context(|| format!("waiting for apt-get download {pkg}"))?
            {
                break status;
            }
            progress.set(dir_size(incoming));
            std::thread::sleep(Duration::from_millis(200));
        };
        progress.finish(dir_size(incoming), status.success());
        if !status.success() {
            bail!(
                "apt-get download {pkg} failed with {status}:\n{}",
                log_tail(&log)
            );
        }

        let deb = std::fs::read_dir(incoming)
            .with_context(|| format!("listing {}", incoming.display()))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb") && p.is_file())
            .with_context(|| format!("apt-get download {pkg} left no .deb:\n{}", log_tail(&log)))?;
        let name = deb.file_name().context("downloaded .deb has no name")?;
        let dest = self.debs.join(name);
        std::fs::rename(&deb, &dest)
            .with_context(|| format!("moving {} to {}", deb.display(), dest.display()))?;
        Ok(dest)
    }
}

/// Download progress on stderr: an indicatif bar on a terminal, otherwise (CI)
/// a plain line every few seconds.
struct Progress {
    pkg: String,
    size: Option<u64>,
    bar: Option<ProgressBar>,
    start: Instant,
    last_line: std::cell::Cell<Instant>,
}

impl Progress {
    const LINE_EVERY: Duration = Duration::from_secs(3);

    fn new(pkg: &str, size: Option<u64>) -> Self {
        let start = Instant::now();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match size {
                Some(n) => ProgressBar::new(n).with_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                ),
            };
            bar.set_message(format!("downloading {pkg}"));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        if bar.is_none() {
            let total = size
                .map(|n| format!(" ({})", HumanBytes(n)))
                .unwrap_or_default();
            eprintln!("images: downloading {pkg}{total}");
        }
        Self {
            pkg: pkg.into(),
            size,
            bar,
            start,
            last_line: std::cell::Cell::new(start),
        }
    }

    fn set(&self, bytes: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(bytes),
            None if self.last_line.get().elapsed() >= Self::LINE_EVERY => {
                self.last_line.set(Instant::now());
                let total = self
                    .size
                    .map(|n| format!(" / {}", HumanBytes(n)))
                    .unwrap_or_default();
                eprintln!("images:   {}: {}{total}", self.pkg, HumanBytes(bytes));
            }
            None => {}
        }
    }

    fn finish(&self, bytes: u64, ok: bool) {
        let secs = self.start.elapsed().as_secs_f64();
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
            bar.finish_and_clear();
        }
        let what = if ok {
            "downloaded"
        } else {
            "failed to download"
        };
        eprintln!(
            "images: {what} {} ({} in {secs:.1} s)",
            self.pkg,
            HumanBytes(bytes)
        );
    }
}

/// Total size of the regular files under `dir` (recursively).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// The last lines of a log file, for error messages.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    format!("{tail}\n(full output: {})", log.display())
}

/// The Debian mirror of the system's apt sources (`URIs:` of the entry for the
/// main archive in `debian.sources`, or a `deb` line of `sources.list`).
fn system_mirror() -> String {
    let deb822 =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let list = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    mirror_from(&deb822, &list).unwrap_or_else(|| DEFAULT_MIRROR.into())
}

fn mirror_from(deb822: &str, list: &str) -> Option<String> {
    let is_archive = |u: &str| {
        let u = u.trim_end_matches('/');
        (u.starts_with("http://") || u.starts_with("https://")) && u.ends_with("/debian")
    };
    let from_deb822 = deb822.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if !k.trim().eq_ignore_ascii_case("uris") {
            return None;
        }
        v.split_whitespace().find(|u| is_archive(u))
    });
    let from_list = || {
        list.lines().find_map(|l| {
            let mut words = l
                .split_whitespace()
                .filter(|w| !w.starts_with('[') && !w.ends_with(']'));
            (words.next()? == "deb").then(|| words.find(|u| is_archive(u)))?
        })
    };
    from_deb822
        .or_else(from_list)
        .map(|u| u.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn versions_sort_and_match() {
        let mut v = vec![
            "6.12.94+deb13",
            "6.12.107+deb13",
            "6.12.9+deb13",
            "6.12.94+deb13u1",
        ];
        v.sort_by_key(|v| version_key(v));
        assert_eq!(
            v,
            [
                "6.12.9+deb13",
                "6.12.94+deb13",
                "6.12.94+deb13u1",
                "6.12.107+deb13"
            ]
        );
        assert!(version_matches("6.12.94+deb13", "6.12.94"));
        assert!(version_matches("6.12.94+deb13", "6.12.94+deb13"));
        assert!(!version_matches("6.12.94+deb13", "6.12.9"));
        assert_eq!(
            normalize_version("linux-image-6.12.94+deb13-riscv64").unwrap(),
            "6.12.94+deb13"
        );
        assert_eq!(
            normalize_version("linux-image-6.12.94+deb13-arm64").unwrap(),
            "6.12.94+deb13"
        );
        assert_eq!(normalize_version(" 6.12.94 ").unwrap(), "6.12.94");
        for bad in ["", "6.12.", "6.13.1", "5.10.1", "6.12.1;rm", "6.12.1 x"] {
            assert!(normalize_version(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn finds_the_mirror() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian-security\n";
        assert_eq!(
            mirror_from(deb822, "").unwrap(),
            "http://deb.debian.org/debian"
        );
        let sec_first = "URIs: http://security.debian.org/debian-security\n\nURIs: http://mirror.example/debian/\n";
        assert_eq!(
            mirror_from(sec_first, "").unwrap(),
            "http://mirror.example/debian"
        );
        let list = "# x\ndeb [arch=amd64] http://ftp.example.org/debian bookworm main\n";
        assert_eq!(
            mirror_from("", list).unwrap(),
            "http://ftp.example.org/debian"
        );
        assert_eq!(mirror_from("", ""), None);
    }

    #[test]
    fn user_images_names_the_flag() {
        let dir = std::env::temp_dir().join(format!("virq-xtask-user-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let k = dir.join("Image");
        std::fs::write(&k, b"kernel").unwrap();
        let missing = dir.join("nope.cpio.gz");
        let err = user_images(k.clone(), missing.clone()).unwrap_err();
        assert!(format!("{err:#}").contains("--initramfs"), "{err:#}");
        let err = user_images(dir.clone(), k.clone()).unwrap_err();
        assert!(format!("{err:#}").contains("--kernel"), "{err:#}");
        let ok = user_images(k.clone(), k.clone()).unwrap();
        assert_eq!(ok.initramfs, k);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A fake ELF header of `f`'s architecture that passes `elf_arch`.
    fn fake_elf(path: &Path, f: Flavour) {
        let mut head = vec![0u8; 64];
        head[..4].copy_from_slice(b"\x7fELF");
        head[4] = 2;
        head[5] = 1;
        head[18..20].copy_from_slice(&f.elf_machine.to_le_bytes());
        std::fs::write(path, head).unwrap();
    }

    fn fake_busybox(path: &Path) {
        fake_elf(path, RISCV64)
    }

    #[test]
    fn elf_arch_tells_riscv64_from_aarch64() {
        let dir = std::env::temp_dir().join(format!("virq-xtask-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("busybox");
        for f in [RISCV64, ARM64] {
            fake_elf(&p, f);
            assert_eq!(elf_arch(&p).unwrap(), f.arch);
        }
        // x86-64 (62): neither.
        fake_elf(
            &p,
            Flavour {
                elf_machine: 62,
                ..RISCV64
            },
        );
        let e = elf_arch(&p).unwrap_err();
        assert!(
            format!("{e:#}").contains("not a riscv64 or aarch64"),
            "{e:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Each architecture keeps its own cache names; riscv64's are the ones it had.
    #[test]
    fn flavours_keep_apart_in_the_cache() {
        assert_eq!(flavour(Arch::Riscv64), RISCV64);
        assert_eq!(flavour(Arch::Aarch64), ARM64);
        assert!(RISCV64
            .initramfs_path("test")
            .ends_with("target/images/initramfs-test.cpio.gz"));
        assert!(ARM64
            .initramfs_path("test")
            .ends_with("target/images/initramfs-arm64-test.cpio.gz"));
        for (a, b) in [
            (RISCV64.apt_dir, ARM64.apt_dir),
            (RISCV64.busybox_dir, ARM64.busybox_dir),
        ] {
            assert_ne!(a, b);
        }
        // A riscv64 kernel folder is never taken for an arm64 one, nor the reverse.
        let cache =
            std::env::temp_dir().join(format!("virq-xtask-flavours-{}", std::process::id()));
        for (dir, file) in [
            ("linux-6.12.9+deb13/boot", "vmlinux-6.12.9+deb13-riscv64"),
            (
                "linux-arm64-6.12.8+deb13/boot",
                "vmlinuz-6.12.8+deb13-arm64",
            ),
        ] {
            std::fs::create_dir_all(cache.join(dir)).unwrap();
            std::fs::write(cache.join(dir).join(file), b"k").unwrap();
        }
        assert_eq!(cached_kernels(&cache, RISCV64).unwrap(), ["6.12.9+deb13"]);
        assert_eq!(cached_kernels(&cache, ARM64).unwrap(), ["6.12.8+deb13"]);
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn initramfs_contents() {
        let dir = std::env::temp_dir().join(format!("virq-xtask-initramfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bb = dir.join("busybox");
        fake_busybox(&bb);
        let out = dir.join("sub/initramfs.cpio.gz");
        build_initramfs(&bb, INIT_TEST, &out).unwrap();

        let mut cpio = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&out).unwrap())
            .read_to_end(&mut cpio)
            .unwrap();
        let entries = cpio::parse(&cpio).unwrap();
        let get = |n: &str| {
            entries
                .iter()
                .find(|e| e.name == n)
                .unwrap_or_else(|| panic!("no {n}"))
        };
        assert_eq!(get("init").mode, 0o100755);
        assert_eq!(get("init").data, INIT_TEST.as_bytes());
        assert_eq!(get("dev/console").mode, 0o020600);
        assert_eq!(get("dev/console").rdev, (5, 1));
        assert_eq!(get("bin/busybox").data, std::fs::read(&bb).unwrap());
        assert_eq!(get("bin/sh").data, b"busybox");
        assert_eq!(get("bin/poweroff").mode, 0o120777);
        for d in ["dev", "proc", "sys"] {
            assert_eq!(get(d).mode, 0o040755);
        }
        assert_eq!(entries.last().unwrap().name, cpio::TRAILER);

        // Extra programs land where asked, executable.
        build_initramfs_with(&bb, INIT_TEST, &[("bin/prog", b"\x7fELF-prog")], &out).unwrap();
        let mut cpio = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&out).unwrap())
            .read_to_end(&mut cpio)
            .unwrap();
        let entries = cpio::parse(&cpio).unwrap();
        let prog = entries.iter().find(|e| e.name == "bin/prog").unwrap();
        assert_eq!(
            (prog.mode, prog.data.as_slice()),
            (0o100755, b"\x7fELF-prog".as_slice())
        );

        // Bad inputs are errors naming what is wrong.
        let err = build_initramfs(&bb, "echo no shebang", &out).unwrap_err();
        assert!(format!("{err:#}").contains("init script"), "{err:#}");
        let err = build_initramfs(&dir.join("missing"), INIT_TEST, &out).unwrap_err();
        assert!(format!("{err:#}").contains("missing"), "{err:#}");
        std::fs::write(&bb, b"#!/bin/sh\nnot an elf at all\n").unwrap();
        let err = build_initramfs(&bb, INIT_TEST, &out).unwrap_err();
        assert!(format!("{err:#}").contains("not an ELF"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn init_scripts_have_the_markers() {
        for marker in [
            "VIRQ-INIT-START",
            "VIRQ-CPUS-ONLINE $(cat /sys/devices/system/cpu/online)",
            "VIRQ-CMDLINE $(cat /proc/cmdline)",
            "ttyS0|uart-pl011",
            "cat /proc/interrupts",
            "VIRQ-INIT-DONE",
            "poweroff -f",
        ] {
            assert!(INIT_TEST.contains(marker), "{marker}");
        }
        assert!(INIT_SHELL.contains("cttyhack"));
        assert!(INIT_TEST.starts_with("#!/bin/sh\n") && INIT_SHELL.starts_with("#!/bin/sh\n"));
    }

    /// Downloads the real Debian images of both architectures (about 115 MB riscv64,
    /// about 110 MB arm64) and builds both initramfs files of each: `cargo test -p xtask
    /// -- --ignored debian`.
    #[test]
    #[ignore = "downloads from Debian"]
    fn debian_images_for_real() {
        for arch in [Arch::Riscv64, Arch::Aarch64] {
            let guest = ensure_debian(arch, None).unwrap();
            eprintln!("{guest:#?}");
            assert!(guest.kernel.is_file() && guest.busybox.is_file());
            assert_eq!(elf_arch(&guest.busybox).unwrap(), arch);
            let again = ensure_debian(arch, Some(&guest.kernel_version)).unwrap();
            assert_eq!(again, guest);
            let err = ensure_debian(arch, Some("6.12.1")).unwrap_err();
            assert!(format!("{err:#}").contains("available: "), "{err:#}");
            let err = ensure_debian(arch, Some("5.10")).unwrap_err();
            assert!(format!("{err:#}").contains("kernel version"), "{err:#}");
            for (name, init) in [("test", INIT_TEST), ("shell", INIT_SHELL)] {
                let boot = debian_boot(arch, None, name, init).unwrap();
                eprintln!("{boot:#?}");
                assert!(boot.initramfs.is_file());
            }
        }
    }
}
