//! `cohortd.toml`: read into `RawConfig` (unknown keys refused, with the key and line named),
//! then validated into `Config`. Loading has no side effects: it reads the file and nothing
//! else, binds nothing and creates nothing.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The default location of the configuration file.
pub(crate) const DEFAULT_PATH: &str = "/etc/cohort/cohortd.toml";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown key or a wrong type; the message names the line.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value that parses but cannot work.
    #[error("{path}: {key}: {problem}")]
    Invalid {
        /// The file.
        path: String,
        /// The key.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    socket: Option<PathBuf>,
    node_name: Option<String>,
    #[serde(default)]
    peer: RawPeer,
    #[serde(default)]
    topology: RawTopology,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    accounting: RawAccounting,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccounting {
    interval: Option<u64>,
    idle_below: Option<u32>,
    idle_after: Option<u64>,
    scripted_gpus: Option<PathBuf>,
}

/// The GPU accounting's settings (`[accounting]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accounting {
    /// Seconds between two samples of the running steps' GPUs; 0 turns accounting off.
    pub(crate) interval: u64,
    /// Utilisation (percent) below which an allocated GPU counts as idle.
    pub(crate) idle_below: u32,
    /// Seconds a GPU stays idle before it is flagged.
    pub(crate) idle_after: u64,
    /// Samples replayed instead of NVML's, on machines without GPUs (tests, demonstrations).
    pub(crate) scripted_gpus: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    listen: Option<IpAddr>,
    port: Option<u16>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    nodes: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    source: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<u64>,
    max_connections_per_user: Option<u64>,
    idle_timeout: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    filter: Option<String>,
    format: Option<String>,
}

