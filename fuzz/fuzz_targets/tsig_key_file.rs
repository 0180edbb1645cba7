#![no_main]
//! See acmekeep::fuzz::tsig_key_file.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    acmekeep::fuzz::tsig_key_file(data);
});
