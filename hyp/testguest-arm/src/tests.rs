//! The tests, in the order they run ([`LIST`]). Each names the clause or behaviour it
//! checks; the GIC ones cite Arm IHI 0069H, PSCI ones DEN 0022 (PSCI 1.1).
use core::sync::atomic::Ordering;

use crate::guest::{
    self, gic_cpu_init, gicd_wait_rwp, send_sgi, Ctx, Msg, CMD, CMD_CPU_OFF, CMD_DONE, CMD_SPIN,
    CONTEXT, ENTRY_DAIF, ENTRY_EL, ENTRY_SCTLR, FAULTS_TAKEN, FAULT_ESR, FAULT_EXPECTED, FAULT_FAR,
    GIC_BAD_READ_ONLY, GIC_BAD_UNMAPPED, GIC_READY, ONLINE, PRIORITY, SGIS, SPINNING, SPIN_STOP,
    TIMER_COUNT, TIMER_EARLY, TIMER_LIMIT, TIMER_PERIOD, UART_CLEAR_FIRST, UART_DEACTIVATE_FIRST,
    UART_DELIVERIES, UART_MODE, UART_SERVICED, UART_STALE, VLPIS, WAKE_SGI,
};
use crate::hw::{self, sysreg};
use crate::regs::{
    cntv, esr, gicd, gicr, icc, intid, pl011, psci, PIDR2_ARCHREV_GICV3, RAM_BASE, UNMAPPED,
};

/// A test: name, function, whether it needs a second vCPU.
pub type Test = (&'static str, fn(&mut Ctx) -> Result<(), Msg>, bool);

/// Every test, in order. vCPU 1 is off until `psci_cpu_on` and serves the SGI tests
/// after it; `psci_cpu_off` stops and restarts it.
pub const LIST: &[Test] = &[
    ("dtb", test_dtb, false),
    ("gic_dist_init", test_gic_dist_init, false),
    ("gic_id_regs", test_gic_id_regs, false),
    ("gic_cpu_init", test_gic_cpu_init, false),
    ("icc_iar_spurious", test_icc_iar_spurious, false),
    ("psci_version", test_psci_version, false),
    ("psci_features", test_psci_features, false),
    (
        "psci_features_smccc_version",
        test_psci_features_smccc,
        false,
    ),
    (
        "psci_features_32bit_only",
        test_psci_features_32bit_only,
        false,
    ),
    ("psci_cpu_on_errors", test_psci_cpu_on_errors, true),
    ("psci_cpu_on", test_psci_cpu_on, true),
    ("sgi_unicast", test_sgi_unicast, true),
    ("sgi_broadcast", test_sgi_broadcast, true),
    ("sgi_self", test_sgi_self, false),
    ("sgi0r_not_group1", test_sgi0r_not_group1, true),
    ("timer", test_timer, false),
    ("timer_wfi_masked", test_timer_wfi_masked, false),
    ("psci_cpu_suspend", test_psci_cpu_suspend, false),
    (
        "timer_pending_across_exits",
        test_timer_pending_across_exits,
        false,
    ),
    ("uart_level", test_uart_level, false),
    (
        "uart_level_deactivate_first",
        test_uart_level_deactivate_first,
        false,
    ),
    ("fault_unmapped_load", test_fault_unmapped_load, false),
    ("fault_unmapped_store", test_fault_unmapped_store, false),
    ("fault_unmapped_fetch", test_fault_unmapped_fetch, false),
    ("fault_gicr_beyond_last", test_fault_gicr_beyond_last, false),
    ("gic_read_only_writes", test_gic_read_only_writes, false),
    ("gic_access_widths", test_gic_access_widths, false),
    ("cntp_raz_wi", test_cntp_raz_wi, false),
    ("smc_not_supported", test_smc_not_supported, false),
    ("vlpi_running", test_vlpi_running, true),
    ("vlpi_wfi_doorbell", test_vlpi_wfi_doorbell, true),
    ("vlpi_soak", test_vlpi_soak, true),
    ("vits_setup", crate::vits::test_setup, true),
    ("vits_inv", crate::vits::test_inv, true),
    ("vits_running", crate::vits::test_running, true),
    ("vits_doorbell", crate::vits::test_doorbell, true),
    ("vits_movi", crate::vits::test_movi, true),
    ("vits_errors", crate::vits::test_errors, true),
    ("device_config", crate::device::test_config, false),
    ("device_dma", crate::device::test_dma, false),
    ("psci_cpu_off", test_psci_cpu_off, true),
];

/// The context vCPU 1 gets from `psci_cpu_on` (all 64 bits must arrive).
const CONTEXT_1: u64 = 0x5ec0_0000_c0de_0001;
/// ... and from its restart in `psci_cpu_off`.
const CONTEXT_2: u64 = 0x5ec0_0000_c0de_0002;

fn cpu_on(target: u64, entry: u64, context: u64) -> i64 {
    hw::hvc(psci::CPU_ON | psci::SMC64, target, entry, context)
}

fn affinity_info(target: u64) -> i64 {
    hw::hvc(psci::AFFINITY_INFO | psci::SMC64, target, 0, 0)
}

fn expect(what: &str, got: i64, want: i64) -> Result<(), Msg> {
    ensure!(got == want, "{what}: {got} (want {want})");
    Ok(())
}

fn be32_cells(v: &[u8]) -> impl Iterator<Item = u32> + '_ {
    v.chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
}

/// The guest DTB hyp wrote: vCPUs with `reg` = their MPIDR affinity and PSCI as enable
/// method, PSCI over `hvc`, RAM at 0x8000_0000, the GICv3's distributor and one
/// redistributor frame pair per vCPU, the virtual timer's PPI, the PL011 and its SPI,
/// and a `/chosen/rng-seed` of 32 bytes (hyp derives one per guest from QEMU's, which
/// `virt` always writes).
fn test_dtb(c: &mut Ctx) -> Result<(), Msg> {
    let Some(f) = hw::dtb(c.dtb) else {
        return Err(Msg::new(format_args!("no DTB at {:#x}", c.dtb)));
    };
    for (i, cpu) in f.cpus().enumerate() {
        let id = cpu.ids().first();
        ensure!(id == i, "cpu {i}: reg {id:#x}");
        let m = cpu.property("enable-method").and_then(|p| p.as_str());
        ensure!(m == Some("psci"), "cpu {i}: enable-method {m:?}");
    }
    ensure!(
        sysreg::mpidr_el1::read() & 0xff_00ff_ffff == 0,
        "boot vCPU's MPIDR_EL1 {:#x}",
        sysreg::mpidr_el1::read()
    );
    let mem = f.memory().regions().next();
    ensure!(
        mem.is_some_and(|m| m.starting_address as u64 == RAM_BASE && m.size.unwrap_or(0) > 0),
        "memory {mem:?}"
    );
    let seed = f
        .find_node("/chosen")
        .and_then(|n| n.property("rng-seed"))
        .map(|p| p.value);
    ensure!(
        seed.is_some_and(|s| s.len() == 32 && s.iter().any(|&b| b != 0)),
        "/chosen/rng-seed {seed:x?}"
    );
    let psci_node = f.find_compatible(&["arm,psci-1.0", "arm,psci-0.2"]);
    let method = psci_node
        .and_then(|n| n.property("method"))
        .and_then(|p| p.as_str());
    ensure!(method == Some("hvc"), "psci method {method:?}");
    let gic = f
        .find_compatible(&["arm,gic-v3"])
        .ok_or_else(|| Msg::new(format_args!("no arm,gic-v3 node")))?;
    let mut reg = gic
        .reg()
        .ok_or_else(|| Msg::new(format_args!("GIC without reg")))?;
    let d = reg.next().map(|r| (r.starting_address as u64, r.size));
    let r = reg.next().map(|r| (r.starting_address as u64, r.size));
    ensure!(
        d == Some((gicd::BASE, Some(gicd::SIZE as usize))),
        "GICD reg {d:x?}"
    );
    let rsize = (gicr::STRIDE as usize) * c.ncpus;
    ensure!(r == Some((gicr::BASE, Some(rsize))), "GICR reg {r:x?}");
    // An ITS (`arm,gic-v3-its`, an MSI controller) only with hyp's vITS (vgicv4).
    let its = f.find_compatible(&["arm,gic-v3-its"]);
    ensure!(its.is_some() == c.gicv4, "ITS node: {}", its.is_some());
    if let Some(its) = its {
        let base = its
            .reg()
            .and_then(|mut r| r.next())
            .map(|r| r.starting_address as u64);
        ensure!(base == Some(crate::vits::GITS_BASE), "ITS reg {base:x?}");
        ensure!(
            its.property("msi-controller").is_some(),
            "ITS without msi-controller"
        );
    }
    let timer = f
        .find_compatible(&["arm,armv8-timer"])
        .and_then(|n| n.property("interrupts"))
        .ok_or_else(|| Msg::new(format_args!("no timer interrupts")))?;
    let cells: [u32; 12] = {
        let mut a = [0; 12];
        for (i, v) in be32_cells(timer.value).take(12).enumerate() {
            a[i] = v;
        }
        a
    };
    // Secure phys, non-secure phys, virtual, hyp: the virtual one is PPI 11 (INTID 27).
    ensure!(
        cells[6..9] == [1, intid::VTIMER - 16, 4],
        "timer interrupts {cells:?}"
    );
    let uart = f
        .find_compatible(&["arm,pl011"])
        .ok_or_else(|| Msg::new(format_args!("no arm,pl011 node")))?;
    let base = uart
        .reg()
        .and_then(|mut r| r.next())
        .map(|r| r.starting_address as u64);
    ensure!(base == Some(pl011::BASE), "PL011 at {base:x?}");
    let irq = uart
        .property("interrupts")
        .map(|p| {
            let mut a = [0u32; 3];
            for (i, v) in be32_cells(p.value).take(3).enumerate() {
                a[i] = v;
            }
            a
        })
        .unwrap_or_default();
    ensure!(
        irq == [0, intid::UART - intid::SPI_BASE, 4],
        "PL011 interrupts {irq:?}"
    );
    Ok(())
}

