//! A guest-visible ITS (Arm IHI 0069H, chapter 5 "Locality-specific Peripheral
//! Interrupts and the ITS", §5.3 the commands, §12.19 the `GITS_*` registers): the
//! guest's MAPD/MAPC/MAPTI/… commands become [`HostAction`]s that a hypervisor turns
//! into host GICv4 commands (VMAPTI, VMOVI, INV, INT, …) on the vCPUs' vPEs.
//!
//! # Model
//!
//! - **Frames.** A 64 KiB control frame (`GITS_CTLR`, `IIDR`, `TYPER`, `CBASER`,
//!   `CWRITER`, `CREADR`, `BASER0..7`) and a 64 KiB translation frame
//!   (`GITS_TRANSLATER` at `+0x1_0040`), reached through [`VIts::access`] or the
//!   [`ItsFrames`] [`MmioDevice`]. 32-bit registers take 32-bit accesses, 64-bit ones
//!   64-bit accesses or 32-bit halves; anything else reads as zero, is ignored and is
//!   counted in [`VIts::errors`].
//! - **What `GITS_TYPER` advertises.** Physical LPIs only (`Physical` = 1, `Virtual` =
//!   0: no GICv4 to the guest), `ITT_entry_size` = 8 bytes, `ID_bits` = log2 `EVENTS`
//!   EventID bits, `Devbits` = [`ItsConfig::device_bits`], `PTA` = 0 (an RDbase is a
//!   processor number = the vCPU index, as the vGICv3's `GICR_TYPER` reports it), all
//!   `COLLS` collections held in the ITS (`HCC` = `COLLS`, `CIL` = 1, `CIDbits` to match),
//!   `SEIS` = 0 (no SError on a command error).
//! - **Tables.** `GITS_BASER0` is the device table (Type 1), `GITS_BASER1` the
//!   collection table (Type 4), both with 8-byte entries; `BASER2..7` are RAZ/WI.
//!   `Indirect` is RAZ/WI (flat tables only). The guest's table memory is **never read
//!   or written**: device table entries, ITTs and collections are held in the model
//!   (IMPLEMENTATION DEFINED formats are allowed by the architecture), so a guest
//!   cannot make the hypervisor parse memory it controls. The device table's size
//!   still bounds the DeviceIDs, as the architecture says: a DeviceID at or beyond
//!   `2^Devbits` or beyond the entries of `GITS_BASER0` (or with `GITS_BASER0.Valid` =
//!   0) is out of range. DeviceIDs are held in `DEVS` slots (any DeviceID below the
//!   bound may use one); EventIDs index a per-device ITT of `EVENTS` entries.
//! - **Command queue.** `GITS_CBASER` (writable only while `GITS_CTLR.Enabled` = 0; a
//!   write resets `GITS_CREADR` to 0) names the queue in guest memory. A `GITS_CWRITER`
//!   write while the ITS is enabled processes the queue **synchronously** from
//!   `CREADR` up to `CWRITER`, reading each 32-byte command through the caller's
//!   [`GuestMem`]: bounded work, at most one pass over the queue (its size / 32
//!   commands). Enabling the ITS processes what is already queued. A `CWRITER` offset
//!   beyond the queue is counted and not processed (QEMU's choice).
//! - **A command that cannot be read** stalls the queue: `GITS_CREADR.Stalled` = 1,
//!   `CREADR` names the command, nothing after it runs. Writing `GITS_CWRITER` with
//!   `Retry` = 1 clears `Stalled` and retries from that command (the architecture's
//!   `Retry`; QEMU retries on any `CWRITER` write), as does writing `GITS_CBASER`.
//! - **Command errors** (the spec's error encodings, e.g. DeviceID out of range): the
//!   ITS "ignores the command and continues" — the IMPLEMENTATION DEFINED choice the
//!   architecture allows with `SEIS` = 0, and QEMU's — and one field of [`CmdErrors`]
//!   counts it. A bad command changes nothing and reports nothing.
//!
//! # What the caller is told
//!
//! The set of **effective mappings** — (DeviceID, EventID) whose device is mapped,
//! whose ITT entry is valid and whose collection is mapped to a vCPU — is what the host
//! must hold as VMAPTIs. Every change to it is reported to the [`ItsSink`], in order:
//! [`HostAction::Map`] when a mapping appears (MAPTI/MAPI, or MAPC of its collection),
//! [`HostAction::Unmap`] when it goes (DISCARD, MAPD, MAPC V = 0, a MAPTI over it),
//! [`HostAction::Move`] when its vCPU changes (MOVI, MAPC to another vCPU). INV, INT,
//! CLEAR, INVALL, SYNC and MOVALL of a valid target are reported as they are. So a
//! caller that applies the actions to its own table holds exactly
//! [`VIts::mappings`].
//!
//! # IMPLEMENTATION DEFINED choices (and departures)
//!
//! - **A MAPTI/MAPI whose vINTID is already mapped by another event** is a command
//!   error (counted as [`CmdErrors::intid_in_use`]): two events on one vLPI are
//!   UNPREDICTABLE in hardware, and the host would hold two VMAPTIs of it.
//! - **MAPTI/MAPI to an unmapped collection** is allowed, as the architecture says:
//!   the entry is kept and becomes a mapping when MAPC maps the collection.
//! - **MAPD** with V = 0 discards the device's ITT entries (they lived in the model,
//!   not in guest memory); MAPD with V = 1 of a mapped device keeps the entries that
//!   fit the new size if `ITT_addr` is unchanged, and starts an empty ITT otherwise
//!   (as a fresh, zeroed ITT would be). A new device when all `DEVS` slots are used
//!   is a command error ([`CmdErrors::table_full`]).
//! - **MAPC** of a mapped collection to another vCPU moves its mappings
//!   ([`HostAction::Move`]); the architecture asks software to MOVALL, here the
//!   pending state travels with each VMOVI.
//! - **MOVI and MOVALL move pending state only where GICv4.0 can**: MOVI is a
//!   [`HostAction::Move`], MOVALL a [`HostAction::MovAll`] (no mapping changes, as the
//!   architecture says); the host implements the latter as it can.
//! - **DISCARD of an entry whose collection is unmapped** removes the entry (nothing
//!   is reported: it was no mapping).
//! - **Pending state on unmap:** the host unmaps with DISCARD, which clears a pending
//!   vLPI; the architecture keeps an LPI pending when MAPD V = 0 removes its mapping.
//! - **`GITS_TRANSLATER` stores by a guest CPU** are dropped and counted
//!   ([`ErrorCounters::ignored_value`]): their DeviceID is not defined here. Emulated
//!   devices call [`VIts::translate`] with the DeviceID the hypervisor gives them.
//! - **Commands for GICv4 (`V*`) and GICv4.1** are unknown commands here (`Virtual` =
//!   0): counted, skipped.
use virq_core::mmio::{ErrorCounters, MmioDevice};

