//! The RISC-V IOMMU, as the RISC-V IOMMU Architecture Specification v1.0 (ratified
//! 2023; "the spec" below, section numbers its own) defines it: the register map
//! (chapter 5), the in-memory data structures (chapter 2: device directory, device
//! contexts), the queues (chapter 3: commands, fault records). Values only: hyp's
//! driver writes them to memory and registers.
use core::fmt;

/// Register offsets in the 4 KiB register window (spec 5, table 9).
pub mod regs {
    /// `capabilities` (64-bit, read-only).
    pub const CAPABILITIES: usize = 0x00;
    /// `fctl` (32-bit): BE, WSI, GXL.
    pub const FCTL: usize = 0x08;
    /// `ddtp` (64-bit): device-directory-table pointer.
    pub const DDTP: usize = 0x10;
    /// `cqb` (64-bit): command-queue base.
    pub const CQB: usize = 0x18;
    /// `cqh` (32-bit, read-only): command-queue head.
    pub const CQH: usize = 0x20;
    /// `cqt` (32-bit): command-queue tail.
    pub const CQT: usize = 0x24;
    /// `fqb` (64-bit): fault-queue base.
    pub const FQB: usize = 0x28;
    /// `fqh` (32-bit): fault-queue head.
    pub const FQH: usize = 0x30;
    /// `fqt` (32-bit, read-only): fault-queue tail.
    pub const FQT: usize = 0x34;
    /// `cqcsr` (32-bit): command-queue control and status.
    pub const CQCSR: usize = 0x48;
    /// `fqcsr` (32-bit): fault-queue control and status.
    pub const FQCSR: usize = 0x4c;
    /// `ipsr` (32-bit): interrupt-pending status.
    pub const IPSR: usize = 0x54;
    /// `icvec` (64-bit): interrupt cause to vector.
    pub const ICVEC: usize = 0x2f8;
    /// `msi_cfg_tbl`: 16 entries of 16 bytes (address, data, vector control) from here
    /// (spec 5.23), used when `fctl.WSI` = 0.
    pub const MSI_CFG_TBL: usize = 0x300;
    /// `ipsr.fip`: the fault queue's interrupt is pending (write 1 to clear).
    pub const IPSR_FIP: u32 = 1 << 1;
    /// `icvec.fiv`: the fault queue's vector, bits 7:4.
    pub const ICVEC_FIV_SHIFT: u32 = 4;
    /// Size of the register window.
    pub const SIZE: usize = 0x1000;

    /// `cqcsr`/`fqcsr`: queue enable.
    pub const QCSR_EN: u32 = 1 << 0;
    /// `cqcsr`/`fqcsr`: interrupt enable.
    pub const QCSR_IE: u32 = 1 << 1;
    /// `cqcsr.cqmf`/`fqcsr.fqmf`: memory fault while accessing the queue (RW1C).
    pub const QCSR_MF: u32 = 1 << 8;
    /// `cqcsr.cmd_to`: command timed out (RW1C); `fqcsr.fqof`: queue overflow (RW1C).
    pub const QCSR_TO_OR_OF: u32 = 1 << 9;
    /// `cqcsr.cmd_ill`: illegal command (RW1C).
    pub const CQCSR_CMD_ILL: u32 = 1 << 10;
    /// `cqcsr.fence_w_ip`: an IOFENCE.C with WSI completed (RW1C).
    pub const CQCSR_FENCE_W_IP: u32 = 1 << 11;
    /// `cqcsr.cqon`/`fqcsr.fqon`: the queue is active.
    pub const QCSR_ON: u32 = 1 << 16;
    /// `cqcsr.busy`/`fqcsr.busy`: a change of the enable is in progress.
    pub const QCSR_BUSY: u32 = 1 << 17;
    /// `ddtp.busy`.
    pub const DDTP_BUSY: u64 = 1 << 4;
    /// `fctl.BE`, `fctl.WSI`, `fctl.GXL`.
    pub const FCTL_BE: u32 = 1 << 0;
    /// Wired-signalled interrupts.
    pub const FCTL_WSI: u32 = 1 << 1;
    /// 32-bit G-stage (Sv32x4) for all device contexts.
    pub const FCTL_GXL: u32 = 1 << 2;
}

