//! The sizes of hyp's tables of ids.

/// Physical interrupt ids the route table covers (PLIC sources 0..1023).
pub const MAX_PIRQ: usize = 1024;
/// Virtual sources a guest can have (vPLIC limit).
pub const MAX_VIRQS: usize = 1024;
/// vCPUs per guest (vPLIC contexts).
pub const MAX_VCPUS_PER_GUEST: usize = 8;
/// Passthrough interrupts one guest can have in flight at once.
pub const INFLIGHT_SLOTS: usize = 16;
