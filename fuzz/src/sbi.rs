//! Fuzz target `sbi`: the SBI call decoder ([`virq_riscv::sbi`]) on arbitrary
//! `ecall` registers and vCPU counts.
//!
//! Each input is a sequence of calls. Extension ids are mostly the implemented ones,
//! function ids mostly small, arguments mostly edge values (0, small, `usize::MAX` and
//! its neighbours, high bits) so that hart masks and ranges hit their corners. Every
//! result is checked against a reference written with `u128` arithmetic: hart masks
//! (SBI v2.0 §3.1), fence ranges (§8), suspend types (§9.4), reset types and reasons
//! (§10), console buffers (§12), sleep types (§13), FWFT features and flags (v3.0
//! §18); every `HartSet` holds only existing vCPUs, every error is a standard code.
use sbi_spec::{base, dbcn, fwft, hsm, rfnc, spi, srst, susp, time};
use virq_riscv::sbi::{
    self, Call, Fence, FenceRange, FwftFeature, GuestHarts, HartSet, ResetReason, ResetType,
    SbiError, Suspend, EXTENSIONS, MAX_VCPUS,
};

use crate::Input;

fn arg(inp: &mut Input) -> usize {
    let raw = (u64::from(inp.u32()) | u64::from(inp.u32()) << 32) as usize;
    match inp.u8() % 8 {
        0 => raw % 8,
        1 => usize::MAX - raw % 4,
        2 => raw % 128,
        3 => 1 << (raw % 64),
        4 => (raw as u32) as usize,
        5 => raw | 1 << 63,
        _ => raw,
    }
}

/// SBI v2.0 §3.1 by enumeration: every set bit names `base + bit`, computed without
/// overflow.
fn ref_hart_set(mask: usize, base: usize, n: usize) -> Result<u64, SbiError> {
    let all = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    if base == usize::MAX {
        return Ok(all);
    }
    let mut set = 0u64;
    for b in 0..usize::BITS {
        if mask >> b & 1 == 1 {
            let hart = base as u128 + u128::from(b);
            if hart >= n as u128 {
                return Err(SbiError::InvalidParam);
            }
            set |= 1 << hart;
        }
    }
    Ok(set)
}

fn ref_range(start: usize, size: usize) -> Result<FenceRange, SbiError> {
    if (start == 0 && size == 0) || size == usize::MAX {
        Ok(FenceRange::All)
    } else if start as u128 + size as u128 > usize::MAX as u128 {
        Err(SbiError::InvalidAddress)
    } else {
        Ok(FenceRange::Range { start, size })
    }
}

fn check_set(s: HartSet, n: usize) {
    let v: Vec<usize> = s.iter().map(|i| i.get()).collect();
    assert_eq!(v.len(), s.bits().count_ones() as usize);
    assert!(v.windows(2).all(|w| w[0] < w[1]));
    for i in v {
        assert!(i < n, "vCPU {i} of {n}");
        assert!(s.contains(i));
    }
}

/// A `uint32_t` argument as RV64 passes it: zero- or sign-extended, else no value.
fn ref_u32(x: usize) -> Option<u32> {
    let (hi, lo) = (x >> 32, (x & 0xffff_ffff) as u32);
    match hi {
        0 => Some(lo),
        0xffff_ffff if lo >> 31 == 1 => Some(lo),
        _ => None,
    }
}