/// The `capabilities` register (spec 5.3).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Capabilities(pub u64);

impl Capabilities {
    fn bit(self, n: u32) -> bool {
        self.0 >> n & 1 == 1
    }
    /// `version`: major in bits 7:4, minor in 3:0 (0x10 is 1.0).
    pub fn version(self) -> (u8, u8) {
        ((self.0 >> 4 & 0xf) as u8, (self.0 & 0xf) as u8)
    }
    /// First-stage Sv39.
    pub fn sv39(self) -> bool {
        self.bit(9)
    }
    /// First-stage Sv48.
    pub fn sv48(self) -> bool {
        self.bit(10)
    }
    /// Second-stage Sv39x4: hyp's G-stage format.
    pub fn sv39x4(self) -> bool {
        self.bit(17)
    }
    /// Second-stage Sv48x4.
    pub fn sv48x4(self) -> bool {
        self.bit(18)
    }
    /// Second-stage Sv57x4.
    pub fn sv57x4(self) -> bool {
        self.bit(19)
    }
    /// Atomic updates of MRIFs.
    pub fn amo_mrif(self) -> bool {
        self.bit(21)
    }
    /// MSI page tables in flat mode; also selects the extended (64-byte) device-context
    /// format (spec 2.1).
    pub fn msi_flat(self) -> bool {
        self.bit(22)
    }
    /// Memory-resident interrupt files.
    pub fn msi_mrif(self) -> bool {
        self.bit(23)
    }
    /// Hardware A/D updates.
    pub fn amo_hwad(self) -> bool {
        self.bit(24)
    }
    /// PCIe Address Translation Services.
    pub fn ats(self) -> bool {
        self.bit(25)
    }
    /// Translated-to-GPA for ATS.
    pub fn t2gpa(self) -> bool {
        self.bit(26)
    }
    /// Endianness of data structures selectable (`fctl.BE`).
    pub fn end(self) -> bool {
        self.bit(27)
    }
    /// Interrupt generation support: 0 MSI, 1 wired, 2 both.
    pub fn igs(self) -> u8 {
        (self.0 >> 28 & 3) as u8
    }
    /// Hardware performance monitor.
    pub fn hpm(self) -> bool {
        self.bit(30)
    }
    /// The debug translation interface (`tr_req_*`).
    pub fn dbg(self) -> bool {
        self.bit(31)
    }
    /// Physical address bits.
    pub fn pas(self) -> u8 {
        (self.0 >> 32 & 0x3f) as u8
    }
    /// Process directories of 8, 17, 20 bits.
    pub fn pd(self) -> (bool, bool, bool) {
        (self.bit(38), self.bit(39), self.bit(40))
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (maj, min) = self.version();
        write!(f, "{:#x} (v{maj}.{min}", self.0)?;
        let flags = [
            (self.sv39(), "Sv39"),
            (self.sv48(), "Sv48"),
            (self.sv39x4(), "Sv39x4"),
            (self.sv48x4(), "Sv48x4"),
            (self.sv57x4(), "Sv57x4"),
            (self.msi_flat(), "MSI_FLAT"),
            (self.msi_mrif(), "MSI_MRIF"),
            (self.amo_mrif(), "AMO_MRIF"),
            (self.amo_hwad(), "AMO_HWAD"),
            (self.ats(), "ATS"),
            (self.t2gpa(), "T2GPA"),
            (self.end(), "END"),
            (self.hpm(), "HPM"),
            (self.dbg(), "DBG"),
            (self.pd().0, "PD8"),
            (self.pd().1, "PD17"),
            (self.pd().2, "PD20"),
        ];
        for (on, name) in flags {
            if on {
                write!(f, " {name}")?;
            }
        }
        let igs = ["MSI", "WSI", "MSI+WSI", "reserved"][self.igs() as usize];
        write!(f, " IGS={igs} PAS={})", self.pas())
    }
}

