//! CSR access by number (the assembler is not told about the H extension, so every
//! CSR is named by its number as in the privileged spec's CSR tables).

macro_rules! csr_rw {
    ($(#[$m:meta])* $name:ident, $num:literal) => {
        $(#[$m])*
        #[allow(dead_code)]
        pub mod $name {
            /// Read the CSR.
            #[inline(always)]
            pub fn read() -> usize {
                let v: usize;
                // SAFETY: reading this CSR in HS-mode has no side effects.
                unsafe { core::arch::asm!(concat!("csrr {0}, ", $num), out(reg) v, options(nomem, nostack)) };
                v
            }
            /// Write the CSR.
            #[inline(always)]
            pub fn write(v: usize) {
                // SAFETY: hyp owns every HS/VS CSR it writes; callers keep the
                // world-switch invariants documented on each use.
                unsafe { core::arch::asm!(concat!("csrw ", $num, ", {0}"), in(reg) v, options(nostack)) };
            }
            /// Set bits.
            #[inline(always)]
            pub fn set(v: usize) {
                // SAFETY: as for `write`.
                unsafe { core::arch::asm!(concat!("csrs ", $num, ", {0}"), in(reg) v, options(nostack)) };
            }
            /// Clear bits.
            #[inline(always)]
            pub fn clear(v: usize) {
                // SAFETY: as for `write`.
                unsafe { core::arch::asm!(concat!("csrc ", $num, ", {0}"), in(reg) v, options(nostack)) };
            }
            /// Swap: write `v`, return the old value.
            #[inline(always)]
            pub fn swap(v: usize) -> usize {
                let old: usize;
                // SAFETY: as for `write`.
                unsafe { core::arch::asm!(concat!("csrrw {0}, ", $num, ", {1}"), out(reg) old, in(reg) v, options(nostack)) };
                old
            }
        }
    };
}

csr_rw!(sstatus, "0x100");
csr_rw!(sie, "0x104");
csr_rw!(stvec, "0x105");
csr_rw!(scounteren, "0x106");
csr_rw!(sscratch, "0x140");
csr_rw!(sepc, "0x141");
csr_rw!(scause, "0x142");
csr_rw!(stval, "0x143");
csr_rw!(sip, "0x144");
csr_rw!(
    /// Sstc supervisor timer compare.
    stimecmp,
    "0x14d"
);
csr_rw!(
    /// AIA: supervisor indirect register select (hyp's own S-level IMSIC file).
    siselect,
    "0x150"
);
csr_rw!(
    /// AIA: supervisor indirect register alias.
    sireg,
    "0x151"
);
csr_rw!(
    /// AIA: supervisor top external interrupt (IMSIC); a write claims.
    stopei,
    "0x15c"
);
csr_rw!(satp, "0x180");
csr_rw!(vsstatus, "0x200");
csr_rw!(vsie, "0x204");
csr_rw!(vstvec, "0x205");
csr_rw!(vsscratch, "0x240");
csr_rw!(vsepc, "0x241");
csr_rw!(vscause, "0x242");
csr_rw!(vstval, "0x243");
csr_rw!(vsip, "0x244");
csr_rw!(vstimecmp, "0x24d");
csr_rw!(vsatp, "0x280");
csr_rw!(
    /// AIA: the guest's `siselect` (also selects the guest file register hyp reaches
    /// through `vsireg` with `hstatus.VGEIN`).
    vsiselect,
    "0x250"
);
csr_rw!(
    /// AIA: indirect register alias of the guest file `hstatus.VGEIN` selects.
    vsireg,
    "0x251"
);
csr_rw!(hstatus, "0x600");
csr_rw!(hedeleg, "0x602");
csr_rw!(hideleg, "0x603");
csr_rw!(hie, "0x604");
csr_rw!(htimedelta, "0x605");
csr_rw!(hcounteren, "0x606");
csr_rw!(hgeie, "0x607");
csr_rw!(
    /// AIA: hypervisor virtual-interrupt control (`IID`, `IPRIO`: what `vstopi`
    /// reports for a VS external interrupt signalled through `hvip.VSEIP`).
    hvictl,
    "0x609"
);
csr_rw!(henvcfg, "0x60a");
csr_rw!(htval, "0x643");
csr_rw!(hip, "0x644");
csr_rw!(hvip, "0x645");
csr_rw!(htinst, "0x64a");
csr_rw!(hgatp, "0x680");
csr_rw!(hgeip, "0xe12");

/// `time` (read-only, user counter 0xc01).
pub fn read_time() -> u64 {
    let v: u64;
    // SAFETY: reading the time counter has no side effects.
    unsafe { core::arch::asm!("csrr {0}, 0xc01", out(reg) v, options(nomem, nostack)) };
    v
}

/// Bits of `sstatus`.
pub mod sstatus_bits {
    /// Supervisor interrupt enable.
    pub const SIE: usize = 1 << 1;
    /// Previous SIE.
    pub const SPIE: usize = 1 << 5;
    /// Previous privilege (1 = S).
    pub const SPP: usize = 1 << 8;
    /// Floating-point state, 2 bits.
    pub const FS_MASK: usize = 3 << 13;
    /// FS = Initial.
    pub const FS_INITIAL: usize = 1 << 13;
    /// FS = Dirty.
    pub const FS_DIRTY: usize = 3 << 13;
}

/// Bits of `hstatus`.
pub mod hstatus_bits {
    /// Previous virtualization mode.
    pub const SPV: usize = 1 << 7;
    /// Previous virtual privilege (for HLV/HSV and set on trap from V=1).
    pub const SPVP: usize = 1 << 8;
    /// Trap WFI in VS-mode as a virtual instruction after a bounded time.
    pub const VTW: usize = 1 << 21;
    /// Shift of VGEIN (the guest external interrupt line VS-level uses).
    pub const VGEIN_SHIFT: u32 = 12;
    /// Mask of VGEIN (6 bits).
    pub const VGEIN_MASK: usize = 0x3f << VGEIN_SHIFT;
}

/// Interrupt bits of `sip`/`sie`/`hip`/`hie`/`hvip`.
pub mod irq_bits {
    /// Supervisor software interrupt.
    pub const SSI: usize = 1 << 1;
    /// VS software interrupt.
    pub const VSSI: usize = 1 << 2;
    /// Supervisor timer interrupt.
    pub const STI: usize = 1 << 5;
    /// VS timer interrupt.
    pub const VSTI: usize = 1 << 6;
    /// Supervisor external interrupt.
    pub const SEI: usize = 1 << 9;
    /// VS external interrupt.
    pub const VSEI: usize = 1 << 10;
    /// Supervisor guest external interrupt (`hip`/`hie` bit 12).
    pub const SGEI: usize = 1 << 12;
}

/// Bits of `henvcfg`.
pub mod henvcfg_bits {
    /// Sstc: VS-mode may use `stimecmp` (vstimecmp).
    pub const STCE: usize = 1 << 63;
    /// Svadu: hardware A/D updates for VS-stage.
    pub const ADUE: usize = 1 << 61;
}

/// The current hart's hypervisor CSRs, for virq-riscv's H-extension plumbing.
pub struct HartCsrs;

impl virq_riscv::hext::Csrs for HartCsrs {
    fn read(&self, c: virq_riscv::hext::Csr) -> u64 {
        use virq_riscv::hext::Csr;
        (match c {
            Csr::Hstatus => hstatus::read(),
            Csr::Hvip => hvip::read(),
            Csr::Hgeie => hgeie::read(),
            Csr::Hgeip => hgeip::read(),
        }) as u64
    }

    fn write(&self, c: virq_riscv::hext::Csr, v: u64) {
        use virq_riscv::hext::Csr;
        match c {
            Csr::Hstatus => hstatus::write(v as usize),
            Csr::Hvip => hvip::write(v as usize),
            Csr::Hgeie => hgeie::write(v as usize),
            Csr::Hgeip => {}
        }
    }
}
