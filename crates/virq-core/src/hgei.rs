//! Guest external interrupt lines, per physical hart.
//!
//! Seed: `003_…` (KVM RISC-V AIA: HGEI lines managed per hart, because harts can differ).
//!
//! A RISC-V hart with the AIA has `GEILEN` guest external interrupt lines, one per
//! hardware guest interrupt file of its IMSIC. `hgeie` bit *i* enables line *i*; bit 0 is
//! never implemented. The count can differ between harts, so it is probed on each hart
//! ([`probe_lines`]) and kept per hart.
//!
//! # Protocol
//!
//! Each hart has one spin-lock-protected record: whether it is online, the
//! implemented lines, the free lines and the owner of each line. Allocation is not on a
//! delivery path (it happens when a vCPU is loaded on a hart), so a short per-hart lock
//! is the simple, obviously-correct choice; no lock is ever held across two harts. The
//! global figure ([`HgeiAllocator::global_lines`]) is the minimum over online harts,
//! recomputed on demand from the per-hart records.
//!
//! **Interrupts off.** [`HgeiAllocator::owner`] is the SGEI handler's lookup and takes
//! the hart's lock: every call on a hart must run with that hart's interrupts disabled
//! (as hypervisor code does), or an SGEI arriving inside `alloc` would spin forever on
//! the lock its own hart holds.
//!
//! **Minimum over online harts** (as the issue specifies): one online hart with no lines
//! makes `global_lines()` 0, and callers fall back to software files everywhere. The
//! seed's reviewer suggested ignoring zero-line harts instead; per-hart allocation makes
//! either policy a one-line change here, and `alloc` on such a hart already reports
//! `NoFreeLine`, so the per-vCPU fallback works under both.

use crate::sync::{array, Mutex};

/// Highest line number + 1 that `hgeie` can hold on RV64.
pub const MAX_LINES: usize = 64;

/// Probe the usable lines: write all-ones to `hgeie`, read it back, and keep only lines
/// `1..=guest_files` — line *i* signals guest interrupt file *i*, so a line beyond the
/// files the hart's IMSIC really has (`2^guest-index-bits - 1`, from the DTB) must
/// never be handed out even if `hgeie` implements it (seed 003's review:
/// `min(probed lines, guest files)`). Bit 0 never counts. `write_then_read` performs
/// the CSR write and returns the value read.
pub fn probe_lines(write_then_read: impl FnOnce(u64) -> u64, guest_files: u32) -> u64 {
    let files = if guest_files >= 63 {
        !0
    } else {
        (1u64 << (guest_files + 1)) - 1
    };
    write_then_read(!0) & files & !1
}

/// Guest interrupt files of an IMSIC with `guest_index_bits` (`riscv,guest-index-bits`):
/// `2^bits - 1` (index 0 is the supervisor file), saturating at the 63 lines `hgeie`
/// can name.
pub fn guest_files(guest_index_bits: u32) -> u32 {
    if guest_index_bits >= 6 {
        63
    } else {
        (1u32 << guest_index_bits) - 1
    }
}

/// Why an allocator call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HgeiError {
    /// The hart index is not below the allocator's hart count.
    NoSuchHart {
        /// The refused hart index.
        hart: usize,
    },
    /// The hart is offline.
    HartOffline {
        /// The hart.
        hart: usize,
    },
    /// The hart was brought online twice.
    AlreadyOnline {
        /// The hart.
        hart: usize,
    },
    /// Every implemented line of the hart is taken.
    NoFreeLine {
        /// The hart.
        hart: usize,
    },
    /// The line is not implemented on the hart (or is line 0).
    NoSuchLine {
        /// The hart.
        hart: usize,
        /// The refused line.
        line: u32,
    },
    /// The line is free: a double free.
    NotAllocated {
        /// The hart.
        hart: usize,
        /// The line.
        line: u32,
    },
    /// The line belongs to someone else.
    NotOwner {
        /// The hart.
        hart: usize,
        /// The line.
        line: u32,
        /// Its actual owner.
        owner: u32,
    },
}

