//! The guest-visible ITS of a `topology = "vgicv4"` guest (issue 14, the wiring of
//! `virq_arm::vits`): its two 64 KiB frames trapped at `layout::ITS_IPA` (QEMU `virt`'s
//! address), guest accesses given to the guest's [`VIts`] model with a [`GuestMem`]
//! over its RAM (checked copies: a command or configuration byte outside it is a
//! failed read, which the model turns into a stalled queue or a counted error), and
//! the [`HostAction`]s its commands produce applied on the host ITS
//! (`gicv4`): `Map` → VMAPTI to the target vCPU's vPE with that vCPU's doorbell,
//! `Unmap` → DISCARD, `Move` → VMOVI (the new vPE's doorbell), `Inv` → the guest's
//! configuration byte copied into the VM's vLPI configuration table
//! (`GICR_VPROPBASER`) then INV, `InvAll` → the same for every mapping of that vCPU
//! then VINVALL, `Int`/`Clear` → INT/CLEAR, `Sync` → VSYNC. `MovAll` needs nothing:
//! the model reports MAPC retargets as `Move`s, which carry the pending state.
//!
//! **DeviceIDs.** A guest DeviceID means something only through [`HostDevice`]: the
//! host DeviceID that stands for it, MAPD'd on the host ITS once when the guest is
//! built, EventIDs identical on both sides. Today the table has one entry, hyp's
//! virtual test device: guest DeviceID [`TEST_DEVICE`] (0) → host DeviceID
//! [`TEST_HOST_DEVICE_BASE`] + guest index. A passed-through PCIe function will add
//! an entry guest requester ID → host requester ID. Actions for a DeviceID with no
//! entry are dropped and counted (`no_host_device`): they never reach the host ITS.
//! The guest's MSI source for tests is the [`send`] call: "device D sends event E",
//! a host INT on the backing device, done only when the guest's ITS translates (D,
//! E) (as a real MSI to an unmapped event is dropped).
//!
//! **Order and locks.** One guest ITS access runs under its `VmIts::its` lock: the
//! model processes the queue, collecting actions; they are applied (configuration
//! bytes written first, then the host commands in guest order, batched, each batch's
//! completion waited for with the driver's bound) before the lock is dropped, so the
//! guest's `CREADR` moves only once the host ITS has done the work. Lock order:
//! the vGIC (read and released before the access, for `GICR_PROPBASER`), then
//! `VmIts::its`, then the host ITS.
//!
//! vgicv3 guests have no `VmIts`: their data aborts test one `Option` only after the
//! GIC and UART ranges missed.
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use hyp_config::GUEST_RAM_BASE;
use hyp_io::gic_its::Cmd;
use spin::Mutex;
use virq_arm::vits::{self, GuestMem, GuestMemError, HostAction, ItsConfig, VIts};

use super::gicv4::{self, VmLpis, Vpe, VID_BITS};
use crate::arch::phys::PhysRange;

/// Device slots of a guest ITS.
const DEVS: usize = 8;
/// EventIDs per device (8 bits), also the ITT size of each backing host device.
const EVENTS: usize = 256;
/// EventID bits of [`EVENTS`].
const EVENT_BITS: u32 = 8;
/// Collections (≥ vCPUs: Linux uses one per CPU).
const COLLS: usize = 16;
/// DeviceID bits the guest sees (16: PCIe requester IDs).
const DEVICE_BITS: u32 = 16;
/// Priority of a vLPI whose configuration byte could not be read (disabled anyway).
const NO_PRIORITY: u8 = 0xfc;

/// A guest's ITS model.
pub type GuestIts = VIts<DEVS, EVENTS, COLLS>;

/// Guest DeviceID of hyp's virtual test device (its events: [`send`]).
pub const TEST_DEVICE: u32 = 0;
/// Host DeviceID of guest `i`'s test device: this + `i` (high in the host ITS's
/// 1,024-entry device table, away from bus 0's requester IDs).
pub const TEST_HOST_DEVICE_BASE: u32 = 0x300;

/// A guest DeviceID and the host DeviceID that stands for it.
#[derive(Clone, Copy, Debug)]
pub struct HostDevice {
    /// As the guest names it.
    pub guest: u32,
    /// As the host ITS knows it (MAPD'd once).
    pub host: u32,
}

/// What a guest's ITS did (the ACCT line and the test call).
#[derive(Default)]
pub struct ItsCounts {
    /// Host actions reported by the model.
    pub actions: AtomicU64,
    /// Host ITS commands sent for them.
    pub host_cmds: AtomicU64,
    /// Actions dropped: their DeviceID has no [`HostDevice`].
    pub no_host_device: AtomicU64,
    /// Configuration bytes copied into the vLPI table (`Map`, `Inv`, `InvAll`).
    pub config_copies: AtomicU64,
    /// Configuration bytes that could not be read (LPIs off on that redistributor,
    /// or outside the guest's RAM): the vLPI is left disabled.
    pub config_unread: AtomicU64,
    /// Test MSIs sent ([`send`]).
    pub msis: AtomicU64,
    /// Test MSIs not translated by the guest's ITS, so not sent.
    pub msis_dropped: AtomicU64,
}