use crate::regs::{IIDR_VIRQ, PIDR2_GICV3};

/// `GITS_*` register offsets, fields and the command codes (IHI 0069H §12.19, §5.3).
pub mod gits {
    /// `GITS_CTLR` (32-bit): Enabled (0), Quiescent (31).
    pub const CTLR: u32 = 0x0000;
    /// `GITS_IIDR` (32-bit).
    pub const IIDR: u32 = 0x0004;
    /// `GITS_TYPER` (64-bit).
    pub const TYPER: u32 = 0x0008;
    /// `GITS_CBASER` (64-bit).
    pub const CBASER: u32 = 0x0080;
    /// `GITS_CWRITER` (64-bit): Offset [19:5], Retry (0).
    pub const CWRITER: u32 = 0x0088;
    /// `GITS_CREADR` (64-bit): Offset [19:5], Stalled (0).
    pub const CREADR: u32 = 0x0090;
    /// `GITS_BASER<n>` (64-bit) at `BASER + 8 n`, n < 8.
    pub const BASER: u32 = 0x0100;
    /// `GITS_PIDR2`.
    pub const PIDR2: u32 = 0xffe8;
    /// `GITS_TRANSLATER`, in the translation frame (`+0x1_0000`).
    pub const TRANSLATER: u32 = 0x1_0040;
    /// Bytes of both frames.
    pub const SIZE: u64 = 0x2_0000;

    /// `GITS_CTLR.Enabled`.
    pub const CTLR_ENABLED: u32 = 1;
    /// `GITS_CTLR.Quiescent`.
    pub const CTLR_QUIESCENT: u32 = 1 << 31;
    /// `GITS_CREADR.Stalled`.
    pub const CREADR_STALLED: u64 = 1;
    /// `GITS_CWRITER.Retry`.
    pub const CWRITER_RETRY: u64 = 1;
    /// The Offset field of `CWRITER`/`CREADR`.
    pub const OFFSET_MASK: u64 = 0x000f_ffe0;
    /// `GITS_CBASER`/`GITS_BASER<n>` `Valid`.
    pub const VALID: u64 = 1 << 63;
    /// `GITS_BASER<n>.Type`: device table.
    pub const TYPE_DEVICE: u64 = 1;
    /// `GITS_BASER<n>.Type`: collection table.
    pub const TYPE_COLLECTION: u64 = 4;

    /// Command codes (DW0 [7:0]).
    pub mod cmd {
        /// MOVI.
        pub const MOVI: u8 = 0x01;
        /// INT.
        pub const INT: u8 = 0x03;
        /// CLEAR.
        pub const CLEAR: u8 = 0x04;
        /// SYNC.
        pub const SYNC: u8 = 0x05;
        /// MAPD.
        pub const MAPD: u8 = 0x08;
        /// MAPC.
        pub const MAPC: u8 = 0x09;
        /// MAPTI.
        pub const MAPTI: u8 = 0x0a;
        /// MAPI.
        pub const MAPI: u8 = 0x0b;
        /// INV.
        pub const INV: u8 = 0x0c;
        /// INVALL.
        pub const INVALL: u8 = 0x0d;
        /// MOVALL.
        pub const MOVALL: u8 = 0x0e;
        /// DISCARD.
        pub const DISCARD: u8 = 0x0f;
    }
}

/// First LPI INTID.
pub const LPI_BASE: u32 = 8192;
/// Bytes of one command.
pub const CMD_BYTES: u64 = 32;
/// Largest `ItsConfig::intid_bits` (INTIDs below 2^16).
pub const MAX_INTID_BITS: u32 = 16;
const INTID_WORDS: usize = 1 << (MAX_INTID_BITS - 6);

/// A guest-physical read the hypervisor could not do (outside the guest's memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMemError;

/// Checked reads of guest memory: the only way the model sees it.
pub trait GuestMem {
    /// Copy `buf.len()` bytes at guest-physical `gpa` into `buf`, or fail without
    /// effect if any of them is not the guest's RAM.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemError>;
}

