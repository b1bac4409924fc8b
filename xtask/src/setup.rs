//! Host prerequisites: the `riscv64gc-unknown-none-elf` rustup target and
//! QEMU >= 8 (`qemu-system-riscv64`); for the library-crate checks of `cargo xtask
//! test`, the `aarch64-unknown-none` target and the MSRV toolchain (`rustup toolchain
//! install 1.85 --profile minimal`); for the KVM target of `cargo xtask bench --system`,
//! the `riscv64gc-unknown-linux-gnu` target and the cross linker (`gcc-riscv64-linux-gnu`);
//! for hyp's aarch64 image, that target and `qemu-system-aarch64` (package
//! `qemu-system-arm`).
//!
//! Whatever is missing is installed when that is possible without asking (rustup
//! works as any user; apt needs root). Otherwise the exact commands are printed and
//! the call fails.
//!
//! Debian bookworm's own QEMU is 7.2, whose `virt,aia=aplic-imsic` machine hangs
//! Linux 6.12; on bookworm QEMU therefore comes from `bookworm-backports`.
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::run_cmd;

/// The bare-metal target `hyp` and its test guests are built for.
pub const RUST_TARGET: &str = "riscv64gc-unknown-none-elf";

/// The target of the KVM benchmark's VMM (`tools/kvm-vmm`, a static riscv64 Linux
/// program): `riscv64gc-unknown-linux-musl` would need no C toolchain, but rustup has no
/// `rust-std` for it on this project's machines (the download answers 404), so glibc,
/// linked statically.
pub const VMM_TARGET: &str = "riscv64gc-unknown-linux-gnu";

/// The linker for [`VMM_TARGET`], from the Debian package [`VMM_LINKER_PACKAGE`] (which
/// brings glibc's static libraries, the C start files and libgcc: what rust-lld alone
/// lacks).
pub const VMM_LINKER: &str = "riscv64-linux-gnu-gcc";
pub const VMM_LINKER_PACKAGE: &str = "gcc-riscv64-linux-gnu";

/// The QEMU system emulator `hyp` runs under.
pub const QEMU_BINARY: &str = "qemu-system-riscv64";
/// The Debian package of [`QEMU_BINARY`].
pub const QEMU_PACKAGE: &str = "qemu-system-misc";

/// The bare-metal target of hyp's aarch64 image (and a `no_std` target of the crates).
pub const ARM_TARGET: &str = "aarch64-unknown-none";
/// The QEMU system emulator hyp's aarch64 image runs under (`cargo xtask run --arch
/// aarch64`, the aarch64 smoke test of the QEMU suite).
pub const QEMU_ARM_BINARY: &str = "qemu-system-aarch64";
/// The Debian package of [`QEMU_ARM_BINARY`].
pub const QEMU_ARM_PACKAGE: &str = "qemu-system-arm";

/// Oldest QEMU major version accepted.
pub const MIN_QEMU_MAJOR: u32 = 8;

/// The deb822 sources file of a stock Debian bookworm machine.
const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";

/// Suite providing a recent QEMU on bookworm.
const BACKPORTS: &str = "bookworm-backports";

/// Ensure everything `cargo xtask run`/`test` needs on the host: the rustup
/// target and QEMU >= 8. Installs what is missing, or fails saying how to.
pub fn ensure_all() -> Result<()> {
    ensure_rust_target()?;
    let qemu = ensure_qemu()?;
    let (major, minor, patch) = qemu_version(&qemu)?;
    eprintln!(
        "setup: {RUST_TARGET} installed; {} is QEMU {major}.{minor}.{patch}",
        qemu.display()
    );
    Ok(())
}

