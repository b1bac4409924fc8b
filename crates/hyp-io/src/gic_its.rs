//! The GICv3/GICv4.0 ITS and LPI formats hyp's host ITS driver uses (Arm IHI 0069,
//! "GIC architecture specification", chapters 6 and 9 for the LPI tables, 5.3/9.19 for
//! the ITS commands, 9.20 for the ITS registers), as pure data: the 32-byte commands
//! hyp sends ([`Cmd`]), the `GITS_BASER<n>` / `GITS_CBASER` / `GITS_CREADR` fields,
//! the redistributor's `GICR_PROPBASER` / `GICR_PENDBASER` and GICv4.0's
//! `GICR_VPROPBASER` / `GICR_VPENDBASER`, the LPI configuration byte — and the command
//! queue's ring arithmetic with its bounded completion wait ([`CmdQueue`]), reached
//! through [`ItsRegs`] so that a fake ITS checks the timeout and stall paths here.
//!
//! Field positions follow the spec as Linux's `its_encode_*` and QEMU's
//! `hw/intc/gicv3_internal.h` spell them (docs/gicv4.md, "Sources"); each test names
//! the field it pins. QEMU skips an unknown or malformed command silently or with a
//! guest error only (docs/gicv4.md §4), so these encodings are checked here and
//! nowhere else.

/// Bytes of one ITS command.
pub const CMD_BYTES: usize = 32;

/// First LPI INTID.
pub const LPI_BASE: u32 = 8192;

/// ITS register offsets (ITS control frame, IHI 0069 9.19).
pub mod gits {
    /// `GITS_CTLR`.
    pub const CTLR: usize = 0x0000;
    /// `GITS_TYPER`.
    pub const TYPER: usize = 0x0008;
    /// `GITS_CBASER`.
    pub const CBASER: usize = 0x0080;
    /// `GITS_CWRITER`.
    pub const CWRITER: usize = 0x0088;
    /// `GITS_CREADR`.
    pub const CREADR: usize = 0x0090;
    /// `GITS_BASER<n>`: `BASER + 8 * n`, n < 8.
    pub const BASER: usize = 0x0100;
    /// `GITS_CTLR.Enabled`.
    pub const CTLR_ENABLED: u64 = 1;
    /// `GITS_CTLR.Quiescent` (bit 31).
    pub const CTLR_QUIESCENT: u64 = 1 << 31;

    /// `GITS_CTLR.ITS_Number` (bits 7:4, GICv4): this ITS's bit in a VMOVP's `ITSList`
    /// when `GITS_TYPER.VMOVP` is 0.
    pub fn ctlr_its_number(ctlr: u64) -> u16 {
        ((ctlr >> 4) & 0xf) as u16
    }
}

/// Redistributor LPI register offsets (RD frame, IHI 0069 9.11) and the GICv4.0 VLPI
/// frame (`RD_base + 0x2_0000`).
pub mod gicr {
    /// `GICR_CTLR`.
    pub const CTLR: usize = 0x0000;
    /// `GICR_CTLR.EnableLPIs`.
    pub const CTLR_ENABLE_LPIS: u32 = 1;
    /// `GICR_PROPBASER`.
    pub const PROPBASER: usize = 0x0070;
    /// `GICR_PENDBASER`.
    pub const PENDBASER: usize = 0x0078;
    /// `GICR_VPROPBASER` (VLPI frame).
    pub const VPROPBASER: usize = 0x2_0070;
    /// `GICR_VPENDBASER` (VLPI frame).
    pub const VPENDBASER: usize = 0x2_0078;
    /// `GICR_TYPER.Processor_Number`: bits 23:8.
    pub fn processor_number(typer: u64) -> u16 {
        (typer >> 8) as u16
    }
}

/// `GITS_TYPER` fields hyp reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GitsTyper(pub u64);

impl GitsTyper {
    /// `Physical` (bit 0).
    pub fn physical(self) -> bool {
        self.0 & 1 != 0
    }
    /// `Virtual` (bit 1): GICv4 direct injection.
    pub fn virt(self) -> bool {
        self.0 & 2 != 0
    }
    /// `ITT_entry_size` (bits 7:4) + 1: bytes of one ITT entry.
    pub fn itt_entry_size(self) -> usize {
        ((self.0 >> 4) & 0xf) as usize + 1
    }
    /// `ID_bits` (bits 12:8) + 1: EventID bits.
    pub fn event_id_bits(self) -> u32 {
        ((self.0 >> 8) & 0x1f) as u32 + 1
    }
    /// `Devbits` (bits 17:13) + 1: DeviceID bits.
    pub fn device_id_bits(self) -> u32 {
        ((self.0 >> 13) & 0x1f) as u32 + 1
    }
    /// `PTA` (bit 19): RDbase is a physical address (1) or a processor number (0).
    pub fn pta(self) -> bool {
        self.0 & (1 << 19) != 0
    }
    /// `VMOVP` (bit 37): VMOVP needs no ITSList/SequenceNumber synchronisation.
    pub fn vmovp(self) -> bool {
        self.0 & (1 << 37) != 0
    }
}

/// What a `GITS_BASER<n>` holds (its `Type`, bits 58:56).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BaserType {
    /// 0: unimplemented.
    None,
    /// 1: device table.
    Device,
    /// 2: vPE table (GICv4).
    Vpe,
    /// 4: collection table.
    Collection,
    /// Anything else (reserved).
    Other(u8),
}

