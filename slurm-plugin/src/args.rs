//! Strict parsing of what users and administrators give the plugin: `plugstack.conf`
//! arguments (`socket=`, `timeout=`, `catalog=`, `requeue=`, `nccl=`), the `--cohort-bind` and
//! `--cohort-requeue` values.

use std::path::PathBuf;
use std::time::Duration;

/// Settings from `plugstack.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// cohortd's socket; `%n` stands for the node's name.
    pub socket: PathBuf,
    /// How long the gang start may take.
    pub timeout: Duration,
    /// The cluster's experiment catalog, for steps run with `--cohort-exp` whose job does not
    /// set `COHORT_CATALOG`.
    pub catalog: Option<PathBuf>,
    /// `requeue=N`: the default of `--cohort-requeue` for every job (none: no requeue unless
    /// a job asks).
    pub requeue: Option<u32>,
    /// `nccl=off` turns off the NCCL hints (`NCCL_IB_HCA`, `NCCL_SOCKET_IFNAME`,
    /// `NCCL_TOPO_FILE`) tasks get where their environment sets none (`nccl=on`, the default).
    pub nccl_hints: bool,
}

impl Default for PluginConfig {
    fn default() -> PluginConfig {
        PluginConfig {
            socket: PathBuf::from(cohort_proto::daemon::DEFAULT_SOCKET),
            // Long enough for slow nodes to start their step, short enough that a missing
            // node fails the step within a minute.
            timeout: Duration::from_secs(60),
            catalog: None,
            requeue: None,
            nccl_hints: true,
        }
    }
}

impl PluginConfig {
    /// Parses `key=value` arguments; unknown keys and bad values are errors.
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<PluginConfig, String> {
        let mut config = PluginConfig::default();
        for arg in args {
            let Some((key, value)) = arg.split_once('=') else {
                return Err(format!("plugstack argument {arg:?} is not key=value"));
            };
            match key {
                "socket" if value.starts_with('/') => config.socket = PathBuf::from(value),
                "socket" => return Err(format!("socket={value}: not an absolute path")),
                "catalog" if value.starts_with('/') => config.catalog = Some(PathBuf::from(value)),
                "catalog" => return Err(format!("catalog={value}: not an absolute path")),
                "requeue" => {
                    config.requeue = Some(
                        parse_requeue(Some(value)).map_err(|e| format!("requeue={value}: {e}"))?,
                    );
                }
                "nccl" => {
                    config.nccl_hints = match value {
                        "on" => true,
                        "off" => false,
                        _ => return Err(format!("nccl={value}: use on or off")),
                    };
                }
                "timeout" => {
                    let seconds: u64 = value
                        .parse()
                        .ok()
                        .filter(|&s| s > 0 && s <= 3600)
                        .ok_or_else(|| {
                            format!("timeout={value}: not a number of seconds (1-3600)")
                        })?;
                    config.timeout = Duration::from_secs(seconds);
                }
                other => {
                    return Err(format!(
                        "unknown plugstack argument {other:?} (known: socket, timeout, catalog, requeue, nccl)"
                    ))
                }
            }
        }
        Ok(config)
    }
}

/// How many times `--cohort-requeue` without a number requeues a job.
pub const DEFAULT_REQUEUES: u32 = 10;
/// The most requeues one job may ask for.
pub const MAX_REQUEUES: u32 = 1000;

/// Parses the value of `--cohort-requeue[=N]` (none: [`DEFAULT_REQUEUES`]); 0 turns a
/// plugstack default off for one job.
pub fn parse_requeue(value: Option<&str>) -> Result<u32, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(DEFAULT_REQUEUES),
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|&n| n <= MAX_REQUEUES)
            .ok_or_else(|| format!("{text:?} is not a number of requeues (0-{MAX_REQUEUES})")),
    }
}

/// What `--cohort-bind` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// The task's GPU and CPUs.
    All,
    /// The task's GPU only.
    Gpu,
    /// Nothing: every task sees what Slurm gave the step.
    None,
}

