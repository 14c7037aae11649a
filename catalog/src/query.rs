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
