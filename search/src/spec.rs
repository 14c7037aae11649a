//! The experiment file (TOML): what to run, on what resources, how to search, over which
//! hyperparameters. Errors name the key and its line.
//!
//! ```toml
//! name = "mlp-lr"
//! description = "learning rate and width"
//! command = ["target/release/mlp", "5"]       # or a shell line: command = "python train.py"
//!                                             # or: sbatch = "train.sbatch"
//!
//! [resources]
//! nodes = 2
//! gpus_per_node = 4
//! job_array = true              # under Slurm: a round's new trials as one job array
//!
//! [searcher]
//! name = "asha"                # single, grid, random, asha
//! metric = "val_loss"
//! smaller_is_better = true
//! max_trials = 64
//! max_concurrent_trials = 8
//! max_length = 1000            # steps (or epochs: the unit the trial reports)
//! divisor = 4
//! max_rungs = 5
//! mode = "standard"            # aggressive, standard, conservative
//! max_restarts = 5
//! seed = 1
//!
//! [hyperparameters]
//! lr = { type = "log", base = 10.0, minval = -4.0, maxval = -1.0 }
//! layers = { type = "int", minval = 1, maxval = 4, count = 4 }
//! dropout = { type = "double", minval = 0.0, maxval = 0.5 }
//! act = { type = "categorical", vals = ["relu", "gelu"] }
//! epochs = { type = "const", val = 5 }
//! [hyperparameters.optimizer]   # a group: its names are optimizer.momentum, ...
//! momentum = { type = "double", minval = 0.8, maxval = 0.99 }
//!
//! [simulation]                  # only for `cohort search simulate` and `cohort bench search`
//! function = "hartmann6"        # hartmann6, hartmann3, branin
//! bias = 0.5
//! noise = 0.1
//! ```

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::functions::Function;

/// Why an experiment file is refused: the file, the line, the key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct SpecError {
    /// The file.
    pub file: String,
    /// 1-based line (0 when not known).
    pub line: usize,
    /// The key, dotted (`searcher.max_rungs`, `hyperparameters.lr.minval`).
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

impl SpecError {
    /// `file:line: key: problem`, leaving out what is not known.
    fn render(&self) -> String {
        let mut text = self.file.clone();
        if self.line > 0 {
            text.push_str(&format!(":{}", self.line));
        }
        if !self.key.is_empty() && self.key != "(file)" {
            text.push_str(&format!(": {}", self.key));
        }
        text.push_str(&format!(": {}", self.problem));
        text
    }
}

pub use crate::space::Hparam;

/// The searcher and its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum SearcherKind {
    /// One trial with each hyperparameter's midpoint (or constant).
    Single,
    /// Every combination.
    Grid,
    /// Independent random samples.
    Random,
    /// Asynchronous successive halving, over Hyperband-style brackets.
    Asha(AshaSettings),
}

/// ASHA's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AshaSettings {
    /// Keep the best 1/divisor of each rung.
    pub divisor: u32,
    /// Rungs of the most aggressive bracket.
    pub max_rungs: u32,
    /// How many brackets.
    pub mode: Mode,
}

/// How early ASHA stops trials: Hyperband's brackets from the most aggressive only
/// (`aggressive`) to all of them (`conservative`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One bracket: every trial starts at the smallest length.
    Aggressive,
    /// About half the brackets.
    Standard,
    /// One bracket per rung count, down to trials that run the full length.
    Conservative,
}

/// The `[searcher]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct SearcherSpec {
    /// Which searcher.
    pub kind: SearcherKind,
    /// The metric the trials report (validation).
    pub metric: String,
    /// Whether a smaller metric is better.
    pub smaller_is_better: bool,
    /// Most trials to create.
    pub max_trials: u64,
    /// Most trials running at once.
    pub max_concurrent_trials: u64,
    /// The full training length, in the unit trials report steps in.
    pub max_length: u64,
    /// How often a failed trial is restarted from its latest checkpoint.
    pub max_restarts: u32,
    /// Seed of the random choices.
    pub seed: u64,
    /// How new trials' hyperparameters are drawn (random and asha).
    pub sampler: Sampler,
}

/// How a searcher draws new trials' hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sampler {
    /// Independently and uniformly (in the exponent for log ranges).
    #[default]
    Random,
    /// From a Tree-structured Parzen Estimator fitted on the results so far (`crate::tpe`),
    /// random until there are enough.
    Tpe,
}

