//! Fuzz target `sbi`: see [`virq_fuzz::sbi`].
#![cfg_attr(feature = "libfuzzer", no_main)]

#[cfg(feature = "libfuzzer")]
libfuzzer_sys::fuzz_target!(|data: &[u8]| virq_fuzz::sbi(data));

#[cfg(not(feature = "libfuzzer"))]
fn main() -> std::process::ExitCode {
    virq_fuzz::replay_main(virq_fuzz::sbi)
}
