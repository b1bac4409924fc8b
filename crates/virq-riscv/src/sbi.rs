//! The guest-facing half of an SBI implementation: turning a VS-mode `ecall`'s
//! registers into a typed, validated call (RISC-V SBI v2.0; FWFT from v3.0).
//!
//! Everything a guest passes in `a0`–`a7` is an allegation. [`decode`] checks what can
//! be checked without the hypervisor's state — the extension and function ids, hart
//! masks against the guest's vCPU count, enumerated arguments, address arithmetic —
//! and returns a [`Call`] whose fields are already legal, or the [`SbiError`] the
//! specification prescribes. What needs the machine (is an address in guest RAM, is
//! the target vCPU stopped) stays with the caller, which then only acts.
//!
//! | extension | EID | functions decoded | spec (v2.0) |
//! |---|---|---|---|
//! | BASE | `0x10` | all seven | §4 |
//! | TIME | `TIME` | `set_timer` | §6 |
//! | IPI | `sPI` | `send_ipi` | §7 |
//! | RFENCE | `RFNC` | `remote_fence_i`, `remote_sfence_vma`, `remote_sfence_vma_asid` (the `hfence` functions are NOT_SUPPORTED: guests have no H extension) | §8 |
//! | HSM | `HSM` | `hart_start`, `hart_stop`, `hart_get_status`, `hart_suspend` | §9 |
//! | SRST | `SRST` | `system_reset` | §10 |
//! | DBCN | `DBCN` | `console_write`, `console_read`, `console_write_byte` | §12 |
//! | SUSP | `SUSP` | `system_suspend` (`SUSPEND_TO_RAM` only) | §13 |
//! | FWFT | `FWFT` | `set`, `get` (the six features v3.0 defines) | v3.0 §18 |
//!
//! Anything else is [`SbiError::NotSupported`]. The legacy extensions (EIDs `0x00`–
//! `0x0F`, return only `a0`) and a hypervisor's own experimental EIDs are not decoded
//! here; the caller handles them before calling [`decode`].
//!
//! `uint32_t` arguments (suspend, sleep and reset types, reset reasons): the RISC-V
//! calling convention passes them sign-extended on RV64, C callers with `unsigned
//! long` zero-extended; both are accepted. Any other upper half names no 32-bit value
//! and is [`SbiError::InvalidParam`] (truncating would make `1 << 32` a type 0).
//!
//! Hart masks (§3.1): a `(hart_mask, hart_mask_base)` pair names harts `hart_mask_base
//! + i` for every set bit `i`; `hart_mask_base = -1` (`usize::MAX`) ignores `hart_mask`
//! and names every hart. In a guest, hart ids are vCPU indices `0..n`; naming any hart
//! at or above `n`, including by overflowing `hart_mask_base + i`, is
//! [`SbiError::InvalidParam`]. A zero `hart_mask` names no hart and is not an error.
//!
//! Constants (EIDs, FIDs, HSM states, suspend and reset types) come from the
//! [`sbi_spec`] crate; the error codes are pinned to its `RET_ERR_*` values by tests.
use sbi_spec::{base, dbcn, fwft, hsm, rfnc, spi, srst, susp, time};

/// Most vCPUs a guest can have for the SBI's hart masks: a [`HartSet`] is one `u64`.
pub const MAX_VCPUS: usize = 64;

/// The extensions [`decode`] understands (for `probe_extension`).
pub const EXTENSIONS: [usize; 9] = [
    base::EID_BASE,
    time::EID_TIME,
    spi::EID_SPI,
    rfnc::EID_RFNC,
    hsm::EID_HSM,
    srst::EID_SRST,
    dbcn::EID_DBCN,
    susp::EID_SUSP,
    fwft::EID_FWFT,
];

/// SUSP sleep type `SUSPEND_TO_RAM` (SBI v2.0 §13.1, table "SUSP System Sleep
/// Types"); `0x1..=0x7FFF_FFFF` are reserved, `0x8000_0000..` platform-specific.
const SLEEP_TYPE_SUSPEND_TO_RAM: u32 = 0;

/// The standard SBI error codes (SBI v2.0 §3.2, table "Standard SBI Errors"),
/// returned in `a0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(isize)]
pub enum SbiError {
    /// `SBI_ERR_FAILED`: failed for an unknown reason.
    Failed = -1,
    /// `SBI_ERR_NOT_SUPPORTED`: extension or function not supported.
    NotSupported = -2,
    /// `SBI_ERR_INVALID_PARAM`: a parameter is invalid.
    InvalidParam = -3,
    /// `SBI_ERR_DENIED`: denied.
    Denied = -4,
    /// `SBI_ERR_INVALID_ADDRESS`: an address is invalid.
    InvalidAddress = -5,
    /// `SBI_ERR_ALREADY_AVAILABLE`: already available (e.g. a started hart).
    AlreadyAvailable = -6,
    /// `SBI_ERR_ALREADY_STARTED`.
    AlreadyStarted = -7,
    /// `SBI_ERR_ALREADY_STOPPED`.
    AlreadyStopped = -8,
    /// `SBI_ERR_NO_SHMEM`: shared memory not available.
    NoShmem = -9,
    /// `SBI_ERR_INVALID_STATE`.
    InvalidState = -10,
    /// `SBI_ERR_BAD_RANGE`.
    BadRange = -11,
    /// `SBI_ERR_TIMEOUT`.
    Timeout = -12,
    /// `SBI_ERR_IO`.
    Io = -13,
    /// `SBI_ERR_DENIED_LOCKED`.
    DeniedLocked = -14,
}

impl SbiError {
    /// Every error, in code order (-1 down to -14).
    pub const ALL: [SbiError; 14] = [
        Self::Failed,
        Self::NotSupported,
        Self::InvalidParam,
        Self::Denied,
        Self::InvalidAddress,
        Self::AlreadyAvailable,
        Self::AlreadyStarted,
        Self::AlreadyStopped,
        Self::NoShmem,
        Self::InvalidState,
        Self::BadRange,
        Self::Timeout,
        Self::Io,
        Self::DeniedLocked,
    ];