impl Sampler {
    /// The name an experiment file gives it.
    pub fn name(self) -> &'static str {
        match self {
            Sampler::Random => "random",
            Sampler::Tpe => "tpe",
        }
    }
}

/// What each trial runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// A program and its arguments (`cohort run` locally, `srun` under Slurm).
    Command(Vec<String>),
    /// An sbatch script (under Slurm; locally it runs as a shell script).
    Sbatch(PathBuf),
}

/// A parsed experiment file.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentSpec {
    /// The file it came from.
    pub file: PathBuf,
    /// Experiment name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// What a trial runs.
    pub launch: Launch,
    /// Nodes per trial.
    pub nodes: u32,
    /// GPUs per node.
    pub gpus_per_node: u32,
    /// Under Slurm, submit the trials a round starts together as one job array
    /// (`[resources] job_array = true`) rather than a job each.
    pub job_array: bool,
    /// Search settings.
    pub searcher: SearcherSpec,
    /// Hyperparameters by (dotted) name.
    pub hparams: BTreeMap<String, Hparam>,
    /// What `cohort search simulate` runs the searcher against (`[simulation]`).
    pub simulation: SimulationSpec,
}

/// The `[simulation]` table: the benchmark function `cohort search simulate` and `cohort bench
/// search` run the file's searcher against, and its fidelity bias and noise (the command line
/// may override each).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SimulationSpec {
    /// The function (`function = "hartmann6"`, the default, `"hartmann3"` or `"branin"`).
    pub function: Function,
    /// How much low fidelities shift it (`bias`), when the file says.
    pub bias: Option<f64>,
    /// The noise at the lowest fidelity (`noise`), when the file says.
    pub noise: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: Spanned<String>,
    description: Option<String>,
    command: Option<Spanned<toml::Value>>,
    sbatch: Option<Spanned<String>>,
    #[serde(default)]
    resources: Option<Spanned<RawResources>>,
    searcher: Spanned<RawSearcher>,
    #[serde(default)]
    hyperparameters: Option<Spanned<toml::Table>>,
    #[serde(default)]
    simulation: Option<RawSimulation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSimulation {
    function: Option<Spanned<String>>,
    bias: Option<Spanned<f64>>,
    noise: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    nodes: Option<Spanned<i64>>,
    gpus_per_node: Option<Spanned<i64>>,
    job_array: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSearcher {
    name: Spanned<String>,
    metric: Option<Spanned<String>>,
    smaller_is_better: Option<bool>,
    max_trials: Option<Spanned<i64>>,
    max_concurrent_trials: Option<Spanned<i64>>,
    max_length: Option<Spanned<i64>>,
    divisor: Option<Spanned<i64>>,
    max_rungs: Option<Spanned<i64>>,
    mode: Option<Spanned<String>>,
    max_restarts: Option<Spanned<i64>>,
    seed: Option<Spanned<i64>>,
    sampler: Option<Spanned<String>>,
}

/// Largest grid accepted.
pub const MAX_GRID: u64 = 100_000;

struct Ctx<'a> {
    file: String,
    text: &'a str,
}

impl Ctx<'_> {
    fn line(&self, span: &Range<usize>) -> usize {
        self.text[..span.start.min(self.text.len())]
            .bytes()
            .filter(|&b| b == b'\n')
            .count()
            + 1
    }

    fn err(&self, span: Option<&Range<usize>>, key: &str, problem: impl Into<String>) -> SpecError {
        SpecError {
            file: self.file.clone(),
            line: span.map_or(0, |s| self.line(s)),
            key: key.to_owned(),
            problem: problem.into(),
        }
    }

    fn positive(
        &self,
        value: &Option<Spanned<i64>>,
        key: &str,
        default: i64,
    ) -> Result<u64, SpecError> {
        match value {
            None => Ok(default.unsigned_abs()),
            Some(v) if *v.get_ref() >= 1 => Ok(v.get_ref().unsigned_abs()),
            Some(v) => Err(self.err(
                Some(&v.span()),
                key,
                format!("must be at least 1, not {}", v.get_ref()),
            )),
        }
    }
}

