//! The Arm SMMUv3 (Arm IHI 0070, "SMMU architecture version 3") as hyp uses it: a
//! linear stream table of stage-2-only STEs, the command queue (`CMD_CFGI_STE`,
//! `CMD_TLBI_S12_VMALL`, `CMD_TLBI_S2_IPA`, `CMD_SYNC`) with every wait bounded, and
//! the event queue drained into decoded records.
//!
//! The driver ([`Smmu`]) is generic over [`SmmuRegs`]: hyp gives it MMIO and its own
//! memory for the tables and queues (`hv/src/arch/aarch64/smmu.rs`), the tests a fake
//! that consumes commands and produces events the way QEMU's `hw/arm/smmuv3.c` does.
//! Sections cited are IHI 0070 (G.b)'s.
use alloc::vec::Vec;

/// Register offsets (6.3). Page 1 (the event queue's PROD/CONS) is at +64 KiB.
pub mod regs {
    pub const IDR0: usize = 0x00;
    pub const IDR1: usize = 0x04;
    pub const IDR2: usize = 0x08;
    pub const IDR3: usize = 0x0c;
    pub const IDR4: usize = 0x10;
    pub const IDR5: usize = 0x14;
    pub const CR0: usize = 0x20;
    pub const CR0ACK: usize = 0x24;
    pub const CR1: usize = 0x28;
    pub const CR2: usize = 0x2c;
    pub const GBPA: usize = 0x44;
    pub const IRQ_CTRL: usize = 0x50;
    pub const IRQ_CTRLACK: usize = 0x54;
    pub const GERROR: usize = 0x60;
    pub const GERRORN: usize = 0x64;
    pub const STRTAB_BASE: usize = 0x80;
    pub const STRTAB_BASE_CFG: usize = 0x88;
    pub const CMDQ_BASE: usize = 0x90;
    pub const CMDQ_PROD: usize = 0x98;
    pub const CMDQ_CONS: usize = 0x9c;
    pub const EVENTQ_BASE: usize = 0xa0;
    pub const EVENTQ_PROD: usize = 0x1_00a8;
    pub const EVENTQ_CONS: usize = 0x1_00ac;
    /// Bytes of the register window hyp needs (pages 0 and 1).
    pub const SIZE: usize = 0x2_0000;

    /// `SMMU_CR0` (6.3.9).
    pub const CR0_SMMUEN: u32 = 1 << 0;
    pub const CR0_EVENTQEN: u32 = 1 << 2;
    pub const CR0_CMDQEN: u32 = 1 << 3;
    /// `SMMU_CR1`: queues and tables Inner/Outer Write-Back, Inner Shareable.
    pub const CR1_WB_IS: u32 = 1 | 1 << 2 | 3 << 4 | 1 << 6 | 1 << 8 | 3 << 10;
    /// `SMMU_CR2.RECINVSID`: record `C_BAD_STREAMID` events.
    pub const CR2_RECINVSID: u32 = 1 << 1;
    /// `SMMU_IRQ_CTRL`: global-error and event-queue interrupts.
    pub const IRQ_GERROR: u32 = 1 << 0;
    pub const IRQ_EVENTQ: u32 = 1 << 2;
    /// `SMMU_GERROR.CMDQ_ERR`.
    pub const GERROR_CMDQ_ERR: u32 = 1 << 0;
    /// `SMMU_GBPA.ABORT`, `UPDATE`.
    pub const GBPA_ABORT: u32 = 1 << 20;
    pub const GBPA_UPDATE: u32 = 1 << 31;
}

/// The ID registers (6.3.1–6.3.6), all read at probe; hyp decides on IDR0, IDR1 and
/// IDR5 and prints the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Idr {
    pub idr0: u32,
    pub idr1: u32,
    /// `SMMU_IDR2`: `BA_VATOS` (not used).
    pub idr2: u32,
    /// `SMMU_IDR3`: `RIL` (range invalidation), `HAD`, … (not used).
    pub idr3: u32,
    /// `SMMU_IDR4`: IMPLEMENTATION DEFINED.
    pub idr4: u32,
    pub idr5: u32,
}

impl Idr {
    /// `IDR0.S2P`: stage-2 translation.
    pub fn s2p(self) -> bool {
        self.idr0 & 1 != 0
    }
    /// `IDR0.S1P`.
    pub fn s1p(self) -> bool {
        self.idr0 & 2 != 0
    }
    /// `IDR0.TTF` includes AArch64 tables (0b10 or 0b11).
    pub fn aarch64_tables(self) -> bool {
        (self.idr0 >> 2) & 3 >= 2
    }
    /// `IDR0.COHACC`: coherent table and queue walks.
    pub fn coherent(self) -> bool {
        self.idr0 & (1 << 4) != 0
    }
    /// `IDR0.VMID16`.
    pub fn vmid16(self) -> bool {
        self.idr0 & (1 << 18) != 0
    }
    /// `IDR0.TTENDIAN` allows little-endian walks (0b00 mixed or 0b10 LE).
    pub fn little_endian(self) -> bool {
        matches!((self.idr0 >> 21) & 3, 0 | 2)
    }
    /// `IDR0.ST_LEVEL`: 0 linear only, 1 two-level too.
    pub fn st_level(self) -> u32 {
        (self.idr0 >> 27) & 3
    }
    /// `IDR1.SIDSIZE`: StreamID bits.
    pub fn sid_bits(self) -> u32 {
        self.idr1 & 0x3f
    }
    /// `IDR1.EVENTQS`: log2 of the largest event queue.
    pub fn eventq_max_log2(self) -> u32 {
        (self.idr1 >> 16) & 0x1f
    }
    /// `IDR1.CMDQS`.
    pub fn cmdq_max_log2(self) -> u32 {
        (self.idr1 >> 21) & 0x1f
    }
    /// `IDR1.TABLES_PRESET` / `QUEUES_PRESET`: fixed bases hyp cannot program.
    pub fn preset(self) -> bool {
        self.idr1 & (3 << 29) != 0
    }
    /// `IDR5.GRAN4K`.
    pub fn gran4k(self) -> bool {
        self.idr5 & (1 << 4) != 0
    }
    /// `IDR5.OAS` as bits (0b000 32, 36, 40, 42, 44, 48, 52).
    pub fn oas_bits(self) -> u32 {
        match self.idr5 & 7 {
            0 => 32,
            1 => 36,
            2 => 40,
            3 => 42,
            4 => 44,
            5 => 48,
            _ => 52,
        }
    }