impl core::fmt::Display for HgeiError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::NoSuchHart { hart } => write!(f, "hart {hart} is beyond the allocator"),
            Self::HartOffline { hart } => write!(f, "hart {hart} is offline"),
            Self::AlreadyOnline { hart } => write!(f, "hart {hart} is already online"),
            Self::NoFreeLine { hart } => {
                write!(f, "hart {hart} has no free guest external interrupt line")
            }
            Self::NoSuchLine { hart, line } => {
                write!(f, "hart {hart} has no guest external line {line}")
            }
            Self::NotAllocated { hart, line } => {
                write!(f, "line {line} of hart {hart} is not allocated")
            }
            Self::NotOwner { hart, line, owner } => {
                write!(f, "line {line} of hart {hart} belongs to owner {owner}")
            }
        }
    }
}

#[derive(Clone, Copy)]
struct HartLines {
    online: bool,
    implemented: u64,
    free: u64,
    owner: [u32; MAX_LINES],
}

impl HartLines {
    const OFFLINE: Self = Self {
        online: false,
        implemented: 0,
        free: 0,
        owner: [0; MAX_LINES],
    };
}

/// The owners of the lines of a hart that went offline: each must be kicked so it moves
/// to a software interrupt file.
#[derive(Debug, Clone)]
pub struct Owners {
    owners: [u32; MAX_LINES],
    len: usize,
    next: usize,
}

impl Iterator for Owners {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        let owner = *self.owners[..self.len].get(self.next)?;
        self.next += 1;
        Some(owner)
    }
}

/// Per-hart allocator of guest external interrupt lines for up to `HARTS` harts.
///
/// **Guarantees:** lines are counted and owned per hart (harts may differ); a line is
/// handed to one owner at a time; double and foreign frees are typed errors; going
/// offline returns every owner to kick. **The caller must:** make every call that
/// concerns a hart with that hart's interrupts disabled (see the module docs), and
/// allocate at vCPU load, not on a delivery path.
///
/// # Example
///
/// ```
/// use virq_core::hgei::{guest_files, probe_lines, HgeiAllocator, HgeiError};
///
/// let alloc = HgeiAllocator::<2>::new();
/// // Bring-up on each hart: probe `hgeie` (here a fake that keeps 7 and 1 lines).
/// let big = probe_lines(|all_ones| all_ones & 0xfe, guest_files(3));
/// let little = probe_lines(|all_ones| all_ones & 0x02, guest_files(3));
/// assert_eq!(alloc.online(0, big), Ok(7));
/// assert_eq!(alloc.online(1, little), Ok(1));
/// assert_eq!(alloc.global_lines(), 1, "what every hart can offer");
///
/// // vCPU load: a line (a hardware guest file), or fall back to software.
/// assert_eq!(alloc.alloc(1, 100), Ok(1));
/// assert_eq!(alloc.alloc(1, 101), Err(HgeiError::NoFreeLine { hart: 1 }));
/// assert_eq!(alloc.owner(1, 1), Some(100), "the SGEI handler's lookup");
/// assert!(matches!(alloc.free(1, 1, 101), Err(HgeiError::NotOwner { .. })));
/// alloc.free(1, 1, 100).unwrap();
/// ```
pub struct HgeiAllocator<const HARTS: usize> {
    harts: [Mutex<HartLines>; HARTS],
}

impl<const HARTS: usize> HgeiAllocator<HARTS> {
    /// Every hart offline.
    pub fn new() -> Self {
        Self {
            harts: array(|_| Mutex::new(HartLines::OFFLINE)),
        }
    }

    fn hart(&self, hart: usize) -> Result<&Mutex<HartLines>, HgeiError> {
        self.harts.get(hart).ok_or(HgeiError::NoSuchHart { hart })
    }

