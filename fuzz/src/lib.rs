//! Fuzz targets for the guest-visible RISC-V and Arm interrupt controllers and the pure
//! guest-input decoders behind traps.
//!
//! Each controller target (`vplic`, `vaplic`, `vimsic`) turns raw bytes into a
//! sequence of guest operations (MMIO reads and writes of any width and offset, wire
//! changes, CSR accesses, migrations) and runs them against one controller, asserting
//! after every step that nothing panicked and the controller's invariants hold. The
//! decoder targets check [`virq_riscv::insn`] ([`insn()`]) and [`virq_riscv::sbi`]
//! ([`sbi()`]) against reference models. The `vits` target ([`vits()`]) drives the
//! guest-visible ITS with register writes, command queues and MSIs and checks the
//! host actions it reports against its own mappings. The functions are plain library code, so unit
//! tests run them on fixed inputs and the `[[bin]]`s in `fuzz_targets/` either hand
//! them to libFuzzer (feature `libfuzzer`) or replay files (the default stub).

use std::cell::RefCell;
use std::io::Read;

use virq_core::hgei::HgeiAllocator;
use virq_riscv::aplic::VAplic;
use virq_riscv::hext::fake::FakeCsrs;
use virq_riscv::imsic::{CsrOp, ImsicFileState};
use virq_riscv::msi::{Backing, GuestFileHw, Msi, MsiSink, VcpuImsic};
use virq_riscv::plic::{Sense, VPlic};
use virq_riscv::{EoiSink, MmioDevice, VcpuIrqSink};

mod insn;
mod sbi;
mod vgicv3;
mod vits;

pub use insn::insn;
pub use sbi::sbi;
pub use vgicv3::{vgicv3, Focus};
pub use vits::vits;

/// Target `vgicd`: the vGICv3 distributor ([`vgicv3()`]).
pub fn vgicd(data: &[u8]) {
    vgicv3(data, Focus::Distributor);
}

/// Target `vgicr`: the vGICv3 redistributors ([`vgicv3()`]).
pub fn vgicr(data: &[u8]) {
    vgicv3(data, Focus::Redistributors);
}

/// Reads bytes as a stream of little-endian integers; zeros once exhausted.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn done(&self) -> bool {
        self.0.is_empty()
    }
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn size(&mut self) -> u8 {
        // Mostly the right width, sometimes anything.
        match self.u8() {
            0..=199 => 4,
            s => [0, 1, 2, 3, 8, 16, 255][usize::from(s % 7)],
        }
    }
    /// An offset: mostly a real register (`base + 4*k`), sometimes misaligned or far.
    fn offset(&mut self, bases: &[u64]) -> u64 {
        let sel = self.u8();
        let raw = u64::from(self.u32());
        match sel % 8 {
            0 => raw | (u64::from(self.u32()) << 32),
            1 => raw,
            _ => {
                bases[usize::from(sel) % bases.len()]
                    + (raw & 0xfff) * 4
                    + u64::from(sel >> 7) * (raw >> 13 & 3)
            }
        }
    }
}

/// Records VSEIP levels per vCPU.
#[derive(Default)]
struct Levels(RefCell<Vec<bool>>);

impl Levels {
    fn get(&self, v: u32) -> bool {
        self.0.borrow().get(v as usize).copied().unwrap_or(false)
    }
}

impl VcpuIrqSink for Levels {
    fn set_vseip(&self, vcpu: u32, level: bool) {
        let mut l = self.0.borrow_mut();
        if l.len() <= vcpu as usize {
            l.resize(vcpu as usize + 1, false);
        }
        assert_ne!(
            l[vcpu as usize], level,
            "sink told of a level that did not change"
        );
        l[vcpu as usize] = level;
    }
}

struct Eois(u32);

impl EoiSink for Eois {
    fn guest_completed(&self, source: u32) {
        assert!(
            (1..=self.0).contains(&source),
            "EOI of a source that does not exist"
        );
    }
}