    /// What hyp needs and this SMMU lacks, if anything: stage 2, AArch64 4 KiB tables,
    /// little-endian walks, coherent access, programmable bases, `pa_bits` of output.
    pub fn check(self, pa_bits: u32) -> Result<(), &'static str> {
        if !self.s2p() {
            return Err("no stage 2 (IDR0.S2P = 0)");
        }
        if !self.aarch64_tables() || !self.gran4k() {
            return Err("no AArch64 4 KiB-granule tables (IDR0.TTF, IDR5.GRAN4K)");
        }
        if !self.little_endian() {
            return Err("big-endian walks only (IDR0.TTENDIAN)");
        }
        if !self.coherent() {
            return Err(
                "non-coherent table walks (IDR0.COHACC = 0): hyp does no cache maintenance",
            );
        }
        if self.preset() {
            return Err("preset tables or queues (IDR1.TABLES_PRESET/QUEUES_PRESET)");
        }
        if self.oas_bits() < pa_bits {
            return Err("output addresses narrower than the stage-2 tables' (IDR5.OAS)");
        }
        Ok(())
    }
}

/// The stage-2 walk parameters of an STE (5.2, STE dword 2), derived from the
/// `VTCR_EL2` the CPU uses for the same tables, so the SMMU walks them the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct S2Walk {
    /// `S2T0SZ` = `VTCR_EL2.T0SZ`.
    pub t0sz: u8,
    /// `S2SL0` = `VTCR_EL2.SL0`.
    pub sl0: u8,
    /// `S2IR0`, `S2OR0`, `S2SH0` = `IRGN0`, `ORGN0`, `SH0`.
    pub ir0: u8,
    pub or0: u8,
    pub sh0: u8,
    /// `S2TG` (0 4 KiB, 1 64 KiB, 2 16 KiB) from `VTCR_EL2.TG0` (0 4 KiB, 1 64 KiB,
    /// 2 16 KiB: the same encoding).
    pub tg: u8,
    /// `S2PS` = `VTCR_EL2.PS`.
    pub ps: u8,
}

impl S2Walk {
    /// The fields of `vtcr` (a `VTCR_EL2` value, Arm ARM D24).
    pub fn from_vtcr(vtcr: u64) -> S2Walk {
        S2Walk {
            t0sz: (vtcr & 0x3f) as u8,
            sl0: ((vtcr >> 6) & 3) as u8,
            ir0: ((vtcr >> 8) & 3) as u8,
            or0: ((vtcr >> 10) & 3) as u8,
            sh0: ((vtcr >> 12) & 3) as u8,
            tg: ((vtcr >> 14) & 3) as u8,
            ps: ((vtcr >> 16) & 7) as u8,
        }
    }
}

/// STE `Config` (5.2): stage 1 bypassed, stage 2 translates.
pub const STE_CONFIG_S2: u64 = 0b110;
/// STE `Config`: abort every transaction (with no event).
pub const STE_CONFIG_ABORT: u64 = 0b000;

/// A stream-table entry: 8 doublewords (5.2).
pub type Ste = [u64; 8];

/// An STE that translates the stream's DMA by stage 2 only, through the tables at
/// `s2ttb` (the same root as the CPU's `VTTBR_EL2.BADDR`) with `walk`, tagged `vmid`:
/// `S2AA64` = 1 (QEMU 10.0.2 asserts on 0), `S2R` = 1 (faults recorded as events),
/// `S2S` = 0 (terminate, no stall), `S2AFFD` = 0 and `S2HA`/`S2HD` = 0 (hyp's leaves have
/// AF set; no hardware flag updates), `S2ENDI` = 0 (little-endian), `S2PTW` = 0.
pub fn ste_stage2(s2ttb: u64, vmid: u16, walk: S2Walk) -> Ste {
    let mut s = [0u64; 8];
    s[0] = 1 | STE_CONFIG_S2 << 1;
    // dword 1: SHCFG (bits 45:44) = 0b01, use the incoming shareability.
    s[1] = 1 << 44;
    s[2] = u64::from(vmid)
        | u64::from(walk.t0sz & 0x3f) << 32
        | u64::from(walk.sl0 & 3) << 38
        | u64::from(walk.ir0 & 3) << 40
        | u64::from(walk.or0 & 3) << 42
        | u64::from(walk.sh0 & 3) << 44
        | u64::from(walk.tg & 3) << 46
        | u64::from(walk.ps & 7) << 48
        | 1 << 51 // S2AA64
        | 1 << 58; // S2R
    s[3] = s2ttb & 0x000f_ffff_ffff_fff0;
    s
}

/// An STE that aborts every transaction (valid, `Config` = abort).
pub fn ste_abort() -> Ste {
    let mut s = [0u64; 8];
    s[0] = 1 | STE_CONFIG_ABORT << 1;
    s
}