/// A `GITS_BASER<n>` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Baser(pub u64);

impl Baser {
    /// `Valid` (bit 63).
    pub const VALID: u64 = 1 << 63;
    /// `Indirect` (bit 62).
    pub const INDIRECT: u64 = 1 << 62;

    /// `Type`.
    pub fn table_type(self) -> BaserType {
        match (self.0 >> 56) & 7 {
            0 => BaserType::None,
            1 => BaserType::Device,
            2 => BaserType::Vpe,
            4 => BaserType::Collection,
            t => BaserType::Other(t as u8),
        }
    }
    /// `Entry_Size` (bits 52:48) + 1: bytes per entry.
    pub fn entry_size(self) -> usize {
        ((self.0 >> 48) & 0x1f) as usize + 1
    }
    /// `Page_Size` (bits 9:8): 4, 16 or 64 KiB (3 reads as 64 KiB, reserved).
    pub fn page_size(self) -> usize {
        match (self.0 >> 8) & 3 {
            0 => 0x1000,
            1 => 0x4000,
            _ => 0x1_0000,
        }
    }
    /// A flat (not indirect), valid table of `pages` pages of 4 KiB at `pa`
    /// (4 KiB-aligned, below 2^48), keeping the read-only fields of `self` (Type,
    /// Entry_Size) and the cacheability/shareability hyp does not set (0: Device-nGnRnE,
    /// non-shareable — hyp runs with its MMU off). `pages` is 1..=256.
    pub fn flat(self, pa: u64, pages: usize) -> Baser {
        let ro = self.0 & ((7 << 56) | (0x1f << 48));
        let size = (pages.clamp(1, 256) - 1) as u64;
        Baser(Self::VALID | ro | (pa & 0xffff_ffff_f000) | size)
    }
    /// Entries a table of `pages` 4 KiB pages holds.
    pub fn entries(self, pages: usize) -> usize {
        pages * 0x1000 / self.entry_size()
    }
}

/// `GITS_CBASER` for a queue of `pages` 4 KiB pages (1..=256) at `pa` (4 KiB-aligned):
/// `Valid` (63), `Physical_Address` (51:12), `Size` (7:0) = pages − 1.
pub fn cbaser(pa: u64, pages: usize) -> u64 {
    (1 << 63) | (pa & 0x000f_ffff_ffff_f000) | (pages.clamp(1, 256) - 1) as u64
}

/// `GITS_CREADR`: `Offset` (19:5) and `Stalled` (bit 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Creadr(pub u64);

impl Creadr {
    /// Byte offset of the next command the ITS reads.
    pub fn offset(self) -> usize {
        (self.0 & 0x000f_ffe0) as usize
    }
    /// The ITS stopped on a command error.
    pub fn stalled(self) -> bool {
        self.0 & 1 != 0
    }
}

/// `GICR_PROPBASER` (and GICv4.0's `GICR_VPROPBASER`, the same layout): the LPI
/// configuration table at `pa` (4 KiB-aligned), `IDbits` (4:0) = `id_bits` − 1
/// (INTIDs below 2^id_bits). Cacheability and shareability 0 (see [`Baser::flat`]).
pub fn propbaser(pa: u64, id_bits: u32) -> u64 {
    (pa & 0x000f_ffff_ffff_f000) | u64::from(id_bits.clamp(14, 32) - 1)
}

/// `GICR_PENDBASER`: the LPI pending table at `pa` (64 KiB-aligned, 51:16); `PTZ`
/// (bit 62) when the table is known to be zero.
pub fn pendbaser(pa: u64, ptz: bool) -> u64 {
    (u64::from(ptz) << 62) | (pa & 0x000f_ffff_ffff_0000)
}

/// GICv4.0 `GICR_VPENDBASER` fields.
pub mod vpendbaser {
    /// `Valid`: the vPE whose pending table this is, is resident.
    pub const VALID: u64 = 1 << 63;
    /// `IDAI`: implementation-defined area invalid.
    pub const IDAI: u64 = 1 << 62;
    /// `PendingLast`: after Valid 1 → 0, a vLPI of the vPE was pending.
    pub const PENDING_LAST: u64 = 1 << 61;
    /// `Dirty`: the redistributor is still parsing the table (after a Valid change).
    pub const DIRTY: u64 = 1 << 60;

    /// The value that makes the vPE with pending table `vpt` (64 KiB-aligned)
    /// resident (`valid`) or not. `IDAI` is set when making it resident: hyp keeps no
    /// implementation-defined area, so the redistributor must not trust one.
    pub fn value(vpt: u64, valid: bool) -> u64 {
        let pa = vpt & 0x000f_ffff_ffff_0000;
        if valid {
            VALID | IDAI | pa
        } else {
            pa
        }
    }
}

/// An LPI configuration table byte (IHI 0069 6.1.1): `Priority` (7:2, the low two bits
/// of the priority are 0), `Enable` (bit 0); bit 1 is RES1 on GICv3.
pub fn lpi_config(priority: u8, enabled: bool) -> u8 {
    (priority & 0xfc) | 0b10 | u8::from(enabled)
}

