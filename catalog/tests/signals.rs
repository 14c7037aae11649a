//! Slurm's warnings (the stop signal, SIGTERM) reach `Tracker::should_stop`. The signal
//! handlers are process-wide. Each test runs its body in a child process (this same test
//! binary, asked for that test alone) so that a signal never reaches another test.

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

use std::process::Command;

use cohort_catalog::signals::Warning;
use cohort_catalog::Tracker;
use nix::sys::signal::{raise, Signal};

/// Runs test `name` again in a child process with `COHORT_SIGNAL_CHILD=1`; returns its exit
/// status and output.
fn in_child(name: &str, env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("COHORT_SIGNAL_CHILD", "1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status, text)
}

fn child() -> bool {
    std::env::var_os("COHORT_SIGNAL_CHILD").is_some()
}

#[test]
fn the_stop_signal_makes_should_stop_true() {
    if !child() {
        let (status, out) = in_child("the_stop_signal_makes_should_stop_true", &[]);
        assert!(status.success(), "{out}");
        assert!(out.contains("stopped after SIGUSR2"), "{out}");
        return;
    }
    let tracker = Tracker::disabled();
    assert!(!tracker.should_stop(1).unwrap(), "no warning yet");
    raise(Signal::SIGUSR2).unwrap();
    assert!(tracker.should_stop(2).unwrap());
    assert_eq!(
        cohort_catalog::signals::received(),
        Some(Warning::StopSignal(Signal::SIGUSR2 as i32))
    );
    assert_eq!(tracker.exit_status(), 75);
    println!("stopped after SIGUSR2");
}

#[test]
fn sigterm_stops_a_worker_that_asks_and_kills_one_that_does_not() {
    let name = "sigterm_stops_a_worker_that_asks_and_kills_one_that_does_not";
    if !child() {
        let (status, out) = in_child(name, &[]);
        assert!(status.success(), "{out}");
        assert!(out.contains("stopped after SIGTERM, exit 143"), "{out}");
        let (status, out) = in_child(name, &[("COHORT_SIGNAL_NEVER_ASK", "1")]);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32), "{out}");
        assert!(!out.contains("still alive"), "{out}");
        return;
    }
    let tracker = Tracker::disabled();
    if std::env::var_os("COHORT_SIGNAL_NEVER_ASK").is_some() {
        raise(Signal::SIGTERM).unwrap();
        std::thread::sleep(std::time::Duration::from_secs(5));
        println!("still alive after SIGTERM");
        return;
    }
    assert!(!tracker.should_stop(1).unwrap());
    // SIGTERM after the stop signal: the more urgent wins.
    raise(Signal::SIGUSR2).unwrap();
    raise(Signal::SIGTERM).unwrap();
    assert!(tracker.should_stop(2).unwrap());
    assert_eq!(
        cohort_catalog::signals::received(),
        Some(Warning::Terminate)
    );
    println!("stopped after SIGTERM, exit {}", tracker.exit_status());
}

#[test]
fn another_stop_signal_can_be_named_and_a_bad_one_is_refused() {
    let name = "another_stop_signal_can_be_named_and_a_bad_one_is_refused";
    if !child() {
        let (status, out) = in_child(name, &[("COHORT_STOP_SIGNAL", "URG")]);
        assert!(status.success(), "{out}");
        assert!(out.contains("stopped after SIGURG"), "{out}");
        let (status, out) = in_child(name, &[("COHORT_STOP_SIGNAL", "SIGNOTHING")]);
        assert!(status.success(), "{out}");
        assert!(
            out.contains("COHORT_STOP_SIGNAL=\"SIGNOTHING\": not a signal")
                && out.contains("will not see Slurm's stop signal"),
            "{out}"
        );
        return;
    }
    let tracker = Tracker::disabled();
    assert!(!tracker.should_stop(1).unwrap());
    if cohort_catalog::signals::stop_signal().is_err() {
        return;
    }
    raise(Signal::SIGURG).unwrap();
    assert!(tracker.should_stop(2).unwrap());
    println!("stopped after SIGURG");
}
