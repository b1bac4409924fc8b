//! The system benchmark's KVM target: the `guest/bench` payload as a guest of KVM
//! RISC-V — Debian's own `kvm.ko` loaded in a Debian Linux guest on the same QEMU
//! machine — run by `tools/kvm-vmm` (`virq-kvm-vmm`, a `kvm-ioctls` VMM with KVM's
//! in-kernel AIA). This module builds the VMM (a static riscv64 Linux binary), takes
//! `kvm.ko` (and whatever its `.modinfo` says it depends on) from the kernel package,
//! decompressed, and builds the initramfs whose `/init` loads it and runs the VMM.
//!
//! The Debian guest's kernel command line carries the run: `vmm.vcpus=N` and the
//! payload's own `bench.*` words, which `/init` reads from `/proc/cmdline` and hands
//! to the VMM (so one initramfs serves every boot).
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};

use crate::setup::{VMM_LINKER, VMM_TARGET};
use crate::util::{root, run_cmd};

/// Where the modules go in the initramfs, and the VMM and the payload.
const MODULE_DIR: &str = "root";
const VMM_PATH: &str = "bin/virq-kvm-vmm";
const PAYLOAD_PATH: &str = "root/virq-bench.bin";
/// The module under test, relative to the kernel's modules folder.
const KVM_MODULE: &str = "kernel/arch/riscv/kvm/kvm.ko.xz";

/// `kvm.ko`'s parameters for the benchmark: no halt polling. By default (500 µs here)
/// a vCPU that executes `wfi` keeps its host hart spinning for up to that long before
/// it sleeps; under `-icount` QEMU runs the harts round-robin on one thread, so the
/// other hart does not run while this one polls and every ping-pong lap waits out the
/// poll window (measured: ~494,000 instructions per round trip, 98 % of laps over
/// 100,000). On hardware the harts run in parallel and the poll ends at the wake-up.
pub const KVM_PARAMS: &[&str] = &["kvm.halt_poll_ns=0"];

/// Idle seconds between loading kvm.ko and starting the VMM, so that the boot's
/// deferred work is over before anything is timed: without them the first ops caught
/// 4–6 M instructions of host activity (idle under `-icount,sleep=off` costs no wall
/// time: QEMU jumps to the next timer).
const SETTLE_S: u32 = 5;

/// The kernel command line of a KVM boot: quiet (nothing but the payload's lines on
/// the console), [`KVM_PARAMS`], the vCPUs and the payload's command line `bench`.
pub fn cmdline(vcpus: u32, bench: &str) -> Vec<String> {
    ["console=ttyS0", "quiet"]
        .into_iter()
        .chain(KVM_PARAMS.iter().copied())
        .map(String::from)
        .chain([format!("vmm.vcpus={vcpus}")])
        .chain(bench.split_whitespace().map(String::from))
        .collect()
}

/// `/init`: mount, load the modules in order (each with its `<module>.<param>=…` words
/// of the kernel command line), wait [`SETTLE_S`], run the VMM with the payload and
/// the command line's `bench.*` words (its output to a file, printed when it is done, so
/// that no console traffic lands in a timed op), report its exit status
/// (`VIRQ-KVM-VMM-EXIT status=N`), power off.
pub fn init_script(modules: &[String]) -> String {
    let modules = modules.join(" ");
    format!(
        r#"#!/bin/sh
# virq KVM bench: Debian's kvm.ko, the guest/bench payload under virq-kvm-vmm, power off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s 2>/dev/null
echo "VIRQ-KVM-INIT kernel=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo)"
cmdline=$(cat /proc/cmdline)
for m in {modules}; do
    params=
    for w in $cmdline; do
        case $w in
            $m.*) params="$params ${{w#$m.}}" ;;
        esac
    done
    insmod /{MODULE_DIR}/$m.ko $params || echo "VIRQ-KVM-INIT error=insmod-$m"
done
echo "VIRQ-KVM-INIT kvm halt_poll_ns=$(cat /sys/module/kvm/parameters/halt_poll_ns)"
vcpus=1
args=
for w in $cmdline; do
    case $w in
        vmm.vcpus=*) vcpus=${{w#vmm.vcpus=}} ;;
        bench.*) args="$args $w" ;;
    esac
done
sleep {SETTLE_S}
/{VMM_PATH} --vcpus $vcpus /{PAYLOAD_PATH} $args > /tmp/vmm.out 2>&1
status=$?
cat /tmp/vmm.out
echo "VIRQ-KVM-VMM-EXIT status=$status"
poweroff -f
"#
    )
}

