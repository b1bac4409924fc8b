//! Fuzz target `vits`: guest ITS registers, command queues and MSIs against the
//! guest-visible ITS; see [`virq_fuzz::vits`].
#![cfg_attr(feature = "libfuzzer", no_main)]

#[cfg(feature = "libfuzzer")]
libfuzzer_sys::fuzz_target!(|data: &[u8]| virq_fuzz::vits(data));

#[cfg(not(feature = "libfuzzer"))]
fn main() -> std::process::ExitCode {
    virq_fuzz::replay_main(virq_fuzz::vits)
}
