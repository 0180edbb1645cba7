#![no_main]
//! See acmekeep::fuzz::responses.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    acmekeep::fuzz::responses(data);
});
