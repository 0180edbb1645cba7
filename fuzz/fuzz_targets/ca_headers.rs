#![no_main]
//! See acmekeep::fuzz::ca_headers.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    acmekeep::fuzz::ca_headers(data);
});
