//! How the catalog commands print: dates and durations, plain text tables, JSON, a trial's
//! state and hyperparameter values (a trial as JSON is the catalog's `json::trial_json`).

use anyhow::Result;
use cohort_catalog::format_number;
use cohort_catalog::read::shown_state;
use cohort_proto::catalog::TrialSummary;

use crate::write_out;

pub(super) fn time_text(t: Option<f64>) -> String {
    t.map_or_else(|| "-".into(), cohort_catalog::utc_time)
}

pub(super) fn duration_text(seconds: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let s = seconds.max(0.0) as u64;
    if s < 120 {
        format!("{s}s")
    } else if s < 7200 {
        format!("{}m", s / 60)
    } else if s < 172_800 {
        format!("{}h", s / 3600)
    } else {
        format!("{}d", s / 86_400)
    }
}

/// A plain text table: left-aligned columns two spaces apart.
pub(super) fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    for row in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let width = widths.get(i).copied().unwrap_or(0);
            line.push_str(&format!("{cell:<width$}  "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub(super) fn json_out(value: &impl serde::Serialize) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_out(&text)
}

pub(super) fn state_text(trial: &TrialSummary) -> String {
    let state = shown_state(trial).map_or_else(|| "unknown".to_owned(), |s| s.to_string());
    // A running trial whose logs stopped moving long ago may have lost its writer.
    if shown_state(trial) == Some(cohort_proto::catalog::TrialState::Running) {
        if let Some(last) = trial.last_write {
            let idle = cohort_catalog::now() - last;
            if idle > 600.0 {
                return format!("{state} (idle {})", duration_text(idle));
            }
        }
    }
    state
}

pub(super) fn hparam_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), format_number),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
