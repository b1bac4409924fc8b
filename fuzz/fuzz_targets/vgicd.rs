//! Fuzz target `vgicd`: guest MMIO, lines, SGIs and exits against the vGICv3; see
//! [`virq_fuzz::vgicd`].
#![cfg_attr(feature = "libfuzzer", no_main)]

#[cfg(feature = "libfuzzer")]
libfuzzer_sys::fuzz_target!(|data: &[u8]| virq_fuzz::vgicd(data));

#[cfg(not(feature = "libfuzzer"))]
fn main() -> std::process::ExitCode {
    virq_fuzz::replay_main(virq_fuzz::vgicd)
}