/// The distributor as Linux's `gic_dist_init` programs it: disabled (waiting for
/// `GICD_CTLR.RWP`), every SPI disabled, inactive, group 1, priority 0xa0, level,
/// routed to vCPU 0; then ARE_NS | EnableGrp1A | EnableGrp1 (0x13). §12.9.4: with
/// `DS` = 1 that is ARE | EnableGrp1 | EnableGrp0, and `GICD_CTLR` reads back 0x53
/// (DS reads as one: a single security state).
fn test_gic_dist_init(c: &mut Ctx) -> Result<(), Msg> {
    let d = gicd::BASE;
    hw::write32(d + gicd::CTLR, 0);
    ensure!(gicd_wait_rwp(c), "GICD_CTLR.RWP stuck");
    let typer = hw::read32(d + gicd::TYPER);
    let lines = (((typer & gicd::TYPER_ITLINES) + 1) * 32).min(1020);
    ensure!(lines > intid::UART, "GICD_TYPER {typer:#x}: {lines} INTIDs");
    for n in (intid::SPI_BASE..lines).step_by(32) {
        let w = u64::from(n / 32) * 4;
        hw::write32(d + gicd::ICENABLER + w, u32::MAX);
        hw::write32(d + gicd::ICACTIVER + w, u32::MAX);
        hw::write32(d + gicd::ICPENDR + w, u32::MAX);
        hw::write32(d + gicd::IGROUPR + w, u32::MAX);
        let g = hw::read32(d + gicd::IGROUPR + w);
        ensure!(g == u32::MAX, "GICD_IGROUPR{} reads {g:#x}", n / 32);
        let e = hw::read32(d + gicd::ISENABLER + w);
        ensure!(e == 0, "GICD_ISENABLER{} reads {e:#x}", n / 32);
    }
    let prio = u32::from_ne_bytes([PRIORITY; 4]);
    for n in (intid::SPI_BASE..lines).step_by(4) {
        hw::write32(d + gicd::IPRIORITYR + u64::from(n), prio);
    }
    for n in (intid::SPI_BASE..lines).step_by(16) {
        hw::write32(d + gicd::ICFGR + u64::from(n / 16) * 4, 0);
    }
    for n in intid::SPI_BASE..lines {
        hw::write64(d + gicd::IROUTER + 8 * u64::from(n), 0);
    }
    let p = hw::read32(d + gicd::IPRIORITYR + u64::from(intid::UART & !3));
    ensure!(p == prio, "GICD_IPRIORITYR{} reads {p:#x}", intid::UART / 4);
    let r = hw::read64(d + gicd::IROUTER + 8 * u64::from(intid::UART));
    ensure!(r == 0, "GICD_IROUTER{} reads {r:#x}", intid::UART);
    ensure!(guest::gicd_enable(c), "GICD_CTLR.RWP stuck");
    let ctlr = hw::read32(d + gicd::CTLR);
    let want = gicd::CTLR_ARE | gicd::CTLR_DS | gicd::CTLR_ENABLE_GRP1 | gicd::CTLR_ENABLE_GRP0;
    ensure!(ctlr == want, "GICD_CTLR reads {ctlr:#x}, want {want:#x}");
    Ok(())
}

/// Identification the spec requires: `GICD_TYPER` (no message-based SPIs, LPIs only
/// on vgicv4 where hyp gives the guest an ITS, one security state, at least 10 INTID bits, §12.9.38),
/// `PIDR2.ArchRev` = 3 on the distributor and every redistributor (§12.1.13),
/// `GICR_TYPER` (§12.10.37): the vCPU's affinity, its processor number, `Last` on the
/// last redistributor only, physical LPIs as `GICD_TYPER`; the 32-bit halves equal the 64-bit read.
/// A redistributor whose vCPU never ran is asleep (`GICR_WAKER` resets with
/// ProcessorSleep and ChildrenAsleep set, §12.10.40).
fn test_gic_id_regs(c: &mut Ctx) -> Result<(), Msg> {
    let typer = hw::read32(gicd::BASE + gicd::TYPER);
    // LPIs only with hyp's vITS (vgicv4).
    ensure!(
        (typer & gicd::TYPER_LPIS != 0) == c.gicv4,
        "GICD_TYPER {typer:#x}: LPIS"
    );
    ensure!(typer & gicd::TYPER_MBIS == 0, "GICD_TYPER {typer:#x}: MBIS");
    ensure!(
        typer & gicd::TYPER_SECURITY_EXTN == 0,
        "GICD_TYPER {typer:#x}: SecurityExtn"
    );
    let idbits = ((typer >> gicd::TYPER_IDBITS_SHIFT) & 0x1f) + 1;
    ensure!(idbits >= 10, "GICD_TYPER {typer:#x}: {idbits} INTID bits");
    let arch = (hw::read32(gicd::BASE + gicd::PIDR2) >> 4) & 0xf;
    ensure!(arch == PIDR2_ARCHREV_GICV3, "GICD_PIDR2.ArchRev {arch}");
    for i in 0..c.ncpus {
        let rd = gicr::rd(i);
        let arch = (hw::read32(rd + gicr::PIDR2) >> 4) & 0xf;
        ensure!(arch == PIDR2_ARCHREV_GICV3, "GICR{i}_PIDR2.ArchRev {arch}");
        let t = hw::read64(rd + gicr::TYPER);
        let lo = hw::read32(rd + gicr::TYPER);
        let hi = hw::read32(rd + gicr::TYPER + 4);
        ensure!(
            u64::from(lo) | (u64::from(hi) << 32) == t,
            "GICR{i}_TYPER {t:#x}, halves {hi:#x}:{lo:#x}"
        );
        ensure!(t >> 32 == i as u64, "GICR{i}_TYPER {t:#x}: affinity");
        ensure!(
            (t >> 8) & 0xffff == i as u64,
            "GICR{i}_TYPER {t:#x}: processor number"
        );
        let last = t & gicr::TYPER_LAST != 0;
        ensure!(
            last == (i + 1 == c.ncpus),
            "GICR{i}_TYPER {t:#x}: Last = {last}"
        );
        ensure!(
            (t & gicr::TYPER_PLPIS != 0) == c.gicv4,
            "GICR{i}_TYPER {t:#x}: PLPIS"
        );
    }
    if c.ncpus > 1 {
        let w = hw::read32(gicr::rd(1) + gicr::WAKER);
        let asleep = gicr::WAKER_PROCESSOR_SLEEP | gicr::WAKER_CHILDREN_ASLEEP;
        ensure!(w & asleep == asleep, "GICR1_WAKER {w:#x} before vCPU 1 ran");
    }
    Ok(())
}

