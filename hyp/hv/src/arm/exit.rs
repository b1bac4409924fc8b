//! A vCPU's exits on aarch64: decoding `ESR_EL2` and handling each class (WFI, PSCI
//! and SMCCC calls, trapped system registers — SGIs and ID registers —, the vGIC's
//! MMIO frames, a vgicv4 guest's ITS frames (`vits`), faults injected back), the kicks the vGIC model asks for, and the
//! passthrough SPI's three completion paths (`vm::Link`).
use core::sync::atomic::Ordering;

use virq_arm::gicv3::{EoiSink, Kick};
use virq_core::route::EoiAction;

use crate::arch::{self, gic, sysreg, Context};
use crate::println;

use super::ec;
use super::layout::{
    gicr_size, GICD_IPA, GICD_SIZE, GICR_IPA, ITS_IPA, ITS_SIZE, UART_BASE, UART_INTID,
};
use super::psci::{self, Effect};
use super::vm::{self, Link, Vm};

/// What the exit handler tells the loop.
pub enum Next {
    /// Enter the guest again.
    Resume,
    /// The guest asked for WFI: block unless kicked.
    Block,
    /// A host interrupt: the scheduler acknowledges it.
    Irq,
    /// The guest waits for an event (WFE, trapped on a shared CPU): run another vCPU
    /// if one is runnable.
    Yield,
    /// The guest stops (PSCI SYSTEM_OFF/RESET, or an exit hyp cannot serve); `true`
    /// on failure. The machine powers off when the last guest has stopped.
    Stop(bool),
}

/// Exit classes counted per vCPU (`Vcpu::exits`).
#[derive(Clone, Copy)]
pub enum ExitClass {
    /// A host interrupt.
    Irq = 0,
    /// WFI.
    Wfi = 1,
    /// `hvc` (PSCI, SMCCC).
    Hvc = 2,
    /// A trapped system register (SGIs).
    Sysreg = 3,
    /// GICD/GICR emulation.
    Mmio = 4,
    /// Anything injected back as a fault, or `smc`.
    Other = 5,
}

pub const CLASS_NAMES: [&str; 6] = ["irq", "wfi", "hvc", "sysreg", "mmio", "other"];

/// Kicks from the vGIC model: vCPU `v`'s block state, then an SGI to its CPU unless
/// that is this one (which flushes before it enters any guest).
pub struct Kicker<'a> {
    /// The guest.
    pub vm: &'a Vm,
    /// This CPU.
    pub cpu: usize,
}

impl Kick for Kicker<'_> {
    fn kick(&self, v: usize) {
        self.vm.kick(self.cpu, v);
    }
}

/// The guest deactivations of software-path passthrough interrupts one `sync` saw,
/// collected under the vGIC's lock and acted on after it is dropped.
#[derive(Default)]
pub struct Completions {
    ids: core::cell::Cell<[u32; 4]>,
    n: core::cell::Cell<usize>,
}

impl EoiSink for Completions {
    fn guest_completed(&self, intid: u32) {
        let n = self.n.get();
        let mut ids = self.ids.get();
        if let Some(slot) = ids.get_mut(n) {
            *slot = intid;
            self.ids.set(ids);
            self.n.set(n + 1);
        }
    }
}

impl Completions {
    /// Outside every lock: fold each completed INTID out of vCPU `v`'s in-flight
    /// list; its ack notifier (the route's token) tells the route table, which says
    /// whether the physical interrupt is to be completed now.
    pub fn notify(&self, vm: &Vm, v: usize) {
        let ids = self.ids.get();
        for &virq in &ids[..self.n.get().min(ids.len())] {
            vm.vcpus[v]
                .inflight
                .deactivate(virq, |_, token| route_completed(vm, token));
        }
    }
}

