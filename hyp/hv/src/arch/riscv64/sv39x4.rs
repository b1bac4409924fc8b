//! The G-stage page-table format: Sv39x4 (RISC-V privileged spec, "Hypervisor
//! Extension", two-stage address translation).
//!
//! Root: 2048 entries (16 KiB, 16 KiB aligned) indexed by GPA bits 40:30, so the
//! G-stage covers 2^41 bytes of guest-physical space; then ordinary 512-entry Sv39
//! tables for bits 29:21 and 20:12. An entry holds the PPN at bit 10 and the flags
//! below; a valid entry with none of R, W, X points to the next table. Every leaf has
//! U = 1 (G-stage accesses count as user accesses) and A = D = 1 (no A/D faults).
//! `hgatp`: MODE 8 (Sv39x4) in bits 63:60, VMID in 57:44, the root's PPN.
use crate::arch::{Entry, Leaf, Perm, Stage2Format};

const PTE_V: u64 = 1 << 0;
const PTE_R: u64 = 1 << 1;
const PTE_W: u64 = 1 << 2;
const PTE_X: u64 = 1 << 3;
const PTE_U: u64 = 1 << 4;
const PTE_A: u64 = 1 << 6;
const PTE_D: u64 = 1 << 7;

/// `hgatp.MODE` for Sv39x4.
const HGATP_MODE_SV39X4: usize = 8;

/// The Sv39x4 format.
pub struct Sv39x4;

/// The root table: 2048 entries, 16 KiB aligned.
#[repr(C, align(16384))]
pub struct Root([u64; 2048]);

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

fn ppn_field(pa: u64) -> u64 {
    (pa >> 12) << 10
}

impl Stage2Format for Sv39x4 {
    type Root = Root;
    const ROOT_ENTRIES: usize = 2048;

    fn empty_root() -> Root {
        Root([0; 2048])
    }

    fn table_entry(table: u64) -> u64 {
        ppn_field(table) | PTE_V
    }

    fn leaf_entry(hpa: u64, perm: Perm, _size: Leaf) -> u64 {
        let mut pte = ppn_field(hpa) | PTE_V | PTE_U | PTE_A | PTE_D;
        if perm.contains(Perm::READ) {
            pte |= PTE_R;
        }
        if perm.contains(Perm::WRITE) {
            pte |= PTE_W;
        }
        if perm.contains(Perm::EXEC) {
            pte |= PTE_X;
        }
        pte
    }

    fn decode(pte: u64) -> Entry {
        if pte & PTE_V == 0 {
            Entry::Invalid
        } else if pte & (PTE_R | PTE_W | PTE_X) != 0 {
            Entry::Leaf
        } else {
            Entry::Table((pte >> 10) << 12)
        }
    }

    fn root_register(root: u64, vmid: u16) -> usize {
        (HGATP_MODE_SV39X4 << 60) | ((vmid as usize & 0x3fff) << 44) | (root as usize >> 12)
    }
}