/// The ITS commands hyp sends (IHI 0069 5.3; GICv4.0 for the `V*` ones). RDbase is a
/// processor number (`GITS_TYPER.PTA` = 0) or a physical address >> 16 (PTA = 1):
/// whichever, the caller passes what goes in bits 51:16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// 0x08: map `device` to an ITT at `itt` (256-byte aligned) of 2^`event_bits`
    /// events; `valid` false unmaps.
    Mapd {
        device: u32,
        itt: u64,
        event_bits: u32,
        valid: bool,
    },
    /// 0x09: map collection `icid` to redistributor `rdbase`.
    Mapc { icid: u16, rdbase: u64, valid: bool },
    /// 0x0A: map (`device`, `event`) to physical LPI `pintid` in collection `icid`.
    Mapti {
        device: u32,
        event: u32,
        pintid: u32,
        icid: u16,
    },
    /// 0x01: move the LPI of (`device`, `event`) to collection `icid` (a pending one
    /// moves with it).
    Movi { device: u32, event: u32, icid: u16 },
    /// 0x03: make the LPI of (`device`, `event`) pending, as its MSI would.
    Int { device: u32, event: u32 },
    /// 0x04: clear the pending (v)LPI of (`device`, `event`).
    Clear { device: u32, event: u32 },
    /// 0x0F: clear and unmap (`device`, `event`).
    Discard { device: u32, event: u32 },
    /// 0x0C: re-read the LPI configuration of (`device`, `event`).
    Inv { device: u32, event: u32 },
    /// 0x05: wait for the effects on redistributor `rdbase`.
    Sync { rdbase: u64 },
    /// 0x29 (GICv4.0): map vPE `vpeid` to redistributor `rdbase`, its virtual pending
    /// table at `vpt` (64 KiB-aligned) covering 2^`vpt_bits` INTIDs. No GICv4.1 fields
    /// (doorbell, Alloc, PTZ, VConfAddr): they are RES0 on GICv4.0.
    Vmapp {
        vpeid: u16,
        rdbase: u64,
        vpt: u64,
        vpt_bits: u32,
        valid: bool,
    },
    /// 0x2A (GICv4.0): map (`device`, `event`) to vLPI `vintid` of vPE `vpeid`, with
    /// doorbell `doorbell` (a physical LPI, or 1023 for none).
    Vmapti {
        device: u32,
        event: u32,
        vpeid: u16,
        vintid: u32,
        doorbell: u32,
    },
    /// 0x21 (GICv4.0): move the vLPI of (`device`, `event`) to vPE `vpeid`, with
    /// doorbell `doorbell` (a physical LPI, or 1023 for none; always given: D = 1).
    Vmovi {
        device: u32,
        event: u32,
        vpeid: u16,
        doorbell: u32,
    },
    /// 0x22 (GICv4.0): move vPE `vpeid` to redistributor `rdbase`; `seq`/`its_list`
    /// are for ITSs without `GITS_TYPER.VMOVP` (0 otherwise).
    Vmovp {
        vpeid: u16,
        rdbase: u64,
        seq: u16,
        its_list: u16,
    },
    /// 0x25 (GICv4.0): wait for the effects on vPE `vpeid`.
    Vsync { vpeid: u16 },
    /// 0x2D (GICv4.0): re-read the vLPI configuration of vPE `vpeid`.
    Vinvall { vpeid: u16 },
}

/// Command codes (DW0 bits 7:0).
pub mod code {
    pub const MOVI: u8 = 0x01;
    pub const INT: u8 = 0x03;
    pub const CLEAR: u8 = 0x04;
    pub const SYNC: u8 = 0x05;
    pub const MAPD: u8 = 0x08;
    pub const MAPC: u8 = 0x09;
    pub const MAPTI: u8 = 0x0a;
    pub const INV: u8 = 0x0c;
    pub const DISCARD: u8 = 0x0f;
    pub const VMOVI: u8 = 0x21;
    pub const VMOVP: u8 = 0x22;
    pub const VSYNC: u8 = 0x25;
    pub const VMAPP: u8 = 0x29;
    pub const VMAPTI: u8 = 0x2a;
    pub const VINVALL: u8 = 0x2d;
}

const RDBASE_MASK: u64 = 0x0000_000f_ffff_ffff; // 36 bits, placed at 51:16

fn devid(w: &mut [u64; 4], device: u32) {
    w[0] |= u64::from(device) << 32;
}
fn eventid(w: &mut [u64; 4], event: u32) {
    w[1] |= u64::from(event);
}
fn vpe(w: &mut [u64; 4], vpeid: u16) {
    w[1] |= u64::from(vpeid) << 32;
}
fn rdbase(w: &mut [u64; 4], rd: u64) {
    w[2] |= (rd & RDBASE_MASK) << 16;
}
fn valid(w: &mut [u64; 4], v: bool) {
    w[2] |= u64::from(v) << 63;
}

impl Cmd {
    /// Its code.
    pub fn code(self) -> u8 {
        match self {
            Cmd::Mapd { .. } => code::MAPD,
            Cmd::Mapc { .. } => code::MAPC,
            Cmd::Mapti { .. } => code::MAPTI,
            Cmd::Movi { .. } => code::MOVI,
            Cmd::Int { .. } => code::INT,
            Cmd::Clear { .. } => code::CLEAR,
            Cmd::Discard { .. } => code::DISCARD,
            Cmd::Inv { .. } => code::INV,
            Cmd::Sync { .. } => code::SYNC,
            Cmd::Vmapp { .. } => code::VMAPP,
            Cmd::Vmapti { .. } => code::VMAPTI,
            Cmd::Vmovi { .. } => code::VMOVI,
            Cmd::Vmovp { .. } => code::VMOVP,
            Cmd::Vsync { .. } => code::VSYNC,
            Cmd::Vinvall { .. } => code::VINVALL,
        }
    }