/// vCPU 0's redistributor and CPU interface as Linux sets them up (see
/// `guest::gic_cpu_init`, which checks each write), plus: `GICR_ICFGR0` reads every
/// SGI as edge-triggered (§12.11.8), `ICC_CTLR_EL1.PRIbits` says at least 5 priority
/// bits (the 0xa0/0xf0 values need them), the running priority is idle (0xff).
fn test_gic_cpu_init(c: &mut Ctx) -> Result<(), Msg> {
    gic_cpu_init(c, 0)?;
    let cfg = hw::read32(gicr::sgi(0) + gicr::ICFGR0);
    ensure!(cfg == gicr::ICFGR0_ALL_EDGE, "GICR_ICFGR0 reads {cfg:#x}");
    let ctlr = sysreg::icc_ctlr_el1::read();
    let pribits = ((ctlr >> icc::CTLR_PRIBITS_SHIFT) & 7) + 1;
    ensure!(
        pribits >= 5,
        "ICC_CTLR_EL1 {ctlr:#x}: {pribits} priority bits"
    );
    let rpr = sysreg::icc_rpr_el1::read();
    ensure!(rpr == 0xff, "ICC_RPR_EL1 {rpr:#x} with nothing active");
    Ok(())
}

/// With nothing pending, `ICC_IAR1_EL1` returns the special INTID 1023 (§2.2.1) and
/// `ISR_EL1.I` is clear.
fn test_icc_iar_spurious(_c: &mut Ctx) -> Result<(), Msg> {
    hw::irq_mask();
    let isr = sysreg::isr_el1::read();
    let iar = sysreg::icc_iar1_el1::read() & icc::IAR_INTID;
    ensure!(
        iar == u64::from(intid::SPURIOUS),
        "ICC_IAR1_EL1 {iar} with nothing pending"
    );
    ensure!(isr & icc::ISR_I == 0, "ISR_EL1 {isr:#x}");
    Ok(())
}

/// PSCI_VERSION is 1.1 (DEN 0022 §5.1.1), SMCCC_VERSION 1.1 (DEN 0028 §7.2.1),
/// MIGRATE_INFO_TYPE 2 (no Trusted OS to migrate); PSCI_VERSION has no SMC64 form.
fn test_psci_version(_c: &mut Ctx) -> Result<(), Msg> {
    expect("PSCI_VERSION", hw::hvc(psci::VERSION, 0, 0, 0), 0x1_0001)?;
    expect(
        "SMCCC_VERSION",
        hw::hvc(psci::SMCCC_VERSION, 0, 0, 0),
        0x1_0001,
    )?;
    expect(
        "MIGRATE_INFO_TYPE",
        hw::hvc(psci::MIGRATE_INFO_TYPE, 0, 0, 0),
        2,
    )?;
    expect(
        "PSCI_VERSION with the SMC64 id",
        hw::hvc(psci::VERSION | psci::SMC64, 0, 0, 0),
        psci::NOT_SUPPORTED,
    )
}

/// PSCI_FEATURES (§5.1.14): SUCCESS (or, for CPU_SUSPEND, its flags) for every
/// function hyp implements, NOT_SUPPORTED for the others and for ids outside PSCI;
/// calling an unknown function is NOT_SUPPORTED too.
fn test_psci_features(_c: &mut Ctx) -> Result<(), Msg> {
    for f in [
        psci::VERSION,
        psci::CPU_SUSPEND,
        psci::CPU_SUSPEND | psci::SMC64,
        psci::CPU_OFF,
        psci::CPU_ON,
        psci::CPU_ON | psci::SMC64,
        psci::AFFINITY_INFO,
        psci::AFFINITY_INFO | psci::SMC64,
        psci::MIGRATE_INFO_TYPE,
        psci::SYSTEM_OFF,
        psci::SYSTEM_RESET,
        psci::FEATURES,
    ] {
        let r = hw::hvc(psci::FEATURES, u64::from(f), 0, 0);
        ensure!(r >= 0, "PSCI_FEATURES({f:#x}) = {r}");
    }
    for f in [
        psci::MIGRATE,
        psci::SYSTEM_SUSPEND,
        psci::SYSTEM_SUSPEND | psci::SMC64,
        0x8400_00ff,
        0xc200_0000,
        0x1234_5678,
    ] {
        expect(
            "PSCI_FEATURES of an unimplemented id",
            hw::hvc(psci::FEATURES, u64::from(f), 0, 0),
            psci::NOT_SUPPORTED,
        )?;
    }
    expect(
        "function 0x840000ff",
        hw::hvc(0x8400_00ff, 0, 0, 0),
        psci::NOT_SUPPORTED,
    )?;
    expect(
        "SiP function 0xc2000000",
        hw::hvc(0xc200_0000, 0, 0, 0),
        psci::NOT_SUPPORTED,
    )
}

/// SMCCC_VERSION is discovered through PSCI_FEATURES (DEN 0028 §7.2.1: "PSCI_FEATURES
/// ... SMCCC_VERSION"; Linux's `psci_init_smccc` asks before it calls it): hyp
/// implements it, so PSCI_FEATURES(SMCCC_VERSION) must be SUCCESS.
fn test_psci_features_smccc(_c: &mut Ctx) -> Result<(), Msg> {
    expect(
        "PSCI_FEATURES(SMCCC_VERSION)",
        hw::hvc(psci::FEATURES, u64::from(psci::SMCCC_VERSION), 0, 0),
        psci::SUCCESS,
    )
}

/// Functions without addresses or MPIDRs have only a 32-bit id (DEN 0022 §5.1, table
/// of function ids): PSCI_FEATURES of their SMC64 ids is NOT_SUPPORTED, as calling
/// them is.
fn test_psci_features_32bit_only(_c: &mut Ctx) -> Result<(), Msg> {
    for f in [
        psci::VERSION,
        psci::CPU_OFF,
        psci::MIGRATE_INFO_TYPE,
        psci::SYSTEM_OFF,
        psci::SYSTEM_RESET,
        psci::FEATURES,
    ] {
        let id = f | psci::SMC64;
        let r = hw::hvc(psci::FEATURES, u64::from(id), 0, 0);
        ensure!(
            r == psci::NOT_SUPPORTED,
            "PSCI_FEATURES({id:#x}) = {r}, but {id:#x} is no PSCI function"
        );
    }
    Ok(())
}

/// CPU_ON errors (§5.1.4): a target that is no vCPU is INVALID_PARAMETERS; an entry
/// outside RAM (below, at its end) or not 4-byte aligned INVALID_ADDRESS; the caller
/// itself ALREADY_ON. AFFINITY_INFO (§5.1.5) of no vCPU is INVALID_PARAMETERS, of
/// vCPU 1 OFF, of the caller ON. None of the refused calls started vCPU 1.
fn test_psci_cpu_on_errors(c: &mut Ctx) -> Result<(), Msg> {
    let entry = hw::secondary_entry();
    let ram_end = hw::dtb(c.dtb)
        .and_then(|f| f.memory().regions().next())
        .map(|m| m.starting_address as u64 + m.size.unwrap_or(0) as u64)
        .unwrap_or(0);
    ensure!(ram_end > RAM_BASE, "no RAM size in the DTB");
    for target in [c.ncpus as u64, 7, 0x100, 0x1_0000, 0x1_0000_0000] {
        expect(
            "CPU_ON of no vCPU",
            cpu_on(target, entry, 0),
            psci::INVALID_PARAMETERS,
        )?;
        expect(
            "AFFINITY_INFO of no vCPU",
            affinity_info(target),
            psci::INVALID_PARAMETERS,
        )?;
    }
    for bad in [0x1000, RAM_BASE - 4, ram_end, ram_end + 0x1000, entry + 2] {
        let r = cpu_on(1, bad, 0);
        ensure!(
            r == psci::INVALID_ADDRESS,
            "CPU_ON at {bad:#x}: {r} (want INVALID_ADDRESS)"
        );
    }
    expect(
        "CPU_ON of the caller",
        cpu_on(0, entry, 0),
        psci::ALREADY_ON,
    )?;
    expect(
        "AFFINITY_INFO of the caller",
        affinity_info(0),
        psci::AFF_ON,
    )?;
    expect(
        "AFFINITY_INFO (32-bit) of the caller",
        hw::hvc(psci::AFFINITY_INFO, 0, 0, 0),
        psci::AFF_ON,
    )?;
    c.delay_ms(10);
    expect(
        "AFFINITY_INFO of vCPU 1 after refused CPU_ONs",
        affinity_info(1),
        psci::AFF_OFF,
    )?;
    ensure!(
        ONLINE[1].load(Ordering::SeqCst) == 0,
        "a refused CPU_ON started vCPU 1"
    );
    Ok(())
}

