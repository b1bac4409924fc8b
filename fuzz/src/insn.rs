//! Fuzz target `insn`: the MMIO-trap instruction decoder ([`virq_riscv::insn`]).
//!
//! Each input is a sequence of (instruction word, register value) pairs. For every
//! word the decoder must not panic, must agree with a reference table written from the
//! `riscv-opcodes` MATCH/MASK values, must give registers below 32 and widths in {1,
//! 2, 4, 8}, and must decode the transformed `htinst` form of an instruction (its
//! 32-bit expansion with immediate and `rs1` zeroed, bit 1 clear if it was
//! compressed) exactly as the original. `extend`/`truncate` are checked against
//! shift arithmetic.
use virq_riscv::insn::{self, Access};

use crate::Input;

/// riscv-opcodes `MATCH_*`/`MASK_*` of the integer loads and stores, with what each
/// means: (mask, match, is_load, size, signed, compressed).
const TABLE: [(u32, u32, bool, u8, bool, bool); 19] = [
    (0x707f, 0x0003, true, 1, true, false),   // lb
    (0x707f, 0x1003, true, 2, true, false),   // lh
    (0x707f, 0x2003, true, 4, true, false),   // lw
    (0x707f, 0x3003, true, 8, false, false),  // ld
    (0x707f, 0x4003, true, 1, false, false),  // lbu
    (0x707f, 0x5003, true, 2, false, false),  // lhu
    (0x707f, 0x6003, true, 4, false, false),  // lwu
    (0x707f, 0x0023, false, 1, false, false), // sb
    (0x707f, 0x1023, false, 2, false, false), // sh
    (0x707f, 0x2023, false, 4, false, false), // sw
    (0x707f, 0x3023, false, 8, false, false), // sd
    (0xe003, 0x4000, true, 4, true, true),    // c.lw
    (0xe003, 0x6000, true, 8, false, true),   // c.ld
    (0xe003, 0xc000, false, 4, false, true),  // c.sw
    (0xe003, 0xe000, false, 8, false, true),  // c.sd
    (0xe003, 0x4002, true, 4, true, true),    // c.lwsp (rd != 0)
    (0xe003, 0x6002, true, 8, false, true),   // c.ldsp (rd != 0)
    (0xe003, 0xc002, false, 4, false, true),  // c.swsp
    (0xe003, 0xe002, false, 8, false, true),  // c.sdsp
];

/// The table's view of a raw instruction (compressed when the low bits are not 0b11):
/// (is_load, size, signed, register number in the instruction's own encoding).
fn reference(raw: u32) -> Option<(bool, u8, bool, u8)> {
    let compressed = raw & 3 != 3;
    let word = if compressed { raw & 0xffff } else { raw };
    let &(_, _, is_load, size, signed, _) = TABLE
        .iter()
        .find(|(mask, m, .., c)| *c == compressed && word & mask == *m)?;
    let reg = match (compressed, is_load, word & 3) {
        (false, true, _) => (word >> 7) & 31,   // rd
        (false, false, _) => (word >> 20) & 31, // rs2
        (true, _, 0) => 8 + ((word >> 2) & 7),  // rd' / rs2'
        (true, true, _) => (word >> 7) & 31,    // c.l*sp rd
        (true, false, _) => (word >> 2) & 31,   // c.s*sp rs2
    };
    if compressed && is_load && word & 3 == 2 && reg == 0 {
        return None; // c.lwsp/c.ldsp with rd = x0 are reserved
    }
    Some((is_load, size, signed, reg as u8))
}

fn as_tuple(a: Access) -> (bool, u8, bool, u8) {
    match a {
        Access::Load { rd, size, signed } => (true, size, signed, rd),
        Access::Store { rs2, size } => (false, size, false, rs2),
    }
}

