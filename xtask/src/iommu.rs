//! The QEMU suite's IOMMU cases (docs/hyp.md, "PCIe and the RISC-V IOMMU"): hyp on an
//! AIA machine with a RISC-V IOMMU — the platform one (`-M virt,iommu-sys=on`) or the
//! PCI function (`-device riscv-iommu-pci`) — and QEMU's `edu` test device, booted with
//! `iommu_test=edu` so hyp runs its DMA proof against guest 0 (the test guest) before
//! the guest starts. The check reads hyp's console: enumeration found edu behind the
//! IOMMU, the queues came on, the first IOFENCE.C completed, the DMA through the
//! second stage landed, the DMA to the first page past guest RAM gave exactly one fault
//! record (cause 23, write guest-page fault, at that address), the DMA after the
//! context was taken away gave exactly one (cause 258, DDT entry not valid) and did not
//! land; then the test guest ran its tests as usual and the machine powered off.
use anyhow::{ensure, Context, Result};
use std::time::Duration;

use crate::qemu::{run_command_watched, save_log, Images, DEFAULT_TIMEOUT_S};

/// edu with every DMA address bit (its default `dma_mask` is 28 bits: guest RAM at GPA
/// 0x8000_0000 would be clamped).
const EDU: &str = "edu,dma_mask=0xffffffffffffffff";

/// The cases: name and the QEMU arguments added to the test configuration's machine.
pub const CASES: &[(&str, &[&str])] = &[
    ("iommu-sys-edu", &["-M", "iommu-sys=on", "-device", EDU]),
    (
        "iommu-pci-edu",
        &["-device", "riscv-iommu-pci", "-device", EDU],
    ),
    // edu given to the test guest (its `device_*` tests), from the configuration.
    (GUEST_CASE, &[]),
];

/// The case where the test guest drives edu itself ("Passing a PCIe function to a
/// guest"): its configuration space through hyp's filter, DMA through its G-stage,
/// two DMAs and one MSI to addresses that are not its own, refused by the IOMMU.
const GUEST_CASE: &str = "iommu-guest-edu";

/// The cases `VIRQ_QEMU_CASE` = `only` selects (all without it).
pub fn selection(only: Option<&str>) -> Vec<&'static str> {
    crate::qemu::select_cases(CASES.iter().map(|c| c.0), only)
}

/// Run the selected cases with the suite's images, a line each: `(passed, failed)`.
pub fn run_cases(
    names: &[&str],
    img: &Images,
    images: &crate::config::NamedImages,
) -> (usize, usize) {
    crate::qemu::run_named_cases(names, |name| run_case(name, img, images))
}

fn run_case(name: &str, img: &Images, images: &crate::config::NamedImages) -> Result<String> {
    if name == GUEST_CASE {
        return run_guest_case(img, images);
    }
    let extra = CASES
        .iter()
        .find(|c| c.0 == name)
        .context("no such IOMMU case")?
        .1;
    let cfg = crate::config::suite(name, "test", &["machine.interrupts=aia"], images)?;
    let guest = cfg.config.guests.first().context("no guest")?;
    let unmapped = hyp_config::GUEST_RAM_BASE + guest.ram_size();
    let timeout = Duration::from_secs(DEFAULT_TIMEOUT_S);
    let machine = cfg.machine(timeout, &["iommu_test=edu".into()])?;
    let mut cmd = machine.command(img);
    cmd.args(extra);
    let o = run_command_watched(cmd, timeout, false, None)?;
    let log = save_log(name, &o.output)?;
    ensure!(!o.timed_out, "timed out (log {})", log.display());
    check(&o.output, o.status, unmapped)
        .map(|s| format!("{s}, {:.1} s", o.elapsed.as_secs_f64()))
        .with_context(|| format!("log {}", log.display()))
}

fn run_guest_case(img: &Images, images: &crate::config::NamedImages) -> Result<String> {
    let cfg = crate::config::suite(
        GUEST_CASE,
        "test",
        &[
            "machine.interrupts=aia",
            "machine.iommu=sys",
            "machine.pci=[\"edu\"]",
            "guest.0.topology=aia",
            "guest.0.pci=[\"00:01.0\"]",
            "guest.0.cmdline=\"virq.device\"",
        ],
        images,
    )?;
    let guest = cfg.config.guests.first().context("no guest")?;
    let ram_end = hyp_config::GUEST_RAM_BASE + guest.ram_size();
    let timeout = Duration::from_secs(DEFAULT_TIMEOUT_S);
    let machine = cfg.machine(timeout, &[])?;
    let o = run_command_watched(machine.command(img), timeout, false, None)?;
    let log = save_log(GUEST_CASE, &o.output)?;
    ensure!(!o.timed_out, "timed out (log {})", log.display());
    check_guest(&o.output, o.status, ram_end)
        .map(|s| format!("{s}, {:.1} s", o.elapsed.as_secs_f64()))
        .with_context(|| format!("log {}", log.display()))
}

