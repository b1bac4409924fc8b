//! The guest-visible ITS of a `topology = "vgicv4"` guest (issue 14, the wiring of
//! `virq_arm::vits`): its two 64 KiB frames trapped at `layout::ITS_IPA` (QEMU `virt`'s
//! address), guest accesses given to the guest's [`VIts`] model with a [`GuestMem`]
//! over its RAM (checked copies: a command or configuration byte outside it is a
//! failed read, which the model turns into a stalled queue or a counted error), and
//! the [`HostAction`]s its commands produce applied on the host ITS
//! (`gicv4`): `Map` → VMAPTI to the target vCPU's vPE with that vCPU's doorbell,
//! `Unmap` → DISCARD, `Move` → VMOVI (the new vPE's doorbell), `Inv` → the guest's
//! configuration byte copied into the VM's vLPI configuration table
//! (`GICR_VPROPBASER`) then INV, `InvAll` → the vCPU's whole configuration table
//! copied, then VINVALL, `Int`/`Clear` → INT/CLEAR, `Sync` → VSYNC. `MovAll` needs nothing:
//! the model reports MAPC retargets as `Move`s, which carry the pending state.
//!
//! **DeviceIDs.** A guest DeviceID means something only through [`HostDevice`]: the
//! host DeviceID that stands for it, MAPD'd on the host ITS once when the guest is
//! built, EventIDs identical on both sides. Today the table has one entry, hyp's
//! virtual test device: guest DeviceID [`TEST_DEVICE`] (0) → host DeviceID
//! [`TEST_HOST_DEVICE_BASE`] + guest index. Each passed-through PCIe function adds
//! an entry guest requester ID → host requester ID (docs/gicv4.md §10; hyp's own host
//! DeviceIDs are refused). Actions for a DeviceID with no
//! entry are dropped and counted (`no_host_device`): they never reach the host ITS.
//! The guest's MSI source for tests is the [`send`] call: "device D sends event E",
//! a host INT on the backing device, done only when the guest's ITS translates (D,
//! E) (as a real MSI to an unmapped event is dropped).
//!
//! **Order and locks.** One guest ITS access runs under its `VmIts::its` lock: the
//! model processes the queue and each action is applied as it comes (configuration
//! bytes written at once, host commands queued in guest order and sent in batches of
//! 32, each batch's completion waited for with the driver's bound; hyp's memory does
//! not grow with the guest's queue) before the lock is dropped, so no vCPU sees the
//! guest's `CREADR` move before the host ITS has done the work. An INVALL copies the
//! vCPU's whole configuration table (vINTIDs below its `IDbits`, at most 2^16; 256
//! bytes per checked copy). Lock order: the vGIC (read and released before a write
//! reaches the model, for `GICR_PROPBASER`), then `VmIts::its`, then the host ITS.
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
    /// The model (boxed: about 33 KiB).
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
    let mut v = VmIts {
        its: Mutex::new(Box::new(its)),
        devices: Vec::new(),
        counts: ItsCounts::default(),
    };
    v.add_device(TEST_DEVICE, TEST_HOST_DEVICE_BASE + index as u32)?;
    Ok(v)
}

impl VmIts {
    /// Let guest DeviceID `guest` stand for host DeviceID `host` (MAPD'd on the host
    /// ITS here, with 2^8 events: the guest's EventIDs, identical on both sides).
    /// While the guest is built: hyp's test device; a passed-through PCIe function
    /// (guest requester ID → host requester ID) the same way.
    pub fn add_device(&mut self, guest: u32, host: u32) -> Result<(), String> {
        if self.host_device(guest).is_some() || self.devices.iter().any(|d| d.host == host) {
            return Err(format!(
                "vITS: guest DeviceID {guest:#x} or host DeviceID {host:#x} already mapped"
            ));
        }
        // hyp's own host devices (doorbell proxy, §7 test vLPIs, the test devices)
        // must stay hyp's: a function with such a requester ID is refused.
        let ours = [gicv4::PROXY_DEVICE, gicv4::TEST_DEVICE].contains(&host)
            || (TEST_HOST_DEVICE_BASE..TEST_HOST_DEVICE_BASE + 0x100).contains(&host);
        if ours && guest != TEST_DEVICE {
            return Err(format!(
                "vITS: host DeviceID {host:#x} is one of hyp's own (0, 1, 0x300..0x3ff)"
            ));
        }
        gicv4::map_host_device(host, EVENT_BITS)?;
        self.devices.push(HostDevice { guest, host });
        Ok(())
    }

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
/// for a write): what a read sees. The model's actions are applied as they come
/// ([`Applier`]): hyp's memory use does not grow with the guest's queue.
pub fn access(env: &Env<'_>, vits: &VmIts, offset: u64, size: u8, value: Option<u64>) -> u64 {
    let mut its = vits.its.lock();
    if value.is_none() {
        let mut none = |_: HostAction| {};
        return its.access(offset, size, None, &env.ram, &mut none);
    }
    let mut a = Applier {
        env,
        vits,
        cmds: Vec::new(),
    };
    let r = its.access(offset, size, value, &env.ram, &mut a);
    a.flush();
    r
}

/// Host commands queued before they are sent (a batch the host queue holds).
const BATCH: usize = 32;

/// Turns a guest's [`HostAction`]s into host commands, in order, sent in batches of
/// [`BATCH`] (see the module docs).
struct Applier<'a, 'e> {
    env: &'a Env<'e>,
    vits: &'a VmIts,
    cmds: Vec<Cmd>,
}

impl Applier<'_, '_> {
    fn push(&mut self, cmd: Cmd) {
        self.cmds.push(cmd);
        if self.cmds.len() >= BATCH {
            self.flush();
        }
    }

