//! A software IMSIC interrupt file (RISC-V AIA v1.0, chapter 3 "IMSIC").
//!
//! [`ImsicFile`] is the state of one interrupt file and the semantics of its
//! registers; [`crate::msi::VcpuImsic`] puts it in front of a vCPU.
//!
//! - Indirect registers (AIA 3.8 / 3.9), selected by `vsiselect`, RV64 view:
//!   `0x70` `eidelivery`, `0x72` `eithreshold`, `0x80 + k` `eip{k}`, `0xC0 + k`
//!   `eie{k}`. Odd `k` do not exist on RV64: [`IselectError::Illegal`] (hyp injects a
//!   virtual-instruction exception). `0x71` and `0x73..=0x7F` are reserved: read zero,
//!   writes ignored. Values outside `0x70..=0xFF` are not the IMSIC's:
//!   [`IselectError::NotImsic`].
//! - `eidelivery` supports 0 and 1 only (guest files never support `0x40000000`).
//! - `eithreshold` is WLRL, holds `0..=num_ids`; larger writes are reduced modulo
//!   2048 (only 11 bits exist).
//! - `stopei` (AIA 3.10): reads `(id << 16) | id` of the lowest-numbered pending and
//!   enabled identity below a non-zero threshold; a write claims the identity the
//!   register held, whatever value is written.
//! - MSIs set pending bits by number (`seteipnum`, AIA 3.6); identity 0 and identities
//!   above `num_ids` are ignored.

/// Largest number of identities an interrupt file may implement.
pub const MAX_IDS: u32 = 2047;

/// CSR number of `sireg` (a VS-mode access reaches `vsireg`; AIA 2.1).
pub const CSR_SIREG: u32 = 0x151;
/// CSR number of `stopei` (a VS-mode access reaches `vstopei`; AIA 3.9).
pub const CSR_STOPEI: u32 = 0x15c;

/// `*iselect` value of `eidelivery`.
pub const ISELECT_EIDELIVERY: u32 = 0x70;
/// `*iselect` value of `eithreshold`.
pub const ISELECT_EITHRESHOLD: u32 = 0x72;
/// `*iselect` value of `eip0`.
pub const ISELECT_EIP0: u32 = 0x80;
/// `*iselect` value of `eie0`.
pub const ISELECT_EIE0: u32 = 0xC0;

const WORDS: usize = 32; // 2048 identities in 64-bit words

/// Complete architectural state of one interrupt file: what moves between a hardware
/// guest file and a software file. Bit `i % 64` of word `i / 64` is identity `i`
/// (word `j` is RV64's `eip{2j}` / `eie{2j}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImsicFileState {
    /// `eidelivery` (0 or 1).
    pub eidelivery: u32,
    /// `eithreshold`.
    pub eithreshold: u32,
    /// The `eip` array.
    pub eip: [u64; WORDS],
    /// The `eie` array.
    pub eie: [u64; WORDS],
}

impl Default for ImsicFileState {
    fn default() -> Self {
        Self {
            eidelivery: 0,
            eithreshold: 0,
            eip: [0; WORDS],
            eie: [0; WORDS],
        }
    }
}

/// Why an indirect-register access was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IselectError {
    /// The selector is outside `0x70..=0xFF`: not an IMSIC register.
    NotImsic,
    /// An odd `eip`/`eie` number on RV64: the access raises a virtual-instruction
    /// exception in the guest.
    Illegal,
    /// The file is a hardware guest file: the guest reaches it without trapping, so
    /// there is nothing to emulate (a hyp bug if it happens).
    NotEmulated,
}

/// A CSR operation on an emulated CSR (`vsireg` or `vstopei`), as decoded by hyp from
/// `csrrw`/`csrrs`/`csrrc` (and their immediate forms). `csrrs`/`csrrc` with `rs1 =
/// x0` (or `uimm = 0`) do not write and must be passed as [`CsrOp::Read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsrOp {
    /// Read only.
    Read,
    /// `csrrw`: replace.
    Write(u64),
    /// `csrrs`: set the given bits.
    Set(u64),
    /// `csrrc`: clear the given bits.
    Clear(u64),
}

impl CsrOp {
    /// The new value of a register holding `old`, or `None` for a read.
    pub fn apply(self, old: u64) -> Option<u64> {
        match self {
            Self::Read => None,
            Self::Write(v) => Some(v),
            Self::Set(v) => Some(old | v),
            Self::Clear(v) => Some(old & !v),
        }
    }
}

/// One software interrupt file with `num_ids` identities (1..=num_ids).
///
/// **Guarantees:** the AIA chapter 3 register semantics the module docs list; no value
/// panics. **The caller must:** serialise calls (`&mut self`) and report
/// [`Self::line`] changes to the vCPU (what [`crate::msi::VcpuImsic`] does).
///
/// # Example
///
/// ```
/// use virq_riscv::imsic::{CsrOp, ImsicFile, ISELECT_EIDELIVERY, ISELECT_EIE0};
///
/// let mut file = ImsicFile::new(63).unwrap();
/// file.ireg(ISELECT_EIDELIVERY, CsrOp::Write(1)).unwrap(); // trapped vsireg writes
/// file.ireg(ISELECT_EIE0, CsrOp::Set(1 << 9)).unwrap();
/// file.set_pending(9); // an MSI to seteipnum
/// assert!(file.line(), "the file signals its vCPU");
/// assert_eq!(file.stopei(CsrOp::Write(0)), (9 << 16) | 9); // claim
/// assert!(!file.line());
/// ```
#[derive(Clone, Debug)]
pub struct ImsicFile {
    num_ids: u32,
    s: ImsicFileState,
}

