//! Property tests of the two XML importers: whatever bytes a topology file holds (truncated,
//! corrupted, attribute values swapped for nonsense), loading returns a model or an error that
//! names the file, and never panics. Seeds are the project's own fixtures; nothing is kept on
//! disk between runs.

// Integration test binaries are test-only crates; the lint is for unit tests in library code.
#![allow(clippy::tests_outside_test_module)]

use cohort_topology::Topology;
use proptest::prelude::*;

const SEEDS: [&str; 2] = [
    include_str!("../test_data/1s-2gpu-rails-roce.hwloc.xml"),
    include_str!("../test_data/hgx-2s-8gpu-8nic.nccl.xml"),
];

/// Values that have broken parsers before: empty, huge, negative, non-hex, odd separators.
const NASTY: [&str; 14] = [
    "",
    "-1",
    "0x",
    "zz",
    "99999999999999999999",
    "0xffffffffffffffff",
    "ffff:ff:ff.f",
    "0000:00:00.9",
    ",,,,",
    "0x1,,0x2",
    "1.5e308",
    "NaN",
    "&amp;&lt;",
    "\u{00e9}\u{4e2d}",
];

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(prop::sample::Index),
    Delete(prop::sample::Index, usize),
    Insert(prop::sample::Index, String),
    Attribute(prop::sample::Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (any::<prop::sample::Index>(), 1usize..40).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<prop::sample::Index>(), "[<>/=\"&a-z0-9 ]{1,8}")
            .prop_map(|(at, text)| Mutation::Insert(at, text)),
        (any::<prop::sample::Index>(), 0..NASTY.len())
            .prop_map(|(at, nasty)| Mutation::Attribute(at, nasty)),
    ]
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let boundary = |at: &prop::sample::Index| {
        let mut pos = at.index(text.len() + 1);
        while !text.is_char_boundary(pos) {
            pos -= 1;
        }
        pos
    };
    match mutation {
        Mutation::Truncate(at) => text[..boundary(at)].to_owned(),
        Mutation::Delete(at, n) => {
            let start = boundary(at);
            let mut end = (start + n).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            format!("{}{}", &text[..start], &text[end..])
        }
        Mutation::Insert(at, insert) => {
            let pos = boundary(at);
            format!("{}{insert}{}", &text[..pos], &text[pos..])
        }
        Mutation::Attribute(at, nasty) => {
            // Replace the value of one attribute (the n-th `="..."`).
            let values: Vec<(usize, usize)> = text
                .match_indices("=\"")
                .filter_map(|(start, _)| {
                    let value_start = start + 2;
                    text[value_start..]
                        .find('"')
                        .map(|len| (value_start, value_start + len))
                })
                .collect();
            if values.is_empty() {
                return text.to_owned();
            }
            let (start, end) = values[at.index(values.len())];
            format!("{}{}{}", &text[..start], NASTY[*nasty], &text[end..])
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn importers_return_a_model_or_an_error_never_a_panic(
        seed in 0..SEEDS.len(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut text = SEEDS[seed].to_owned();
        for mutation in &mutations {
            text = apply(&text, mutation);
        }
        match Topology::from_xml_str(&text, "fuzzed.xml") {
            Ok(topo) => {
                // Whatever loaded must plan, render and serialise.
                let assignment = topo.assign_nics(None).unwrap();
                let _ = topo.render_matrix();
                let _ = topo.to_doc(&assignment).to_json_pretty();
                let _ = topo.doctor();
                let _ = cohort_topology::to_nccl_xml(&topo);
            }
            Err(err) => {
                let message = err.to_string();
                prop_assert!(message.starts_with("fuzzed.xml"), "{message}");
            }
        }
    }
}
