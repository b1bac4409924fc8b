//! The config blob xtask hands hyp (`hyp_config`'s format), read the same way on every
//! architecture: the bootarg `config=ADDR` names a host physical address in free RAM;
//! [`load`] copies the blob out, decodes it and validates it again (to hyp it is
//! input like any other). What each architecture builds from it lives above
//! (`config.rs` on riscv64, `arm/vm.rs` on aarch64).
use hyp_config::Error;

/// The longest config blob hyp reads.
const BLOB_MAX: usize = 64 << 10;

/// Read the configuration: the blob at the host physical address of the bootarg
/// `config=`, which must lie in RAM outside hyp's image, stack and heap
/// (`allowed(addr, len)`); decode and validate it.
pub fn load(
    bootarg: Option<&str>,
    allowed: impl Fn(u64, u64) -> bool,
) -> Result<hyp_config::Config, Error> {
    let arg = bootarg.ok_or_else(|| {
        Error::new(
            "config",
            "no config=ADDR bootarg: boot hyp with `cargo xtask run --config FILE`",
        )
    })?;
    let addr = arg
        .strip_prefix("0x")
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or_else(|| Error::new("config", "config= takes a hex address (0x...)"))?;
    if !allowed(addr, 8) {
        return Err(Error::new(
            "config",
            "config= does not point into free host RAM",
        ));
    }
    let mut header = [0u8; 8];
    // SAFETY: `[addr, addr + 8)` is host RAM outside hyp's image, stacks and heap
    // (checked above); only the boot hart runs and nothing else writes it.
    unsafe { crate::arch::phys::copy_in(addr as usize, &mut header) };
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len > BLOB_MAX || !allowed(addr, len as u64) {
        return Err(Error::new(
            "config blob",
            "larger than 64 KiB or beyond free host RAM",
        ));
    }
    let mut blob = alloc::vec![0u8; len];
    // SAFETY: as above, for `[addr, addr + len)` (checked).
    unsafe { crate::arch::phys::copy_in(addr as usize, &mut blob) };
    let config = hyp_config::decode(&blob)?;
    hyp_config::validate(&config)?;
    Ok(config)
}