/// What SBI v2.0 says `decode` must return, written as directly as possible.
fn expected(eid: usize, fid: usize, a: [usize; 6], n: usize) -> Result<Call, SbiError> {
    let harts = GuestHarts::new(n).expect("1..=64");
    let idx = |h: usize| harts.index(h);
    let set = |m, b| ref_hart_set(m, b, n).map(|bits| harts.hart_set(m, b).map(|s| (s, bits)));
    match (eid, fid) {
        (base::EID_BASE, 0..=6) => Ok(match fid {
            0 => Call::GetSpecVersion,
            1 => Call::GetImplId,
            2 => Call::GetImplVersion,
            3 => Call::ProbeExtension { eid: a[0] },
            4 => Call::GetMvendorid,
            5 => Call::GetMarchid,
            _ => Call::GetMimpid,
        }),
        (time::EID_TIME, 0) => Ok(Call::SetTimer {
            stime_value: a[0] as u64,
        }),
        (spi::EID_SPI, 0) => {
            let (s, bits) = set(a[0], a[1])??;
            assert_eq!(s.bits(), bits);
            Ok(Call::SendIpi { harts: s })
        }
        (rfnc::EID_RFNC, 0..=2) => {
            let (s, bits) = set(a[0], a[1])??;
            assert_eq!(s.bits(), bits);
            let fence = match fid {
                0 => Fence::I,
                1 => Fence::SfenceVma(ref_range(a[2], a[3])?),
                _ => Fence::SfenceVmaAsid(ref_range(a[2], a[3])?, a[4]),
            };
            Ok(Call::RemoteFence { harts: s, fence })
        }
        (hsm::EID_HSM, 0) => Ok(Call::HartStart {
            hart: idx(a[0])?,
            start_addr: a[1],
            opaque: a[2],
        }),
        (hsm::EID_HSM, 1) => Ok(Call::HartStop),
        (hsm::EID_HSM, 2) => Ok(Call::HartGetStatus { hart: idx(a[0])? }),
        (hsm::EID_HSM, 3) => match ref_u32(a[0]) {
            Some(0) => Ok(Call::HartSuspend(Suspend::Retentive)),
            Some(0x8000_0000) => Ok(Call::HartSuspend(Suspend::NonRetentive {
                resume_addr: a[1],
                opaque: a[2],
            })),
            _ => Err(SbiError::InvalidParam),
        },
        (srst::EID_SRST, 0) => {
            let reset_type = match ref_u32(a[0]) {
                Some(0) => ResetType::Shutdown,
                Some(1) => ResetType::ColdReboot,
                Some(2) => ResetType::WarmReboot,
                _ => return Err(SbiError::InvalidParam),
            };
            let r = ref_u32(a[1]).ok_or(SbiError::InvalidParam)?;
            let reason = match r >> 28 {
                _ if r == 0 => ResetReason::NoReason,
                _ if r == 1 => ResetReason::SystemFailure,
                0xe => ResetReason::SbiImplementation(r),
                0xf => ResetReason::Platform(r),
                _ => return Err(SbiError::InvalidParam),
            };
            Ok(Call::SystemReset { reset_type, reason })
        }
        (dbcn::EID_DBCN, 0 | 1) => {
            if a[2] != 0 || a[1] as u128 + a[0] as u128 > usize::MAX as u128 {
                return Err(SbiError::InvalidParam);
            }
            let buf = sbi::ConsoleBuf {
                addr: a[1] as u64,
                len: a[0],
            };
            Ok(if fid == 0 {
                Call::ConsoleWrite(buf)
            } else {
                Call::ConsoleRead(buf)
            })
        }
        (dbcn::EID_DBCN, 2) => Ok(Call::ConsoleWriteByte { byte: a[0] as u8 }),
        (susp::EID_SUSP, 0) if ref_u32(a[0]) == Some(0) => Ok(Call::SystemSuspend {
            resume_addr: a[1],
            opaque: a[2],
        }),
        (susp::EID_SUSP, 0) => Err(SbiError::InvalidParam),
        (fwft::EID_FWFT, 0 | 1) => {
            if fid == 0 && a[2] > 1 {
                return Err(SbiError::InvalidParam);
            }
            if a[0] > 5 {
                return Err(SbiError::Denied);
            }
            let feature = FwftFeature::new(a[0]).expect("0..=5 are defined");
            assert_eq!(feature.id(), a[0]);
            Ok(if fid == 0 {
                Call::FwftSet {
                    feature,
                    value: a[1],
                    lock: a[2] == 1,
                }
            } else {
                Call::FwftGet { feature }
            })
        }
        _ => Err(SbiError::NotSupported),
    }
}

/// The `sbi` fuzz target.
pub fn sbi(data: &[u8]) {
    let mut inp = Input(data);
    while !inp.done() {
        let n = usize::from(inp.u8()) % (MAX_VCPUS + 2);
        let Some(harts) = GuestHarts::new(n) else {
            assert!(n == 0 || n > MAX_VCPUS);
            continue;
        };
        assert_eq!(harts.count(), n);
        check_set(harts.all(), n);
        assert_eq!(harts.all().bits().count_ones() as usize, n);
        let sel = inp.u8();
        let eid = match sel % 4 {
            0 => (u64::from(inp.u32()) | u64::from(inp.u32()) << 32) as usize,
            1 => usize::from(inp.u8()),
            _ => EXTENSIONS[usize::from(sel >> 2) % EXTENSIONS.len()],
        };
        let fid = match inp.u8() {
            0..=239 => usize::from(inp.u8() % 8),
            _ => arg(&mut inp),
        };
        let a = core::array::from_fn(|_| arg(&mut inp));
        let r = sbi::decode(eid, fid, a, harts);
        assert_eq!(
            r,
            expected(eid, fid, a, n),
            "eid {eid:#x} fid {fid} a {a:x?} n {n}"
        );
        if !EXTENSIONS.contains(&eid) {
            assert_eq!(r, Err(SbiError::NotSupported));
        }
        match r {
            Ok(Call::SendIpi { harts: s } | Call::RemoteFence { harts: s, .. }) => check_set(s, n),
            Ok(Call::HartStart { hart, .. } | Call::HartGetStatus { hart }) => {
                assert!(hart.get() < n && hart.get() == a[0]);
            }
            Ok(Call::ConsoleWrite(b) | Call::ConsoleRead(b)) => {
                assert!(b.addr.checked_add(b.len as u64).is_some());
            }
            Ok(_) => {}
            Err(e) => {
                assert!((-14..=-1).contains(&e.code()));
                assert_eq!(SbiError::from_code(e.code()), Some(e));
                assert_eq!(sbi::ret(Err(e)), (e.code() as usize, 0));
            }
        }
        if let Ok(v) = r.map(|_| a[5]) {
            assert_eq!(sbi::ret(Ok(v)), (0, v));
        }
    }
}
