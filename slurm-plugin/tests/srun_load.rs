//! The plugin in the installed Slurm's own srun: it loads, its options show in `srun --help`, a
//! bad `plugstack.conf` argument and a bad option value stop srun with a `cohort:` message. No
//! controller is needed for these. Skipped, with the reason printed, where srun is absent.

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The cdylib cargo built for this test: beside it in `deps/`, or one level up.
fn plugin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let beside = deps.join("libspank_cohort.so");
    if beside.exists() {
        return beside;
    }
    deps.parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
        .join("libspank_cohort.so")
}

fn srun_available() -> bool {
    let found = Command::new("srun").arg("--version").output().is_ok();
    if !found {
        let _ = writeln!(
            std::io::stderr(),
            "skipped: srun is not installed (apt install slurm-client)"
        );
    }
    found
}

/// Runs srun with a private slurm.conf whose plugstack holds `line`.
fn srun(line: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let plugstack = dir.path().join("plugstack.conf");
    std::fs::write(&plugstack, format!("{line}\n")).unwrap();
    let conf = dir.path().join("slurm.conf");
    std::fs::write(
        &conf,
        format!(
            "ClusterName=test\nSlurmctldHost=localhost(127.0.0.1)\nSlurmctldPort=16999\nPlugStackConfig={}\nNodeName=node0 CPUs=1\nPartitionName=debug Nodes=node0 Default=YES\n",
            plugstack.display()
        ),
    )
    .unwrap();
    Command::new("srun")
        .args(args)
        .env("SLURM_CONF", &conf)
        .output()
        .unwrap()
}

#[test]
fn options_show_in_srun_help() {
    if !srun_available() {
        return;
    }
    assert!(plugin().exists(), "{} not built", plugin().display());
    let out = srun(
        &format!("required {} timeout=30", plugin().display()),
        &["--help"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for option in [
        "--cohort ",
        "--cohort-exp=NAME",
        "--cohort-trial=ID",
        "--cohort-bind=all|gpu|none",
    ] {
        assert!(
            text.contains(option),
            "{option} missing from srun --help:\n{text}"
        );
    }
}

#[test]
fn bad_plugstack_arguments_and_option_values_stop_srun() {
    if !srun_available() {
        return;
    }
    let out = srun(
        &format!("required {} tmeout=30", plugin().display()),
        &["--help"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cohort: unknown plugstack argument \"tmeout\""),
        "{err}"
    );

    let out = srun(
        &format!("required {}", plugin().display()),
        &["--cohort-bind=cpu", "-n1", "true"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cohort: --cohort-bind=cpu: use all, gpu or none"),
        "{err}"
    );
}
