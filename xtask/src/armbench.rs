//! The aarch64 targets of `cargo xtask bench --system` (issue 13, "Speed"): the bench
//! mode of `hyp/testguest-arm` (its `bench.rs`) on QEMU arm `virt`, without hyp
//! (`arm-bare`), as hyp's only guest (`hyp-arm`), and the same on GICv4.0
//! (`hyp-arm-v4`, issue 14).
//!
//! - `arm-bare`: `qemu-system-aarch64 -M virt,gic-version=3 -cpu max` — no
//!   `virtualization=on` and no `secure=on`, so the CPUs have no EL2 or EL3: QEMU loads
//!   the payload's ELF at its link address (`0x8000_0000`, inside 2 GiB of RAM from
//!   `0x4000_0000`), starts it at EL1 with x0 = 0 and the DTB at the start of RAM, and
//!   answers PSCI calls itself: the DTB's `/psci` says `method = "hvc"`, and QEMU's
//!   built-in PSCI emulation takes the `hvc` in the emulator (no guest-visible code
//!   runs, so the `hvc` figure there is a floor, not a firmware path). The GIC is the
//!   real (emulated) GICv3, one security state: every GIC access is QEMU's device.
//! - `hyp-arm`: hyp at EL2 on `-M virt,virtualization=on,gic-version=3`, the payload's
//!   flat image as the guest's kernel (`crate::armtest::config_for`: 64 MiB, the PL011
//!   passed through for the console, one vCPU per CPU), the `bench.*` words as its
//!   command line (its DTB's bootargs), loaded with QEMU's `loader` devices as the
//!   suite case `aarch64-testguest` does.
//! - `hyp-arm-v4`: the same on `-M virt,virtualization=on,gic-version=4` with the guest's
//!   `topology = "vgicv4"` (a vPE per vCPU, doorbells) and `gicv4` on its command line:
//!   the `vlpi_*` ops run there (elsewhere they report themselves skipped).
//!
//! Both under `-icount shift=0,sleep=off`: the generic timer counts at 1 GHz
//! (`CNTFRQ_EL0` = 10^9) and one instruction takes 1 ns, so a `CNTVCT_EL0` tick is one
//! instruction of the whole machine.
//!
//! hyp prints its exit counters only when it powers off (`hyp: ACCT <guest> vcpu N
//! exits: irq .. wfi .. hvc .. sysreg .. mmio .. other ..; host interrupts: kick ..
//! ...`): exits per op come from one boot per op minus a boot of the same shape
//! running none ([`acct`]), as on riscv64.
use anyhow::{ensure, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use crate::qemu::{hyp_target_dir, ARM_CPU};
use crate::setup::QEMU_ARM_BINARY;

/// The payload's ops, in the order it runs them (`OPS` in
/// `hyp/testguest-arm/src/bench.rs`).
pub const OPS: &[&str] = &[
    "nop",
    "hvc",
    "gicd_read",
    "eoi",
    "sgi_self",
    "sgi_pingpong",
    "vtimer",
    "vlpi_self",
    "vlpi_call",
    "vlpi_wake",
];

/// The ops that need hyp's vPEs (only `hyp-arm-v4` runs them).
pub fn needs_gicv4(op: &str) -> bool {
    op.starts_with("vlpi_")
}

/// The boots of each target: the ops on one CPU (one vCPU), and the ping-pongs between
/// two (two vCPUs, one per CPU). `(CPUs, ops)`.
pub const BOOTS: &[(u32, &[&str])] = &[
    (
        1,
        &[
            "nop",
            "hvc",
            "gicd_read",
            "eoi",
            "sgi_self",
            "vtimer",
            "vlpi_self",
            "vlpi_call",
        ],
    ),
    (2, &["sgi_pingpong", "vlpi_wake"]),
];

/// The guest's name in the configuration (hyp's `ACCT` lines carry it).
pub const GUEST: &str = "bench";

/// `-M` of `arm-bare`: no EL2, no EL3.
pub const BARE_MACHINE: &str = "virt,gic-version=3";
/// RAM of `arm-bare`: from `0x4000_0000`, so the payload's `0x8000_0000` is inside.
const BARE_MEMORY: &str = "2G";

/// What each op measures (table and JSON).
pub fn op_title(op: &str) -> &'static str {
    match op {
        "nop" => "empty loop (overhead in every figure)",
        "hvc" => "hvc PSCI_VERSION round trip",
        "gicd_read" => "GICD_TYPER read (the distributor hyp emulates)",
        "eoi" => "ICC_EOIR1_EL1 of the virtual timer's interrupt already taken (EOI alone timed)",
        "sgi_self" => "SGI to self: ICC_SGI1R_EL1 write, ICC_IAR1_EL1, EOI",
        "sgi_pingpong" => "2 vCPUs: SGI round trip, both sides waiting in WFI",
        "vtimer" => "virtual timer armed to fire now, ICC_IAR1_EL1, disable, EOI",
        "vlpi_self" => "vLPI to the running vCPU (vPE resident): ICC_IAR1_EL1, EOI (hyp's test call that sends it untimed)",
        "vlpi_call" => "vLPI to self with the call: hvc VIRQ_VLPI_INT (hyp's ITS INT), ICC_IAR1_EL1, EOI",
        "vlpi_wake" => "2 vCPUs: vLPI (hvc VIRQ_VLPI_INT) to the other, blocked in WFI (doorbell wake-up), SGI back; round trip",
        _ => "",
    }
}

