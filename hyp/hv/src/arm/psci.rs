//! PSCI 1.1 (Arm DEN 0022) and the SMCCC version calls (DEN 0028) for guests, through
//! `hvc` (the guest DTB's `/psci` says `method = "hvc"`): a function id in w0,
//! arguments in x1-x3 (32-bit calls use their low halves), the result in x0.
//!
//! | function | here |
//! |---|---|
//! | `PSCI_VERSION` | 1.1 |
//! | `CPU_SUSPEND` | standby: the vCPU blocks as in WFI, then returns SUCCESS (a power-down request is served as standby, which DEN 0022 §5.4 allows) |
//! | `CPU_OFF` | the vCPU stops; its CPU idles |
//! | `CPU_ON` | INVALID_PARAMETERS (no such vCPU), INVALID_ADDRESS (entry outside RAM), ALREADY_ON, ON_PENDING |
//! | `AFFINITY_INFO` | level 0 only (else INVALID_PARAMETERS): ON / OFF / ON_PENDING |
//! | `MIGRATE_INFO_TYPE` | 2: no Trusted OS to migrate |
//! | `SYSTEM_OFF`, `SYSTEM_RESET` | the guest stops (every vCPU off, `CPU_ON` refused with DENIED); hyp powers the machine off when the last guest has stopped |
//! | `PSCI_FEATURES` | SUCCESS for each function above (and `SMCCC_VERSION`), for SMC64 ids only of `CPU_SUSPEND`, `CPU_ON`, `AFFINITY_INFO`; NOT_SUPPORTED otherwise |
//! | `SMCCC_VERSION` | 1.1; `SMCCC_ARCH_FEATURES`: NOT_SUPPORTED (no workarounds to offer) |
//! | anything else | NOT_SUPPORTED |
use core::sync::atomic::Ordering;

use crate::arch::Context;

use super::vm::{power, Vm};

const PSCI_VERSION: u32 = 0x8400_0000;
const CPU_SUSPEND: u32 = 0x8400_0001;
const CPU_OFF: u32 = 0x8400_0002;
const CPU_ON: u32 = 0x8400_0003;
const AFFINITY_INFO: u32 = 0x8400_0004;
const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
const SYSTEM_OFF: u32 = 0x8400_0008;
const SYSTEM_RESET: u32 = 0x8400_0009;
const PSCI_FEATURES: u32 = 0x8400_000a;
/// Bit 30 of a function id: the SMC64 calling convention.
const SMC64: u32 = 0x4000_0000;
const SMCCC_VERSION: u32 = 0x8000_0000;
const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;

const SUCCESS: i64 = 0;
const NOT_SUPPORTED: i64 = -1;
const INVALID_PARAMETERS: i64 = -2;
const ALREADY_ON: i64 = -4;
const ON_PENDING: i64 = -5;
const DENIED: i64 = -3;
const INVALID_ADDRESS: i64 = -9;

/// The functions hyp implements (32-bit ids; the SMC64 forms of the ones with
/// addresses are accepted too).
const IMPLEMENTED: &[u32] = &[
    PSCI_VERSION,
    CPU_SUSPEND,
    CPU_OFF,
    CPU_ON,
    AFFINITY_INFO,
    MIGRATE_INFO_TYPE,
    SYSTEM_OFF,
    SYSTEM_RESET,
    PSCI_FEATURES,
];

/// The implemented functions that also have an SMC64 id (DEN 0022 §5.1: those taking
/// an address or an MPIDR).
const WITH_SMC64: &[u32] = &[CPU_SUSPEND, CPU_ON, AFFINITY_INFO];

/// What the call asks of the run loop besides its result.
pub enum Effect {
    /// Resume the guest.
    None,
    /// Block like WFI, then resume (`CPU_SUSPEND`).
    Standby,
    /// The guest stops (`SYSTEM_OFF`, `SYSTEM_RESET`).
    Stop,
}

