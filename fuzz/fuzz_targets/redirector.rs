#![no_main]
//! See acmekeep::fuzz::redirector.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    acmekeep::fuzz::redirector(data);
});