impl ImsicFile {
    /// A file implementing identities `1..=num_ids`; `num_ids` must be `64k - 1`
    /// within `63..=2047` (AIA 3.1).
    pub fn new(num_ids: u32) -> Result<Self, crate::ConfigError> {
        if !(63..=MAX_IDS).contains(&num_ids) || (num_ids + 1) % 64 != 0 {
            return Err(crate::ConfigError::Identities);
        }
        Ok(Self {
            num_ids,
            s: ImsicFileState::default(),
        })
    }

    /// Number of implemented identities.
    pub fn num_ids(&self) -> u32 {
        self.num_ids
    }

    /// Number of 64-bit words of the `eip`/`eie` arrays in use.
    fn words(&self) -> usize {
        (self.num_ids as usize + 1) / 64
    }

    /// Mask of implemented identities in word `j`.
    fn id_mask(&self, j: usize) -> u64 {
        if j >= self.words() {
            0
        } else if j == 0 {
            !1
        } else {
            !0
        }
    }

    /// A copy of the state, for moving the file.
    pub fn save(&self) -> ImsicFileState {
        self.s
    }

    /// Loads `state`, legalised to this file (unimplemented bits dropped).
    pub fn restore(&mut self, state: &ImsicFileState) {
        self.s.eidelivery = state.eidelivery & 1;
        self.s.eithreshold = state.eithreshold & MAX_IDS;
        for j in 0..WORDS {
            let m = self.id_mask(j);
            self.s.eip[j] = state.eip[j] & m;
            self.s.eie[j] = state.eie[j] & m;
        }
    }

    /// An MSI carrying `id` (a write of `id` to `seteipnum`). Returns false, changing
    /// nothing, when `id` is not an implemented identity.
    pub fn set_pending(&mut self, id: u32) -> bool {
        if id == 0 || id > self.num_ids {
            return false;
        }
        self.s.eip[id as usize / 64] |= 1 << (id % 64);
        true
    }

    /// Is identity `id` pending?
    pub fn is_pending(&self, id: u32) -> bool {
        id <= self.num_ids && (self.s.eip[id as usize / 64] >> (id % 64)) & 1 == 1
    }

    /// The lowest pending-and-enabled identity under the threshold, 0 if none.
    pub fn top_id(&self) -> u32 {
        let limit = match self.s.eithreshold {
            0 => self.num_ids + 1,
            t => t.min(self.num_ids + 1),
        };
        for j in 0..self.words() {
            let x = self.s.eip[j] & self.s.eie[j];
            if x != 0 {
                let id = j as u32 * 64 + x.trailing_zeros();
                return if id < limit { id } else { 0 };
            }
        }
        0
    }

    /// The value of `stopei`: `(id << 16) | id`, or 0.
    pub fn topei(&self) -> u32 {
        let id = self.top_id();
        (id << 16) | id
    }

    /// A `stopei` access: returns the value read; any write claims that value's
    /// identity (AIA 3.10).
    pub fn stopei(&mut self, op: CsrOp) -> u32 {
        let v = self.topei();
        if op != CsrOp::Read && v != 0 {
            let id = v >> 16;
            self.s.eip[id as usize / 64] &= !(1 << (id % 64));
        }
        v
    }

    /// The file's interrupt signal: `eidelivery = 1` and `topei != 0` (AIA 3.11).
    pub fn line(&self) -> bool {
        self.s.eidelivery == 1 && self.top_id() != 0
    }

    /// An access to the indirect register `iselect` through `*ireg`. Returns the old
    /// value.
    pub fn ireg(&mut self, iselect: u32, op: CsrOp) -> Result<u64, IselectError> {
        match iselect {
            ISELECT_EIDELIVERY => {
                let old = u64::from(self.s.eidelivery);
                if let Some(v) = op.apply(old) {
                    self.s.eidelivery = (v & 1) as u32;
                }
                Ok(old)
            }
            ISELECT_EITHRESHOLD => {
                let old = u64::from(self.s.eithreshold);
                if let Some(v) = op.apply(old) {
                    self.s.eithreshold = (v as u32) & MAX_IDS;
                }
                Ok(old)
            }
            0x71 | 0x73..=0x7F => Ok(0),
            0x80..=0xFF => {
                let k = iselect & 0x3F;
                if k % 2 == 1 {
                    return Err(IselectError::Illegal);
                }
                let j = (k / 2) as usize;
                let mask = self.id_mask(j);
                let arr = if iselect < ISELECT_EIE0 {
                    &mut self.s.eip
                } else {
                    &mut self.s.eie
                };
                let old = arr[j];
                if let Some(v) = op.apply(old) {
                    arr[j] = v & mask;
                }
                Ok(old)
            }
            _ => Err(IselectError::NotImsic),
        }
    }
}
