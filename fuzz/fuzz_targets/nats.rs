#![no_main]
// The target's logic lives in loopchat-fuzz-checks, shared with the stable replay test.
libfuzzer_sys::fuzz_target!(|data: &[u8]| loopchat_fuzz_checks::nats(data));