    /// Bring `hart` online with the lines its probe found ([`probe_lines`]); bit 0 is
    /// ignored. Returns the line count (0: the hart has no hardware guest files).
    pub fn online(&self, hart: usize, implemented: u64) -> Result<u32, HgeiError> {
        let mut h = self.hart(hart)?.lock();
        if h.online {
            return Err(HgeiError::AlreadyOnline { hart });
        }
        let implemented = implemented & !1;
        *h = HartLines {
            online: true,
            implemented,
            free: implemented,
            owner: [0; MAX_LINES],
        };
        Ok(implemented.count_ones())
    }

    /// Take `hart` offline, returning the owners of its allocated lines (to be kicked).
    pub fn offline(&self, hart: usize) -> Result<Owners, HgeiError> {
        let mut h = self.hart(hart)?.lock();
        if !h.online {
            return Err(HgeiError::HartOffline { hart });
        }
        let mut owners = Owners {
            owners: [0; MAX_LINES],
            len: 0,
            next: 0,
        };
        let mut taken = h.implemented & !h.free;
        while taken != 0 {
            let line = taken.trailing_zeros() as usize;
            taken &= taken - 1;
            owners.owners[owners.len] = h.owner[line];
            owners.len += 1;
        }
        *h = HartLines::OFFLINE;
        Ok(owners)
    }

    /// Allocate the lowest free line of `hart` to `owner`.
    pub fn alloc(&self, hart: usize, owner: u32) -> Result<u32, HgeiError> {
        let mut h = self.hart(hart)?.lock();
        if !h.online {
            return Err(HgeiError::HartOffline { hart });
        }
        if h.free == 0 {
            return Err(HgeiError::NoFreeLine { hart });
        }
        let line = h.free.trailing_zeros();
        h.free &= !(1 << line);
        h.owner[line as usize] = owner;
        Ok(line)
    }

    /// Return `line` of `hart`; only its owner may.
    pub fn free(&self, hart: usize, line: u32, owner: u32) -> Result<(), HgeiError> {
        let mut h = self.hart(hart)?.lock();
        if !h.online {
            return Err(HgeiError::HartOffline { hart });
        }
        let bit = Self::line_bit(&h, hart, line)?;
        if h.free & bit != 0 {
            return Err(HgeiError::NotAllocated { hart, line });
        }
        let actual = h.owner[line as usize];
        if actual != owner {
            return Err(HgeiError::NotOwner {
                hart,
                line,
                owner: actual,
            });
        }
        h.free |= bit;
        Ok(())
    }

    fn line_bit(h: &HartLines, hart: usize, line: u32) -> Result<u64, HgeiError> {
        let bit = 1u64.checked_shl(line).unwrap_or(0);
        if h.implemented & bit == 0 {
            return Err(HgeiError::NoSuchLine { hart, line });
        }
        Ok(bit)
    }

    /// The owner of an allocated line (the SGEI handler's lookup).
    pub fn owner(&self, hart: usize, line: u32) -> Option<u32> {
        let h = self.hart(hart).ok()?.lock();
        let bit = Self::line_bit(&h, hart, line).ok()?;
        (h.free & bit == 0).then_some(h.owner[line as usize])
    }

    /// Lines implemented on `hart` (0 when offline or unknown).
    pub fn lines(&self, hart: usize) -> u32 {
        self.hart(hart)
            .map_or(0, |h| h.lock().implemented.count_ones())
    }

    /// Free lines on `hart` (0 when offline or unknown).
    pub fn free_lines(&self, hart: usize) -> u32 {
        self.hart(hart).map_or(0, |h| h.lock().free.count_ones())
    }

    /// The lines every online hart has: the minimum over online harts; 0 means no
    /// hardware guest files (or no hart online).
    pub fn global_lines(&self) -> u32 {
        self.harts
            .iter()
            .filter_map(|h| {
                let h = h.lock();
                h.online.then_some(h.implemented.count_ones())
            })
            .min()
            .unwrap_or(0)
    }
}