/// A guest's ITS: the model, the DeviceID table, counters.
pub struct VmIts {
    /// The model (boxed: 30 KiB).
    pub its: Mutex<Box<GuestIts>>,
    /// Guest DeviceID → host DeviceID.
    pub devices: Vec<HostDevice>,
    /// Counters.
    pub counts: ItsCounts,
}

/// The ITS of guest `index` with `vcpus` vCPUs: the model, and its test device's
/// backing host device MAPD'd on the host ITS.
pub fn new(index: usize, vcpus: usize) -> Result<VmIts, String> {
    let its = GuestIts::new(ItsConfig {
        vcpus,
        intid_bits: VID_BITS,
        device_bits: DEVICE_BITS,
    })
    .map_err(|e| format!("vITS: {e:?}"))?;
    let host = TEST_HOST_DEVICE_BASE + index as u32;
    gicv4::map_host_device(host, EVENT_BITS)?;
    Ok(VmIts {
        its: Mutex::new(Box::new(its)),
        devices: alloc::vec![HostDevice {
            guest: TEST_DEVICE,
            host,
        }],
        counts: ItsCounts::default(),
    })
}

impl VmIts {
    fn host_device(&self, guest: u32) -> Option<u32> {
        self.devices
            .iter()
            .find(|d| d.guest == guest)
            .map(|d| d.host)
    }
}

/// The guest's RAM (at `GUEST_RAM_BASE`) as the model reads it: a copy only when
/// every byte is in it.
#[derive(Clone, Copy)]
pub struct GuestRam {
    /// The RAM in host memory.
    pub ram: PhysRange,
    /// Its bytes.
    pub size: u64,
}

impl GuestMem for GuestRam {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemError> {
        let off = gpa
            .checked_sub(GUEST_RAM_BASE)
            .filter(|o| {
                o.checked_add(buf.len() as u64)
                    .is_some_and(|e| e <= self.size)
            })
            .ok_or(GuestMemError)?;
        self.ram
            .read(off as usize, buf)
            .then_some(())
            .ok_or(GuestMemError)
    }
}

/// What an access needs of its guest (given by the exit handler, so that this module
/// does not import the guest's: data flows down).
pub struct Env<'a> {
    /// Its RAM.
    pub ram: GuestRam,
    /// Its vLPI configuration table.
    pub lpis: &'a VmLpis,
    /// Each vCPU's `GICR_PROPBASER` once its `EnableLPIs` is set (the vGIC's
    /// `propbaser`, read before the access).
    pub propbaser: &'a [Option<u64>],
    /// vCPU → its vPE.
    pub vpe: &'a dyn Fn(usize) -> Option<&'a Vpe>,
}

/// A guest access to its ITS frames (`offset` from `layout::ITS_IPA`; `value` `Some`
/// for a write): what a read sees.
pub fn access(env: &Env<'_>, vits: &VmIts, offset: u64, size: u8, value: Option<u64>) -> u64 {
    let mut actions = Vec::new();
    let mut its = vits.its.lock();
    let r = its.access(offset, size, value, &env.ram, &mut |a| actions.push(a));
    if !actions.is_empty() {
        apply(env, vits, &its, &actions);
    }
    r
}