/// The commands hyp sends (4.1–4.7), 16 bytes each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    /// `CMD_CFGI_STE` (0x03): drop cached copies of `sid`'s STE (Leaf = 1).
    CfgiSte { sid: u32 },
    /// `CMD_CFGI_ALL` (0x04): every cached STE (Range = 31).
    CfgiAll,
    /// `CMD_TLBI_S12_VMALL` (0x28): every TLB entry of `vmid`.
    TlbiS12Vmall { vmid: u16 },
    /// `CMD_TLBI_S2_IPA` (0x2a): the stage-2 entries of `vmid` for the 4 KiB page at
    /// `ipa` (Leaf = 0: table entries too).
    TlbiS2Ipa { vmid: u16, ipa: u64 },
    /// `CMD_TLBI_NSNH_ALL` (0x30): every non-secure, non-hyp TLB entry.
    TlbiNsnhAll,
    /// `CMD_SYNC` (0x46), CS = SIG_NONE: complete when the SMMU has consumed it (and
    /// every command before it has taken effect).
    Sync,
}

impl Cmd {
    /// The opcode.
    pub fn opcode(self) -> u8 {
        match self {
            Cmd::CfgiSte { .. } => 0x03,
            Cmd::CfgiAll => 0x04,
            Cmd::TlbiS12Vmall { .. } => 0x28,
            Cmd::TlbiS2Ipa { .. } => 0x2a,
            Cmd::TlbiNsnhAll => 0x30,
            Cmd::Sync => 0x46,
        }
    }

    /// The two doublewords.
    pub fn encode(self) -> [u64; 2] {
        let op = u64::from(self.opcode());
        match self {
            Cmd::CfgiSte { sid } => [op | u64::from(sid) << 32, 1],
            Cmd::CfgiAll => [op, 31],
            Cmd::TlbiS12Vmall { vmid } => [op | u64::from(vmid) << 32, 0],
            Cmd::TlbiS2Ipa { vmid, ipa } => {
                [op | u64::from(vmid) << 32, ipa & 0x000f_ffff_ffff_f000]
            }
            Cmd::TlbiNsnhAll | Cmd::Sync => [op, 0],
        }
    }
}

/// `SMMU_CMDQ_CONS.ERR` (bits 30:24) values (7.1).
pub fn cmdq_error_name(err: u32) -> &'static str {
    match err {
        0 => "CERROR_NONE",
        1 => "CERROR_ILL (illegal command)",
        2 => "CERROR_ABT (abort on command fetch)",
        3 => "CERROR_ATC_INV_SYNC",
        _ => "reserved",
    }
}

/// A queue's producer or consumer index: `log2` index bits and the wrap bit above
/// them (3.5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueIdx {
    pub log2: u32,
}

impl QueueIdx {
    fn mask(self) -> u32 {
        (2u32 << self.log2) - 1
    }
    /// Entries.
    pub fn entries(self) -> usize {
        1 << self.log2
    }
    /// The slot an index names.
    pub fn slot(self, p: u32) -> usize {
        (p & ((1 << self.log2) - 1)) as usize
    }
    /// The index after `p` (wrap bit toggled past the end).
    pub fn next(self, p: u32) -> u32 {
        (p & self.mask()).wrapping_add(1) & self.mask()
    }
    /// Empty: same slot, same wrap.
    pub fn empty(self, prod: u32, cons: u32) -> bool {
        prod & self.mask() == cons & self.mask()
    }
    /// Full: same slot, different wrap.
    pub fn full(self, prod: u32, cons: u32) -> bool {
        let (p, c) = (prod & self.mask(), cons & self.mask());
        p != c && self.slot(p) == self.slot(c)
    }
}

/// A queue base register value (`SMMU_CMDQ_BASE`/`EVENTQ_BASE`): RA/WA = 1, the
/// address, `LOG2SIZE`.
pub fn queue_base(pa: u64, log2: u32) -> u64 {
    1 << 62 | (pa & 0x000f_ffff_ffff_ffe0) | u64::from(log2 & 0x1f)
}

/// `SMMU_STRTAB_BASE` (RA = 1) and `SMMU_STRTAB_BASE_CFG` (linear, `LOG2SIZE` = `sid_bits`).
pub fn strtab_base(pa: u64, sid_bits: u32) -> (u64, u32) {
    (1 << 62 | (pa & 0x000f_ffff_ffff_ffc0), sid_bits & 0x3f)
}

/// An event record (7.3), decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The event number (7.3: 0x10 F_TRANSLATION, 0x04 C_BAD_STE, …).
    pub kind: u8,
    /// The StreamID.
    pub sid: u32,
    /// The faulting input address (an IPA for a stage-2-only stream).
    pub addr: u64,
    /// `RnW`: a read.
    pub read: bool,
    /// `S2`: the fault is stage 2's.
    pub s2: bool,
}

impl Event {
    /// Decode a 32-byte record.
    pub fn decode(r: [u64; 4]) -> Event {
        Event {
            kind: (r[0] & 0xff) as u8,
            sid: (r[0] >> 32) as u32,
            addr: r[2],
            read: r[1] & (1 << 35) != 0,
            s2: r[1] & (1 << 39) != 0,
        }
    }

    /// Its name (7.3).
    pub fn name(&self) -> &'static str {
        match self.kind {
            0x01 => "F_UUT",
            0x02 => "C_BAD_STREAMID",
            0x03 => "F_STE_FETCH",
            0x04 => "C_BAD_STE",
            0x05 => "F_BAD_ATS_TREQ",
            0x06 => "F_STREAM_DISABLED",
            0x07 => "F_TRANSL_FORBIDDEN",
            0x08 => "C_BAD_SUBSTREAMID",
            0x09 => "F_CD_FETCH",
            0x0a => "C_BAD_CD",
            0x0b => "F_WALK_EABT",
            0x10 => "F_TRANSLATION",
            0x11 => "F_ADDR_SIZE",
            0x12 => "F_ACCESS",
            0x13 => "F_PERMISSION",
            0x20 => "F_TLB_CONFLICT",
            0x21 => "F_CFG_CONFLICT",
            0x24 => "E_PAGE_REQUEST",
            _ => "unknown",
        }
    }
}