    /// Its four doublewords, as the ITS reads them (little-endian in memory).
    pub fn encode(self) -> [u64; 4] {
        let mut w = [u64::from(self.code()), 0, 0, 0];
        match self {
            Cmd::Mapd {
                device,
                itt,
                event_bits,
                valid: v,
            } => {
                devid(&mut w, device);
                w[1] |= u64::from(event_bits.clamp(1, 32) - 1) & 0x1f;
                w[2] |= itt & 0x000f_ffff_ffff_ff00;
                valid(&mut w, v);
            }
            Cmd::Mapc {
                icid,
                rdbase: rd,
                valid: v,
            } => {
                w[2] |= u64::from(icid);
                rdbase(&mut w, rd);
                valid(&mut w, v);
            }
            Cmd::Mapti {
                device,
                event,
                pintid,
                icid,
            } => {
                devid(&mut w, device);
                eventid(&mut w, event);
                w[1] |= u64::from(pintid) << 32;
                w[2] |= u64::from(icid);
            }
            Cmd::Movi {
                device,
                event,
                icid,
            } => {
                devid(&mut w, device);
                eventid(&mut w, event);
                w[2] |= u64::from(icid);
            }
            Cmd::Int { device, event }
            | Cmd::Clear { device, event }
            | Cmd::Discard { device, event }
            | Cmd::Inv { device, event } => {
                devid(&mut w, device);
                eventid(&mut w, event);
            }
            Cmd::Sync { rdbase: rd } => rdbase(&mut w, rd),
            Cmd::Vmapp {
                vpeid,
                rdbase: rd,
                vpt,
                vpt_bits,
                valid: v,
            } => {
                vpe(&mut w, vpeid);
                rdbase(&mut w, rd);
                valid(&mut w, v);
                w[3] |= (vpt & 0x000f_ffff_ffff_0000) | (u64::from(vpt_bits.clamp(1, 32) - 1));
            }
            Cmd::Vmapti {
                device,
                event,
                vpeid,
                vintid,
                doorbell,
            } => {
                devid(&mut w, device);
                eventid(&mut w, event);
                vpe(&mut w, vpeid);
                w[2] |= u64::from(vintid) | (u64::from(doorbell) << 32);
            }
            Cmd::Vmovi {
                device,
                event,
                vpeid,
                doorbell,
            } => {
                devid(&mut w, device);
                eventid(&mut w, event);
                vpe(&mut w, vpeid);
                w[2] |= 1 | (u64::from(doorbell) << 32);
            }
            Cmd::Vmovp {
                vpeid,
                rdbase: rd,
                seq,
                its_list,
            } => {
                w[0] |= u64::from(seq) << 32;
                w[1] |= u64::from(its_list);
                vpe(&mut w, vpeid);
                rdbase(&mut w, rd);
            }
            Cmd::Vsync { vpeid } | Cmd::Vinvall { vpeid } => vpe(&mut w, vpeid),
        }
        w
    }
}

/// [`crate::poll_bounded`], here for the ITS's callers (`GICR_VPENDBASER.Dirty`,
/// `GITS_CTLR.Quiescent`).
pub use crate::poll_bounded;

/// Register access to one ITS (hyp: MMIO in `arch`; tests: a fake).
pub trait ItsRegs {
    /// Read the 64-bit register at `off`.
    fn read(&self, off: usize) -> u64;
    /// Write the 64-bit register at `off`.
    fn write(&mut self, off: usize, v: u64);
    /// Store command `cmd` at byte `off` of the queue memory.
    fn put_cmd(&mut self, off: usize, cmd: [u64; 4]);
    /// A monotonic clock in the unit of [`CmdQueue`]'s bound (hyp: the counter).
    fn now(&self) -> u64;
}

/// Why a command did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItsError {
    /// `GITS_CREADR` did not reach the command's end within the bound: the ITS did not
    /// consume command `cmd` (its code) at queue offset `offset`; `creadr` is where it
    /// stood.
    Timeout {
        cmd: u8,
        offset: usize,
        creadr: usize,
    },
    /// The ITS stalled (`GITS_CREADR.Stalled`) on the command at `offset` (its code
    /// `cmd`, when that offset is one hyp wrote in this batch).
    Stalled { cmd: Option<u8>, offset: usize },
    /// The queue has no room for a command: the ITS did not free a slot within the
    /// bound (`creadr` where it stood).
    QueueFull { creadr: usize },
}

impl core::fmt::Display for ItsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            ItsError::Timeout {
                cmd,
                offset,
                creadr,
            } => write!(
                f,
                "ITS command {cmd:#04x} at queue offset {offset:#x} not consumed in time (GITS_CREADR {creadr:#x})"
            ),
            ItsError::Stalled { cmd, offset } => write!(
                f,
                "ITS stalled on command {cmd:02x?} at queue offset {offset:#x} (GITS_CREADR.Stalled)"
            ),
            ItsError::QueueFull { creadr } => write!(
                f,
                "ITS command queue full: no free slot in time (GITS_CREADR {creadr:#x})"
            ),
        }
    }
}