/// The line in `text` where `key` (a dotted path's last part) is first set, when it can be found.
fn find_key_line(text: &str, key: &str) -> usize {
    let last = key.rsplit('.').next().unwrap_or(key);
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            line.starts_with(last) && line[last.len()..].trim_start().starts_with('=')
        })
        .map_or(0, |i| i + 1)
}

impl ExperimentSpec {
    /// Reads and checks an experiment file.
    pub fn load(path: &Path) -> Result<ExperimentSpec, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError {
            file: path.display().to_string(),
            line: 0,
            key: "(file)".into(),
            problem: format!("cannot read: {e}"),
        })?;
        ExperimentSpec::parse(path, &text)
    }

    /// Parses `text` (the contents of `path`).
    pub fn parse(path: &Path, text: &str) -> Result<ExperimentSpec, SpecError> {
        let ctx = Ctx {
            file: path.display().to_string(),
            text,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let span = e.span();
            let message = e.message().to_owned();
            // serde names the key in its message ("unknown field `x`", "missing field `y`").
            let key = message
                .split('`')
                .nth(1)
                .map_or_else(|| "(file)".to_owned(), str::to_owned);
            let line = span
                .as_ref()
                .map_or_else(|| find_key_line(text, &key), |s| ctx.line(s));
            SpecError {
                file: ctx.file.clone(),
                line,
                key,
                problem: message,
            }
        })?;
        let name = raw.name.get_ref().trim().to_owned();
        if name.is_empty() {
            return Err(ctx.err(Some(&raw.name.span()), "name", "must not be empty"));
        }
        let launch = match (&raw.command, &raw.sbatch) {
            (Some(command), None) => {
                let bad = |problem: &str| ctx.err(Some(&command.span()), "command", problem);
                match command.get_ref() {
                    // A line as people write it, run by the shell on every node.
                    toml::Value::String(line) if line.trim().is_empty() => {
                        return Err(bad("must name a program"))
                    }
                    toml::Value::String(line) => {
                        Launch::Command(vec!["/bin/sh".into(), "-c".into(), line.clone()])
                    }
                    toml::Value::Array(words) if words.is_empty() => {
                        return Err(bad("must name a program"))
                    }
                    toml::Value::Array(words) => Launch::Command(
                        words
                            .iter()
                            .map(|w| w.as_str().map(str::to_owned))
                            .collect::<Option<Vec<String>>>()
                            .ok_or_else(|| bad("every word of the command must be a string"))?,
                    ),
                    _ => {
                        return Err(bad(
                            "must be a shell line (\"python train.py\") or a list of words ([\"python\", \"train.py\"])",
                        ))
                    }
                }
            }
            (None, Some(script)) => {
                let script_path = PathBuf::from(script.get_ref());
                let script_path = if script_path.is_absolute() {
                    script_path
                } else {
                    path.parent().unwrap_or(Path::new(".")).join(script_path)
                };
                Launch::Sbatch(script_path)
            }
            (Some(command), Some(_)) => {
                return Err(ctx.err(
                    Some(&command.span()),
                    "command",
                    "give either command or sbatch, not both",
                ))
            }
            (None, None) => return Err(ctx.err(
                None,
                "command",
                "give the command to run (command = [...]) or an sbatch script (sbatch = \"...\")",
            )),
        };
        let (nodes, gpus_per_node) = match &raw.resources {
            Some(res) => {
                let res = res.get_ref();
                let nodes = ctx.positive(&res.nodes, "resources.nodes", 1)?;
                let gpus = match &res.gpus_per_node {
                    Some(v) if *v.get_ref() < 0 => {
                        return Err(ctx.err(
                            Some(&v.span()),
                            "resources.gpus_per_node",
                            "must not be negative",
                        ))
                    }
                    Some(v) => v.get_ref().unsigned_abs(),
                    None => 0,
                };
                (
                    u32::try_from(nodes).unwrap_or(u32::MAX),
                    u32::try_from(gpus).unwrap_or(u32::MAX),
                )
            }
            None => (1, 0),
        };
        let job_array = match raw.resources.as_ref().and_then(|r| r.get_ref().job_array.as_ref()) {
            Some(flag) if *flag.get_ref() && matches!(launch, Launch::Sbatch(_)) => {
                return Err(ctx.err(
                    Some(&flag.span()),
                    "resources.job_array",
                    "a job array runs the file's command in each element; an sbatch script cannot be given its element's trial (give command instead)",
                ))
            }
            Some(flag) => *flag.get_ref(),
            None => false,
        };
        let searcher = parse_searcher(&ctx, raw.searcher.get_ref())?;
        let mut hparams = BTreeMap::new();
        if let Some(table) = &raw.hyperparameters {
            parse_hparams(&ctx, table.get_ref(), "", &mut hparams)?;
        }
        let simulation = match &raw.simulation {
            Some(sim) => parse_simulation(&ctx, sim)?,
            None => SimulationSpec::default(),
        };
        let spec = ExperimentSpec {
            file: path.to_path_buf(),
            name,
            description: raw.description,
            launch,
            nodes,
            gpus_per_node,
            job_array,
            searcher,
            hparams,
            simulation,
        };
        if spec.searcher.kind == SearcherKind::Grid {
            let count = crate::space::grid_size(&spec.hparams).map_err(|(key, problem)| {
                ctx.err(None, &format!("hyperparameters.{key}"), problem)
            })?;
            if count > MAX_GRID {
                return Err(SpecError {
                    file: ctx.file.clone(),
                    line: find_key_line(text, "name").max(1),
                    key: "searcher.name".into(),
                    problem: format!(
                        "the grid has {count} points, more than {MAX_GRID}; give fewer values (count) or use random or asha"
                    ),
                });
            }
        }
        Ok(spec)
    }
}