/// Handle one `hvc` from vCPU `me` on CPU `cpu` (`ELR_EL2` already points past it).
pub fn call(vm: &Vm, me: usize, cpu: usize, ctx: &mut Context) -> Effect {
    let fid = ctx.x[0] as u32;
    let wide = fid & SMC64 != 0;
    let arg = |i: usize| {
        if wide {
            ctx.x[i]
        } else {
            ctx.x[i] & 0xffff_ffff
        }
    };
    let mut effect = Effect::None;
    let r = match fid & !SMC64 {
        PSCI_VERSION if !wide => 0x0001_0001,
        SMCCC_VERSION if !wide => 0x0001_0001,
        SMCCC_ARCH_FEATURES if !wide => NOT_SUPPORTED,
        PSCI_FEATURES if !wide => {
            let f = arg(1) as u32;
            // Linux asks for SMCCC_VERSION here before it calls it (psci_init_smccc).
            let known = if f & SMC64 != 0 {
                WITH_SMC64.contains(&(f & !SMC64))
            } else {
                IMPLEMENTED.contains(&f) || f == SMCCC_VERSION
            };
            if known {
                SUCCESS
            } else {
                NOT_SUPPORTED
            }
        }
        MIGRATE_INFO_TYPE if !wide => 2,
        CPU_SUSPEND => {
            effect = Effect::Standby;
            SUCCESS
        }
        CPU_OFF if !wide => {
            vm.vcpus[me].power.store(power::OFF, Ordering::SeqCst);
            SUCCESS
        }
        CPU_ON => cpu_on(vm, cpu, arg(1), arg(2), arg(3)),
        AFFINITY_INFO => {
            if arg(2) != 0 {
                INVALID_PARAMETERS
            } else {
                match vcpu_of(vm, arg(1)) {
                    None => INVALID_PARAMETERS,
                    Some(v) => match vm.vcpus[v].power.load(Ordering::SeqCst) {
                        power::ON => 0,
                        power::OFF => 1,
                        _ => 2,
                    },
                }
            }
        }
        SYSTEM_OFF if !wide => {
            crate::println!("hyp: guest {}: PSCI SYSTEM_OFF", vm.name);
            return Effect::Stop;
        }
        SYSTEM_RESET if !wide => {
            crate::println!("hyp: guest {}: PSCI SYSTEM_RESET (hyp stops it)", vm.name);
            return Effect::Stop;
        }
        _ => NOT_SUPPORTED,
    };
    ctx.x[0] = r as u64;
    effect
}

/// The vCPU whose affinity (`MPIDR` Aff3-0) is `mpidr`.
fn vcpu_of(vm: &Vm, mpidr: u64) -> Option<usize> {
    let aff = mpidr & 0xff_00ff_ffff;
    (0..vm.vcpus.len()).find(|&v| virq_arm::gicv3::affinity_of(v) == aff)
}

fn cpu_on(vm: &Vm, cpu: usize, target: u64, entry: u64, context: u64) -> i64 {
    let Some(v) = vcpu_of(vm, target) else {
        return INVALID_PARAMETERS;
    };
    if vm.stopped.load(Ordering::SeqCst) {
        return DENIED;
    }
    if !vm.in_ram(entry, 4) || !entry.is_multiple_of(4) {
        return INVALID_ADDRESS;
    }
    let vcpu = &vm.vcpus[v];
    // Held across the transition: the target reads `start` under this lock after it
    // sees ON_PENDING, so it gets this call's values, not a racing loser's.
    let mut start = vcpu.start.lock();
    match vcpu.power.compare_exchange(
        power::OFF,
        power::ON_PENDING,
        Ordering::SeqCst,
        Ordering::SeqCst,
    ) {
        Ok(_) => {
            *start = (entry, context);
            drop(start);
            vm.kick(cpu, v);
            SUCCESS
        }
        Err(power::ON_PENDING) => ON_PENDING,
        Err(_) => ALREADY_ON,
    }
}