/// Register and memory access to one SMMU (hyp: MMIO and its own memory in `arch`;
/// tests: a fake).
pub trait SmmuRegs {
    fn read32(&self, off: usize) -> u32;
    fn write32(&mut self, off: usize, v: u32);
    fn write64(&mut self, off: usize, v: u64);
    /// Store command `cmd` in slot `slot` of the command queue's memory.
    fn put_cmd(&mut self, slot: usize, cmd: [u64; 2]);
    /// The record in slot `slot` of the event queue's memory.
    fn event(&self, slot: usize) -> [u64; 4];
    /// Store `ste` as entry `sid` of the stream table (dword 0, with V, last).
    fn put_ste(&mut self, sid: u32, ste: Ste);
    /// Physical addresses of the stream table, command queue and event queue.
    fn bases(&self) -> (u64, u64, u64);
    /// A monotonic clock in the unit of [`Smmu`]'s bound.
    fn now(&self) -> u64;
}

/// Why the SMMU did not do what hyp asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmmuError {
    /// It lacks a feature hyp needs.
    Unsupported(&'static str),
    /// `SMMU_CR0ACK` did not take `want` in time (it read `got`).
    Cr0Ack { want: u32, got: u32 },
    /// `SMMU_IRQ_CTRLACK` did not take `want` in time (it read `got`).
    IrqCtrlAck { want: u32, got: u32 },
    /// `SMMU_GBPA.UPDATE` did not clear in time.
    Gbpa(u32),
    /// The command queue stopped on an error (`SMMU_CMDQ_CONS.ERR`) at the command
    /// with `opcode` (`SMMU_GERROR.CMDQ_ERR` set).
    CmdError { err: u32, opcode: u8, cons: u32 },
    /// `SMMU_CMDQ_CONS` did not reach `prod` in time.
    CmdTimeout { prod: u32, cons: u32 },
    /// The StreamID is past the stream table.
    BadSid(u32),
}

impl core::fmt::Display for SmmuError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            SmmuError::Unsupported(w) => write!(f, "SMMUv3 unsupported: {w}"),
            SmmuError::Cr0Ack { want, got } => write!(
                f,
                "SMMU_CR0ACK did not follow SMMU_CR0 = {want:#x} in time (reads {got:#x})"
            ),
            SmmuError::IrqCtrlAck { want, got } => write!(
                f,
                "SMMU_IRQ_CTRLACK did not follow SMMU_IRQ_CTRL = {want:#x} in time (reads {got:#x})"
            ),
            SmmuError::Gbpa(v) => write!(f, "SMMU_GBPA.UPDATE stuck (reads {v:#x})"),
            SmmuError::CmdError { err, opcode, cons } => write!(
                f,
                "SMMU command queue error {} at command {opcode:#04x} (SMMU_CMDQ_CONS {cons:#x}, SMMU_GERROR.CMDQ_ERR)",
                cmdq_error_name(err)
            ),
            SmmuError::CmdTimeout { prod, cons } => write!(
                f,
                "SMMU did not consume its commands in time (SMMU_CMDQ_PROD {prod:#x}, SMMU_CMDQ_CONS {cons:#x})"
            ),
            SmmuError::BadSid(s) => write!(f, "StreamID {s:#x} is past the stream table"),
        }
    }
}

/// Sizes of the structures hyp gives the SMMU.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// StreamID bits the linear stream table covers (64 bytes per STE).
    pub sid_bits: u32,
    /// log2 of the command queue's entries (16 bytes each).
    pub cmdq_log2: u32,
    /// log2 of the event queue's entries (32 bytes each).
    pub eventq_log2: u32,
}

/// Counters (`ACCT smmu …`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub commands: u64,
    pub syncs: u64,
    pub events: u64,
    pub event_overflows: u64,
    pub gerrors: u64,
}

/// The driver: queues' software indices, sizes, the bound of every wait.
pub struct Smmu<R: SmmuRegs> {
    pub regs: R,
    pub idr: Idr,
    sizes: Sizes,
    cmdq: QueueIdx,
    cmd_prod: u32,
    /// The opcode hyp last wrote in each command slot (to name a failing command).
    opcodes: Vec<u8>,
    evtq: QueueIdx,
    evt_cons: u32,
    bound: u64,
    pub counts: Counts,
}

