//! Decoding the guest loads and stores that trap on emulated MMIO (RV64).
//!
//! A guest page fault on an emulated device leaves the hypervisor with the faulting
//! instruction in one of two shapes (privileged spec v1.12+, H extension, "Transformed
//! Instruction or Pseudoinstruction for `mtinst` or `htinst`"):
//!
//! - **Transformed**, from `htinst`: always the 32-bit form of the load or store, with
//!   the immediate zeroed and `rs1` replaced by an address offset; bit 0 is 1 and bit 1
//!   is 0 when the original instruction was compressed (so the original length is
//!   [`transformed_len`]). A compressed load/store is transformed into its 32-bit
//!   expansion (`c.lw a0, 0(a1)` becomes `lw a0, 0(x0)` with bit 1 clear). A value
//!   with bit 0 clear is not a transformed instruction (zero, or a pseudoinstruction
//!   for an implicit VS-stage page-table access): the caller reads the instruction
//!   from guest memory instead.
//! - **Raw**, read from guest memory (with `HLVX`): a 32-bit instruction (low bits
//!   `0b11`, [`len`] 4) or a 16-bit RVC one.
//!
//! [`decode`] accepts the RV64I loads (`lb lh lw ld lbu lhu lwu`), the stores
//! (`sb sh sw sd`) and the RV64C integer forms (`c.lw c.ld c.sw c.sd c.lwsp c.ldsp
//! c.swsp c.sdsp`). Everything else is `None` and the caller injects an access fault:
//! floating-point loads and stores, AMOs and LR/SC, Zcb's byte/halfword compressed
//! forms, hypervisor loads, reserved encodings (`c.lwsp`/`c.ldsp` with `rd = x0`,
//! funct3 7 of `LOAD`, funct3 ≥ 4 of `STORE`). The decoder never panics on any value.
//!
//! [`extend`] and [`truncate`] turn device values into register values and back.

/// A decoded MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Load `size` bytes into `rd`.
    Load {
        /// Destination register (`0..32`; `x0` means the value is discarded).
        rd: u8,
        /// Bytes: 1, 2, 4 or 8.
        size: u8,
        /// Sign-extend to XLEN (`lb lh lw`; always false for 8 bytes).
        signed: bool,
    },
    /// Store the low `size` bytes of `rs2`.
    Store {
        /// Source register (`0..32`).
        rs2: u8,
        /// Bytes: 1, 2, 4 or 8.
        size: u8,
    },
}

impl Access {
    /// The access width in bytes (1, 2, 4 or 8).
    pub fn size(self) -> u8 {
        match self {
            Self::Load { size, .. } | Self::Store { size, .. } => size,
        }
    }
}

/// Major opcode `LOAD` (`inst[6:0]`).
pub const OPCODE_LOAD: u32 = 0x03;
/// Major opcode `STORE` (`inst[6:0]`).
pub const OPCODE_STORE: u32 = 0x23;

/// Length in bytes of a raw instruction whose low half is `insn`: 4 when its low two
/// bits are `0b11`, else 2 (RVC). Longer encodings are reserved and not used by any
/// ratified extension.
pub fn len(insn: u32) -> usize {
    if insn & 3 == 3 {
        4
    } else {
        2
    }
}

/// Length of the original instruction behind a transformed `htinst` value: 4 if bit 1
/// is set, 2 if the original was compressed.
pub fn transformed_len(htinst: u32) -> usize {
    if htinst & 2 != 0 {
        4
    } else {
        2
    }
}

/// Decode a load or store. `transformed` says `insn` came from `htinst` (bit 1 then
/// only records the original length and is ignored); otherwise it is a raw
/// instruction, 16-bit when its low two bits are not `0b11` (the upper half is then
/// ignored).
///
/// # Example
///
/// ```
/// use virq_riscv::insn::{decode, extend, Access};
///
/// // `lw a0, 4(a1)` trapped on an MMIO page: load 4 bytes into x10, sign-extended.
/// let access = decode(0x0045_a503, false).unwrap();
/// assert_eq!(access, Access::Load { rd: 10, size: 4, signed: true });
/// assert_eq!(extend(0x8000_0000, 4, true), 0xffff_ffff_8000_0000);
/// assert_eq!(decode(0, false), None, "not a load/store: inject an access fault");
/// ```
#[inline]
pub fn decode(insn: u32, transformed: bool) -> Option<Access> {
    let insn = if transformed { insn | 3 } else { insn };
    if insn & 3 == 3 {
        decode32(insn)
    } else {
        decode16(insn as u16)
    }
}

