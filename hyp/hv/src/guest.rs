//! A guest: its RAM, G-stage, DTB, interrupt topology and vCPU range.
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use spin::Mutex;
use virq_core::ack::{AckNotifiers, InFlight};

use crate::arch::phys::PhysRange;
use crate::config::{GuestConfig, Intc, GUEST_RAM_BASE};
use crate::gstage::{self, GStage};
use crate::ids::{GuestVcpuId, Pirq, Virq, INFLIGHT_SLOTS, MAX_VCPUS_PER_GUEST, MAX_VIRQS};
use crate::topology::aia::GuestAia;
use crate::topology::vplic::GuestVplic;
use crate::topology::{GuestIrqChip, GuestView};
use crate::vcpu::Vcpu;
use crate::vpci::{PassError, PassedFunction};
use crate::vuart::Vuart;

/// A guest.
pub struct Guest {
    /// Index in `World::guests` (also its RouteTable id; VMID = index + 1).
    pub index: u16,
    /// Configuration.
    pub cfg: GuestConfig,
    /// vCPU count (config, or the `vcpus=` override).
    pub vcpus: usize,
    /// Global index of vCPU 0.
    pub first_vcpu: usize,
    /// `hgatp` value.
    pub hgatp: usize,
    /// Host RAM backing guest RAM.
    pub ram: PhysRange,
    /// Guest-physical address of the DTB.
    pub dtb_gpa: u64,
    /// Guest-physical entry point of the boot vCPU.
    pub entry: u64,
    /// The guest's interrupt topology (`crate::topology`): vPLIC or AIA.
    pub irqchip: Box<dyn GuestIrqChip>,
    /// `(virq, pirq)` of the passthrough interrupts.
    pub passthrough: Vec<(Virq, Pirq)>,
    /// The emulated console UART, if the guest has one: `(guest base, device)`.
    pub vuart: Option<(u64, Mutex<Vuart>)>,
    /// Ack notifiers of the passthrough sources: the route's ack token per virq.
    pub acks: AckNotifiers<MAX_VIRQS>,
    /// Passthrough interrupts delivered and not yet completed by the guest.
    pub inflight: InFlight<INFLIGHT_SLOTS>,
    /// Level passthrough completes immediately (storm demo).
    pub immediate_eoi: bool,
    /// vCPUs not yet stopped by SRST; the guest is dead when it reaches 0.
    pub alive: AtomicBool,
    /// SRST status the guest asked for.
    pub exit_status: AtomicU32,
    /// The G-stage page tables (the hardware walks them; the AIA remaps IMSIC pages
    /// at run time).
    pub gstage: Mutex<GStage>,
    /// PCIe functions given to the guest, and the guest-physical ECAM window they
    /// appear in (`crate::vpci`).
    pub vpci: Vec<PassedFunction>,
    /// `(base, size)` of the guest's ECAM window (the host's address; never mapped).
    pub ecam: Option<(u64, u64)>,
}

/// Why a guest could not be built (a configuration error).
#[derive(Debug)]
pub enum GuestError {
    /// RAM not inside host RAM, overlapping hyp, the DTB or a reserved region.
    Ram,
    /// Too many vCPUs.
    Vcpus,
    /// The G-stage refused a mapping.
    Map(gstage::MapError),
    /// The DTB could not be built or does not fit.
    Dtb,
    /// The vPLIC refused the configuration.
    Intc,
    /// A PCIe function could not be given to the guest.
    Pci(PassError),
}

impl core::fmt::Display for GuestError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GuestError::Ram => f.write_str("RAM is not free host RAM (or not 2 MiB aligned)"),
            GuestError::Vcpus => write!(f, "vCPU count must be 1..={MAX_VCPUS_PER_GUEST}"),
            GuestError::Map(e) => write!(f, "G-stage mapping refused: {e:?}"),
            GuestError::Dtb => f.write_str("guest DTB could not be built or placed"),
            GuestError::Intc => f.write_str("interrupt controller configuration refused"),
            GuestError::Pci(e) => write!(f, "{e}"),
        }
    }
}

impl GuestError {
    /// The configuration field (`hyp_config` spelling) the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            GuestError::Ram => "ram_host_base",
            GuestError::Vcpus => "vcpus",
            GuestError::Map(_) => "devices",
            GuestError::Dtb => "cmdline",
            GuestError::Intc => "topology",
            GuestError::Pci(_) => "pci",
        }
    }
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.0 + b.1 && b.0 < a.0 + a.1
}