    /// The signed error code.
    pub const fn code(self) -> isize {
        self as isize
    }

    /// The code as the guest's `a0` register holds it.
    pub const fn a0(self) -> usize {
        self as isize as usize
    }

    /// The error with code `code`, if it is a standard one.
    pub fn from_code(code: isize) -> Option<Self> {
        Self::ALL.iter().copied().find(|e| e.code() == code)
    }
}

/// The result of an SBI call: a value for `a1` or an error for `a0`.
pub type SbiResult = Result<usize, SbiError>;

/// The `(a0, a1)` pair the guest sees for `r`: `(0, value)` or `(error, 0)`.
pub const fn ret(r: SbiResult) -> (usize, usize) {
    match r {
        Ok(v) => (0, v),
        Err(e) => (e.a0(), 0),
    }
}

/// A guest's vCPU count, `1..=`[`MAX_VCPUS`]: the one checked way to turn guest
/// hart ids and hart masks into vCPU indices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestHarts(u8);

impl GuestHarts {
    /// `n` vCPUs, or `None` unless `1 <= n <= MAX_VCPUS` (a host configuration error).
    pub const fn new(n: usize) -> Option<Self> {
        if n == 0 || n > MAX_VCPUS {
            None
        } else {
            Some(Self(n as u8))
        }
    }

    /// The number of vCPUs.
    pub const fn count(self) -> usize {
        self.0 as usize
    }

    /// Every vCPU.
    pub const fn all(self) -> HartSet {
        HartSet(if self.0 as usize >= 64 {
            u64::MAX
        } else {
            (1u64 << self.0) - 1
        })
    }

    /// The vCPU a guest calls hart `hartid`, or INVALID_PARAM.
    pub const fn index(self, hartid: usize) -> Result<VcpuIndex, SbiError> {
        if hartid < self.0 as usize {
            Ok(VcpuIndex(hartid as u8))
        } else {
            Err(SbiError::InvalidParam)
        }
    }

    /// The vCPUs named by `(hart_mask, hart_mask_base)` (SBI v2.0 §3.1; see the module
    /// docs), or INVALID_PARAM if any named hart does not exist.
    pub const fn hart_set(
        self,
        hart_mask: usize,
        hart_mask_base: usize,
    ) -> Result<HartSet, SbiError> {
        if hart_mask_base == usize::MAX {
            return Ok(self.all());
        }
        if hart_mask == 0 {
            return Ok(HartSet(0));
        }
        // Every set bit `i` must name a vCPU: `hart_mask_base + i < n`, i.e. the base
        // is below `n` and no bit at or above `n - base` is set. (No `leading_zeros`:
        // without Zbb that is a 40-instruction loop on the hot path of `send_ipi`.)
        let n = self.0 as usize;
        if hart_mask_base >= n {
            return Err(SbiError::InvalidParam);
        }
        let room = n - hart_mask_base;
        if room < usize::BITS as usize && hart_mask >> room != 0 {
            return Err(SbiError::InvalidParam);
        }
        // `hart_mask_base < n <= 64` and every bit is below `n - base`: the shift
        // keeps every bit.
        Ok(HartSet((hart_mask as u64) << hart_mask_base))
    }
}

/// A vCPU index that exists in its guest (made by [`GuestHarts::index`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VcpuIndex(u8);

impl VcpuIndex {
    /// The index, `0..n`.
    pub const fn get(self) -> usize {
        self.0 as usize
    }
}

/// A set of existing vCPU indices of one guest (bit `i` = vCPU `i`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HartSet(u64);

impl HartSet {
    /// The set as a bitmask.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Is vCPU `i` in the set?
    pub const fn contains(self, i: usize) -> bool {
        i < 64 && self.0 >> i & 1 == 1
    }

    /// Is the set empty?
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The vCPUs in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = VcpuIndex> {
        let mut rest = self.0;
        core::iter::from_fn(move || {
            if rest == 0 {
                return None;
            }
            let i = rest.trailing_zeros();
            rest &= rest - 1;
            Some(VcpuIndex(i as u8))
        })
    }
}

/// A virtual address range to fence (SBI v2.0 §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FenceRange {
    /// The whole address space (`start_addr = size = 0`, or `size = -1`).
    All,
    /// `start..start + size` (the sum does not overflow).
    Range {
        /// First address.
        start: usize,
        /// Bytes.
        size: usize,
    },
}

impl FenceRange {
    /// Checked: INVALID_ADDRESS when `start_addr + size` overflows.
    pub const fn new(start_addr: usize, size: usize) -> Result<Self, SbiError> {
        if (start_addr == 0 && size == 0) || size == usize::MAX {
            return Ok(Self::All);
        }
        match start_addr.checked_add(size) {
            Some(_) => Ok(Self::Range {
                start: start_addr,
                size,
            }),
            None => Err(SbiError::InvalidAddress),
        }
    }
}

/// Which remote fence (SBI v2.0 §8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fence {
    /// `remote_fence_i`: `FENCE.I`.
    I,
    /// `remote_sfence_vma`: `SFENCE.VMA` over a range, all ASIDs.
    SfenceVma(FenceRange),
    /// `remote_sfence_vma_asid`: `SFENCE.VMA` over a range, one ASID.
    SfenceVmaAsid(FenceRange, usize),
}

/// `hart_suspend`'s `suspend_type` (SBI v2.0 §9.4, table "HSM Hart Suspend Types").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suspend {
    /// `0x0000_0000`: default retentive suspend; the call returns on resume.
    Retentive,
    /// `0x8000_0000`: default non-retentive suspend; on resume the hart starts at
    /// `resume_addr` (a guest physical address, unchecked) with `a0 = hartid`, `a1 =
    /// opaque`.
    NonRetentive {
        /// Where to resume (the caller checks it is in guest RAM: INVALID_ADDRESS).
        resume_addr: usize,
        /// Passed back in `a1`.
        opaque: usize,
    },
}

