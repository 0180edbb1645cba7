#![no_main]
//! See acmekeep::fuzz::problem.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    acmekeep::fuzz::problem(data);
});
