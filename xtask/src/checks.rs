//! fmt, clippy, host tests (the workspace's, the KVM VMM's and guest/net's), the library
//! crates as dependencies, loom models, benches and fuzzing.
use anyhow::{bail, Context, Result};

use crate::util::{cargo, root, run_cmd};
use std::process::Command;

/// Arguments of `cargo xtask test`.
#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip the QEMU suite (host checks only).
    #[arg(long)]
    pub host_only: bool,
    /// Only the library-crate checks: examples, `no_std` builds, MSRV, publish
    /// dry-run, API listing (run after `cargo test --workspace --release`, whose
    /// release examples they reuse).
    #[arg(long)]
    pub crates_only: bool,
}

/// Arguments of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Fuzz target name (see `fuzz/fuzz_targets/`).
    pub target: String,
    /// Seconds to run (an upper bound when `--runs` is given).
    #[arg(long, default_value_t = 60)]
    pub time: u64,
    /// Stop after this many executions (libFuzzer `-runs`).
    #[arg(long)]
    pub runs: Option<u64>,
    /// Longest input in bytes (libFuzzer `-max_len`; its default grows to 4096).
    #[arg(long)]
    pub max_len: Option<usize>,
}

/// `cargo xtask test`.
pub fn test(args: &TestArgs) -> Result<()> {
    if args.crates_only {
        return library_crates();
    }
    run_cmd(cargo().args(["fmt", "--all", "--check"]))?;
    run_cmd(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    hyp_checks()?;
    run_cmd(cargo().args(["test", "--workspace", "--release"]))?;
    // The KVM benchmark's VMM is its own workspace: its pure modules (device tree, KVM
    // stats format, SBI console, arguments) are tested on the host.
    run_cmd(
        cargo()
            .args(["test", "--manifest-path", "tools/kvm-vmm/Cargo.toml"])
            .arg("--target-dir")
            .arg(root().join("target/kvm-vmm")),
    )?;
    // So is the network test's guest program (its parsers and /proc readers).
    run_cmd(
        cargo()
            .args(["test", "--manifest-path", "guest/net/Cargo.toml"])
            .arg("--target-dir")
            .arg(root().join("target/guest-net-host")),
    )?;
    library_crates()?;
    run_cmd(
        cargo()
            .args([
                "test",
                "-p",
                "virq-core",
                "--release",
                "--lib",
                "--",
                "loom",
            ])
            .env("RUSTFLAGS", "--cfg loom")
            .env("LOOM_MAX_PREEMPTIONS", "3")
            .env("CARGO_TARGET_DIR", root().join("target/loom")),
    )?;
    // Every known protocol break must make a loom model fail (xtask/src/mutants.rs).
    crate::mutants::run(&crate::mutants::MutantArgs {
        filter: None,
        list: false,
    })?;
    if !args.host_only {
        crate::setup::ensure_all()?;
        crate::hyp::qemu_tests()?;
        // The system benchmark's payload, small N: fails on a broken payload only.
        crate::bench::quick()?;
    }
    Ok(())
}

/// hyp (its own workspace, which `cargo fmt --all` does not reach): rustfmt, clippy
/// with `-D warnings` on the riscv64 image and its VS-mode test guest, on the aarch64
/// image, and on the aarch64 test guest (`testguest-arm`, a stub on riscv64), then the
/// aarch64 image's build.
pub fn hyp_checks() -> Result<()> {
    let n = crate::layers::check(&root().join("hyp/hv/src"))?;
    println!("layers: hyp/hv/src: {n} modules, no import circles");
    run_cmd(cargo().args([
        "fmt",
        "--manifest-path",
        "hyp/Cargo.toml",
        "--all",
        "--check",
    ]))?;
    crate::setup::ensure_rust_target()?;
    crate::setup::ensure_target(crate::setup::ARM_TARGET)?;
    for target in [crate::setup::RUST_TARGET, crate::setup::ARM_TARGET] {
        run_cmd(
            cargo()
                .args(["clippy", "--manifest-path", "hyp/Cargo.toml", "-p", "hyp"])
                .args(["-p", "testguest-arm"])
                // The VS-mode test guest is riscv64 code (its `asm!` names RISC-V
                // registers).
                .args(if target == crate::setup::RUST_TARGET {
                    &["-p", "testguest"][..]
                } else {
                    &[][..]
                })
                .args(["--target", target, "--release", "--target-dir"])
                .arg(crate::qemu::hyp_target_dir())
                .args(["--", "-D", "warnings"])
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_BUILD_RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS"),
        )?;
    }
    crate::arm::build().map(drop)
}

/// The runnable examples of the library crates: `(crate, example)`.
pub const EXAMPLES: &[(&str, &str)] = &[
    ("virq-core", "pending_kick"),
    ("virq-core", "doorbell"),
    ("virq-core", "passthrough"),
    ("virq-core", "hgei"),
    ("virq-riscv", "vplic"),
    ("virq-riscv", "aia"),
];

/// The library crates as other hypervisors use them (issue 11), after the workspace
/// tests (which also ran their doctests): every example runs (built in release by
/// `cargo test --release` already), both crates build `no_std` for every bare-metal
/// target and check with their MSRV toolchain, `cargo publish --dry-run` packages and
/// verifies them, and their public API matches `api.txt`.
pub fn library_crates() -> Result<()> {
    let started = std::time::Instant::now();
    // The examples exactly as `cargo test --workspace --release` built them (a no-op
    // after it; `cargo run -p <crate>` would resolve features for one package and
    // rebuild everything), then run from `target/release/examples/`.
    run_cmd(cargo().args(["test", "--workspace", "--release", "--no-run", "-q"]))?;
    for (krate, example) in EXAMPLES {
        eprintln!("example {krate}/{example}:");
        run_cmd(&mut Command::new(
            root().join("target/release/examples").join(example),
        ))?;
    }
    let msrv = crate::setup::ensure_crate_checks()?;
    let libs = ["-p", "virq-core", "-p", "virq-riscv", "-p", "virq-arm"];
    for target in crate::setup::NO_STD_TARGETS {
        run_cmd(cargo().args(["build", "--target", target]).args(libs))?;
    }
    // `rustup run` picks the toolchain; drop what the outer cargo may have set for the
    // current one. Its own target dir: another compiler's artifacts.
    run_cmd(
        Command::new("rustup")
            .args(["run", &msrv, "cargo", "check"])
            .args(libs)
            .args(["--target-dir", "target/msrv"])
            .env_remove("RUSTC")
            .env_remove("RUSTDOC")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO"),
    )?;
    // Packages the crates (virq-riscv and virq-arm against the packaged virq-core) and builds them
    // from the packages. `--allow-dirty`: this checks the packages, not the work tree.
    run_cmd(
        cargo()
            .args(["publish", "--dry-run", "--allow-dirty"])
            .args(libs),
    )?;
    crate::api::run(&crate::api::ApiArgs { bless: false })?;
    eprintln!(
        "library crates: examples, no_std builds, MSRV, publish dry-run and API check took {:.0?}",
        started.elapsed()
    );
    Ok(())
}

/// The fuzz targets (`fuzz/fuzz_targets/<name>.rs`).
pub const FUZZ_TARGETS: &[&str] = &[
    "vplic", "vaplic", "vimsic", "insn", "sbi", "vgicd", "vgicr", "vits",
];

/// Coverage instrumentation for libFuzzer on a stable toolchain (what `cargo fuzz`
/// passes through nightly `-Z sanitizer`, spelled as plain LLVM options).
const FUZZ_RUSTFLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg",
    "fuzzing",
];