/// Build `tools/kvm-vmm` (release, static, into `target/kvm-vmm`) and return the binary.
pub fn build_vmm() -> Result<PathBuf> {
    build_static_program("tools/kvm-vmm/Cargo.toml", "target/kvm-vmm", "virq-kvm-vmm")
}

/// Build the std Rust program `bin` of `manifest` for riscv64 Linux (release, statically
/// linked, into `target_dir` under the workspace root) and return the binary, checked to
/// need no program interpreter (the initramfs has no C library).
pub fn build_static_program(manifest: &str, target_dir: &str, bin: &str) -> Result<PathBuf> {
    let target_dir = root().join(target_dir);
    let env_target = VMM_TARGET.to_uppercase().replace('-', "_");
    let mut cmd = crate::util::cargo();
    cmd.args(["build", "--manifest-path", manifest])
        .args(["--target", VMM_TARGET, "--release", "--target-dir"])
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env(format!("CARGO_TARGET_{env_target}_LINKER"), VMM_LINKER)
        .env(
            format!("CARGO_TARGET_{env_target}_RUSTFLAGS"),
            "-C target-feature=+crt-static",
        );
    run_cmd(&mut cmd)?;
    let bin = target_dir.join(VMM_TARGET).join("release").join(bin);
    let elf = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
    check_static_riscv64(&elf).with_context(|| bin.display().to_string())?;
    Ok(bin)
}

/// A riscv64 ELF executable with no program interpreter (`PT_INTERP`): it runs in an
/// initramfs that has no C library.
fn check_static_riscv64(elf: &[u8]) -> Result<()> {
    ensure!(
        elf.get(..4) == Some(b"\x7fELF".as_slice()),
        "not an ELF file"
    );
    ensure!(
        elf[4] == 2 && elf[5] == 1 && u16::from_le_bytes([elf[18], elf[19]]) == 243,
        "not a riscv64 ELF file"
    );
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into()?) as usize;
    let phentsize = u16::from_le_bytes([elf[0x36], elf[0x37]]) as usize;
    let phnum = u16::from_le_bytes([elf[0x38], elf[0x39]]) as usize;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let kind = elf.get(at..at + 4).context("truncated program headers")?;
        ensure!(
            kind != 3u32.to_le_bytes(),
            "dynamically linked (has PT_INTERP): it needs -C target-feature=+crt-static"
        );
    }
    Ok(())
}

/// Decompress a kernel module (`.ko.xz`; a plain `.ko` is returned as it is).
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "xz") {
        let mut out = Vec::with_capacity(raw.len() * 4);
        lzma_rs::xz_decompress(&mut raw.as_slice(), &mut out)
            .map_err(|e| anyhow::anyhow!("decompressing {}: {e:?}", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// The contents of ELF64 section `name` of `elf`.
fn section<'a>(elf: &'a [u8], name: &str) -> Result<Option<&'a [u8]>> {
    let u16_at = |o: usize| -> Result<usize> {
        Ok(u16::from_le_bytes(elf.get(o..o + 2).context("truncated ELF")?.try_into()?) as usize)
    };
    let u32_at = |o: usize| -> Result<usize> {
        Ok(u32::from_le_bytes(elf.get(o..o + 4).context("truncated ELF")?.try_into()?) as usize)
    };
    let u64_at = |o: usize| -> Result<usize> {
        Ok(u64::from_le_bytes(elf.get(o..o + 8).context("truncated ELF")?.try_into()?) as usize)
    };
    ensure!(
        elf.get(..6) == Some(b"\x7fELF\x02\x01".as_slice()),
        "not a little-endian ELF64 file"
    );
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?, u16_at(0x3e)?);
    let sh = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(sh(shstrndx) + 0x18)?;
    for i in 0..shnum {
        let name_at = strtab + u32_at(sh(i))?;
        let n = elf
            .get(name_at..)
            .context("section name outside the file")?;
        let n = &n[..n.iter().position(|&c| c == 0).unwrap_or(n.len())];
        if n == name.as_bytes() {
            let (off, size) = (u64_at(sh(i) + 0x18)?, u64_at(sh(i) + 0x20)?);
            return Ok(Some(
                elf.get(off..off + size)
                    .context("section outside the file")?,
            ));
        }
    }
    Ok(None)
}

