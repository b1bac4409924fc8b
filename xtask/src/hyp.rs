//! Build and run `hyp` in QEMU. (Placeholder.)
use anyhow::Result;

/// Arguments of `cargo xtask run`.
#[derive(clap::Args)]
pub struct RunArgs {}

/// Boot the default configuration.
pub fn run(_args: &RunArgs) -> Result<()> {
    anyhow::bail!("hyp is not built yet")
}

/// Run the QEMU test suite.
pub fn qemu_tests() -> Result<()> {
    Ok(())
}
