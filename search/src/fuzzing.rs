//! Experiment files as a user might write them, for the `experiment_file` fuzz target
//! (`fuzz/`) and the regression tests of what it found. Any panic here is a bug in the search.
//!
//! The input, as UTF-8, goes through [`ExperimentSpec::parse`]; a file that parses is
//! previewed and rendered, and, when it asks for a small search, its searcher is built and
//! driven as a controller would drive it.

use std::path::Path;

use crate::searcher::{self, Decision, Next};
use crate::spec::ExperimentSpec;

/// The most trials a file may ask for to have its searcher built: random search draws every
/// trial up front, and a valid file may ask for billions.
pub const SMALL_SEARCH: u64 = 256;

/// Parses `data` as an experiment file `fuzz.toml`, then previews and drives it.
pub fn experiment_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ExperimentSpec::parse(Path::new("fuzz.toml"), text) {
        Ok(spec) => drive(&spec),
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Previews `spec`, and for a small search builds its searcher and runs it with up to four
/// trials at once, made-up results (some not finite) and some trials failing, for at most
/// 512 decisions.
pub fn drive(spec: &ExperimentSpec) {
    if let Ok(preview) = crate::preview::preview(spec) {
        let _ = preview.render(spec);
    }
    if spec.searcher.max_trials > SMALL_SEARCH {
        return;
    }
    let Ok(mut searcher) = searcher::build(spec) else {
        return;
    };
    let mut running: Vec<(u64, u64)> = Vec::new();
    for turn in 0..512u64 {
        match searcher.next() {
            Next::Train { trial, until, .. } => {
                running.push((trial, until));
                if running.len() < 4 {
                    continue;
                }
            }
            Next::Wait => {}
            Next::Done => break,
        }
        if running.is_empty() {
            break;
        }
        let (trial, length) = running.remove(0);
        let _ = searcher.position(trial);
        if (trial + turn) % 11 == 5 {
            searcher.failed(trial);
            continue;
        }
        #[allow(clippy::cast_precision_loss)]
        let metric = match trial % 7 {
            3 => f64::NAN,
            5 => f64::INFINITY,
            k => (k as f64 + 1.0) / (length as f64 + 1.0),
        };
        if let Decision::Continue(until) = searcher.report(trial, length, metric) {
            running.push((trial, until));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input that made the `experiment_file` fuzz target fail, replayed.
    #[test]
    fn past_fuzz_crashes_are_refused_or_run_without_panicking() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/experiment_file");
        let mut replayed = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            experiment_file(&std::fs::read(entry.unwrap().path()).unwrap());
            replayed += 1;
        }
        assert!(replayed > 0, "no inputs in {}", dir.display());
    }

    #[test]
    fn a_huge_divisor_power_is_a_short_max_length() {
        let text = "name = \"x\"\ncommand = [\"true\"]\n[searcher]\nname = \"asha\"\n\
                    metric = \"loss\"\nmax_length = 1\ndivisor = 2147483647\nmax_rungs = 20\n";
        let e = ExperimentSpec::parse(Path::new("x.toml"), text).unwrap_err();
        assert_eq!(e.key, "searcher.max_length");
        assert!(e.problem.contains("need at least 2147483647^19"), "{e}");
    }

    #[test]
    fn the_examples_run() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/search");
        for entry in std::fs::read_dir(dir).unwrap() {
            let spec = ExperimentSpec::load(&entry.unwrap().path()).unwrap();
            drive(&spec);
        }
    }
}