/// The modules a module needs (`depends=` in its `.modinfo`).
pub fn module_depends(ko: &[u8]) -> Result<Vec<String>> {
    let info = section(ko, ".modinfo")?.context("no .modinfo section: not a kernel module")?;
    Ok(info
        .split(|&c| c == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|d| {
            String::from_utf8_lossy(d)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default())
}

/// Find module `name` (`-` and `_` are the same in module names) under `modules`.
fn find_module(modules: &Path, name: &str) -> Result<PathBuf> {
    let want = name.replace('-', "_");
    let mut stack = vec![modules.join("kernel")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let file = p.file_name().unwrap_or_default().to_string_lossy();
            let stem = file
                .strip_suffix(".ko.xz")
                .or_else(|| file.strip_suffix(".ko"));
            if stem.is_some_and(|s| s.replace('-', "_") == want) {
                return Ok(p);
            }
        }
    }
    bail!("module {name} not found under {}", modules.display())
}

/// `kvm.ko` and its dependencies, decompressed, in load order: `(name, bytes)`.
pub fn kvm_modules(modules: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    with_depends(modules, &[("kvm", modules.join(KVM_MODULE))])
}

/// The modules `names` (found by name under `modules`) and their dependencies,
/// decompressed, in load order: `(name, bytes)`.
pub fn modules_named(modules: &Path, names: &[&str]) -> Result<Vec<(String, Vec<u8>)>> {
    let roots = names
        .iter()
        .map(|n| Ok((*n, find_module(modules, n)?)))
        .collect::<Result<Vec<_>>>()?;
    with_depends(modules, &roots)
}

/// `roots` (`(name, file)`) and what they depend on (`.modinfo`'s `depends=`, found by
/// name under `modules`), decompressed, each after everything it depends on.
fn with_depends(modules: &Path, roots: &[(&str, PathBuf)]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut order: Vec<(String, Vec<u8>)> = Vec::new();
    // Depth-first: a module after everything it depends on.
    fn visit(
        modules: &Path,
        name: &str,
        path: PathBuf,
        order: &mut Vec<(String, Vec<u8>)>,
        active: &mut Vec<String>,
    ) -> Result<()> {
        if order.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        ensure!(
            !active.iter().any(|n| n == name),
            "module dependency cycle through {name}"
        );
        let ko = read_module(&path)?;
        active.push(name.to_string());
        for dep in module_depends(&ko).with_context(|| path.display().to_string())? {
            let p = find_module(modules, &dep)?;
            visit(modules, &dep, p, order, active)?;
        }
        active.pop();
        order.push((name.to_string(), ko));
        Ok(())
    }
    for (name, path) in roots {
        visit(modules, name, path.clone(), &mut order, &mut Vec::new())?;
    }
    Ok(order)
}

/// Debian's kernel and `target/images/initramfs-kvm-bench.cpio.gz`: busybox, the
/// modules, the VMM and `payload`, and [`init_script`].
pub fn boot_images(payload: &Path) -> Result<crate::images::BootImages> {
    let guest = crate::images::ensure_debian(hyp_config::Arch::Riscv64, None)?;
    let modules = kvm_modules(&guest.modules)?;
    let vmm = std::fs::read(build_vmm()?)?;
    let payload_bytes =
        std::fs::read(payload).with_context(|| format!("reading {}", payload.display()))?;
    let paths: Vec<String> = modules
        .iter()
        .map(|(n, _)| format!("{MODULE_DIR}/{n}.ko"))
        .collect();
    let mut extra: Vec<(&str, &[u8])> = vec![
        (VMM_PATH, vmm.as_slice()),
        (PAYLOAD_PATH, payload_bytes.as_slice()),
    ];
    extra.extend(
        paths
            .iter()
            .zip(&modules)
            .map(|(p, (_, b))| (p.as_str(), b.as_slice())),
    );
    let names: Vec<String> = modules.iter().map(|(n, _)| n.clone()).collect();
    eprintln!(
        "kvm: Linux {} with {} from its package, virq-kvm-vmm {} bytes",
        guest.kernel_version,
        names.join(", "),
        vmm.len()
    );
    crate::images::debian_boot_with(
        hyp_config::Arch::Riscv64,
        Some(&guest.kernel_version),
        "kvm-bench",
        &init_script(&names),
        &extra,
    )
}

/// The kernel version of the boot images (for the JSON): `kvm.ko`'s `vermagic`.
pub fn kvm_vermagic(modules: &Path) -> Result<String> {
    let ko = read_module(&modules.join(KVM_MODULE))?;
    let info = section(&ko, ".modinfo")?.context("kvm.ko has no .modinfo")?;
    info.split(|&c| c == 0)
        .find_map(|s| s.strip_prefix(b"vermagic="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .context("kvm.ko has no vermagic")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with a section table: `.shstrtab` and `.modinfo`.
    fn fake_ko(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut f = vec![0u8; 64];
        f[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let strtab_off = f.len();
        f.extend_from_slice(shstrtab);
        let info_off = f.len();
        f.extend_from_slice(modinfo);
        while !f.len().is_multiple_of(8) {
            f.push(0);
        }
        let shoff = f.len();
        let mut sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            f.extend_from_slice(&h);
        };
        sh(0, 0, 0);
        sh(1, strtab_off, shstrtab.len());
        sh(11, info_off, modinfo.len());
        f[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        f[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        f[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        f[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        f
    }

    #[test]
    fn reads_module_depends() {
        let ko = fake_ko(b"license=GPL\0depends=irqbypass,foo-bar\0name=kvm\0");
        assert_eq!(module_depends(&ko).unwrap(), ["irqbypass", "foo-bar"]);
        let ko = fake_ko(b"depends=\0intree=Y\0");
        assert!(module_depends(&ko).unwrap().is_empty());
        assert!(module_depends(b"not an elf at all, not at all").is_err());
    }

    #[test]
    fn init_loads_modules_and_runs_the_vmm() {
        let s = init_script(&["irqbypass".into(), "kvm".into()]);
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("for m in irqbypass kvm; do"));
        assert!(s.contains("insmod /root/$m.ko $params"));
        assert!(s.contains("$m.*) params=\"$params ${w#$m.}\" ;;"));
        assert!(s.contains("/bin/virq-kvm-vmm --vcpus $vcpus /root/virq-bench.bin $args"));
        assert!(s.contains("vcpus=${w#vmm.vcpus=}"));
        assert!(s.contains("VIRQ-KVM-VMM-EXIT status=$status") && s.contains("poweroff -f"));
        assert_eq!(
            cmdline(2, "bench.n=10 bench.ops=all"),
            [
                "console=ttyS0",
                "quiet",
                "kvm.halt_poll_ns=0",
                "vmm.vcpus=2",
                "bench.n=10",
                "bench.ops=all"
            ]
        );
    }

    #[test]
    fn a_static_binary_has_no_interpreter() {
        let mut elf = vec![0u8; 64 + 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[18..20].copy_from_slice(&243u16.to_le_bytes());
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        check_static_riscv64(&elf).unwrap();
        elf[64..68].copy_from_slice(&3u32.to_le_bytes()); // PT_INTERP
        assert!(check_static_riscv64(&elf).is_err());
        elf[18] = 62; // x86-64
        assert!(check_static_riscv64(&elf).is_err());
    }

    /// Debian's real kvm.ko, when the images are there (`cargo xtask bench --system`
    /// fetched them): decompressed, with its dependencies.
    #[test]
    fn debian_kvm_module_when_cached() {
        let cache = crate::images::cache_dir();
        let Some(dir) = std::fs::read_dir(&cache).ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .find(|p| p.join("usr/lib/modules").is_dir())
        }) else {
            eprintln!("no Debian kernel in {}: skipped", cache.display());
            return;
        };
        let Some(modules) = std::fs::read_dir(dir.join("usr/lib/modules"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.join(KVM_MODULE).is_file())
        else {
            return;
        };
        let mods = kvm_modules(&modules).unwrap();
        assert_eq!(mods.last().unwrap().0, "kvm");
        assert!(section(&mods.last().unwrap().1, ".modinfo")
            .unwrap()
            .is_some());
        assert!(kvm_vermagic(&modules).unwrap().contains("riscv"));
    }
}
