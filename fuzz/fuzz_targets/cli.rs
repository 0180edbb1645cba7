#![no_main]
//! See acmekeep::fuzz::cli.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    acmekeep::fuzz::cli(data);
});