/// The command queue's software side: where hyp writes next, the queue's size, and
/// the completion bound.
#[derive(Clone, Copy, Debug)]
pub struct CmdQueue {
    /// Bytes of the queue (a multiple of 4 KiB).
    pub size: usize,
    /// Next write offset (`GITS_CWRITER`).
    pub write: usize,
    /// Longest wait, in [`ItsRegs::now`] units.
    pub bound: u64,
}

impl CmdQueue {
    /// An empty queue of `size` bytes (`GITS_CREADR` = `GITS_CWRITER` = 0, as a write
    /// of `GITS_CBASER` leaves them).
    pub fn new(size: usize, bound: u64) -> CmdQueue {
        CmdQueue {
            size,
            write: 0,
            bound,
        }
    }

    fn next(&self, off: usize) -> usize {
        (off + CMD_BYTES) % self.size
    }

    /// Queue `cmds`, publish them (`GITS_CWRITER`), and wait — at most
    /// [`CmdQueue::bound`] for each — until the ITS has consumed them all
    /// (`GITS_CREADR` = `GITS_CWRITER`). At most `size / 32 − 1` commands per call.
    pub fn submit(&mut self, regs: &mut impl ItsRegs, cmds: &[Cmd]) -> Result<(), ItsError> {
        let start = self.write;
        for c in cmds {
            let next = self.next(self.write);
            // Room: the slot after ours must not be the one the ITS reads next.
            let t0 = regs.now();
            loop {
                let r = Creadr(regs.read(gits::CREADR));
                if r.stalled() {
                    return Err(self.stall(r, start, cmds));
                }
                if r.offset() != next {
                    break;
                }
                if regs.now().wrapping_sub(t0) > self.bound {
                    return Err(ItsError::QueueFull { creadr: r.offset() });
                }
            }
            regs.put_cmd(self.write, c.encode());
            self.write = next;
        }
        regs.write(gits::CWRITER, self.write as u64);
        let t0 = regs.now();
        loop {
            let r = Creadr(regs.read(gits::CREADR));
            if r.stalled() {
                return Err(self.stall(r, start, cmds));
            }
            if r.offset() == self.write {
                return Ok(());
            }
            if regs.now().wrapping_sub(t0) > self.bound {
                // The first command not consumed.
                let (cmd, offset) = self
                    .at(r.offset(), start, cmds)
                    .map_or((cmds.last().map_or(0, |c| c.code()), r.offset()), |c| {
                        (c, r.offset())
                    });
                return Err(ItsError::Timeout {
                    cmd,
                    offset,
                    creadr: r.offset(),
                });
            }
        }
    }

    /// The code of the command of this batch at queue offset `off`.
    fn at(&self, off: usize, start: usize, cmds: &[Cmd]) -> Option<u8> {
        let idx = (off + self.size - start) % self.size / CMD_BYTES;
        cmds.get(idx).map(|c| c.code())
    }

