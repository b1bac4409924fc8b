//! A guest's G-stage (stage-2: guest-physical to host-physical) page tables.
//!
//! The entry format is the backend's (`arch::Stage2`: Sv39x4 on riscv64, with the
//! table shape `arch`'s `Stage2Format` describes); this file does the walking: a root
//! indexed by GPA bits 30 and up, 512-entry tables for bits 29:21 and 20:12, leaves of
//! 2 MiB where both addresses and the size allow it, else 4 KiB. Tables are built at
//! boot, in safe Rust, and never freed (guests live forever); [`GStage::set_page`]
//! remaps one 4 KiB page at run time.
use alloc::boxed::Box;
use alloc::vec::Vec;

pub use crate::arch::Perm;
use crate::arch::{Entry, Leaf, Stage2, Stage2Format};

/// Readable.
pub const R: Perm = Perm::READ;
/// Writable.
pub const W: Perm = Perm::WRITE;
/// Executable.
pub const X: Perm = Perm::EXEC;

const PAGE: u64 = 4096;
const MEGA: u64 = 2 << 20;
/// Guest-physical bytes the tables cover (Sv39x4: 2^41).
pub const GPA_LIMIT: u64 = (Stage2::ROOT_ENTRIES as u64) << 30;

type Root = <Stage2 as Stage2Format>::Root;

#[repr(C, align(4096))]
struct Table([u64; 512]);

/// Why a mapping was refused (a configuration error, never a guest's doing).
#[derive(Clone, Copy, Debug)]
pub enum MapError {
    /// Not page aligned.
    Unaligned,
    /// Beyond the range the tables cover.
    OutOfRange,
    /// Overlaps an existing mapping.
    Overlap,
}

/// A guest's G-stage.
pub struct GStage {
    root: Box<Root>,
    tables: Vec<Box<Table>>,
}

impl GStage {
    /// An empty G-stage.
    pub fn new() -> Self {
        GStage {
            root: Box::new(Stage2::empty_root()),
            tables: Vec::new(),
        }
    }

    /// The stage-2 root register's value (`hgatp` on riscv64) for these tables and
    /// `vmid`.
    pub fn root_register(&self, vmid: u16) -> usize {
        Stage2::root_register(&*self.root as *const Root as u64, vmid)
    }

    fn root(&mut self) -> &mut [u64] {
        (*self.root).as_mut()
    }

    fn table_index(&self, addr: u64) -> Option<usize> {
        self.tables
            .iter()
            .position(|t| &**t as *const Table as u64 == addr)
    }

    /// The table a non-zero entry points to.
    fn next_table(&mut self, pte: u64) -> Result<usize, MapError> {
        match Stage2::decode(pte) {
            Entry::Invalid => Err(MapError::OutOfRange),
            Entry::Leaf => Err(MapError::Overlap),
            Entry::Table(addr) => self.table_index(addr).ok_or(MapError::Overlap),
        }
    }

    fn new_table(&mut self) -> (usize, u64) {
        let t = Box::new(Table([0; 512]));
        let pte = Stage2::table_entry(&*t as *const Table as u64);
        self.tables.push(t);
        (self.tables.len() - 1, pte)
    }

    fn l1_table(&mut self, gpa: u64) -> Result<usize, MapError> {
        let i = ((gpa >> 30) as usize) & (Stage2::ROOT_ENTRIES - 1);
        let pte = self.root()[i];
        if pte == 0 {
            let (idx, pte) = self.new_table();
            self.root()[i] = pte;
            return Ok(idx);
        }
        self.next_table(pte)
    }

    fn l0_table(&mut self, l1: usize, gpa: u64) -> Result<usize, MapError> {
        let i = ((gpa >> 21) & 0x1ff) as usize;
        let pte = self.tables[l1].0[i];
        if pte == 0 {
            let (idx, pte) = self.new_table();
            self.tables[l1].0[i] = pte;
            return Ok(idx);
        }
        self.next_table(pte)
    }

    /// Map `[gpa, gpa + size)` to `[hpa, hpa + size)` with permissions `perm` (R/W/X).
    pub fn map(&mut self, gpa: u64, hpa: u64, size: u64, perm: Perm) -> Result<(), MapError> {
        if !gpa.is_multiple_of(PAGE) || !hpa.is_multiple_of(PAGE) || !size.is_multiple_of(PAGE) {
            return Err(MapError::Unaligned);
        }
        if gpa.checked_add(size).is_none_or(|e| e > GPA_LIMIT) {
            return Err(MapError::OutOfRange);
        }
        let mut off = 0;
        while off < size {
            let (g, h) = (gpa + off, hpa + off);
            let l1 = self.l1_table(g)?;
            if g % MEGA == 0 && h % MEGA == 0 && size - off >= MEGA {
                let i = ((g >> 21) & 0x1ff) as usize;
                if self.tables[l1].0[i] != 0 {
                    return Err(MapError::Overlap);
                }
                self.tables[l1].0[i] = Stage2::leaf_entry(h, perm, Leaf::Block);
                off += MEGA;
            } else {
                let l0 = self.l0_table(l1, g)?;
                let i = ((g >> 12) & 0x1ff) as usize;
                if self.tables[l0].0[i] != 0 {
                    return Err(MapError::Overlap);
                }
                self.tables[l0].0[i] = Stage2::leaf_entry(h, perm, Leaf::Page);
                off += PAGE;
            }
        }
        Ok(())
    }

    /// Point the 4 KiB page at `gpa` to `hpa` with permissions `perm`, or unmap it
    /// (`None`), replacing whatever 4 KiB leaf was there (used at run time for the
    /// IMSIC pages, whose backing moves; the caller flushes the G-stage TLBs of every
    /// hart afterwards). A page inside a 2 MiB leaf is refused.
    pub fn set_page(&mut self, gpa: u64, hpa: Option<u64>, perm: Perm) -> Result<(), MapError> {
        if !gpa.is_multiple_of(PAGE) || hpa.is_some_and(|h| !h.is_multiple_of(PAGE)) {
            return Err(MapError::Unaligned);
        }
        if gpa >= GPA_LIMIT {
            return Err(MapError::OutOfRange);
        }
        let l1 = self.l1_table(gpa)?;
        let i1 = ((gpa >> 21) & 0x1ff) as usize;
        let pte = self.tables[l1].0[i1];
        if pte != 0 && Stage2::decode(pte) == Entry::Leaf {
            return Err(MapError::Overlap);
        }
        let l0 = self.l0_table(l1, gpa)?;
        let i = ((gpa >> 12) & 0x1ff) as usize;
        self.tables[l0].0[i] = match hpa {
            Some(h) => Stage2::leaf_entry(h, perm, Leaf::Page),
            None => 0,
        };
        Ok(())
    }
}
