//! The QEMU suite case `aarch64-iommu-edu` (issue 14's MSI-source groundwork; docs/hyp.md,
//! "PCIe passthrough on aarch64"): QEMU's `edu` given to the aarch64 test guest, its DMA
//! through the SMMUv3's stage 2 on the guest's own stage-2 tables.
//!
//! The machine is `-M virt,virtualization=on,gic-version=3,iommu=smmuv3 -nic none
//! -device edu,dma_mask=0xffffffffffffffff,addr=0x1.0` (`crate::config::Pcie` with
//! `machine.iommu = "smmuv3"`, `machine.pci = ["edu"]`); the guest is the usual test
//! guest configuration with `pci = ["00:01.0"]` and `virq.device` on its command line,
//! so its `device_config` and `device_dma` tests drive edu.
//!
//! [`check_smmu`] requires, besides every test line ([`crate::armtest::check`]): hyp's
//! SMMU came up with stage 2, edu's StreamID 0x8 was attached to guest VMID 1, the two
//! DMAs the guest made outside its RAM are exactly the SMMU's event records (stage-2
//! `F_TRANSLATION` writes of StreamID 0x8 at those IPAs, and QEMU's `-d guest_errors`
//! shows those two translation failures and no other SMMU complaint), hyp's `ACCT
//! smmu` line counts them with no overflow and no global error, and the guest ran on
//! to its clean power-off.
//!
//! `VIRQ_QEMU_CASE=aarch64-iommu-edu cargo test -p xtask --release -- --ignored
//! qemu_suite --nocapture` runs it alone (log `target/hyp/logs/aarch64-iommu-edu.log`).
use anyhow::{bail, ensure, Context, Result};
use std::time::Duration;

use crate::armtest::{build, check, command, config_for};
use crate::config::{IommuKind, PciKind, Pcie};
use crate::qemu::{run_command_watched, save_log};

/// The case's name.
pub const CASE: &str = "aarch64-iommu-edu";
/// edu's StreamID: requester ID 00:01.0 (`iommu-map` is the identity on `virt`).
const EDU_SID: u64 = 0x8;
/// The test guest's RAM end (IPA 0x8000_0000 + 64 MiB): its first refused DMA goes
/// 1 MiB past it.
const RAM_END: u64 = 0x8400_0000;
/// The two IPAs the guest's refused DMAs write (`hyp/testguest-arm/src/device.rs`).
pub const BAD_DMAS: [u64; 2] = [RAM_END + 0x10_0000, 0x1_0000_0000];

/// The machine's SMMU and PCIe function.
pub fn pcie() -> Pcie {
    Pcie {
        iommu: Some(IommuKind::Smmuv3),
        functions: vec![PciKind::Edu],
    }
}

/// Build, boot, check.
pub fn case() -> Result<String> {
    crate::setup::ensure_arm()?;
    let (hyp, guest) = build()?;
    let size = std::fs::metadata(&guest)?.len();
    let mut cfg = config_for("testguest", size, 2, "virq.device");
    cfg.guests[0].pci = vec![hyp_config::PciAddr::parse("00:01.0").context("BDF")?];
    hyp_config::validate(&cfg)
        .map_err(|e| anyhow::anyhow!("configuration: {}: {}", e.field, e.message))?;
    let blob = guest.with_file_name("testguest-arm-edu.blob");
    std::fs::write(&blob, hyp_config::encode(&cfg))
        .with_context(|| format!("writing {}", blob.display()))?;
    let mut cmd = command(&hyp, &guest, &blob);
    cmd.args(pcie().qemu_args(""));
    // QEMU's SMMU reports a bad STE or table only here.
    cmd.args(["-d", "guest_errors"]);
    let o = run_command_watched(
        cmd,
        Duration::from_secs(60),
        false,
        Some(Duration::from_secs(20)),
    )?;
    let log = save_log(CASE, &o.output)?;
    match check(&o).and_then(|summary| Ok(format!("{}; {summary}", check_smmu(&o.output)?))) {
        Ok(s) => Ok(format!("{:.1} s, {s}", o.elapsed.as_secs_f64())),
        Err(e) => bail!("{e:#} (log: {})", log.display()),
    }
}

/// A `hyp: smmu event:` line: `(name, sid, addr, write, s2)`.
fn event(l: &str) -> Option<(&str, u64, u64, bool, bool)> {
    let rest = l.trim_end().strip_prefix("hyp: smmu event: ")?;
    let name = rest.split_whitespace().next()?;
    let hex = |k: &str| {
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
    };
    Some((
        name,
        hex("sid=")?,
        hex("addr=")?,
        rest.contains(" write "),
        rest.ends_with("s2=1"),
    ))
}