impl<const HARTS: usize> Default for HgeiAllocator<HARTS> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn probe_ignores_bit_0_and_keeps_what_sticks() {
        assert_eq!(probe_lines(|w| w & 0xff, 63), 0xfe);
        assert_eq!(probe_lines(|_| 0, 63), 0);
        assert_eq!(probe_lines(|w| w & 0x3, 63), 0x2);
    }

    /// Seed 003's review: a hart whose `hgeie` implements more lines than its IMSIC has
    /// guest files (a fake probe: 7 lines, `guest-index-bits = 1` → 1 file) hands out
    /// only the lines that have a file.
    #[test]
    fn regression_003_lines_clamped_to_guest_files() {
        assert_eq!(guest_files(0), 0);
        assert_eq!(guest_files(1), 1);
        assert_eq!(guest_files(2), 3);
        assert_eq!(guest_files(3), 7);
        assert_eq!(guest_files(6), 63);
        assert_eq!(guest_files(9), 63);
        let fake_hgeie = |w: u64| w & 0xfe;
        assert_eq!(probe_lines(fake_hgeie, guest_files(1)), 0b10);
        assert_eq!(probe_lines(fake_hgeie, guest_files(2)), 0b1110);
        assert_eq!(probe_lines(fake_hgeie, 0), 0, "no guest files, no lines");
        let a = HgeiAllocator::<1>::new();
        assert_eq!(a.online(0, probe_lines(fake_hgeie, guest_files(1))), Ok(1));
        assert_eq!(a.alloc(0, 5), Ok(1));
        assert_eq!(
            a.alloc(0, 6),
            Err(HgeiError::NoFreeLine { hart: 0 }),
            "line 2 has no guest file behind it"
        );
    }

    #[test]
    fn heterogeneous_harts_global_is_the_minimum() {
        let a = HgeiAllocator::<3>::new();
        assert_eq!(a.global_lines(), 0, "no hart online");
        assert_eq!(a.online(0, 0xfe), Ok(7));
        assert_eq!(a.online(1, 0x2), Ok(1));
        assert_eq!(a.global_lines(), 1);
        assert_eq!(a.online(2, 0x1), Ok(0), "bit 0 never counts");
        assert_eq!(a.global_lines(), 0);
        a.offline(2).unwrap();
        assert_eq!(a.global_lines(), 1);
        assert_eq!(a.lines(0), 7);
    }

    #[test]
    fn alloc_until_exhausted_then_free() {
        let a = HgeiAllocator::<1>::new();
        a.online(0, 0x6).unwrap();
        assert_eq!(a.alloc(0, 10), Ok(1));
        assert_eq!(a.alloc(0, 11), Ok(2));
        assert_eq!(a.alloc(0, 12), Err(HgeiError::NoFreeLine { hart: 0 }));
        assert_eq!(a.owner(0, 2), Some(11));
        a.free(0, 1, 10).unwrap();
        assert_eq!(a.owner(0, 1), None);
        assert_eq!(a.free_lines(0), 1);
        assert_eq!(a.alloc(0, 12), Ok(1));
    }

    #[test]
    fn every_error_path() {
        let a = HgeiAllocator::<2>::new();
        assert_eq!(a.alloc(5, 1), Err(HgeiError::NoSuchHart { hart: 5 }));
        assert_eq!(a.alloc(1, 1), Err(HgeiError::HartOffline { hart: 1 }));
        assert_eq!(a.free(1, 1, 1), Err(HgeiError::HartOffline { hart: 1 }));
        assert!(matches!(
            a.offline(1),
            Err(HgeiError::HartOffline { hart: 1 })
        ));
        a.online(0, 0x2).unwrap();
        assert_eq!(a.online(0, 0x2), Err(HgeiError::AlreadyOnline { hart: 0 }));
        assert_eq!(
            a.free(0, 0, 1),
            Err(HgeiError::NoSuchLine { hart: 0, line: 0 })
        );
        assert_eq!(
            a.free(0, 64, 1),
            Err(HgeiError::NoSuchLine { hart: 0, line: 64 })
        );
        assert_eq!(
            a.free(0, 1, 1),
            Err(HgeiError::NotAllocated { hart: 0, line: 1 })
        );
        assert_eq!(a.alloc(0, 7), Ok(1));
        assert_eq!(
            a.free(0, 1, 8),
            Err(HgeiError::NotOwner {
                hart: 0,
                line: 1,
                owner: 7
            })
        );
        a.free(0, 1, 7).unwrap();
        assert_eq!(
            a.free(0, 1, 7),
            Err(HgeiError::NotAllocated { hart: 0, line: 1 }),
            "double free"
        );
        assert!(!format!(
            "{}",
            HgeiError::NotOwner {
                hart: 0,
                line: 1,
                owner: 7
            }
        )
        .is_empty());
    }

    #[test]
    fn offline_returns_owners_to_kick() {
        let a = HgeiAllocator::<1>::new();
        a.online(0, 0xe).unwrap();
        a.alloc(0, 100).unwrap();
        a.alloc(0, 200).unwrap();
        a.alloc(0, 300).unwrap();
        a.free(0, 2, 200).unwrap();
        let owners: Vec<u32> = a.offline(0).unwrap().collect();
        assert_eq!(owners, vec![100, 300]);
        assert_eq!(a.alloc(0, 1), Err(HgeiError::HartOffline { hart: 0 }));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(usize, u32),
        Free(usize, u32, u32),
        Offline(usize),
        Online(usize, u64),
    }

    proptest! {
        /// Against a sequential reference model (a map (hart, line) -> owner).
        #[test]
        fn matches_reference_model(ops in proptest::collection::vec(prop_oneof![
            (0usize..3, 0u32..4).prop_map(|(h, o)| Op::Alloc(h, o)),
            (0usize..3, 0u32..9, 0u32..4).prop_map(|(h, l, o)| Op::Free(h, l, o)),
            (0usize..3).prop_map(Op::Offline),
            (0usize..3, any::<u64>()).prop_map(|(h, m)| Op::Online(h, m & 0x1ff)),
        ], 1..100)) {
            let a = HgeiAllocator::<3>::new();
            // Reference: per hart, Some(implemented mask, owners by line) when online.
            let mut model: [Option<(u64, std::collections::BTreeMap<u32, u32>)>; 3] = Default::default();
            for op in ops {
                match op {
                    Op::Online(h, m) => {
                        let r = a.online(h, m);
                        prop_assert_eq!(r.is_ok(), model[h].is_none());
                        if model[h].is_none() { model[h] = Some((m & !1, Default::default())); }
                    }
                    Op::Offline(h) => {
                        let r = a.offline(h).map(|o| o.collect::<Vec<_>>());
                        match model[h].take() {
                            None => prop_assert!(r.is_err()),
                            Some((_, owners)) => prop_assert_eq!(r.unwrap(), owners.values().copied().collect::<Vec<_>>()),
                        }
                    }
                    Op::Alloc(h, o) => {
                        let r = a.alloc(h, o);
                        match &mut model[h] {
                            None => prop_assert!(r.is_err()),
                            Some((imp, owners)) => {
                                let free = (1..64).find(|l| *imp & (1u64 << l) != 0 && !owners.contains_key(l));
                                prop_assert_eq!(r.ok(), free);
                                if let Some(l) = free { owners.insert(l, o); }
                            }
                        }
                    }
                    Op::Free(h, l, o) => {
                        let r = a.free(h, l, o);
                        let ok = matches!(&model[h], Some((_, owners)) if owners.get(&l) == Some(&o));
                        prop_assert_eq!(r.is_ok(), ok);
                        if ok { model[h].as_mut().unwrap().1.remove(&l); }
                    }
                }
                let want = model.iter().flatten().map(|(imp, _)| imp.count_ones()).min().unwrap_or(0);
                prop_assert_eq!(a.global_lines(), want);
            }
        }
    }
}
