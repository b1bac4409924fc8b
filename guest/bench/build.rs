//! Passes the linker script to rust-lld (only when building for riscv64).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("riscv64") {
        println!("cargo:rustc-link-arg=-T{dir}/bench.ld");
    }
    println!("cargo:rerun-if-changed=bench.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