fn load(rd: u8, size: u8, signed: bool) -> Option<Access> {
    Some(Access::Load { rd, size, signed })
}

fn store(rs2: u8, size: u8) -> Option<Access> {
    Some(Access::Store { rs2, size })
}

/// RV64I `LOAD` and `STORE` (unprivileged spec, chapter "RV64I", table of opcodes).
fn decode32(insn: u32) -> Option<Access> {
    let rd = ((insn >> 7) & 31) as u8;
    let rs2 = ((insn >> 20) & 31) as u8;
    let funct3 = (insn >> 12) & 7;
    match (insn & 0x7f, funct3) {
        (OPCODE_LOAD, 0) => load(rd, 1, true),  // lb
        (OPCODE_LOAD, 1) => load(rd, 2, true),  // lh
        (OPCODE_LOAD, 2) => load(rd, 4, true),  // lw
        (OPCODE_LOAD, 3) => load(rd, 8, false), // ld
        (OPCODE_LOAD, 4) => load(rd, 1, false), // lbu
        (OPCODE_LOAD, 5) => load(rd, 2, false), // lhu
        (OPCODE_LOAD, 6) => load(rd, 4, false), // lwu
        (OPCODE_STORE, 0) => store(rs2, 1),     // sb
        (OPCODE_STORE, 1) => store(rs2, 2),     // sh
        (OPCODE_STORE, 2) => store(rs2, 4),     // sw
        (OPCODE_STORE, 3) => store(rs2, 8),     // sd
        _ => None,
    }
}

/// RV64C integer loads and stores, quadrants 0 and 2 (unprivileged spec, chapter
/// "C" Standard Extension, RVC opcode map).
fn decode16(insn: u16) -> Option<Access> {
    let insn = u32::from(insn);
    let funct3 = (insn >> 13) & 7;
    // rd' / rs2' (bits 4:2) name x8..x15.
    let rd_p = (8 + ((insn >> 2) & 7)) as u8;
    let rd = ((insn >> 7) & 31) as u8;
    let rs2 = ((insn >> 2) & 31) as u8;
    match (insn & 3, funct3) {
        (0, 2) => load(rd_p, 4, true),           // c.lw
        (0, 3) => load(rd_p, 8, false),          // c.ld (RV64)
        (0, 6) => store(rd_p, 4),                // c.sw
        (0, 7) => store(rd_p, 8),                // c.sd (RV64)
        (2, 2) if rd != 0 => load(rd, 4, true),  // c.lwsp (rd = 0 reserved)
        (2, 3) if rd != 0 => load(rd, 8, false), // c.ldsp (rd = 0 reserved)
        (2, 6) => store(rs2, 4),                 // c.swsp
        (2, 7) => store(rs2, 8),                 // c.sdsp
        _ => None,
    }
}

/// Sign- or zero-extend the low `size` bytes of `v` to 64 bits (`size` ≥ 8 returns
/// `v`; `size` 0 gives 0).
pub fn extend(v: u64, size: u8, signed: bool) -> u64 {
    let bits = u32::from(size) * 8;
    if bits >= 64 {
        return v;
    }
    if bits == 0 {
        return 0;
    }
    let v = v & ((1u64 << bits) - 1);
    if signed && (v >> (bits - 1)) & 1 != 0 {
        v | !((1u64 << bits) - 1)
    } else {
        v
    }
}

