//! MSI delivery to a vCPU's interrupt file, hardware or software (AIA v1.0 chapter 3,
//! and chapter 6 "Interrupts for Virtual Machines (VS Level)").
//!
//! - [`MsiSink`]: where an MSI goes: (guest hart index, guest index, EIID). The vAPLIC
//!   in MSI mode delivers through it; hyp's router (one [`VcpuImsic`] per vCPU) is one.
//! - [`GuestFileHw`]: the hardware guest interrupt files of the physical IMSICs, as hyp
//!   reaches them (MMIO to a file's `seteipnum_le`, state through `vsiselect`/`vsireg`
//!   with `hstatus.VGEIN` = line on the owning hart).
//! - [`VcpuImsic`]: a vCPU's interrupt file. It is backed by a hardware guest file when
//!   [`VcpuImsic::load`] gets a line from [`HgeiAllocator`], by a software
//!   [`ImsicFile`] otherwise, and moves its [`ImsicFileState`] across whenever the
//!   backing changes (a line frees up, the vCPU moves to another hart, a hart goes
//!   offline). While software-backed it is also the guest's MSI page ([`MmioDevice`])
//!   and answers the trapped `vsireg`/`vstopei` accesses.
//!
//! Guest isolation: a [`VcpuImsic`] accepts only MSIs addressed to its own guest hart
//! index with guest index 0 (guests see no guest files of their own), and only
//! identities `1..=num_ids`.

use virq_core::hgei::HgeiAllocator;

use crate::hext::{set_vgein, Csrs, HgeieDoorbell};
use crate::imsic::{CsrOp, ImsicFile, ImsicFileState, IselectError};
use crate::mmio::{ConfigError, ErrorCounters, MmioDevice, VcpuIrqSink};

/// One MSI as the guest addressed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msi {
    /// Guest hart index (the vCPU index the guest uses in APLIC `target` registers).
    pub hart: u32,
    /// Guest index: 0 = the hart's supervisor-level file (the only one a guest has).
    pub guest: u32,
    /// External interrupt identity: the MSI data.
    pub eiid: u32,
}

/// A destination for MSIs.
pub trait MsiSink {
    /// Delivers `msi`. Returns false when no interrupt file of this sink is at the
    /// address (the MSI is dropped). An identity the file does not implement is
    /// ignored by the file, as a write of it to `seteipnum` would be, yet still counts
    /// as delivered.
    fn send_msi(&mut self, msi: Msi) -> bool;
}

impl<T: MsiSink + ?Sized> MsiSink for &mut T {
    fn send_msi(&mut self, msi: Msi) -> bool {
        (**self).send_msi(msi)
    }
}

/// Routes an MSI to the element whose index is the MSI's hart index.
impl<T: MsiSink> MsiSink for [T] {
    fn send_msi(&mut self, msi: Msi) -> bool {
        self.get_mut(msi.hart as usize)
            .is_some_and(|f| f.send_msi(msi))
    }
}

/// Routes an MSI to the element whose index is the MSI's hart index.
impl<T: MsiSink, const N: usize> MsiSink for [T; N] {
    fn send_msi(&mut self, msi: Msi) -> bool {
        self.as_mut_slice().send_msi(msi)
    }
}

/// The physical IMSICs' guest interrupt files, as hyp reaches them. `hart` is a
/// physical hart index, `line` a guest external interrupt line (= guest file number).
pub trait GuestFileHw {
    /// Writes `eiid` to the file's `seteipnum_le` (an MMIO store).
    fn send_msi(&self, hart: usize, line: u32, eiid: u32);
    /// Reads the file's whole state (on `hart`, via `vsiselect`/`vsireg` and VGEIN).
    fn save(&self, hart: usize, line: u32) -> ImsicFileState;
    /// Overwrites the file's whole state (on `hart`).
    fn restore(&self, hart: usize, line: u32, state: &ImsicFileState);
}

impl<T: GuestFileHw + ?Sized> GuestFileHw for &T {
    fn send_msi(&self, hart: usize, line: u32, eiid: u32) {
        (**self).send_msi(hart, line, eiid);
    }
    fn save(&self, hart: usize, line: u32) -> ImsicFileState {
        (**self).save(hart, line)
    }
    fn restore(&self, hart: usize, line: u32, state: &ImsicFileState) {
        (**self).restore(hart, line, state);
    }
}

