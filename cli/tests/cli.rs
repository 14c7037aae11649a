//! The `cohort` binary as a user runs it: output, exit codes (0 ok, 1 problems found, 2 error)
//! and the one-line errors for bad input.

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cohort_proto::topology::TopologyDoc;

fn cohort(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args(args)
        .output()
        .expect("cohort runs")
}

fn test_data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../topology/test_data")
        .join(name)
        .display()
        .to_string()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes `content` to a file in a fresh temporary directory.
fn temp_file(name: &str, content: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, content).unwrap();
    (dir, path)
}

/// Runs `cohort topo --from FILE` and checks the error: exit 2, one line, `cohort: ` then the
/// file name, and the given words.
fn assert_bad_file(path: &str, words: &[&str]) {
    let out = cohort(&["topo", "--from", path]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("cohort: {path}")), "{err}");
    for word in words {
        assert!(err.contains(word), "{err:?} lacks {word:?}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn topo_prints_matrix_legend_and_assignment() {
    let out = cohort(&["topo", "--from", &test_data("1s-2gpu-rails-roce.hwloc.xml")]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.starts_with("Node rails-node: 1 NUMA node(s), 2 GPU(s), 3 RDMA NIC(s)"));
    assert!(text.contains("hwloc-xml  used"));
    assert!(text.contains("CPU Affinity  NUMA Affinity"));
    assert!(text.contains("  NIC2: mlx5_2 (roce, 0000:42:00.0)"));
    assert!(text.contains("  GPU0   mlx5_0,mlx5_1        PIX  (2 rails)"));
    assert!(text.contains("  GPU1   mlx5_2               PHB"));
}

#[test]
fn topo_on_this_machine_says_what_it_found() {
    let out = cohort(&["topo"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("hwloc-live used"), "{text}");
    assert!(text.contains("nvml"), "{text}");
    let doctor = cohort(&["topo", "doctor"]);
    assert!(
        matches!(doctor.status.code(), Some(0 | 1)),
        "{}",
        stderr(&doctor)
    );
}

#[test]
fn json_is_the_versioned_document() {
    let out = cohort(&[
        "topo",
        "--json",
        "--from",
        &test_data("hgx-2s-8gpu-8nic.nccl.xml"),
        "--gpus",
        "0,5",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let doc = TopologyDoc::from_json(&out.stdout).unwrap();
    assert_eq!(doc.version, 1);
    assert_eq!(doc.gpus.len(), 8);
    assert_eq!(doc.assignment.len(), 2);
    assert_eq!(doc.assignment[1].gpu, 5);
    assert_eq!(doc.assignment[1].nics, ["mlx5_4", "mlx5_5"]);
    assert_eq!(doc.paths.classes[0][1], "NV12");
    assert_eq!(doc.sources[0].kind, "nccl-xml");
}

#[test]
fn exported_nccl_file_loads_back_with_the_same_assignment() {
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("topo.xml");
    let export = export.to_str().unwrap();
    // (From an hwloc file the classes survive too, except that NCCL's format has no host
    // bridges, so NODE reads back as PHB; the topology crate's tests check that.)
    let from = test_data("hgx-2s-8gpu-8nic.nccl.xml");
    let out = cohort(&[
        "topo",
        "--from",
        &from,
        "--export-nccl",
        export,
        "--gpus",
        "0,3",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("NCCL topology written to"));
    let again = cohort(&["topo", "--from", export, "--gpus", "0,3"]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    let assignment = |text: String| text[text.find("GPU -> NIC").unwrap()..].to_owned();
    assert_eq!(
        assignment(stdout(&again)),
        assignment(stdout(&out)).replace(
            &format!("\nNCCL topology written to {export} (use it as NCCL_TOPO_FILE)\n"),
            "",
        )
    );
}

#[test]
fn doctor_exits_1_and_explains_each_problem() {
    let out = cohort(&[
        "topo",
        "doctor",
        "--from",
        &test_data("1s-2gpu-rails-roce.hwloc.xml"),
        "--sysfs-root",
        &test_data("sysfs/rails-node"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("2 problem(s) found"), "{text}");
    assert!(text.contains("mlx5_2: port 1 is down"), "{text}");
    assert!(text.contains("subnet manager"), "{text}");
    let clean = cohort(&[
        "topo",
        "doctor",
        "--from",
        &test_data("hgx-2s-8gpu-8nic.nccl.xml"),
    ]);
    assert_eq!(clean.status.code(), Some(0));
    assert!(stdout(&clean).contains("No problem found."));
}

#[test]
fn missing_and_unreadable_files_are_named() {
    assert_bad_file("/nonexistent/topo.xml", &["cannot read", "No such file"]);
    let dir = tempfile::tempdir().unwrap();
    assert_bad_file(dir.path().to_str().unwrap(), &["cannot read"]);
}

#[test]
fn empty_binary_and_malformed_files_are_refused_with_their_line() {
    let (_d1, empty) = temp_file("empty.xml", b"  \n");
    assert_bad_file(empty.to_str().unwrap(), &["empty file"]);
    let (_d2, binary) = temp_file("binary.xml", &[0x3c, 0xff, 0xfe, 0x00]);
    assert_bad_file(binary.to_str().unwrap(), &["not a text file"]);
    let seed = std::fs::read_to_string(test_data("1s-2gpu-rails-roce.hwloc.xml")).unwrap();
    let (_d3, truncated) = temp_file("truncated.xml", &seed.as_bytes()[..seed.len() / 2]);
    let path = truncated.to_str().unwrap();
    let out = cohort(&["topo", "--from", path]);
    assert!(
        stderr(&out).starts_with(&format!("cohort: {path}:")),
        "{}",
        stderr(&out)
    );
    assert_bad_file(path, &["malformed XML"]);
    let (_d4, mismatched) = temp_file(
        "mismatched.xml",
        b"<system>\n  <cpu numaid=\"0\">\n</system>\n",
    );
    assert_bad_file(mismatched.to_str().unwrap(), &[":3:", "malformed XML"]);
}

#[test]
fn xml_that_is_neither_format_is_refused() {
    let (_d, other) = temp_file(
        "pom.xml",
        b"<project><modelVersion>4.0.0</modelVersion></project>",
    );
    assert_bad_file(
        other.to_str().unwrap(),
        &["neither an hwloc nor an NCCL topology file", "<project>"],
    );
    let (_d2, v3) = temp_file(
        "v3.xml",
        b"<topology version=\"3.0\"><object type=\"Machine\"/></topology>",
    );
    assert_bad_file(
        v3.to_str().unwrap(),
        &["hwloc XML version 3.0 is not supported"],
    );
}

#[test]
fn nccl_files_with_bad_values_name_the_line() {
    let (_d, bad) = temp_file(
        "bad.xml",
        b"<system version=\"1\">\n  <cpu numaid=\"0\">\n    <pci busid=\"00:zz\" class=\"0x030200\"/>\n  </cpu>\n</system>\n",
    );
    assert_bad_file(bad.to_str().unwrap(), &[":3:", "busid", "not a PCI bus id"]);
    let (_d2, numa) = temp_file("numa.xml", b"<system>\n<cpu affinity=\"ff\"/>\n</system>");
    assert_bad_file(numa.to_str().unwrap(), &[":2:", "numaid"]);
}

/// hwloc 2.9 crashes on these (found by the property tests); they must be refused first.
#[test]
fn hwloc_files_missing_complete_sets_are_refused_not_crashed_on() {
    let seed = std::fs::read_to_string(test_data("1s-2gpu-rails-roce.hwloc.xml")).unwrap();
    let root = seed.replacen(" complete_nodeset=\"0x00000001\"", "", 1);
    let (_d, path) = temp_file("root.xml", root.as_bytes());
    assert_bad_file(path.to_str().unwrap(), &[":9:", "complete_nodeset"]);
    let pu = seed.replace(" complete_cpuset=\"0x00000004\"", "");
    let (_d2, path) = temp_file("pu.xml", pu.as_bytes());
    assert_bad_file(path.to_str().unwrap(), &[":17:", "complete_cpuset"]);
}

#[test]
fn bad_gpu_lists_are_errors() {
    let from = test_data("hgx-2s-8gpu-8nic.nccl.xml");
    let out = cohort(&["topo", "--from", &from, "--gpus", "9"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "cohort: --gpus: GPU 9 does not exist (this node has GPUs 0-7)\n"
    );
    let out = cohort(&["topo", "--from", &from, "--gpus", "1,x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("\"x\" is not a GPU index or range"));
    let out = cohort(&["topo", "--from", &from, "--gpus", "3-1"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_cohort"))
        .args([
            "topo",
            "--json",
            "--from",
            &test_data("hgx-2s-8gpu-8nic.nccl.xml"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 1];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // stdout is now closed; the rest of the document cannot be written.
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn bench_topo_reports_median_min_max() {
    let out = cohort(&[
        "bench",
        "topo",
        "--runs",
        "3",
        "--from",
        &test_data("hgx-2s-8gpu-8nic.nccl.xml"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("3 runs, median "), "{text}");
    assert!(
        text.contains(" ms, min ") && text.contains(" ms, max "),
        "{text}"
    );
}

#[test]
fn completions_and_man_pages_come_from_the_same_definitions_as_help() {
    let bash = cohort(&["generate", "completions", "bash"]);
    assert_eq!(bash.status.code(), Some(0));
    let script = stdout(&bash);
    assert!(
        script.contains("_cohort()") && script.contains("trials"),
        "{script}"
    );
    let zsh = stdout(&cohort(&["generate", "completions", "zsh"]));
    assert!(zsh.starts_with("#compdef cohort"), "{zsh}");
    let dir = tempfile::tempdir().unwrap();
    let out = cohort(&["generate", "man", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = std::fs::read_to_string(dir.path().join("cohort-trials.1")).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH cohort-trials 1"),
        "{page}"
    );
    assert!(page.contains("\\-\\-sort"), "{page}");
    assert!(dir.path().join("cohort.1").exists());
    let err = cohort(&["generate", "completions", "tcsh"]);
    assert_eq!(err.status.code(), Some(2));
}
