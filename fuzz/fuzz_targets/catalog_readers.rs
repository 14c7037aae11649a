//! The catalog's readers on damaged files: the input's first byte picks a file of a real
//! trial (its metric log segment, `state.json`, `trial.json`, a collection record, the
//! experiment's index, a history cache), the rest replaces it, and the trial and experiment
//! are read through every public reader; the bytes are also scanned as a segment and parsed as
//! every record. See `cohort_catalog::fuzzing`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cohort_catalog::fuzzing::catalog_readers(data);
});
