#![no_main]
//! See acmekeep::fuzz::target_yaml.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    acmekeep::fuzz::target_yaml(data);
});
