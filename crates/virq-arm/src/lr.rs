//! The virtual CPU interface's list registers, as values and behind a trait.
//!
//! A hypervisor implements [`IchRegs`] with `mrs`/`msr` of `ICH_LR<n>_EL2`,
//! `ICH_HCR_EL2` and `ICH_VTR_EL2`; tests use [`FakeIch`], which also plays the guest
//! (acknowledge and deactivate, as the hardware does for a guest's `ICC_IAR1_EL1` read
//! and `ICC_EOIR1_EL1`/`ICC_DIR_EL1` write).
use crate::regs::{hcr, lr};

/// State of a list register (`ICH_LR<n>_EL2.State`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LrState {
    /// Empty (or the interrupt was deactivated).
    Invalid,
    /// Pending, not yet acknowledged.
    Pending,
    /// Acknowledged, not yet deactivated.
    Active,
    /// Active and pending again (an edge that came while it was active).
    PendingActive,
}

/// One list register value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Lr(pub u64);

impl Lr {
    /// A pending virtual interrupt.
    pub fn pending(vintid: u32, priority: u8, group1: bool) -> Lr {
        let mut v = u64::from(vintid) | (u64::from(priority) << lr::PRIORITY_SHIFT);
        if group1 {
            v |= lr::GROUP1;
        }
        Lr(v | (1 << lr::STATE_SHIFT))
    }

    /// Linked to physical `pintid` (`HW`): the guest's deactivate deactivates it.
    pub fn with_hw(self, pintid: u32) -> Lr {
        let p = (u64::from(pintid) & lr::PINTID_MASK) << lr::PINTID_SHIFT;
        Lr((self.0 & !lr::EOI & !(lr::PINTID_MASK << lr::PINTID_SHIFT)) | lr::HW | p)
    }

    /// With `EOI`: a maintenance interrupt when the guest deactivates it (not with `HW`).
    pub fn with_eoi(self) -> Lr {
        if self.is_hw() {
            self
        } else {
            Lr(self.0 | lr::EOI)
        }
    }

    /// The same register in `state`.
    pub fn with_state(self, state: LrState) -> Lr {
        let s = match state {
            LrState::Invalid => 0,
            LrState::Pending => 1,
            LrState::Active => 2,
            LrState::PendingActive => 3,
        };
        Lr((self.0 & !(3 << lr::STATE_SHIFT)) | (s << lr::STATE_SHIFT))
    }

    /// `State`.
    pub fn state(self) -> LrState {
        match self.0 >> lr::STATE_SHIFT {
            0 => LrState::Invalid,
            1 => LrState::Pending,
            2 => LrState::Active,
            _ => LrState::PendingActive,
        }
    }

    /// `vINTID`.
    pub fn vintid(self) -> u32 {
        (self.0 & lr::VINTID_MASK) as u32
    }

    /// `Priority`.
    pub fn priority(self) -> u8 {
        (self.0 >> lr::PRIORITY_SHIFT) as u8
    }

    /// `HW`.
    pub fn is_hw(self) -> bool {
        self.0 & lr::HW != 0
    }

    /// `pINTID` (meaningful with `HW`).
    pub fn pintid(self) -> u32 {
        ((self.0 >> lr::PINTID_SHIFT) & lr::PINTID_MASK) as u32
    }

    /// `EOI` (meaningful without `HW`).
    pub fn has_eoi(self) -> bool {
        !self.is_hw() && self.0 & lr::EOI != 0
    }
}

/// The EL2 registers of the virtual CPU interface, on the current physical CPU.
pub trait IchRegs {
    /// List registers implemented (`ICH_VTR_EL2.ListRegs + 1`, 1..=16).
    fn num_lrs(&self) -> usize;
    /// Read `ICH_LR<n>_EL2`.
    fn read_lr(&self, n: usize) -> Lr;
    /// Write `ICH_LR<n>_EL2`.
    fn write_lr(&mut self, n: usize, v: Lr);
    /// Read `ICH_HCR_EL2`.
    fn read_hcr(&self) -> u64;
    /// Write `ICH_HCR_EL2`.
    fn write_hcr(&mut self, v: u64);
}