/// vPLIC: 1..=1023 sources, 1..=8 contexts, random MMIO, line changes and edges.
pub fn vplic(data: &[u8]) {
    let mut inp = Input(data);
    let sources = u32::from(inp.u16()) % 1023 + 1;
    let contexts = usize::from(inp.u8() % 8) + 1;
    let map: Vec<Option<u32>> = (0..contexts)
        .map(|c| (c % 2 == 1).then_some(c as u32 / 2))
        .collect();
    let levels = Levels::default();
    let eoi = Eois(sources);
    let mut p: VPlic<&Levels, &Eois, 8> =
        VPlic::new(sources, &map, &levels, &eoi).expect("valid config");
    let bases = [
        0, 0x1000, 0x2000, 0x2080, 0x20_0000, 0x20_0004, 0x20_1000, 0x20_1004,
    ];
    let mut last_errors = 0;
    while !inp.done() {
        match inp.u8() % 8 {
            0 | 1 => {
                let (off, size) = (inp.offset(&bases), inp.size());
                let claim_reg = off >= 0x20_0000 && off % 0x1000 == 4 && size == 4;
                let v = p.read(off, size);
                assert!(v <= u64::from(u32::MAX));
                if claim_reg {
                    assert!(
                        v <= u64::from(sources),
                        "claimed a source that does not exist"
                    );
                }
            }
            2..=4 => {
                let (off, size, v) = (inp.offset(&bases), inp.size(), inp.u32());
                p.write(off, size, v.into());
            }
            5 => {
                let s = inp.u16().into();
                p.set_input(s, inp.u8() & 1 == 1);
            }
            6 => {
                let s = inp.u16().into();
                p.pulse(s);
            }
            _ => {
                let s = inp.u16().into();
                let b = inp.u8();
                p.set_sense(
                    s,
                    if b & 1 == 1 {
                        Sense::Edge
                    } else {
                        Sense::Level
                    },
                );
                p.set_passthrough(s, b & 2 == 2);
            }
        }
        for (c, v) in map.iter().enumerate() {
            let top = p.top(c);
            assert!(top <= sources);
            assert_eq!(p.output(c), top != 0, "context output disagrees with claim");
            if let Some(v) = v {
                assert_eq!(
                    levels.get(*v),
                    p.output(c),
                    "vCPU level disagrees with its context"
                );
            }
        }
        let e = p.errors().total();
        assert!(e >= last_errors);
        last_errors = e;
    }
}

/// Records MSIs and accepts those to the harts it has.
struct MsiRec {
    harts: u32,
    count: u64,
}

impl MsiSink for MsiRec {
    fn send_msi(&mut self, msi: Msi) -> bool {
        assert!(
            msi.hart < self.harts,
            "MSI to a hart the guest was not given"
        );
        assert_eq!(msi.guest, 0, "MSI to a guest file");
        assert!(msi.eiid <= 0x7ff);
        self.count += 1;
        true
    }
}

/// vAPLIC: 1..=1023 sources, 1..=8 harts, both delivery modes.
pub fn vaplic(data: &[u8]) {
    let mut inp = Input(data);
    let sources = u32::from(inp.u16()) % 1023 + 1;
    let harts = u32::from(inp.u8() % 8) + 1;
    let levels = Levels::default();
    let mut a: VAplic<MsiRec, &Levels, 8> =
        VAplic::new(sources, harts, MsiRec { harts, count: 0 }, &levels).expect("valid config");
    let bases = [
        0, 4, 0x1c00, 0x1cdc, 0x1d00, 0x1e00, 0x1f00, 0x2000, 0x3000, 0x3004, 0x4000, 0x4018,
    ];
    while !inp.done() {
        match inp.u8() % 6 {
            0 | 1 => {
                let (off, size) = (inp.offset(&bases), inp.size());
                a.read(off, size);
            }
            2..=4 => {
                let (off, size, v) = (inp.offset(&bases), inp.size(), inp.u32());
                a.write(off, size, v.into());
            }
            _ => {
                let s = inp.u16().into();
                a.set_input(s, inp.u8() & 1 == 1);
            }
        }
        check_aplic_sources(&mut a, sources);
        for h in 0..harts {
            assert_eq!(levels.get(h), a.output(h));
            if a.msi_mode() {
                assert!(!a.output(h));
            }
        }
    }
}

