//! A vCPU's state that lives in the CPU's system registers while it runs: its EL1
//! translation, exception and thread registers, pointer-authentication keys, virtual
//! timer and the GIC virtual CPU interface (`ICH_VMCR_EL2`, active priorities, list
//! registers). [`El1State::save`] and [`El1State::restore`] move it when a CPU
//! switches between vCPUs; a vCPU that keeps its CPU never pays for it.
//!
//! The set is complete for what the guest can see: hyp hides the features whose state
//! is not here (SVE, SME, MTE, GCS, POE/PIE, TCR2/SCTLR2, the PMU, …) from the guest's
//! ID registers (`arm/idregs.rs`). Not switched: the debug breakpoint and watchpoint
//! registers (a guest that enables `MDSCR_EL1.MDE` on a shared CPU may see another's
//! breakpoints; documented in docs/hyp.md).

/// `save!(self, field => "reg", ...)`: one `mrs`/`msr` per register.
macro_rules! el1_regs {
    ($($field:ident => $reg:literal),* $(,)?) => {
        /// The saved registers (see the module docs).
        #[derive(Clone, Debug, Default)]
        pub struct El1Regs {
            $(
                #[doc = concat!("`", $reg, "`.")]
                pub $field: u64,
            )*
        }

        impl El1Regs {
            fn save(&mut self) {
                $(
                    // SAFETY: reading a system register has no memory effect.
                    unsafe { core::arch::asm!(concat!("mrs {}, ", $reg), out(reg) self.$field, options(nomem, nostack)) };
                )*
            }

            fn restore(&self) {
                $(
                    // SAFETY: these registers are the guest's EL1 (and EL0) state;
                    // hyp at EL2 does not use them, and stage 2 confines what they
                    // can map.
                    unsafe { core::arch::asm!(concat!("msr ", $reg, ", {}"), in(reg) self.$field, options(nomem, nostack)) };
                )*
            }
        }
    };
}

el1_regs! {
    sctlr => "sctlr_el1",
    actlr => "actlr_el1",
    cpacr => "cpacr_el1",
    ttbr0 => "ttbr0_el1",
    ttbr1 => "ttbr1_el1",
    tcr => "tcr_el1",
    esr => "esr_el1",
    afsr0 => "afsr0_el1",
    afsr1 => "afsr1_el1",
    far => "far_el1",
    mair => "mair_el1",
    amair => "amair_el1",
    vbar => "vbar_el1",
    contextidr => "contextidr_el1",
    tpidr_el1 => "tpidr_el1",
    tpidr_el0 => "tpidr_el0",
    tpidrro_el0 => "tpidrro_el0",
    sp_el0 => "sp_el0",
    elr => "elr_el1",
    spsr => "spsr_el1",
    par => "par_el1",
    cntkctl => "cntkctl_el1",
    csselr => "csselr_el1",
    mdscr => "mdscr_el1",
    apiakeylo => "s3_0_c2_c1_0",
    apiakeyhi => "s3_0_c2_c1_1",
    apibkeylo => "s3_0_c2_c1_2",
    apibkeyhi => "s3_0_c2_c1_3",
    apdakeylo => "s3_0_c2_c2_0",
    apdakeyhi => "s3_0_c2_c2_1",
    apdbkeylo => "s3_0_c2_c2_2",
    apdbkeyhi => "s3_0_c2_c2_3",
    apgakeylo => "s3_0_c2_c3_0",
    apgakeyhi => "s3_0_c2_c3_1",
    cntv_cval => "cntv_cval_el0",
    vmcr => "ich_vmcr_el2",
    ap0r0 => "ich_ap0r0_el2",
    ap1r0 => "ich_ap1r0_el2",
}

/// Everything [`El1State::save`] takes out of the CPU.
#[derive(Clone, Debug, Default)]
pub struct El1State {
    /// System registers.
    pub regs: El1Regs,
    /// `CNTV_CTL_EL0` (restored last, after the compare value).
    pub cntv_ctl: u64,
    /// The list registers (`ICH_VTR_EL2.ListRegs + 1` of them).
    pub lrs: [u64; 16],
    /// Whether the physical virtual-timer PPI was active (a delivery in an `HW`-linked
    /// list register the guest has not deactivated yet).
    pub vtimer_active: bool,
}

impl El1State {
    /// The state of a vCPU that has not run yet: EL1 at its reset values (MMU off),
    /// the timer off, no interrupts.
    pub fn reset() -> El1State {
        let mut s = El1State::default();
        s.regs.sctlr = super::sysreg::SCTLR_EL1_RESET as u64;
        s
    }

    /// Take the running vCPU's state out of this CPU, and stop its timer (so it cannot
    /// interrupt the next vCPU).
    pub fn save(&mut self) {
        self.cntv_ctl = super::sysreg::cntv_ctl_el0::read() as u64;
        super::sysreg::cntv_ctl_el0::write(0);
        self.regs.save();
        let ich = super::gic::HwIch::new();
        for (n, lr) in self.lrs.iter_mut().enumerate().take(ich.num()) {
            *lr = super::gic::lr_access(n, None);
            super::gic::lr_access(n, Some(0));
        }
        self.vtimer_active = super::gic::ppi_active(super::gic::VTIMER_PPI);
        super::gic::set_ppi_active(super::gic::VTIMER_PPI, false);
        // No underflow maintenance interrupt for list registers that are now empty:
        // a CPU left with no vCPU (a migration's old home) would take it for ever.
        // The next vCPU's flush sets `UIE` again when it needs it.
        let hcr = super::sysreg::ich_hcr_el2::read() as u64;
        super::sysreg::ich_hcr_el2::write((hcr & !virq_arm::regs::hcr::UIE) as usize);
    }

    /// Put this vCPU's state into this CPU.
    pub fn restore(&self) {
        self.regs.restore();
        let ich = super::gic::HwIch::new();
        for (n, lr) in self.lrs.iter().enumerate().take(ich.num()) {
            super::gic::lr_access(n, Some(*lr));
        }
        super::gic::set_ppi_active(super::gic::VTIMER_PPI, self.vtimer_active);
        // SAFETY: an `isb` only synchronises the context.
        unsafe { core::arch::asm!("isb", options(nomem, nostack)) };
        super::sysreg::cntv_ctl_el0::write(self.cntv_ctl as usize);
    }
}