/// CPU_ON of vCPU 1 (SMC64) succeeds; a second one while it starts is ALREADY_ON or
/// ON_PENDING (§5.1.4); AFFINITY_INFO becomes ON; vCPU 1 starts at the entry with the
/// entry state of §6.4 (EL1, the MMU off, D, A, I and F masked) and x0 = the 64-bit
/// context, and sets up its own redistributor and CPU interface.
fn test_psci_cpu_on(c: &mut Ctx) -> Result<(), Msg> {
    let entry = hw::secondary_entry();
    expect(
        "CPU_ON of vCPU 1",
        cpu_on(1, entry, CONTEXT_1),
        psci::SUCCESS,
    )?;
    let again = cpu_on(1, entry, 0);
    ensure!(
        again == psci::ALREADY_ON || again == psci::ON_PENDING,
        "second CPU_ON: {again} (want ALREADY_ON or ON_PENDING)"
    );
    ensure!(
        c.wait_until(1000, || ONLINE[1].load(Ordering::SeqCst) == 1),
        "vCPU 1 did not come up in 1 s"
    );
    ensure!(
        c.wait_until(1000, || affinity_info(1) == psci::AFF_ON),
        "AFFINITY_INFO of vCPU 1 never ON"
    );
    let ctx = CONTEXT[1].load(Ordering::SeqCst);
    ensure!(
        ctx == CONTEXT_1,
        "x0 at entry {ctx:#x}, want {CONTEXT_1:#x}"
    );
    let el = (ENTRY_EL[1].load(Ordering::SeqCst) >> 2) & 3;
    let daif = ENTRY_DAIF[1].load(Ordering::SeqCst);
    let sctlr = ENTRY_SCTLR[1].load(Ordering::SeqCst);
    ensure!(el == 1, "entered at EL{el}");
    ensure!(daif & 0x3c0 == 0x3c0, "DAIF at entry {daif:#x}");
    ensure!(sctlr & 1 == 0, "SCTLR_EL1 at entry {sctlr:#x}: MMU on");
    ensure!(
        GIC_READY[1].load(Ordering::SeqCst),
        "vCPU 1's GIC set-up failed"
    );
    Ok(())
}

/// N SGIs from vCPU 0 to vCPU 1 (`ICC_SGI1R_EL1`, target list), each sent after the
/// previous one was taken so none can merge: exactly N taken, none by the sender.
fn test_sgi_unicast(c: &mut Ctx) -> Result<(), Msg> {
    const N: u32 = 100;
    const ID: usize = 1;
    let base = SGIS[1][ID].load(Ordering::SeqCst);
    let own = SGIS[0][ID].load(Ordering::SeqCst);
    for i in 0..N {
        send_sgi(1, ID as u32);
        ensure!(
            c.wait_until(1000, || SGIS[1][ID].load(Ordering::SeqCst) > base + i),
            "SGI {} of {N} not taken in 1 s ({} taken)",
            i + 1,
            SGIS[1][ID].load(Ordering::SeqCst) - base
        );
    }
    c.delay_ms(10);
    let got = SGIS[1][ID].load(Ordering::SeqCst) - base;
    ensure!(got == N, "sent {N}, vCPU 1 took {got}");
    let mine = SGIS[0][ID].load(Ordering::SeqCst) - own;
    ensure!(mine == 0, "the sender took {mine}");
    Ok(())
}

/// `ICC_SGI1R_EL1.IRM` = 1 (§12.2.23): every PE but the sender, 10 times, one at a
/// time: vCPU 1 takes exactly 10, vCPU 0 (IRQs unmasked) none.
fn test_sgi_broadcast(c: &mut Ctx) -> Result<(), Msg> {
    const N: u32 = 10;
    const ID: usize = 2;
    let base = SGIS[1][ID].load(Ordering::SeqCst);
    let own = SGIS[0][ID].load(Ordering::SeqCst);
    hw::irq_unmask();
    let mut r = Ok(());
    for i in 0..N {
        sysreg::icc_sgi1r_el1::write(((ID as u64) << icc::SGI_INTID_SHIFT) | icc::SGI_IRM);
        if !c.wait_until(1000, || SGIS[1][ID].load(Ordering::SeqCst) > base + i) {
            r = Err(Msg::new(format_args!(
                "broadcast SGI {} of {N} not taken by vCPU 1",
                i + 1
            )));
            break;
        }
    }
    c.delay_ms(10);
    hw::irq_mask();
    r?;
    let got = SGIS[1][ID].load(Ordering::SeqCst) - base;
    ensure!(got == N, "sent {N}, vCPU 1 took {got}");
    let mine = SGIS[0][ID].load(Ordering::SeqCst) - own;
    ensure!(mine == 0, "the sender took {mine} of its own broadcasts");
    Ok(())
}

/// An SGI to the sender itself (target list bit 0), 10 times: exactly 10 taken by
/// vCPU 0, none by vCPU 1.
fn test_sgi_self(c: &mut Ctx) -> Result<(), Msg> {
    const N: u32 = 10;
    const ID: usize = 3;
    let base = SGIS[0][ID].load(Ordering::SeqCst);
    let other = SGIS[1][ID].load(Ordering::SeqCst);
    hw::irq_unmask();
    let mut r = Ok(());
    for i in 0..N {
        send_sgi(0, ID as u32);
        if !c.wait_until(1000, || SGIS[0][ID].load(Ordering::SeqCst) > base + i) {
            r = Err(Msg::new(format_args!("SGI {} to self not taken", i + 1)));
            break;
        }
    }
    c.delay_ms(10);
    hw::irq_mask();
    r?;
    let got = SGIS[0][ID].load(Ordering::SeqCst) - base;
    ensure!(got == N, "sent {N} to self, took {got}");
    let theirs = SGIS[1][ID].load(Ordering::SeqCst) - other;
    ensure!(theirs == 0, "vCPU 1 took {theirs}");
    Ok(())
}

/// `ICC_SGI0R_EL1` asks for group-0 SGIs; the guest's SGIs are group 1, so nothing is
/// forwarded (§12.2.22, "the SGI is forwarded only if configured as Group 0").
fn test_sgi0r_not_group1(c: &mut Ctx) -> Result<(), Msg> {
    const ID: usize = 4;
    let base = SGIS[1][ID].load(Ordering::SeqCst);
    sysreg::icc_sgi0r_el1::write(((ID as u64) << icc::SGI_INTID_SHIFT) | (1 << 1));
    c.delay_ms(20);
    let got = SGIS[1][ID].load(Ordering::SeqCst) - base;
    ensure!(
        got == 0,
        "a group-0 SGI request delivered {got} group-1 SGIs"
    );
    Ok(())
}