/// The ack notifier of a passthrough route: the guest completed the virtual
/// interrupt of the delivery `token` names.
fn route_completed(vm: &Vm, token: u32) {
    if vm.routes.guest_completed(token) != Ok(true) {
        return;
    }
    let pirq = virq_core::route::pirq_of_token(token);
    match vm.link {
        Link::Software => {
            gic::deactivate(pirq);
            vm.deactivations.fetch_add(1, Ordering::Relaxed);
        }
        Link::Immediate => {
            if vm.storm.swap(0, Ordering::Relaxed) >= vm::STORM_LIMIT {
                gic::set_spi_enabled(pirq, true);
            }
        }
        Link::Hw => {}
    }
}

/// A passthrough SPI claimed on this CPU (priority already dropped; still active).
pub fn passthrough_irq(vm: &Vm, pirq: u32, kicker: &Kicker<'_>) {
    if vm.link == Link::Hw {
        // Stays active until the guest deactivates the `HW`-linked virtual one.
        vm.gic.lock().pulse(0, pirq, kicker);
        return;
    }
    let Some(d) = vm.routes.deliver(pirq) else {
        // Not routed (released meanwhile): nobody will complete it.
        gic::deactivate(pirq);
        return;
    };
    let virq = d.virq();
    {
        let mut g = vm.gic.lock();
        let target = g.spi_target(virq);
        // Marked before the guest can see it (virq-core `ack`).
        if vm.vcpus[target].inflight.mark(&vm.acks, virq).is_err() {
            drop(g);
            gic::deactivate(pirq);
            return;
        }
        g.pulse(0, virq, kicker);
    }
    if vm.link == Link::Immediate || d.eoi() == EoiAction::CompleteNow {
        gic::deactivate(pirq);
        vm.deactivations.fetch_add(1, Ordering::Relaxed);
        if vm.link == Link::Immediate
            && vm.storm.fetch_add(1, Ordering::Relaxed) + 1 == vm::STORM_LIMIT
        {
            gic::set_spi_enabled(pirq, false);
            println!(
                "hyp: storm guard: INTID {pirq} claimed {} times without a guest completion; masked until the guest completes",
                vm::STORM_LIMIT
            );
        }
    }
}

/// Decode and handle one exit of vCPU `v` on this CPU `cpu` (host interrupts are the
/// scheduler's: `Next::Irq`).
pub fn handle_exit(vm: &Vm, v: usize, cpu: usize, ctx: &mut Context) -> (ExitClass, Next) {
    use arch::switch::vector;
    match ctx.vector {
        vector::IRQ => return (ExitClass::Irq, Next::Irq),
        vector::SYNC => {}
        other => {
            println!(
                "hyp: guest {}: vCPU {v}: exit through vector {other} at pc {:#x}: stopping",
                vm.name, ctx.pc
            );
            return (ExitClass::Other, Next::Stop(true));
        }
    }
    let esr = ctx.esr;
    let fid = ctx.x[0] as u32;
    match (esr >> 26) & 0x3f {
        ec::WFX => {
            ctx.pc += 4;
            // ISS bit 0: 0 = WFI (WFE is not trapped).
            let next = if esr & 1 == 0 {
                Next::Block
            } else {
                Next::Resume
            };
            (ExitClass::Wfi, next)
        }
        ec::HVC64 => match psci::call(vm, v, cpu, ctx) {
            // PSCI answered NOT_SUPPORTED: maybe one of the GICv4 test calls (looked
            // for only here, so that PSCI's path stays as it was).
            Effect::None if ctx.x[0] == u64::MAX => {
                vlpi_test_call(vm, fid, ctx);
                (ExitClass::Hvc, Next::Resume)
            }
            Effect::None => (ExitClass::Hvc, Next::Resume),
            Effect::Standby => (ExitClass::Hvc, Next::Block),
            Effect::Stop => (ExitClass::Hvc, Next::Stop(false)),
        },
        ec::SMC64 => {
            // Trapped before it executes: skip it; SMCCC "not supported".
            ctx.x[0] = u64::MAX;
            ctx.pc += 4;
            (ExitClass::Other, Next::Resume)
        }
        ec::SYSREG => {
            sysreg_trap(vm, v, cpu, ctx);
            (ExitClass::Sysreg, Next::Resume)
        }
        ec::DABT_LOW => (ExitClass::Mmio, data_abort(vm, cpu, ctx)),
        ec::IABT_LOW => {
            inject_abort(ctx, false, ctx.far, false);
            (ExitClass::Other, Next::Resume)
        }
        class => {
            // Reported (the first few), then injected as an undefined instruction.
            static SHOWN: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
            if SHOWN.fetch_add(1, Ordering::Relaxed) < 8 {
                println!(
                    "hyp: guest {}: vCPU {v}: exit class {class:#x} (ESR_EL2 {esr:#x}) at pc {:#x}: undefined instruction injected",
                    vm.name, ctx.pc
                );
            }
            inject_undef(ctx);
            (ExitClass::Other, Next::Resume)
        }
    }
}

