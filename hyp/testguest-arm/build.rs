//! Passes the linker script to rust-lld (only when building for aarch64: the riscv64
//! build of the whole hyp workspace compiles this crate as an empty stub).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("aarch64") {
        println!("cargo:rustc-link-arg=-T{dir}/testguest-arm.ld");
    }
    println!("cargo:rerun-if-changed=testguest-arm.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