/// The 32-bit equivalent of a compressed load/store (RVC expansion table), with
/// immediate zeroed: what `htinst` holds before bit 1 is cleared.
fn expand(c: u32) -> u32 {
    let funct3 = (c >> 13) & 7;
    let (opcode, f3) = match funct3 {
        2 => (0x03, 2),
        3 => (0x03, 3),
        6 => (0x23, 2),
        _ => (0x23, 3),
    };
    let reg = if c & 3 == 0 {
        8 + ((c >> 2) & 7)
    } else if opcode == 0x03 {
        (c >> 7) & 31
    } else {
        (c >> 2) & 31
    };
    if opcode == 0x03 {
        (reg << 7) | (f3 << 12) | opcode
    } else {
        (reg << 20) | (f3 << 12) | opcode
    }
}

/// Fields a transformed instruction may hold anything in: the immediate and `rs1`.
fn free_fields(raw: u32) -> u32 {
    match raw & 0x7f {
        0x03 => 0xffff_8000,                       // I-type: imm[11:0], rs1
        _ => 0xfe00_0000 | (31 << 15) | (31 << 7), // S-type: imm, rs1
    }
}

fn check_one(raw: u32, other: u32, v: u64) {
    let d = insn::decode(raw, false);
    let want = reference(raw);
    assert_eq!(
        d.map(as_tuple),
        want,
        "decode({raw:#010x}) disagrees with the table"
    );
    assert_eq!(insn::len(raw), if raw & 3 == 3 { 4 } else { 2 });
    let t = insn::decode(raw, true);
    assert!(matches!(insn::transformed_len(raw), 2 | 4));
    for a in [d, t].into_iter().flatten() {
        let (is_load, size, signed, reg) = as_tuple(a);
        assert!(reg < 32, "register {reg}");
        assert!(matches!(size, 1 | 2 | 4 | 8), "size {size}");
        assert!(!(size == 8 && signed), "64-bit load marked signed");
        assert!(is_load || !signed);
        assert_eq!(a.size(), size);
    }
    // A transformed value is read as a 32-bit instruction whatever bits 0-1 say.
    assert_eq!(t, insn::decode(raw | 3, false));
    if raw & 3 == 3 {
        if d.is_some() {
            // Transformed: immediate and rs1 replaced, bit 1 kept (not compressed).
            let transformed = (raw & !free_fields(raw)) | (other & free_fields(raw));
            assert_eq!(
                insn::decode(transformed, true),
                d,
                "{raw:#x} -> {transformed:#x}"
            );
            assert_eq!(insn::transformed_len(transformed), 4);
        }
    } else {
        // The upper half of a compressed instruction is not part of it.
        assert_eq!(insn::decode((raw & 0xffff) | (other << 16), false), d);
        if d.is_some() {
            let e = expand(raw);
            assert_eq!(insn::decode(e, false), d, "expansion {e:#x} of {raw:#x}");
            let htinst = (e | 1) & !2;
            assert_eq!(insn::transformed_len(htinst), 2);
            assert_eq!(
                insn::decode(htinst, true),
                d,
                "htinst {htinst:#x} of {raw:#x}"
            );
        }
    }
    for size in [1u8, 2, 4, 8] {
        let bits = 64 - 8 * u32::from(size);
        let t = insn::truncate(v, size);
        assert_eq!(t, v << bits >> bits);
        assert_eq!(insn::extend(v, size, false), t);
        let s = insn::extend(v, size, true);
        assert_eq!(s, ((v << bits) as i64 >> bits) as u64);
        assert_eq!(insn::truncate(s, size), t);
    }
}

/// The `insn` fuzz target.
pub fn insn(data: &[u8]) {
    let mut inp = Input(data);
    while !inp.done() {
        let raw = inp.u32();
        let other = inp.u32();
        let v = u64::from(inp.u32()) | u64::from(inp.u32()) << 32;
        check_one(raw, other, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_entry_is_decoded() {
        for (mask, m, ..) in TABLE {
            // x10 in every register field; for c.*sp x10 is not 0.
            let raw = m | (!mask & 0x0050_0500 & if mask == 0xe003 { 0xffff } else { !0 });
            check_one(raw, 0x1234_5678, 0x8000_0000_0000_0080);
            assert!(insn::decode(raw, false).is_some(), "{raw:#x}");
        }
    }
}