/// Ensure what hyp's aarch64 image needs: the [`ARM_TARGET`] rustup target and
/// `qemu-system-aarch64` >= 8 (package `qemu-system-arm`, from bookworm-backports on
/// bookworm). Returns the QEMU binary's path.
pub fn ensure_arm() -> Result<PathBuf> {
    ensure_target(ARM_TARGET)?;
    let qemu = ensure_qemu_binary(QEMU_ARM_BINARY, QEMU_ARM_PACKAGE)?;
    let (major, minor, patch) = qemu_version(&qemu)?;
    eprintln!(
        "setup: {ARM_TARGET} installed; {} is QEMU {major}.{minor}.{patch}",
        qemu.display()
    );
    Ok(qemu)
}

/// Ensure what the library-crate checks of `cargo xtask test` need: the `no_std`
/// targets and the MSRV toolchain. Returns the MSRV.
pub fn ensure_crate_checks() -> Result<String> {
    ensure_no_std_targets()?;
    let msrv = msrv()?;
    ensure_toolchain(&msrv)?;
    eprintln!(
        "setup: targets {} and the Rust {msrv} toolchain (MSRV) installed",
        NO_STD_TARGETS.join(", ")
    );
    Ok(msrv)
}

/// Ensure what the KVM target of `cargo xtask bench --system` needs to build its VMM:
/// the rustup target [`VMM_TARGET`] and the cross linker [`VMM_LINKER`] (apt, as root;
/// otherwise the commands are printed and the call fails).
pub fn ensure_kvm_vmm() -> Result<()> {
    ensure_target(VMM_TARGET)?;
    let have_linker = || {
        Command::new(VMM_LINKER)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if have_linker() {
        return Ok(());
    }
    eprintln!("setup: {VMM_LINKER} not found (the KVM benchmark's VMM links with it)");
    if !is_root()? {
        bail!(
            "installing {VMM_LINKER_PACKAGE} needs root. Run as root:\n  apt-get update\n  \
             apt-get install -y {VMM_LINKER_PACKAGE}\nthen run `cargo xtask setup` again"
        );
    }
    run_cmd(Command::new("apt-get").arg("update"))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", VMM_LINKER_PACKAGE])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if !have_linker() {
        bail!("{VMM_LINKER} is still missing after installing {VMM_LINKER_PACKAGE}");
    }
    eprintln!("setup: {VMM_TARGET} installed; {VMM_LINKER} from {VMM_LINKER_PACKAGE}");
    Ok(())
}

/// The library crates' MSRV: `workspace.package.rust-version` of the root
/// `Cargo.toml`, which each library crate inherits (checked here too, so the
/// declared and the checked version cannot drift apart).
pub fn msrv() -> Result<String> {
    let read = |path: PathBuf| -> Result<toml::Value> {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    };
    let root = crate::util::root();
    let ws = read(root.join("Cargo.toml"))?;
    let msrv = ws
        .get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(|p| p.get("rust-version"))
        .and_then(|v| v.as_str())
        .context("the root Cargo.toml declares no workspace.package.rust-version")?
        .to_owned();
    for krate in crate::api::API_CRATES {
        let manifest = read(root.join("crates").join(krate).join("Cargo.toml"))?;
        let inherited = manifest
            .get("package")
            .and_then(|p| p.get("rust-version"))
            .and_then(|v| v.get("workspace"))
            .and_then(|w| w.as_bool());
        if inherited != Some(true) {
            bail!("crates/{krate}/Cargo.toml must declare `rust-version.workspace = true`");
        }
    }
    Ok(msrv)
}

/// Ensure the `riscv64gc-unknown-none-elf` rustup target is installed, adding it
/// with `rustup target add` if needed.
pub fn ensure_rust_target() -> Result<()> {
    ensure_target(RUST_TARGET)
}

/// The bare-metal targets the library crates must build for (`no_std`), besides the
/// host: `cargo xtask test` builds virq-core and virq-riscv for each.
pub const NO_STD_TARGETS: &[&str] = &[RUST_TARGET, ARM_TARGET];

/// Ensure every target of [`NO_STD_TARGETS`] is installed (`rustup target add`).
pub fn ensure_no_std_targets() -> Result<()> {
    NO_STD_TARGETS.iter().try_for_each(|t| ensure_target(t))
}