/// What the host must do for the guest's commands (see the [module docs](self)).
/// `vcpu` is a guest-local vCPU index; `vintid` the LPI INTID the guest chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostAction {
    /// (`device`, `event`) now delivers `vintid` to `vcpu` (host: VMAPTI).
    Map {
        /// DeviceID.
        device: u32,
        /// EventID.
        event: u32,
        /// vLPI.
        vintid: u32,
        /// Target vCPU.
        vcpu: usize,
    },
    /// (`device`, `event`), which delivered `vintid` to `vcpu`, no longer does (host:
    /// DISCARD).
    Unmap {
        /// DeviceID.
        device: u32,
        /// EventID.
        event: u32,
        /// vLPI.
        vintid: u32,
        /// vCPU it targeted.
        vcpu: usize,
    },
    /// (`device`, `event`) now delivers `vintid` to `to_vcpu` instead of `from_vcpu`
    /// (host: VMOVI).
    Move {
        /// DeviceID.
        device: u32,
        /// EventID.
        event: u32,
        /// vLPI.
        vintid: u32,
        /// Old target.
        from_vcpu: usize,
        /// New target.
        to_vcpu: usize,
    },
    /// Re-read the configuration of `vintid` (host: copy its guest property byte, INV).
    Inv {
        /// DeviceID.
        device: u32,
        /// EventID.
        event: u32,
        /// vLPI.
        vintid: u32,
        /// Its vCPU.
        vcpu: usize,
    },
    /// Re-read the configuration of every vLPI of `vcpu` (host: copy, VINVALL).
    InvAll {
        /// vCPU.
        vcpu: usize,
    },
    /// Make `vintid` pending on `vcpu` as its MSI would (host: INT).
    Int {
        /// DeviceID.
        device: u32,
        /// EventID.
        event: u32,
        /// vLPI.
        vintid: u32,
        /// Its vCPU.
        vcpu: usize,
    },
    /// Clear the pending state of `vintid` (host: CLEAR).
    Clear {
        /// DeviceID.
        device: u32,
        /// EventID.
        event: u32,
        /// vLPI.
        vintid: u32,
        /// Its vCPU.
        vcpu: usize,
    },
    /// Wait for the effects on `vcpu` (host: VSYNC).
    Sync {
        /// vCPU.
        vcpu: usize,
    },
    /// Move the pending vLPIs of `from_vcpu` to `to_vcpu`; no mapping changes.
    MovAll {
        /// Source vCPU.
        from_vcpu: usize,
        /// Destination vCPU.
        to_vcpu: usize,
    },
}

/// Receives the [`HostAction`]s of a guest's ITS commands, in command order.
pub trait ItsSink {
    /// One action.
    fn act(&mut self, action: HostAction);
}

impl<F: FnMut(HostAction)> ItsSink for F {
    fn act(&mut self, action: HostAction) {
        self(action)
    }
}

/// Counters of the guest's commands that were ignored (or stalled), by cause.
/// Counters saturate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CmdErrors {
    /// Command code not implemented here (also every GICv4 `V*` command).
    pub unknown: u64,
    /// DeviceID beyond `Devbits` or the device table (`GITS_BASER0`).
    pub device_oor: u64,
    /// The device is not mapped (MAPD).
    pub device_unmapped: u64,
    /// EventID beyond the device's ITT size.
    pub event_oor: u64,
    /// No valid ITT entry for the EventID.
    pub event_unmapped: u64,
    /// ICID at or beyond the collections held.
    pub icid_oor: u64,
    /// The collection is not mapped (MAPC).
    pub collection_unmapped: u64,
    /// An LPI INTID below 8192 or beyond `intid_bits`.
    pub intid_oor: u64,
    /// A vINTID already mapped by another event.
    pub intid_in_use: u64,
    /// MAPD `Size` beyond the EventID bits.
    pub size_oor: u64,
    /// An RDbase naming no vCPU.
    pub rdbase_oor: u64,
    /// No free device slot.
    pub table_full: u64,
    /// A command that could not be read from guest memory (the queue stalled).
    pub read_failed: u64,
}

impl CmdErrors {
    /// Sum of all counters.
    pub fn total(&self) -> u64 {
        [
            self.unknown,
            self.device_oor,
            self.device_unmapped,
            self.event_oor,
            self.event_unmapped,
            self.icid_oor,
            self.collection_unmapped,
            self.intid_oor,
            self.intid_in_use,
            self.size_oor,
            self.rdbase_oor,
            self.table_full,
            self.read_failed,
        ]
        .iter()
        .fold(0u64, |a, &b| a.saturating_add(b))
    }
}

/// Why [`VIts::new`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// vCPUs 0 or above 65,536.
    Vcpus,
    /// `intid_bits` not in 14..=16.
    IntidBits,
    /// `device_bits` not in 1..=32.
    DeviceBits,
    /// `EVENTS` not a power of two in 2..=65,536.
    Events,
    /// `COLLS` not in 1..=255, or `DEVS` 0.
    Capacity,
}

/// How a guest's ITS is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItsConfig {
    /// vCPUs of the guest: RDbase (a processor number) `0..vcpus`.
    pub vcpus: usize,
    /// LPI INTIDs are `8192..2^intid_bits` (14..=16; the vGICv3's `GICD_TYPER.IDbits`
    /// and the host VPT must cover them).
    pub intid_bits: u32,
    /// DeviceID bits (`GITS_TYPER.Devbits` + 1), 1..=32.
    pub device_bits: u32,
}

/// An ITT entry.
#[derive(Clone, Copy, Debug, Default)]
struct Ite {
    valid: bool,
    vintid: u32,
    icid: u16,
}

/// A device table entry, in a slot.
#[derive(Clone, Copy, Debug)]
struct Dte<const EVENTS: usize> {
    valid: bool,
    id: u32,
    itt: u64,
    /// EventID bits (`Size` + 1).
    bits: u32,
    ites: [Ite; EVENTS],
}

/// One effective mapping (see the module docs): what the host holds as a VMAPTI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// DeviceID.
    pub device: u32,
    /// EventID.
    pub event: u32,
    /// vLPI.
    pub vintid: u32,
    /// Target vCPU.
    pub vcpu: usize,
}

/// A translation's result: the vLPI to make pending and its vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// vLPI.
    pub vintid: u32,
    /// Target vCPU.
    pub vcpu: usize,
}

