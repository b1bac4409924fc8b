//! An aarch64 guest's physical map: the same addresses as QEMU `virt`, so the guest
//! DTB looks familiar (the ITS frames only for `topology = "vgicv4"`). RAM is at `hyp_config::GUEST_RAM_BASE` (0x8000_0000).
/// Guest-physical distributor.
pub const GICD_IPA: u64 = 0x0800_0000;
/// Its size.
pub const GICD_SIZE: u64 = 0x1_0000;
/// Guest-physical first redistributor.
pub const GICR_IPA: u64 = 0x080a_0000;
/// Guest-physical ITS control frame of a vgicv4 guest (QEMU `virt`'s); the
/// translation frame follows.
pub const ITS_IPA: u64 = 0x0808_0000;
/// Bytes of its two frames.
pub const ITS_SIZE: u64 = virq_arm::vits::gits::SIZE;
/// QEMU `virt`'s PL011, at the same address on both sides.
pub const UART_BASE: u64 = 0x0900_0000;
/// The PL011's INTID (SPI 1), on both sides.
pub const UART_INTID: u32 = 33;

/// Bytes of the redistributor region of a guest with `vcpus` vCPUs (one RD and one SGI
/// frame each, as the vGIC model lays them out).
pub fn gicr_size(vcpus: usize) -> u64 {
    virq_arm::regs::gicr::STRIDE * vcpus as u64
}