/// A software model of the registers, which also plays the guest's CPU interface.
#[derive(Clone, Debug)]
pub struct FakeIch {
    /// The list registers (`num` of them are implemented).
    pub lrs: [Lr; 16],
    /// Implemented list registers.
    pub num: usize,
    /// `ICH_HCR_EL2`.
    pub hcr: u64,
    /// Virtual interrupts the guest deactivated that were `HW`-linked: the physical
    /// INTIDs the hardware deactivated for it, in order.
    pub hw_deactivated: [u32; 64],
    /// Entries of `hw_deactivated` used.
    pub hw_count: usize,
}

impl FakeIch {
    /// `num` list registers (1..=16), all empty.
    pub fn new(num: usize) -> FakeIch {
        FakeIch {
            lrs: [Lr(0); 16],
            num: num.clamp(1, 16),
            hcr: 0,
            hw_deactivated: [0; 64],
            hw_count: 0,
        }
    }

    /// The guest reads `ICC_IAR1_EL1`: the highest-priority pending list register
    /// (lowest value, then lowest register) becomes active; its vINTID, or `None`
    /// (1023) if nothing is pending. Interrupts at or below the priority of an active
    /// one are not signalled (the running priority), as on hardware.
    pub fn acknowledge(&mut self) -> Option<u32> {
        let running = self.lrs[..self.num]
            .iter()
            .filter(|l| matches!(l.state(), LrState::Active | LrState::PendingActive))
            .map(|l| l.priority())
            .min();
        let (n, l) = self.lrs[..self.num]
            .iter()
            .enumerate()
            .filter(|(_, l)| l.state() == LrState::Pending)
            .filter(|(_, l)| running.is_none_or(|r| l.priority() < r))
            .min_by_key(|(n, l)| (l.priority(), *n))?;
        let id = l.vintid();
        self.lrs[n] = l.with_state(LrState::Active);
        Some(id)
    }

    /// The guest writes `ICC_EOIR1_EL1` (with EOImode 0: drop and deactivate) for
    /// `vintid`: its active list register becomes invalid, or pending if it was
    /// pending and active. False if no list register holds it active.
    pub fn deactivate(&mut self, vintid: u32) -> bool {
        for n in 0..self.num {
            let l = self.lrs[n];
            if l.vintid() != vintid {
                continue;
            }
            let next = match l.state() {
                LrState::Active => LrState::Invalid,
                LrState::PendingActive => LrState::Pending,
                _ => continue,
            };
            if l.is_hw() && self.hw_count < self.hw_deactivated.len() {
                self.hw_deactivated[self.hw_count] = l.pintid();
                self.hw_count += 1;
            }
            self.lrs[n] = l.with_state(next);
            return true;
        }
        false
    }

    /// Whether the underflow maintenance interrupt is asserted: `UIE` and at most one
    /// list register holds an interrupt.
    pub fn underflow(&self) -> bool {
        let used = self.lrs[..self.num]
            .iter()
            .filter(|l| l.state() != LrState::Invalid)
            .count();
        self.hcr & hcr::UIE != 0 && used <= 1
    }
}

impl IchRegs for FakeIch {
    fn num_lrs(&self) -> usize {
        self.num
    }
    fn read_lr(&self, n: usize) -> Lr {
        self.lrs.get(n).copied().unwrap_or_default()
    }
    fn write_lr(&mut self, n: usize, v: Lr) {
        if n < self.num {
            self.lrs[n] = v;
        }
    }
    fn read_hcr(&self) -> u64 {
        self.hcr
    }
    fn write_hcr(&mut self, v: u64) {
        self.hcr = v;
    }
}