/// `ddtp.iommu_mode` (spec 5.5): how device IDs find their device context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DdtMode {
    /// No inbound transaction is allowed (all DMA and MSIs are faulted).
    Off = 0,
    /// No translation or protection: DMA goes to the physical address it names.
    Bare = 1,
    /// One-level device directory (a page of device contexts).
    OneLevel = 2,
    /// Two levels (a page of pointers to pages of device contexts).
    TwoLevel = 3,
    /// Three levels.
    ThreeLevel = 4,
}

impl DdtMode {
    /// The mode of a `ddtp` value (`None` for a reserved encoding).
    pub fn of(ddtp: u64) -> Option<DdtMode> {
        Some(match ddtp & 0xf {
            0 => DdtMode::Off,
            1 => DdtMode::Bare,
            2 => DdtMode::OneLevel,
            3 => DdtMode::TwoLevel,
            4 => DdtMode::ThreeLevel,
            _ => return None,
        })
    }

    /// Directory levels (0 for Off and Bare).
    pub fn levels(self) -> usize {
        match self {
            DdtMode::Off | DdtMode::Bare => 0,
            DdtMode::OneLevel => 1,
            DdtMode::TwoLevel => 2,
            DdtMode::ThreeLevel => 3,
        }
    }
}

/// The PPN field shared by `ddtp`, queue bases and directory entries: bits 53:10 hold
/// the physical page number of a 4 KiB aligned address.
fn ppn_field(pa: u64) -> u64 {
    ((pa >> 12) & ((1 << 44) - 1)) << 10
}

/// A `ddtp` value: `mode` with its root page at `root` (4 KiB aligned); Off and Bare
/// carry no root.
pub fn ddtp(mode: DdtMode, root: u64) -> u64 {
    match mode {
        DdtMode::Off | DdtMode::Bare => mode as u64,
        _ => ppn_field(root) | mode as u64,
    }
}

/// Device-context format: extended (64 bytes, with the MSI page-table fields) when
/// `capabilities.MSI_FLAT` is 1, else base (32 bytes) (spec 2.1).
pub fn extended_format(caps: Capabilities) -> bool {
    caps.msi_flat()
}

/// Bits of device ID a directory of `levels` levels resolves (spec 2.1, figures 3–4):
/// extended format 6, 15, 24; base format 7, 16, 24.
pub fn device_id_bits(levels: usize, extended: bool) -> u32 {
    match (levels, extended) {
        (1, true) => 6,
        (2, true) => 15,
        (1, false) => 7,
        (2, false) => 16,
        (3, _) => 24,
        _ => 0,
    }
}

/// The device-directory index of `device_id` (spec 2.1): `DDI[0]` indexes the leaf page
/// of device contexts, `DDI[1]` and `DDI[2]` the non-leaf pages above it. `None` when
/// the ID has more bits than `levels` resolve.
pub fn ddi(device_id: u32, levels: usize, extended: bool) -> Option<[usize; 3]> {
    if levels == 0 || device_id >> device_id_bits(levels, extended) != 0 {
        return None;
    }
    let d = device_id as usize;
    Some(if extended {
        [d & 0x3f, d >> 6 & 0x1ff, d >> 15 & 0x1ff]
    } else {
        [d & 0x7f, d >> 7 & 0x1ff, d >> 16 & 0xff]
    })
}

/// A valid non-leaf device-directory entry pointing at the page `next` (spec 2.1.1).
pub fn ddte(next: u64) -> u64 {
    ppn_field(next) | 1
}

/// A queue-base value (`cqb`, `fqb`; spec 5.6, 5.9): `entries` (a power of two, at least
/// 2) of `entry_bytes` at `base`, which must be aligned to the queue's size or to 4 KiB
/// if the queue is smaller. `LOG2SZ` is log2(entries) - 1.
pub fn queue_base(base: u64, entries: u32, entry_bytes: u32) -> Option<u64> {
    if !entries.is_power_of_two() || entries < 2 {
        return None;
    }
    let bytes = entries as u64 * entry_bytes as u64;
    if base % bytes.max(4096) != 0 {
        return None;
    }
    Some(ppn_field(base) | (entries.trailing_zeros() - 1) as u64)
}