/// `system_reset`'s `reset_type` (SBI v2.0 §10.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetType {
    /// `0x0`: shutdown.
    Shutdown,
    /// `0x1`: cold reboot.
    ColdReboot,
    /// `0x2`: warm reboot.
    WarmReboot,
}

/// `system_reset`'s `reset_reason` (SBI v2.0 §10.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResetReason {
    /// `0x0`: no reason.
    NoReason,
    /// `0x1`: system failure.
    SystemFailure,
    /// `0xE000_0000..=0xEFFF_FFFF`: SBI-implementation specific (the full value).
    SbiImplementation(u32),
    /// `0xF000_0000..=0xFFFF_FFFF`: platform specific (the full value).
    Platform(u32),
}

/// A guest buffer for the debug console (SBI v2.0 §12): `len` bytes at guest physical
/// `addr`; `addr + len` does not overflow. The caller checks it lies in guest RAM
/// (INVALID_PARAM otherwise, as §12.1 says).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsoleBuf {
    /// Guest physical address of the first byte.
    pub addr: u64,
    /// Bytes.
    pub len: usize,
}

/// A firmware feature SBI v3.0 defines (§18, table "FWFT Feature Types").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FwftFeature {
    /// `0`: delegation of misaligned load/store exceptions to S-mode.
    MisalignedExcDeleg,
    /// `1`: landing pads (Zicfilp).
    LandingPad,
    /// `2`: shadow stacks (Zicfiss).
    ShadowStack,
    /// `3`: double-trap (Ssdbltrp).
    DoubleTrap,
    /// `4`: hardware updating of PTE A/D bits (Svadu).
    PteAdHwUpdating,
    /// `5`: pointer-masking tag length.
    PointerMaskingPmlen,
}

impl FwftFeature {
    /// The feature with id `feature`, or DENIED: SBI v3.0 §18.1/§18.2 make a reserved
    /// or (unimplemented) platform-specific feature DENIED, whatever its upper bits.
    pub const fn new(feature: usize) -> Result<Self, SbiError> {
        Ok(match feature {
            fwft::feature_type::MISALIGNED_EXC_DELEG => Self::MisalignedExcDeleg,
            fwft::feature_type::LANDING_PAD => Self::LandingPad,
            fwft::feature_type::SHADOW_STACK => Self::ShadowStack,
            fwft::feature_type::DOUBLE_TRAP => Self::DoubleTrap,
            fwft::feature_type::PTE_AD_HW_UPDATING => Self::PteAdHwUpdating,
            fwft::feature_type::POINTER_MASKING_PMLEN => Self::PointerMaskingPmlen,
            _ => return Err(SbiError::Denied),
        })
    }

    /// The feature id.
    pub const fn id(self) -> usize {
        match self {
            Self::MisalignedExcDeleg => fwft::feature_type::MISALIGNED_EXC_DELEG,
            Self::LandingPad => fwft::feature_type::LANDING_PAD,
            Self::ShadowStack => fwft::feature_type::SHADOW_STACK,
            Self::DoubleTrap => fwft::feature_type::DOUBLE_TRAP,
            Self::PteAdHwUpdating => fwft::feature_type::PTE_AD_HW_UPDATING,
            Self::PointerMaskingPmlen => fwft::feature_type::POINTER_MASKING_PMLEN,
        }
    }
}

/// A decoded, validated SBI call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// BASE `get_sbi_spec_version`.
    GetSpecVersion,
    /// BASE `get_sbi_impl_id`.
    GetImplId,
    /// BASE `get_sbi_impl_version`.
    GetImplVersion,
    /// BASE `probe_extension(extension_id)`.
    ProbeExtension {
        /// The extension asked about (any value is legal).
        eid: usize,
    },
    /// BASE `get_mvendorid`.
    GetMvendorid,
    /// BASE `get_marchid`.
    GetMarchid,
    /// BASE `get_mimpid`.
    GetMimpid,
    /// TIME `set_timer(stime_value)`.
    SetTimer {
        /// Absolute time of the next timer event.
        stime_value: u64,
    },
    /// IPI `send_ipi(hart_mask, hart_mask_base)`.
    SendIpi {
        /// The vCPUs to interrupt.
        harts: HartSet,
    },
    /// RFENCE `remote_fence_i` / `remote_sfence_vma` / `remote_sfence_vma_asid`.
    RemoteFence {
        /// The vCPUs to fence.
        harts: HartSet,
        /// What to fence.
        fence: Fence,
    },
    /// HSM `hart_start(hartid, start_addr, opaque)`.
    HartStart {
        /// The vCPU to start.
        hart: VcpuIndex,
        /// Guest physical start address (the caller checks it: INVALID_ADDRESS).
        start_addr: usize,
        /// Passed in `a1`.
        opaque: usize,
    },
    /// HSM `hart_stop`.
    HartStop,
    /// HSM `hart_get_status(hartid)`.
    HartGetStatus {
        /// The vCPU asked about.
        hart: VcpuIndex,
    },
    /// HSM `hart_suspend(suspend_type, resume_addr, opaque)`.
    HartSuspend(Suspend),
    /// SRST `system_reset(reset_type, reset_reason)`.
    SystemReset {
        /// Shutdown or reboot (a reboot the caller cannot do is NOT_SUPPORTED).
        reset_type: ResetType,
        /// Why.
        reason: ResetReason,
    },
    /// DBCN `console_write(num_bytes, base_addr_lo, base_addr_hi)`.
    ConsoleWrite(ConsoleBuf),
    /// DBCN `console_read(num_bytes, base_addr_lo, base_addr_hi)`.
    ConsoleRead(ConsoleBuf),
    /// DBCN `console_write_byte(byte)`.
    ConsoleWriteByte {
        /// The low 8 bits of `a0`.
        byte: u8,
    },
    /// SUSP `system_suspend(SUSPEND_TO_RAM, resume_addr, opaque)`: the caller checks
    /// that every other vCPU is STOPPED (DENIED) and `resume_addr` (INVALID_ADDRESS).
    SystemSuspend {
        /// Where the calling hart resumes (guest physical, unchecked).
        resume_addr: usize,
        /// Passed back in `a1`.
        opaque: usize,
    },
    /// FWFT `set(feature, value, flags)` of a defined feature; `flags` had no bit but
    /// LOCK. Whether `value` is legal depends on the feature (the caller's: INVALID_PARAM).
    FwftSet {
        /// The feature.
        feature: FwftFeature,
        /// The value to set.
        value: usize,
        /// `flags` had LOCK: the value can no longer be changed once set.
        lock: bool,
    },
    /// FWFT `get(feature)` of a defined feature.
    FwftGet {
        /// The feature.
        feature: FwftFeature,
    },
}

