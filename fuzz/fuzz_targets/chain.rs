#![no_main]
//! See acmekeep::fuzz::chain.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    acmekeep::fuzz::chain(data);
});