/// Bytes of a command (spec 3.1).
pub const COMMAND_BYTES: u32 = 16;
/// Bytes of a fault record (spec 3.2).
pub const FAULT_RECORD_BYTES: u32 = 32;

/// A command for the command queue (spec 3.1): two doublewords, opcode in bits 6:0 and
/// function in 9:7 of the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command(pub [u64; 2]);

const OP_IOTINVAL: u64 = 1;
const OP_IOFENCE: u64 = 2;
const OP_IODIR: u64 = 3;
const FUNC_SHIFT: u32 = 7;

impl Command {
    /// IOFENCE.C (spec 3.1.2) with PR = PW = 1 (previous reads and writes of the
    /// IOMMU complete first); with `notify = Some((addr, data))` (AV = 1) the IOMMU
    /// writes the 32-bit `data` to `addr` (4-byte aligned) when the fence completes.
    pub fn iofence_c(notify: Option<(u64, u32)>) -> Command {
        let pr_pw = 1 << 12 | 1 << 13;
        match notify {
            Some((addr, data)) => Command([
                OP_IOFENCE | 1 << 10 | pr_pw | (data as u64) << 32,
                addr >> 2,
            ]),
            None => Command([OP_IOFENCE | pr_pw, 0]),
        }
    }

    /// IODIR.INVAL_DDT (spec 3.1.3): drop cached device-directory entries and device
    /// contexts of `device_id`, or of every device (`None`, DV = 0).
    pub fn iodir_inval_ddt(device_id: Option<u32>) -> Command {
        match device_id {
            Some(did) => Command([OP_IODIR | 1 << 33 | ((did as u64) & 0xff_ffff) << 40, 0]),
            None => Command([OP_IODIR, 0]),
        }
    }

    /// IOTINVAL.GVMA (spec 3.1.1): drop cached G-stage translations of the guest
    /// `gscid` (GV = 1), or of every guest (`None`), for the guest-physical page `gpa`
    /// (AV = 1) or for all.
    pub fn iotinval_gvma(gscid: Option<u16>, gpa: Option<u64>) -> Command {
        let mut w0 = OP_IOTINVAL | 1 << FUNC_SHIFT;
        if let Some(g) = gscid {
            w0 |= 1 << 33 | (g as u64) << 44;
        }
        let mut w1 = 0;
        if let Some(a) = gpa {
            w0 |= 1 << 10;
            w1 = (a & !0xfff) >> 2;
        }
        Command([w0, w1])
    }

    /// Opcode and function.
    pub fn opcode(self) -> (u8, u8) {
        (
            (self.0[0] & 0x7f) as u8,
            (self.0[0] >> FUNC_SHIFT & 7) as u8,
        )
    }

    /// The command's name.
    pub fn name(self) -> &'static str {
        match self.opcode() {
            (1, 0) => "IOTINVAL.VMA",
            (1, 1) => "IOTINVAL.GVMA",
            (2, 0) => "IOFENCE.C",
            (3, 0) => "IODIR.INVAL_DDT",
            (3, 1) => "IODIR.INVAL_PDT",
            (4, 0) => "ATS.INVAL",
            (4, 1) => "ATS.PRGR",
            _ => "unknown",
        }
    }
}

/// A second-stage translation mode (`iohgatp.MODE`, spec 2.1.3; the values of the
/// hypervisor's `hgatp.MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GStageMode {
    /// No second stage: the device's addresses are host physical.
    Bare = 0,
    /// Sv39x4: a 16 KiB root of 2048 entries, 41-bit guest-physical addresses.
    Sv39x4 = 8,
    /// Sv48x4.
    Sv48x4 = 9,
    /// Sv57x4.
    Sv57x4 = 10,
}

impl GStageMode {
    /// Does `caps` report this mode (Bare always)?
    pub fn supported(self, caps: Capabilities) -> bool {
        match self {
            GStageMode::Bare => true,
            GStageMode::Sv39x4 => caps.sv39x4(),
            GStageMode::Sv48x4 => caps.sv48x4(),
            GStageMode::Sv57x4 => caps.sv57x4(),
        }
    }
}