/// A `uint32_t` argument: its value if `x` is it zero- or sign-extended (see the
/// module docs), else `None`.
const fn u32_arg(x: usize) -> Option<u32> {
    let v = x as u32;
    if x == v as usize || x == v as i32 as isize as usize {
        Some(v)
    } else {
        None
    }
}

/// Decode the call `(eid, fid)` = `(a7, a6)` with arguments `a = [a0..a5]` from a
/// guest with `harts` vCPUs. Errors are the ones SBI v2.0 prescribes for the argument
/// (unknown extension or function: NOT_SUPPORTED).
///
/// # Example
///
/// ```
/// use virq_riscv::sbi::{decode, Call, GuestHarts, SbiError};
///
/// let harts = GuestHarts::new(2).unwrap();
/// const EID_SPI: usize = 0x735049; // "sPI"
/// // send_ipi(hart_mask = 0b10, hart_mask_base = 0): vCPU 1.
/// let Ok(Call::SendIpi { harts: set }) = decode(EID_SPI, 0, [0b10, 0, 0, 0, 0, 0], harts) else {
///     panic!("a valid IPI");
/// };
/// assert_eq!(set.bits(), 0b10);
/// // A mask naming a vCPU the guest does not have is the error SBI prescribes.
/// assert_eq!(decode(EID_SPI, 0, [0b100, 0, 0, 0, 0, 0], harts), Err(SbiError::InvalidParam));
/// ```
pub fn decode(eid: usize, fid: usize, a: [usize; 6], harts: GuestHarts) -> Result<Call, SbiError> {
    match eid {
        base::EID_BASE => decode_base(fid, a),
        time::EID_TIME if fid == time::SET_TIMER => Ok(Call::SetTimer {
            stime_value: a[0] as u64,
        }),
        spi::EID_SPI if fid == spi::SEND_IPI => Ok(Call::SendIpi {
            harts: harts.hart_set(a[0], a[1])?,
        }),
        rfnc::EID_RFNC => decode_rfence(fid, a, harts),
        hsm::EID_HSM => decode_hsm(fid, a, harts),
        srst::EID_SRST if fid == srst::SYSTEM_RESET => decode_srst(a),
        dbcn::EID_DBCN => decode_dbcn(fid, a),
        susp::EID_SUSP if fid == susp::SUSPEND => decode_susp(a),
        fwft::EID_FWFT => decode_fwft(fid, a),
        _ => Err(SbiError::NotSupported),
    }
}

fn decode_base(fid: usize, a: [usize; 6]) -> Result<Call, SbiError> {
    Ok(match fid {
        base::GET_SBI_SPEC_VERSION => Call::GetSpecVersion,
        base::GET_SBI_IMPL_ID => Call::GetImplId,
        base::GET_SBI_IMPL_VERSION => Call::GetImplVersion,
        base::PROBE_EXTENSION => Call::ProbeExtension { eid: a[0] },
        base::GET_MVENDORID => Call::GetMvendorid,
        base::GET_MARCHID => Call::GetMarchid,
        base::GET_MIMPID => Call::GetMimpid,
        _ => return Err(SbiError::NotSupported),
    })
}

fn decode_rfence(fid: usize, a: [usize; 6], harts: GuestHarts) -> Result<Call, SbiError> {
    // NOT_SUPPORTED first, then the hart mask (INVALID_PARAM), then the range
    // (INVALID_ADDRESS).
    if !matches!(
        fid,
        rfnc::REMOTE_FENCE_I | rfnc::REMOTE_SFENCE_VMA | rfnc::REMOTE_SFENCE_VMA_ASID
    ) {
        return Err(SbiError::NotSupported);
    }
    let harts = harts.hart_set(a[0], a[1])?;
    let fence = match fid {
        rfnc::REMOTE_FENCE_I => Fence::I,
        rfnc::REMOTE_SFENCE_VMA => Fence::SfenceVma(FenceRange::new(a[2], a[3])?),
        _ => Fence::SfenceVmaAsid(FenceRange::new(a[2], a[3])?, a[4]),
    };
    Ok(Call::RemoteFence { harts, fence })
}

fn decode_hsm(fid: usize, a: [usize; 6], harts: GuestHarts) -> Result<Call, SbiError> {
    Ok(match fid {
        hsm::HART_START => Call::HartStart {
            hart: harts.index(a[0])?,
            start_addr: a[1],
            opaque: a[2],
        },
        hsm::HART_STOP => Call::HartStop,
        hsm::HART_GET_STATUS => Call::HartGetStatus {
            hart: harts.index(a[0])?,
        },
        // `suspend_type` is a uint32_t (`u32_arg`). Reserved and (unimplemented)
        // platform-specific types are INVALID_PARAM (§9.4).
        hsm::HART_SUSPEND => Call::HartSuspend(match u32_arg(a[0]) {
            Some(hsm::suspend_type::RETENTIVE) => Suspend::Retentive,
            Some(hsm::suspend_type::NON_RETENTIVE) => Suspend::NonRetentive {
                resume_addr: a[1],
                opaque: a[2],
            },
            _ => return Err(SbiError::InvalidParam),
        }),
        _ => return Err(SbiError::NotSupported),
    })
}