/// The check of the guest case: the test guest's `device_*` tests passed (with the
/// rest), and hyp's IOMMU recorded exactly the three refusals the guest caused — its
/// DMAs 1 MiB past its RAM (`ram_end`) and to GPA 0x1_0000_0000, and its MSI to GPA
/// 0x2800_8000 — each a write guest-page fault (cause 23) of edu's device ID.
pub fn check_guest(out: &str, status: Option<i32>, ram_end: u64) -> Result<String> {
    for bad in ["hyp: PANIC", "hyp: FATAL", "configuration error"] {
        ensure!(!out.contains(bad), "hyp printed \"{bad}\"");
    }
    ensure!(
        out.lines().any(|l| l.starts_with("hyp: guest 0 ")
            && l.contains("pci 00:01.0")
            && l.contains("MSIs through the MSI page table")),
        "edu was not attached to the guest with an MSI page table"
    );
    for t in ["device_config", "device_dma", "device_msi"] {
        ensure!(
            out.lines()
                .any(|l| l.trim_end() == format!("TEST {t} ... PASS")),
            "the test guest's {t} did not pass"
        );
    }
    let mut faults: Vec<u64> = out
        .lines()
        .filter(|l| l.starts_with("hyp: iommu fault: "))
        .map(|l| {
            ensure!(
                l.contains("cause=23 ") && l.contains(" did=0x8 "),
                "unexpected fault: {l}"
            );
            let v = l
                .split("iotval=")
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
                .context("no iotval")?;
            Ok(v)
        })
        .collect::<Result<_>>()?;
    faults.sort_unstable();
    let mut want = vec![ram_end + 0x10_0000, 0x1_0000_0000, 0x2800_8000];
    want.sort_unstable();
    ensure!(
        faults == want,
        "IOMMU faults at {faults:#x?}, expected {want:#x?}"
    );
    // Reported as they happened (the fault queue's interrupt), not at shutdown.
    let acct = out
        .lines()
        .find(|l| l.starts_with("ACCT iommu "))
        .context("no ACCT iommu line")?;
    let interrupts = acct
        .split_whitespace()
        .find_map(|w| w.strip_prefix("fault_interrupts="))
        .and_then(|v| v.parse::<u64>().ok())
        .context("ACCT iommu fault_interrupts=")?;
    ensure!(
        interrupts > 0,
        "the faults were not signalled by the IOMMU's interrupt: {acct}"
    );
    let summary = testguest_passed(out, status)?;
    Ok(format!(
        "edu in the guest: config filtered, DMA through its G-stage, its MSI in its file, 3 refusals as faults; {}",
        summary.trim_start_matches("testguest: ")
    ))
}

/// The check of one run's console; `unmapped` is the guest-physical address of the
/// first page past guest 0's RAM.
pub fn check(out: &str, status: Option<i32>, unmapped: u64) -> Result<String> {
    for bad in [
        "hyp: PANIC",
        "hyp: FATAL",
        "dma-test: FAILED",
        "iommu: not used",
    ] {
        ensure!(!out.contains(bad), "hyp printed {bad:?}");
    }
    let edu = out
        .lines()
        .find(|l| l.starts_with("hyp: pci ") && l.contains(" 1234:11e8 "))
        .context("enumeration did not find edu (1234:11e8)")?;
    ensure!(
        edu.contains(" iommu-did ") && edu.contains(" bar0 mem32 0x0+0x100000"),
        "edu's line lacks its device ID or its 1 MiB BAR 0: {edu}"
    );
    for (want, what) in [
        (
            "hyp: iommu: queues on: ",
            "the command and fault queues came on",
        ),
        ("every device off", "the device directory is in place"),
        (
            "IOFENCE.C completed (seq 1)",
            "the first IOFENCE.C completed",
        ),
        (
            "(= its hgatp), IODIR.INVAL_DDT + IOTINVAL.GVMA + IOFENCE.C completed",
            "edu was attached with the guest's G-stage",
        ),
        (
            "64 bytes match, 0 faults",
            "the DMA through the second stage landed",
        ),
        ("hyp: dma-test: passed", "hyp's proof passed"),
    ] {
        ensure!(out.contains(want), "missing {want:?} ({what})");
    }
    let faults: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("hyp: iommu fault: "))
        .collect();
    let gpf: Vec<&&str> = faults.iter().filter(|l| l.contains("cause=23 ")).collect();
    ensure!(
        gpf.len() == 1 && gpf[0].contains(&format!(" iotval={unmapped:#x} ")),
        "the DMA to unmapped GPA {unmapped:#x} must give exactly one write guest-page fault (cause 23) at that address: {gpf:?}"
    );
    let ddt: Vec<&&str> = faults.iter().filter(|l| l.contains("cause=258 ")).collect();
    ensure!(
        ddt.len() == 1,
        "the DMA after detach must give exactly one DDT-entry-not-valid fault (cause 258): {ddt:?}"
    );
    ensure!(
        faults.len() == 2,
        "2 fault records expected in all, got {}: {faults:?}",
        faults.len()
    );
    let msi = out
        .lines()
        .find(|l| l.starts_with("hyp: dma-test: MSI page table "))
        .context("no MSI page-table step")?;
    ensure!(
        msi.contains("file 2 eip0 0x20, file 3") && msi.contains("eip0 0x0, 0 faults"),
        "edu's MSI did not land (only) in the file its MSI page-table entry names: {msi}"
    );
    let acct = out
        .lines()
        .find(|l| l.starts_with("ACCT iommu "))
        .context("no ACCT iommu line")?;
    ensure!(
        acct.contains(" faults=2 fault_overflows=0 queue_memory_faults=0"),
        "hyp's IOMMU counters: {acct}"
    );
    let summary = testguest_passed(out, status)?;
    Ok(format!(
        "edu DMA through the IOMMU's second stage, 2 faults as expected, its MSI through the MSI page table; {}",
        summary.trim_start_matches("testguest: ")
    ))
}