/// `iohgatp` (spec 2.1.3): the second stage a device context uses — the same layout as
/// the hypervisor's `hgatp` (MODE 63:60, then the guest's ID, PPN 43:0), so a guest's
/// G-stage tables serve its devices as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Iohgatp {
    /// Translation mode.
    pub mode: GStageMode,
    /// Guest soft-context ID (bits 59:44): tags cached translations; IOTINVAL.GVMA names
    /// it.
    pub gscid: u16,
    /// Host physical address of the root table (16 KiB aligned for the x4 modes).
    pub root: u64,
}

impl Iohgatp {
    /// The register value; `None` for a root the mode cannot use (not 16 KiB aligned).
    pub fn encode(self) -> Option<u64> {
        if self.mode == GStageMode::Bare {
            return Some(0);
        }
        if self.root % 0x4000 != 0 {
            return None;
        }
        Some(
            (self.mode as u64) << 60
                | (self.gscid as u64) << 44
                | (self.root >> 12) & ((1 << 44) - 1),
        )
    }

    /// The `iohgatp` for a guest whose hart-side G-stage root register is `hgatp`
    /// (MODE, VMID in 57:44, PPN): the same tables, GSCID = VMID. `None` for a
    /// reserved mode.
    pub fn from_hgatp(hgatp: u64) -> Option<Iohgatp> {
        let mode = match hgatp >> 60 {
            0 => GStageMode::Bare,
            8 => GStageMode::Sv39x4,
            9 => GStageMode::Sv48x4,
            10 => GStageMode::Sv57x4,
            _ => return None,
        };
        Some(Iohgatp {
            mode,
            gscid: (hgatp >> 44 & 0x3fff) as u16,
            root: (hgatp & ((1 << 44) - 1)) << 12,
        })
    }
}

/// `tc` bits of a device context (spec 2.1.2).
pub mod tc {
    /// Valid.
    pub const V: u64 = 1 << 0;
    /// PCIe ATS enabled.
    pub const EN_ATS: u64 = 1 << 1;
    /// Disable translation-fault reporting.
    pub const DTF: u64 = 1 << 4;
    /// `fsc` holds a process-directory pointer.
    pub const PDTV: u64 = 1 << 5;
    /// Hardware A/D updates in the second stage.
    pub const GADE: u64 = 1 << 7;
}

/// A device context in the extended format (spec 2.1, 64 bytes): what one device ID is
/// allowed to do. hyp writes `tc` last when making a context valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceContext {
    /// Translation control.
    pub tc: u64,
    /// Second stage.
    pub iohgatp: u64,
    /// Translation attributes (PSCID).
    pub ta: u64,
    /// First-stage context (`iosatp` or a process directory).
    pub fsc: u64,
    /// MSI page-table pointer (mode 0: off).
    pub msiptp: u64,
    /// MSI address mask.
    pub msi_addr_mask: u64,
    /// MSI address pattern.
    pub msi_addr_pattern: u64,
}

impl DeviceContext {
    /// Not valid: every transaction of the device is refused ("DDT entry not valid",
    /// cause 258): the state of every device hyp has not given to anybody.
    pub const INVALID: DeviceContext = DeviceContext {
        tc: 0,
        iohgatp: 0,
        ta: 0,
        fsc: 0,
        msiptp: 0,
        msi_addr_mask: 0,
        msi_addr_pattern: 0,
    };

    /// Valid, second stage only: the device's addresses are guest-physical addresses
    /// of the guest `iohgatp` names; no first stage, no ATS, no MSI translation yet.
    pub fn second_stage(iohgatp: u64) -> DeviceContext {
        DeviceContext {
            tc: tc::V,
            iohgatp,
            ..DeviceContext::INVALID
        }
    }

    /// Valid, second stage `iohgatp`, and MSI translation through the flat MSI page
    /// table `msi` (spec 2.1.3.5–6): a write to a guest-physical address whose page
    /// number matches `pattern` outside `mask` is an MSI to interrupt file
    /// `extract(page, mask)`, translated by that entry of the table.
    pub fn second_stage_with_msi(iohgatp: u64, msi: MsiTable) -> DeviceContext {
        DeviceContext {
            tc: tc::V,
            iohgatp,
            msiptp: msi.msiptp(),
            msi_addr_mask: msi.mask,
            msi_addr_pattern: msi.pattern & !msi.mask,
            ..DeviceContext::INVALID
        }
    }