/// What currently holds a vCPU's interrupt file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// The software file inside the [`VcpuImsic`].
    Software,
    /// Hardware guest file `line` of physical hart `hart`.
    Hardware {
        /// Physical hart.
        hart: usize,
        /// Guest external interrupt line (`hstatus.VGEIN` value).
        line: u32,
    },
}

/// Size of one interrupt file's MSI page.
pub const IMSIC_PAGE_SIZE: u64 = 0x1000;

/// A vCPU's IMSIC interrupt file (see the [module docs](self)).
pub struct VcpuImsic<H, S> {
    hart_index: u32,
    vcpu: u32,
    soft: ImsicFile,
    backing: Backing,
    hw: H,
    sink: S,
    /// VSEIP level last reported to the sink (software backing only).
    line: bool,
    errors: ErrorCounters,
}

impl<H: GuestFileHw, S: VcpuIrqSink> VcpuImsic<H, S> {
    /// The interrupt file of the guest's vCPU `hart_index` (the hart index the guest
    /// addresses it by, and the index `sink` gets — the same meaning as a vPLIC
    /// context's or a vAPLIC IDC's vCPU), owned in the [`HgeiAllocator`] by `vcpu` (a
    /// machine-wide id), with `num_ids` identities. Starts software-backed and empty.
    pub fn new(
        hart_index: u32,
        vcpu: u32,
        num_ids: u32,
        hw: H,
        sink: S,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            hart_index,
            vcpu,
            soft: ImsicFile::new(num_ids)?,
            backing: Backing::Software,
            hw,
            sink,
            line: false,
            errors: ErrorCounters::default(),
        })
    }

    /// Where the file lives now.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// The guest hart index this file answers to.
    pub fn hart_index(&self) -> u32 {
        self.hart_index
    }

    /// Sets pending identity `eiid` (an MSI that reached this file). Returns whether
    /// `eiid` is implemented (hardware files are assumed to have the same count).
    pub fn deliver(&mut self, eiid: u32) -> bool {
        if eiid == 0 || eiid > self.soft.num_ids() {
            ErrorCounters::bump(&mut self.errors.ignored_value);
            return false;
        }
        match self.backing {
            Backing::Software => {
                self.soft.set_pending(eiid);
                self.update_line();
            }
            Backing::Hardware { hart, line } => self.hw.send_msi(hart, line, eiid),
        }
        true
    }

    /// The file's full state, wherever it lives.
    pub fn save_state(&self) -> ImsicFileState {
        match self.backing {
            Backing::Software => self.soft.save(),
            Backing::Hardware { hart, line } => self.hw.save(hart, line),
        }
    }

    /// Replaces the file's full state (for example on restore of a saved VM).
    pub fn restore_state(&mut self, state: &ImsicFileState) {
        self.soft.restore(state);
        match self.backing {
            Backing::Software => self.update_line(),
            Backing::Hardware { hart, line } => self.hw.restore(hart, line, &self.soft.save()),
        }
    }

    /// A trapped `vsireg` access with `vsiselect = iselect` (software backing; a
    /// hardware-backed guest does not trap). Returns the old value.
    pub fn ireg(&mut self, iselect: u32, op: CsrOp) -> Result<u64, IselectError> {
        if self.backing != Backing::Software {
            return Err(IselectError::NotEmulated);
        }
        let r = self.soft.ireg(iselect, op);
        if r.is_err() {
            ErrorCounters::bump(&mut self.errors.ignored_value);
        }
        self.update_line();
        r
    }

    /// A trapped `vstopei` access (software backing). Returns the value read.
    pub fn stopei(&mut self, op: CsrOp) -> Result<u32, IselectError> {
        if self.backing != Backing::Software {
            return Err(IselectError::NotEmulated);
        }
        let v = self.soft.stopei(op);
        self.update_line();
        Ok(v)
    }

    fn update_line(&mut self) {
        let level = self.backing == Backing::Software && self.soft.line();
        if level != self.line {
            self.line = level;
            self.sink.set_vseip(self.hart_index, level);
        }
    }

    /// The vCPU is about to run on physical hart `hart` (call with the vCPU not
    /// running, on `hart`). Keeps or obtains a hardware guest file there, moving the
    /// state across, or falls back to (stays on) the software file when `hart` has no
    /// free line. Sets `hstatus.VGEIN` accordingly (0 for software). Returns the
    /// backing.
    pub fn load<const HARTS: usize>(
        &mut self,
        hart: usize,
        alloc: &HgeiAllocator<HARTS>,
        csrs: &impl Csrs,
    ) -> Backing {
        match self.backing {
            Backing::Hardware { hart: h, line }
                if h == hart && alloc.owner(hart, line) == Some(self.vcpu) => {}
            Backing::Hardware { .. } => {
                // Moved to another hart (or lost the line): bring the state home first.
                self.move_to_software(alloc);
                self.try_hardware(hart, alloc);
            }
            Backing::Software => self.try_hardware(hart, alloc),
        }
        set_vgein(
            csrs,
            match self.backing {
                Backing::Hardware { line, .. } => line,
                Backing::Software => 0,
            },
        );
        self.backing
    }

    /// Moves the file to software and frees its line: for a hart going offline, a
    /// vCPU being destroyed, or a line the host wants back. No-op when already
    /// software-backed.
    pub fn evict<const HARTS: usize>(&mut self, alloc: &HgeiAllocator<HARTS>) {
        self.move_to_software(alloc);
    }

    fn move_to_software<const HARTS: usize>(&mut self, alloc: &HgeiAllocator<HARTS>) {
        if let Backing::Hardware { hart, line } = self.backing {
            let state = self.hw.save(hart, line);
            // Leave nothing of this guest behind for the line's next owner.
            self.hw.restore(hart, line, &ImsicFileState::default());
            // The hart may be offline already (its lines are then gone): nothing to free.
            let _ = alloc.free(hart, line, self.vcpu);
            self.soft.restore(&state);
            self.backing = Backing::Software;
            self.update_line();
        }
    }

    fn try_hardware<const HARTS: usize>(&mut self, hart: usize, alloc: &HgeiAllocator<HARTS>) {
        if let Ok(line) = alloc.alloc(hart, self.vcpu) {
            self.hw.restore(hart, line, &self.soft.save());
            self.soft.restore(&ImsicFileState::default());
            self.backing = Backing::Hardware { hart, line };
            // The hardware file now drives VSEIP through hgeip[VGEIN].
            self.update_line();
        }
    }

    /// The doorbell enable of the hardware line, for `virq_core::doorbell::Doorbell`
    /// `put`/`load` and for [`crate::hext::handle_sgei`]; `None` when software-backed
    /// (then an MSI kicks the vCPU through the sink instead).
    pub fn doorbell<'a, C: Csrs>(&self, csrs: &'a C) -> Option<HgeieDoorbell<'a, C>> {
        match self.backing {
            Backing::Hardware { line, .. } => Some(HgeieDoorbell::new(csrs, line)),
            Backing::Software => None,
        }
    }
}