fn host_triple() -> Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("running rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV printed no host triple")
}

/// `cargo xtask fuzz <target> --time N`: build the target with libFuzzer and coverage
/// instrumentation (`--target <host>` keeps the flags away from build scripts; its own
/// target dir keeps the normal build intact), then run it for N seconds.
pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    if !FUZZ_TARGETS.contains(&args.target.as_str()) {
        bail!(
            "unknown fuzz target `{}`; targets: {}",
            args.target,
            FUZZ_TARGETS.join(", ")
        );
    }
    let host = host_triple()?;
    run_cmd(
        cargo()
            .args([
                "build",
                "-p",
                "virq-fuzz",
                "--features",
                "libfuzzer",
                "--release",
            ])
            .args([
                "--target",
                &host,
                "--target-dir",
                "target/fuzz",
                "--bin",
                &args.target,
            ])
            .env("RUSTFLAGS", FUZZ_RUSTFLAGS.join(" ")),
    )?;
    let corpus = root().join("fuzz/corpus").join(&args.target);
    let artifacts = root().join("fuzz/artifacts").join(&args.target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    std::fs::create_dir_all(&artifacts)
        .with_context(|| format!("creating {}", artifacts.display()))?;
    let bin = root()
        .join("target/fuzz")
        .join(&host)
        .join("release")
        .join(&args.target);
    let mut cmd = Command::new(bin);
    cmd.arg(&corpus)
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(format!("-max_total_time={}", args.time))
        .arg("-rss_limit_mb=2048")
        .arg("-print_final_stats=1");
    if let Some(runs) = args.runs {
        cmd.arg(format!("-runs={runs}"));
    }
    if let Some(len) = args.max_len {
        cmd.arg(format!("-max_len={len}"));
    }
    run_cmd(&mut cmd)
}
