//! The daemon's local API through the real handler: the input is what one client sends on
//! the Unix socket (frames of JSON requests, or anything else), served by `api::serve` with
//! the gang actor behind it. See `cohort_daemon::fuzzing::local_api`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cohort_daemon::fuzzing::local_api(data);
});