/// The virtual timer, 50 interrupts 1 ms apart: each taken (`ICC_IAR1_EL1` = 27),
/// re-armed through `CNTV_TVAL_EL0` and EOI'd by the handler; exactly 50, none with
/// its condition false (a stale or doubled delivery), the timer disabled after the last.
fn test_timer(c: &mut Ctx) -> Result<(), Msg> {
    const N: u32 = 50;
    TIMER_COUNT.store(0, Ordering::SeqCst);
    TIMER_EARLY.store(0, Ordering::SeqCst);
    TIMER_LIMIT.store(N, Ordering::SeqCst);
    TIMER_PERIOD.store(c.tick_ms, Ordering::SeqCst);
    sysreg::cntv_tval_el0::write(c.tick_ms);
    sysreg::cntv_ctl_el0::write(cntv::ENABLE);
    hw::irq_unmask();
    let done = c.wait_until(5000, || TIMER_COUNT.load(Ordering::SeqCst) >= N);
    c.delay_ms(10);
    hw::irq_mask();
    let ctl = sysreg::cntv_ctl_el0::read();
    sysreg::cntv_ctl_el0::write(0);
    let got = TIMER_COUNT.load(Ordering::SeqCst);
    ensure!(done, "{got} of {N} timer interrupts in 5 s");
    ensure!(got == N, "{got} timer interrupts, want {N}");
    let early = TIMER_EARLY.load(Ordering::SeqCst);
    ensure!(
        early == 0,
        "{early} timer interrupts without the timer condition"
    );
    ensure!(
        ctl & cntv::ENABLE == 0,
        "CNTV_CTL_EL0 {ctl:#x} after the last"
    );
    Ok(())
}

/// `wfi` with IRQs masked at PSTATE and the timer armed 2 ms ahead: the vCPU wakes
/// (hyp blocks it on the trapped `wfi` and must wake it for a masked interrupt too),
/// with the timer's interrupt pending (`ISR_EL1.I`, `ICC_IAR1_EL1` = 27) and its
/// deadline passed; the handler never ran.
fn test_timer_wfi_masked(c: &mut Ctx) -> Result<(), Msg> {
    hw::irq_mask();
    let taken = TIMER_COUNT.load(Ordering::SeqCst);
    sysreg::cntv_tval_el0::write(2 * c.tick_ms);
    let deadline = sysreg::cntv_cval_el0::read();
    sysreg::cntv_ctl_el0::write(cntv::ENABLE);
    let t0 = hw::now();
    while sysreg::isr_el1::read() & icc::ISR_I == 0 && hw::now() - t0 < 1000 * c.tick_ms {
        hw::wfi();
    }
    let woke = hw::now();
    let isr = sysreg::isr_el1::read();
    let iar = sysreg::icc_iar1_el1::read();
    sysreg::cntv_ctl_el0::write(0);
    if iar & icc::IAR_INTID < 1020 {
        sysreg::icc_eoir1_el1::write(iar);
    }
    ensure!(isr & icc::ISR_I != 0, "no interrupt pending 1 s after wfi");
    let id = iar & icc::IAR_INTID;
    ensure!(id == u64::from(intid::VTIMER), "ICC_IAR1_EL1 {id}");
    ensure!(woke >= deadline, "woke {} ticks early", deadline - woke);
    ensure!(
        TIMER_COUNT.load(Ordering::SeqCst) == taken,
        "the handler ran with IRQs masked"
    );
    Ok(())
}

/// CPU_SUSPEND with a standby power state (§5.1.2): the call returns SUCCESS once a
/// wake-up event came (the timer, 2 ms ahead, IRQs masked), with it pending.
fn test_psci_cpu_suspend(c: &mut Ctx) -> Result<(), Msg> {
    hw::irq_mask();
    sysreg::cntv_tval_el0::write(2 * c.tick_ms);
    let deadline = sysreg::cntv_cval_el0::read();
    sysreg::cntv_ctl_el0::write(cntv::ENABLE);
    let r = hw::hvc(psci::CPU_SUSPEND, 0, 0, 0);
    let woke = hw::now();
    let isr = sysreg::isr_el1::read();
    let iar = sysreg::icc_iar1_el1::read();
    sysreg::cntv_ctl_el0::write(0);
    if iar & icc::IAR_INTID < 1020 {
        sysreg::icc_eoir1_el1::write(iar);
    }
    expect("CPU_SUSPEND (standby)", r, psci::SUCCESS)?;
    ensure!(isr & icc::ISR_I != 0, "returned with no interrupt pending");
    let id = iar & icc::IAR_INTID;
    ensure!(id == u64::from(intid::VTIMER), "ICC_IAR1_EL1 {id}");
    ensure!(woke >= deadline, "returned {} ticks early", deadline - woke);
    Ok(())
}

/// Regression (virq-arm `take_back`, fixed in cc9070d: "a pending HW-linked level
/// interrupt taken back from its list register is kept (was lost: the CPU's timer
/// died)"): the timer's interrupt, pending in a list register while IRQs are masked,
/// survives 100 exits (hvc and GIC MMIO, each syncing the list registers back into the
/// model) and is still there to acknowledge.
fn test_timer_pending_across_exits(c: &mut Ctx) -> Result<(), Msg> {
    hw::irq_mask();
    sysreg::cntv_tval_el0::write(c.tick_ms / 10);
    sysreg::cntv_ctl_el0::write(cntv::ENABLE);
    let pending = c.wait_until(1000, || sysreg::isr_el1::read() & icc::ISR_I != 0);
    for _ in 0..100 {
        hw::hvc(psci::VERSION, 0, 0, 0);
        hw::read32(gicd::BASE + gicd::TYPER);
    }
    let isr = sysreg::isr_el1::read();
    let iar = sysreg::icc_iar1_el1::read();
    sysreg::cntv_ctl_el0::write(0);
    if iar & icc::IAR_INTID < 1020 {
        sysreg::icc_eoir1_el1::write(iar);
    }
    ensure!(pending, "the timer's interrupt never became pending");
    ensure!(
        isr & icc::ISR_I != 0,
        "the pending timer interrupt was lost across 100 exits"
    );
    let id = iar & icc::IAR_INTID;
    ensure!(id == u64::from(intid::VTIMER), "ICC_IAR1_EL1 {id}");
    Ok(())
}

/// Rounds of the PL011 test.
const UART_ROUNDS: u32 = 5;

/// One condition per round on the PL011's level interrupt (INTID 33, passed through,
/// `HW`-linked). QEMU's PL011 (hw/char/pl011.c) sets `UARTRIS.TXRIS` whenever a byte
/// is written to `UARTDR` (the byte leaves at once) and keeps it until `UARTICR.TXIC`
/// clears it; its interrupt line is `(RIS & IMSC) != 0`, recomputed on every write to
/// DR, IMSC or ICR. So: clear TXRIS, unmask TXIM (line low), write one byte (line
/// high: the condition), wait for the handler; it clears TXRIS in the order `mode`
/// says and EOIs; then 2 ms more with IRQs unmasked, where a storm would show.
fn uart_rounds(c: &Ctx, mode: u32) -> Result<(u32, u32, u32), Msg> {
    let d = gicd::BASE;
    let word = u64::from(intid::UART / 32) * 4;
    let bit = 1 << (intid::UART % 32);
    UART_MODE.store(mode, Ordering::SeqCst);
    let (d0, s0, t0) = (
        UART_DELIVERIES.load(Ordering::SeqCst),
        UART_SERVICED.load(Ordering::SeqCst),
        UART_STALE.load(Ordering::SeqCst),
    );
    // The digits the rounds write go on this line.
    guest::print(format_args!("testguest: PL011 transmit interrupts: "));
    hw::write32(d + gicd::ISENABLER + word, bit);
    let mut r = Ok(());
    for k in 0..UART_ROUNDS {
        hw::irq_mask();
        hw::write32(pl011::BASE + pl011::ICR, pl011::INT_TX);
        let imsc = hw::read32(pl011::BASE + pl011::IMSC);
        hw::write32(pl011::BASE + pl011::IMSC, imsc | pl011::INT_TX);
        let ris = hw::read32(pl011::BASE + pl011::RIS);
        if ris & pl011::INT_TX != 0 {
            r = Err(Msg::new(format_args!(
                "UARTRIS {ris:#x}: TXRIS not cleared by UARTICR"
            )));
            break;
        }
        hw::irq_unmask();
        guest::put_raw(b'1' + k as u8);
        let served = c.wait_until(1000, || UART_SERVICED.load(Ordering::SeqCst) > s0 + k);
        c.delay_ms(2);
        hw::irq_mask();
        let imsc = hw::read32(pl011::BASE + pl011::IMSC);
        hw::write32(pl011::BASE + pl011::IMSC, imsc & !pl011::INT_TX);
        if !served {
            r = Err(Msg::new(format_args!(
                "round {}: no PL011 interrupt in 1 s (UARTRIS {:#x}, UARTMIS {:#x}, ISR_EL1 {:#x})",
                k + 1,
                hw::read32(pl011::BASE + pl011::RIS),
                hw::read32(pl011::BASE + pl011::MIS),
                sysreg::isr_el1::read()
            )));
            break;
        }
    }
    hw::write32(d + gicd::ICENABLER + word, bit);
    UART_MODE.store(UART_CLEAR_FIRST, Ordering::SeqCst);
    guest::put_raw(b'\r');
    guest::put_raw(b'\n');
    r?;
    Ok((
        UART_DELIVERIES.load(Ordering::SeqCst) - d0,
        UART_SERVICED.load(Ordering::SeqCst) - s0,
        UART_STALE.load(Ordering::SeqCst) - t0,
    ))
}