/// hyp's side of the proof (see the module docs); a one-line summary.
pub fn check_smmu(out: &str) -> Result<String> {
    let up = out
        .lines()
        .find(|l| l.starts_with("hyp: smmu: SMMUv3 at "))
        .context("hyp did not bring the SMMUv3 up")?;
    ensure!(up.contains("stage 2 true"), "the SMMU has no stage 2: {up}");
    ensure!(
        out.lines()
            .any(|l| l
                .starts_with("hyp: pci 00:01.0: StreamID 0x8 on the SMMUv3's stage 2 (VMID 1,")),
        "edu (StreamID 0x8) was not attached to the guest's stage 2"
    );
    for t in ["device_config", "device_dma"] {
        ensure!(
            out.lines()
                .any(|l| l.trim_end() == format!("TEST {t} ... PASS")),
            "the test guest's {t} did not pass"
        );
    }
    // QEMU's own view (`-d guest_errors`): a translation failure per refused DMA and no
    // other SMMU complaint (a bad STE, a table it cannot read, a command it refuses).
    let mut qemu_failed = Vec::new();
    for l in out.lines().map(str::trim_end) {
        if l.starts_with("hyp: ") || l.starts_with("TEST ") || l.starts_with("testguest") {
            continue;
        }
        if let Some(iova) = l
            .strip_prefix("smmuv3-iommu-memory-region-8-1 translation failed for iova=")
            .and_then(|r| r.strip_suffix(" (SMMU_EVT_F_TRANSLATION)"))
        {
            qemu_failed.push(u64::from_str_radix(iova.trim_start_matches("0x"), 16)?);
        } else if ["SMMU", "smmu", "STE"].iter().any(|w| l.contains(w)) {
            bail!("QEMU reports an SMMU guest error: {l:?}");
        }
    }
    qemu_failed.sort_unstable();
    ensure!(
        qemu_failed == BAD_DMAS,
        "QEMU's SMMU failed translations at {qemu_failed:x?}, want {BAD_DMAS:x?}"
    );
    let mut got: Vec<u64> = Vec::new();
    for l in out.lines().filter(|l| l.starts_with("hyp: smmu event: ")) {
        let (name, sid, addr, write, s2) = event(l).with_context(|| format!("malformed: {l}"))?;
        ensure!(
            name == "F_TRANSLATION" && sid == EDU_SID && write && s2,
            "unexpected SMMU event: {l}"
        );
        got.push(addr);
    }
    got.sort_unstable();
    ensure!(
        got == BAD_DMAS,
        "SMMU events at {got:#x?}, want exactly one at each of {BAD_DMAS:#x?}"
    );
    let acct = out
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("hyp: ACCT smmu "))
        .context("no ACCT smmu line")?;
    for want in [
        "events=2",
        "translation_faults=2",
        "event_overflows=0",
        "gerrors=0",
    ] {
        ensure!(
            acct.split_whitespace().any(|w| w == want),
            "ACCT smmu {acct}: want {want}"
        );
    }
    ensure!(
        out.lines()
            .any(|l| l.starts_with("hyp: ACCT guest=testguest pci=00:01.0 device_id=0x8 ")),
        "no ACCT line for the guest's function"
    );
    Ok(format!(
        "edu DMA through the SMMUv3's stage 2, 2 refused DMAs as 2 stage-2 F_TRANSLATION events at {:#x} and {:#x}; ACCT smmu {acct}",
        BAD_DMAS[0],
        BAD_DMAS[1]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hyp lines of a passing run (QEMU 10.0.2), cut.
    const GOOD: &str = "\
hyp: smmu: SMMUv3 at 0x9050000, IDR0 0xd44101b IDR1 0x2730010 IDR2 0x0 IDR3 0x1414 IDR4 0x0 IDR5 0x74 (stage 1 true, stage 2 true, 16 StreamID bits, OAS 44 bits), linear stream table of 256 STEs, 256 commands, 128 events, irqs []
hyp: pci 00:01.0: StreamID 0x8 on the SMMUv3's stage 2 (VMID 1, S2TTB 0x0); bar0 0x10000000+0x100000 mapped at the same IPA; guest ECAM Some((0x4010000000, 0x100000))
TEST device_config ... PASS
TEST device_dma ... PASS
smmuv3-iommu-memory-region-8-1 translation failed for iova=0x84100000 (SMMU_EVT_F_TRANSLATION)
hyp: smmu event: F_TRANSLATION (0x10) sid=0x8 addr=0x84100000 write s2=1
smmuv3-iommu-memory-region-8-1 translation failed for iova=0x100000000 (SMMU_EVT_F_TRANSLATION)
hyp: smmu event: F_TRANSLATION (0x10) sid=0x8 addr=0x100000000 write s2=1
hyp: ACCT guest=testguest pci=00:01.0 device_id=0x8 dropped_config_writes=0
hyp: ACCT smmu commands=6 syncs=2 events=2 translation_faults=2 event_overflows=0 gerrors=0
";

    #[test]
    fn a_good_run_passes() {
        check_smmu(GOOD).unwrap();
    }

    #[test]
    fn a_missing_or_extra_event_fails() {
        let missing = GOOD.replace(
            "hyp: smmu event: F_TRANSLATION (0x10) sid=0x8 addr=0x100000000 write s2=1\n",
            "",
        );
        assert!(check_smmu(&missing).is_err());
        let extra = GOOD.replace(
            "hyp: ACCT guest",
            "hyp: smmu event: F_TRANSLATION (0x10) sid=0x8 addr=0x80001000 write s2=1\nhyp: ACCT guest",
        );
        assert!(check_smmu(&extra).is_err());
    }

    #[test]
    fn a_qemu_smmu_complaint_fails() {
        let bad = GOOD.replace("TEST device_dma", "SMMUv3 bad STE S2TG: 3\nTEST device_dma");
        let e = check_smmu(&bad).unwrap_err().to_string();
        assert!(e.contains("SMMU guest error"), "{e}");
    }

    #[test]
    fn a_bad_ste_fails() {
        let bad = GOOD.replace(
            "F_TRANSLATION (0x10) sid=0x8 addr=0x84100000",
            "C_BAD_STE (0x4) sid=0x8 addr=0x0",
        );
        assert!(check_smmu(&bad).is_err());
    }
}
