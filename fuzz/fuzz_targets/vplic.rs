//! Fuzz target `vplic`: arbitrary MMIO access sequences against the controller; see
//! [`virq_fuzz::vplic`].
#![cfg_attr(feature = "libfuzzer", no_main)]

#[cfg(feature = "libfuzzer")]
libfuzzer_sys::fuzz_target!(|data: &[u8]| virq_fuzz::vplic(data));

#[cfg(not(feature = "libfuzzer"))]
fn main() -> std::process::ExitCode {
    virq_fuzz::replay_main(virq_fuzz::vplic)
}
