//! Export of an experiment's metrics for standard tools: CSV (one row per point), JSON (one
//! object per trial with its hyperparameters, state and histories) and Parquet (the CSV's
//! columns, typed).

use std::io::Write;
use std::sync::Arc;

use cohort_proto::catalog::TrialSummary;

use crate::catalog::Experiment;
use crate::error::{CatalogError, Warning};
use crate::read::{history, shown_state, Point};

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `trial,metric,step,value,wall_time`.
    Csv,
    /// `{"experiment": ..., "trials": [{"trial", "hparams", "state", "metrics": {NAME: [[step, value, wall_time], ...]}}]}`.
    Json,
    /// Columns `trial` (INT64), `metric` (UTF8), `step` (INT64), `value` (DOUBLE),
    /// `wall_time` (DOUBLE); one row group per trial.
    Parquet,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportStats {
    /// Trials.
    pub trials: usize,
    /// Points.
    pub points: u64,
}

fn io_err(what: &'static str) -> impl Fn(std::io::Error) -> CatalogError {
    move |source| CatalogError::Io {
        path: "(output)".into(),
        what,
        source,
    }
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

fn json_number(value: f64) -> serde_json::Value {
    serde_json::Number::from_f64(value).map_or_else(
        || {
            serde_json::Value::String(if value.is_nan() {
                "NaN".into()
            } else if value > 0.0 {
                "inf".into()
            } else {
                "-inf".into()
            })
        },
        serde_json::Value::Number,
    )
}

/// Writes `trials` of `experiment` to `out` in `format`.
pub fn export<W: Write + Send>(
    experiment: &Experiment,
    trials: &[&TrialSummary],
    format: Format,
    out: W,
    warnings: &mut Vec<Warning>,
) -> Result<ExportStats, CatalogError> {
    let dir = |t: &TrialSummary| experiment.trial_dir(t.id);
    let mut stats = ExportStats::default();
    match format {
        Format::Csv => {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
            let err = io_err("cannot write the export");
            writeln!(out, "trial,metric,step,value,wall_time").map_err(&err)?;
            for trial in trials {
                let metrics = history(&dir(trial), None, warnings)?;
                stats.trials += 1;
                for (name, points) in metrics {
                    let name = csv_field(&name);
                    for p in points {
                        writeln!(out, "{},{name},{},{},{}", trial.id, p.step, p.value, p.wall)
                            .map_err(&err)?;
                        stats.points += 1;
                    }
                }
            }
            out.flush().map_err(&err)?;
        }
        Format::Json => {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
            let err = io_err("cannot write the export");
            write!(
                out,
                "{{\"experiment\":{},\"trials\":[",
                serde_json::Value::String(experiment.record.name.clone())
            )
            .map_err(&err)?;
            for (i, trial) in trials.iter().enumerate() {
                let metrics = history(&dir(trial), None, warnings)?;
                stats.trials += 1;
                let mut histories = serde_json::Map::new();
                for (name, points) in metrics {
                    stats.points += points.len() as u64;
                    let rows: Vec<serde_json::Value> = points
                        .iter()
                        .map(|p| {
                            serde_json::Value::Array(vec![
                                p.step.into(),
                                json_number(p.value),
                                json_number(p.wall),
                            ])
                        })
                        .collect();
                    histories.insert(name, serde_json::Value::Array(rows));
                }
                let object = serde_json::json!({
                    "trial": trial.id,
                    "hparams": trial.hparams,
                    "state": shown_state(trial).map(|s| s.as_str()),
                    "metrics": histories,
                });
                if i > 0 {
                    out.write_all(b",").map_err(&err)?;
                }
                serde_json::to_writer(&mut out, &object)
                    .map_err(|e| err(std::io::Error::other(e)))?;
            }
            writeln!(out, "]}}").map_err(&err)?;
            out.flush().map_err(&err)?;
        }
        Format::Parquet => {
            stats = parquet(trials, &dir, out, warnings)?;
        }
    }
    Ok(stats)
}

fn parquet<W: Write + Send>(
    trials: &[&TrialSummary],
    dir: &dyn Fn(&TrialSummary) -> std::path::PathBuf,
    out: W,
    warnings: &mut Vec<Warning>,
) -> Result<ExportStats, CatalogError> {
    use parquet::basic::Compression;
    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    let perr = |e: parquet::errors::ParquetError| CatalogError::Io {
        path: "(output)".into(),
        what: "cannot write Parquet",
        source: std::io::Error::other(e),
    };
    let schema = Arc::new(
        parse_message_type(
            "message metrics {
                REQUIRED INT64 trial;
                REQUIRED BYTE_ARRAY metric (UTF8);
                REQUIRED INT64 step;
                REQUIRED DOUBLE value;
                REQUIRED DOUBLE wall_time;
            }",
        )
        .map_err(perr)?,
    );
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let mut writer = SerializedFileWriter::new(out, schema, props).map_err(perr)?;
    let mut stats = ExportStats::default();
    for trial in trials {
        let metrics = history(&dir(trial), None, warnings)?;
        stats.trials += 1;
        let rows: Vec<(&String, &Point)> = metrics
            .iter()
            .flat_map(|(name, points)| points.iter().map(move |p| (name, p)))
            .collect();
        if rows.is_empty() {
            continue;
        }
        stats.points += rows.len() as u64;
        let id = i64::try_from(trial.id).unwrap_or(i64::MAX);
        let mut group = writer.next_row_group().map_err(perr)?;
        let mut column = 0;
        while let Some(mut col) = group.next_column().map_err(perr)? {
            match column {
                0 => {
                    let values = vec![id; rows.len()];
                    col.typed::<Int64Type>().write_batch(&values, None, None)
                }
                1 => {
                    let values: Vec<ByteArray> = rows
                        .iter()
                        .map(|(n, _)| ByteArray::from(n.as_str()))
                        .collect();
                    col.typed::<ByteArrayType>()
                        .write_batch(&values, None, None)
                }
                2 => {
                    let values: Vec<i64> = rows.iter().map(|(_, p)| p.step).collect();
                    col.typed::<Int64Type>().write_batch(&values, None, None)
                }
                3 => {
                    let values: Vec<f64> = rows.iter().map(|(_, p)| p.value).collect();
                    col.typed::<DoubleType>().write_batch(&values, None, None)
                }
                _ => {
                    let values: Vec<f64> = rows.iter().map(|(_, p)| p.wall).collect();
                    col.typed::<DoubleType>().write_batch(&values, None, None)
                }
            }
            .map_err(perr)?;
            col.close().map_err(perr)?;
            column += 1;
        }
        group.close().map_err(perr)?;
    }
    writer.close().map_err(perr)?;
    Ok(stats)
}
