//! `cohort search preview|simulate` and `cohort bench search` as a user runs them.

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

use std::path::Path;
use std::process::{Command, Output};

fn cohort(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(args)
        .output()
        .expect("cohort runs")
}

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/search/hartmann.toml")
        .display()
        .to_string()
}

#[test]
fn preview_shows_brackets_rungs_and_budget() {
    let out = cohort(&["search", "preview", &example()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rung 0:   256 trial(s) train to length 4"),
        "{text}"
    );
    assert!(text.contains("total budget: "), "{text}");
}

#[test]
fn simulation_is_deterministic_and_asha_beats_random_on_a_third_of_the_budget() {
    let a = cohort(&["search", "simulate", &example(), "--json"]);
    let b = cohort(&["search", "simulate", &example(), "--json"]);
    assert_eq!(a.status.code(), Some(0), "{a:?}");
    assert_eq!(a.stdout, b.stdout);
    let bench = cohort(&["bench", "search", &example(), "--repeat", "30"]);
    let text = String::from_utf8_lossy(&bench.stdout);
    assert_eq!(bench.status.code(), Some(0), "{text}");
    assert!(text.contains("reaches a smaller or equal regret"), "{text}");
}

#[test]
fn a_bad_experiment_file_names_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(example())
        .unwrap()
        .replace("divisor = 4", "divisor = 1");
    std::fs::write(&path, text).unwrap();
    let out = cohort(&["search", "preview", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:14: searcher.divisor: must be at least 2"),
        "{err}"
    );
}