fn parse_simulation(ctx: &Ctx<'_>, raw: &RawSimulation) -> Result<SimulationSpec, SpecError> {
    let function = match &raw.function {
        None => Function::default(),
        Some(name) => Function::from_name(name.get_ref()).ok_or_else(|| {
            let known: Vec<&str> = Function::ALL.iter().map(|f| f.name()).collect();
            ctx.err(
                Some(&name.span()),
                "simulation.function",
                format!(
                    "{:?} is not a benchmark function ({})",
                    name.get_ref(),
                    known.join(", ")
                ),
            )
        })?,
    };
    let non_negative = |value: &Option<Spanned<f64>>, key: &str| match value {
        Some(v) if !(v.get_ref().is_finite() && *v.get_ref() >= 0.0) => Err(ctx.err(
            Some(&v.span()),
            key,
            format!("must be a non-negative number, not {}", v.get_ref()),
        )),
        Some(v) => Ok(Some(*v.get_ref())),
        None => Ok(None),
    };
    Ok(SimulationSpec {
        function,
        bias: non_negative(&raw.bias, "simulation.bias")?,
        noise: non_negative(&raw.noise, "simulation.noise")?,
    })
}

fn parse_searcher(ctx: &Ctx<'_>, raw: &RawSearcher) -> Result<SearcherSpec, SpecError> {
    let name = raw.name.get_ref().as_str();
    let kind = match name {
        "single" => SearcherKind::Single,
        "grid" => SearcherKind::Grid,
        "random" => SearcherKind::Random,
        "asha" => {
            let divisor = ctx.positive(&raw.divisor, "searcher.divisor", 4)?;
            if divisor < 2 {
                let span = raw.divisor.as_ref().map(Spanned::span);
                return Err(ctx.err(span.as_ref(), "searcher.divisor", "must be at least 2"));
            }
            let max_rungs = ctx.positive(&raw.max_rungs, "searcher.max_rungs", 5)?;
            let mode = match raw.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
                None | Some(("standard", _)) => Mode::Standard,
                Some(("aggressive", _)) => Mode::Aggressive,
                Some(("conservative", _)) => Mode::Conservative,
                Some((other, span)) => {
                    return Err(ctx.err(
                        Some(&span),
                        "searcher.mode",
                        format!("{other:?} is not a mode (aggressive, standard, conservative)"),
                    ))
                }
            };
            SearcherKind::Asha(AshaSettings {
                divisor: u32::try_from(divisor).unwrap_or(u32::MAX),
                max_rungs: u32::try_from(max_rungs.min(20)).unwrap_or(20),
                mode,
            })
        }
        other => {
            return Err(ctx.err(
                Some(&raw.name.span()),
                "searcher.name",
                format!("{other:?} is not a searcher (single, grid, random, asha)"),
            ))
        }
    };
    let asha_only = [
        ("divisor", raw.divisor.as_ref().map(Spanned::span)),
        ("max_rungs", raw.max_rungs.as_ref().map(Spanned::span)),
        ("mode", raw.mode.as_ref().map(Spanned::span)),
    ];
    if !matches!(kind, SearcherKind::Asha(_)) {
        if let Some((key, span)) = asha_only.iter().find(|(_, s)| s.is_some()) {
            return Err(ctx.err(
                span.as_ref(),
                &format!("searcher.{key}"),
                format!("only the asha searcher takes {key}"),
            ));
        }
    }
    let sampler = match raw
        .sampler
        .as_ref()
        .map(|s| (s.get_ref().as_str(), s.span()))
    {
        None | Some(("random", _)) => Sampler::Random,
        Some(("tpe", span)) => {
            if !matches!(kind, SearcherKind::Random | SearcherKind::Asha(_)) {
                return Err(ctx.err(
                    Some(&span),
                    "searcher.sampler",
                    format!(
                        "the {name} searcher does not sample: only random and asha take a sampler"
                    ),
                ));
            }
            Sampler::Tpe
        }
        Some((other, span)) => {
            return Err(ctx.err(
                Some(&span),
                "searcher.sampler",
                format!("{other:?} is not a sampler (random, tpe)"),
            ))
        }
    };
    let metric = match &raw.metric {
        Some(m) if !m.get_ref().trim().is_empty() => m.get_ref().trim().to_owned(),
        Some(m) => return Err(ctx.err(Some(&m.span()), "searcher.metric", "must not be empty")),
        None => {
            return Err(ctx.err(
                Some(&raw.name.span()),
                "searcher.metric",
                "missing: the metric the trials report, which the search compares",
            ))
        }
    };
    let max_length = ctx.positive(&raw.max_length, "searcher.max_length", 0)?;
    if max_length == 0 {
        return Err(ctx.err(
            Some(&raw.name.span()),
            "searcher.max_length",
            "missing: the full training length, in the steps the trials report",
        ));
    }
    if let SearcherKind::Asha(settings) = &kind {
        // divisor^(max_rungs - 1): what the first rung's length is divided by (beyond u64, the
        // rung certainly trains for 0 steps).
        let shrink = u64::from(settings.divisor).checked_pow(settings.max_rungs - 1);
        if shrink.is_none_or(|shrink| max_length / shrink == 0) {
            let need = shrink.map_or_else(
                || format!("{}^{}", settings.divisor, settings.max_rungs - 1),
                |shrink| shrink.to_string(),
            );
            let span = raw.max_length.as_ref().map(Spanned::span);
            return Err(ctx.err(
                span.as_ref(),
                "searcher.max_length",
                format!(
                    "{max_length} is too short for {} rungs with divisor {}: the first rung would train for 0 steps (need at least {need})",
                    settings.max_rungs,
                    settings.divisor,
                ),
            ));
        }
    }
    let max_trials = ctx.positive(&raw.max_trials, "searcher.max_trials", 16)?;
    let max_concurrent_trials = ctx.positive(
        &raw.max_concurrent_trials,
        "searcher.max_concurrent_trials",
        4,
    )?;
    let max_restarts = match &raw.max_restarts {
        Some(v) if *v.get_ref() < 0 => {
            return Err(ctx.err(
                Some(&v.span()),
                "searcher.max_restarts",
                "must not be negative",
            ))
        }
        Some(v) => u32::try_from(*v.get_ref()).unwrap_or(u32::MAX),
        None => 5,
    };
    let seed = raw.seed.as_ref().map_or(0, |s| s.get_ref().unsigned_abs());
    Ok(SearcherSpec {
        kind,
        metric,
        smaller_is_better: raw.smaller_is_better.unwrap_or(true),
        max_trials,
        max_concurrent_trials,
        max_length,
        max_restarts,
        seed,
        sampler,
    })
}