/// A driver done right — clear the cause, then EOI — gets exactly one interrupt per
/// condition: no storm (a level line hyp or the GIC re-raised after the guest's
/// deactivate would show as more), none lost.
fn test_uart_level(c: &mut Ctx) -> Result<(), Msg> {
    let (deliveries, serviced, stale) = uart_rounds(c, UART_CLEAR_FIRST)?;
    ensure!(
        deliveries == UART_ROUNDS && serviced == UART_ROUNDS && stale == 0,
        "{UART_ROUNDS} conditions: {deliveries} interrupts, {serviced} serviced, {stale} without a cause"
    );
    Ok(())
}

/// A driver in the wrong order — EOI (deactivate) while its line is still high, clear
/// the cause 1 ms later — gets each condition twice: a level interrupt deactivated while
/// asserted is pending again (§4.1.1), so the `HW`-linked deactivate reached the
/// physical INTID and hyp delivered the re-raised interrupt instead of losing it; the
/// second delivery finds the cause cleared. Exactly twice: no storm either.
fn test_uart_level_deactivate_first(c: &mut Ctx) -> Result<(), Msg> {
    let (deliveries, serviced, stale) = uart_rounds(c, UART_DEACTIVATE_FIRST)?;
    ensure!(
        deliveries == 2 * UART_ROUNDS && serviced == UART_ROUNDS && stale == UART_ROUNDS,
        "{UART_ROUNDS} conditions: {deliveries} interrupts, {serviced} serviced, {stale} without a cause (want {}, {UART_ROUNDS}, {UART_ROUNDS})",
        2 * UART_ROUNDS
    );
    Ok(())
}

/// Run `access` expecting one synchronous exception; its (ESR_EL1, FAR_EL1).
fn expect_fault(what: &str, access: impl FnOnce()) -> Result<(u64, u64), Msg> {
    let before = FAULTS_TAKEN.load(Ordering::SeqCst);
    FAULT_EXPECTED.store(true, Ordering::SeqCst);
    access();
    let armed = FAULT_EXPECTED.swap(false, Ordering::SeqCst);
    ensure!(
        !armed && FAULTS_TAKEN.load(Ordering::SeqCst) == before + 1,
        "{what}: no exception"
    );
    Ok((
        FAULT_ESR.load(Ordering::SeqCst),
        FAULT_FAR.load(Ordering::SeqCst),
    ))
}

/// A data access at `addr` with nothing mapped: a synchronous external abort taken to
/// the guest's own vector (EC 0x25, DFSC 0x10), FAR = the address. Its ESR_EL1.
fn unmapped_data(what: &str, addr: u64, write: bool) -> Result<u64, Msg> {
    let (e, far) = expect_fault(what, || {
        if write {
            hw::write32(addr, 0xdead_beef);
        } else {
            let _ = hw::read32(addr);
        }
    })?;
    let ec = (e >> esr::EC_SHIFT) & 0x3f;
    ensure!(
        ec == esr::EC_DABT_SAME,
        "{what}: ESR_EL1 {e:#x}: EC {ec:#x}"
    );
    ensure!(
        e & esr::FSC == esr::FSC_SEA,
        "{what}: ESR_EL1 {e:#x}: DFSC {:#x}",
        e & esr::FSC
    );
    ensure!(far == addr, "{what}: FAR_EL1 {far:#x}");
    Ok(e)
}

/// A load from an unmapped IPA: a synchronous external abort in the guest, not the
/// end of hyp (which still answers PSCI_VERSION).
fn test_fault_unmapped_load(_c: &mut Ctx) -> Result<(), Msg> {
    let e = unmapped_data("load", UNMAPPED + 0x10, false)?;
    ensure!(e & esr::WNR == 0, "ESR_EL1 {e:#x}: WnR set for a read");
    expect(
        "PSCI_VERSION after",
        hw::hvc(psci::VERSION, 0, 0, 0),
        0x1_0001,
    )
}

/// A store to an unmapped IPA: as the load, with `ESR_EL1.WnR` = 1 (Arm ARM D24.2.43,
/// ISS of a data abort: WnR is valid for a synchronous external abort on a store).
fn test_fault_unmapped_store(_c: &mut Ctx) -> Result<(), Msg> {
    let e = unmapped_data("store", UNMAPPED + 0x20, true)?;
    ensure!(e & esr::WNR != 0, "ESR_EL1 {e:#x}: WnR clear for a write");
    Ok(())
}

/// An instruction fetch from an unmapped IPA: a synchronous external abort on the
/// fetch (EC 0x21, IFSC 0x10), FAR = the address.
fn test_fault_unmapped_fetch(_c: &mut Ctx) -> Result<(), Msg> {
    let addr = UNMAPPED + 0x40;
    let (e, far) = expect_fault("fetch", || hw::call_unmapped(addr))?;
    let ec = (e >> esr::EC_SHIFT) & 0x3f;
    ensure!(ec == esr::EC_IABT_SAME, "ESR_EL1 {e:#x}: EC {ec:#x}");
    ensure!(
        e & esr::FSC == esr::FSC_SEA,
        "ESR_EL1 {e:#x}: IFSC {:#x}",
        e & esr::FSC
    );
    ensure!(far == addr, "FAR_EL1 {far:#x}");
    Ok(())
}

/// The redistributor region holds one frame pair per vCPU (the DTB's `reg` says so);
/// beyond the last one nothing is mapped: reads and writes there abort like any
/// unmapped IPA (hyp's choice; a guest that walks the frames stops at `Last`).
fn test_fault_gicr_beyond_last(c: &mut Ctx) -> Result<(), Msg> {
    let rd = gicr::rd(c.ncpus);
    unmapped_data("GICR_TYPER beyond the last", rd + gicr::TYPER, false)?;
    unmapped_data("GICR_WAKER beyond the last", rd + gicr::WAKER, true)?;
    unmapped_data(
        "SGI frame beyond the last",
        gicr::sgi(c.ncpus) + gicr::ISENABLER0,
        false,
    )
    .map(drop)
}