/// The test guest's summary line, if it finished with 0 failures and QEMU exited 0.
fn testguest_passed(out: &str, status: Option<i32>) -> Result<&str> {
    let summary = out
        .lines()
        .find(|l| l.starts_with("testguest: ") && l.contains(" passed, "))
        .context("the test guest did not finish")?;
    ensure!(summary.ends_with(" 0 failed"), "{summary}");
    ensure!(status == Some(0), "QEMU exit status {status:?}");
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The console of a passing run (QEMU 10.0.2, `iommu-sys-edu`), cut to the lines
    /// the check reads.
    const GOOD: &str = "\
hyp: pci 00:01.0 1234:11e8 class 00ff00 (unclassified) rev 0x10 type 0 iommu-did 0x8 bar0 mem32 0x0+0x100000 caps msi@0x40 msi(vectors 1, 64-bit true)
hyp: iommu: queues on: command queue 256 entries at 0x80459000 (cqcsr 0x10001), fault queue 128 entries at 0x8045a000 (fqcsr 0x10001)
hyp: iommu: device directory TwoLevel (64-byte extended contexts) at 0x80458000, ddtp 0x20116003: every device off
hyp: iommu: IODIR.INVAL_DDT + IOTINVAL.GVMA (all), IOFENCE.C completed (seq 1)
hyp: dma-test: device ID 0x8 attached to guest 0 \"testguest\": iohgatp 0x8000100000080440 (= its hgatp), IODIR.INVAL_DDT + IOTINVAL.GVMA + IOFENCE.C completed
hyp: dma-test: DMA through the second stage landed: GPA 0x81000000 -> edu -> GPA 0x81001000 (host 0x91001000), 64 bytes match, 0 faults
hyp: iommu fault: cause=23 (write/AMO guest-page fault) ttype=3 (untranslated write/AMO) did=0x8 iotval=0x82000000 iotval2=0x0 pid=0x0
hyp: iommu fault: cause=258 (DDT entry not valid) ttype=2 (untranslated read) did=0x8 iotval=0x0 iotval2=0x0 pid=0x0
hyp: dma-test: MSI page table 0x80462000 (mask 0x1, pattern 0x28000), entry 1 -> file 2 at 0x28002000: edu wrote 5 to GPA 0x28001000: file 2 eip0 0x20, file 3 (0x28003000) eip0 0x0, 0 faults (before: (0, 0))
hyp: dma-test: passed
testguest: 24 passed, 0 failed
ACCT iommu commands=9 fences=3 faults=2 fault_overflows=0 queue_memory_faults=0
";

    /// The console of a passing `iommu-guest-edu` run (QEMU 10.0.2), cut.
    const GOOD_GUEST: &str = "\
hyp: guest 0 \"testguest\": pci 00:01.0 (device ID 0x8) attached, iohgatp 0x8000100000080448, MSIs through the MSI page table at 0x80465000, bars [(0, 40000000, 100000)]
TEST device_config ... PASS
TEST device_dma ... PASS
TEST device_msi ... PASS
testguest: 3 passed, 0 failed
hyp: iommu fault: cause=23 (write/AMO guest-page fault) ttype=3 (untranslated write/AMO) did=0x8 iotval=0x82100000 iotval2=0x0 pid=0x0
hyp: iommu fault: cause=23 (write/AMO guest-page fault) ttype=3 (untranslated write/AMO) did=0x8 iotval=0x100000000 iotval2=0x0 pid=0x0
hyp: iommu fault: cause=23 (write/AMO guest-page fault) ttype=3 (untranslated write/AMO) did=0x8 iotval=0x28008000 iotval2=0x0 pid=0x0
ACCT iommu commands=10 fences=3 faults=3 fault_overflows=0 queue_memory_faults=0 gstage_invalidations=0 msi_pte_updates=3 fault_interrupts=3
";

    #[test]
    fn the_guest_case_wants_its_tests_and_exactly_its_three_refusals() {
        check_guest(GOOD_GUEST, Some(0), 0x8200_0000).unwrap();
        let missing = GOOD_GUEST.replace("iotval=0x28008000", "iotval=0x0");
        assert!(check_guest(&missing, Some(0), 0x8200_0000).is_err());
        let extra = format!("{GOOD_GUEST}hyp: iommu fault: cause=23 (x) ttype=3 (x) did=0x8 iotval=0x80000000 iotval2=0x0 pid=0x0\n");
        assert!(check_guest(&extra, Some(0), 0x8200_0000).is_err());
        let failed = GOOD_GUEST.replace("device_msi ... PASS", "device_msi ... FAIL (x)");
        assert!(check_guest(&failed, Some(0), 0x8200_0000).is_err());
        assert!(check_guest(GOOD_GUEST, Some(1), 0x8200_0000).is_err());
        let polled = GOOD_GUEST.replace("fault_interrupts=3", "fault_interrupts=0");
        assert!(check_guest(&polled, Some(0), 0x8200_0000).is_err());
    }

    #[test]
    fn an_msi_in_another_file_fails() {
        let bad = GOOD.replace(
            "file 2 eip0 0x20, file 3 (0x28003000) eip0 0x0",
            "file 2 eip0 0x0, file 3 (0x28003000) eip0 0x20",
        );
        assert!(check(&bad, Some(0), 0x8200_0000).is_err());
        let none = GOOD.replace(
            "hyp: dma-test: MSI page table",
            "hyp: dma-test: something else",
        );
        assert!(check(&none, Some(0), 0x8200_0000).is_err());
    }

    #[test]
    fn a_passing_run_passes() {
        let s = check(GOOD, Some(0), 0x8200_0000).unwrap();
        assert!(s.contains("24 passed, 0 failed"), "{s}");
    }

    #[test]
    fn a_fault_per_access_or_at_the_wrong_address_fails() {
        let second = GOOD.replace(
            "hyp: iommu fault: cause=23 (write/AMO guest-page fault) ttype=3 (untranslated write/AMO) did=0x8 iotval=0x82000000 iotval2=0x0 pid=0x0\n",
            "hyp: iommu fault: cause=23 (write/AMO guest-page fault) ttype=3 (untranslated write/AMO) did=0x8 iotval=0x82000000 iotval2=0x0 pid=0x0\n\
             hyp: iommu fault: cause=23 (write/AMO guest-page fault) ttype=3 (untranslated write/AMO) did=0x8 iotval=0x82000004 iotval2=0x0 pid=0x0\n",
        );
        assert!(check(&second, Some(0), 0x8200_0000).is_err());
        assert!(check(GOOD, Some(0), 0x8400_0000).is_err());
    }

    #[test]
    fn a_stale_context_or_a_failed_proof_fails() {
        // Without IODIR.INVAL_DDT the write after detach lands and no 258 is recorded.
        let stale: String = GOOD
            .lines()
            .filter(|l| !l.contains("cause=258"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .replace(
                "hyp: dma-test: passed",
                "hyp: dma-test: FAILED: DMA after detach landed",
            );
        let e = check(&stale, Some(0), 0x8200_0000).unwrap_err();
        assert!(format!("{e}").contains("FAILED"), "{e}");
        assert!(check(&GOOD.replace("(seq 1)", "(seq 9)"), Some(0), 0x8200_0000).is_err());
        assert!(check(GOOD, Some(1), 0x8200_0000).is_err());
        assert!(check(&GOOD.replace("faults=2", "faults=3"), Some(0), 0x8200_0000).is_err());
    }

    #[test]
    fn selection_follows_virq_qemu_case() {
        assert_eq!(
            selection(None),
            ["iommu-sys-edu", "iommu-pci-edu", "iommu-guest-edu"]
        );
        assert_eq!(selection(Some("smp1,iommu-pci-edu")), ["iommu-pci-edu"]);
        assert!(selection(Some("smp1")).is_empty());
    }
}
