//! Link-time settings for the `acmekeep` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        // Relative relocations packed (DT_RELR): the position-independent binary's ~340 KB
        // relocation table, read in full by the dynamic loader at every start, shrinks to a
        // few KB. GNU ld 2.38+ applies it only when the C library supports it (glibc 2.36+)
        // and ignores it, with a warning, before that.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