/// Writes to read-only registers are ignored without a fault (§12.1.3): GICD_TYPER,
/// GICD_IIDR, GICD_PIDR2, GICR_TYPER (64-bit), GICR_ICFGR0 (SGIs stay edge), and
/// `GICD_CTLR.ARE`/`DS`, fixed at one here.
fn test_gic_read_only_writes(_c: &mut Ctx) -> Result<(), Msg> {
    let faults = FAULTS_TAKEN.load(Ordering::SeqCst);
    for (name, off) in [
        ("GICD_TYPER", gicd::TYPER),
        ("GICD_IIDR", gicd::IIDR),
        ("GICD_PIDR2", gicd::PIDR2),
    ] {
        let v = hw::read32(gicd::BASE + off);
        hw::write32(gicd::BASE + off, !v);
        GIC_BAD_READ_ONLY.fetch_add(1, Ordering::SeqCst);
        let after = hw::read32(gicd::BASE + off);
        ensure!(after == v, "{name}: {v:#x} became {after:#x}");
    }
    let t = hw::read64(gicr::rd(0) + gicr::TYPER);
    hw::write64(gicr::rd(0) + gicr::TYPER, !t);
    GIC_BAD_READ_ONLY.fetch_add(1, Ordering::SeqCst);
    let after = hw::read64(gicr::rd(0) + gicr::TYPER);
    ensure!(after == t, "GICR_TYPER: {t:#x} became {after:#x}");
    hw::write32(gicr::sgi(0) + gicr::ICFGR0, 0);
    GIC_BAD_READ_ONLY.fetch_add(1, Ordering::SeqCst);
    let cfg = hw::read32(gicr::sgi(0) + gicr::ICFGR0);
    ensure!(
        cfg == gicr::ICFGR0_ALL_EDGE,
        "GICR_ICFGR0 {cfg:#x} after writing 0"
    );
    let ctlr = hw::read32(gicd::BASE + gicd::CTLR);
    hw::write32(
        gicd::BASE + gicd::CTLR,
        ctlr & !(gicd::CTLR_ARE | gicd::CTLR_DS),
    );
    let after = hw::read32(gicd::BASE + gicd::CTLR);
    hw::write32(gicd::BASE + gicd::CTLR, ctlr);
    ensure!(after == ctlr, "GICD_CTLR: {ctlr:#x} became {after:#x}");
    ensure!(
        FAULTS_TAKEN.load(Ordering::SeqCst) == faults,
        "a write to a read-only register faulted"
    );
    Ok(())
}

/// Access widths (§12.1.3): `IPRIORITYR` is byte-accessible (one priority per byte,
/// distributor and SGI frame), `IROUTER` 64-bit or in 32-bit halves; a reserved
/// distributor offset reads as zero and ignores writes.
fn test_gic_access_widths(_c: &mut Ctx) -> Result<(), Msg> {
    let prio = gicd::BASE + gicd::IPRIORITYR + u64::from(intid::UART);
    hw::write8(prio, 0x80);
    let b = hw::read8(prio);
    let w = hw::read32(prio & !3);
    hw::write8(prio, PRIORITY);
    ensure!(b == 0x80, "byte read of GICD_IPRIORITYR: {b:#x}");
    let want = u32::from_ne_bytes([PRIORITY, 0x80, PRIORITY, PRIORITY]);
    ensure!(
        w == want,
        "word with one byte written: {w:#x}, want {want:#x}"
    );
    let sgi_prio = gicr::sgi(0) + gicr::IPRIORITYR + 5;
    hw::write8(sgi_prio, 0x90);
    let b = hw::read8(sgi_prio);
    hw::write8(sgi_prio, PRIORITY);
    ensure!(b == 0x90, "byte read of GICR_IPRIORITYR: {b:#x}");
    let router = gicd::BASE + gicd::IROUTER + 8 * u64::from(intid::UART);
    hw::write32(router, 1);
    let lo = hw::read32(router);
    let hi = hw::read32(router + 4);
    let full = hw::read64(router);
    hw::write64(router, 0);
    ensure!(
        lo == 1 && hi == 0 && full == 1,
        "GICD_IROUTER halves {hi:#x}:{lo:#x}, whole {full:#x}"
    );
    hw::write32(gicd::BASE + gicd::RESERVED, u32::MAX);
    let r = hw::read32(gicd::BASE + gicd::RESERVED);
    GIC_BAD_UNMAPPED.fetch_add(2, Ordering::SeqCst);
    ensure!(r == 0, "reserved GICD offset reads {r:#x}");
    Ok(())
}

/// The physical timer is hyp's (`CNTHCTL_EL2.EL1PCEN` = 0): its registers trap and are
/// read-as-zero, write-ignored for the guest, which uses the virtual timer.
fn test_cntp_raz_wi(_c: &mut Ctx) -> Result<(), Msg> {
    sysreg::cntp_ctl_el0::write(1);
    let v = sysreg::cntp_ctl_el0::read();
    ensure!(v == 0, "CNTP_CTL_EL0 reads {v:#x} after writing 1");
    Ok(())
}

/// `smc` (trapped, `HCR_EL2.TSC`): there is no firmware below the guest, so even a
/// PSCI call through it is NOT_SUPPORTED (SMCCC's -1), and the guest continues.
fn test_smc_not_supported(_c: &mut Ctx) -> Result<(), Msg> {
    expect(
        "smc PSCI_VERSION",
        hw::smc(psci::VERSION, 0, 0, 0),
        psci::NOT_SUPPORTED,
    )?;
    expect(
        "smc SMCCC_VERSION",
        hw::smc(psci::SMCCC_VERSION, 0, 0, 0),
        psci::NOT_SUPPORTED,
    )
}

/// hyp's GICv4 test calls (SMCCC vendor-hypervisor range, `hyp/hv/src/arm/exit.rs`).
pub(crate) const VIRQ_VLPI_INT: u32 = 0x8600_0100;
const VIRQ_VLPI_STAT: u32 = 0x8600_0101;
/// `VIRQ_VLPI_STAT` counters.
const STAT_EXITS: u64 = 0;
const STAT_WAKEUPS: u64 = 2;
const STAT_STATE: u64 = 3;
/// Doorbells and wake-ups in one word (low and high 32 bits): one read, so a doorbell
/// hyp takes meanwhile is in both counts or in neither.
const STAT_FIRES: u64 = 5;
/// Doorbell state `Resident` / `Blocking`.
const RESIDENT: i64 = 0;
const BLOCKING: i64 = 2;

pub(crate) fn vlpi_stat(vcpu: u64, which: u64) -> i64 {
    hw::hvc(VIRQ_VLPI_STAT, vcpu, which, 0)
}

/// vCPU `vcpu`'s `(doorbells, doorbell wake-ups)`, read together.
pub(crate) fn vlpi_fires(vcpu: u64) -> (i64, i64) {
    let v = vlpi_stat(vcpu, STAT_FIRES) as u64;
    ((v & 0xffff_ffff) as i64, (v >> 32) as i64)
}

/// The doorbells and wake-ups since `(d0, w0)` ([`vlpi_fires`]).
pub(crate) fn vlpi_fires_since(vcpu: u64, (d0, w0): (i64, i64)) -> (i64, i64) {
    let (d, w) = vlpi_fires(vcpu);
    (d - d0, w - w0)
}

/// Without `topology = "vgicv4"` hyp has no vPEs: its test calls are NOT_SUPPORTED.
fn vlpi_not_supported() -> Result<(), Msg> {
    expect(
        "VIRQ_VLPI_INT",
        hw::hvc(VIRQ_VLPI_INT, 1, 0, 0),
        psci::NOT_SUPPORTED,
    )?;
    expect(
        "VIRQ_VLPI_STAT",
        vlpi_stat(1, STAT_EXITS),
        psci::NOT_SUPPORTED,
    )
}