/// Apply `actions` (in order) on the host ITS; `its` is the model after them.
fn apply(env: &Env<'_>, vits: &VmIts, its: &GuestIts, actions: &[HostAction]) {
    let c = &vits.counts;
    c.actions.fetch_add(actions.len() as u64, Ordering::Relaxed);
    let lpis = env.lpis;
    let copy = |vcpu: usize, vintid: u32| {
        let cfg = env
            .propbaser
            .get(vcpu)
            .copied()
            .flatten()
            .and_then(|p| vits::lpi_config(&env.ram, p, vintid).ok());
        match cfg {
            Some(cfg) => {
                lpis.set_config(vintid, cfg.priority, cfg.enabled);
                c.config_copies.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                lpis.set_config(vintid, NO_PRIORITY, false);
                c.config_unread.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let vpe = env.vpe;
    let mut cmds = Vec::new();
    for &a in actions {
        let device = match a {
            HostAction::Map { device, .. }
            | HostAction::Unmap { device, .. }
            | HostAction::Move { device, .. }
            | HostAction::Inv { device, .. }
            | HostAction::Int { device, .. }
            | HostAction::Clear { device, .. } => Some(device),
            HostAction::InvAll { .. } | HostAction::Sync { .. } | HostAction::MovAll { .. } => None,
        };
        let host = match device.map(|d| vits.host_device(d)) {
            Some(None) => {
                c.no_host_device.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Some(Some(h)) => h,
            None => 0,
        };
        match a {
            HostAction::Map {
                event,
                vintid,
                vcpu,
                ..
            } => {
                let Some(p) = vpe(vcpu) else { continue };
                copy(vcpu, vintid);
                cmds.push(Cmd::Vmapti {
                    device: host,
                    event,
                    vpeid: p.id,
                    vintid,
                    doorbell: p.doorbell_lpi,
                });
            }
            HostAction::Unmap { event, .. } => cmds.push(Cmd::Discard {
                device: host,
                event,
            }),
            HostAction::Move { event, to_vcpu, .. } => {
                let Some(p) = vpe(to_vcpu) else { continue };
                cmds.push(Cmd::Vmovi {
                    device: host,
                    event,
                    vpeid: p.id,
                    doorbell: p.doorbell_lpi,
                });
            }
            HostAction::Inv {
                event,
                vintid,
                vcpu,
                ..
            } => {
                copy(vcpu, vintid);
                cmds.push(Cmd::Inv {
                    device: host,
                    event,
                });
            }
            HostAction::InvAll { vcpu } => {
                let Some(p) = vpe(vcpu) else { continue };
                for m in its.mappings().filter(|m| m.vcpu == vcpu) {
                    if vits.host_device(m.device).is_some() {
                        copy(vcpu, m.vintid);
                    }
                }
                cmds.push(Cmd::Vinvall { vpeid: p.id });
            }
            HostAction::Int { event, .. } => cmds.push(Cmd::Int {
                device: host,
                event,
            }),
            HostAction::Clear { event, .. } => cmds.push(Cmd::Clear {
                device: host,
                event,
            }),
            HostAction::Sync { vcpu } => {
                let Some(p) = vpe(vcpu) else { continue };
                cmds.push(Cmd::Vsync { vpeid: p.id });
            }
            HostAction::MovAll { .. } => {}
        }
    }
    if !cmds.is_empty() {
        let sent = gicv4::submit_cmds(&cmds);
        c.host_cmds.fetch_add(sent as u64, Ordering::Relaxed);
    }
}

/// hyp's virtual test device `device` sends event `event` (the test call): a host
/// INT on the backing host device, if the guest's ITS translates the pair. 0 sent,
/// -2 no such device, -3 not translated (dropped, as an MSI would be), -1 host ITS
/// failure.
pub fn send(vits: &VmIts, device: u32, event: u32) -> i64 {
    let Some(host) = vits.host_device(device) else {
        return -2;
    };
    let delivered = vits.its.lock().translate(device, event);
    if delivered.is_none() {
        vits.counts.msis_dropped.fetch_add(1, Ordering::Relaxed);
        return -3;
    }
    vits.counts.msis.fetch_add(1, Ordering::Relaxed);
    if gicv4::submit_cmds(&[Cmd::Int {
        device: host,
        event,
    }]) == 1
    {
        0
    } else {
        -1
    }
}

/// The counter `which` of the test call: 0 the guest's command errors, 1 actions
/// dropped for a DeviceID with no host device, 2 host commands, 3 configuration
/// copies, 4 register access errors, 5 test MSIs dropped. `None` for others.
pub fn stat(vits: &VmIts, which: u64) -> Option<u64> {
    let c = &vits.counts;
    Some(match which {
        0 => vits.its.lock().cmd_errors().total(),
        1 => c.no_host_device.load(Ordering::Relaxed),
        2 => c.host_cmds.load(Ordering::Relaxed),
        3 => c.config_copies.load(Ordering::Relaxed),
        4 => vits.its.lock().errors().total(),
        5 => c.msis_dropped.load(Ordering::Relaxed),
        _ => return None,
    })
}

/// The ACCT line.
pub fn acct(vits: &VmIts) -> String {
    let c = &vits.counts;
    let its = vits.its.lock();
    format!(
        "actions {} host_cmds {} no_host_device {} config_copies {} config_unread {} msis {} msis_dropped {}; command errors {:?}; register errors {:?}",
        c.actions.load(Ordering::Relaxed),
        c.host_cmds.load(Ordering::Relaxed),
        c.no_host_device.load(Ordering::Relaxed),
        c.config_copies.load(Ordering::Relaxed),
        c.config_unread.load(Ordering::Relaxed),
        c.msis.load(Ordering::Relaxed),
        c.msis_dropped.load(Ordering::Relaxed),
        its.cmd_errors(),
        its.errors(),
    )
}