/// Ops whose bare figure is no reference: on `arm-bare` QEMU answers the `hvc` inside
/// the emulator, so no instruction of a firmware or hypervisor path runs.
pub fn bare_is_reference(op: &str) -> bool {
    op != "hvc"
}

/// Exits each lap of `op` takes in its untimed set-up, which the op's exit figure leaves
/// out: `(class, exits per lap)`. The `eoi` lap first takes the virtual timer's
/// interrupt (under hyp one `irq` exit: the host's timer PPI) and then times the EOI
/// alone; an EOI that trapped would be a `sysreg` exit (or a further `irq` one, for a
/// maintenance interrupt), which stays in the figure.
///
/// The `vlpi_self` lap's set-up is hyp's test call that sends the vLPI: one `hvc` exit;
/// the delivery it times has none.
pub fn setup_exits(op: &str) -> Option<(&'static str, f64)> {
    match op {
        "eoi" => Some(("irq", 1.0)),
        "vlpi_self" => Some(("hvc", 1.0)),
        _ => None,
    }
}

/// KVM arm64 figures from the text of issue 13 ("Speed": Debian 6.12's KVM, VHE,
/// in-kernel vGICv3, nested in this same QEMU): `(op, instructions per op, how the
/// figure maps to the op)`. Not measured by xtask.
pub const KVM_ANCHORS: &[(&str, f64, &str)] = &[
    ("hvc", 1352.0, "HVC round trip"),
    (
        "gicd_read",
        2188.0,
        "MMIO read of the emulated GIC distributor",
    ),
    ("eoi", 21.0, "EOI (no exit)"),
    ("sgi_self", 5154.0, "IPI (SGI)"),
    (
        "sgi_pingpong",
        10308.0,
        "2 x IPI (SGI): a round trip is two SGIs (derived, not in the issue)",
    ),
];

/// The anchor of `op`, if the issue gives one.
pub fn anchor(op: &str) -> Option<(f64, &'static str)> {
    KVM_ANCHORS.iter().find(|a| a.0 == op).map(|a| (a.1, a.2))
}

/// Build artefacts: hyp's ELF, the payload's ELF (`arm-bare` boots it) and its flat
/// image (hyp's guest kernel).
pub struct Built {
    pub hyp: PathBuf,
    pub elf: PathBuf,
    pub image: PathBuf,
}

/// Build hyp and the payload for aarch64 (one cargo build, shared with the suite case
/// `aarch64-testguest`).
pub fn build() -> Result<Built> {
    crate::setup::ensure_arm()?;
    let (hyp, image) = crate::armtest::build()?;
    Ok(Built {
        hyp,
        elf: image.with_extension(""),
        image,
    })
}