/// The guest-visible ITS of one guest: `DEVS` device slots, `EVENTS` EventIDs per
/// device (a power of two), `COLLS` collections (≤ 255).
pub struct VIts<const DEVS: usize, const EVENTS: usize, const COLLS: usize> {
    cfg: ItsConfig,
    ctlr: u32,
    cbaser: u64,
    cwriter: u64,
    /// Offset of the next command; `stalled` says whether it failed.
    creadr: u64,
    stalled: bool,
    baser: [u64; 2],
    devs: [Dte<EVENTS>; DEVS],
    /// The vCPU each collection is mapped to.
    colls: [Option<usize>; COLLS],
    /// Valid ITT entries naming each collection (so MAPC scans only when it matters).
    on_coll: [u32; COLLS],
    /// A bit per vINTID some ITT entry names.
    used: [u64; INTID_WORDS],
    errors: ErrorCounters,
    cmd_errors: CmdErrors,
}

/// `GITS_BASER<n>` bits the guest can write: Valid, InnerCache, OuterCache,
/// Physical_Address [47:12], Shareability, Page_Size, Size.
const BASER_RW: u64 = (1 << 63) | (7 << 59) | (7 << 53) | 0x0000_ffff_ffff_f000 | 0xfff;
/// `GITS_CBASER` bits the guest can write: Valid, InnerCache, OuterCache,
/// Physical_Address [51:12], Shareability, Size.
const CBASER_RW: u64 = (1 << 63) | (7 << 59) | (7 << 53) | 0x000f_ffff_ffff_f000 | (3 << 10) | 0xff;
/// Entry_Size field: 8-byte entries.
const ENTRY_SIZE_8: u64 = 7 << 48;

fn field(w: u64, shift: u32, bits: u32) -> u64 {
    (w >> shift) & ((1u64 << bits) - 1)
}

/// Bits needed to number `n` things (at least 1).
fn bits_for(n: usize) -> u32 {
    (usize::BITS - n.saturating_sub(1).leading_zeros()).max(1)
}

/// Why a (DeviceID, EventID) lookup failed.
enum Miss {
    DeviceOor,
    DeviceUnmapped,
    EventOor,
    EventUnmapped,
}

impl<const DEVS: usize, const EVENTS: usize, const COLLS: usize> VIts<DEVS, EVENTS, COLLS> {
    /// A disabled ITS with empty tables.
    pub fn new(cfg: ItsConfig) -> Result<Self, ConfigError> {
        if cfg.vcpus == 0 || cfg.vcpus > 1 << 16 {
            return Err(ConfigError::Vcpus);
        }
        if !(14..=MAX_INTID_BITS).contains(&cfg.intid_bits) {
            return Err(ConfigError::IntidBits);
        }
        if !(1..=32).contains(&cfg.device_bits) {
            return Err(ConfigError::DeviceBits);
        }
        if !EVENTS.is_power_of_two() || !(2..=1 << 16).contains(&EVENTS) {
            return Err(ConfigError::Events);
        }
        if COLLS == 0 || COLLS > 255 || DEVS == 0 {
            return Err(ConfigError::Capacity);
        }
        let empty = Dte {
            valid: false,
            id: 0,
            itt: 0,
            bits: 0,
            ites: [Ite::default(); EVENTS],
        };
        Ok(VIts {
            cfg,
            ctlr: 0,
            cbaser: 0,
            cwriter: 0,
            creadr: 0,
            stalled: false,
            baser: [
                (gits::TYPE_DEVICE << 56) | ENTRY_SIZE_8,
                (gits::TYPE_COLLECTION << 56) | ENTRY_SIZE_8,
            ],
            devs: [empty; DEVS],
            colls: [None; COLLS],
            on_coll: [0; COLLS],
            used: [0; INTID_WORDS],
            errors: ErrorCounters::default(),
            cmd_errors: CmdErrors::default(),
        })
    }

    /// Guest register accesses ignored so far.
    pub fn errors(&self) -> ErrorCounters {
        self.errors
    }

    /// Guest commands ignored (or stalled on) so far.
    pub fn cmd_errors(&self) -> CmdErrors {
        self.cmd_errors
    }

    /// `GITS_CTLR.Enabled`.
    pub fn enabled(&self) -> bool {
        self.ctlr & gits::CTLR_ENABLED != 0
    }

    /// `GITS_CREADR` as the guest reads it.
    pub fn creadr(&self) -> u64 {
        self.creadr
            | if self.stalled {
                gits::CREADR_STALLED
            } else {
                0
            }
    }

    /// The vCPU collection `icid` is mapped to.
    pub fn collection(&self, icid: u16) -> Option<usize> {
        self.colls.get(usize::from(icid)).copied().flatten()
    }

