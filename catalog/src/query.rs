//! Selecting and ordering trials: fields (`val_loss`, `val_loss:min`, `lr`, `state`),
//! filters (`lr<0.01`, `state=completed`) and sorting with missing values last.

use std::cmp::Ordering;

use cohort_proto::catalog::TrialSummary;

use crate::error::CatalogError;
use crate::read::shown_state;

/// Which summary of a metric a field means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    /// The value at the highest step.
    Last,
    /// The smallest.
    Min,
    /// The largest.
    Max,
    /// The number of points.
    Count,
    /// The highest step.
    Step,
}

/// Something a trial can be filtered or sorted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// Trial number.
    Id,
    /// Its state.
    State,
    /// A hyperparameter.
    Hparam(String),
    /// A metric summary.
    Metric(String, Agg),
}

/// A field's value in one trial.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number.
    Num(f64),
    /// Text (states, string hyperparameters).
    Text(String),
    /// The trial has no such value.
    Missing,
}

impl Value {
    fn cmp_present(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Num(a), Value::Num(b)) => a.total_cmp(b),
            (Value::Text(a), Value::Text(b)) => a.cmp(b),
            (Value::Num(_), Value::Text(_)) => Ordering::Less,
            (Value::Text(_), Value::Num(_)) => Ordering::Greater,
            _ => Ordering::Equal,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Num(v) => write!(f, "{}", crate::format_number(*v)),
            Value::Text(t) => f.write_str(t),
            Value::Missing => f.write_str("-"),
        }
    }
}

impl Field {
    /// Parses `name[:last|min|max|count|step]`, `metrics.NAME`, `hparams.NAME`, `id` or
    /// `state`, resolving a bare name against the metrics, then the hyperparameters, that the
    /// trials have.
    pub fn parse(text: &str, trials: &[TrialSummary]) -> Result<Field, CatalogError> {
        let text = text.trim();
        match text {
            "id" | "trial" => return Ok(Field::Id),
            "state" => return Ok(Field::State),
            _ => {}
        }
        if let Some(name) = text.strip_prefix("hparams.") {
            return Ok(Field::Hparam(name.to_owned()));
        }
        let (name, agg) = match text.rsplit_once(':') {
            Some((name, agg)) => (
                name,
                match agg {
                    "last" => Agg::Last,
                    "min" => Agg::Min,
                    "max" => Agg::Max,
                    "count" => Agg::Count,
                    "step" => Agg::Step,
                    other => {
                        return Err(CatalogError::BadQuery(format!(
                        "{text:?}: unknown summary {other:?} (use last, min, max, count or step)"
                    )))
                    }
                },
            ),
            None => (text, Agg::Last),
        };
        if let Some(metric) = name.strip_prefix("metrics.") {
            return Ok(Field::Metric(metric.to_owned(), agg));
        }
        if trials.iter().any(|t| t.metrics.contains_key(name)) {
            return Ok(Field::Metric(name.to_owned(), agg));
        }
        if agg == Agg::Last && trials.iter().any(|t| t.hparams.contains_key(name)) {
            return Ok(Field::Hparam(name.to_owned()));
        }
        if trials.is_empty() {
            return Ok(Field::Metric(name.to_owned(), agg));
        }
        let mut metrics: Vec<&str> = trials
            .iter()
            .flat_map(|t| t.metrics.keys().map(String::as_str))
            .collect();
        metrics.sort_unstable();
        metrics.dedup();
        let mut hparams: Vec<&str> = trials
            .iter()
            .flat_map(|t| t.hparams.keys().map(String::as_str))
            .collect();
        hparams.sort_unstable();
        hparams.dedup();
        Err(CatalogError::BadQuery(format!(
            "no trial reported a metric or hyperparameter {name:?} (metrics: {}; hyperparameters: {})",
            list_or_none(&metrics),
            list_or_none(&hparams)
        )))
    }

