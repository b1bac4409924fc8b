//! Crate tests: spec tests named after the clause they check, property tests against
//! small reference models, the MSI-sink conformance suite and error-path tests.

use std::cell::RefCell;
use std::vec::Vec;

use crate::imsic::ImsicFileState;
use crate::mmio::{EoiSink, VcpuIrqSink};
use crate::msi::{GuestFileHw, Msi, MsiSink};

mod aplic;
mod conformance;
mod hext;
mod imsic;
mod plic;

/// Records VSEIP levels per vCPU and every change.
#[derive(Default)]
pub(crate) struct VseipLog {
    pub(crate) events: RefCell<Vec<(u32, bool)>>,
}

impl VseipLog {
    pub(crate) fn level(&self, vcpu: u32) -> bool {
        self.events
            .borrow()
            .iter()
            .rev()
            .find(|e| e.0 == vcpu)
            .is_some_and(|e| e.1)
    }
    pub(crate) fn changes(&self) -> usize {
        self.events.borrow().len()
    }
}

impl VcpuIrqSink for VseipLog {
    fn set_vseip(&self, vcpu: u32, level: bool) {
        self.events.borrow_mut().push((vcpu, level));
    }
}

/// Records guest completions.
#[derive(Default)]
pub(crate) struct EoiLog(pub(crate) RefCell<Vec<u32>>);

impl EoiSink for EoiLog {
    fn guest_completed(&self, source: u32) {
        self.0.borrow_mut().push(source);
    }
}

/// Records MSIs; accepts those to harts below `harts`.
pub(crate) struct MsiLog {
    pub(crate) harts: u32,
    pub(crate) sent: Vec<Msi>,
}

impl MsiLog {
    pub(crate) fn new(harts: u32) -> Self {
        Self {
            harts,
            sent: Vec::new(),
        }
    }
}

impl MsiSink for MsiLog {
    fn send_msi(&mut self, msi: Msi) -> bool {
        self.sent.push(msi);
        msi.hart < self.harts
    }
}

/// A recording fake of the hardware guest files of a few harts: each (hart, line) is a
/// modelled interrupt file state; every call is logged.
#[derive(Default)]
pub(crate) struct FakeHwFiles {
    pub(crate) files: RefCell<Vec<((usize, u32), ImsicFileState)>>,
    pub(crate) log: RefCell<Vec<&'static str>>,
}

impl FakeHwFiles {
    pub(crate) fn state(&self, hart: usize, line: u32) -> ImsicFileState {
        self.files
            .borrow()
            .iter()
            .find(|f| f.0 == (hart, line))
            .map(|f| f.1)
            .unwrap_or_default()
    }
    fn with(&self, hart: usize, line: u32, f: impl FnOnce(&mut ImsicFileState)) {
        let mut files = self.files.borrow_mut();
        if let Some(e) = files.iter_mut().find(|e| e.0 == (hart, line)) {
            f(&mut e.1);
        } else {
            let mut s = ImsicFileState::default();
            f(&mut s);
            files.push(((hart, line), s));
        }
    }
}

impl GuestFileHw for FakeHwFiles {
    fn send_msi(&self, hart: usize, line: u32, eiid: u32) {
        self.log.borrow_mut().push("msi");
        // A 255-identity file, like QEMU's virt machine.
        if (1..=255).contains(&eiid) {
            self.with(hart, line, |s| {
                s.eip[eiid as usize / 64] |= 1 << (eiid % 64)
            });
        }
    }
    fn save(&self, hart: usize, line: u32) -> ImsicFileState {
        self.log.borrow_mut().push("save");
        self.state(hart, line)
    }
    fn restore(&self, hart: usize, line: u32, state: &ImsicFileState) {
        self.log.borrow_mut().push("restore");
        self.with(hart, line, |s| *s = *state);
    }
}