impl Guest {
    /// Build guest `index` from `cfg` with `vcpus` vCPUs starting at global vCPU index
    /// `first_vcpu`; `used` are the host RAM ranges already taken by other guests.
    pub fn new(
        index: u16,
        cfg: &GuestConfig,
        vcpus: usize,
        first_vcpu: usize,
        immediate_eoi: bool,
        used: &[(u64, u64)],
        mut bus: Option<&mut crate::pci::Bus>,
    ) -> Result<Guest, GuestError> {
        let p = &world_platform();
        if vcpus == 0 || vcpus > MAX_VCPUS_PER_GUEST {
            return Err(GuestError::Vcpus);
        }
        let ram = (cfg.ram_host_base, cfg.ram_size);
        let (hs, he) = crate::arch::image_range();
        let mut bad = !p.is_ram(ram.0, ram.1)
            || !ram.0.is_multiple_of(2 << 20)
            || !ram.1.is_multiple_of(2 << 20)
            || overlaps(ram, (hs as u64, (he - hs) as u64))
            || overlaps(ram, (p.dtb_range.0, p.dtb_range.1 - p.dtb_range.0))
            || used.iter().any(|&u| overlaps(ram, u));
        bad |= p.reserved.iter().any(|&r| overlaps(ram, r));
        if bad {
            return Err(GuestError::Ram);
        }
        // SAFETY: the range is host RAM (checked above), disjoint from hyp's image,
        // stacks and heap, the host DTB, reserved memory and every other guest; hyp
        // holds no Rust reference into it.
        let phys = unsafe { PhysRange::new(ram.0 as usize, ram.1 as usize) };

        let mut g = GStage::new();
        g.map(
            GUEST_RAM_BASE,
            ram.0,
            ram.1,
            gstage::R | gstage::W | gstage::X,
        )
        .map_err(GuestError::Map)?;
        let mut vuart = None;
        for d in cfg.devices {
            if matches!(d.kind, crate::config::DeviceKind::EmulatedNs16550a) {
                // Not mapped: every access traps into `crate::vuart`.
                let deferred = crate::config::options().vuart == hyp_config::VuartMode::Deferred;
                vuart = Some((d.guest_base, Mutex::new(Vuart::new(cfg.name, deferred))));
                continue;
            }
            g.map(d.guest_base, d.host_base, d.size, gstage::R | gstage::W)
                .map_err(GuestError::Map)?;
        }

        // PCIe functions: BARs at their host addresses, so the guest reaches the
        // device's registers (and its MSI-X table) with no exit.
        let mut vpci = Vec::new();
        for &bdf in cfg.pci {
            let f = PassedFunction::take(bus.as_deref_mut(), bdf, crate::iommu::iommu().is_some())
                .map_err(GuestError::Pci)?;
            for &(bar, cpu) in &f.bars {
                g.map(
                    cpu,
                    cpu,
                    bar.size.next_multiple_of(4096),
                    gstage::R | gstage::W,
                )
                .map_err(GuestError::Map)?;
            }
            vpci.push(f);
        }
        let ecam = (!vpci.is_empty())
            .then(|| p.pcie.as_ref().map(|h| h.ecam))
            .flatten();

        // The initramfs QEMU's loader put into the guest's RAM (checked by
        // `hyp_config::validate`: inside RAM, below the DTB's last 2 MiB).
        let initrd = cfg
            .initrd
            .map(|(off, len)| (GUEST_RAM_BASE + off, GUEST_RAM_BASE + off + len));
        let dtb = crate::dtb::build(
            cfg,
            &crate::dtb::DtbParams {
                platform: p,
                vcpus,
                initrd,
                pci: ecam.is_some(),
                index,
            },
        )
        .map_err(|_| GuestError::Dtb)?;
        // The DTB goes in the last 2 MiB of guest RAM.
        let dtb_off = ram.1 - (2 << 20);
        if dtb.len() > (2 << 20) || !phys.write(dtb_off as usize, &dtb) {
            return Err(GuestError::Dtb);
        }

        let passthrough: Vec<(Virq, Pirq)> = cfg
            .devices
            .iter()
            .filter_map(|d| d.irq)
            .map(|irq| (irq.virq, irq.pirq))
            .collect();
        let irqchip: Box<dyn GuestIrqChip> = match cfg.intc {
            Intc::Aia {
                aplic_base,
                sources,
                imsic_base,
            } => Box::new(
                GuestAia::new(
                    vcpus,
                    first_vcpu,
                    aplic_base,
                    sources,
                    imsic_base,
                    &passthrough,
                )
                .map_err(|e| {
                    crate::println!("hyp: guest \"{}\": AIA: {e}", cfg.name);
                    GuestError::Intc
                })?,
            ),
            Intc::VPlic { base, sources } => Box::new(
                GuestVplic::new(base, sources, first_vcpu, vcpus, &passthrough)
                    .map_err(|_| GuestError::Intc)?,
            ),
        };
        let entry = GUEST_RAM_BASE + cfg.entry_offset;
        Ok(Guest {
            index,
            cfg: *cfg,
            vcpus,
            first_vcpu,
            hgatp: g.root_register(index + 1),
            ram: phys,
            dtb_gpa: GUEST_RAM_BASE + dtb_off,
            entry,
            irqchip,
            passthrough,
            vuart,
            acks: AckNotifiers::new(),
            inflight: InFlight::new(),
            immediate_eoi,
            alive: AtomicBool::new(true),
            exit_status: AtomicU32::new(0),
            gstage: Mutex::new(g),
            vpci,
            ecam,
        })
    }