fn as_f64(value: &toml::Value) -> Option<f64> {
    match value {
        toml::Value::Float(f) => Some(*f),
        #[allow(clippy::cast_precision_loss)]
        toml::Value::Integer(i) => Some(*i as f64),
        _ => None,
    }
}

fn to_json(value: &toml::Value) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

fn parse_hparams(
    ctx: &Ctx<'_>,
    table: &toml::Table,
    prefix: &str,
    out: &mut BTreeMap<String, Hparam>,
) -> Result<(), SpecError> {
    for (name, value) in table {
        let full = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let key = format!("hyperparameters.{full}");
        // Inline tables put every key on the hyperparameter's line; a sub-table has a header.
        let header = format!("[hyperparameters.{full}]");
        let own_line = ctx
            .text
            .lines()
            .position(|l| l.trim() == header)
            .map_or_else(|| find_key_line(ctx.text, name), |i| i + 1);
        let line_of = |_: &str| own_line;
        let err = |k: &str, problem: String| SpecError {
            file: ctx.file.clone(),
            line: line_of(k),
            key: if k == name {
                key.clone()
            } else {
                format!("{key}.{k}")
            },
            problem,
        };
        let toml::Value::Table(spec) = value else {
            return Err(err(name, "must be a table like { type = \"double\", minval = 0.0, maxval = 1.0 } or a group of them".into()));
        };
        let Some(kind) = spec.get("type") else {
            // A group.
            parse_hparams(ctx, spec, &full, out)?;
            continue;
        };
        let kind = kind.as_str().unwrap_or("");
        let allowed: &[&str] = match kind {
            "const" => &["type", "val"],
            "int" | "double" => &["type", "minval", "maxval", "count"],
            "log" => &["type", "base", "minval", "maxval", "count"],
            "categorical" => &["type", "vals"],
            other => {
                return Err(err(
                    "type",
                    format!("{other:?} is not a type (const, int, double, log, categorical)"),
                ))
            }
        };
        if let Some(unknown) = spec.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(err(
                unknown,
                format!(
                    "unknown key for a {kind} hyperparameter (known: {})",
                    allowed.join(", ")
                ),
            ));
        }
        let count = match spec.get("count") {
            None => None,
            Some(toml::Value::Integer(n)) if *n >= 1 => Some(u32::try_from(*n).unwrap_or(u32::MAX)),
            Some(other) => {
                return Err(err(
                    "count",
                    format!("must be a whole number of at least 1, not {other}"),
                ))
            }
        };
        let number = |k: &str| -> Result<f64, SpecError> {
            match spec.get(k) {
                None => Err(err(name, format!("missing {k}"))),
                Some(v) => as_f64(v)
                    .filter(|f| f.is_finite())
                    .ok_or_else(|| err(k, format!("must be a number, not {v}"))),
            }
        };
        let hparam = match kind {
            "const" => Hparam::Const(to_json(
                spec.get("val")
                    .ok_or_else(|| err(name, "missing val".into()))?,
            )),
            "int" => {
                let int = |k: &str| -> Result<i64, SpecError> {
                    match spec.get(k) {
                        Some(toml::Value::Integer(i)) => Ok(*i),
                        Some(other) => Err(err(k, format!("must be an integer, not {other}"))),
                        None => Err(err(name, format!("missing {k}"))),
                    }
                };
                let (min, max) = (int("minval")?, int("maxval")?);
                if min > max {
                    return Err(err(
                        "minval",
                        format!("minval {min} is greater than maxval {max}"),
                    ));
                }
                Hparam::Int { min, max, count }
            }
            "double" | "log" => {
                let (min, max) = (number("minval")?, number("maxval")?);
                if min > max {
                    return Err(err(
                        "minval",
                        format!("minval {min} is greater than maxval {max}"),
                    ));
                }
                if kind == "double" {
                    Hparam::Double { min, max, count }
                } else {
                    let base = match spec.get("base") {
                        None => 10.0,
                        Some(_) => number("base")?,
                    };
                    if base <= 0.0 || (base - 1.0).abs() < f64::EPSILON {
                        return Err(err(
                            "base",
                            format!("must be positive and not 1, not {base}"),
                        ));
                    }
                    Hparam::Log {
                        base,
                        min,
                        max,
                        count,
                    }
                }
            }
            _ => {
                let vals = match spec.get("vals") {
                    Some(toml::Value::Array(vals)) if !vals.is_empty() => {
                        vals.iter().map(to_json).collect()
                    }
                    Some(toml::Value::Array(_)) => {
                        return Err(err("vals", "is empty: give at least one value".into()))
                    }
                    Some(other) => return Err(err("vals", format!("must be a list, not {other}"))),
                    None => return Err(err(name, "missing vals".into())),
                };
                Hparam::Categorical(vals)
            }
        };
        out.insert(full, hparam);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "mlp"
command = ["train", "--fast"]
[resources]
nodes = 2
gpus_per_node = 4
[searcher]
name = "asha"
metric = "val_loss"
max_trials = 32
max_length = 256
max_rungs = 4
[hyperparameters]
lr = { type = "log", minval = -4, maxval = -1 }
layers = { type = "int", minval = 1, maxval = 4 }
act = { type = "categorical", vals = ["relu", "gelu"] }
epochs = { type = "const", val = 5 }
[hyperparameters.opt]
momentum = { type = "double", minval = 0.8, maxval = 0.99 }
"#;

    fn parse(text: &str) -> Result<ExperimentSpec, SpecError> {
        ExperimentSpec::parse(Path::new("exp.toml"), text)
    }

    #[test]
    fn a_full_file_parses() {
        let spec = parse(GOOD).unwrap();
        assert_eq!(spec.name, "mlp");
        assert_eq!((spec.nodes, spec.gpus_per_node), (2, 4));
        assert_eq!(spec.searcher.max_trials, 32);
        assert!(
            matches!(&spec.searcher.kind, SearcherKind::Asha(a) if a.divisor == 4 && a.max_rungs == 4 && a.mode == Mode::Standard)
        );
        assert_eq!(spec.hparams.len(), 5);
        assert!(matches!(
            spec.hparams["opt.momentum"],
            Hparam::Double { .. }
        ));
        assert!(matches!(spec.hparams["lr"], Hparam::Log { base, .. } if base == 10.0));
    }

    fn error(text: &str) -> SpecError {
        parse(text).unwrap_err()
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let e = error(&GOOD.replace("max_rungs = 4", "max_rungs = 4\nmax_rung = 3"));
        assert_eq!((e.key.as_str(), e.line), ("max_rung", 13), "{e}");
        assert!(e.problem.contains("unknown field"), "{e}");
        let e = error(&GOOD.replace("max_trials = 32", "max_trials = \"many\""));
        assert_eq!(e.line, 10, "{e}");
        assert!(e.to_string().starts_with("exp.toml:10:"), "{e}");
        let e = error(&GOOD.replace("minval = 1, maxval = 4", "minval = 5, maxval = 4"));
        assert_eq!(
            (e.key.as_str(), e.line),
            ("hyperparameters.layers.minval", 15),
            "{e}"
        );
        assert!(e.problem.contains("greater than maxval"), "{e}");
        let e = error(&GOOD.replace("vals = [\"relu\", \"gelu\"]", "vals = []"));
        assert_eq!(e.key, "hyperparameters.act.vals", "{e}");
        let e = error(&GOOD.replace("\"log\"", "\"logarithmic\""));
        assert!(e.problem.contains("not a type"), "{e}");
        let e = error(&GOOD.replace("max_length = 256", "max_length = 16"));
        assert!(e.problem.contains("too short"), "{e}");
        let e = error(&GOOD.replace("metric = \"val_loss\"\n", ""));
        assert_eq!(e.key, "searcher.metric", "{e}");
        let e = error(&GOOD.replace("name = \"asha\"", "name = \"grid\""));
        assert!(
            e.problem.contains("only the asha searcher takes max_rungs"),
            "{e}"
        );
        let e = error(&GOOD.replace(
            "lr = { type = \"log\", minval = -4, maxval = -1 }",
            "lr = { type = \"log\", minval = -4, maxval = -1, step = 1 }",
        ));
        assert_eq!(e.key, "hyperparameters.lr.step", "{e}");
    }

    #[test]
    fn the_sampler_is_random_unless_asked_and_only_random_and_asha_take_one() {
        assert_eq!(parse(GOOD).unwrap().searcher.sampler, Sampler::Random);
        let tpe = GOOD.replace("max_rungs = 4", "max_rungs = 4\nsampler = \"tpe\"");
        assert_eq!(parse(&tpe).unwrap().searcher.sampler, Sampler::Tpe);
        let random = tpe
            .replace("name = \"asha\"", "name = \"random\"")
            .replace("max_rungs = 4\n", "");
        let spec = parse(&random).unwrap();
        assert_eq!(
            (&spec.searcher.kind, spec.searcher.sampler),
            (&SearcherKind::Random, Sampler::Tpe)
        );
        let e = error(&random.replace("name = \"random\"", "name = \"grid\""));
        assert_eq!((e.key.as_str(), e.line), ("searcher.sampler", 12), "{e}");
        assert!(
            e.problem.contains("the grid searcher does not sample"),
            "{e}"
        );
        let e = error(&tpe.replace("\"tpe\"", "\"bayes\""));
        assert_eq!(e.key, "searcher.sampler", "{e}");
        assert!(e.problem.contains("not a sampler (random, tpe)"), "{e}");
    }

    #[test]
    fn the_simulation_table_names_a_known_function_and_non_negative_settings() {
        assert_eq!(parse(GOOD).unwrap().simulation, SimulationSpec::default());
        assert_eq!(SimulationSpec::default().function, Function::Hartmann6);
        let text = format!("{GOOD}[simulation]\nfunction = \"branin\"\nnoise = 0.5\n");
        let sim = parse(&text).unwrap().simulation;
        assert_eq!(
            (sim.function, sim.bias, sim.noise),
            (Function::Branin, None, Some(0.5))
        );
        let e = error(&format!("{GOOD}[simulation]\nfunction = \"levy\"\n"));
        assert_eq!((e.key.as_str(), e.line), ("simulation.function", 21), "{e}");
        assert!(
            e.problem
                .contains("\"levy\" is not a benchmark function (hartmann6, hartmann3, branin)"),
            "{e}"
        );
        let e = error(&format!("{GOOD}[simulation]\nbias = -1.0\n"));
        assert_eq!((e.key.as_str(), e.line), ("simulation.bias", 21), "{e}");
        let e = error(&format!("{GOOD}[simulation]\nnoisy = 1.0\n"));
        assert!(e.problem.contains("unknown field"), "{e}");
    }

    #[test]
    fn job_arrays_are_asked_for_in_resources_and_need_a_command() {
        assert!(!parse(GOOD).unwrap().job_array);
        let text = GOOD.replace("gpus_per_node = 4", "gpus_per_node = 4\njob_array = true");
        assert!(parse(&text).unwrap().job_array);
        let script = text.replace(
            "command = [\"train\", \"--fast\"]",
            "sbatch = \"train.sbatch\"",
        );
        let e = error(&script);
        assert_eq!((e.key.as_str(), e.line), ("resources.job_array", 7), "{e}");
        assert!(e.problem.contains("give command instead"), "{e}");
    }

    #[test]
    fn a_grid_too_large_prints_its_count() {
        let mut text = GOOD
            .replace("name = \"asha\"", "name = \"grid\"")
            .replace("max_rungs = 4\n", "");
        text = text.replace(
            "minval = -4, maxval = -1 }",
            "minval = -4, maxval = -1, count = 100 }",
        );
        text = text.replace("maxval = 4 }", "maxval = 4, count = 4 }");
        text = text.replace("maxval = 0.99 }", "maxval = 0.99, count = 1000 }");
        let e = error(&text);
        assert!(e.problem.contains("800000 points"), "{e}");
        let e = error(
            &GOOD
                .replace("name = \"asha\"", "name = \"grid\"")
                .replace("max_rungs = 4\n", ""),
        );
        assert!(e.problem.contains("count"), "{e}");
    }

    #[test]
    fn a_command_is_a_list_of_words_or_a_shell_line() {
        let spec = parse(GOOD).unwrap();
        assert!(matches!(&spec.launch, Launch::Command(w) if w == &["train", "--fast"]));
        let line = GOOD.replace(
            "command = [\"train\", \"--fast\"]",
            "command = \"python train.py --epochs 10\"",
        );
        let spec = parse(&line).unwrap();
        assert!(
            matches!(&spec.launch, Launch::Command(w) if w == &["/bin/sh", "-c", "python train.py --epochs 10"]),
            "{:?}",
            spec.launch
        );
        for (bad, problem) in [
            ("command = \"  \"", "must name a program"),
            ("command = []", "must name a program"),
            ("command = [\"train\", 5]", "must be a string"),
            ("command = 5", "a shell line"),
        ] {
            let e = error(&GOOD.replace("command = [\"train\", \"--fast\"]", bad));
            assert_eq!((e.key.as_str(), e.line), ("command", 3), "{e}");
            assert!(e.problem.contains(problem), "{bad}: {e}");
        }
    }
}
