//! Cohort's experiment catalog: experiments, trials, hyperparameters, metrics and checkpoints
//! on a shared filesystem (NFS, Lustre, GPFS, BeeGFS) with no server.
//!
//! It owns the catalog's directory tree and every write to it. It must never append to a
//! file that another host may write (one writer per file), change a shared directory other
//! than by create-if-absent or rename of a fully written and fsynced file, or treat the index
//! as the truth: the index is a cache rebuilt from the trials' own files. Readers tolerate
//! torn and corrupt data, skipping what is damaged and naming it, and never lose a committed
//! record. The on-disk format is described in `docs/catalog-format.md`. No other crate names
//! a file of the tree: they ask [`Experiment`], [`SearchDir`] and the functions of
//! [`catalog`] for paths and records.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use cohort_proto::env as vars;
pub mod catalog;
pub mod ckpt;
pub mod error;
pub mod export;
pub mod fsutil;
pub mod fuzzing;
mod history_cache;
pub mod index;
pub mod json;
pub mod log;
pub mod model;
pub mod query;
pub mod read;
pub mod search_dir;
pub mod signals;
pub mod synth;
pub mod system;
pub mod tracker;

pub use catalog::{Catalog, Experiment, NewExperiment, TrialRef};
pub use error::{CatalogError, Warning};
pub use index::{load, load_with_progress, LoadOptions, Loaded};
pub use search_dir::SearchDir;
pub use tracker::{StopReason, Tracker, TrackerOptions};

/// Formats a number for a table: integers as integers, others with six significant digits,
/// very large or small ones in scientific notation.
pub fn format_number(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let magnitude = value.abs();
    if value.fract() == 0.0 && magnitude < 1e15 {
        return format!("{value:.0}");
    }
    if (1e-4..1e6).contains(&magnitude) {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let decimals = (5 - magnitude.log10().floor() as i32).max(0) as usize;
        let text = format!("{value:.decimals$}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        return text.to_owned();
    }
    format!("{value:.4e}")
}

/// The catalog to use when none is named: `COHORT_CATALOG`, else `catalog` in the cluster's
/// configuration (`COHORT_CONFIG`, default `/etc/cohort/cohort.toml`), else `./cohort-catalog`.
pub fn default_root() -> Result<std::path::PathBuf, CatalogError> {
    use std::path::PathBuf;
    if let Some(path) = std::env::var_os(vars::CATALOG).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let config = std::env::var_os(vars::CONFIG)
        .map_or_else(|| PathBuf::from("/etc/cohort/cohort.toml"), PathBuf::from);
    if let Ok(text) = std::fs::read_to_string(&config) {
        let malformed = |problem: String| CatalogError::Malformed {
            path: config.clone(),
            problem,
        };
        let table: toml::Table = text
            .parse()
            .map_err(|e| malformed(format!("not valid TOML ({e})")))?;
        if let Some(value) = table.get("catalog") {
            let path = value
                .as_str()
                .ok_or_else(|| malformed("`catalog` must be a string (a directory)".into()))?;
            return Ok(PathBuf::from(path));
        }
    }
    Ok(PathBuf::from("cohort-catalog"))
}

/// A Unix time as `YYYY-MM-DD HH:MM:SSZ` (UTC).
pub fn utc_time(t: f64) -> String {
    #[allow(clippy::cast_possible_truncation)]
    let secs = t as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Unix time in seconds.
pub fn now() -> f64 {
    fsutil::now()
}

#[cfg(test)]
mod tests {
    use super::format_number;

    #[test]
    fn numbers_format_compactly() {
        assert_eq!(format_number(3.0), "3");
        assert_eq!(format_number(0.012_345_678), "0.0123457");
        assert_eq!(format_number(123.456_789), "123.457");
        assert_eq!(format_number(0.5), "0.5");
        assert_eq!(format_number(1e-7), "1.0000e-7");
        assert_eq!(format_number(f64::NAN), "NaN");
    }
}