/// SMCCC vendor-hypervisor call (fast, 32-bit ids): send test vLPI `x2` (0..4) to
/// vCPU `x1` with the ITS's INT command (`topology = "vgicv4"`; the guest's own vCPUs
/// only, so no guest reaches another's).
pub const VIRQ_VLPI_INT: u32 = 0x8600_0100;
/// SMCCC vendor-hypervisor call: vCPU `x1`'s counter `x2` — 0: its exits so far, 1:
/// doorbells, 2: doorbell wake-ups, 3: its doorbell state (0 Resident, 1 Descheduled,
/// 2 Blocking, 3 Fired), 4: its `irq` exits, 5: doorbells (low 32 bits) and wake-ups
/// (high 32 bits) read together (`gicv4::FireCounts`).
pub const VIRQ_VLPI_STAT: u32 = 0x8600_0101;

/// SMCCC vendor-hypervisor call: hyp's virtual test device (guest DeviceID `x1`, 0 —
/// `vits::TEST_DEVICE`) sends EventID `x2`, as its MSI would: a host INT on the host
/// device behind it if the guest's ITS translates the pair (`vits::send`: 0 sent, -2
/// no such device, -3 not translated).
pub const VIRQ_VITS_SEND: u32 = 0x8600_0102;
/// SMCCC vendor-hypervisor call: the guest's ITS counter `x1` (`vits::stat`).
pub const VIRQ_VITS_STAT: u32 = 0x8600_0103;

/// The GICv4 test calls ([`VIRQ_VLPI_INT`], [`VIRQ_VLPI_STAT`]) after PSCI found
/// function `fid` NOT_SUPPORTED: for one of them, its result in `x0` (NOT_SUPPORTED
/// (-1) for a guest without vgicv4, INVALID_PARAMETERS (-2) for a bad vCPU or counter).
#[inline(never)]
fn vlpi_test_call(vm: &Vm, fid: u32, ctx: &mut Context) {
    if fid == VIRQ_VITS_SEND || fid == VIRQ_VITS_STAT {
        let (a1, a2) = (ctx.x[1], ctx.x[2]);
        ctx.x[0] = match (&vm.vits, fid) {
            (None, _) => u64::MAX,
            (Some(its), VIRQ_VITS_SEND) => match (u32::try_from(a1), u32::try_from(a2)) {
                (Ok(d), Ok(e)) => super::vits::send(its, d, e) as u64,
                _ => -2i64 as u64,
            },
            (Some(its), _) => super::vits::stat(its, a1).unwrap_or(-2i64 as u64),
        };
        return;
    }
    if fid != VIRQ_VLPI_INT && fid != VIRQ_VLPI_STAT {
        return;
    }
    let (t, arg) = (ctx.x[1] as usize, ctx.x[2]);
    let r: i64 = match (vm.lpis.is_some(), vm.vcpus.get(t)) {
        (false, _) => -1,
        (true, None) => -2,
        (true, Some(vcpu)) => match (&vcpu.vpe, fid) {
            (None, _) => -1,
            (Some(_), VIRQ_VLPI_INT) if arg >= u64::from(super::gicv4::VLPIS_PER_VPE) => -2,
            (Some(vpe), VIRQ_VLPI_INT) => match super::gicv4::send_test_vlpi(vpe, arg as u32) {
                Ok(()) => 0,
                Err(e) => {
                    println!("hyp: guest {}: test vLPI: {e}", vm.name);
                    -1
                }
            },
            (Some(vpe), _) => match arg {
                0 => vcpu
                    .exits
                    .iter()
                    .map(|e| e.load(Ordering::Relaxed))
                    .sum::<u64>() as i64,
                1 => vpe.counts.fires.get().0 as i64,
                2 => vpe.counts.fires.get().1 as i64,
                3 => super::gicv4::state(vpe) as i64,
                4 => vcpu.exits[ExitClass::Irq as usize].load(Ordering::Relaxed) as i64,
                // Doorbells and wake-ups read together (`FireCounts`).
                5 => vpe.counts.fires.packed() as i64,
                _ => -2,
            },
        },
    };
    ctx.x[0] = r as u64;
}