    /// A guest access to its ECAM window at `gpa`: the function it addresses (`None`
    /// for one the guest was not given) and the register offset.
    pub fn ecam_at(&self, gpa: u64) -> Option<(Option<&PassedFunction>, u16)> {
        let (base, size) = self.ecam?;
        let off = gpa.checked_sub(base).filter(|o| *o < size)?;
        let (bdf, reg) = crate::vpci::ecam_decode(off)?;
        Some((self.vpci.iter().find(|f| f.bdf == bdf), reg))
    }

    /// Translate a guest-physical range in RAM to an offset into `ram`.
    pub fn ram_offset(&self, gpa: u64, len: u64) -> Option<usize> {
        let off = gpa.checked_sub(GUEST_RAM_BASE)?;
        (off.checked_add(len)? <= self.cfg.ram_size).then_some(off as usize)
    }

    /// Does this guest own the physical console (the UART is passed through to it)? Only
    /// the owner may read console input through SBI, and only its SBI console output
    /// goes out unprefixed.
    pub fn owns_console(&self) -> bool {
        self.cfg
            .devices
            .iter()
            .any(|d| matches!(d.kind, crate::config::DeviceKind::Ns16550a { .. }))
    }

    /// Console output the guest sent through SBI (DBCN, legacy putchar): raw for the
    /// console's owner, into its virtual UART's lines otherwise, or prefixed with its
    /// name — so no guest can pose as another on the shared console.
    pub fn console_write(&self, bytes: &[u8]) {
        if self.owns_console() {
            crate::console::write_bytes(bytes);
        } else if let Some((_, v)) = &self.vuart {
            v.lock().write_bytes(bytes);
        } else if let Ok(text) = core::str::from_utf8(bytes) {
            crate::print!("[{}] {}", self.cfg.name, text);
        }
    }

    /// Is `gpa` in the emulated UART's window? Returns the device and the offset.
    pub fn vuart_at(&self, gpa: u64) -> Option<(&Mutex<Vuart>, u64)> {
        let (base, dev) = self.vuart.as_ref()?;
        let off = gpa.checked_sub(*base)?;
        (off < crate::vuart::WINDOW).then_some((dev, off))
    }

    /// The physical source behind virtual source `virq`.
    pub fn pirq_of(&self, virq: Virq) -> Option<Pirq> {
        self.passthrough
            .iter()
            .find(|(v, _)| *v == virq)
            .map(|(_, p)| *p)
    }

    /// Is the guest still running (no SRST yet)?
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Its vCPUs in id order (element `i` has `GuestVcpuId(i)`): global indices
    /// `first_vcpu..first_vcpu + vcpus` of the vCPU table.
    pub fn vcpu_slice(&self) -> &'static [Vcpu] {
        &crate::vcpu::vcpus()[self.first_vcpu..self.first_vcpu + self.vcpus]
    }

    /// Its vCPU `id`, if it has one.
    pub fn vcpu(&self, id: GuestVcpuId) -> Option<&'static Vcpu> {
        self.vcpu_slice().get(id.slot())
    }
}

fn world_platform() -> &'static crate::platform::Platform {
    crate::platform::platform()
}

/// What the guest's topology sees of it.
impl GuestView for Guest {
    fn index(&self) -> u16 {
        self.index
    }
    fn name(&self) -> &str {
        self.cfg.name
    }
    fn vcpu_slice(&self) -> &'static [Vcpu] {
        Guest::vcpu_slice(self)
    }
    fn gstage(&self) -> &Mutex<GStage> {
        &self.gstage
    }
    fn acks(&self) -> &AckNotifiers<MAX_VIRQS> {
        &self.acks
    }
    fn inflight(&self) -> &InFlight<INFLIGHT_SLOTS> {
        &self.inflight
    }
}