/// The per-source invariants of the vAPLIC, 64 sources at a time: in MSI mode with
/// IE set nothing is pending and enabled (it would have been forwarded), and only
/// active sources 1..=`sources` are ever pending or enabled. Walking the pending and
/// enable words and visiting only set bits keeps this O(words + set bits) per step
/// instead of O(sources); each set bit is cross-checked against `is_pending` /
/// `is_enabled`, and the words beyond the last source must be empty.
fn check_aplic_sources(a: &mut VAplic<MsiRec, &Levels, 8>, sources: u32) {
    let forwarding = a.msi_mode() && a.read(0, 4) & (1 << 8) != 0;
    for k in 0..=(sources as usize / 64) + 1 {
        let pending = a.pending_word(k);
        let enabled = a.enabled_word(k);
        if forwarding {
            assert_eq!(
                pending & enabled,
                0,
                "sources {:#x} + 64*{k} pending and enabled but not forwarded",
                pending & enabled
            );
        }
        let mut x = pending | enabled;
        while x != 0 {
            let b = x.trailing_zeros();
            x &= x - 1;
            let i = k as u32 * 64 + b;
            assert!(
                (1..=sources).contains(&i),
                "source {i} does not exist but is pending or enabled"
            );
            assert_eq!(
                a.is_pending(i),
                pending >> b & 1 == 1,
                "pending view of {i}"
            );
            assert_eq!(
                a.is_enabled(i),
                enabled >> b & 1 == 1,
                "enabled view of {i}"
            );
            assert_ne!(
                a.source_mode(i),
                virq_riscv::aplic::SourceMode::Inactive,
                "inactive source {i} pending or enabled"
            );
        }
    }
}

/// Hardware guest files that keep their state in memory.
#[derive(Default)]
struct MemFiles(RefCell<Vec<((usize, u32), ImsicFileState)>>);

impl GuestFileHw for MemFiles {
    fn send_msi(&self, hart: usize, line: u32, eiid: u32) {
        let mut s = self.save(hart, line);
        if (1..=255).contains(&eiid) {
            s.eip[eiid as usize / 64] |= 1 << (eiid % 64);
        }
        self.restore(hart, line, &s);
    }
    fn save(&self, hart: usize, line: u32) -> ImsicFileState {
        self.0
            .borrow()
            .iter()
            .find(|e| e.0 == (hart, line))
            .map(|e| e.1)
            .unwrap_or_default()
    }
    fn restore(&self, hart: usize, line: u32, state: &ImsicFileState) {
        let mut v = self.0.borrow_mut();
        v.retain(|e| e.0 != (hart, line));
        v.push(((hart, line), *state));
    }
}

/// vIMSIC: two vCPUs' files (255 identities) over two harts with one guest line each:
/// MSI page accesses, `vsireg`/`vstopei` emulation, loads onto harts and evictions.
pub fn vimsic(data: &[u8]) {
    let mut inp = Input(data);
    let levels = Levels::default();
    let hw = MemFiles::default();
    let alloc = HgeiAllocator::<2>::new();
    alloc.online(0, 0b10).expect("hart 0");
    alloc.online(1, 0b10).expect("hart 1");
    let csrs = FakeCsrs::new(0b10);
    let mut files: Vec<_> = (0..2)
        .map(|v| VcpuImsic::new(v, v, 255, &hw, &levels).expect("valid config"))
        .collect();
    while !inp.done() {
        let op = inp.u8();
        let f = &mut files[usize::from(op >> 7)];
        match op % 8 {
            0 => {
                let (off, size, v) = (inp.offset(&[0, 4]), inp.size(), inp.u32());
                f.write(off, size, v.into());
            }
            1 => {
                let (off, size) = (inp.offset(&[0, 4]), inp.size());
                assert_eq!(f.read(off, size), 0);
            }
            2 | 3 => {
                let sel = u32::from(inp.u8());
                let v = u64::from(inp.u32()) | u64::from(inp.u32()) << 32;
                let op = [CsrOp::Read, CsrOp::Write(v), CsrOp::Set(v), CsrOp::Clear(v)]
                    [usize::from(inp.u8() % 4)];
                let _ = f.ireg(sel, op);
            }
            4 => {
                let op = if inp.u8() & 1 == 1 {
                    CsrOp::Write(0)
                } else {
                    CsrOp::Read
                };
                if let Ok(v) = f.stopei(op) {
                    assert!(v == 0 || (v >> 16 == v & 0x7ff && v >> 16 <= 255));
                }
            }
            5 => {
                let hart = usize::from(inp.u8() % 3); // hart 2 does not exist
                let b = f.load(hart, &alloc, &csrs);
                assert!(hart < 2 || b == Backing::Software);
            }
            6 => f.evict(&alloc),
            _ => {
                let msi = Msi {
                    hart: u32::from(inp.u8() % 3),
                    guest: u32::from(inp.u8() % 2),
                    eiid: u32::from(inp.u16()),
                };
                files.as_mut_slice().send_msi(msi);
            }
        }
        for (v, f) in files.iter().enumerate() {
            let s = f.save_state();
            assert!(s.eidelivery <= 1 && s.eithreshold <= 2047);
            assert_eq!(s.eip[0] & 1, 0, "identity 0 can never pend");
            assert!(
                s.eip[4..].iter().chain(&s.eie[4..]).all(|&w| w == 0),
                "identity above 255"
            );
            if let Backing::Hardware { hart, line } = f.backing() {
                assert_eq!(
                    alloc.owner(hart, line),
                    Some(v as u32),
                    "file on a line it does not own"
                );
            } else {
                assert_eq!(levels.get(v as u32), s.eidelivery == 1 && top(&s) != 0);
            }
        }
    }
}

