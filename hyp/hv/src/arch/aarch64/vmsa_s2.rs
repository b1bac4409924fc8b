//! The stage-2 page-table format: VMSAv8-64 stage 2 with a 4 KiB granule (Arm ARM
//! D8, "The AArch64 Virtual Memory System Architecture").
//!
//! A 40-bit IPA space (`VTCR_EL2.T0SZ = 24`) starting at level 1 (`SL0 = 1`): the root
//! is two concatenated level-1 tables, 1024 entries (8 KiB, 8 KiB aligned) indexed by
//! IPA bits 39:30, so each covers 1 GiB as `gstage` expects; below it, level-2 tables
//! (bits 29:21, 2 MiB blocks) and level-3 tables (bits 20:12, 4 KiB pages).
//!
//! Descriptors: bits 1:0 are 0b11 for a table (levels 1, 2) and for a page (level 3),
//! 0b01 for a block. A level-3 page and a table look alike, so every leaf hyp writes
//! also carries the software-defined bit 55 (bits 58:55 are for software), which
//! [`Stage2Format::decode`] reads. Leaf attributes: `MemAttr = 0b1111` (Normal, Inner
//! and Outer Write-Back: RAM; `FWB` is 0), `SH = 0b11` (Inner Shareable), `AF = 1` (no
//! Access-flag faults), `S2AP` from [`Perm::READ`]/[`Perm::WRITE`], `XN = 0b10` (no
//! execution at EL1/EL0) without [`Perm::EXEC`].
use crate::arch::{Entry, Leaf, Perm, Stage2Format};

const DESC_VALID: u64 = 1 << 0;
/// Bits 1:0 of a table or page descriptor.
const DESC_TABLE_OR_PAGE: u64 = 0b11;
/// Bits 1:0 of a block descriptor.
const DESC_BLOCK: u64 = 0b01;
/// `MemAttr[3:0]` (bits 5:2) = 0b1111: Normal, Outer and Inner Write-Back Cacheable.
const MEMATTR_NORMAL_WB: u64 = 0b1111 << 2;
/// `S2AP` (bits 7:6) read.
const S2AP_R: u64 = 1 << 6;
/// `S2AP` (bits 7:6) write.
const S2AP_W: u64 = 1 << 7;
/// `SH` (bits 9:8) = 0b11: Inner Shareable.
const SH_INNER: u64 = 0b11 << 8;
/// `AF` (bit 10).
const AF: u64 = 1 << 10;
/// `XN[1:0]` (bits 54:53) = 0b10: not executable at EL1 or EL0.
const XN: u64 = 0b10 << 53;
/// Software bit 55: this descriptor is a leaf hyp wrote.
const SW_LEAF: u64 = 1 << 55;
/// Output address bits 47:12.
const OA_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Root entries: two concatenated level-1 tables.
const ROOT_ENTRIES: usize = 1024;

/// `VTCR_EL2` for these tables: `T0SZ = 24` (40-bit IPA), `SL0 = 1` (start at level 1),
/// `IRGN0 = ORGN0 = 1` (walks Write-Back Write-Allocate), `SH0 = 3` (Inner
/// Shareable), `TG0 = 0` (4 KiB), `PS = 2` (40-bit PA), bit 31 RES1.
pub const VTCR: usize = 24 | (1 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (2 << 16) | (1 << 31);

/// The VMSAv8-64 stage-2 format, 4 KiB granule, 40-bit IPA.
pub struct VmsaStage2;

/// The root: two concatenated level-1 tables, 8 KiB aligned.
#[repr(C, align(8192))]
pub struct Root([u64; ROOT_ENTRIES]);

impl AsRef<[u64]> for Root {
    fn as_ref(&self) -> &[u64] {
        &self.0
    }
}

impl AsMut<[u64]> for Root {
    fn as_mut(&mut self) -> &mut [u64] {
        &mut self.0
    }
}

impl Stage2Format for VmsaStage2 {
    type Root = Root;
    const ROOT_ENTRIES: usize = ROOT_ENTRIES;

    fn empty_root() -> Root {
        Root([0; ROOT_ENTRIES])
    }

    fn table_entry(table: u64) -> u64 {
        (table & OA_MASK) | DESC_TABLE_OR_PAGE
    }

    fn leaf_entry(hpa: u64, perm: Perm, size: Leaf) -> u64 {
        let kind = match size {
            Leaf::Block => DESC_BLOCK,
            Leaf::Page => DESC_TABLE_OR_PAGE,
        };
        let mut d = (hpa & OA_MASK) | kind | MEMATTR_NORMAL_WB | SH_INNER | AF | SW_LEAF;
        if perm.contains(Perm::READ) {
            d |= S2AP_R;
        }
        if perm.contains(Perm::WRITE) {
            d |= S2AP_W;
        }
        if !perm.contains(Perm::EXEC) {
            d |= XN;
        }
        d
    }

    fn decode(pte: u64) -> Entry {
        if pte & DESC_VALID == 0 {
            Entry::Invalid
        } else if pte & SW_LEAF != 0 {
            Entry::Leaf
        } else {
            Entry::Table(pte & OA_MASK)
        }
    }

    fn root_register(root: u64, vmid: u16) -> usize {
        // VTTBR_EL2: VMID in bits 55:48 (8-bit VMIDs), BADDR the root.
        (((vmid as u64 & 0xff) << 48) | (root & OA_MASK)) as usize
    }
}