/// The low `size` bytes of `v`.
pub fn truncate(v: u64, size: u8) -> u64 {
    extend(v, size, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Encodings from `llvm-mc -triple=riscv64 -mattr=+c,+d,+a -show-encoding` (the
    // 32-bit ones under `.option norvc`), a0 = x10, a1 = x11.
    const LB: u32 = 0x0005_8503; // lb a0, 0(a1)
    const LH: u32 = 0x0005_9503;
    const LW: u32 = 0x0005_a503;
    const LD: u32 = 0x0005_b503;
    const LBU: u32 = 0x0005_c503;
    const LHU: u32 = 0x0005_d503;
    const LWU: u32 = 0x0005_e503;
    const SB: u32 = 0x00a5_8023; // sb a0, 0(a1)
    const SH: u32 = 0x00a5_9023;
    const SW: u32 = 0x00a5_a023;
    const SD: u32 = 0x00a5_b023;
    const LW_T6_M4_S0: u32 = 0xffc4_2f83; // lw t6, -4(s0)
    const SD_RA_2040_SP: u32 = 0x7e11_3c23; // sd ra, 2040(sp)
    const C_LW: u32 = 0x4188; // c.lw a0, 0(a1)
    const C_LD: u32 = 0x6188;
    const C_SW: u32 = 0xc188;
    const C_SD: u32 = 0xe188;
    const C_LWSP: u32 = 0x4502; // c.lwsp a0, 0(sp)
    const C_LDSP: u32 = 0x6502;
    const C_SWSP: u32 = 0xc02a; // c.swsp a0, 0(sp)
    const C_SDSP: u32 = 0xe02a;
    const C_LW_S1_124_A5: u32 = 0x5fe4; // c.lw s1, 124(a5)
    const C_SDSP_T6_504: u32 = 0xfffe; // c.sdsp t6, 504(sp)
    const C_FLD: u32 = 0x2188; // c.fld fa0, 0(a1)
    const FLW: u32 = 0x0005_a507; // flw fa0, 0(a1)
    const AMOADD_W: u32 = 0x00b6_252f; // amoadd.w a0, a1, (a2)

    fn l(rd: u8, size: u8, signed: bool) -> Option<Access> {
        Some(Access::Load { rd, size, signed })
    }
    fn s(rs2: u8, size: u8) -> Option<Access> {
        Some(Access::Store { rs2, size })
    }

    /// The transformed form the hart writes to `htinst`: immediate and `rs1` zeroed
    /// (a zero address offset), bit 1 clear when the original was compressed.
    fn transform32(insn: u32) -> u32 {
        match insn & 0x7f {
            OPCODE_LOAD => insn & 0x000f_ffff & !(31 << 15),
            _ => insn & 0x01f0_7fff & !(31 << 15) & !(31 << 7),
        }
    }

    #[test]
    fn every_rv64i_load_width_and_signedness() {
        assert_eq!(decode(LB, false), l(10, 1, true));
        assert_eq!(decode(LH, false), l(10, 2, true));
        assert_eq!(decode(LW, false), l(10, 4, true));
        assert_eq!(decode(LD, false), l(10, 8, false));
        assert_eq!(decode(LBU, false), l(10, 1, false));
        assert_eq!(decode(LHU, false), l(10, 2, false));
        assert_eq!(decode(LWU, false), l(10, 4, false));
        assert_eq!(decode(LW_T6_M4_S0, false), l(31, 4, true));
    }

    #[test]
    fn every_rv64i_store_width() {
        assert_eq!(decode(SB, false), s(10, 1));
        assert_eq!(decode(SH, false), s(10, 2));
        assert_eq!(decode(SW, false), s(10, 4));
        assert_eq!(decode(SD, false), s(10, 8));
        assert_eq!(decode(SD_RA_2040_SP, false), s(1, 8));
    }

    #[test]
    fn every_rv64c_integer_load_and_store() {
        assert_eq!(decode(C_LW, false), l(10, 4, true));
        assert_eq!(decode(C_LD, false), l(10, 8, false));
        assert_eq!(decode(C_SW, false), s(10, 4));
        assert_eq!(decode(C_SD, false), s(10, 8));
        assert_eq!(decode(C_LWSP, false), l(10, 4, true));
        assert_eq!(decode(C_LDSP, false), l(10, 8, false));
        assert_eq!(decode(C_SWSP, false), s(10, 4));
        assert_eq!(decode(C_SDSP, false), s(10, 8));
        assert_eq!(decode(C_LW_S1_124_A5, false), l(9, 4, true));
        assert_eq!(decode(C_SDSP_T6_504, false), s(31, 8));
    }

    #[test]
    fn compressed_decode_ignores_the_upper_half() {
        assert_eq!(decode(0xdead_0000 | C_LW, false), l(10, 4, true));
        assert_eq!(decode(0xffff_0000 | C_SDSP, false), s(10, 8));
    }

    #[test]
    fn transformed_32_bit_forms_decode_like_the_original() {
        for insn in [LB, LH, LW, LD, LBU, LHU, LWU, SB, SH, SW, SD, LW_T6_M4_S0] {
            let t = transform32(insn);
            assert_eq!(t & 3, 3);
            assert_eq!(decode(t, true), decode(insn, false), "{insn:#x}");
            assert_eq!(transformed_len(t), 4);
        }
    }

    #[test]
    fn transformed_compressed_forms_decode_like_the_original() {
        // (compressed, its 32-bit expansion)
        let pairs = [
            (C_LW, 0x0005_a503),           // lw a0, 0(a1)
            (C_LD, 0x0005_b503),           // ld a0, 0(a1)
            (C_SW, SW),                    // sw a0, 0(a1)
            (C_SD, SD),                    // sd a0, 0(a1)
            (C_LWSP, 0x0001_2503),         // lw a0, 0(sp)
            (C_LDSP, 0x0001_3503),         // ld a0, 0(sp)
            (C_SWSP, 0x00a1_2023),         // sw a0, 0(sp)
            (C_SDSP, 0x00a1_3023),         // sd a0, 0(sp)
            (C_LW_S1_124_A5, 0x07c7_a483), // lw s1, 124(a5)
        ];
        for (c, expanded) in pairs {
            let t = transform32(expanded) & !2;
            assert_eq!(transformed_len(t), 2, "{c:#x}");
            assert_eq!(decode(t, true), decode(c, false), "{c:#x}");
            assert_eq!(decode(expanded, false), decode(c, false), "{c:#x}");
        }
    }

    #[test]
    fn raw_length_follows_the_low_bits() {
        assert_eq!(len(LW), 4);
        assert_eq!(len(C_LW), 2);
        assert_eq!(len(C_SDSP), 2);
        assert_eq!(len(0), 2);
    }

    #[test]
    fn rejects_what_is_not_an_integer_load_or_store() {
        for insn in [
            0,           // defined illegal instruction
            0xffff_ffff, // reserved long encoding
            0x0005_f503, // LOAD funct3 7: reserved
            0x00a5_c023, // STORE funct3 4: reserved
            C_FLD,       // c.fld
            0xa188,      // quadrant 0 funct3 5: c.fsd
            FLW,         // flw
            AMOADD_W,    // AMO
            0x0000_4002, // c.lwsp x0: reserved
            0x0000_6002, // c.ldsp x0: reserved
            0x0000_0001, // c.nop
            0x0000_0073, // ecall
            0x0000_0013, // nop (addi)
            0x8000,      // quadrant 0 funct3 4: Zcb, not decoded
        ] {
            assert_eq!(decode(insn, false), None, "{insn:#x}");
        }
        assert_eq!(decode(transform32(FLW), true), None);
        assert_eq!(decode(AMOADD_W, true), None);
    }

    #[test]
    fn transformed_bit_1_only_gives_the_length() {
        // A transformed value is decoded as a 32-bit instruction whatever bit 1 says.
        assert_eq!(decode(LW & !2, true), decode(LW, false));
        assert_eq!(decode(LW & !3 | 1, true), decode(LW, false));
    }

    #[test]
    fn access_size_is_the_width() {
        assert_eq!(decode(LH, false).map(Access::size), Some(2));
        assert_eq!(decode(C_SD, false).map(Access::size), Some(8));
    }

    #[test]
    fn extend_signed_and_unsigned() {
        assert_eq!(extend(0x80, 1, true), 0xffff_ffff_ffff_ff80);
        assert_eq!(extend(0x80, 1, false), 0x80);
        assert_eq!(extend(0x7f, 1, true), 0x7f);
        assert_eq!(extend(0x1234_8000, 2, true), 0xffff_ffff_ffff_8000);
        assert_eq!(extend(0x1234_8000, 2, false), 0x8000);
        assert_eq!(
            extend(0xdead_beef_8000_0000, 4, true),
            0xffff_ffff_8000_0000
        );
        assert_eq!(extend(0xdead_beef_8000_0000, 4, false), 0x8000_0000);
        assert_eq!(extend(u64::MAX, 8, true), u64::MAX);
        assert_eq!(extend(u64::MAX, 8, false), u64::MAX);
        assert_eq!(extend(u64::MAX, 0, true), 0);
        assert_eq!(extend(u64::MAX, 255, false), u64::MAX);
    }

    #[test]
    fn truncate_keeps_the_low_bytes() {
        assert_eq!(truncate(0x1122_3344_5566_7788, 1), 0x88);
        assert_eq!(truncate(0x1122_3344_5566_7788, 2), 0x7788);
        assert_eq!(truncate(0x1122_3344_5566_7788, 4), 0x5566_7788);
        assert_eq!(truncate(0x1122_3344_5566_7788, 8), 0x1122_3344_5566_7788);
    }
}
