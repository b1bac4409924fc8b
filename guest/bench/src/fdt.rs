//! Just enough of a flattened device tree reader to find the interrupt controllers
//! (S-level APLIC and IMSIC, or the PLIC), the 16550 UART and its source, the number
//! of harts, whether they have Sstc, and `/chosen/bootargs`.
//! Both QEMU virt and hyp describe `/soc` with `#address-cells = #size-cells = 2`, so
//! a `reg` is read as pairs of 64-bit cells.

const MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

/// What the benchmark needs from the device tree.
#[derive(Default, Clone, Copy)]
pub struct Platform {
    /// Harts (`/cpus/cpu@N` nodes).
    pub harts: usize,
    /// Base of the S-level APLIC domain (`riscv,aplic` without `riscv,children`).
    pub aplic: Option<usize>,
    /// Base of the PLIC (`riscv,plic0` / `sifive,plic-1.0.0`).
    pub plic: Option<usize>,
    /// Base of the S-level IMSIC (`riscv,imsics` wired to cause 9).
    pub imsic: Option<usize>,
    /// Bytes between two harts' S-level IMSIC files: `0x1000 << riscv,guest-index-bits`.
    pub imsic_stride: usize,
    /// The PLIC's `interrupts-extended` (`<phandle cause>` pairs, one per context).
    pub plic_contexts: &'static [u8],
    /// Base of the 16550 UART (`ns16550a`) and its source (first `interrupts` cell).
    pub uart: Option<(usize, usize)>,
    /// `/chosen/bootargs` (a static slice of the DTB).
    pub bootargs: &'static str,
    /// A hart lists `sstc` in `riscv,isa-extensions` (S-mode may write `stimecmp`).
    pub sstc: bool,
}

/// Properties of the node being read.
#[derive(Default)]
struct Node {
    compat: &'static [u8],
    reg: Option<usize>,
    disabled: bool,
    children: bool,
    gib: usize,
    s_external: bool,
    is_cpu: bool,
    intx: &'static [u8],
    irq: Option<usize>,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn has_compat(list: &[u8], name: &str) -> bool {
    list.split(|&c| c == 0).any(|s| s == name.as_bytes())
}

fn cstr(b: &'static [u8]) -> &'static [u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

/// Read the device tree at `addr`; `None` if there is none.
pub fn parse(addr: usize) -> Option<Platform> {
    if addr == 0 || !addr.is_multiple_of(4) {
        return None;
    }
    // SAFETY: the firmware (or hyp) passed the DTB's address in a1; its header says
    // how long it is. It lives in RAM we never write, for the whole run.
    let head = unsafe { core::slice::from_raw_parts(addr as *const u8, 40) };
    if be32(head, 0)? != MAGIC {
        return None;
    }
    let total = be32(head, 4)? as usize;
    if !(40..=1 << 20).contains(&total) {
        return None;
    }
    // SAFETY: as above, `total` bytes from the header's own size field (at most 1 MiB).
    let b: &'static [u8] = unsafe { core::slice::from_raw_parts(addr as *const u8, total) };
    let off_struct = be32(b, 8)? as usize;
    let off_strings = be32(b, 12)? as usize;
    let mut p = Platform {
        imsic_stride: 0x1000,
        ..Platform::default()
    };
    let mut at = off_struct;
    let mut depth = 0usize;
    let mut chosen_depth = None;
    // Properties precede subnodes: a node is complete when its first child or its
    // end is reached, whichever comes first (`open` until then).
    let mut node = Node::default();
    let mut open = false;
    loop {
        let tok = be32(b, at)?;
        at += 4;
        match tok {
            BEGIN_NODE => {
                let name = cstr(b.get(at..)?);
                at = (at + name.len() + 1 + 3) & !3;
                if open {
                    finish(&mut p, &node);
                }
                open = true;
                depth += 1;
                if depth == 2 && name == b"chosen" {
                    chosen_depth = Some(depth);
                }
                node = Node {
                    is_cpu: depth == 3 && name.starts_with(b"cpu@"),
                    ..Node::default()
                };
            }
            END_NODE => {
                if open {
                    finish(&mut p, &node);
                }
                open = false;
                if chosen_depth == Some(depth) {
                    chosen_depth = None;
                }
                depth = depth.checked_sub(1)?;
            }
            PROP => {
                let len = be32(b, at)? as usize;
                let name = cstr(b.get(off_strings + be32(b, at + 4)? as usize..)?);
                let val: &'static [u8] = b.get(at + 8..at + 8 + len)?;
                at = (at + 8 + len + 3) & !3;
                match name {
                    b"compatible" => node.compat = val,
                    b"reg" if val.len() >= 8 => {
                        let hi = be32(val, 0)? as usize;
                        let lo = be32(val, 4)? as usize;
                        node.reg = Some(if val.len() >= 16 { hi << 32 | lo } else { hi });
                    }
                    b"status" => node.disabled = !val.starts_with(b"okay"),
                    b"riscv,children" => node.children = true,
                    b"riscv,guest-index-bits" => node.gib = be32(val, 0)? as usize,
                    b"interrupts-extended" => {
                        node.s_external = be32(val, 4) == Some(9);
                        node.intx = val;
                    }
                    b"interrupts" => node.irq = be32(val, 0).map(|v| v as usize),
                    b"riscv,isa-extensions" if has_compat(val, "sstc") => p.sstc = true,
                    b"bootargs" if chosen_depth == Some(depth) => {
                        p.bootargs = core::str::from_utf8(cstr(val)).unwrap_or("");
                    }
                    _ => {}
                }
            }
            NOP => {}
            END => return Some(p),
            _ => return None,
        }
    }
}

/// Record a finished node.
fn finish(p: &mut Platform, n: &Node) {
    if n.is_cpu && !n.disabled {
        p.harts += 1;
    }
    let Some(reg) = n.reg else { return };
    if n.disabled {
        return;
    }
    if has_compat(n.compat, "riscv,aplic") && !n.children {
        p.aplic = Some(reg);
    } else if has_compat(n.compat, "riscv,imsics") && n.s_external {
        p.imsic = Some(reg);
        p.imsic_stride = 0x1000 << n.gib;
    } else if has_compat(n.compat, "riscv,plic0") || has_compat(n.compat, "sifive,plic-1.0.0") {
        p.plic = Some(reg);
        p.plic_contexts = n.intx;
    } else if has_compat(n.compat, "ns16550a") {
        if let Some(irq) = n.irq {
            p.uart = Some((reg, irq));
        }
    }
}

/// The PLIC context of the `k`-th supervisor external interrupt (cause 9) in its
/// `interrupts-extended`: QEMU virt lists an M (11) and an S (9) context per hart, hyp's
/// vPLIC one S context per vCPU, both in hart order.
pub fn plic_s_context(p: &Platform, k: usize) -> Option<usize> {
    let cells = p.plic_contexts;
    (0..cells.len() / 8)
        .filter(|&i| be32(cells, i * 8 + 4) == Some(9))
        .nth(k)
}