    /// The eight doublewords in memory order (extended format; the base format is the
    /// first four).
    pub fn words(&self) -> [u64; 8] {
        [
            self.tc,
            self.iohgatp,
            self.ta,
            self.fsc,
            self.msiptp,
            self.msi_addr_mask,
            self.msi_addr_pattern,
            0,
        ]
    }
}

/// An MSI page table as a device context names it (spec 2.1.3.5–6, 2.3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiTable {
    /// Physical address of the table (4 KiB aligned; up to 256 entries of 16 bytes).
    pub base: u64,
    /// `msi_addr_mask`: the page-number bits that select the interrupt file.
    pub mask: u64,
    /// `msi_addr_pattern`: the page-number bits every MSI address has outside `mask`.
    pub pattern: u64,
}

impl MsiTable {
    /// The table for a guest whose interrupt files are `count` consecutive pages from
    /// guest-physical `first_page` (4 KiB aligned), at `base`: the mask covers the
    /// smallest power of two of pages that holds them, which `first_page` must be
    /// aligned to. `None` if it is not, or for more than 256 files.
    pub fn consecutive(base: u64, first_page: u64, count: u64) -> Option<MsiTable> {
        let n = count.max(1).next_power_of_two();
        let pages = first_page >> 12;
        (base % 4096 == 0 && first_page % 4096 == 0 && n <= 256 && pages % n == 0).then_some(
            MsiTable {
                base,
                mask: n - 1,
                pattern: pages,
            },
        )
    }

    /// `msiptp`: MODE Flat (1) in bits 63:60, the table's PPN in bits 43:0.
    pub fn msiptp(&self) -> u64 {
        (1 << 60) | (self.base >> 12)
    }

    /// The index of the entry an MSI to guest-physical `gpa` uses, if `gpa` is an MSI
    /// address of this table: `extract(gpa >> 12, mask)` (the mask's bits, packed).
    pub fn index(&self, gpa: u64) -> Option<u64> {
        let page = gpa >> 12;
        if (page ^ self.pattern) & !self.mask != 0 {
            return None;
        }
        let (mut out, mut bit) = (0, 0);
        for i in 0..64 {
            if self.mask & (1 << i) != 0 {
                out |= ((page >> i) & 1) << bit;
                bit += 1;
            }
        }
        Some(out)
    }
}

/// One MSI page-table entry (spec 2.3.2, 16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiPte(pub [u64; 2]);

impl MsiPte {
    /// Not valid: an MSI through it is refused ("MSI PTE not valid", cause 262).
    pub const INVALID: MsiPte = MsiPte([0, 0]);

    /// Write-through (basic) mode: MSIs go to the interrupt file at physical `file`
    /// (4 KiB aligned): V = 1, M = 3, PPN in bits 53:10.
    pub fn flat(file: u64) -> MsiPte {
        MsiPte([1 | (3 << 1) | (((file >> 12) & ((1 << 44) - 1)) << 10), 0])
    }

    /// MRIF mode: MSIs set their bit in the memory-resident interrupt file at `mrif`
    /// (512-byte aligned; address bits 55:9 in bits 53:7), and, when the identity's
    /// enable bit is set there, the IOMMU writes `nid` (11 bits) to the interrupt file
    /// at `notice` (its PPN in bits 53:10 of the second word, NID bits 9:0 there and
    /// bit 10 at bit 60).
    pub fn mrif(mrif: u64, notice: u64, nid: u16) -> MsiPte {
        let nid = u64::from(nid & 0x7ff);
        MsiPte([
            1 | (1 << 1) | (((mrif >> 9) & ((1 << 47) - 1)) << 7),
            (nid & 0x3ff) | (((notice >> 12) & ((1 << 44) - 1)) << 10) | ((nid >> 10) << 60),
        ])
    }
}