/// A trapped `msr`/`mrs` (ISS: Op0, Op2, Op1, CRn, Rt, CRm, direction). The GICv3 SGI
/// registers trap with `HCR_EL2.IMO`: `ICC_SGI1R_EL1` goes to the vGIC; the group-0
/// and alias forms are ignored (the guest's interrupts are all group 1). The ID
/// registers (`HCR_EL2.TID3`) read as `idregs` says. The physical
/// timer (`CNTHCTL_EL2.EL1PCEN` = 0) reads as zero and ignores writes, as does any
/// other trapped register.
fn sysreg_trap(vm: &Vm, v: usize, cpu: usize, ctx: &mut Context) {
    let iss = ctx.esr & 0x1ff_ffff;
    let op0 = (iss >> 20) & 3;
    let op2 = (iss >> 17) & 7;
    let op1 = (iss >> 14) & 7;
    let crn = (iss >> 10) & 0xf;
    let rt = ((iss >> 5) & 0x1f) as usize;
    let crm = (iss >> 1) & 0xf;
    let read = iss & 1 != 0;
    let value = if rt == 31 { 0 } else { ctx.x[rt] };
    let icc_sgi1r = (op0, op1, crn, crm, op2) == (3, 0, 12, 11, 5);
    let id_space = op0 == 3 && op1 == 0 && crn == 0 && (1..=7).contains(&crm);
    if id_space && read {
        if rt != 31 {
            ctx.x[rt] = super::idregs::read(crm, op2);
        }
    } else if icc_sgi1r && !read {
        vm.gic.lock().send_sgi(v, value, &Kicker { vm, cpu });
    } else if read && rt != 31 {
        ctx.x[rt] = 0;
    }
    ctx.pc += 4;
}

