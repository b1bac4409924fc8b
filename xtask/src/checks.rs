//! fmt, clippy, host tests, loom models, benches and fuzzing.
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// Arguments of `cargo xtask test`.
#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip the QEMU suite (host checks only).
    #[arg(long)]
    pub host_only: bool,
}

/// Arguments of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Fuzz target name (see `fuzz/fuzz_targets/`).
    pub target: String,
    /// Seconds to run.
    #[arg(long, default_value_t = 60)]
    pub time: u64,
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}

/// Run a command in the workspace root, failing with its name on error.
pub fn run_cmd(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    eprintln!("$ {shown}");
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// `cargo xtask test`.
pub fn test(args: &TestArgs) -> Result<()> {
    run_cmd(cargo().args(["fmt", "--all", "--check"]))?;
    run_cmd(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run_cmd(cargo().args(["test", "--workspace", "--release"]))?;
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
    if !args.host_only {
        crate::setup::ensure_all()?;
        crate::hyp::qemu_tests()?;
    }
    Ok(())
}

/// `cargo xtask bench`.
pub fn bench() -> Result<()> {
    run_cmd(cargo().args(["bench", "-p", "virq-core"]))?;
    run_cmd(cargo().args(["bench", "-p", "virq-riscv"]))
}

/// `cargo xtask fuzz`.
pub fn fuzz(args: &FuzzArgs) -> Result<()> {
    let _ = args;
    bail!("fuzzing is not wired yet")
}
