//! cohortd: the per-node daemon; everything it does is in the library (`cohort_daemon::main`).

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    cohort_daemon::main()
}