/// A stage-2 data abort: the vGIC's frames, the emulated PL011 and the guest's PCIe
/// ECAM window (`pcie::GuestPci::access`) are emulated;
/// anything else outside the guest's RAM and devices gets a synchronous external
/// abort injected.
fn data_abort(vm: &Vm, cpu: usize, ctx: &mut Context) -> Next {
    let esr = ctx.esr;
    let iss = esr & 0x1ff_ffff;
    let ipa = (((ctx.hpfar >> 4) & ((1 << 40) - 1)) << 12) | (ctx.far & 0xfff);
    let isv = iss & (1 << 24) != 0;
    // Derived, not read under the vGIC's lock: this runs on every data abort.
    let gicr_size = gicr_size(vm.vcpus.len());
    let in_gicd = (GICD_IPA..GICD_IPA + GICD_SIZE).contains(&ipa);
    let in_gicr = (GICR_IPA..GICR_IPA + gicr_size).contains(&ipa);
    let in_vuart = vm.vuart.is_some() && (UART_BASE..UART_BASE + 0x1000).contains(&ipa);
    let in_ecam = vm.pci.ecam.is_some_and(|(b, l)| (b..b + l).contains(&ipa));
    if !isv || !(in_gicd || in_gicr || in_vuart || in_ecam) {
        // The ITS frames (vgicv4 guests) are looked for only once the GIC, UART and
        // ECAM missed: a vgicv3 guest's GIC and UART exits pay nothing for them.
        if let (true, Some(its)) = (isv, &vm.vits) {
            if (ITS_IPA..ITS_IPA + ITS_SIZE).contains(&ipa) {
                return its_abort(vm, its, ctx, ipa);
            }
        }
        inject_abort(ctx, true, ctx.far, ctx.esr & (1 << 6) != 0);
        return Next::Resume;
    }
    let size_log = (iss >> 22) & 3;
    let size = 1u8 << size_log;
    let srt = ((iss >> 16) & 0x1f) as usize;
    let write = iss & (1 << 6) != 0;
    let sse = iss & (1 << 21) != 0;
    let sf = iss & (1 << 15) != 0;
    let kicker = Kicker { vm, cpu };
    let value = (write).then(|| if srt == 31 { 0 } else { ctx.x[srt] });
    let r = if in_ecam {
        vm.pci.access(ipa, size, value).unwrap_or(0)
    } else if let (true, Some(uart)) = (in_vuart, &vm.vuart) {
        vuart_access(vm, &kicker, uart, ipa - UART_BASE, size, value)
    } else {
        let mut g = vm.gic.lock();
        if in_gicd {
            let r = g.dist_access(ipa - GICD_IPA, size, value, &kicker);
            if write && vm.uart {
                follow_route(vm, g.spi_target(UART_INTID));
            }
            r
        } else {
            g.redist_access(ipa - GICR_IPA, size, value, &kicker)
        }
    };
    if !write && srt != 31 {
        let bits = 8u32 << size_log;
        let mut v = if bits < 64 { r & ((1 << bits) - 1) } else { r };
        if sse && bits < 64 && v & (1 << (bits - 1)) != 0 {
            v |= !((1u64 << bits) - 1);
        }
        if !sf {
            v &= 0xffff_ffff;
        }
        ctx.x[srt] = v;
    }
    ctx.pc += 4;
    Next::Resume
}

/// A data abort (`ISV` = 1) in the guest's ITS frames: the access given to its vITS
/// (`vits::access`), a read's value written back as `data_abort` does.
#[inline(never)]
fn its_abort(vm: &Vm, its: &super::vits::VmIts, ctx: &mut Context, ipa: u64) -> Next {
    let iss = ctx.esr & 0x1ff_ffff;
    let size_log = (iss >> 22) & 3;
    let srt = ((iss >> 16) & 0x1f) as usize;
    let write = iss & (1 << 6) != 0;
    let value = write.then(|| if srt == 31 { 0 } else { ctx.x[srt] });
    let Some(lpis) = &vm.lpis else {
        // No vGICv4 (not reached: hyp gives an ITS only with vPEs): read as zero.
        ctx.pc += 4;
        return Next::Resume;
    };
    // Only a write can run commands that read a configuration byte.
    let mut propbaser = [None; vm::VCPUS];
    if write {
        let g = vm.gic.lock();
        for (v, p) in propbaser.iter_mut().enumerate().take(vm.vcpus.len()) {
            *p = g.propbaser(v);
        }
    }
    let vpe = |v: usize| vm.vcpus.get(v).and_then(|c| c.vpe.as_ref());
    let env = super::vits::Env {
        ram: super::vits::GuestRam {
            ram: vm.ram,
            size: vm.ram_size,
        },
        lpis,
        propbaser: &propbaser[..vm.vcpus.len().min(vm::VCPUS)],
        vpe: &vpe,
    };
    let r = super::vits::access(&env, its, ipa - ITS_IPA, 1 << size_log, value);
    if !write && srt != 31 {
        let bits = 8u32 << size_log;
        let mut v = if bits < 64 { r & ((1 << bits) - 1) } else { r };
        if iss & (1 << 21) != 0 && bits < 64 && v & (1 << (bits - 1)) != 0 {
            v |= !((1u64 << bits) - 1);
        }
        if iss & (1 << 15) == 0 {
            v &= 0xffff_ffff;
        }
        ctx.x[srt] = v;
    }
    ctx.pc += 4;
    Next::Resume
}