    /// Send the queued commands (after the configuration bytes written for them: the
    /// driver's submit has the barrier).
    fn flush(&mut self) {
        if !self.cmds.is_empty() {
            let sent = gicv4::submit_cmds(&self.cmds);
            self.vits
                .counts
                .host_cmds
                .fetch_add(sent as u64, Ordering::Relaxed);
            self.cmds.clear();
        }
    }

    /// Copy the configuration byte of `vintid` from `vcpu`'s LPI configuration table
    /// (`GICR_PROPBASER`) into the VM's vLPI table; disabled if it cannot be read.
    fn copy(&self, vcpu: usize, vintid: u32) {
        let c = &self.vits.counts;
        let cfg = self
            .env
            .propbaser
            .get(vcpu)
            .copied()
            .flatten()
            .and_then(|p| vits::lpi_config(&self.env.ram, p, vintid).ok());
        match cfg {
            Some(cfg) => {
                self.env.lpis.set_config(vintid, cfg.priority, cfg.enabled);
                c.config_copies.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.env.lpis.set_config(vintid, NO_PRIORITY, false);
                c.config_unread.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// INVALL: every configuration byte of `vcpu`'s table (vINTIDs 8192 up to its
    /// `IDbits` and 2^[`VID_BITS`]), read in chunks of checked copies; a chunk that
    /// cannot be read leaves its vLPIs disabled.
    fn copy_all(&self, vcpu: usize) {
        let c = &self.vits.counts;
        let Some(p) = self.env.propbaser.get(vcpu).copied().flatten() else {
            c.config_unread.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let id_bits = ((p & 0x1f) as u32 + 1).min(VID_BITS);
        if id_bits < 14 {
            return;
        }
        let table = p & 0x000f_ffff_ffff_f000;
        let mut buf = [0u8; 256];
        let mut id = vits::LPI_BASE;
        while id < 1 << id_bits {
            let n = buf.len().min(((1u32 << id_bits) - id) as usize);
            let chunk = &mut buf[..n];
            let ok = self
                .env
                .ram
                .read(table + u64::from(id - vits::LPI_BASE), chunk)
                .is_ok();
            for (k, b) in chunk.iter().enumerate() {
                let (prio, on) = if ok {
                    (b & 0xfc, b & 1 != 0)
                } else {
                    (NO_PRIORITY, false)
                };
                self.env.lpis.set_config(id + k as u32, prio, on);
            }
            let counter = if ok {
                &c.config_copies
            } else {
                &c.config_unread
            };
            counter.fetch_add(n as u64, Ordering::Relaxed);
            id += n as u32;
        }
    }
}

impl vits::ItsSink for Applier<'_, '_> {
    fn act(&mut self, a: HostAction) {
        let c = &self.vits.counts;
        c.actions.fetch_add(1, Ordering::Relaxed);
        let device = match a {
            HostAction::Map { device, .. }
            | HostAction::Unmap { device, .. }
            | HostAction::Move { device, .. }
            | HostAction::Inv { device, .. }
            | HostAction::Int { device, .. }
            | HostAction::Clear { device, .. } => Some(device),
            HostAction::InvAll { .. } | HostAction::Sync { .. } | HostAction::MovAll { .. } => None,
        };
        let host = match device.map(|d| self.vits.host_device(d)) {
            Some(None) => {
                c.no_host_device.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Some(Some(h)) => h,
            None => 0,
        };
        let vpe = self.env.vpe;
        let cmd = match a {
            HostAction::Map {
                event,
                vintid,
                vcpu,
                ..
            } => {
                let Some(p) = vpe(vcpu) else { return };
                self.copy(vcpu, vintid);
                Cmd::Vmapti {
                    device: host,
                    event,
                    vpeid: p.id,
                    vintid,
                    doorbell: p.doorbell_lpi,
                }
            }
            HostAction::Unmap { event, .. } => Cmd::Discard {
                device: host,
                event,
            },
            HostAction::Move { event, to_vcpu, .. } => {
                let Some(p) = vpe(to_vcpu) else { return };
                Cmd::Vmovi {
                    device: host,
                    event,
                    vpeid: p.id,
                    doorbell: p.doorbell_lpi,
                }
            }
            HostAction::Inv {
                event,
                vintid,
                vcpu,
                ..
            } => {
                self.copy(vcpu, vintid);
                Cmd::Inv {
                    device: host,
                    event,
                }
            }
            HostAction::InvAll { vcpu } => {
                let Some(p) = vpe(vcpu) else { return };
                self.copy_all(vcpu);
                Cmd::Vinvall { vpeid: p.id }
            }
            HostAction::Int { event, .. } => Cmd::Int {
                device: host,
                event,
            },
            HostAction::Clear { event, .. } => Cmd::Clear {
                device: host,
                event,
            },
            HostAction::Sync { vcpu } => {
                let Some(p) = vpe(vcpu) else { return };
                Cmd::Vsync { vpeid: p.id }
            }
            // Nothing moves with it: the model reported each mapping's MAPC retarget
            // as a `Move` (VMOVI), which carries its pending state.
            HostAction::MovAll { .. } => return,
        };
        self.push(cmd);
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
