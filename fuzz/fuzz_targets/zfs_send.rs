#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| proxborg::fuzz::zfs_send(data));