    /// This field's value in `trial`.
    pub fn value(&self, trial: &TrialSummary) -> Value {
        match self {
            Field::Id => Value::Num(trial.id as f64),
            Field::State => {
                shown_state(trial).map_or(Value::Missing, |s| Value::Text(s.as_str().to_owned()))
            }
            Field::Hparam(name) => match trial.hparams.get(name) {
                Some(serde_json::Value::Number(n)) => n.as_f64().map_or(Value::Missing, Value::Num),
                Some(serde_json::Value::String(s)) => Value::Text(s.clone()),
                Some(serde_json::Value::Bool(b)) => Value::Text(b.to_string()),
                Some(serde_json::Value::Null) | None => Value::Missing,
                Some(other) => Value::Text(other.to_string()),
            },
            Field::Metric(name, agg) => {
                let Some(m) = trial.metrics.get(name) else {
                    return Value::Missing;
                };
                let num = match agg {
                    Agg::Last => Some(m.last),
                    Agg::Min => m.min,
                    Agg::Max => m.max,
                    Agg::Count => Some(m.count as f64),
                    Agg::Step => Some(m.last_step as f64),
                };
                num.map_or(Value::Missing, Value::Num)
            }
        }
    }
}

/// `a, b, c`, or `none` for an empty list (for messages naming what exists).
pub fn list_or_none<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<&str>>()
            .join(", ")
    }
}

/// A comparison operator of a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `=` or `==`
    Eq,
    /// `!=`
    Ne,
}

/// `FIELD OP VALUE`.
#[derive(Debug, Clone)]
pub struct Filter {
    /// The field.
    pub field: Field,
    /// The operator.
    pub op: Op,
    /// The value it is compared with.
    pub value: Value,
}

impl Filter {
    /// Parses `lr<0.01`, `state=completed`, `val_loss:min <= 0.2`.
    pub fn parse(text: &str, trials: &[TrialSummary]) -> Result<Filter, CatalogError> {
        const OPS: [(&str, Op); 7] = [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("!=", Op::Ne),
            ("==", Op::Eq),
            ("<", Op::Lt),
            (">", Op::Gt),
            ("=", Op::Eq),
        ];
        let found = OPS
            .iter()
            .filter_map(|(token, op)| text.find(token).map(|at| (at, *token, *op)))
            .min_by_key(|(at, token, _)| (*at, std::cmp::Reverse(token.len())));
        let Some((at, token, op)) = found else {
            return Err(CatalogError::BadQuery(format!(
                "--where {text:?}: expected FIELD OP VALUE with OP one of < <= > >= = !="
            )));
        };
        let (left, right) = (text[..at].trim(), text[at + token.len()..].trim());
        if left.is_empty() || right.is_empty() {
            return Err(CatalogError::BadQuery(format!(
                "--where {text:?}: expected FIELD OP VALUE, for example lr<0.01"
            )));
        }
        let field = Field::parse(left, trials)?;
        let value = right
            .parse::<f64>()
            .map_or_else(|_| Value::Text(right.to_owned()), Value::Num);
        Ok(Filter { field, op, value })
    }

    /// Whether `trial` passes.
    pub fn accepts(&self, trial: &TrialSummary) -> bool {
        let have = self.field.value(trial);
        let order = match (&have, &self.value) {
            (Value::Missing, _) => return self.op == Op::Ne,
            (Value::Num(a), Value::Num(b)) => a.partial_cmp(b),
            (Value::Text(a), Value::Text(b)) => Some(a.cmp(b)),
            (Value::Num(a), Value::Text(b)) => Some(crate::format_number(*a).cmp(b)),
            (Value::Text(a), Value::Num(b)) => Some(a.cmp(&crate::format_number(*b))),
            (_, Value::Missing) => None,
        };
        let Some(order) = order else {
            return self.op == Op::Ne;
        };
        match self.op {
            Op::Lt => order == Ordering::Less,
            Op::Le => order != Ordering::Greater,
            Op::Gt => order == Ordering::Greater,
            Op::Ge => order != Ordering::Less,
            Op::Eq => order == Ordering::Equal,
            Op::Ne => order != Ordering::Equal,
        }
    }
}

/// The trials of `trials` that pass every filter of `filters` (texts like `val_loss<0.5`),
/// sorted by `sort` (a field's text, like `val_loss:min` or `hparams.lr`), at most `limit`: the
/// query of `cohort trials`. Errors name the filter or field that does not parse.
pub fn query<'a, S: AsRef<str>>(
    trials: &'a [TrialSummary],
    filters: &[S],
    sort: Option<(&str, bool)>,
    limit: Option<usize>,
) -> Result<Vec<&'a TrialSummary>, CatalogError> {
    let filters = filters
        .iter()
        .map(|f| Filter::parse(f.as_ref(), trials))
        .collect::<Result<Vec<_>, _>>()?;
    let sort = match sort {
        Some((text, descending)) => Some((Field::parse(text, trials)?, descending)),
        None => None,
    };
    Ok(select(
        trials,
        &filters,
        sort.as_ref()
            .map(|(field, descending)| (field, *descending)),
        limit,
    ))
}