    /// The effective mappings (see the module docs), device slot order then EventID.
    pub fn mappings(&self) -> impl Iterator<Item = Mapping> + '_ {
        self.devs.iter().filter(|d| d.valid).flat_map(move |d| {
            d.ites.iter().enumerate().filter_map(move |(e, ite)| {
                let vcpu = self.live(ite)?;
                Some(Mapping {
                    device: d.id,
                    event: e as u32,
                    vintid: ite.vintid,
                    vcpu,
                })
            })
        })
    }

    /// `GITS_TYPER` (see the module docs).
    pub fn typer(&self) -> u64 {
        let event_bits = EVENTS.trailing_zeros();
        let cid_bits = bits_for(COLLS);
        1 // Physical
            | (7 << 4) // ITT_entry_size: 8 bytes
            | (u64::from(event_bits - 1) << 8)
            | (u64::from(self.cfg.device_bits - 1) << 13)
            | ((COLLS as u64) << 24) // HCC
            | (u64::from(cid_bits - 1) << 32)
            | (1 << 36) // CIL
    }

    /// The vINTID and vCPU an MSI of (`device`, `event`) makes pending, if it is
    /// translated: the ITS is enabled and the mapping is effective. A write
    /// that is not translated is dropped, as the architecture says (no error is
    /// reported to the guest; it is counted as [`ErrorCounters::ignored_value`]).
    pub fn translate(&mut self, device: u32, event: u32) -> Option<Delivery> {
        let found = if self.enabled() {
            self.lookup(device, event)
                .ok()
                .and_then(|(s, e)| {
                    let ite = self.devs[s].ites[e];
                    Some((ite.vintid, self.live(&ite)?))
                })
                .map(|(vintid, vcpu)| Delivery { vintid, vcpu })
        } else {
            None
        };
        if found.is_none() {
            ErrorCounters::bump(&mut self.errors.ignored_value);
        }
        found
    }

    /// The vCPU an ITT entry delivers to, if it is valid and its collection mapped.
    fn live(&self, ite: &Ite) -> Option<usize> {
        if !ite.valid {
            return None;
        }
        self.collection(ite.icid)
    }

    fn device_in_range(&self, device: u32) -> bool {
        let bits = self.cfg.device_bits;
        if bits < 32 && u64::from(device) >> bits != 0 {
            return false;
        }
        let b = self.baser[0];
        if b & gits::VALID == 0 {
            return false;
        }
        let page: u64 = match field(b, 8, 2) {
            0 => 0x1000,
            1 => 0x4000,
            _ => 0x1_0000,
        };
        let entries = (field(b, 0, 8) + 1) * page / 8;
        u64::from(device) < entries
    }

    fn slot(&self, device: u32) -> Option<usize> {
        self.devs.iter().position(|d| d.valid && d.id == device)
    }

    /// The slot and EventID of a valid ITT entry.
    fn lookup(&self, device: u32, event: u32) -> Result<(usize, usize), Miss> {
        if !self.device_in_range(device) {
            return Err(Miss::DeviceOor);
        }
        let s = self.slot(device).ok_or(Miss::DeviceUnmapped)?;
        let d = &self.devs[s];
        if u64::from(event) >> d.bits != 0 {
            return Err(Miss::EventOor);
        }
        let e = event as usize;
        match d.ites.get(e) {
            Some(ite) if ite.valid => Ok((s, e)),
            Some(_) => Err(Miss::EventUnmapped),
            None => Err(Miss::EventOor),
        }
    }

    fn count_miss(&mut self, m: Miss) {
        let c = &mut self.cmd_errors;
        ErrorCounters::bump(match m {
            Miss::DeviceOor => &mut c.device_oor,
            Miss::DeviceUnmapped => &mut c.device_unmapped,
            Miss::EventOor => &mut c.event_oor,
            Miss::EventUnmapped => &mut c.event_unmapped,
        });
    }

    fn used(&self, vintid: u32) -> bool {
        self.used
            .get(vintid as usize / 64)
            .is_some_and(|w| w >> (vintid % 64) & 1 != 0)
    }

    fn set_used(&mut self, vintid: u32, on: bool) {
        if let Some(w) = self.used.get_mut(vintid as usize / 64) {
            let bit = 1u64 << (vintid % 64);
            if on {
                *w |= bit;
            } else {
                *w &= !bit;
            }
        }
    }

    /// Invalidate ITT entry `e` of slot `s`, reporting an Unmap if it was a mapping.
    fn drop_ite(&mut self, s: usize, e: usize, sink: &mut impl ItsSink) {
        let Some(ite) = self.devs.get(s).and_then(|d| d.ites.get(e)).copied() else {
            return;
        };
        if !ite.valid {
            return;
        }
        if let Some(vcpu) = self.live(&ite) {
            sink.act(HostAction::Unmap {
                device: self.devs[s].id,
                event: e as u32,
                vintid: ite.vintid,
                vcpu,
            });
        }
        self.set_used(ite.vintid, false);
        if let Some(n) = self.on_coll.get_mut(usize::from(ite.icid)) {
            *n = n.saturating_sub(1);
        }
        self.devs[s].ites[e] = Ite::default();
    }

    /// Execute one 32-byte command (its four doublewords, as read little-endian from
    /// the queue), whatever `GITS_CTLR` says: what the queue does per command, for
    /// replaying a command stream without a queue.
    pub fn execute(&mut self, dw: [u64; 4], sink: &mut impl ItsSink) {
        let code = (dw[0] & 0xff) as u8;
        let device = (dw[0] >> 32) as u32;
        let event = dw[1] as u32;
        let icid = dw[2] as u16;
        match code {
            gits::cmd::MAPD => self.mapd(
                device,
                field(dw[1], 0, 5) as u32 + 1,
                dw[2] & 0x000f_ffff_ffff_ff00,
                dw[2] >> 63 != 0,
                sink,
            ),
            gits::cmd::MAPC => self.mapc(icid, field(dw[2], 16, 36), dw[2] >> 63 != 0, sink),
            gits::cmd::MAPTI => self.mapti(device, event, (dw[1] >> 32) as u32, icid, sink),
            gits::cmd::MAPI => self.mapti(device, event, event, icid, sink),
            gits::cmd::MOVI => self.movi(device, event, icid, sink),
            gits::cmd::DISCARD => match self.lookup(device, event) {
                Ok((s, e)) => self.drop_ite(s, e, sink),
                Err(m) => self.count_miss(m),
            },
            gits::cmd::INV | gits::cmd::INT | gits::cmd::CLEAR => {
                let Some(m) = self.mapped(device, event) else {
                    return;
                };
                let (device, event, vintid, vcpu) = (m.device, m.event, m.vintid, m.vcpu);
                sink.act(match code {
                    gits::cmd::INV => HostAction::Inv {
                        device,
                        event,
                        vintid,
                        vcpu,
                    },
                    gits::cmd::INT => HostAction::Int {
                        device,
                        event,
                        vintid,
                        vcpu,
                    },
                    _ => HostAction::Clear {
                        device,
                        event,
                        vintid,
                        vcpu,
                    },
                });
            }
            gits::cmd::INVALL => {
                if let Some(vcpu) = self.mapped_coll(icid) {
                    sink.act(HostAction::InvAll { vcpu });
                }
            }
            gits::cmd::SYNC => {
                if let Some(vcpu) = self.rdbase(field(dw[2], 16, 36)) {
                    sink.act(HostAction::Sync { vcpu });
                }
            }
            gits::cmd::MOVALL => {
                let from = self.rdbase(field(dw[2], 16, 36));
                let to = from.and_then(|_| self.rdbase(field(dw[3], 16, 36)));
                if let (Some(from_vcpu), Some(to_vcpu)) = (from, to) {
                    if from_vcpu != to_vcpu {
                        sink.act(HostAction::MovAll { from_vcpu, to_vcpu });
                    }
                }
            }
            _ => ErrorCounters::bump(&mut self.cmd_errors.unknown),
        }
    }

    /// An RDbase (processor number) as a vCPU, or a counted error.
    fn rdbase(&mut self, rd: u64) -> Option<usize> {
        let v = usize::try_from(rd).ok().filter(|&v| v < self.cfg.vcpus);
        if v.is_none() {
            ErrorCounters::bump(&mut self.cmd_errors.rdbase_oor);
        }
        v
    }

    /// The vCPU of a mapped collection, or a counted error.
    fn mapped_coll(&mut self, icid: u16) -> Option<usize> {
        if usize::from(icid) >= COLLS {
            ErrorCounters::bump(&mut self.cmd_errors.icid_oor);
            return None;
        }
        let v = self.collection(icid);
        if v.is_none() {
            ErrorCounters::bump(&mut self.cmd_errors.collection_unmapped);
        }
        v
    }

    /// The effective mapping of (`device`, `event`), or a counted error.
    fn mapped(&mut self, device: u32, event: u32) -> Option<Mapping> {
        match self.lookup(device, event) {
            Ok((s, e)) => {
                let ite = self.devs[s].ites[e];
                let vcpu = self.mapped_coll(ite.icid)?;
                Some(Mapping {
                    device,
                    event,
                    vintid: ite.vintid,
                    vcpu,
                })
            }
            Err(m) => {
                self.count_miss(m);
                None
            }
        }
    }

    fn mapd(&mut self, device: u32, bits: u32, itt: u64, valid: bool, sink: &mut impl ItsSink) {
        if !self.device_in_range(device) {
            ErrorCounters::bump(&mut self.cmd_errors.device_oor);
            return;
        }
        let old = self.slot(device);
        if !valid {
            if let Some(s) = old {
                for e in 0..EVENTS {
                    self.drop_ite(s, e, sink);
                }
                self.devs[s].valid = false;
            }
            return;
        }
        if bits > EVENTS.trailing_zeros() {
            ErrorCounters::bump(&mut self.cmd_errors.size_oor);
            return;
        }
        let s = match old.or_else(|| self.devs.iter().position(|d| !d.valid)) {
            Some(s) => s,
            None => {
                ErrorCounters::bump(&mut self.cmd_errors.table_full);
                return;
            }
        };
        // Keep the entries that still fit if the ITT stays where it was.
        let keep = if old.is_some() && self.devs[s].itt == itt {
            1usize << bits
        } else {
            0
        };
        for e in keep..EVENTS {
            self.drop_ite(s, e, sink);
        }
        let d = &mut self.devs[s];
        d.valid = true;
        d.id = device;
        d.itt = itt;
        d.bits = bits;
    }

    /// Report `f(mapping)` for every valid ITT entry in collection `icid`.
    fn each_in_coll(&self, icid: u16, mut f: impl FnMut(u32, u32, u32)) {
        if self.on_coll.get(usize::from(icid)).is_none_or(|&n| n == 0) {
            return;
        }
        for d in self.devs.iter().filter(|d| d.valid) {
            for (e, ite) in d.ites.iter().enumerate() {
                if ite.valid && ite.icid == icid {
                    f(d.id, e as u32, ite.vintid);
                }
            }
        }
    }

    fn mapc(&mut self, icid: u16, rd: u64, valid: bool, sink: &mut impl ItsSink) {
        if usize::from(icid) >= COLLS {
            ErrorCounters::bump(&mut self.cmd_errors.icid_oor);
            return;
        }
        let old = self.collection(icid);
        let new = if valid {
            let Some(v) = self.rdbase(rd) else {
                return;
            };
            Some(v)
        } else {
            None
        };
        match (old, new) {
            (None, Some(vcpu)) => self.each_in_coll(icid, |device, event, vintid| {
                sink.act(HostAction::Map {
                    device,
                    event,
                    vintid,
                    vcpu,
                })
            }),
            (Some(vcpu), None) => self.each_in_coll(icid, |device, event, vintid| {
                sink.act(HostAction::Unmap {
                    device,
                    event,
                    vintid,
                    vcpu,
                })
            }),
            (Some(from_vcpu), Some(to_vcpu)) if from_vcpu != to_vcpu => {
                self.each_in_coll(icid, |device, event, vintid| {
                    sink.act(HostAction::Move {
                        device,
                        event,
                        vintid,
                        from_vcpu,
                        to_vcpu,
                    })
                })
            }
            _ => {}
        }
        self.colls[usize::from(icid)] = new;
    }

    fn mapti(&mut self, device: u32, event: u32, vintid: u32, icid: u16, sink: &mut impl ItsSink) {
        if !self.device_in_range(device) {
            ErrorCounters::bump(&mut self.cmd_errors.device_oor);
            return;
        }
        let Some(s) = self.slot(device) else {
            ErrorCounters::bump(&mut self.cmd_errors.device_unmapped);
            return;
        };
        if u64::from(event) >> self.devs[s].bits != 0 || event as usize >= EVENTS {
            ErrorCounters::bump(&mut self.cmd_errors.event_oor);
            return;
        }
        if usize::from(icid) >= COLLS {
            ErrorCounters::bump(&mut self.cmd_errors.icid_oor);
            return;
        }
        if vintid < LPI_BASE || u64::from(vintid) >> self.cfg.intid_bits != 0 {
            ErrorCounters::bump(&mut self.cmd_errors.intid_oor);
            return;
        }
        let e = event as usize;
        let old = self.devs[s].ites[e];
        if self.used(vintid) && !(old.valid && old.vintid == vintid) {
            ErrorCounters::bump(&mut self.cmd_errors.intid_in_use);
            return;
        }
        self.drop_ite(s, e, sink);
        self.devs[s].ites[e] = Ite {
            valid: true,
            vintid,
            icid,
        };
        self.set_used(vintid, true);
        self.on_coll[usize::from(icid)] = self.on_coll[usize::from(icid)].saturating_add(1);
        if let Some(vcpu) = self.collection(icid) {
            sink.act(HostAction::Map {
                device,
                event,
                vintid,
                vcpu,
            });
        }
    }

    fn movi(&mut self, device: u32, event: u32, icid: u16, sink: &mut impl ItsSink) {
        let Some(m) = self.mapped(device, event) else {
            return;
        };
        let Some(to_vcpu) = self.mapped_coll(icid) else {
            return;
        };
        let Ok((s, e)) = self.lookup(device, event) else {
            return;
        };
        let old_icid = self.devs[s].ites[e].icid;
        if let Some(n) = self.on_coll.get_mut(usize::from(old_icid)) {
            *n = n.saturating_sub(1);
        }
        self.on_coll[usize::from(icid)] = self.on_coll[usize::from(icid)].saturating_add(1);
        self.devs[s].ites[e].icid = icid;
        if m.vcpu != to_vcpu {
            sink.act(HostAction::Move {
                device,
                event,
                vintid: m.vintid,
                from_vcpu: m.vcpu,
                to_vcpu,
            });
        }
    }

    /// Bytes of the command queue (`CBASER.Size` + 1 pages of 4 KiB).
    fn queue_bytes(&self) -> u64 {
        (field(self.cbaser, 0, 8) + 1) * 0x1000
    }

    /// Run the queue from `CREADR` to `CWRITER` (see the module docs): at most one
    /// pass over the queue.
    fn process(&mut self, mem: &impl GuestMem, sink: &mut impl ItsSink) {
        if !self.enabled() || self.stalled || self.cbaser & gits::VALID == 0 {
            return;
        }
        let size = self.queue_bytes();
        if self.cwriter >= size || self.creadr >= size {
            return;
        }
        let base = self.cbaser & 0x000f_ffff_ffff_f000;
        for _ in 0..size / CMD_BYTES {
            if self.creadr == self.cwriter {
                break;
            }
            let mut buf = [0u8; CMD_BYTES as usize];
            if mem.read(base + self.creadr, &mut buf).is_err() {
                self.stalled = true;
                ErrorCounters::bump(&mut self.cmd_errors.read_failed);
                return;
            }
            let dw: [u64; 4] = core::array::from_fn(|i| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[i * 8..i * 8 + 8]);
                u64::from_le_bytes(b)
            });
            self.execute(dw, sink);
            self.creadr = (self.creadr + CMD_BYTES) % size;
        }
    }

    /// A guest access to the ITS frames (`value` `Some` for a write, in its low `size`
    /// bytes). Returns what a read sees. A `CWRITER` write (or enabling the ITS) runs
    /// the queue, reading commands through `mem` and reporting to `sink`.
    pub fn access(
        &mut self,
        offset: u64,
        size: u8,
        value: Option<u64>,
        mem: &impl GuestMem,
        sink: &mut impl ItsSink,
    ) -> u64 {
        if offset >= gits::SIZE {
            ErrorCounters::bump(&mut self.errors.unmapped);
            return 0;
        }
        let off = offset as u32;
        if off == gits::TRANSLATER {
            if !self.check(offset, size, &[2, 4]) {
                return 0;
            }
            if value.is_some() {
                // A CPU store: no DeviceID (module docs).
                ErrorCounters::bump(&mut self.errors.ignored_value);
            }
            return 0; // write-only
        }
        let reg64 = matches!(
            off & !7,
            gits::TYPER | gits::CBASER | gits::CWRITER | gits::CREADR
        ) || (gits::BASER..gits::BASER + 64).contains(&off);
        if reg64 {
            if !self.check(offset, size, &[4, 8]) {
                return 0;
            }
            let reg = off & !7;
            let (shift, mask) = match (size, off % 8) {
                (8, _) => (0, u64::MAX),
                (_, 0) => (0, 0xffff_ffff),
                _ => (32, 0xffff_ffff_0000_0000),
            };
            let cur = self.reg64(reg);
            if let Some(v) = value {
                let merged = (cur & !mask) | ((v << shift) & mask);
                self.write64(reg, merged, mem, sink);
            }
            return (cur & mask) >> shift;
        }
        if !self.check(offset, size, &[4]) {
            return 0;
        }
        match off {
            gits::CTLR => {
                if let Some(v) = value {
                    let was = self.enabled();
                    self.ctlr = v as u32 & gits::CTLR_ENABLED;
                    if !was && self.enabled() {
                        self.process(mem, sink);
                    }
                }
                let q = if self.enabled() {
                    0
                } else {
                    gits::CTLR_QUIESCENT
                };
                u64::from(self.ctlr | q)
            }
            gits::IIDR | gits::PIDR2 if value.is_some() => {
                ErrorCounters::bump(&mut self.errors.read_only);
                0
            }
            gits::IIDR => u64::from(IIDR_VIRQ),
            gits::PIDR2 => u64::from(PIDR2_GICV3),
            o if (0xffd0..0x1_0000).contains(&o) => 0, // other ID registers
            _ => {
                ErrorCounters::bump(&mut self.errors.unmapped);
                0
            }
        }
    }

    fn reg64(&self, reg: u32) -> u64 {
        match reg {
            gits::TYPER => self.typer(),
            gits::CBASER => self.cbaser,
            gits::CWRITER => self.cwriter,
            gits::CREADR => self.creadr(),
            r if r == gits::BASER => self.baser[0],
            r if r == gits::BASER + 8 => self.baser[1],
            _ => 0,
        }
    }

    fn write64(&mut self, reg: u32, v: u64, mem: &impl GuestMem, sink: &mut impl ItsSink) {
        match reg {
            gits::TYPER | gits::CREADR => ErrorCounters::bump(&mut self.errors.read_only),
            gits::CBASER => {
                if self.enabled() {
                    ErrorCounters::bump(&mut self.errors.ignored_value);
                } else {
                    self.cbaser = v & CBASER_RW;
                    self.creadr = 0;
                    self.stalled = false;
                }
            }
            gits::CWRITER => {
                let off = v & gits::OFFSET_MASK;
                if self.cbaser & gits::VALID != 0 && off >= self.queue_bytes() {
                    ErrorCounters::bump(&mut self.errors.ignored_value);
                    return;
                }
                self.cwriter = off;
                if v & gits::CWRITER_RETRY != 0 {
                    self.stalled = false;
                }
                self.process(mem, sink);
            }
            r if r == gits::BASER || r == gits::BASER + 8 => {
                let i = ((r - gits::BASER) / 8) as usize;
                if self.enabled() {
                    ErrorCounters::bump(&mut self.errors.ignored_value);
                } else if let Some(b) = self.baser.get_mut(i) {
                    *b = (*b & !BASER_RW) | (v & BASER_RW);
                }
            }
            _ => {} // BASER2..7: RAZ/WI
        }
    }

    fn check(&mut self, offset: u64, size: u8, allowed: &[u8]) -> bool {
        if !allowed.contains(&size) {
            ErrorCounters::bump(&mut self.errors.bad_width);
            false
        } else if offset % u64::from(size) != 0 {
            ErrorCounters::bump(&mut self.errors.misaligned);
            false
        } else {
            true
        }
    }
}