fn decode_srst(a: [usize; 6]) -> Result<Call, SbiError> {
    // Both are uint32_t (`u32_arg`).
    let reset_type = match u32_arg(a[0]) {
        Some(srst::RESET_TYPE_SHUTDOWN) => ResetType::Shutdown,
        Some(srst::RESET_TYPE_COLD_REBOOT) => ResetType::ColdReboot,
        Some(srst::RESET_TYPE_WARM_REBOOT) => ResetType::WarmReboot,
        // Reserved or platform-specific (none implemented).
        _ => return Err(SbiError::InvalidParam),
    };
    let reason = match u32_arg(a[1]) {
        Some(srst::RESET_REASON_NO_REASON) => ResetReason::NoReason,
        Some(srst::RESET_REASON_SYSTEM_FAILURE) => ResetReason::SystemFailure,
        Some(r @ 0xE000_0000..=0xEFFF_FFFF) => ResetReason::SbiImplementation(r),
        Some(r @ 0xF000_0000..=0xFFFF_FFFF) => ResetReason::Platform(r),
        _ => return Err(SbiError::InvalidParam),
    };
    Ok(Call::SystemReset { reset_type, reason })
}

fn decode_dbcn(fid: usize, a: [usize; 6]) -> Result<Call, SbiError> {
    let buf = || {
        let (len, lo, hi) = (a[0], a[1], a[2]);
        // RV64: an address above 2^64 cannot be guest memory.
        if hi != 0 || lo.checked_add(len).is_none() {
            return Err(SbiError::InvalidParam);
        }
        Ok(ConsoleBuf {
            addr: lo as u64,
            len,
        })
    };
    match fid {
        dbcn::CONSOLE_WRITE => Ok(Call::ConsoleWrite(buf()?)),
        dbcn::CONSOLE_READ => Ok(Call::ConsoleRead(buf()?)),
        dbcn::CONSOLE_WRITE_BYTE => Ok(Call::ConsoleWriteByte { byte: a[0] as u8 }),
        _ => Err(SbiError::NotSupported),
    }
}

fn decode_susp(a: [usize; 6]) -> Result<Call, SbiError> {
    // §13.1: reserved and unimplemented platform-specific sleep types (every one but
    // SUSPEND_TO_RAM; a uint32_t, `u32_arg`) are INVALID_PARAM.
    if u32_arg(a[0]) != Some(SLEEP_TYPE_SUSPEND_TO_RAM) {
        return Err(SbiError::InvalidParam);
    }
    Ok(Call::SystemSuspend {
        resume_addr: a[1],
        opaque: a[2],
    })
}