/// A fault record (spec 3.2, 32 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// Cause ([`cause_name`]).
    pub cause: u16,
    /// Process ID, if `pv`.
    pub pid: u32,
    /// The process ID is valid.
    pub pv: bool,
    /// Privileged-mode transaction.
    pub privileged: bool,
    /// Transaction type ([`ttype_name`]).
    pub ttype: u8,
    /// Device ID.
    pub did: u32,
    /// The faulting address (the IOVA for translation faults).
    pub iotval: u64,
    /// For guest-page faults: the guest-physical address, shifted right by 2.
    pub iotval2: u64,
}

impl FaultRecord {
    /// Decode the four doublewords of a record.
    pub fn decode(w: [u64; 4]) -> FaultRecord {
        let h = w[0];
        FaultRecord {
            cause: (h & 0xfff) as u16,
            pid: (h >> 12 & 0xf_ffff) as u32,
            pv: h >> 32 & 1 == 1,
            privileged: h >> 33 & 1 == 1,
            ttype: (h >> 34 & 0x3f) as u8,
            did: (h >> 40) as u32,
            iotval: w[2],
            iotval2: w[3],
        }
    }
}

impl fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cause={} ({}) ttype={} ({}) did={:#x} iotval={:#x} iotval2={:#x}",
            self.cause,
            cause_name(self.cause),
            self.ttype,
            ttype_name(self.ttype),
            self.did,
            self.iotval,
            self.iotval2
        )?;
        if self.pv {
            write!(f, " pid={:#x}", self.pid)?;
        }
        Ok(())
    }
}

/// Fault causes (spec 3.2, table 11).
pub mod cause {
    /// Write/AMO access fault.
    pub const WRITE_ACCESS: u16 = 7;
    /// Read guest-page fault.
    pub const READ_GUEST_PAGE: u16 = 21;
    /// Write/AMO guest-page fault.
    pub const WRITE_GUEST_PAGE: u16 = 23;
    /// All inbound transactions disallowed (`ddtp` Off).
    pub const ALL_DISALLOWED: u16 = 256;
    /// DDT entry not valid.
    pub const DDT_INVALID: u16 = 258;
    /// DDT entry misconfigured.
    pub const DDT_MISCONFIGURED: u16 = 259;
}

/// The name of a fault cause (spec 3.2, table 11).
pub fn cause_name(cause: u16) -> &'static str {
    match cause {
        1 => "instruction access fault",
        4 => "read address misaligned",
        5 => "read access fault",
        6 => "write/AMO address misaligned",
        7 => "write/AMO access fault",
        12 => "instruction page fault",
        13 => "read page fault",
        15 => "write/AMO page fault",
        20 => "instruction guest-page fault",
        21 => "read guest-page fault",
        23 => "write/AMO guest-page fault",
        256 => "all inbound transactions disallowed",
        257 => "DDT entry load access fault",
        258 => "DDT entry not valid",
        259 => "DDT entry misconfigured",
        260 => "transaction type disallowed",
        261 => "MSI PTE load access fault",
        262 => "MSI PTE not valid",
        263 => "MSI PTE misconfigured",
        264 => "MRIF access fault",
        265 => "PDT entry load access fault",
        266 => "PDT entry not valid",
        267 => "PDT entry misconfigured",
        268 => "DDT data corruption",
        269 => "PDT data corruption",
        270 => "MSI PT data corruption",
        271 => "MSI MRIF data corruption",
        272 => "internal datapath error",
        273 => "IOMMU MSI write access fault",
        274 => "first/second-stage PT data corruption",
        _ => "reserved or custom",
    }
}

/// The name of a transaction type (spec 3.2, table 12).
pub fn ttype_name(ttype: u8) -> &'static str {
    match ttype {
        0 => "none",
        1 => "untranslated fetch",
        2 => "untranslated read",
        3 => "untranslated write/AMO",
        5 => "translated fetch",
        6 => "translated read",
        7 => "translated write/AMO",
        8 => "ATS translation request",
        9 => "message request",
        _ => "reserved",
    }
}

#[cfg(test)]
mod tests;