impl<R: SmmuRegs> Smmu<R> {
    /// Probe and bring up the SMMU: check the ID registers, turn it off (`CR0` = 0,
    /// acknowledged), set abort as the global bypass attribute, point it at the stream
    /// table (every entry as `regs` holds it: zero, invalid — a stream's DMA is refused
    /// until [`Smmu::attach`]) and the queues, enable the queues, invalidate every
    /// cached configuration and TLB entry, then enable translation. `pa_bits`: the
    /// output size of the stage-2 tables; `bound`: the longest wait, in
    /// [`SmmuRegs::now`] units.
    pub fn init(regs: R, sizes: Sizes, pa_bits: u32, bound: u64) -> Result<Self, SmmuError> {
        let idr = Idr {
            idr0: regs.read32(regs::IDR0),
            idr1: regs.read32(regs::IDR1),
            idr2: regs.read32(regs::IDR2),
            idr3: regs.read32(regs::IDR3),
            idr4: regs.read32(regs::IDR4),
            idr5: regs.read32(regs::IDR5),
        };
        idr.check(pa_bits).map_err(SmmuError::Unsupported)?;
        if sizes.sid_bits > idr.sid_bits() {
            return Err(SmmuError::Unsupported("fewer StreamID bits than the table"));
        }
        let cmdq_log2 = sizes.cmdq_log2.min(idr.cmdq_max_log2());
        let eventq_log2 = sizes.eventq_log2.min(idr.eventq_max_log2());
        let mut s = Smmu {
            regs,
            idr,
            sizes,
            cmdq: QueueIdx { log2: cmdq_log2 },
            cmd_prod: 0,
            opcodes: alloc::vec![0; 1 << cmdq_log2],
            evtq: QueueIdx { log2: eventq_log2 },
            evt_cons: 0,
            bound,
            counts: Counts::default(),
        };
        s.set_cr0(0)?;
        // Transactions while translation is off abort rather than bypass.
        s.regs
            .write32(regs::GBPA, regs::GBPA_ABORT | regs::GBPA_UPDATE);
        crate::poll_bounded(
            || s.regs.read32(regs::GBPA),
            |v| v & regs::GBPA_UPDATE == 0,
            || s.regs.now(),
            bound,
        )
        .map_err(SmmuError::Gbpa)?;
        let (st, cq, eq) = s.regs.bases();
        s.regs.write32(regs::CR1, regs::CR1_WB_IS);
        s.regs.write32(regs::CR2, regs::CR2_RECINVSID);
        let (base, cfg) = strtab_base(st, sizes.sid_bits);
        s.regs.write64(regs::STRTAB_BASE, base);
        s.regs.write32(regs::STRTAB_BASE_CFG, cfg);
        s.regs.write64(regs::CMDQ_BASE, queue_base(cq, cmdq_log2));
        s.regs.write32(regs::CMDQ_PROD, 0);
        s.regs.write32(regs::CMDQ_CONS, 0);
        s.regs
            .write64(regs::EVENTQ_BASE, queue_base(eq, eventq_log2));
        s.regs.write32(regs::EVENTQ_PROD, 0);
        s.regs.write32(regs::EVENTQ_CONS, 0);
        let irqs = regs::IRQ_GERROR | regs::IRQ_EVENTQ;
        s.regs.write32(regs::IRQ_CTRL, irqs);
        let r = &s.regs;
        crate::poll_bounded(
            || r.read32(regs::IRQ_CTRLACK),
            |a| a == irqs,
            || r.now(),
            bound,
        )
        .map_err(|got| SmmuError::IrqCtrlAck { want: irqs, got })?;
        s.set_cr0(regs::CR0_CMDQEN | regs::CR0_EVENTQEN)?;
        s.submit(&[Cmd::CfgiAll, Cmd::TlbiNsnhAll, Cmd::Sync])?;
        s.set_cr0(regs::CR0_CMDQEN | regs::CR0_EVENTQEN | regs::CR0_SMMUEN)?;
        Ok(s)
    }

    fn set_cr0(&mut self, v: u32) -> Result<(), SmmuError> {
        self.regs.write32(regs::CR0, v);
        let r = &self.regs;
        crate::poll_bounded(
            || r.read32(regs::CR0ACK),
            |a| a == v,
            || r.now(),
            self.bound,
        )
        .map(|_| ())
        .map_err(|got| SmmuError::Cr0Ack { want: v, got })
    }

    /// The command queue's and event queue's entries.
    pub fn queue_entries(&self) -> (usize, usize) {
        (self.cmdq.entries(), self.evtq.entries())
    }

    /// Queue `cmds` and a `CMD_SYNC`, publish them, and wait (bounded) until the SMMU
    /// consumed them all. A stopped queue is reported with the failing command.
    pub fn submit(&mut self, cmds: &[Cmd]) -> Result<(), SmmuError> {
        for &c in cmds {
            // Room: wait until the queue is not full.
            let q = self.cmdq;
            let prod = self.cmd_prod;
            let r = &self.regs;
            crate::poll_bounded(
                || r.read32(regs::CMDQ_CONS),
                |cons| !q.full(prod, cons),
                || r.now(),
                self.bound,
            )
            .map_err(|cons| {
                self.cmd_error(cons)
                    .unwrap_or(SmmuError::CmdTimeout { prod, cons })
            })?;
            self.regs.put_cmd(q.slot(prod), c.encode());
            if let Some(o) = self.opcodes.get_mut(q.slot(prod)) {
                *o = c.opcode();
            }
            self.cmd_prod = q.next(prod);
            self.counts.commands += 1;
            if c == Cmd::Sync {
                self.counts.syncs += 1;
            }
        }
        self.regs.write32(regs::CMDQ_PROD, self.cmd_prod);
        let (q, prod) = (self.cmdq, self.cmd_prod);
        let r = &self.regs;
        let res = crate::poll_bounded(
            || r.read32(regs::CMDQ_CONS),
            |cons| q.empty(prod, cons) || r.read32(regs::GERROR) & regs::GERROR_CMDQ_ERR != 0,
            || r.now(),
            self.bound,
        );
        match res {
            Ok(cons) if q.empty(prod, cons) => Ok(()),
            Ok(cons) | Err(cons) => Err(self
                .cmd_error(cons)
                .unwrap_or(SmmuError::CmdTimeout { prod, cons })),
        }
    }

    /// A stopped command queue: the error and the command it stopped at. hyp does not
    /// restart it (a command hyp encoded wrong is a hyp bug to fix).
    fn cmd_error(&mut self, cons: u32) -> Option<SmmuError> {
        let pending = self.regs.read32(regs::GERROR) ^ self.regs.read32(regs::GERRORN);
        if pending & regs::GERROR_CMDQ_ERR == 0 {
            return None;
        }
        self.counts.gerrors += 1;
        Some(SmmuError::CmdError {
            err: (cons >> 24) & 0x7f,
            opcode: self.opcodes.get(self.cmdq.slot(cons)).copied().unwrap_or(0),
            cons,
        })
    }

    /// Translate `sid`'s DMA by stage 2 through `s2ttb` (tagged `vmid`): write its STE,
    /// drop the SMMU's cached copy and `vmid`'s TLB entries, sync.
    pub fn attach(
        &mut self,
        sid: u32,
        s2ttb: u64,
        vmid: u16,
        walk: S2Walk,
    ) -> Result<(), SmmuError> {
        if sid >> self.sizes.sid_bits != 0 {
            return Err(SmmuError::BadSid(sid));
        }
        self.regs.put_ste(sid, ste_stage2(s2ttb, vmid, walk));
        self.submit(&[Cmd::CfgiSte { sid }, Cmd::TlbiS12Vmall { vmid }, Cmd::Sync])
    }