/// Filters, sorts (missing and NaN values last in either direction; ties by trial number)
/// and truncates.
pub fn select<'a>(
    trials: &'a [TrialSummary],
    filters: &[Filter],
    sort: Option<(&Field, bool)>,
    limit: Option<usize>,
) -> Vec<&'a TrialSummary> {
    let mut chosen: Vec<&TrialSummary> = trials
        .iter()
        .filter(|t| filters.iter().all(|f| f.accepts(t)))
        .collect();
    if let Some((field, descending)) = sort {
        let mut keyed: Vec<(Value, &TrialSummary)> =
            chosen.iter().map(|t| (field.value(t), *t)).collect();
        let absent = |v: &Value| match v {
            Value::Missing => true,
            Value::Num(n) => n.is_nan(),
            Value::Text(_) => false,
        };
        keyed.sort_by(|(a, ta), (b, tb)| {
            match (absent(a), absent(b)) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    let order = a.cmp_present(b);
                    if descending {
                        order.reverse()
                    } else {
                        order
                    }
                }
            }
            .then(ta.id.cmp(&tb.id))
        });
        chosen = keyed.into_iter().map(|(_, t)| t).collect();
    }
    if let Some(limit) = limit {
        chosen.truncate(limit);
    }
    chosen
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cohort_proto::catalog::{MetricSummary, TrialRecord, TrialState, Writer};
    use serde_json::json;

    use super::*;

    fn metric(last: f64, min: f64, max: f64, count: u64, last_step: i64) -> MetricSummary {
        MetricSummary {
            count,
            min: Some(min),
            min_step: Some(0),
            max: Some(max),
            max_step: Some(0),
            last_step,
            last,
            last_wall: 1.0,
        }
    }

    fn trial(
        id: u64,
        hparams: &[(&str, serde_json::Value)],
        metrics: &[(&str, MetricSummary)],
        state: Option<TrialState>,
    ) -> TrialSummary {
        let hparams: BTreeMap<String, serde_json::Value> = hparams
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        TrialSummary {
            id,
            dir: format!("{id:06}"),
            dir_mtime_ns: 0,
            trial: TrialRecord {
                format: "cohort.trial".into(),
                version: 1,
                experiment: "e".into(),
                id,
                hparams: hparams.clone(),
                created: 0.0,
                created_by: Writer {
                    host: "h".into(),
                    pid: 1,
                    user: "u".into(),
                },
                command: Vec::new(),
            },
            state: state.map(crate::catalog::new_state),
            hparams,
            metrics: metrics
                .iter()
                .map(|(k, m)| ((*k).to_owned(), m.clone()))
                .collect(),
            checkpoints: Vec::new(),
            deleted: Vec::new(),
            segments: Vec::new(),
            finished: None,
            last_write: None,
            damage: Vec::new(),
        }
    }

    /// A trial with one metric `val_loss` whose last value is `last` (or none at all).
    fn with_loss(id: u64, last: Option<f64>) -> TrialSummary {
        match last {
            Some(v) => trial(id, &[], &[("val_loss", metric(v, v, v, 1, 1))], None),
            None => trial(id, &[], &[], None),
        }
    }

    fn ids(selected: &[&TrialSummary]) -> Vec<u64> {
        selected.iter().map(|t| t.id).collect()
    }

    fn bad_query(result: Result<impl std::fmt::Debug, CatalogError>) -> String {
        match result {
            Err(CatalogError::BadQuery(message)) => message,
            other => panic!("expected a BadQuery error, got {other:?}"),
        }
    }

    #[test]
    fn id_trial_and_state_name_the_trial_number_and_its_state() {
        assert_eq!(Field::parse("id", &[]).unwrap(), Field::Id);
        assert_eq!(Field::parse(" trial ", &[]).unwrap(), Field::Id);
        assert_eq!(Field::parse("state", &[]).unwrap(), Field::State);

        let t = trial(7, &[], &[], Some(TrialState::Completed));
        assert_eq!(Field::Id.value(&t), Value::Num(7.0));
        assert_eq!(Field::State.value(&t), Value::Text("completed".into()));
    }

    #[test]
    fn state_falls_back_to_the_workers_report_and_else_is_missing() {
        let mut t = trial(1, &[], &[], None);
        assert_eq!(Field::State.value(&t), Value::Missing);
        t.finished = Some(TrialState::Killed);
        assert_eq!(Field::State.value(&t), Value::Text("killed".into()));
        // The state file wins over the worker's report.
        t.state = Some(crate::catalog::new_state(TrialState::Failed));
        assert_eq!(Field::State.value(&t), Value::Text("failed".into()));
    }

    #[test]
    fn a_metric_name_means_its_last_value_and_a_suffix_picks_another_summary() {
        let trials = [trial(
            1,
            &[],
            &[("val_loss", metric(0.3, 0.2, 0.9, 4, 40))],
            None,
        )];
        let cases = [
            ("val_loss", Agg::Last, 0.3),
            ("val_loss:last", Agg::Last, 0.3),
            ("val_loss:min", Agg::Min, 0.2),
            ("val_loss:max", Agg::Max, 0.9),
            ("val_loss:count", Agg::Count, 4.0),
            ("val_loss:step", Agg::Step, 40.0),
        ];
        for (text, agg, expected) in cases {
            let field = Field::parse(text, &trials).unwrap();
            assert_eq!(field, Field::Metric("val_loss".into(), agg), "{text}");
            assert_eq!(field.value(&trials[0]), Value::Num(expected), "{text}");
        }
    }

    #[test]
    fn a_metric_without_a_finite_minimum_has_a_missing_min() {
        let mut m = metric(f64::NAN, 0.0, 0.0, 2, 5);
        m.min = None;
        m.max = None;
        let t = trial(1, &[], &[("loss", m)], None);
        assert_eq!(
            Field::Metric("loss".into(), Agg::Min).value(&t),
            Value::Missing
        );
        assert_eq!(
            Field::Metric("loss".into(), Agg::Max).value(&t),
            Value::Missing
        );
        assert_eq!(
            Field::Metric("loss".into(), Agg::Count).value(&t),
            Value::Num(2.0)
        );
    }

    #[test]
    fn a_bare_name_no_trial_has_as_a_metric_is_a_hyperparameter() {
        let trials = [
            trial(
                1,
                &[
                    ("lr", json!(0.01)),
                    ("optimizer", json!("adam")),
                    ("nesterov", json!(true)),
                    ("warmup", serde_json::Value::Null),
                    ("layers", json!([64, 32])),
                ],
                &[("loss", metric(1.0, 1.0, 1.0, 1, 1))],
                None,
            ),
            trial(2, &[], &[], None),
        ];
        let lr = Field::parse("lr", &trials).unwrap();
        assert_eq!(lr, Field::Hparam("lr".into()));
        assert_eq!(lr.value(&trials[0]), Value::Num(0.01));
        assert_eq!(lr.value(&trials[1]), Value::Missing);
        let text = |name: &str| Field::parse(name, &trials).unwrap().value(&trials[0]);
        assert_eq!(text("optimizer"), Value::Text("adam".into()));
        assert_eq!(text("nesterov"), Value::Text("true".into()));
        assert_eq!(text("warmup"), Value::Missing);
        assert_eq!(text("layers"), Value::Text("[64,32]".into()));
    }

    #[test]
    fn a_name_that_is_both_a_metric_and_a_hyperparameter_means_the_metric() {
        let trials = [trial(
            1,
            &[("score", json!(5))],
            &[("score", metric(0.5, 0.5, 0.5, 1, 1))],
            None,
        )];
        let field = Field::parse("score", &trials).unwrap();
        assert_eq!(field, Field::Metric("score".into(), Agg::Last));
        assert_eq!(field.value(&trials[0]), Value::Num(0.5));
        let field = Field::parse("hparams.score", &trials).unwrap();
        assert_eq!(field, Field::Hparam("score".into()));
        assert_eq!(field.value(&trials[0]), Value::Num(5.0));
    }

    #[test]
    fn prefixed_names_are_taken_as_they_are_even_when_no_trial_has_them() {
        let trials = [trial(
            1,
            &[],
            &[("loss", metric(1.0, 1.0, 1.0, 1, 1))],
            None,
        )];
        assert_eq!(
            Field::parse("metrics.acc", &trials).unwrap(),
            Field::Metric("acc".into(), Agg::Last)
        );
        assert_eq!(
            Field::parse("metrics.acc:max", &trials).unwrap(),
            Field::Metric("acc".into(), Agg::Max)
        );
        let field = Field::parse("hparams.seed", &trials).unwrap();
        assert_eq!(field, Field::Hparam("seed".into()));
        assert_eq!(field.value(&trials[0]), Value::Missing);
    }

    #[test]
    fn a_metric_whose_name_has_a_colon_is_reached_with_an_explicit_summary() {
        let trials = [trial(
            1,
            &[],
            &[("eval:loss", metric(0.4, 0.1, 0.8, 3, 9))],
            None,
        )];
        assert_eq!(
            Field::parse("eval:loss:min", &trials).unwrap(),
            Field::Metric("eval:loss".into(), Agg::Min)
        );
        assert_eq!(
            Field::parse("eval:loss:last", &trials)
                .unwrap()
                .value(&trials[0]),
            Value::Num(0.4)
        );
    }

    #[test]
    fn with_no_trials_any_name_is_a_metric() {
        assert_eq!(
            Field::parse("anything:max", &[]).unwrap(),
            Field::Metric("anything".into(), Agg::Max)
        );
    }

    #[test]
    fn an_unknown_name_is_an_error_naming_it_and_listing_what_exists() {
        let trials = [
            trial(
                1,
                &[("lr", json!(0.1))],
                &[("loss", metric(1.0, 1.0, 1.0, 1, 1))],
                None,
            ),
            trial(
                2,
                &[("batch", json!(32)), ("lr", json!(0.2))],
                &[("acc", metric(1.0, 1.0, 1.0, 1, 1))],
                None,
            ),
        ];
        let message = bad_query(Field::parse("los", &trials));
        assert!(message.contains("\"los\""), "{message}");
        assert!(message.contains("metrics: acc, loss"), "{message}");
        assert!(message.contains("hyperparameters: batch, lr"), "{message}");

        let bare = [trial(1, &[], &[], None)];
        let message = bad_query(Field::parse("loss", &bare));
        assert!(message.contains("metrics: none"), "{message}");
        assert!(message.contains("hyperparameters: none"), "{message}");
    }

    #[test]
    fn a_summary_of_a_hyperparameter_is_an_error() {
        let trials = [trial(1, &[("lr", json!(0.1))], &[], None)];
        let message = bad_query(Field::parse("lr:min", &trials));
        assert!(message.contains("\"lr\""), "{message}");
    }

    #[test]
    fn an_unknown_summary_is_an_error_naming_it_and_the_choices() {
        let message = bad_query(Field::parse("val_loss:median", &[]));
        assert!(message.contains("\"median\""), "{message}");
        assert!(message.contains("\"val_loss:median\""), "{message}");
        assert!(
            message.contains("last, min, max, count or step"),
            "{message}"
        );
    }

    #[test]
    fn lists_are_joined_with_commas_or_say_none() {
        assert_eq!(list_or_none::<&str>(&[]), "none");
        assert_eq!(list_or_none(&["a"]), "a");
        assert_eq!(list_or_none(&["a".to_owned(), "b".to_owned()]), "a, b");
    }

    #[test]
    fn values_display_as_numbers_text_or_a_dash() {
        assert_eq!(Value::Num(0.5).to_string(), "0.5");
        assert_eq!(Value::Num(3.0).to_string(), "3");
        assert_eq!(Value::Text("adam".into()).to_string(), "adam");
        assert_eq!(Value::Missing.to_string(), "-");
    }

    #[test]
    fn filters_parse_every_operator_with_or_without_spaces() {
        let trials = [trial(
            1,
            &[("lr", json!(0.1))],
            &[("val_loss", metric(1.0, 1.0, 1.0, 1, 1))],
            None,
        )];
        let cases = [
            ("lr<0.01", Field::Hparam("lr".into()), Op::Lt, 0.01),
            ("lr<=0.01", Field::Hparam("lr".into()), Op::Le, 0.01),
            ("lr>2", Field::Hparam("lr".into()), Op::Gt, 2.0),
            ("lr >= 1e-3", Field::Hparam("lr".into()), Op::Ge, 0.001),
            ("lr=0.5", Field::Hparam("lr".into()), Op::Eq, 0.5),
            ("lr==0.5", Field::Hparam("lr".into()), Op::Eq, 0.5),
            ("lr != -1", Field::Hparam("lr".into()), Op::Ne, -1.0),
            (
                "val_loss:min <= 0.2",
                Field::Metric("val_loss".into(), Agg::Min),
                Op::Le,
                0.2,
            ),
        ];
        for (text, field, op, value) in cases {
            let filter = Filter::parse(text, &trials).unwrap();
            assert_eq!(filter.field, field, "{text}");
            assert_eq!(filter.op, op, "{text}");
            assert_eq!(filter.value, Value::Num(value), "{text}");
        }
        let filter = Filter::parse("state=completed", &trials).unwrap();
        assert_eq!(filter.field, Field::State);
        assert_eq!(filter.op, Op::Eq);
        assert_eq!(filter.value, Value::Text("completed".into()));
        let filter = Filter::parse("state!=failed", &trials).unwrap();
        assert_eq!(filter.op, Op::Ne);
        assert_eq!(filter.value, Value::Text("failed".into()));
    }

    #[test]
    fn a_filter_without_an_operator_or_a_side_is_an_error_quoting_it() {
        for text in ["lr", "lr~0.1"] {
            let message = bad_query(Filter::parse(text, &[]));
            assert!(message.contains(&format!("{text:?}")), "{message}");
            assert!(message.contains("< <= > >= = !="), "{message}");
        }
        for text in ["<0.1", "lr<", " = "] {
            let message = bad_query(Filter::parse(text, &[]));
            assert!(message.contains(&format!("{text:?}")), "{message}");
            assert!(message.contains("FIELD OP VALUE"), "{message}");
        }
    }

    #[test]
    fn a_filter_on_an_unknown_field_is_the_fields_error() {
        let trials = [trial(1, &[("lr", json!(0.1))], &[], None)];
        let message = bad_query(Filter::parse("lrr<0.1", &trials));
        assert!(message.contains("\"lrr\""), "{message}");
        assert!(message.contains("hyperparameters: lr"), "{message}");
    }

    #[test]
    fn numeric_filters_compare_numbers() {
        let trials: Vec<TrialSummary> = [0.001, 0.01, 0.1]
            .iter()
            .enumerate()
            .map(|(i, lr)| trial(i as u64 + 1, &[("lr", json!(lr))], &[], None))
            .collect();
        // Expected ids by hand: lr = 0.001 (1), 0.01 (2), 0.1 (3).
        let cases: [(&str, &[u64]); 6] = [
            ("lr<0.01", &[1]),
            ("lr<=0.01", &[1, 2]),
            ("lr>0.01", &[3]),
            ("lr>=0.01", &[2, 3]),
            ("lr=0.01", &[2]),
            ("lr!=0.01", &[1, 3]),
        ];
        for (text, expected) in cases {
            let filter = Filter::parse(text, &trials).unwrap();
            let accepted: Vec<u64> = trials
                .iter()
                .filter(|t| filter.accepts(t))
                .map(|t| t.id)
                .collect();
            assert_eq!(accepted, expected, "{text}");
        }
    }

    #[test]
    fn a_missing_value_passes_only_not_equal() {
        let trials = [trial(1, &[("lr", json!(0.1))], &[], None)];
        let without = trial(2, &[], &[], None);
        for (text, passes) in [
            ("lr<1", false),
            ("lr>0", false),
            ("lr=0.1", false),
            ("lr!=0.1", true),
        ] {
            let filter = Filter::parse(text, &trials).unwrap();
            assert_eq!(filter.accepts(&without), passes, "{text}");
        }
    }

    #[test]
    fn a_nan_value_passes_only_not_equal() {
        let t = with_loss(1, Some(f64::NAN));
        let trials = [t.clone()];
        for (text, passes) in [
            ("val_loss<1", false),
            ("val_loss>=0", false),
            ("val_loss=0", false),
            ("val_loss!=0", true),
        ] {
            let filter = Filter::parse(text, &trials).unwrap();
            assert_eq!(filter.accepts(&t), passes, "{text}");
        }
    }

    #[test]
    fn text_filters_compare_text_and_numbers_as_they_are_shown() {
        let done = trial(
            1,
            &[("batch", json!("32")), ("opt", json!("adam"))],
            &[],
            Some(TrialState::Completed),
        );
        let running = trial(
            2,
            &[("batch", json!(64)), ("opt", json!("sgd"))],
            &[],
            Some(TrialState::Running),
        );
        let trials = [done.clone(), running.clone()];
        let accepts =
            |text: &str, t: &TrialSummary| Filter::parse(text, &trials).unwrap().accepts(t);
        assert!(accepts("state=completed", &done));
        assert!(!accepts("state=completed", &running));
        assert!(accepts("state!=completed", &running));
        assert!(accepts("opt<b", &done));
        assert!(!accepts("opt<b", &running));
        // The text "32" equals the number 32; the number 64 equals the text "64".
        assert!(accepts("batch=32", &done));
        assert!(accepts("batch=64", &running));
        assert!(accepts("batch!=64", &done));
        // A number against text compares as it is shown: "64" > "1e" as text.
        assert!(accepts("batch>1e", &running));
    }

    #[test]
    fn sorting_puts_missing_and_nan_last_in_either_direction_ties_by_number() {
        let trials = [
            with_loss(1, Some(0.5)),
            with_loss(2, None),
            with_loss(3, Some(0.2)),
            with_loss(4, Some(f64::NAN)),
            with_loss(5, Some(0.2)),
            with_loss(6, Some(0.9)),
        ];
        let field = Field::parse("val_loss", &trials).unwrap();
        assert_eq!(
            ids(&select(&trials, &[], Some((&field, false)), None)),
            [3, 5, 1, 6, 2, 4]
        );
        assert_eq!(
            ids(&select(&trials, &[], Some((&field, true)), None)),
            [6, 1, 3, 5, 2, 4]
        );
    }

    #[test]
    fn sorting_text_orders_it_after_numbers() {
        let trials = [
            trial(1, &[("act", json!("relu"))], &[], None),
            trial(2, &[("act", json!("gelu"))], &[], None),
            trial(3, &[("act", json!(1))], &[], None),
            trial(4, &[], &[], None),
        ];
        let field = Field::parse("act", &trials).unwrap();
        assert_eq!(
            ids(&select(&trials, &[], Some((&field, false)), None)),
            [3, 2, 1, 4]
        );
        assert_eq!(
            ids(&select(&trials, &[], Some((&field, true)), None)),
            [1, 2, 3, 4]
        );
    }

    #[test]
    fn select_filters_then_sorts_then_limits() {
        let trials: Vec<TrialSummary> = [0.4, 0.1, 0.3, 0.2, 0.5]
            .iter()
            .enumerate()
            .map(|(i, v)| with_loss(i as u64 + 1, Some(*v)))
            .collect();
        let field = Field::parse("val_loss", &trials).unwrap();
        let filters = [Filter::parse("val_loss<0.45", &trials).unwrap()];
        // Below 0.45: 0.4 (1), 0.1 (2), 0.3 (3), 0.2 (4); ascending 2, 4, 3, 1; first three.
        assert_eq!(
            ids(&select(&trials, &filters, Some((&field, false)), Some(3))),
            [2, 4, 3]
        );
        // Without a sort the catalog's order is kept.
        assert_eq!(ids(&select(&trials, &filters, None, None)), [1, 2, 3, 4]);
        assert_eq!(ids(&select(&trials, &[], None, Some(2))), [1, 2]);
        assert!(select(&trials, &filters, None, Some(0)).is_empty());
    }

    #[test]
    fn every_filter_must_pass() {
        let trials = [
            trial(1, &[("lr", json!(0.1)), ("bs", json!(32))], &[], None),
            trial(2, &[("lr", json!(0.1)), ("bs", json!(64))], &[], None),
            trial(3, &[("lr", json!(0.5)), ("bs", json!(32))], &[], None),
        ];
        let filters = [
            Filter::parse("lr<0.2", &trials).unwrap(),
            Filter::parse("bs=32", &trials).unwrap(),
        ];
        assert_eq!(ids(&select(&trials, &filters, None, None)), [1]);
    }
}