/// GICv4 direct injection to a running vCPU: vCPU 1 spins with IRQs unmasked (its vPE
/// resident), vCPU 0 has hyp send it 100 vLPIs (ITS INT on the event hyp VMAPTI'd to
/// its vINTID 8192); vCPU 1 takes each through `ICC_IAR1_EL1` with no exit at all —
/// unless hyp migrates the vCPUs (`vlpi.migrate`): then its exits are the periods'
/// ends, counted and not required to be 0.
fn test_vlpi_running(c: &mut Ctx) -> Result<(), Msg> {
    if !c.gicv4 {
        return vlpi_not_supported();
    }
    const N: u32 = 100;
    let done = CMD_DONE[1].load(Ordering::SeqCst);
    SPIN_STOP.store(false, Ordering::SeqCst);
    CMD[1].store(CMD_SPIN, Ordering::SeqCst);
    send_sgi(1, WAKE_SGI);
    ensure!(
        c.wait_until(1000, || SPINNING.load(Ordering::SeqCst)),
        "vCPU 1 did not start spinning"
    );
    let r = (|| {
        ensure!(
            c.wait_until(1000, || vlpi_stat(1, STAT_STATE) == RESIDENT),
            "vCPU 1's vPE not resident while it runs (state {})",
            vlpi_stat(1, STAT_STATE)
        );
        let base = VLPIS[1][0].load(Ordering::SeqCst);
        let e0 = vlpi_stat(1, STAT_EXITS);
        for i in 0..N {
            expect("VIRQ_VLPI_INT", hw::hvc(VIRQ_VLPI_INT, 1, 0, 0), 0)?;
            ensure!(
                c.wait_until(1000, || VLPIS[1][0].load(Ordering::SeqCst) > base + i),
                "vLPI {} of {N} not taken by running vCPU 1 in 1 s",
                i + 1
            );
        }
        let e1 = vlpi_stat(1, STAT_EXITS);
        let got = VLPIS[1][0].load(Ordering::SeqCst) - base;
        println!(
            "testguest: vlpi_running: {got} vLPIs taken by running vCPU 1, its exits meanwhile: {}",
            e1 - e0
        );
        ensure!(got == N, "sent {N}, vCPU 1 took {got}");
        ensure!(
            e1 == e0 || c.migrate,
            "vCPU 1 exited {} times for {N} vLPIs",
            e1 - e0
        );
        Ok(())
    })();
    SPIN_STOP.store(true, Ordering::SeqCst);
    ensure!(
        c.wait_until(1000, || CMD_DONE[1].load(Ordering::SeqCst) > done),
        "vCPU 1 did not stop spinning"
    );
    r
}

/// GICv4 doorbells: vCPU 1 blocks in WFI (its vPE non-resident, doorbell armed); a
/// vLPI for it rings the doorbell, hyp's `Doorbell::fire` kicks it, its load delivers
/// the vLPI. 20 rounds: each vLPI is taken, and hyp counts a doorbell wake-up for each.
fn test_vlpi_wfi_doorbell(c: &mut Ctx) -> Result<(), Msg> {
    if !c.gicv4 {
        return vlpi_not_supported();
    }
    const N: u32 = 20;
    let f0 = vlpi_fires(1);
    for i in 0..N {
        ensure!(
            c.wait_until(1000, || vlpi_stat(1, STAT_STATE) == BLOCKING),
            "round {}: vCPU 1 not blocking with its doorbell armed (state {})",
            i + 1,
            vlpi_stat(1, STAT_STATE)
        );
        let base = VLPIS[1][1].load(Ordering::SeqCst);
        expect("VIRQ_VLPI_INT", hw::hvc(VIRQ_VLPI_INT, 1, 1, 0), 0)?;
        ensure!(
            c.wait_until(1000, || VLPIS[1][1].load(Ordering::SeqCst) > base),
            "round {}: vLPI to blocked vCPU 1 not taken in 1 s (doorbells, wake-ups: {:?})",
            i + 1,
            vlpi_fires_since(1, f0)
        );
    }
    let (d, w) = vlpi_fires_since(1, f0);
    println!(
        "testguest: vlpi_wfi_doorbell: {N} vLPIs to blocked vCPU 1: {d} doorbells, {w} doorbell wake-ups"
    );
    ensure!(
        w >= i64::from(N) && d >= w,
        "{N} vLPIs to a blocked vCPU: {d} doorbells, {w} wake-ups"
    );
    Ok(())
}

/// A lost-wake-up soak of GICv4 doorbells: 2,000 vLPIs (`vlpi.soak=N`: N) to vCPU 1,
/// each sent as soon as the last was taken plus 0-63 µs, so they land while vCPU 1
/// runs, while it traps its WFI, while hyp makes its vPE non-resident and arms the
/// doorbell (`PendingLast`, `Doorbell::put`), and while it sleeps — and, with
/// `migrate_ms`, while hyp moves it and its vPE to the other CPU (VMOVP, MOVI). Each
/// must be taken within 1 s, and exactly N must be taken: a lost wake-up fails the
/// test.
fn test_vlpi_soak(c: &mut Ctx) -> Result<(), Msg> {
    if !c.gicv4 {
        return vlpi_not_supported();
    }
    let n = c.soak;
    // A sign of life for the suite's silence watchdog (and `cargo xtask soak`'s
    // progress) every this many vLPIs.
    let every = if n >= 100_000 { 10_000 } else { 500 };
    let us = (c.tick_ms / 1000).max(1);
    let w0 = vlpi_stat(1, STAT_WAKEUPS);
    let f0 = vlpi_fires(1);
    let start = VLPIS[1][3].load(Ordering::SeqCst);
    for i in 0..n {
        let base = VLPIS[1][3].load(Ordering::SeqCst);
        expect("VIRQ_VLPI_INT", hw::hvc(VIRQ_VLPI_INT, 1, 3, 0), 0)?;
        ensure!(
            c.wait_until(1000, || VLPIS[1][3].load(Ordering::SeqCst) > base),
            "lost wake-up: vLPI {} of {n} not taken by vCPU 1 in 1 s (doorbell state {})",
            i + 1,
            vlpi_stat(1, STAT_STATE)
        );
        if (i + 1) % every == 0 && i + 1 < n {
            println!(
                "testguest: vlpi_soak progress {}/{n} doorbell wake-ups {}",
                i + 1,
                vlpi_stat(1, STAT_WAKEUPS) - w0
            );
        }
        let t0 = hw::now();
        let wait = u64::from(i * 7 % 64) * us;
        while hw::now() - t0 < wait {
            core::hint::spin_loop();
        }
    }
    // Taken by the vCPU: exactly what was sent (none lost, none twice).
    c.delay_ms(10);
    let taken = VLPIS[1][3].load(Ordering::SeqCst) - start;
    ensure!(taken == n, "sent {n} vLPIs, vCPU 1 took {taken}");
    let (d, w) = vlpi_fires_since(1, f0);
    println!(
        "testguest: vlpi_soak: {n} vLPIs to vCPU 1 at varying phases, taken {taken}, lost 0, doorbells {d}, doorbell wake-ups {w}"
    );
    Ok(())
}

/// CPU_OFF (§5.1.3) from vCPU 1: it does not return, AFFINITY_INFO becomes OFF, an SGI
/// does not start it; CPU_ON starts it again from the entry with the new context, and
/// it takes SGIs again.
fn test_psci_cpu_off(c: &mut Ctx) -> Result<(), Msg> {
    let done = CMD_DONE[1].load(Ordering::SeqCst);
    let starts = ONLINE[1].load(Ordering::SeqCst);
    CMD[1].store(CMD_CPU_OFF, Ordering::SeqCst);
    send_sgi(1, WAKE_SGI);
    ensure!(
        c.wait_until(1000, || affinity_info(1) == psci::AFF_OFF),
        "AFFINITY_INFO of vCPU 1 never OFF after its CPU_OFF"
    );
    c.delay_ms(10);
    ensure!(
        CMD_DONE[1].load(Ordering::SeqCst) == done,
        "CPU_OFF returned {}",
        guest::CMD_RESULT[1].load(Ordering::SeqCst)
    );
    send_sgi(1, 1);
    c.delay_ms(10);
    expect(
        "AFFINITY_INFO after an SGI to the off vCPU",
        affinity_info(1),
        psci::AFF_OFF,
    )?;
    ensure!(
        ONLINE[1].load(Ordering::SeqCst) == starts,
        "an SGI started vCPU 1"
    );
    expect(
        "CPU_ON after CPU_OFF",
        cpu_on(1, hw::secondary_entry(), CONTEXT_2),
        psci::SUCCESS,
    )?;
    ensure!(
        c.wait_until(1000, || ONLINE[1].load(Ordering::SeqCst) == starts + 1),
        "vCPU 1 did not come up again"
    );
    let ctx = CONTEXT[1].load(Ordering::SeqCst);
    ensure!(ctx == CONTEXT_2, "x0 at the restart {ctx:#x}");
    ensure!(
        c.wait_until(1000, || affinity_info(1) == psci::AFF_ON),
        "AFFINITY_INFO never ON after the restart"
    );
    let before = SGIS[1][2].load(Ordering::SeqCst);
    send_sgi(1, 2);
    ensure!(
        c.wait_until(1000, || SGIS[1][2].load(Ordering::SeqCst) > before),
        "no SGI taken after the restart"
    );
    Ok(())
}
