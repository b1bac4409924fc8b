//! Decoding the loads and stores that trap on emulated MMIO.
//!
//! The instruction comes either from `htinst` (a *transformed* instruction: always
//! the 32-bit form, bit 1 clear if the original was compressed) or from guest memory
//! (then possibly a compressed instruction).

/// A decoded MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Load `size` bytes into `rd`.
    Load {
        /// Destination register.
        rd: u8,
        /// Bytes.
        size: u8,
        /// Sign-extend.
        signed: bool,
    },
    /// Store the low `size` bytes of `rs2`.
    Store {
        /// Source register.
        rs2: u8,
        /// Bytes.
        size: u8,
    },
}

/// Length of the original instruction behind a transformed `htinst` value.
pub fn transformed_len(htinst: u32) -> usize {
    if htinst & 2 != 0 {
        4
    } else {
        2
    }
}

/// Decode a load or store. `transformed` says `insn` came from `htinst`.
pub fn decode(insn: u32, transformed: bool) -> Option<Access> {
    let insn = if transformed { insn | 3 } else { insn };
    if insn & 3 == 3 {
        let rd = ((insn >> 7) & 31) as u8;
        let rs2 = ((insn >> 20) & 31) as u8;
        let funct3 = (insn >> 12) & 7;
        return match insn & 0x7f {
            0x03 => match funct3 {
                0 => Some(Access::Load {
                    rd,
                    size: 1,
                    signed: true,
                }),
                1 => Some(Access::Load {
                    rd,
                    size: 2,
                    signed: true,
                }),
                2 => Some(Access::Load {
                    rd,
                    size: 4,
                    signed: true,
                }),
                3 => Some(Access::Load {
                    rd,
                    size: 8,
                    signed: false,
                }),
                4 => Some(Access::Load {
                    rd,
                    size: 1,
                    signed: false,
                }),
                5 => Some(Access::Load {
                    rd,
                    size: 2,
                    signed: false,
                }),
                6 => Some(Access::Load {
                    rd,
                    size: 4,
                    signed: false,
                }),
                _ => None,
            },
            0x23 => match funct3 {
                0 => Some(Access::Store { rs2, size: 1 }),
                1 => Some(Access::Store { rs2, size: 2 }),
                2 => Some(Access::Store { rs2, size: 4 }),
                3 => Some(Access::Store { rs2, size: 8 }),
                _ => None,
            },
            _ => None,
        };
    }
    // Compressed (RVC), quadrants 0 and 2.
    let funct3 = (insn >> 13) & 7;
    let rd_p = (8 + ((insn >> 2) & 7)) as u8;
    let rd = ((insn >> 7) & 31) as u8;
    let rs2 = ((insn >> 2) & 31) as u8;
    match (insn & 3, funct3) {
        (0, 2) => Some(Access::Load {
            rd: rd_p,
            size: 4,
            signed: true,
        }), // c.lw
        (0, 3) => Some(Access::Load {
            rd: rd_p,
            size: 8,
            signed: false,
        }), // c.ld
        (0, 6) => Some(Access::Store { rs2: rd_p, size: 4 }), // c.sw
        (0, 7) => Some(Access::Store { rs2: rd_p, size: 8 }), // c.sd
        (2, 2) if rd != 0 => Some(Access::Load {
            rd,
            size: 4,
            signed: true,
        }), // c.lwsp
        (2, 3) if rd != 0 => Some(Access::Load {
            rd,
            size: 8,
            signed: false,
        }), // c.ldsp
        (2, 6) => Some(Access::Store { rs2, size: 4 }),       // c.swsp
        (2, 7) => Some(Access::Store { rs2, size: 8 }),       // c.sdsp
        _ => None,
    }
}

/// Sign- or zero-extend a `size`-byte value.
pub fn extend(v: u64, size: u8, signed: bool) -> u64 {
    let bits = u32::from(size) * 8;
    if bits >= 64 {
        return v;
    }
    let v = v & ((1u64 << bits) - 1);
    if signed && v >> (bits - 1) & 1 != 0 {
        v | !((1u64 << bits) - 1)
    } else {
        v
    }
}

/// The low `size` bytes of `v`.
pub fn truncate(v: u64, size: u8) -> u64 {
    extend(v, size, false)
}