fn decode_fwft(fid: usize, a: [usize; 6]) -> Result<Call, SbiError> {
    // v3.0 §18.1: INVALID_PARAM for flags other than LOCK comes before the feature
    // (DENIED for a reserved or platform-specific one, §18.1/§18.2).
    let lock = fwft::flags::SetFlags::LOCK.bits();
    match fid {
        fwft::SET if a[2] & !lock != 0 => Err(SbiError::InvalidParam),
        fwft::SET => Ok(Call::FwftSet {
            feature: FwftFeature::new(a[0])?,
            value: a[1],
            lock: a[2] & lock != 0,
        }),
        fwft::GET => Ok(Call::FwftGet {
            feature: FwftFeature::new(a[0])?,
        }),
        _ => Err(SbiError::NotSupported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sbi_spec::binary as spec;

    fn harts(n: usize) -> GuestHarts {
        GuestHarts::new(n).unwrap()
    }

    #[test]
    fn error_codes_match_sbi_spec_crate() {
        let spec = [
            spec::RET_ERR_FAILED,
            spec::RET_ERR_NOT_SUPPORTED,
            spec::RET_ERR_INVALID_PARAM,
            spec::RET_ERR_DENIED,
            spec::RET_ERR_INVALID_ADDRESS,
            spec::RET_ERR_ALREADY_AVAILABLE,
            spec::RET_ERR_ALREADY_STARTED,
            spec::RET_ERR_ALREADY_STOPPED,
            spec::RET_ERR_NO_SHMEM,
            spec::RET_ERR_INVALID_STATE,
            spec::RET_ERR_BAD_RANGE,
            spec::RET_ERR_TIMEOUT,
            spec::RET_ERR_IO,
            spec::RET_ERR_DENIED_LOCKED,
        ];
        for (e, s) in SbiError::ALL.iter().zip(spec) {
            assert_eq!(e.a0(), s, "{e:?}");
            assert_eq!(SbiError::from_code(e.code()), Some(*e));
        }
        assert_eq!(SbiError::from_code(0), None);
        assert_eq!(SbiError::from_code(-15), None);
        assert_eq!(ret(Ok(7)), (0, 7));
        assert_eq!(ret(Err(SbiError::InvalidParam)), (-3isize as usize, 0));
    }

    #[test]
    fn guest_harts_is_1_to_64() {
        assert_eq!(GuestHarts::new(0), None);
        assert_eq!(GuestHarts::new(65), None);
        assert_eq!(harts(1).all().bits(), 1);
        assert_eq!(harts(64).all().bits(), u64::MAX);
        assert_eq!(harts(4).index(3).map(VcpuIndex::get), Ok(3));
        assert_eq!(harts(4).index(4), Err(SbiError::InvalidParam));
        assert_eq!(harts(4).index(usize::MAX), Err(SbiError::InvalidParam));
    }

    #[test]
    fn spec_3_1_hart_mask_base_minus_1_is_every_hart() {
        assert_eq!(harts(4).hart_set(0, usize::MAX), Ok(HartSet(0b1111)));
        // hart_mask is ignored, even bits beyond the guest.
        assert_eq!(harts(2).hart_set(usize::MAX, usize::MAX), Ok(HartSet(0b11)));
    }

    #[test]
    fn spec_3_1_mask_is_relative_to_base() {
        assert_eq!(harts(4).hart_set(0b1, 0), Ok(HartSet(0b1)));
        assert_eq!(harts(4).hart_set(0b101, 1), Ok(HartSet(0b1010)));
        assert_eq!(harts(4).hart_set(0b1, 3), Ok(HartSet(0b1000)));
        assert_eq!(harts(64).hart_set(usize::MAX, 0), Ok(HartSet(u64::MAX)));
        assert_eq!(harts(64).hart_set(1, 63), Ok(HartSet(1 << 63)));
    }

    #[test]
    fn empty_mask_names_no_hart_whatever_the_base() {
        assert_eq!(harts(4).hart_set(0, 0), Ok(HartSet(0)));
        assert_eq!(harts(4).hart_set(0, 1000), Ok(HartSet(0)));
    }

    #[test]
    fn harts_beyond_the_guest_are_invalid_param() {
        assert_eq!(harts(4).hart_set(0b10000, 0), Err(SbiError::InvalidParam));
        assert_eq!(harts(4).hart_set(0b11, 3), Err(SbiError::InvalidParam));
        assert_eq!(harts(4).hart_set(1, 4), Err(SbiError::InvalidParam));
        assert_eq!(harts(64).hart_set(0b10, 63), Err(SbiError::InvalidParam));
    }

    #[test]
    fn huge_bases_do_not_overflow() {
        assert_eq!(
            harts(4).hart_set(1, usize::MAX - 1),
            Err(SbiError::InvalidParam)
        );
        assert_eq!(
            harts(64).hart_set(1 << 63, usize::MAX - 1),
            Err(SbiError::InvalidParam)
        );
        assert_eq!(
            harts(64).hart_set(usize::MAX, 1 << 63),
            Err(SbiError::InvalidParam)
        );
        assert_eq!(harts(4).hart_set(1, 64), Err(SbiError::InvalidParam));
    }

    /// The check without `leading_zeros` against the formula it replaced: the highest
    /// named hart, `base + (BITS - 1 - clz(mask))`, below the vCPU count.
    #[test]
    fn hart_set_agrees_with_the_highest_bit_formula() {
        let masks = [
            1usize,
            0b10,
            0b101,
            0xff,
            1 << 31,
            1 << 62,
            1 << 63,
            usize::MAX,
            usize::MAX >> 1,
            0x8000_0000_0000_0001,
        ];
        let bases = [0usize, 1, 2, 3, 31, 32, 62, 63, 64, 65, usize::MAX - 1];
        for n in 1..=64 {
            for &mask in &masks {
                for &base in &bases {
                    let highest = (usize::BITS - 1 - mask.leading_zeros()) as usize;
                    let ok = base.checked_add(highest).is_some_and(|top| top < n);
                    let want = if ok {
                        Ok(HartSet((mask as u64) << base))
                    } else {
                        Err(SbiError::InvalidParam)
                    };
                    assert_eq!(harts(n).hart_set(mask, base), want, "{n} {mask:#x} {base}");
                }
            }
        }
    }

    #[test]
    fn hart_set_iterates_its_vcpus() {
        let s = harts(8).hart_set(0b1001, 2).unwrap();
        let v: Vec<usize> = s.iter().map(VcpuIndex::get).collect();
        assert_eq!(v, [2, 5]);
        assert!(s.contains(5) && !s.contains(3) && !s.contains(200));
        assert!(!s.is_empty() && HartSet::default().is_empty());
    }

    fn call(eid: usize, fid: usize, a: [usize; 6]) -> Result<Call, SbiError> {
        decode(eid, fid, a, harts(4))
    }

    #[test]
    fn unknown_extensions_and_functions_are_not_supported() {
        for (eid, fid) in [
            (0x0, 0),                    // legacy: the caller's
            (0x0856_4951, 0),            // experimental
            (sbi_spec::pmu::EID_PMU, 0), // not implemented
            (base::EID_BASE, 7),
            (time::EID_TIME, 1),
            (spi::EID_SPI, 1),
            (rfnc::EID_RFNC, rfnc::REMOTE_HFENCE_GVMA_VMID),
            (rfnc::EID_RFNC, rfnc::REMOTE_HFENCE_VVMA),
            (hsm::EID_HSM, 4),
            (srst::EID_SRST, 1),
            (dbcn::EID_DBCN, 3),
            (susp::EID_SUSP, 1),
            (fwft::EID_FWFT, 2),
            (fwft::EID_FWFT, usize::MAX),
            (base::EID_BASE | 1 << 32, 0), // upper bits are not ignored
        ] {
            assert_eq!(
                call(eid, fid, [0; 6]),
                Err(SbiError::NotSupported),
                "{eid:#x}/{fid}"
            );
        }
    }

    #[test]
    fn base_calls() {
        assert_eq!(call(base::EID_BASE, 0, [0; 6]), Ok(Call::GetSpecVersion));
        assert_eq!(
            call(
                base::EID_BASE,
                base::PROBE_EXTENSION,
                [hsm::EID_HSM, 0, 0, 0, 0, 0]
            ),
            Ok(Call::ProbeExtension { eid: hsm::EID_HSM })
        );
        assert_eq!(call(base::EID_BASE, 6, [0; 6]), Ok(Call::GetMimpid));
    }

    #[test]
    fn time_and_ipi() {
        assert_eq!(
            call(time::EID_TIME, 0, [u64::MAX as usize, 0, 0, 0, 0, 0]),
            Ok(Call::SetTimer {
                stime_value: u64::MAX
            })
        );
        assert_eq!(
            call(spi::EID_SPI, 0, [0b11, 2, 0, 0, 0, 0]),
            Ok(Call::SendIpi {
                harts: HartSet(0b1100)
            })
        );
        assert_eq!(
            call(spi::EID_SPI, 0, [0b11, 3, 0, 0, 0, 0]),
            Err(SbiError::InvalidParam)
        );
    }

    #[test]
    fn spec_8_fence_ranges() {
        let f = |fid, start, size| call(rfnc::EID_RFNC, fid, [1, 0, start, size, 9, 0]);
        let harts = HartSet(1);
        assert_eq!(
            f(0, 0, 0),
            Ok(Call::RemoteFence {
                harts,
                fence: Fence::I
            })
        );
        assert_eq!(
            f(1, 0, 0),
            Ok(Call::RemoteFence {
                harts,
                fence: Fence::SfenceVma(FenceRange::All)
            })
        );
        assert_eq!(
            f(1, 0x1000, usize::MAX),
            Ok(Call::RemoteFence {
                harts,
                fence: Fence::SfenceVma(FenceRange::All)
            })
        );
        assert_eq!(
            f(2, 0x1000, 0x2000),
            Ok(Call::RemoteFence {
                harts,
                fence: Fence::SfenceVmaAsid(
                    FenceRange::Range {
                        start: 0x1000,
                        size: 0x2000
                    },
                    9
                )
            })
        );
        assert_eq!(f(1, usize::MAX, 2), Err(SbiError::InvalidAddress));
        // The hart mask is checked too, before the range.
        assert_eq!(
            call(rfnc::EID_RFNC, 0, [1, 4, 0, 0, 0, 0]),
            Err(SbiError::InvalidParam)
        );
        assert_eq!(
            call(rfnc::EID_RFNC, 1, [1, 4, usize::MAX, 2, 0, 0]),
            Err(SbiError::InvalidParam)
        );
    }

    #[test]
    fn spec_9_hsm_arguments() {
        assert_eq!(
            call(hsm::EID_HSM, hsm::HART_START, [3, 0x8020_0000, 7, 0, 0, 0]),
            Ok(Call::HartStart {
                hart: VcpuIndex(3),
                start_addr: 0x8020_0000,
                opaque: 7
            })
        );
        assert_eq!(
            call(hsm::EID_HSM, hsm::HART_START, [4, 0, 0, 0, 0, 0]),
            Err(SbiError::InvalidParam)
        );
        assert_eq!(
            call(hsm::EID_HSM, hsm::HART_STOP, [9; 6]),
            Ok(Call::HartStop)
        );
        assert_eq!(
            call(
                hsm::EID_HSM,
                hsm::HART_GET_STATUS,
                [usize::MAX, 0, 0, 0, 0, 0]
            ),
            Err(SbiError::InvalidParam)
        );
        assert_eq!(
            call(hsm::EID_HSM, hsm::HART_GET_STATUS, [0, 0, 0, 0, 0, 0]),
            Ok(Call::HartGetStatus { hart: VcpuIndex(0) })
        );
    }

    #[test]
    fn spec_9_4_suspend_types() {
        let s = |ty: usize| {
            call(
                hsm::EID_HSM,
                hsm::HART_SUSPEND,
                [ty, 0x8000_0000, 5, 0, 0, 0],
            )
        };
        assert_eq!(s(0), Ok(Call::HartSuspend(Suspend::Retentive)));
        let nr = Ok(Call::HartSuspend(Suspend::NonRetentive {
            resume_addr: 0x8000_0000,
            opaque: 5,
        }));
        assert_eq!(s(0x8000_0000), nr);
        // RV64 sign-extends the uint32_t.
        assert_eq!(s(0xffff_ffff_8000_0000), nr);
        for reserved in [
            1,
            0x0fff_ffff,
            0x1000_0000,
            0x7fff_ffff,
            0x8000_0001,
            0x9000_0000,
            0xffff_ffff,
            usize::MAX,
            // Upper halves that are no extension of a 32-bit value, though the low
            // half is a valid type: not truncated.
            1 << 32,
            (1 << 32) | 0x8000_0000,
            0xffff_ffff_0000_0000,
            0x7fff_ffff_8000_0000,
        ] {
            assert_eq!(s(reserved), Err(SbiError::InvalidParam), "{reserved:#x}");
        }
    }

    #[test]
    fn uint32_arguments_are_zero_or_sign_extended() {
        assert_eq!(u32_arg(0), Some(0));
        assert_eq!(u32_arg(0x7fff_ffff), Some(0x7fff_ffff));
        assert_eq!(u32_arg(0x8000_0000), Some(0x8000_0000));
        assert_eq!(u32_arg(0xffff_ffff_8000_0000), Some(0x8000_0000));
        assert_eq!(u32_arg(usize::MAX), Some(u32::MAX));
        assert_eq!(u32_arg(0xffff_ffff), Some(u32::MAX));
        // Sign extension of a value with bit 31 clear is zero extension.
        assert_eq!(u32_arg(0xffff_ffff_0000_0001), None);
        assert_eq!(u32_arg(1 << 32), None);
        assert_eq!(u32_arg(1 << 63), None);
        assert_eq!(u32_arg(0x1_8000_0000), None);
    }

    #[test]
    fn spec_10_reset_types_and_reasons() {
        let r = |ty: usize, why: usize| call(srst::EID_SRST, 0, [ty, why, 0, 0, 0, 0]);
        assert_eq!(
            r(0, 0),
            Ok(Call::SystemReset {
                reset_type: ResetType::Shutdown,
                reason: ResetReason::NoReason
            })
        );
        assert_eq!(
            r(2, 1),
            Ok(Call::SystemReset {
                reset_type: ResetType::WarmReboot,
                reason: ResetReason::SystemFailure
            })
        );
        assert_eq!(
            r(1, 0xE000_0001),
            Ok(Call::SystemReset {
                reset_type: ResetType::ColdReboot,
                reason: ResetReason::SbiImplementation(0xE000_0001)
            })
        );
        assert_eq!(
            r(0, 0xF000_0003),
            Ok(Call::SystemReset {
                reset_type: ResetType::Shutdown,
                reason: ResetReason::Platform(0xF000_0003)
            })
        );
        // uint32_t reasons may come sign-extended.
        assert_eq!(
            r(0, 0xFFFF_FFFF_F000_0003),
            Ok(Call::SystemReset {
                reset_type: ResetType::Shutdown,
                reason: ResetReason::Platform(0xF000_0003)
            })
        );
        assert_eq!(r(3, 0), Err(SbiError::InvalidParam));
        assert_eq!(r(0xEFFF_FFFF, 0), Err(SbiError::InvalidParam));
        assert_eq!(r(0xF000_0000, 0), Err(SbiError::InvalidParam));
        assert_eq!(r(usize::MAX, 0), Err(SbiError::InvalidParam));
        assert_eq!(r(0, 2), Err(SbiError::InvalidParam));
        assert_eq!(r(0, 0xDFFF_FFFF), Err(SbiError::InvalidParam));
        // Not truncated: `1 << 32` is no shutdown, `(1 << 32) | 1` no system failure.
        assert_eq!(r(1 << 32, 0), Err(SbiError::InvalidParam));
        assert_eq!(r(0, 1 << 32), Err(SbiError::InvalidParam));
        assert_eq!(r(0, (1 << 32) | 1), Err(SbiError::InvalidParam));
        assert_eq!(r(0, 0xFFFF_FFFF_0000_0001), Err(SbiError::InvalidParam));
        // The type is checked first, and a bad reason fails a reboot too.
        assert_eq!(r(1, 2), Err(SbiError::InvalidParam));
    }

    #[test]
    fn spec_13_sleep_types() {
        let s = |fid, ty: usize| call(susp::EID_SUSP, fid, [ty, 0x8020_0000, 9, 0, 0, 0]);
        let ok = Ok(Call::SystemSuspend {
            resume_addr: 0x8020_0000,
            opaque: 9,
        });
        assert_eq!(s(0, 0), ok);
        for ty in [
            1,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            usize::MAX,
            1 << 32,
            0xffff_ffff_0000_0000,
        ] {
            assert_eq!(s(0, ty), Err(SbiError::InvalidParam), "{ty:#x}");
        }
        // An unknown function is NOT_SUPPORTED whatever the arguments.
        assert_eq!(s(1, 0), Err(SbiError::NotSupported));
        assert_eq!(s(1, 1), Err(SbiError::NotSupported));
    }

    #[test]
    fn v3_18_fwft_features_and_flags() {
        let f = |fid, feature, value, flags| {
            call(fwft::EID_FWFT, fid, [feature, value, flags, 0, 0, 0])
        };
        let all = [
            FwftFeature::MisalignedExcDeleg,
            FwftFeature::LandingPad,
            FwftFeature::ShadowStack,
            FwftFeature::DoubleTrap,
            FwftFeature::PteAdHwUpdating,
            FwftFeature::PointerMaskingPmlen,
        ];
        for (id, feature) in all.into_iter().enumerate() {
            assert_eq!(feature.id(), id);
            assert_eq!(FwftFeature::new(id), Ok(feature));
            assert_eq!(f(fwft::GET, id, 7, 7), Ok(Call::FwftGet { feature }));
            assert_eq!(
                f(fwft::SET, id, 1, 0),
                Ok(Call::FwftSet {
                    feature,
                    value: 1,
                    lock: false
                })
            );
            assert_eq!(
                f(fwft::SET, id, 0, 1),
                Ok(Call::FwftSet {
                    feature,
                    value: 0,
                    lock: true
                })
            );
        }
        // Reserved and platform-specific features (any upper bits): DENIED.
        for id in [
            6,
            0x3fff_ffff,
            0x4000_0000,
            0x8000_0000,
            0xc000_0000,
            0xffff_ffff,
            1 << 32,
            usize::MAX,
        ] {
            assert_eq!(f(fwft::GET, id, 0, 0), Err(SbiError::Denied), "{id:#x}");
            assert_eq!(f(fwft::SET, id, 0, 0), Err(SbiError::Denied), "{id:#x}");
            assert_eq!(f(fwft::SET, id, 0, 1), Err(SbiError::Denied), "{id:#x}");
        }
        // Flags other than LOCK: INVALID_PARAM, before the feature is looked at.
        for flags in [2, 3, 1 << 31, 1 << 63, usize::MAX] {
            assert_eq!(f(fwft::SET, 0, 1, flags), Err(SbiError::InvalidParam));
            assert_eq!(f(fwft::SET, 6, 1, flags), Err(SbiError::InvalidParam));
        }
        // `get` has no flags: a2 is not looked at.
        assert_eq!(
            f(fwft::GET, 0, 0, usize::MAX),
            Ok(Call::FwftGet {
                feature: FwftFeature::MisalignedExcDeleg
            })
        );
        assert_eq!(f(2, 0, 0, 0), Err(SbiError::NotSupported));
    }

    #[test]
    fn extensions_lists_what_decode_decodes() {
        for eid in EXTENSIONS {
            // Every listed extension has a function 0 that is not NOT_SUPPORTED.
            assert_ne!(
                call(eid, 0, [0; 6]),
                Err(SbiError::NotSupported),
                "{eid:#x}"
            );
        }
        assert!(EXTENSIONS.contains(&susp::EID_SUSP) && EXTENSIONS.contains(&fwft::EID_FWFT));
    }

    #[test]
    fn spec_12_console_buffers() {
        let c = |fid, len, lo, hi| call(dbcn::EID_DBCN, fid, [len, lo, hi, 0, 0, 0]);
        assert_eq!(
            c(0, 5, 0x8000_0000, 0),
            Ok(Call::ConsoleWrite(ConsoleBuf {
                addr: 0x8000_0000,
                len: 5
            }))
        );
        assert_eq!(
            c(1, 5, 0x8000_0000, 0),
            Ok(Call::ConsoleRead(ConsoleBuf {
                addr: 0x8000_0000,
                len: 5
            }))
        );
        assert_eq!(c(0, 5, 0x8000_0000, 1), Err(SbiError::InvalidParam));
        assert_eq!(c(0, 2, usize::MAX, 0), Err(SbiError::InvalidParam));
        assert_eq!(
            c(2, 0x1_41, 0, 0),
            Ok(Call::ConsoleWriteByte { byte: 0x41 })
        );
    }
}