/// Where the topology comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TopologySource {
    /// This machine, through hwloc, NVML and sysfs.
    Live,
    /// A topology file (hwloc XML or NCCL XML): lets test clusters give each simulated node a
    /// real machine's topology.
    File(PathBuf),
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// What the local API's clients may make the daemon hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Open local API connections, all users together; root's connections may use them all.
    pub(crate) max_connections: usize,
    /// Open local API connections of one user other than root.
    pub(crate) max_connections_per_user: usize,
    /// How long a connection may stay silent (between requests, or within one) before it is
    /// closed.
    pub(crate) idle_timeout: std::time::Duration,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    /// The local API's Unix socket.
    pub(crate) socket: PathBuf,
    /// Address the peer protocol listens on.
    pub(crate) peer_listen: IpAddr,
    /// Port of the peer protocol.
    pub(crate) peer_port: u16,
    /// The cluster key file (readable by root only).
    pub(crate) key_file: PathBuf,
    /// The name this node has in Slurm's node lists (`None`: the host name).
    pub(crate) node_name: Option<String>,
    /// Peer daemons' addresses by node name, for clusters whose node names do not resolve
    /// (others are resolved by name, on `peer.port`).
    pub(crate) peer_nodes: std::collections::BTreeMap<String, std::net::SocketAddr>,
    /// Where the topology comes from.
    pub(crate) topology: TopologySource,
    /// What clients may make the daemon hold.
    pub(crate) limits: Limits,
    /// Log filter (`info`, `info,cohort_daemon=debug`); `COHORT_LOG` overrides it.
    pub(crate) log_filter: String,
    /// Log format; `COHORT_LOG_FORMAT` overrides it.
    pub(crate) log_format: LogFormat,
    /// GPU accounting.
    pub(crate) accounting: Accounting,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            // /run is cleared at boot, so a stale socket never outlives the daemon by a reboot.
            socket: PathBuf::from(cohort_proto::daemon::DEFAULT_SOCKET),
            // Peers of a step may be on any interface of the node.
            peer_listen: IpAddr::from([0, 0, 0, 0]),
            // Outside the ephemeral range and unused by Slurm (6817-6819) and munge.
            peer_port: 7107,
            key_file: PathBuf::from("/etc/cohort/cluster.key"),
            node_name: None,
            peer_nodes: std::collections::BTreeMap::new(),
            topology: TopologySource::Live,
            // A node runs a few steps at a time, each needing one connection per node for its
            // join and one per task exit; a user's `cohort status` needs one. These leave room
            // for thousands of tasks while bounding what one user can make the daemon hold.
            limits: Limits {
                max_connections: 4096,
                max_connections_per_user: 64,
                idle_timeout: std::time::Duration::from_secs(60),
            },
            log_filter: "info".to_owned(),
            log_format: LogFormat::Plain,
            // A sample every 5 s costs little (a few NVML calls per GPU) and sees a stalled
            // job within the minute; 10 idle minutes is long past any data loader's stall.
            accounting: Accounting {
                interval: 5,
                idle_below: 5,
                idle_after: 600,
                scripted_gpus: None,
            },
        }
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub(crate) fn load(path: &Path) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: name.clone(),
            source,
        })?;
        Config::parse(&text, &name)
    }

    /// Parses and validates configuration text; `name` names it in errors.
    pub(crate) fn parse(text: &str, name: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: name.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let defaults = Config::default();
        let invalid = |key: &'static str, problem: String| ConfigError::Invalid {
            path: name.to_owned(),
            key,
            problem,
        };
        let topology = match raw.topology.source.as_deref() {
            None | Some("live") => TopologySource::Live,
            Some("") => {
                return Err(invalid(
                    "topology.source",
                    "empty (use \"live\" or a file path)".into(),
                ))
            }
            Some(path) => TopologySource::File(PathBuf::from(path)),
        };
        let log_format = match raw.log.format.as_deref() {
            None | Some("plain") => LogFormat::Plain,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "log.format",
                    format!("{other:?} is not plain or json"),
                ))
            }
        };
        if raw.peer.port == Some(0) {
            return Err(invalid("peer.port", "0 is not a port".into()));
        }
        let socket = raw.socket.unwrap_or(defaults.socket);
        if socket.is_relative() {
            return Err(invalid(
                "socket",
                format!("{} is not an absolute path", socket.display()),
            ));
        }
        let mut peer_nodes = std::collections::BTreeMap::new();
        for (node, address) in raw.peer.nodes {
            let parsed = address.parse().map_err(|_| {
                invalid(
                    "peer.nodes",
                    format!("{node} = {address:?} is not an address:port"),
                )
            })?;
            peer_nodes.insert(node, parsed);
        }
        // Each limit, when given, must be positive: 0 would refuse or close everything.
        let positive = |key: &'static str, value: Option<u64>, default: u64, why: &str| match value
        {
            Some(0) => Err(invalid(key, format!("0 would {why}"))),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let count = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let limits = Limits {
            max_connections: count(positive(
                "limits.max_connections",
                raw.limits.max_connections,
                defaults.limits.max_connections as u64,
                "refuse everyone",
            )?),
            max_connections_per_user: count(positive(
                "limits.max_connections_per_user",
                raw.limits.max_connections_per_user,
                defaults.limits.max_connections_per_user as u64,
                "refuse every user but root",
            )?),
            idle_timeout: std::time::Duration::from_secs(positive(
                "limits.idle_timeout",
                raw.limits.idle_timeout,
                defaults.limits.idle_timeout.as_secs(),
                "close every connection at once",
            )?),
        };
        if raw.node_name.as_deref() == Some("") {
            return Err(invalid("node_name", "empty".into()));
        }
        let accounting = Accounting {
            interval: raw
                .accounting
                .interval
                .unwrap_or(defaults.accounting.interval),
            idle_below: match raw.accounting.idle_below {
                Some(n) if n > 100 => {
                    return Err(invalid(
                        "accounting.idle_below",
                        format!("{n} is not a percentage (0-100)"),
                    ))
                }
                Some(n) => n,
                None => defaults.accounting.idle_below,
            },
            idle_after: positive(
                "accounting.idle_after",
                raw.accounting.idle_after,
                defaults.accounting.idle_after,
                "flag every GPU at once",
            )?,
            scripted_gpus: raw.accounting.scripted_gpus,
        };
        Ok(Config {
            node_name: raw.node_name,
            peer_nodes,
            socket,
            peer_listen: raw.peer.listen.unwrap_or(defaults.peer_listen),
            peer_port: raw.peer.port.unwrap_or(defaults.peer_port),
            key_file: raw.peer.key_file.unwrap_or(defaults.key_file),
            topology,
            limits,
            log_filter: raw.log.filter.unwrap_or(defaults.log_filter),
            log_format,
            accounting,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file the cohortd package installs as /etc/cohort/cohortd.toml.
    fn packaged() -> String {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/cohortd.toml");
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn the_packaged_config_shows_every_key_with_its_true_default() {
        let text = packaged();
        assert_eq!(
            Config::parse(&text, "cohortd.toml").unwrap(),
            Config::default()
        );
        // Uncommented, every `#key = value` line is a real key, and the defaults shown are the
        // defaults (the examples marked as such aside).
        let defaults: String = text
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
                _ => line,
            })
            .filter(|line| !line.starts_with("node_name") && !line.starts_with("scripted_gpus"))
            .filter(|line| !line.starts_with("[peer.nodes]") && !line.starts_with("gpu001"))
            .map(|line| format!("{line}\n"))
            .collect();
        let parsed = Config::parse(&defaults, "uncommented").unwrap();
        assert_eq!(parsed, Config::default(), "{defaults}");
        // And the examples are valid too.
        let examples: String = text
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest)
                    if rest.starts_with('[') || rest.contains(" = ") && !rest.starts_with(' ') =>
                {
                    rest
                }
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let parsed = Config::parse(&examples, "examples").unwrap();
        assert_eq!(parsed.node_name.as_deref(), Some("gpu001"));
        assert_eq!(parsed.peer_nodes.len(), 1);
    }

    #[test]
    fn every_key_is_in_the_man_page() {
        let page = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../packaging/man/cohortd.toml.5"
        ))
        .unwrap();
        let text = packaged();
        for key in [
            "socket",
            "node_name",
            "listen",
            "port",
            "key_file",
            "source",
            "max_connections",
            "max_connections_per_user",
            "idle_timeout",
            "filter",
            "format",
            "interval",
            "idle_below",
            "idle_after",
            "scripted_gpus",
        ] {
            assert!(
                page.contains(&format!(".BR {key} ")) || page.contains(&format!(".B {key}")),
                "{key} missing from cohortd.toml(5)"
            );
            assert!(
                text.contains(&format!("#{key} = ")),
                "{key} missing from packaging/cohortd.toml"
            );
        }
        for section in [
            "[peer]",
            "[peer.nodes]",
            "[topology]",
            "[limits]",
            "[log]",
            "[accounting]",
        ] {
            assert!(
                page.contains(section),
                "{section} missing from cohortd.toml(5)"
            );
        }
    }

    #[test]
    fn a_full_file_parses_and_an_empty_one_gives_the_defaults() {
        let text = r#"
socket = "/tmp/x/cohortd.sock"
[peer]
listen = "10.99.0.11"
port = 7200
key_file = "/tmp/x/key"
[topology]
source = "/srv/topo.xml"
[limits]
max_connections = 100
max_connections_per_user = 8
idle_timeout = 5
[log]
filter = "debug"
format = "json"
"#;
        let config = Config::parse(text, "t.toml").unwrap();
        assert_eq!(config.peer_port, 7200);
        assert_eq!(
            config.topology,
            TopologySource::File("/srv/topo.xml".into())
        );
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.limits.max_connections_per_user, 8);
        assert_eq!(
            config.limits.idle_timeout,
            std::time::Duration::from_secs(5)
        );
        assert_eq!(Config::parse("", "t.toml").unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named_with_their_line() {
        let err = Config::parse("socket = \"/a\"\n[peer]\nprot = 1\n", "c.toml").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("c.toml: "), "{text}");
        assert!(text.contains("line 3"), "{text}");
        assert!(text.contains("prot"), "{text}");
        let err = Config::parse("[log]\nformat = \"xml\"\n", "c.toml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "c.toml: log.format: \"xml\" is not plain or json"
        );
        let err = Config::parse("[peer]\nport = \"x\"\n", "c.toml").unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = Config::parse("[limits]\nidle_timeout = 0\n", "c.toml").unwrap_err();
        assert!(err.to_string().contains("limits.idle_timeout"), "{err}");
        // The daemon does not use the catalog: the key is refused, not silently ignored.
        let err = Config::parse("[catalog]\nroot = \"/x\"\n", "c.toml").unwrap_err();
        assert!(err.to_string().contains("catalog"), "{err}");
        let err = Config::parse("socket = \"relative.sock\"\n", "c.toml").unwrap_err();
        assert!(err.to_string().contains("not an absolute path"), "{err}");
    }
}