    fn stall(&self, r: Creadr, start: usize, cmds: &[Cmd]) -> ItsError {
        ItsError::Stalled {
            cmd: self.at(r.offset(), start, cmds),
            offset: r.offset(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use core::cell::Cell;

    // --- commands, field by field (IHI 0069 5.3; Linux its_encode_*) -------------

    #[test]
    fn cmd_code_is_dw0_bits_7_0() {
        for (c, code) in [
            (
                Cmd::Int {
                    device: 0,
                    event: 0,
                },
                0x03,
            ),
            (
                Cmd::Clear {
                    device: 0,
                    event: 0,
                },
                0x04,
            ),
            (Cmd::Sync { rdbase: 0 }, 0x05),
            (
                Cmd::Inv {
                    device: 0,
                    event: 0,
                },
                0x0c,
            ),
            (
                Cmd::Discard {
                    device: 0,
                    event: 0,
                },
                0x0f,
            ),
            (Cmd::Vsync { vpeid: 0 }, 0x25),
            (Cmd::Vinvall { vpeid: 0 }, 0x2d),
        ] {
            assert_eq!(c.encode(), [code, 0, 0, 0], "{c:?}");
        }
    }

    #[test]
    fn mapd_deviceid_63_32_size_4_0_itt_51_8_valid_63() {
        let w = Cmd::Mapd {
            device: 0x1234_5678,
            itt: 0x000f_ffff_ffff_ffff,
            event_bits: 16,
            valid: true,
        }
        .encode();
        assert_eq!(w[0], 0x1234_5678_0000_0008);
        assert_eq!(w[1], 15, "Size = EventID bits - 1");
        assert_eq!(
            w[2],
            (1 << 63) | 0x000f_ffff_ffff_ff00,
            "ITT_addr 51:8, V 63"
        );
        assert_eq!(w[3], 0);
        let w = Cmd::Mapd {
            device: 1,
            itt: 0x100,
            event_bits: 1,
            valid: false,
        }
        .encode();
        assert_eq!(w, [0x1_0000_0008, 0, 0x100, 0]);
    }

    #[test]
    fn mapc_icid_15_0_rdbase_51_16_valid_63() {
        let w = Cmd::Mapc {
            icid: 0xabcd,
            rdbase: 3,
            valid: true,
        }
        .encode();
        assert_eq!(w, [0x09, 0, (1 << 63) | (3 << 16) | 0xabcd, 0]);
        let w = Cmd::Mapc {
            icid: 0,
            rdbase: u64::MAX,
            valid: false,
        }
        .encode();
        assert_eq!(w[2], 0x000f_ffff_ffff_0000, "RDbase is 36 bits at 51:16");
    }

    #[test]
    fn movi_eventid_dw1_31_0_icid_dw2_15_0() {
        let w = Cmd::Movi {
            device: 7,
            event: 0x1234,
            icid: 3,
        }
        .encode();
        assert_eq!(w, [0x7_0000_0001, 0x1234, 3, 0]);
    }

    #[test]
    fn mapti_eventid_dw1_31_0_pintid_dw1_63_32_icid_dw2_15_0() {
        let w = Cmd::Mapti {
            device: 7,
            event: 0xdead_beef,
            pintid: 8200,
            icid: 2,
        }
        .encode();
        assert_eq!(w, [0x7_0000_000a, (8200 << 32) | 0xdead_beef, 2, 0]);
    }

    #[test]
    fn int_clear_inv_discard_carry_device_and_event() {
        let w = Cmd::Int {
            device: 9,
            event: 5,
        }
        .encode();
        assert_eq!(w, [0x9_0000_0003, 5, 0, 0]);
        let w = Cmd::Inv {
            device: 9,
            event: 5,
        }
        .encode();
        assert_eq!(w, [0x9_0000_000c, 5, 0, 0]);
    }

    #[test]
    fn sync_rdbase_51_16() {
        assert_eq!(Cmd::Sync { rdbase: 1 }.encode(), [0x05, 0, 1 << 16, 0]);
    }

    #[test]
    fn vmapp_vpeid_dw1_47_32_rdbase_valid_vpt_dw3_51_16_size_4_0() {
        let w = Cmd::Vmapp {
            vpeid: 0x1ff,
            rdbase: 1,
            vpt: 0x4567_0000,
            vpt_bits: 14,
            valid: true,
        }
        .encode();
        assert_eq!(w[0], 0x29);
        assert_eq!(w[1], 0x1ff << 32, "VPEID 47:32");
        assert_eq!(w[2], (1 << 63) | (1 << 16), "V 63, RDbase 51:16");
        assert_eq!(
            w[3],
            0x4567_0000 | 13,
            "VPT_addr 51:16, VPT_size = bits - 1"
        );
    }

    #[test]
    fn vmapp_has_no_gicv4_1_doorbell_field() {
        // docs/gicv4.md §6: the seed's VMAPP put a default doorbell in DW1[31:0]
        // (GICv4.1 only; RES0 on GICv4.0, and QEMU never reads it).
        let w = Cmd::Vmapp {
            vpeid: u16::MAX,
            rdbase: u64::MAX,
            vpt: u64::MAX,
            vpt_bits: 32,
            valid: true,
        }
        .encode();
        assert_eq!(w[1] & 0xffff_ffff, 0, "DW1[31:0] (Default Doorbell) is 0");
        assert_eq!(w[1] >> 48, 0);
        assert_eq!(w[3] & 0xffff & !0x1f, 0, "no PTZ/Alloc/VConfAddr bits");
        assert_eq!(w[2] & 0xffff, 0);
    }

    #[test]
    fn vmapti_eventid_vpeid_vintid_dw2_31_0_doorbell_dw2_63_32() {
        let w = Cmd::Vmapti {
            device: 2,
            event: 3,
            vpeid: 4,
            vintid: 8192 + 5,
            doorbell: 8192 + 6,
        }
        .encode();
        assert_eq!(w[0], 0x2_0000_002a);
        assert_eq!(w[1], (4 << 32) | 3);
        assert_eq!(w[2], ((8192 + 6) << 32) | (8192 + 5));
        assert_eq!(w[3], 0);
    }

    #[test]
    fn vmovi_eventid_vpeid_dw1_doorbell_dw2_63_32_d_dw2_0() {
        // QEMU's `process_vmovi`: DeviceID DW0[63:32], EventID DW1[31:0], vPEID
        // DW1[47:32], D DW2[0], Doorbell pINTID DW2[63:32].
        let w = Cmd::Vmovi {
            device: 7,
            event: 9,
            vpeid: 3,
            doorbell: 8192 + 2,
        }
        .encode();
        assert_eq!(w, [0x7_0000_0021, (3 << 32) | 9, ((8192 + 2) << 32) | 1, 0]);
    }

    #[test]
    fn vmovp_seq_dw0_47_32_itslist_dw1_15_0_vpeid_rdbase() {
        let w = Cmd::Vmovp {
            vpeid: 6,
            rdbase: 2,
            seq: 0x77,
            its_list: 0x5,
        }
        .encode();
        assert_eq!(w, [(0x77 << 32) | 0x22, (6 << 32) | 5, 2 << 16, 0]);
    }

    #[test]
    fn vsync_and_vinvall_vpeid_dw1_47_32() {
        assert_eq!(Cmd::Vsync { vpeid: 3 }.encode(), [0x25, 3 << 32, 0, 0]);
        assert_eq!(Cmd::Vinvall { vpeid: 3 }.encode(), [0x2d, 3 << 32, 0, 0]);
    }

    // --- registers -----------------------------------------------------------------

    #[test]
    fn gits_ctlr_its_number_bits_7_4() {
        assert_eq!(gits::ctlr_its_number(0x8000_00a1), 0xa);
        assert_eq!(gits::ctlr_its_number(gits::CTLR_QUIESCENT), 0);
    }

    #[test]
    fn gits_typer_fields() {
        // QEMU 10.0.2 gic-version=4: Physical, Virtual, ITT entry 12 bytes (0xb),
        // ID_bits 15, Devbits 15, PTA 0, VMOVP.
        let t = GitsTyper(1 | 2 | (0xb << 4) | (15 << 8) | (15 << 13) | (1 << 37));
        assert!(t.physical() && t.virt() && t.vmovp() && !t.pta());
        assert_eq!(t.itt_entry_size(), 12);
        assert_eq!(t.event_id_bits(), 16);
        assert_eq!(t.device_id_bits(), 16);
        assert!(GitsTyper(1 << 19).pta());
    }

    #[test]
    fn baser_type_58_56_entry_size_52_48_page_size_9_8() {
        let b = Baser((1 << 56) | (7 << 48));
        assert_eq!(b.table_type(), BaserType::Device);
        assert_eq!(b.entry_size(), 8);
        assert_eq!(b.page_size(), 0x1000);
        assert_eq!(Baser(2 << 56).table_type(), BaserType::Vpe);
        assert_eq!(Baser(4 << 56).table_type(), BaserType::Collection);
        assert_eq!(Baser(0).table_type(), BaserType::None);
        assert_eq!(Baser(3 << 56).table_type(), BaserType::Other(3));
        assert_eq!(Baser(1 << 8).page_size(), 0x4000);
        assert_eq!(Baser(2 << 8).page_size(), 0x1_0000);
    }

    #[test]
    fn baser_flat_keeps_type_and_entry_size_sets_valid_pa_size() {
        let b = Baser((4 << 56) | (7 << 48) | (1 << 62) | 0xff);
        let f = b.flat(0x1234_5000, 2);
        assert_eq!(f.0 >> 63, 1, "Valid");
        assert_eq!(f.0 & Baser::INDIRECT, 0, "flat");
        assert_eq!(f.table_type(), BaserType::Collection);
        assert_eq!(f.entry_size(), 8);
        assert_eq!(f.0 & 0xffff_ffff_f000, 0x1234_5000);
        assert_eq!(f.0 & 0xff, 1, "Size = pages - 1");
        assert_eq!(f.0 & (0x3 << 8), 0, "4 KiB pages");
        assert_eq!(f.entries(2), 1024);
        assert_eq!(b.flat(0, 1000).0 & 0xff, 255, "at most 256 pages");
    }

    #[test]
    fn cbaser_valid_pa_size() {
        assert_eq!(cbaser(0x4100_0000, 1), (1 << 63) | 0x4100_0000);
        assert_eq!(cbaser(0x4100_0fff, 4), (1 << 63) | 0x4100_0000 | 3);
    }

    #[test]
    fn creadr_offset_19_5_stalled_0() {
        assert_eq!(Creadr(0x20 | 1).offset(), 0x20);
        assert!(Creadr(1).stalled());
        assert!(!Creadr(0xfffe0).stalled());
        assert_eq!(Creadr(0xffff_ffff).offset(), 0xfffe0);
    }

    #[test]
    fn propbaser_idbits_4_0_pa_51_12() {
        assert_eq!(propbaser(0x4200_1000, 14), 0x4200_1000 | 13);
        assert_eq!(
            propbaser(0x4200_1fff, 1),
            0x4200_1000 | 13,
            "at least 14 bits"
        );
    }

    #[test]
    fn pendbaser_pa_51_16_ptz_62() {
        assert_eq!(pendbaser(0x4201_ffff, false), 0x4201_0000);
        assert_eq!(pendbaser(0x4201_0000, true), (1 << 62) | 0x4201_0000);
    }

    #[test]
    fn vpendbaser_gicv4_0_valid_63_idai_62_pendinglast_61_dirty_60() {
        assert_eq!(vpendbaser::VALID, 1 << 63);
        assert_eq!(vpendbaser::IDAI, 1 << 62);
        assert_eq!(vpendbaser::PENDING_LAST, 1 << 61);
        assert_eq!(vpendbaser::DIRTY, 1 << 60);
        assert_eq!(
            vpendbaser::value(0x4203_0000, true),
            (1 << 63) | (1 << 62) | 0x4203_0000
        );
        assert_eq!(vpendbaser::value(0x4203_ffff, false), 0x4203_0000);
    }

    #[test]
    fn lpi_config_priority_7_2_res1_1_enable_0() {
        assert_eq!(lpi_config(0xa0, true), 0xa3);
        assert_eq!(lpi_config(0xa3, false), 0xa2);
    }

    // --- bounded polls ---------------------------------------------------------------

    #[test]
    fn poll_returns_the_first_value_that_is_done() {
        let n = Cell::new(0u64);
        let r = poll_bounded(
            || {
                n.set(n.get() + 1);
                if n.get() < 3 {
                    vpendbaser::DIRTY
                } else {
                    vpendbaser::PENDING_LAST
                }
            },
            |v| v & vpendbaser::DIRTY == 0,
            || 0,
            10,
        );
        assert_eq!(r, Ok(vpendbaser::PENDING_LAST));
        assert_eq!(n.get(), 3);
    }

    #[test]
    fn poll_gives_up_after_the_bound_with_the_last_value() {
        let clock = Cell::new(u64::MAX - 5); // wraps while polling
        let r = poll_bounded(
            || vpendbaser::DIRTY,
            |v| v & vpendbaser::DIRTY == 0,
            || {
                clock.set(clock.get().wrapping_add(1));
                clock.get()
            },
            20,
        );
        assert_eq!(r, Err(vpendbaser::DIRTY));
        assert!(clock.get() < 100, "ended soon after the bound");
    }

    #[test]
    fn poll_reads_once_with_a_zero_bound() {
        let n = Cell::new(0);
        let r = poll_bounded(
            || {
                n.set(n.get() + 1);
                0
            },
            |v| v == 0,
            || 0,
            0,
        );
        assert_eq!((r, n.get()), (Ok(0), 1));
    }

    // --- the queue, against a fake ITS ---------------------------------------------

    /// A fake ITS: consumes up to `budget` commands per CWRITER write (or `stall_at`
    /// stalls there); a clock that advances by one per read.
    struct Fake {
        creadr: usize,
        cwriter: usize,
        size: usize,
        budget: usize,
        stall_at: Option<usize>,
        cmds: Vec<(usize, [u64; 4])>,
        clock: Cell<u64>,
    }

    impl Fake {
        fn new(size: usize, budget: usize) -> Fake {
            Fake {
                creadr: 0,
                cwriter: 0,
                size,
                budget,
                stall_at: None,
                cmds: Vec::new(),
                clock: Cell::new(0),
            }
        }
    }

    impl ItsRegs for Fake {
        fn read(&self, off: usize) -> u64 {
            self.clock.set(self.clock.get() + 1);
            match off {
                gits::CREADR => self.creadr as u64 | u64::from(self.stall_at == Some(self.creadr)),
                gits::CWRITER => self.cwriter as u64,
                _ => 0,
            }
        }
        fn write(&mut self, off: usize, v: u64) {
            if off == gits::CWRITER {
                self.cwriter = v as usize;
                let mut n = self.budget;
                while n > 0 && self.creadr != self.cwriter && self.stall_at != Some(self.creadr) {
                    self.creadr = (self.creadr + CMD_BYTES) % self.size;
                    n -= 1;
                }
            }
        }
        fn put_cmd(&mut self, off: usize, cmd: [u64; 4]) {
            self.cmds.push((off, cmd));
        }
        fn now(&self) -> u64 {
            self.clock.get()
        }
    }

    const SYNC0: Cmd = Cmd::Sync { rdbase: 0 };
    const INT1: Cmd = Cmd::Int {
        device: 1,
        event: 1,
    };

    #[test]
    fn submit_writes_cwriter_and_returns_when_creadr_reaches_it() {
        let mut its = Fake::new(0x1000, usize::MAX);
        let mut q = CmdQueue::new(0x1000, 100);
        q.submit(&mut its, &[INT1, SYNC0]).unwrap();
        assert_eq!(its.cwriter, 64);
        assert_eq!(its.creadr, 64);
        assert_eq!(its.cmds, [(0, INT1.encode()), (32, SYNC0.encode())]);
    }

    #[test]
    fn submit_wraps_at_the_end_of_the_queue() {
        let mut its = Fake::new(0x1000, usize::MAX);
        let mut q = CmdQueue::new(0x1000, 100);
        for _ in 0..127 {
            q.submit(&mut its, &[SYNC0]).unwrap();
        }
        assert_eq!(q.write, 0x1000 - 32);
        q.submit(&mut its, &[INT1, SYNC0]).unwrap();
        assert_eq!(q.write, 32);
        assert_eq!(its.cmds[127].0, 0x1000 - 32);
        assert_eq!(its.cmds[128].0, 0);
    }

    #[test]
    fn an_its_that_never_consumes_times_out_naming_the_command() {
        let mut its = Fake::new(0x1000, 0);
        let mut q = CmdQueue::new(0x1000, 50);
        let e = q.submit(&mut its, &[INT1, SYNC0]).unwrap_err();
        assert_eq!(
            e,
            ItsError::Timeout {
                cmd: code::INT,
                offset: 0,
                creadr: 0
            }
        );
        let msg = alloc::format!("{e}");
        assert!(
            msg.contains("0x03") && msg.contains("not consumed"),
            "{msg}"
        );
    }

    #[test]
    fn a_partial_consumer_times_out_on_the_first_command_left() {
        let mut its = Fake::new(0x1000, 1);
        let mut q = CmdQueue::new(0x1000, 50);
        let e = q.submit(&mut its, &[INT1, SYNC0]).unwrap_err();
        assert_eq!(
            e,
            ItsError::Timeout {
                cmd: code::SYNC,
                offset: 32,
                creadr: 32
            }
        );
    }

    #[test]
    fn a_stall_is_reported_with_its_command() {
        let mut its = Fake::new(0x1000, usize::MAX);
        its.stall_at = Some(32);
        let mut q = CmdQueue::new(0x1000, 50);
        let e = q.submit(&mut its, &[INT1, SYNC0]).unwrap_err();
        assert_eq!(
            e,
            ItsError::Stalled {
                cmd: Some(code::SYNC),
                offset: 32
            }
        );
    }

    #[test]
    fn a_full_queue_waits_with_a_bound() {
        // One page = 128 slots: the 128th command has no room while the ITS consumes
        // nothing.
        let mut its = Fake::new(0x1000, 0);
        let mut q = CmdQueue::new(0x1000, 20);
        let cmds = [SYNC0; 128];
        let e = q.submit(&mut its, &cmds).unwrap_err();
        assert_eq!(e, ItsError::QueueFull { creadr: 0 });
    }
}