/// The ITS frames as an [`MmioDevice`], with the guest memory its command queue is
/// read from and the sink its commands report to.
pub struct ItsFrames<'a, const DEVS: usize, const EVENTS: usize, const COLLS: usize, M, S>
where
    M: GuestMem,
    S: ItsSink,
{
    /// The ITS.
    pub its: &'a mut VIts<DEVS, EVENTS, COLLS>,
    /// The guest's memory.
    pub mem: &'a M,
    /// Receives the host actions.
    pub sink: &'a mut S,
}

impl<const DEVS: usize, const EVENTS: usize, const COLLS: usize, M, S> MmioDevice
    for ItsFrames<'_, DEVS, EVENTS, COLLS, M, S>
where
    M: GuestMem,
    S: ItsSink,
{
    fn region_size(&self) -> u64 {
        gits::SIZE
    }
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        self.its.access(offset, size, None, self.mem, self.sink)
    }
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        self.its
            .access(offset, size, Some(value), self.mem, self.sink);
    }
    fn errors(&self) -> ErrorCounters {
        self.its.errors()
    }
}

/// An LPI's configuration byte (IHI 0069H §6.1.1) as the guest's LPI configuration
/// table holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LpiConfig {
    /// Priority (bits 7:2; the low two bits read 0).
    pub priority: u8,
    /// Enable (bit 0).
    pub enabled: bool,
}

