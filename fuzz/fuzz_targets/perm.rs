#![no_main]
//! See acmekeep::fuzz::perm.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    acmekeep::fuzz::perm(data);
});