    /// Refuse `sid`'s DMA again (an aborting STE), invalidate, sync.
    pub fn detach(&mut self, sid: u32, vmid: u16) -> Result<(), SmmuError> {
        if sid >> self.sizes.sid_bits != 0 {
            return Err(SmmuError::BadSid(sid));
        }
        self.regs.put_ste(sid, ste_abort());
        self.submit(&[Cmd::CfgiSte { sid }, Cmd::TlbiS12Vmall { vmid }, Cmd::Sync])
    }

    /// Drop `vmid`'s stage-2 TLB entries for the page at `ipa` (after a stage-2 change).
    pub fn invalidate_ipa(&mut self, vmid: u16, ipa: u64) -> Result<(), SmmuError> {
        self.submit(&[Cmd::TlbiS2Ipa { vmid, ipa }, Cmd::Sync])
    }

    /// Take every event record the SMMU wrote since the last call (at most one queue's
    /// worth), counted; the queue's consumer index follows. An overflow
    /// (`SMMU_EVENTQ_PROD.OVFLG` differs from the consumer's `OVACKFLG`, 7.4: records
    /// were lost) is counted and acknowledged by copying the flag into
    /// `SMMU_EVENTQ_CONS`.
    pub fn drain_events(&mut self) -> Vec<Event> {
        const OVF: u32 = 1 << 31;
        let mut out = Vec::new();
        let mut prod = self.regs.read32(regs::EVENTQ_PROD);
        if (prod ^ self.evt_cons) & OVF != 0 {
            self.counts.event_overflows += 1;
            self.evt_cons = (self.evt_cons & !OVF) | (prod & OVF);
            self.regs.write32(regs::EVENTQ_CONS, self.evt_cons);
        }
        for _ in 0..self.evtq.entries() {
            if self.evtq.empty(prod, self.evt_cons) {
                break;
            }
            out.push(Event::decode(
                self.regs.event(self.evtq.slot(self.evt_cons)),
            ));
            self.evt_cons = (self.evt_cons & OVF) | self.evtq.next(self.evt_cons);
            self.regs.write32(regs::EVENTQ_CONS, self.evt_cons);
            prod = self.regs.read32(regs::EVENTQ_PROD);
        }
        self.counts.events += out.len() as u64;
        out
    }

