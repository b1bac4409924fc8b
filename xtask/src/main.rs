//! `cargo xtask`: setup, build, run, test, bench and fuzz for virq.
//!
//! Module ownership:
//! - `setup`: host prerequisites (rustup target, QEMU >= 8) — installs as root,
//!   otherwise prints the exact commands and stops.
//! - `images`: Debian riscv64 and arm64 guest images (kernel, busybox) and the
//!   initramfs.
//! - `hyp`: builds the bare-metal hypervisor and its test guest, runs QEMU, and
//!   the QEMU test suite.
//! - `arm`: hyp's aarch64 image: build, `run --arch aarch64 --hello` (the built-in
//!   guest), the aarch64 cases of the QEMU suite (`aarch64-hello`, `aarch64-linux`).
//! - `armtest`: the QEMU suite case `aarch64-testguest`: hyp on aarch64 with the EL1
//!   test guest `hyp/testguest-arm` (build, config blob, run, output check).
//! - `checks`: fmt, clippy, host tests, loom models, and the library crates as
//!   dependencies (examples, `no_std` targets, MSRV, publish dry-run, API listing).
//! - `api`: `cargo xtask api [--bless]`, the recorded public API of the library crates.
//! - `pingpong`: the lost-wake-up detector guest program (`guest/pingpong`): build,
//!   initramfs, result parsing; `soak`: `cargo xtask soak`, it on every configuration.
//! - `util`: the workspace root and running commands (a leaf: imports no other module).
//! - `config`: guest configuration files (`configs/*.toml`): parse, `--set`, check,
//!   place in host memory (per architecture), the QEMU machine booting hyp with the
//!   config blob.
//! - `mutants`: `loom-mutants`, the checked list of protocol breaks loom must catch.
//! - `bench`: `bench --system`, instructions per interrupt path in QEMU (`-icount`) with
//!   the `guest/bench` payload on bare QEMU, under hyp and under KVM; JSON, table, SVG
//!   plots.
//! - `armbench`: the aarch64 targets of `bench --system` (`arm-bare`, `hyp-arm`): the
//!   bench mode of `hyp/testguest-arm`, its QEMU commands, hyp's aarch64 `ACCT` lines,
//!   issue 13's KVM arm64 anchors.
//! - `net`: the network test of issue 10: a Debian guest with a PCIe NIC moves bounded
//!   traffic to a host peer on 127.0.0.1 (QEMU user networking, `restrict=on`); its
//!   guest program and initramfs, the host peer, the check, the suite cases
//!   `net-bare-*`; `netbench`: `bench --net`, its figures per target (bare QEMU, and
//!   whatever runs the guest otherwise) against bare QEMU.
//! - `kvm`: the KVM target's pieces: the VMM (`tools/kvm-vmm`), Debian's `kvm.ko` and
//!   the initramfs that runs them.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod api;
mod arm;
mod armbench;
mod armiommu;
mod armnet;
mod armtest;
mod bench;
mod bootbench;
mod checks;
mod config;
mod guestcheck;
mod hyp;
mod images;
mod iommu;
mod kvm;
mod layers;
mod mutants;
mod net;
mod netbench;
mod pingpong;
mod qemu;
mod setup;
mod soak;
mod util;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "virq developer tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (rustup targets, the MSRV toolchain, QEMU 10) or print
    /// how to.
    Setup,
    /// Boot the default configuration under `hyp` in QEMU (`--arch aarch64`: Debian
    /// arm64 Linux on a vGICv3).
    Run(hyp::RunArgs),
    /// Everything: fmt, clippy, host tests, loom models, fuzz-target build, QEMU suite.
    Test(checks::TestArgs),
    /// Criterion benchmarks of virq-core and virq-riscv; `--system`: instructions per
    /// interrupt path in QEMU, bare and under hyp (target/bench/system.json, SVG plots).
    Bench(bench::BenchArgs),
    /// Run one cargo-fuzz target: `cargo xtask fuzz <target> --time N`.
    Fuzz(checks::FuzzArgs),
    /// Lost-wake-up soak: the ping-pong guest program on every configuration
    /// (default 1,000,000 laps each); fails on any lap over 100 ms.
    Soak(soak::SoakArgs),
    /// Check the public API of virq-core and virq-riscv against `crates/*/api.txt`
    /// (`--bless` rewrites it after a deliberate change).
    Api(api::ApiArgs),
    /// Break each lockless protocol of virq-core in a known way; every break must make
    /// a loom model fail.
    LoomMutants(mutants::MutantArgs),
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => {
            setup::ensure_crate_checks()?;
            setup::ensure_kvm_vmm()?;
            setup::ensure_arm()?;
            setup::ensure_all()
        }
        Cmd::Api(args) => api::run(&args),
        Cmd::Run(args) => hyp::run(&args),
        Cmd::Test(args) => checks::test(&args),
        Cmd::Bench(args) => bench::run(&args),
        Cmd::Fuzz(args) => checks::fuzz(&args),
        Cmd::Soak(args) => soak::soak(&args),
        Cmd::LoomMutants(args) => mutants::run(&args),
    }
}