/// Ensure the rustup toolchain `version` (the library crates' `rust-version`, their
/// MSRV) is installed, with `rustup toolchain install <version> --profile minimal`
/// (rustc, cargo and the host std: what `cargo check` needs) if it is missing.
pub fn ensure_toolchain(version: &str) -> Result<()> {
    let out = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("running `rustup toolchain list` (is rustup installed?)")?;
    let listed = String::from_utf8_lossy(&out.stdout);
    // Lines look like `1.85-x86_64-unknown-linux-gnu` (or `1.85.1-…`, `… (default)`).
    let have = listed.lines().any(|l| {
        l.strip_prefix(version)
            .is_some_and(|rest| rest.starts_with('-'))
    });
    if out.status.success() && have {
        return Ok(());
    }
    run_cmd(Command::new("rustup").args(["toolchain", "install", version, "--profile", "minimal"]))
        .with_context(|| {
            format!(
                "installing the Rust {version} toolchain (the MSRV); without network access run \
             `rustup toolchain install {version} --profile minimal` where rustup can download"
            )
        })
}

/// Ensure the rustup target `target` is installed, adding it with `rustup target add`
/// if needed.
pub fn ensure_target(target: &str) -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .with_context(|| {
            format!(
                "running `rustup target list --installed` (is rustup installed? \
                 Without rustup, install the {target} std yourself)"
            )
        })?;
    if !out.status.success() {
        bail!(
            "`rustup target list --installed` failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let installed = String::from_utf8_lossy(&out.stdout);
    if installed.lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    run_cmd(Command::new("rustup").args(["target", "add", target]))
        .with_context(|| format!("installing the rustup target {target}"))
}

/// Ensure `qemu-system-riscv64` >= 8 is installed and return its path.
///
/// If it is missing or too old: as root, install it with apt (on bookworm from
/// `bookworm-backports`, adding that suite to `debian.sources` if absent);
/// otherwise print the commands to run as root and fail.
pub fn ensure_qemu() -> Result<PathBuf> {
    ensure_qemu_binary(QEMU_BINARY, QEMU_PACKAGE)
}

/// Ensure the QEMU system emulator `binary` >= 8, from the Debian `package`, as
/// [`ensure_qemu`] does for the riscv64 one.
pub fn ensure_qemu_binary(binary: &str, package: &str) -> Result<PathBuf> {
    let found = find_in_path(binary);
    if let Some(path) = &found {
        let version = qemu_version(path)?;
        if version.0 >= MIN_QEMU_MAJOR {
            return Ok(path.clone());
        }
        eprintln!(
            "setup: {} is QEMU {}.{}.{}, older than {MIN_QEMU_MAJOR}",
            path.display(),
            version.0,
            version.1,
            version.2
        );
    } else {
        eprintln!("setup: {binary} not found in PATH");
    }

    let codename = os_codename();
    let plan = install_plan(codename.as_deref());
    if !is_root()? {
        bail!(
            "QEMU >= {MIN_QEMU_MAJOR} is needed and installing it needs root. Run as root:\n\
             {}\nthen run `cargo xtask setup` again",
            plan.describe(package)
        );
    }
    plan.execute(package)?;

    let path = find_in_path(binary)
        .with_context(|| format!("{binary} is still not in PATH after installing {package}"))?;
    let version = qemu_version(&path)?;
    if version.0 < MIN_QEMU_MAJOR {
        bail!(
            "{} is still QEMU {}.{}.{} after the install; QEMU >= {MIN_QEMU_MAJOR} is needed \
             (Debian bookworm: install {package} from {BACKPORTS})",
            path.display(),
            version.0,
            version.1,
            version.2
        );
    }
    Ok(path)
}

/// The version of the QEMU binary at `path`, from its `--version` output
/// (`QEMU emulator version 10.0.2 (Debian ...)`).
pub fn qemu_version(path: &Path) -> Result<(u32, u32, u32)> {
    let out = Command::new(path)
        .arg("--version")
        .output()
        .with_context(|| format!("running `{} --version`", path.display()))?;
    if !out.status.success() {
        bail!("`{} --version` failed with {}", path.display(), out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    parse_qemu_version(&text)
        .with_context(|| format!("parsing the output of `{} --version`", path.display()))
}

/// Parse `QEMU emulator version X.Y.Z ...`; a missing patch level reads as 0.
fn parse_qemu_version(text: &str) -> Result<(u32, u32, u32)> {
    let rest = text
        .lines()
        .find_map(|l| l.split_once("version ").map(|(_, r)| r))
        .with_context(|| format!("no `version` in {:?}", text.trim()))?;
    let token = rest
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()
        .unwrap_or_default();
    let mut parts = token.split('.');
    let mut num = |what: &str, required: bool| -> Result<u32> {
        match parts.next().filter(|p| !p.is_empty()) {
            Some(p) => p
                .parse()
                .with_context(|| format!("bad {what} version {p:?} in {token:?}")),
            None if required => bail!("no {what} version in {:?}", text.trim()),
            None => Ok(0),
        }
    };
    Ok((
        num("major", true)?,
        num("minor", true)?,
        num("patch", false)?,
    ))
}

/// First executable named `name` in `PATH`.
fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Whether this process runs as root (`id -u` prints 0).
fn is_root() -> Result<bool> {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .context("running `id -u`")?;
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `VERSION_CODENAME` from `/etc/os-release`, if any.
fn os_codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix("VERSION_CODENAME=")
            .map(|v| v.trim().trim_matches('"').to_string())
            .filter(|v| !v.is_empty())
    })
}

/// How QEMU gets installed on this machine.
enum InstallPlan {
    /// Debian bookworm: enable `bookworm-backports` and install from it.
    Backports,
    /// Any other apt-based system: its own QEMU package.
    Plain,
}

fn install_plan(codename: Option<&str>) -> InstallPlan {
    match codename {
        Some("bookworm") => InstallPlan::Backports,
        _ => InstallPlan::Plain,
    }
}

impl InstallPlan {
    /// The commands a root user would run, one per line.
    fn describe(&self, package: &str) -> String {
        match self {
            InstallPlan::Backports => format!(
                "  # in {DEBIAN_SOURCES}, on the `Suites: bookworm ...` line of the \
                 deb.debian.org/debian entry, add: {BACKPORTS}\n  \
                 sed -i '/^Suites:.*[[:space:]]bookworm\\([[:space:]]\\|$\\)/{{/{BACKPORTS}/!s/$/ {BACKPORTS}/}}' \
                 {DEBIAN_SOURCES}   # only if {BACKPORTS} is absent\n  \
                 apt-get update\n  \
                 apt-get install -y -t {BACKPORTS} {package}"
            ),
            InstallPlan::Plain => format!("  apt-get update\n  apt-get install -y {package}"),
        }
    }

    /// Run the plan (as root).
    fn execute(&self, package: &str) -> Result<()> {
        match self {
            InstallPlan::Backports => {
                enable_backports(Path::new(DEBIAN_SOURCES))?;
                run_cmd(Command::new("apt-get").arg("update"))?;
                run_cmd(
                    Command::new("apt-get")
                        .args(["install", "-y", "-t", BACKPORTS, package])
                        .env("DEBIAN_FRONTEND", "noninteractive"),
                )
            }
            InstallPlan::Plain => {
                run_cmd(Command::new("apt-get").arg("update"))?;
                run_cmd(
                    Command::new("apt-get")
                        .args(["install", "-y", package])
                        .env("DEBIAN_FRONTEND", "noninteractive"),
                )
            }
        }
    }
}

/// Add `bookworm-backports` to the `Suites:` line that lists `bookworm` in the
/// deb822 file `path`, unless some entry already has it. Nothing else changes.
fn enable_backports(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading {} (to enable {BACKPORTS}; on a machine without it, add \
             {BACKPORTS} to its apt sources by hand)",
            path.display()
        )
    })?;
    match add_backports_suite(&text) {
        Ok(None) => Ok(()),
        Ok(Some(new)) => {
            eprintln!("setup: adding {BACKPORTS} to {}", path.display());
            std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
        }
        Err(e) => Err(e.context(format!("editing {}", path.display()))),
    }
}

