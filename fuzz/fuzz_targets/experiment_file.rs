//! Experiment files: the input as TOML through `ExperimentSpec::parse`; a file that parses is
//! previewed, and a small search is built and driven through its searcher. See
//! `cohort_search::fuzzing`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cohort_search::fuzzing::experiment_file(data);
});
