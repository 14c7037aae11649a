//! The one place logging is set up: filter and format from the configuration, overridden by
//! `COHORT_LOG` and `COHORT_LOG_FORMAT`; output to stderr (journald collects it under systemd).

use cohort_proto::env as vars;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global subscriber.
pub(crate) fn init(config: &Config) {
    let filter = std::env::var(vars::LOG).unwrap_or_else(|_| config.log_filter.clone());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("cohortd: log filter {filter:?} is invalid ({e}); using \"info\"");
        EnvFilter::new("info")
    });
    let format = match std::env::var(vars::LOG_FORMAT).as_deref() {
        Ok("json") => LogFormat::Json,
        Ok("plain") => LogFormat::Plain,
        _ => config.log_format,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(e) = result {
        eprintln!("cohortd: logging could not be set up: {e}");
    }
}