/// Why [`lpi_config`] read nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LpiConfigError {
    /// Not an LPI, or beyond the table `GICR_PROPBASER.IDbits` describes (an IDbits
    /// below 13 describes no LPIs).
    OutOfRange,
    /// The byte is not in the guest's memory.
    Mem(GuestMemError),
}

/// The configuration of LPI `vintid` from the guest's LPI configuration table named
/// by its `GICR_PROPBASER` value (`Physical_Address` [51:12], `IDbits` [4:0]), read
/// with one checked one-byte copy: what a hypervisor copies into the table its
/// `GICR_VPROPBASER` names when the guest's INV or INVALL asks
/// ([`HostAction::Inv`], [`HostAction::InvAll`]).
pub fn lpi_config(
    mem: &impl GuestMem,
    propbaser: u64,
    vintid: u32,
) -> Result<LpiConfig, LpiConfigError> {
    let id_bits = field(propbaser, 0, 5) as u32 + 1;
    if id_bits < 14 || vintid < LPI_BASE || (id_bits < 32 && vintid >> id_bits != 0) {
        return Err(LpiConfigError::OutOfRange);
    }
    let pa = propbaser & 0x000f_ffff_ffff_f000;
    let mut b = [0u8];
    mem.read(pa + u64::from(vintid - LPI_BASE), &mut b)
        .map_err(LpiConfigError::Mem)?;
    Ok(LpiConfig {
        priority: b[0] & 0xfc,
        enabled: b[0] & 1 != 0,
    })
}