/// The edited sources text, or `None` if `bookworm-backports` is already there.
fn add_backports_suite(text: &str) -> Result<Option<String>> {
    let suites = |l: &str| -> Option<Vec<String>> {
        let (key, value) = l.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case("suites")
            .then(|| value.split_whitespace().map(str::to_string).collect())
    };
    if text
        .lines()
        .filter_map(suites)
        .any(|s| s.iter().any(|x| x == BACKPORTS))
    {
        return Ok(None);
    }
    let mut done = false;
    let mut out = String::with_capacity(text.len() + BACKPORTS.len() + 1);
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        if !done && suites(body).is_some_and(|s| s.iter().any(|x| x == "bookworm")) {
            out.push_str(body);
            out.push(' ');
            out.push_str(BACKPORTS);
            out.push_str(&line[body.len()..]);
            done = true;
        } else {
            out.push_str(line);
        }
    }
    if !done {
        bail!("no `Suites:` line lists `bookworm`");
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qemu_versions() {
        let debian = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n\
                      Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers\n";
        assert_eq!(parse_qemu_version(debian).unwrap(), (10, 0, 2));
        assert_eq!(
            parse_qemu_version("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u13)")
                .unwrap(),
            (7, 2, 15)
        );
        assert_eq!(
            parse_qemu_version("QEMU emulator version 9.1").unwrap(),
            (9, 1, 0)
        );
        assert!(parse_qemu_version("").is_err());
        assert!(parse_qemu_version("QEMU emulator version x").is_err());
        assert!(parse_qemu_version("QEMU emulator version 8").is_err());
    }

    const STOCK: &str = "Types: deb\n\
        # http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
        URIs: http://deb.debian.org/debian\n\
        Suites: bookworm bookworm-updates\n\
        Components: main\n\
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
        \n\
        Types: deb\n\
        URIs: http://deb.debian.org/debian-security\n\
        Suites: bookworm-security\n\
        Components: main\n";

    #[test]
    fn adds_backports_once() {
        let new = add_backports_suite(STOCK).unwrap().unwrap();
        assert_eq!(
            new,
            STOCK.replace(
                "Suites: bookworm bookworm-updates\n",
                "Suites: bookworm bookworm-updates bookworm-backports\n"
            )
        );
        assert_eq!(add_backports_suite(&new).unwrap(), None);
    }

    #[test]
    fn refuses_sources_without_bookworm() {
        assert!(add_backports_suite("Types: deb\nSuites: trixie\n").is_err());
    }

    #[test]
    fn finds_sh() {
        assert!(find_in_path("sh").is_some());
        assert!(find_in_path("definitely-not-a-binary-virq").is_none());
    }

    /// The `sed` printed for non-root users does what `add_backports_suite` does.
    #[test]
    fn printed_sed_matches_the_rust_edit() {
        let plan = install_plan(Some("bookworm")).describe(QEMU_PACKAGE);
        let sed = plan
            .lines()
            .find(|l| l.trim_start().starts_with("sed -i"))
            .unwrap()
            .split("   #")
            .next()
            .unwrap()
            .replace(DEBIAN_SOURCES, "\"$1\"");
        let file = std::env::temp_dir().join(format!("virq-sed-{}.sources", std::process::id()));
        for _ in 0..2 {
            std::fs::write(&file, STOCK).unwrap();
            for _ in 0..2 {
                let ok = Command::new("sh")
                    .args(["-c", &sed, "sh"])
                    .arg(&file)
                    .status()
                    .unwrap()
                    .success();
                assert!(ok, "{sed}");
            }
        }
        let edited = std::fs::read_to_string(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(Some(edited), add_backports_suite(STOCK).unwrap());
    }
}
