//! What a backend says about its stage-2 (guest-physical to host-physical) page-table
//! format; `crate::gstage` builds and edits the tables with it, without knowing the
//! format.
//!
//! The shape is common to RISC-V Sv39x4 and to Armv8 stage 2 with a 4 KiB granule,
//! and `gstage` relies on it: a root table of [`Stage2Format::ROOT_ENTRIES`] entries
//! (a power of two), each covering 1 GiB of guest-physical space (GPA bits 30 and up),
//! aligned as the hardware requires (Sv39x4: 2048 entries, 16 KiB; Arm: concatenated
//! level-1 tables); below it, 512-entry 4 KiB tables indexed by GPA bits 29:21 and
//! 20:12; leaves of 2 MiB (in a table indexed by bits 29:21) or 4 KiB. An entry of 0
//! maps nothing. The format decides how a non-zero entry is encoded and what the
//! stage-2 root register holds.

/// What a stage-2 mapping allows the guest: a set of [`Perm::READ`], [`Perm::WRITE`],
/// [`Perm::EXEC`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm(u8);

impl Perm {
    /// Loads.
    pub const READ: Perm = Perm(1);
    /// Stores.
    pub const WRITE: Perm = Perm(2);
    /// Instruction fetch.
    pub const EXEC: Perm = Perm(4);

    /// Does this set allow everything `other` allows?
    pub fn contains(self, other: Perm) -> bool {
        self.0 & other.0 == other.0
    }
}

impl core::ops::BitOr for Perm {
    type Output = Perm;
    fn bitor(self, rhs: Perm) -> Perm {
        Perm(self.0 | rhs.0)
    }
}

/// The size of a leaf entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaf {
    /// 2 MiB, an entry of a table indexed by GPA bits 29:21.
    Block,
    /// 4 KiB, an entry of a table indexed by GPA bits 20:12.
    Page,
}

/// What a non-zero entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Not valid (hyp never writes such an entry).
    Invalid,
    /// A pointer to the next-level table at this host physical address.
    Table(u64),
    /// A leaf.
    Leaf,
}

/// A stage-2 page-table format (one per backend: `arch::Stage2`).
pub trait Stage2Format {
    /// The root table, `ROOT_ENTRIES` entries, aligned as the hardware requires.
    type Root: AsRef<[u64]> + AsMut<[u64]>;
    /// Entries of the root table (a power of two); each covers 1 GiB.
    const ROOT_ENTRIES: usize;
    /// A root table with nothing mapped.
    fn empty_root() -> Self::Root;
    /// An entry pointing to the next-level table at host physical address `table`.
    fn table_entry(table: u64) -> u64;
    /// A leaf of `size` mapping host physical address `hpa` with `perm`.
    fn leaf_entry(hpa: u64, perm: Perm, size: Leaf) -> u64;
    /// What the non-zero entry `pte` is.
    fn decode(pte: u64) -> Entry;
    /// The stage-2 root register's value (RISC-V `hgatp`, Arm `VTTBR_EL2`) for the root
    /// table at host physical address `root` and the guest's `vmid`.
    fn root_register(root: u64, vmid: u16) -> usize;
}

/// Compiles only for a [`Stage2Format`] (the contract check in `arch`).
pub(super) const fn is_format<F: Stage2Format>() {}