impl<H: GuestFileHw, S: VcpuIrqSink> MsiSink for VcpuImsic<H, S> {
    fn send_msi(&mut self, msi: Msi) -> bool {
        if msi.hart != self.hart_index || msi.guest != 0 {
            ErrorCounters::bump(&mut self.errors.ignored_value);
            return false;
        }
        self.deliver(msi.eiid);
        true
    }
}

/// The guest-visible MSI page of a software-backed file: `seteipnum_le` at 0,
/// `seteipnum_be` at 4 (AIA 3.6), both read as zero.
impl<H: GuestFileHw, S: VcpuIrqSink> MmioDevice for VcpuImsic<H, S> {
    fn region_size(&self) -> u64 {
        IMSIC_PAGE_SIZE
    }

    fn read(&mut self, offset: u64, size: u8) -> u64 {
        if let Some(off) = self.errors.check32(offset, size, IMSIC_PAGE_SIZE) {
            if off > 4 {
                ErrorCounters::bump(&mut self.errors.unmapped);
            }
        }
        0
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) {
        match self.errors.check32(offset, size, IMSIC_PAGE_SIZE) {
            Some(0) => {
                self.deliver(value as u32);
            }
            Some(4) => {
                self.deliver((value as u32).swap_bytes());
            }
            Some(_) => ErrorCounters::bump(&mut self.errors.unmapped),
            None => {}
        }
    }

    fn errors(&self) -> ErrorCounters {
        self.errors
    }
}