fn top(s: &ImsicFileState) -> u32 {
    let limit = if s.eithreshold == 0 {
        256
    } else {
        s.eithreshold
    };
    (1..256)
        .find(|&i| (s.eip[i as usize / 64] & s.eie[i as usize / 64]) >> (i % 64) & 1 == 1)
        .filter(|&i| i < limit)
        .unwrap_or(0)
}

/// The stub `main` of a target built without libFuzzer: runs `target` on every file
/// named on the command line (directories are walked one level), or on stdin.
pub fn replay_main(target: fn(&[u8])) -> std::process::ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if args.is_empty() {
        let mut buf = Vec::new();
        if std::io::stdin().read_to_end(&mut buf).is_err() {
            return std::process::ExitCode::FAILURE;
        }
        target(&buf);
        return std::process::ExitCode::SUCCESS;
    }
    let mut n = 0;
    for a in args {
        let path = std::path::Path::new(&a);
        let files: Vec<_> = match std::fs::read_dir(path) {
            Ok(d) => d.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => vec![path.to_path_buf()],
        };
        for f in files {
            match std::fs::read(&f) {
                Ok(bytes) => {
                    target(&bytes);
                    n += 1;
                }
                Err(e) => {
                    eprintln!("{}: {e}", f.display());
                    return std::process::ExitCode::FAILURE;
                }
            }
        }
    }
    eprintln!("replayed {n} inputs");
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    /// Deterministic pseudo-random inputs (xorshift) so the targets run in `cargo test`.
    fn inputs() -> impl Iterator<Item = Vec<u8>> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..200).map(move |i| {
            (0..(i * 37) % 4000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        })
    }

    #[test]
    fn vplic_survives_random_inputs() {
        inputs().for_each(|d| super::vplic(&d));
    }

    #[test]
    fn vaplic_survives_random_inputs() {
        inputs().for_each(|d| super::vaplic(&d));
    }

    #[test]
    fn vimsic_survives_random_inputs() {
        inputs().for_each(|d| super::vimsic(&d));
    }

    #[test]
    fn insn_survives_random_inputs() {
        inputs().for_each(|d| super::insn(&d));
    }

    #[test]
    fn sbi_survives_random_inputs() {
        inputs().for_each(|d| super::sbi(&d));
    }

    #[test]
    fn vgic_survives_random_inputs() {
        inputs().for_each(|d| {
            super::vgicd(&d);
            super::vgicr(&d);
        });
    }

    #[test]
    fn vits_survives_random_inputs() {
        inputs().for_each(|d| super::vits(&d));
    }

    #[test]
    fn empty_input_is_fine() {
        super::vits(&[]);
        super::vgicd(&[]);
        super::vgicr(&[]);
        super::vplic(&[]);
        super::vaplic(&[]);
        super::vimsic(&[]);
        super::insn(&[]);
        super::sbi(&[]);
    }
}
