//! Workspace rules checked on every test run: each Rust file opens with a `//!` paragraph;
//! `unsafe` appears only in the modules allowed to wrap FFI (hwloc and NVML are reached through
//! safe binding crates), every crate root denies unsafe code and only those modules allow it,
//! and every unsafe block has a `SAFETY:` comment; no placeholder macros remain; and
//! ARCHITECTURE.md stays true: every source file is on its code map, and the crate graph it
//! draws is the one the manifests declare.

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

use std::path::{Path, PathBuf};

/// Files allowed to contain `unsafe`: the FFI wrappers of verbs, SPANK and libtorch, the shared
/// memory rings, and the taking of the store's socket that the SPANK plugin hands down.
const UNSAFE_ALLOWED: &[&str] = &[
    "collectives/src/inherit.rs",
    "collectives/src/link/rdma.rs",
    "collectives/src/link/shm.rs",
    "collectives/src/torch.rs",
    "python/src/tensor.rs",
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

/// Whether a line's code (comments aside) uses the keyword.
fn code_uses_unsafe(line: &str) -> bool {
    let needle = ["un", "safe"].concat();
    let code = line.split("//").next().unwrap_or("");
    code.split(|c: char| !c.is_alphanumeric() && c != '_')
        .any(|word| word == needle)
}

#[test]
fn unsafe_code_only_in_the_ffi_modules() {
    let mut seen = 0;
    for (path, text) in workspace_files() {
        if path.ends_with("tidy.rs") || path.starts_with("fuzz/") {
            continue;
        }
        if !text.lines().any(code_uses_unsafe) {
            continue;
        }
        seen += 1;
        assert!(
            UNSAFE_ALLOWED.contains(&path.as_str()),
            "{path} uses unsafe code outside the FFI modules"
        );
    }
    assert!(seen >= 3, "found unsafe code in only {seen} files");
}

#[test]
fn every_unsafe_block_says_why_it_is_sound() {
    let block = [["un", "safe {"].concat(), ["un", "safe impl"].concat()];
    let mut blocks = 0;
    for (path, text) in workspace_files() {
        if path.ends_with("tidy.rs") {
            continue;
        }
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if !block.iter().any(|b| code.contains(b.as_str())) {
                continue;
            }
            blocks += 1;
            // The comment sits on the lines just above (a multi-line comment may end there),
            // possibly above the statement that the block is part of.
            let justified = lines[i.saturating_sub(8)..=i]
                .iter()
                .any(|l| l.contains("SAFETY:"));
            assert!(
                justified,
                "{path}:{}: an unsafe block without a SAFETY: comment",
                i + 1
            );
        }
    }
    assert!(blocks >= 10, "found only {blocks} unsafe blocks");
}

#[test]
fn every_crate_root_denies_unsafe_code_and_only_ffi_modules_allow_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let roots = [
        "proto/src/lib.rs",
        "topology/src/lib.rs",
        "collectives/src/lib.rs",
        "catalog/src/lib.rs",
        "search/src/lib.rs",
        "daemon/src/lib.rs",
        "daemon/src/main.rs",
        "slurm-plugin/src/lib.rs",
        "cli/src/main.rs",
        "examples/src/bin/mlp.rs",
    ];
    for file in roots {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(
            text.contains("#![deny(unsafe_code)]") || text.contains("#![forbid(unsafe_code)]"),
            "{file} does not deny unsafe code"
        );
    }
    for (path, text) in workspace_files() {
        if path.ends_with("tidy.rs") {
            continue;
        }
        if text.contains("allow(unsafe_code)") {
            assert!(
                UNSAFE_ALLOWED.contains(&path.as_str()),
                "{path} allows unsafe code but is not an FFI module"
            );
        }
    }
}

/// ARCHITECTURE.md's section of each crate (`### `crate/``), by crate directory.
fn architecture_sections() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let mut sections = Vec::new();
    for part in text.split("\n### `").skip(1) {
        let (name, body) = part.split_once('`').unwrap_or((part, ""));
        let body = body.split("\n## ").next().unwrap_or("");
        sections.push((name.trim_end_matches('/').to_owned(), body.to_owned()));
    }
    sections
}

#[test]
fn every_source_file_is_on_the_code_map() {
    let sections = architecture_sections();
    let mut missing = Vec::new();
    let mut checked = 0;
    for (path, _) in workspace_files() {
        let Some((krate, rest)) = path.split_once("/src/") else {
            continue;
        };
        let Some((_, section)) = sections.iter().find(|(name, _)| name == krate) else {
            missing.push(format!("{path} (no section for {krate}/)"));
            continue;
        };
        checked += 1;
        let name = rest.rsplit('/').next().unwrap_or(rest);
        // A file is named by its path below src/ or, in its folder's entry, by its name;
        // `mod.rs` by its folder.
        let folder = rest
            .rsplit_once('/')
            .map(|(folder, _)| format!("{folder}/"));
        let named = section.contains(&format!("`{rest}`"))
            || section.contains(&format!("`{name}`"))
            || (name == "mod.rs" && folder.is_some_and(|f| section.contains(&format!("`{f}`"))));
        if !named {
            missing.push(path.clone());
        }
    }
    assert!(checked > 40, "checked only {checked} files");
    assert!(
        missing.is_empty(),
        "not on ARCHITECTURE.md's code map: {missing:#?}"
    );
}

#[test]
fn the_crate_graph_is_the_one_architecture_md_draws() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap();
    let diagram = text
        .split("```")
        .nth(1)
        .expect("ARCHITECTURE.md has no crate diagram");
    let mut drawn = std::collections::BTreeMap::new();
    for line in diagram.lines() {
        let Some((krate, rest)) = line.split_once(" -> ") else {
            continue;
        };
        let krate = krate.trim().trim_end_matches('/').to_owned();
        let deps: std::collections::BTreeSet<String> = rest
            .split("  ")
            .next()
            .unwrap_or("")
            .split(',')
            .map(|d| d.split_whitespace().next().unwrap_or("").to_owned())
            .filter(|d| !d.is_empty())
            .collect();
        drawn.insert(krate, deps);
    }
    for krate in [
        "proto",
        "topology",
        "collectives",
        "catalog",
        "search",
        "daemon",
        "slurm-plugin",
        "cli",
        "examples",
        "fuzz",
    ] {
        let manifest = std::fs::read_to_string(root.join(krate).join("Cargo.toml")).unwrap();
        let section = manifest
            .split("\n[dependencies]")
            .nth(1)
            .map(|s| s.split("\n[").next().unwrap_or(""))
            .unwrap_or("");
        let declared: std::collections::BTreeSet<String> = section
            .lines()
            .filter_map(|line| line.trim().strip_prefix("cohort-"))
            .map(|rest| rest.split(['.', ' ', '=']).next().unwrap_or("").to_owned())
            .collect();
        let empty = std::collections::BTreeSet::new();
        let shown = drawn.get(krate).unwrap_or(&empty);
        assert_eq!(
            &declared, shown,
            "{krate}: Cargo.toml depends on {declared:?}, ARCHITECTURE.md draws {shown:?}"
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