impl Bind {
    /// Parses `all`, `gpu` or `none`.
    pub fn parse(text: &str) -> Result<Bind, String> {
        match text {
            "all" => Ok(Bind::All),
            "gpu" => Ok(Bind::Gpu),
            "none" => Ok(Bind::None),
            other => Err(format!("--cohort-bind={other}: use all, gpu or none")),
        }
    }
}

/// The srun and sbatch options the plugin registers.
pub const OPTION_COHORT: &std::ffi::CStr = c"cohort";
/// `--cohort-exp=NAME`.
pub const OPTION_EXP: &std::ffi::CStr = c"cohort-exp";
/// `--cohort-trial=ID`.
pub const OPTION_TRIAL: &std::ffi::CStr = c"cohort-trial";
/// `--cohort-bind=all|gpu|none`.
pub const OPTION_BIND: &std::ffi::CStr = c"cohort-bind";
/// `--cohort-requeue[=N]`.
pub const OPTION_REQUEUE: &std::ffi::CStr = c"cohort-requeue";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_values_parse() {
        assert_eq!(Bind::parse("gpu"), Ok(Bind::Gpu));
        assert!(Bind::parse("cpu").is_err());
    }

    #[test]
    fn spank_cohort_8_describes_every_option_and_plugstack_argument() {
        let page = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../packaging/man/spank_cohort.8"
        ))
        .unwrap();
        for option in [
            OPTION_COHORT,
            OPTION_EXP,
            OPTION_TRIAL,
            OPTION_BIND,
            OPTION_REQUEUE,
        ] {
            let name = option.to_string_lossy();
            let roff = format!("\\-\\-{}", name.replace('-', "\\-"));
            assert!(page.contains(&roff), "spank_cohort(8) lacks --{name}");
        }
        for argument in [
            "socket=/x",
            "timeout=5",
            "catalog=/x",
            "requeue=3",
            "nccl=off",
        ] {
            let key = argument.split('=').next().unwrap();
            assert!(
                page.contains(&format!(".BI {key}= ")),
                "spank_cohort(8) lacks {key}="
            );
            assert!(PluginConfig::parse([argument]).is_ok(), "{argument}");
        }
    }

    #[test]
    fn plugstack_arguments_are_strict() {
        let config = PluginConfig::parse(["socket=/run/x.sock", "timeout=30"]).unwrap();
        assert_eq!(config.timeout, Duration::from_secs(30));
        assert_eq!(PluginConfig::parse([]).unwrap(), PluginConfig::default());
        assert!(PluginConfig::parse(["sockets=/x"])
            .unwrap_err()
            .contains("unknown"));
        assert!(PluginConfig::parse(["timeout=0"]).is_err());
        assert!(PluginConfig::parse(["socket=relative"]).is_err());
        assert!(PluginConfig::parse(["timeout"]).is_err());
        assert_eq!(PluginConfig::parse(["requeue=3"]).unwrap().requeue, Some(3));
        assert!(PluginConfig::default().nccl_hints);
        assert!(!PluginConfig::parse(["nccl=off"]).unwrap().nccl_hints);
        assert_eq!(
            PluginConfig::parse(["nccl=no"]).unwrap_err(),
            "nccl=no: use on or off"
        );
        assert_eq!(
            PluginConfig::parse(["requeue=many"]).unwrap_err(),
            "requeue=many: \"many\" is not a number of requeues (0-1000)"
        );
    }

    #[test]
    fn cohort_requeue_takes_an_optional_count() {
        assert_eq!(parse_requeue(None), Ok(DEFAULT_REQUEUES));
        assert_eq!(parse_requeue(Some("")), Ok(DEFAULT_REQUEUES));
        assert_eq!(parse_requeue(Some("0")), Ok(0));
        assert_eq!(parse_requeue(Some(" 4 ")), Ok(4));
        assert!(parse_requeue(Some("-1")).is_err());
        assert!(parse_requeue(Some("1001")).is_err());
    }
}