/// The guest routed the passed-through SPI to vCPU `target` (`GICD_IROUTER`): route
/// the physical SPI to that vCPU's home CPU, so it arrives where the vCPU runs
/// instead of being forwarded with a kick. Called under the vGIC's lock, which orders
/// the guest's route changes.
fn follow_route(vm: &Vm, target: usize) {
    let Some(home) = vm.vcpus.get(target).map(|v| v.block.home()) else {
        return;
    };
    if vm.uart_cpu.swap(home, Ordering::Relaxed) != home {
        gic::route_spi(UART_INTID, home);
    }
}

/// An access to the emulated PL011: its console line printed, its interrupt line
/// driven on the guest's virtual SPI when it changed.
fn vuart_access(
    vm: &Vm,
    kicker: &Kicker<'_>,
    uart: &spin::Mutex<super::vpl011::VPl011>,
    offset: u64,
    size: u8,
    value: Option<u64>,
) -> u64 {
    let mut u = uart.lock();
    let before = u.level();
    let r = match value {
        None => u.read(offset, size),
        Some(v) => {
            if let Some(line) = u.write(offset, size, v) {
                match &vm.vuart_deferred {
                    Some(kept) => kept.lock().push(line),
                    None => println!("[{}] {line}", vm.name),
                }
            }
            0
        }
    };
    let after = u.level();
    // Still under the UART's lock (lock order: UART, then vGIC), so two vCPUs'
    // changes reach the vGIC in the order they happened.
    if after != before {
        vm.gic.lock().set_level(0, UART_INTID, after, kicker);
    }
    r
}

/// `PSTATE.M` of EL1h, EL1t.
const M_EL1H: u64 = 0b0101;
const M_EL1T: u64 = 0b0100;

/// Take a synchronous exception to the guest's EL1 with syndrome `esr`: `ELR_EL1` and
/// `SPSR_EL1` get the interrupted state, the vCPU continues at its `VBAR_EL1` vector
/// for the current EL (SP_EL0 or SP_ELx) or for a lower EL, at EL1h with D, A, I, F
/// masked (Arm ARM D1.3.1).
fn inject_sync(ctx: &mut Context, esr: u64, far: Option<u64>) {
    sysreg::esr_el1::write(esr as usize);
    if let Some(f) = far {
        sysreg::far_el1::write(f as usize);
    }
    sysreg::elr_el1::write(ctx.pc as usize);
    sysreg::spsr_el1::write(ctx.pstate as usize);
    let offset = match ctx.pstate & 0xf {
        M_EL1T => 0x000,
        M_EL1H => 0x200,
        _ => 0x400,
    };
    ctx.pc = sysreg::vbar_el1::read() as u64 + offset;
    ctx.pstate = sysreg::SPSR_EL1H_MASKED as u64;
}

/// A synchronous external abort (data or instruction) at `far`; `write`: `ESR_EL1.WnR`.
fn inject_abort(ctx: &mut Context, data: bool, far: u64, write: bool) {
    let same_el = matches!(ctx.pstate & 0xf, M_EL1T | M_EL1H);
    let class = match (data, same_el) {
        (true, true) => 0x25,
        (true, false) => 0x24,
        (false, true) => 0x21,
        (false, false) => 0x20,
    };
    // IL = 1, FSC 0x10: synchronous external abort.
    inject_sync(
        ctx,
        (class << 26) | (1 << 25) | (u64::from(write) << 6) | 0x10,
        Some(far),
    );
}

/// An undefined instruction (EC 0).
fn inject_undef(ctx: &mut Context) {
    inject_sync(ctx, 1 << 25, None);
}
