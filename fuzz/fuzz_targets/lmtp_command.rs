#![no_main]
// See pop3d/src/fuzz.rs for the harness and its invariants.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = pop3d::fuzz::lmtp_command(data);
});