/// The QEMU command of one boot: the payload with `cmdline` on `cpus` CPUs, bare
/// (`hyp` false) or as hyp's guest (its config blob written next to the image, named
/// after `log`; `gicv4`: on `gic-version=4` with `topology = "vgicv4"` and `gicv4` on
/// the command line), under `-icount`.
pub fn command(
    built: &Built,
    hyp: bool,
    gicv4: bool,
    cmdline: &str,
    cpus: u32,
    log: &str,
) -> Result<Command> {
    let mut cmd = if hyp {
        let size = std::fs::metadata(&built.image)
            .with_context(|| format!("reading {}", built.image.display()))?
            .len();
        let cmdline = if gicv4 {
            format!("{cmdline} gicv4")
        } else {
            cmdline.to_string()
        };
        let mut cfg = crate::armtest::config_for(GUEST, size, cpus, &cmdline);
        if gicv4 {
            cfg.guests[0].topology = hyp_config::Topology::Vgicv4;
        }
        hyp_config::validate(&cfg)
            .map_err(|e| anyhow::anyhow!("configuration: {}: {}", e.field, e.message))?;
        let dir = hyp_target_dir().join("bench");
        std::fs::create_dir_all(&dir)?;
        let blob = dir.join(format!("{log}.blob"));
        std::fs::write(&blob, hyp_config::encode(&cfg))
            .with_context(|| format!("writing {}", blob.display()))?;
        let cmd = crate::armtest::command_for(&built.hyp, &built.image, &blob, cpus);
        if gicv4 {
            crate::armtest::on_gicv4(&cmd)
        } else {
            cmd
        }
    } else {
        let mut cmd = Command::new(QEMU_ARM_BINARY);
        cmd.args(["-M", BARE_MACHINE, "-cpu", ARM_CPU, "-m", BARE_MEMORY])
            .args(["-smp", &cpus.to_string(), "-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(&built.elf)
            .args(["-append", cmdline]);
        cmd
    };
    cmd.args(["-icount", "shift=0,sleep=off"]);
    Ok(cmd)
}

/// hyp's counters of guest `guest`, summed over its vCPUs: `(exits by class, host
/// interrupts by kind)`, from the `hyp: ACCT <guest> vcpu N exits: <class> <n> …;
/// host interrupts: <kind> <n> …` lines.
pub fn acct(out: &str, guest: &str) -> Result<(BTreeMap<String, u64>, BTreeMap<String, u64>)> {
    let prefix = format!("hyp: ACCT {guest} vcpu ");
    let mut exits = BTreeMap::new();
    let mut irqs = BTreeMap::new();
    let mut lines = 0;
    for l in out.lines().map(str::trim_end) {
        let Some(rest) = l.strip_prefix(&prefix) else {
            continue;
        };
        // A vgicv4 guest's vPE line (`vcpu N gicv4: …`) is no exit count.
        if rest
            .split_once(' ')
            .is_some_and(|(_, r)| r.starts_with("gicv4: "))
        {
            continue;
        }
        lines += 1;
        let (_, counts) = rest
            .split_once(" exits:")
            .with_context(|| format!("garbled {l:?}"))?;
        let (e, h) = counts
            .split_once("; host interrupts:")
            .with_context(|| format!("garbled {l:?}: no host interrupts"))?;
        for (part, map) in [(e, &mut exits), (h, &mut irqs)] {
            let words: Vec<&str> = part.split_whitespace().collect();
            ensure!(words.len().is_multiple_of(2), "garbled {l:?}");
            for pair in words.chunks(2) {
                let n: u64 = pair[1]
                    .parse()
                    .with_context(|| format!("garbled {l:?}: {:?}", pair[1]))?;
                *map.entry(pair[0].to_string()).or_insert(0) += n;
            }
        }
    }
    ensure!(
        lines > 0,
        "no `{prefix}…` line (hyp prints them when it powers off)"
    );
    Ok((exits, irqs))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "\
VIRQ-BENCH done errors=0
hyp: guest bench: PSCI SYSTEM_OFF
hyp: ACCT bench vcpu 0 exits: irq 3 wfi 10 hvc 1101 sysreg 0 mmio 40 other 0; host interrupts: kick 1 maintenance 0 vtimer 3 passthrough 0 hyptimer 0 other 0
hyp: ACCT bench vcpu 1 exits: irq 0 wfi 12 hvc 0 sysreg 2 mmio 20 other 0; host interrupts: kick 12 maintenance 0 vtimer 0 passthrough 0 hyptimer 0 other 0
hyp: ACCT bench vcpu 1 gicv4: vPE 1 doorbell LPI 8193: vlpis sent 3 doorbells 2 wakeups 2 stay_runnable 0 loads 4 moves 0
hyp: bench: vGIC errors: ErrorCounters { bad_width: 0 }
hyp: power off (status 0)
";

    #[test]
    fn acct_sums_the_vcpus() {
        let (e, h) = acct(OUT, "bench").unwrap();
        assert_eq!(e["hvc"], 1101);
        assert_eq!(e["wfi"], 22);
        assert_eq!(e["mmio"], 60);
        assert_eq!(e.len(), 6);
        assert_eq!(h["kick"], 13);
        assert_eq!(h["vtimer"], 3);
        assert!(acct(OUT, "other").is_err());
        assert!(acct(&OUT.replace("hvc 1101", "hvc 11x1"), "bench").is_err());
        assert!(acct(&OUT.replace("; host interrupts:", ""), "bench").is_err());
    }

    #[test]
    fn the_bare_command_starts_the_elf_at_el1_and_hyp_gets_a_blob() {
        let built = Built {
            hyp: "hyp".into(),
            elf: "tg".into(),
            image: "tg.bin".into(),
        };
        let cmd = command(&built, false, false, "bench.n=1", 1, "x").unwrap();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("-M virt,gic-version=3 "), "{joined}");
        assert!(!joined.contains("virtualization"), "{joined}");
        assert!(joined.contains("-kernel tg -append bench.n=1"), "{joined}");
        assert!(joined.ends_with("-icount shift=0,sleep=off"), "{joined}");
    }

    #[test]
    fn ops_and_boots_agree() {
        let mut booted: Vec<&str> = BOOTS.iter().flat_map(|b| b.1.iter().copied()).collect();
        booted.sort_unstable();
        let mut all = OPS.to_vec();
        all.sort_unstable();
        assert_eq!(booted, all);
        assert!(OPS.iter().all(|op| !op_title(op).is_empty()));
        assert!(KVM_ANCHORS.iter().all(|a| OPS.contains(&a.0)));
    }
}