    /// Global errors the SMMU raised since the last call (`SMMU_GERROR` bits that differ
    /// from `SMMU_GERRORN`), counted and acknowledged (toggled in `SMMU_GERRORN`). 0: none.
    pub fn take_gerrors(&mut self) -> u32 {
        let g = self.regs.read32(regs::GERROR);
        let n = self.regs.read32(regs::GERRORN);
        let active = g ^ n;
        if active != 0 {
            self.counts.gerrors += u64::from(active.count_ones());
            self.regs.write32(regs::GERRORN, g);
        }
        active
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use core::cell::Cell;

    /// hyp's `VTCR_EL2` (hv/src/arch/aarch64/vmsa_s2.rs): T0SZ 24, SL0 1, IRGN0/ORGN0 1,
    /// SH0 3, TG0 0, PS 2, bit 31 RES1.
    const HYP_VTCR: u64 = 0x8002_3558;

    /// QEMU 10.0.2's SMMU on `virt` (nested): IDR0 S1P, S2P, TTF AArch64, COHACC,
    /// ASID16, VMID16, TTENDIAN LE, ST_LEVEL 2-level; IDR1 SIDSIZE 16, EVENTQS 19,
    /// CMDQS 19; IDR5 OAS 44 bits, 4K and 64K granules.
    fn qemu_idr() -> (u32, u32, u32) {
        let idr0 =
            1 | 2 | 2 << 2 | 1 << 4 | 1 << 12 | 1 << 18 | 2 << 21 | 1 << 24 | 1 << 26 | 1 << 27;
        let idr1 = 16 | 19 << 16 | 19 << 21;
        let idr5 = 4 | 1 << 4 | 1 << 6;
        (idr0, idr1, idr5)
    }

    /// A fake SMMU: consumes the command queue inside the `CMDQ_PROD` write, as QEMU
    /// does, unless `stuck`; fails commands with opcode `fail_op` (CERROR_ILL).
    struct Fake {
        idr: (u32, u32, u32),
        cr0: u32,
        irq_ctrl: u32,
        regs: Vec<(usize, u64)>,
        cmdq: Vec<[u64; 2]>,
        cons: u32,
        log2: u32,
        executed: Vec<[u64; 2]>,
        evq: Vec<[u64; 4]>,
        ev_prod: u32,
        ev_cons: u32,
        stes: Vec<(u32, Ste)>,
        gerror: u32,
        gerrorn: u32,
        stuck: bool,
        fail_op: Option<u8>,
        t: Cell<u64>,
    }

    impl Fake {
        fn new() -> Fake {
            Fake {
                idr: qemu_idr(),
                cr0: 0,
                irq_ctrl: 0,
                regs: Vec::new(),
                cmdq: vec![[0; 2]; 1 << 8],
                cons: 0,
                log2: 8,
                executed: Vec::new(),
                evq: vec![[0; 4]; 1 << 7],
                ev_prod: 0,
                ev_cons: 0,
                stes: Vec::new(),
                gerror: 0,
                gerrorn: 0,
                stuck: false,
                fail_op: None,
                t: Cell::new(0),
            }
        }

        fn push_event(&mut self, e: [u64; 4]) {
            let q = QueueIdx { log2: 7 };
            self.evq[q.slot(self.ev_prod)] = e;
            self.ev_prod = (self.ev_prod & 1 << 31) | q.next(self.ev_prod);
        }
    }

    impl SmmuRegs for Fake {
        fn read32(&self, off: usize) -> u32 {
            match off {
                regs::IDR0 => self.idr.0,
                regs::IDR1 => self.idr.1,
                regs::IDR5 => self.idr.2,
                regs::CR0ACK => self.cr0,
                regs::IRQ_CTRLACK => self.irq_ctrl,
                regs::GBPA => 0,
                regs::CMDQ_CONS => self.cons,
                regs::GERROR => self.gerror,
                regs::GERRORN => self.gerrorn,
                regs::EVENTQ_PROD => self.ev_prod,
                _ => 0,
            }
        }
        fn write32(&mut self, off: usize, v: u32) {
            self.regs.push((off, v.into()));
            match off {
                regs::CR0 if !self.stuck => self.cr0 = v,
                regs::IRQ_CTRL => self.irq_ctrl = v,
                regs::EVENTQ_CONS => self.ev_cons = v,
                regs::GERRORN => self.gerrorn = v,
                regs::CMDQ_PROD if !self.stuck => {
                    let q = QueueIdx { log2: self.log2 };
                    while !q.empty(v, self.cons) {
                        let c = self.cmdq[q.slot(self.cons)];
                        if Some((c[0] & 0xff) as u8) == self.fail_op {
                            self.gerror |= regs::GERROR_CMDQ_ERR;
                            self.cons |= 1 << 24;
                            return;
                        }
                        self.executed.push(c);
                        self.cons = q.next(self.cons);
                    }
                }
                _ => {}
            }
        }
        fn write64(&mut self, off: usize, v: u64) {
            self.regs.push((off, v));
            if off == regs::CMDQ_BASE {
                self.log2 = (v & 0x1f) as u32;
            }
        }
        fn put_cmd(&mut self, slot: usize, cmd: [u64; 2]) {
            self.cmdq[slot] = cmd;
        }
        fn event(&self, slot: usize) -> [u64; 4] {
            self.evq[slot]
        }
        fn put_ste(&mut self, sid: u32, ste: Ste) {
            self.stes.push((sid, ste));
        }
        fn bases(&self) -> (u64, u64, u64) {
            (0x4100_0000, 0x4101_0000, 0x4102_0000)
        }
        fn now(&self) -> u64 {
            self.t.set(self.t.get() + 1);
            self.t.get()
        }
    }

    const SIZES: Sizes = Sizes {
        sid_bits: 8,
        cmdq_log2: 8,
        eventq_log2: 7,
    };

    fn up() -> Smmu<Fake> {
        Smmu::init(Fake::new(), SIZES, 40, 1000).unwrap()
    }

    #[test]
    fn spec_5_2_stage2_ste_from_hyps_vtcr() {
        let w = S2Walk::from_vtcr(HYP_VTCR);
        assert_eq!(
            w,
            S2Walk {
                t0sz: 24,
                sl0: 1,
                ir0: 1,
                or0: 1,
                sh0: 3,
                tg: 0,
                ps: 2
            }
        );
        let s = ste_stage2(0x4340_2000, 1, w);
        assert_eq!(
            s[0], 0b1101,
            "V = 1, Config = 0b110 (S1 bypass, S2 translate)"
        );
        assert_eq!(s[2] & 0xffff, 1, "S2VMID");
        assert_eq!((s[2] >> 32) & 0x3f, 24, "S2T0SZ: 40-bit IPA");
        assert_eq!((s[2] >> 38) & 3, 1, "S2SL0: start at level 1");
        assert_eq!((s[2] >> 46) & 3, 0, "S2TG: 4 KiB");
        assert_eq!((s[2] >> 48) & 7, 2, "S2PS: 40 bits");
        assert_eq!((s[2] >> 51) & 1, 1, "S2AA64 (QEMU asserts on 0)");
        assert_eq!((s[2] >> 58) & 1, 1, "S2R: faults recorded");
        assert_eq!((s[2] >> 57) & 1, 0, "S2S: no stall");
        assert_eq!((s[2] >> 52) & 0x1f, 0, "S2ENDI, S2AFFD, S2PTW, S2HD, S2HA");
        assert_eq!(s[3], 0x4340_2000, "S2TTB");
        assert_eq!(ste_abort()[0], 1, "V = 1, Config = abort");
    }

    #[test]
    fn spec_4_commands_encode() {
        assert_eq!(Cmd::CfgiSte { sid: 0x8 }.encode(), [0x8_0000_0003, 1]);
        assert_eq!(Cmd::CfgiAll.encode(), [0x04, 31]);
        assert_eq!(Cmd::TlbiS12Vmall { vmid: 3 }.encode(), [0x3_0000_0028, 0]);
        assert_eq!(
            Cmd::TlbiS2Ipa {
                vmid: 2,
                ipa: 0x8000_1234
            }
            .encode(),
            [0x2_0000_002a, 0x8000_1000]
        );
        assert_eq!(Cmd::Sync.encode(), [0x46, 0], "CS = SIG_NONE");
        assert_eq!(Cmd::TlbiNsnhAll.encode(), [0x30, 0]);
    }

    #[test]
    fn spec_3_5_queue_indices_wrap() {
        let q = QueueIdx { log2: 2 };
        assert!(q.empty(0, 0));
        let mut p = 0;
        for _ in 0..4 {
            p = q.next(p);
        }
        assert_eq!(p, 0b100, "wrap bit set after one lap");
        assert!(q.full(p, 0) && !q.empty(p, 0));
        assert_eq!(q.next(0b111), 0, "the wrap bit toggles back");
        assert_eq!(queue_base(0x4101_0000, 8), 1 << 62 | 0x4101_0000 | 8);
        assert_eq!(strtab_base(0x4100_0000, 8), (1 << 62 | 0x4100_0000, 8));
    }

    #[test]
    fn init_programs_tables_then_enables_translation_last() {
        let s = up();
        let w = &s.regs.regs;
        let pos = |off: usize, v: u64| w.iter().position(|&r| r == (off, v)).unwrap();
        assert_eq!(w[0], (regs::CR0, 0), "off first");
        let en = pos(
            regs::CR0,
            (regs::CR0_CMDQEN | regs::CR0_EVENTQEN | regs::CR0_SMMUEN).into(),
        );
        assert!(pos(regs::STRTAB_BASE, 1 << 62 | 0x4100_0000) < en);
        assert!(pos(regs::STRTAB_BASE_CFG, 8) < en);
        assert!(pos(regs::CMDQ_BASE, 1 << 62 | 0x4101_0000 | 8) < en);
        assert!(pos(regs::EVENTQ_BASE, 1 << 62 | 0x4102_0000 | 7) < en);
        assert!(pos(regs::GBPA, (regs::GBPA_ABORT | regs::GBPA_UPDATE).into()) < en);
        let ops: Vec<u64> = s.regs.executed.iter().map(|c| c[0] & 0xff).collect();
        assert_eq!(
            ops,
            [0x04, 0x30, 0x46],
            "CFGI_ALL, TLBI_NSNH_ALL, SYNC before SMMUEN"
        );
        assert_eq!(s.counts.syncs, 1);
    }

    #[test]
    fn init_refuses_an_smmu_without_stage_2() {
        let mut f = Fake::new();
        f.idr.0 &= !1;
        assert_eq!(
            Smmu::init(f, SIZES, 40, 10).err(),
            Some(SmmuError::Unsupported("no stage 2 (IDR0.S2P = 0)"))
        );
    }

    #[test]
    fn an_smmu_that_never_acknowledges_cr0_is_a_named_error() {
        let mut f = Fake::new();
        f.stuck = true;
        f.cr0 = 0x5;
        assert_eq!(
            Smmu::init(f, SIZES, 40, 10).err(),
            Some(SmmuError::Cr0Ack { want: 0, got: 0x5 })
        );
    }

    #[test]
    fn attach_writes_the_ste_then_invalidates_and_syncs() {
        let mut s = up();
        let w = S2Walk::from_vtcr(HYP_VTCR);
        s.attach(8, 0x4340_0000, 1, w).unwrap();
        assert_eq!(s.regs.stes, [(8, ste_stage2(0x4340_0000, 1, w))]);
        let tail: Vec<[u64; 2]> = s.regs.executed[3..].to_vec();
        assert_eq!(
            tail,
            [
                Cmd::CfgiSte { sid: 8 }.encode(),
                Cmd::TlbiS12Vmall { vmid: 1 }.encode(),
                Cmd::Sync.encode()
            ]
        );
        assert_eq!(s.attach(256, 0, 1, w), Err(SmmuError::BadSid(256)));
        s.detach(8, 1).unwrap();
        assert_eq!(s.regs.stes[1], (8, ste_abort()));
    }

    #[test]
    fn a_queue_that_never_moves_times_out_with_its_indices() {
        let mut s = up();
        s.regs.stuck = true;
        let e = s.submit(&[Cmd::Sync]).unwrap_err();
        assert_eq!(e, SmmuError::CmdTimeout { prod: 4, cons: 3 });
    }

    #[test]
    fn a_stopped_queue_names_the_command_and_the_error() {
        let mut s = up();
        s.regs.fail_op = Some(0x2a);
        let e = s
            .submit(&[
                Cmd::TlbiS2Ipa {
                    vmid: 1,
                    ipa: 0x8000_0000,
                },
                Cmd::Sync,
            ])
            .unwrap_err();
        assert_eq!(
            e,
            SmmuError::CmdError {
                err: 1,
                opcode: 0x2a,
                cons: 3 | 1 << 24
            }
        );
        assert_eq!(s.counts.gerrors, 1);
    }

    #[test]
    fn an_event_queue_overflow_is_counted_and_acknowledged() {
        let mut s = up();
        s.regs.push_event([0x10 | 8 << 32, 0, 0x1000, 0]);
        s.regs.ev_prod |= 1 << 31;
        assert_eq!(s.drain_events().len(), 1);
        assert_eq!(s.counts.event_overflows, 1);
        assert_eq!(s.regs.ev_cons, 1 << 31 | 1, "OVACKFLG follows OVFLG");
        s.regs.push_event([0x10 | 8 << 32, 0, 0x2000, 0]);
        assert_eq!(s.drain_events().len(), 1);
        assert_eq!(s.counts.event_overflows, 1, "acknowledged once");
    }

    #[test]
    fn global_errors_are_counted_and_acknowledged() {
        let mut s = up();
        assert_eq!(s.take_gerrors(), 0);
        s.regs.gerror = 1 << 2; // EVENTQ_ABT_ERR
        assert_eq!(s.take_gerrors(), 1 << 2);
        assert_eq!(s.regs.gerrorn, 1 << 2);
        assert_eq!(s.take_gerrors(), 0);
        assert_eq!(s.counts.gerrors, 1);
    }

    #[test]
    fn spec_7_3_events_drained_in_order_across_the_wrap() {
        let mut s = up();
        // A stage-2 translation fault of StreamID 8 writing IPA 0x8410_0000.
        let rec = [0x10 | 8 << 32, 1 << 39, 0x8410_0000, 0];
        for _ in 0..100 {
            s.regs.push_event(rec);
        }
        assert_eq!(s.drain_events().len(), 100);
        for i in 0..60 {
            let mut r = rec;
            r[2] += i << 12;
            s.regs.push_event(r);
        }
        let ev = s.drain_events();
        assert_eq!(ev.len(), 60, "across the end of the 128-entry queue");
        assert_eq!(
            ev[59],
            Event {
                kind: 0x10,
                sid: 8,
                addr: 0x8410_0000 + (59 << 12),
                read: false,
                s2: true
            }
        );
        assert_eq!(ev[0].name(), "F_TRANSLATION");
        assert_eq!(s.regs.ev_cons, 160 & 0xff);
        assert!(s.drain_events().is_empty());
        assert_eq!(s.counts.events, 160);
    }
}
