//! Passes the target's linker script to rust-lld (`hyp.ld` for riscv64,
//! `hyp-aarch64.ld` for aarch64).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("riscv64") {
        println!("cargo:rustc-link-arg=-T{dir}/hyp.ld");
    } else if target.starts_with("aarch64") {
        println!("cargo:rustc-link-arg=-T{dir}/hyp-aarch64.ld");
    }
    println!("cargo:rerun-if-changed=hyp.ld");
    println!("cargo:rerun-if-changed=hyp-aarch64.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
