//! G-stage (guest-physical to host-physical) page tables in Sv39x4 format.
//!
//! Root: 2048 entries (16 KiB, 16 KiB aligned) indexed by GPA bits 40:30; then
//! ordinary 512-entry Sv39 tables for bits 29:21 and 20:12. Leaves are 2 MiB where
//! both addresses and the size allow it, else 4 KiB. Every leaf has U = 1 (G-stage
//! accesses count as user accesses) and A = D = 1 (no A/D faults).
//! Tables are built at boot, in safe Rust, and never freed (guests live forever).
use alloc::boxed::Box;
use alloc::vec::Vec;

const PTE_V: u64 = 1 << 0;
/// Readable.
pub const R: u64 = 1 << 1;
/// Writable.
pub const W: u64 = 1 << 2;
/// Executable.
pub const X: u64 = 1 << 3;
const PTE_U: u64 = 1 << 4;
const PTE_A: u64 = 1 << 6;
const PTE_D: u64 = 1 << 7;

const PAGE: u64 = 4096;
const MEGA: u64 = 2 << 20;
/// Sv39x4 covers 2^41 bytes of guest-physical space.
pub const GPA_LIMIT: u64 = 1 << 41;

#[repr(C, align(16384))]
struct Root([u64; 2048]);

#[repr(C, align(4096))]
struct Table([u64; 512]);

/// Why a mapping was refused (a configuration error, never a guest's doing).
#[derive(Clone, Copy, Debug)]
pub enum MapError {
    /// Not page aligned.
    Unaligned,
    /// Beyond the Sv39x4 range.
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
            root: Box::new(Root([0; 2048])),
            tables: Vec::new(),
        }
    }

    /// `hgatp` value: mode Sv39x4 (8), `vmid`, root PPN.
    pub fn hgatp(&self, vmid: u16) -> usize {
        let ppn = (&*self.root as *const Root as usize) >> 12;
        (8usize << 60) | ((vmid as usize & 0x3fff) << 44) | ppn
    }

    fn table_index(&self, pte: u64) -> Option<usize> {
        let addr = ((pte >> 10) << 12) as usize;
        self.tables
            .iter()
            .position(|t| &**t as *const Table as usize == addr)
    }

    fn next_table(&mut self, pte: u64) -> Result<usize, MapError> {
        if pte & PTE_V == 0 {
            return Err(MapError::OutOfRange);
        }
        if pte & (R | W | X) != 0 {
            return Err(MapError::Overlap);
        }
        self.table_index(pte).ok_or(MapError::Overlap)
    }

    fn new_table(&mut self) -> (usize, u64) {
        let t = Box::new(Table([0; 512]));
        let pte = (((&*t as *const Table as u64) >> 12) << 10) | PTE_V;
        self.tables.push(t);
        (self.tables.len() - 1, pte)
    }

    fn l1_table(&mut self, gpa: u64) -> Result<usize, MapError> {
        let i = ((gpa >> 30) & 0x7ff) as usize;
        if self.root.0[i] == 0 {
            let (idx, pte) = self.new_table();
            self.root.0[i] = pte;
            return Ok(idx);
        }
        self.next_table(self.root.0[i])
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
    pub fn map(&mut self, gpa: u64, hpa: u64, size: u64, perm: u64) -> Result<(), MapError> {
        if !gpa.is_multiple_of(PAGE) || !hpa.is_multiple_of(PAGE) || !size.is_multiple_of(PAGE) {
            return Err(MapError::Unaligned);
        }
        if gpa.checked_add(size).is_none_or(|e| e > GPA_LIMIT) {
            return Err(MapError::OutOfRange);
        }
        let leaf = perm | PTE_V | PTE_U | PTE_A | PTE_D;
        let mut off = 0;
        while off < size {
            let (g, h) = (gpa + off, hpa + off);
            let l1 = self.l1_table(g)?;
            if g % MEGA == 0 && h % MEGA == 0 && size - off >= MEGA {
                let i = ((g >> 21) & 0x1ff) as usize;
                if self.tables[l1].0[i] != 0 {
                    return Err(MapError::Overlap);
                }
                self.tables[l1].0[i] = ((h >> 12) << 10) | leaf;
                off += MEGA;
            } else {
                let l0 = self.l0_table(l1, g)?;
                let i = ((g >> 12) & 0x1ff) as usize;
                if self.tables[l0].0[i] != 0 {
                    return Err(MapError::Overlap);
                }
                self.tables[l0].0[i] = ((h >> 12) << 10) | leaf;
                off += PAGE;
            }
        }
        Ok(())
    }

    /// Point the 4 KiB page at `gpa` to `hpa` with permissions `perm`, or unmap it
    /// (`None`), replacing whatever 4 KiB leaf was there (used at run time for the
    /// IMSIC pages, whose backing moves; the caller flushes the G-stage TLBs of every
    /// hart afterwards). A page inside a 2 MiB leaf is refused.
    pub fn set_page(&mut self, gpa: u64, hpa: Option<u64>, perm: u64) -> Result<(), MapError> {
        if !gpa.is_multiple_of(PAGE) || hpa.is_some_and(|h| !h.is_multiple_of(PAGE)) {
            return Err(MapError::Unaligned);
        }
        if gpa >= GPA_LIMIT {
            return Err(MapError::OutOfRange);
        }
        let l1 = self.l1_table(gpa)?;
        let i1 = ((gpa >> 21) & 0x1ff) as usize;
        let pte = self.tables[l1].0[i1];
        if pte & PTE_V != 0 && pte & (R | W | X) != 0 {
            return Err(MapError::Overlap);
        }
        let l0 = self.l0_table(l1, gpa)?;
        let i = ((gpa >> 12) & 0x1ff) as usize;
        self.tables[l0].0[i] = match hpa {
            Some(h) => ((h >> 12) << 10) | perm | PTE_V | PTE_U | PTE_A | PTE_D,
            None => 0,
        };
        Ok(())
    }
}
