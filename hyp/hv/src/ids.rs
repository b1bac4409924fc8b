//! hyp's ids and the sizes of its tables of them.
//!
//! Each kind of number that is easy to confuse with another has its own type:
//!
//! | type | what | not to be confused with |
//! |---|---|---|
//! | [`Virq`] | a guest's virtual interrupt source (its vPLIC or vAPLIC source) | [`Pirq`] |
//! | [`Pirq`] | a physical source of the host controller (PLIC or APLIC source) | [`Virq`] |
//! | [`GuestVcpuId`] | a vCPU's id inside its guest | `Vcpu::index`, its slot in `World::vcpus` |
//! | [`HartId`] | a physical hart's id (`mhartid`) | `Hart::index`, its slot in `World::harts` |
//!
//! The indices (`Hart::index`, `Vcpu::index`) stay plain `usize`s, and of each pair the
//! id is the typed one: a hart's index is the hart number of every virq-core and
//! virq-riscv API hyp calls (`VcpuBlock::home`, `HgeiAllocator`, `Backing::Hardware`),
//! and indexes hyp's own tables. Library calls that take a bare `u32` source number
//! get `.0` at the call.
use core::fmt;

pub use crate::arch::HartId;

/// Physical interrupt ids the route table covers (PLIC sources 0..1023).
pub const MAX_PIRQ: usize = 1024;
/// Virtual sources a guest can have (vPLIC limit).
pub const MAX_VIRQS: usize = 1024;
/// vCPUs per guest (vPLIC contexts).
pub const MAX_VCPUS_PER_GUEST: usize = 8;
/// Passthrough interrupts one guest can have in flight at once.
pub const INFLIGHT_SLOTS: usize = 16;

/// A vCPU's id inside its guest: the hart id the guest sees (`a0` at start, SBI hart
/// masks), its vPLIC context and IMSIC page, its slot in the guest's per-vCPU tables
/// (`0..` the guest's vCPU count). Not the vCPU's global index in `World::vcpus`
/// (`Vcpu::index`); `Guest::vcpu` goes from one to the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestVcpuId(pub u32);

impl GuestVcpuId {
    /// The id of the guest's hart `hartid` (an SBI argument), if it fits an id at all.
    pub fn from_hartid(hartid: usize) -> Option<Self> {
        u32::try_from(hartid).ok().map(GuestVcpuId)
    }

    /// As a hart id (the guest's `a0`, SBI hart numbers).
    pub fn hartid(self) -> usize {
        self.0 as usize
    }

    /// As a slot in the guest's own per-vCPU tables.
    pub fn slot(self) -> usize {
        self.0 as usize
    }
}

/// A guest's virtual interrupt source: a source of its vPLIC or vAPLIC, the number in
/// its DTB's `interrupts` and in its ack notifier and in-flight tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Virq(pub u32);

/// A physical interrupt source of the host controller: a PLIC source, or an APLIC source
/// (also the identity of its MSIs in hyp's own S-level IMSIC file); the number in the
/// route table and in `World::pirqs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pirq(pub u32);

impl Pirq {
    /// As an index into per-source tables (`World::pirqs`).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for Virq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Pirq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
