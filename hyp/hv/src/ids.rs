//! The sizes of hyp's tables of ids.

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
