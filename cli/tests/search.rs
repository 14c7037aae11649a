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
    assert!(!text.contains("several times"), "random sampling: {text}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("array.toml");
    let file = std::fs::read_to_string(example())
        .unwrap()
        .replace("[searcher]", "[resources]\njob_array = true\n\n[searcher]");
    std::fs::write(&path, file).unwrap();
    let out = cohort(&["search", "preview", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        text.contains("the trials a round starts go as one job array per length and attempt"),
        "{text}"
    );
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
fn each_benchmark_function_is_simulated_from_its_file_and_the_command_line_overrides_it() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/search");
    for (file, title) in [
        ("hartmann-tpe.toml", "Hartmann 6-D"),
        ("hartmann3-tpe.toml", "Hartmann 3-D"),
        ("branin-tpe.toml", "Branin"),
    ] {
        let path = examples.join(file);
        let path = path.to_str().unwrap();
        let out = cohort(&["search", "simulate", path, "--max-trials", "40"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{file}: {out:?}");
        assert!(
            text.contains(&format!("simulated on {title} (bias 0.5, noise 0.1)")),
            "{file}: {text}"
        );
        assert!(text.contains("  trials 40,"), "{file}: {text}");
    }
    let branin = examples.join("branin-tpe.toml");
    let branin = branin.to_str().unwrap();
    let out = cohort(&[
        "search",
        "simulate",
        branin,
        "--sampler",
        "random",
        "--noise",
        "0",
        "--bias",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Branin (bias 1, noise 0)"));
    // Branin has two coordinates: Hartmann 3-D does not fit the file.
    let out = cohort(&["search", "simulate", branin, "--function", "hartmann3"]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("exactly 3 numeric hyperparameters") && err.contains("has 2"),
        "{err}"
    );
    for (args, said) in [
        (["--function", "levy"], "not a benchmark function"),
        (["--sampler", "bohb"], "not a sampler (random, tpe)"),
        (["--noise", "NaN"], "--noise must be a non-negative number"),
        (["--max-trials", "0"], "--max-trials must be at least 1"),
    ] {
        let mut all = vec!["search", "simulate", branin];
        all.extend(args);
        let out = cohort(&all);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(said), "{args:?}: {err}");
    }
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

/// A trial as a search runs it: reads its hyperparameter and the length to reach, logs
/// `loss` at every step up to it (a function of x with its minimum at x = 0.3).
const WORKER: &str = r#"
import json, os, subprocess, sys
x = json.loads(os.environ["COHORT_HPARAMS"])["x"]
until = int(os.environ["COHORT_SEARCH_UNTIL"])
# Trial 3's first attempt crashes; the search restarts it.
marker = os.path.join(os.path.dirname(os.path.abspath(__file__)), "crashed-once")
if os.environ["COHORT_TRIAL"] == "3" and not os.path.exists(marker):
    open(marker, "w").close()
    sys.exit(1)
for step in range(1, until + 1):
    loss = (x - 0.3) ** 2 + 1.0 / step
    subprocess.run([sys.argv[1], "log", "metric", f"loss={loss}", "--step", str(step)], check=True)
"#;

fn search_file(dir: &Path) -> std::path::PathBuf {
    let worker = dir.join("worker.py");
    std::fs::write(&worker, WORKER).unwrap();
    let file = dir.join("search.toml");
    std::fs::write(
        &file,
        format!(
            r#"
name = "local-asha"
command = ["python3", "{}", "{}"]
[searcher]
name = "asha"
metric = "loss"
max_trials = 8
max_concurrent_trials = 4
max_length = 8
divisor = 2
max_rungs = 3
mode = "aggressive"
seed = 5
[hyperparameters]
x = {{ type = "double", minval = 0.0, maxval = 1.0 }}
"#,
            worker.display(),
            env!("CARGO_BIN_EXE_cohort")
        ),
    )
    .unwrap();
    file
}

fn trials(catalog: &Path) -> Vec<serde_json::Value> {
    let out = cohort(&[
        "trials",
        "local-asha",
        "--catalog",
        catalog.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

#[test]
fn a_local_asha_search_runs_its_trials_and_promotes_the_best() {
    let dir = tempfile::tempdir().unwrap();
    let file = search_file(dir.path());
    let catalog = dir.path().join("catalog");
    let out = cohort(&[
        "search",
        "start",
        file.to_str().unwrap(),
        "--local",
        "4",
        "--catalog",
        catalog.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = trials(&catalog);
    assert_eq!(all.len(), 8, "{all:?}");
    // Rungs at 2, 4, 8: some trial trained the full length and completed; the rest stopped.
    let completed: Vec<&serde_json::Value> =
        all.iter().filter(|t| t["state"] == "completed").collect();
    assert!(!completed.is_empty(), "{all:?}");
    assert!(
        completed
            .iter()
            .all(|t| t["metrics"]["loss"]["last_step"] == 8),
        "{completed:?}"
    );
    assert!(
        all.iter()
            .all(|t| t["state"] == "completed" || t["state"] == "killed"),
        "{all:?}"
    );
    let stopped = all.iter().filter(|t| t["state"] == "killed").count();
    assert!(stopped >= 4, "{all:?}");
    // Trial 3 crashed once and was restarted; the restart is in the catalog.
    let status = cohort(&[
        "search",
        "status",
        "local-asha",
        "--catalog",
        catalog.to_str().unwrap(),
        "--json",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let three = doc["trials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["trial"] == 3)
        .unwrap()
        .clone();
    assert_eq!(three["restarts"], 1, "{three}");
    assert_eq!(doc["finished"], "done");
    assert!(doc["best"]["trial"].as_u64().is_some(), "{doc}");
}

#[test]
fn a_stopped_search_ends_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = search_file(dir.path());
    let catalog = dir.path().join("catalog");
    let cat = catalog.to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args([
            "search",
            "start",
            file.to_str().unwrap(),
            "--local",
            "2",
            "--catalog",
            cat,
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while cohort(&["search", "stop", "local-asha", "--catalog", cat])
        .status
        .code()
        != Some(0)
    {
        assert!(start.elapsed().as_secs() < 30, "the search never started");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    assert!(status.success());
    let out = cohort(&["search", "status", "local-asha", "--catalog", cat]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("finished (stopped)"), "{text}");
    assert!(trials(&catalog).len() < 8);
}

/// Starts the search of `search_file` in `catalog` and kills its controller (SIGKILL) once
/// it has launched some trials; returns its event log.
/// Starts the search, kills its controller once `launched` trials were launched (or after
/// 60 s), and returns its event log.
fn start_and_kill_after(file: &Path, catalog: &Path, launched: usize) -> std::path::PathBuf {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args([
            "search",
            "start",
            file.to_str().unwrap(),
            "--local",
            "4",
            "--catalog",
            catalog.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let mut log = None;
    loop {
        // The catalog and the experiment appear once the controller has started.
        log = log.or_else(|| {
            let catalog = cohort_catalog::Catalog::open(catalog).ok()?;
            let experiment = catalog.experiment("local-asha").ok()?;
            Some(experiment.search_dir().events())
        });
        let seen = log.as_ref().map_or(0, |p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .matches("\"launched\"")
                .count()
        });
        if seen >= launched || start.elapsed().as_secs() > 60 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    log.filter(|p| p.exists())
        .expect("the search wrote its event log")
}

fn start_and_kill(file: &Path, catalog: &Path) -> std::path::PathBuf {
    start_and_kill_after(file, catalog, 3)
}

#[test]
fn a_killed_controller_resumes_without_losing_or_repeating_a_trial() {
    let dir = tempfile::tempdir().unwrap();
    let file = search_file(dir.path());
    let catalog = dir.path().join("catalog");
    start_and_kill(&file, &catalog);
    let out = cohort(&[
        "search",
        "resume",
        "local-asha",
        "--local",
        "4",
        "--catalog",
        catalog.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = trials(&catalog);
    assert_eq!(all.len(), 8, "no trial lost or created twice: {all:?}");
    assert!(
        all.iter()
            .all(|t| t["state"] == "completed" || t["state"] == "killed"),
        "{all:?}"
    );
    // A second resume finds the search finished.
    let again = cohort(&[
        "search",
        "resume",
        "local-asha",
        "--local",
        "4",
        "--catalog",
        catalog.to_str().unwrap(),
    ]);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(trials(&catalog).len(), 8);
}

#[test]
fn a_controller_killed_mid_record_twice_resumes_with_a_warning_and_whole_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = search_file(dir.path());
    let catalog = dir.path().join("catalog");
    let log = start_and_kill(&file, &catalog);
    let committed = std::fs::read_to_string(&log).unwrap();
    let mut torn = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut torn, b"{\"event\":\"launched\",\"tri").unwrap();
    drop(torn);
    let resume = || {
        cohort(&[
            "search",
            "resume",
            "local-asha",
            "--local",
            "4",
            "--catalog",
            catalog.to_str().unwrap(),
        ])
    };
    let out = resume();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("cohort: warning: ")
            && err.contains("events.jsonl: ")
            && err.contains("never committed"),
        "{err}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.starts_with(&committed),
        "every committed record is kept"
    );
    for line in text.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "a line glued to a torn record: {line:?}"
        );
    }
    assert_eq!(trials(&catalog).len(), 8);
    // Torn again after the search ended: the next resume cuts it off and finds it finished.
    let mut torn = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut torn, b"{\"event\":\"fin").unwrap();
    drop(torn);
    let again = resume();
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), text);
    assert_eq!(trials(&catalog).len(), 8);
}

#[test]
fn the_tpe_sampler_is_previewed_simulated_deterministically_and_timed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tpe.toml");
    let text = std::fs::read_to_string(example()).unwrap();
    std::fs::write(
        &path,
        text.replace("seed = 1", "seed = 1\nsampler = \"tpe\""),
    )
    .unwrap();
    let path = path.to_str().unwrap();
    let out = cohort(&["search", "preview", path]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        shown.contains("sampled by TPE once 10 trials have reported"),
        "{shown}"
    );
    assert!(
        shown.contains("the real budget is often several times this, at most 65536"),
        "{shown}"
    );
    assert!(!shown.contains("job array"), "{shown}");
    let a = cohort(&["search", "simulate", path, "--json", "--repeat", "2"]);
    let b = cohort(&["search", "simulate", path, "--json", "--repeat", "2"]);
    assert_eq!(a.status.code(), Some(0), "{a:?}");
    assert_eq!(a.stdout, b.stdout, "the same seeds replay the same search");
    let out = cohort(&["bench", "sampler", "--results", "50", "--decisions", "5"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        shown.starts_with("TPE sampler, 50 results, 6 hyperparameters: "),
        "{shown}"
    );
    let out = cohort(&["bench", "sampler", "--results", "3"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--results must be at least 10"));
}

/// `cohort bench controller`: a small search through the simulated launcher runs every trial
/// (ASHA promotes some, so there are more launches than trials) and reports each figure.
#[test]
fn the_controller_benchmark_runs_a_search_through_simulated_trials() {
    let out = cohort(&[
        "bench",
        "controller",
        "--trials",
        "40",
        "--concurrent",
        "10",
        "--trial-seconds",
        "0.1",
        "--interval-ms",
        "20",
    ]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let launches: u64 = shown
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(launches >= 40, "{shown}");
    assert!(
        shown.contains("launches of 40 trials, up to 10 at once"),
        "{shown}"
    );
    assert!(shown.contains("% of one core (target < 5%)"), "{shown}");
    assert!(
        shown.contains("a decision launched after the round saw the results: median"),
        "{shown}"
    );
    let out = cohort(&["bench", "controller", "--trials", "5", "--concurrent", "10"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--trials at least --concurrent"));
}

/// The local search's file as a random search of 14 trials, 2 at a time, with the TPE sampler.
fn tpe_search_file(dir: &Path) -> std::path::PathBuf {
    let file = search_file(dir);
    let text = std::fs::read_to_string(&file)
        .unwrap()
        .replace("name = \"asha\"", "name = \"random\"")
        .replace("max_trials = 8", "max_trials = 14")
        .replace("max_concurrent_trials = 4", "max_concurrent_trials = 2")
        .replace("divisor = 2\nmax_rungs = 3\nmode = \"aggressive\"\n", "")
        .replace("seed = 5", "seed = 5\nsampler = \"tpe\"");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn a_killed_tpe_controller_replays_its_model_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = tpe_search_file(dir.path());
    let catalog = dir.path().join("catalog");
    // Killed once the model has chosen trials (it needs 10 results).
    let log = start_and_kill_after(&file, &catalog, 12);
    let before = std::fs::read_to_string(&log).unwrap();
    let out = cohort(&[
        "search",
        "resume",
        "local-asha",
        "--local",
        "2",
        "--catalog",
        catalog.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let after = std::fs::read_to_string(&log).unwrap();
    // The resumed controller replayed every assignment (else it stops, naming the mismatch),
    // kept the log, and finished the search with model-chosen trials.
    assert!(
        after.starts_with(before.trim_end()),
        "the log was rewritten"
    );
    assert_eq!(trials(&catalog).len(), 14);
    assert!(after.contains("\"model\":{\"results\":"), "{after}");
}

#[test]
fn a_local_tpe_search_says_what_its_model_was_fitted_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = tpe_search_file(dir.path());
    let catalog = dir.path().join("catalog");
    let catalog = catalog.to_str().unwrap();
    let out = cohort(&[
        "search",
        "start",
        file.to_str().unwrap(),
        "--local",
        "2",
        "--catalog",
        catalog,
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let status = cohort(&["search", "status", "local-asha", "--catalog", catalog]);
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        shown.contains("sampler tpe: the latest model-chosen trial was fitted on 1"),
        "{shown}"
    );
    let status = cohort(&[
        "search",
        "status",
        "local-asha",
        "--catalog",
        catalog,
        "--json",
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(doc["sampler"], "tpe", "{doc}");
    let results = doc["model"]["results"].as_u64().unwrap();
    assert!((10..14).contains(&results), "{doc}");
    assert_eq!(doc["model"]["length"], 8, "{doc}");
    assert_eq!(doc["trials"].as_array().unwrap().len(), 14, "{doc}");
}
