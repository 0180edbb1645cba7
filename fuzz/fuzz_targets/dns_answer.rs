#![no_main]
//! See acmekeep::fuzz::dns_answer.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    acmekeep::fuzz::dns_answer(data);
});
