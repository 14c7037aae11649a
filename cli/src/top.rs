//! `cohort top`: the node's GPUs, the steps holding them, their users and utilisation, from
//! the local cohortd; with `--nodes`, other nodes' too, which the local cohortd asks over the
//! authenticated peer protocol. Refreshes on a terminal until interrupted; prints once
//! otherwise or with `--once`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use cohort_proto::daemon::{Request, Response, TopGpu, TopNode};

use crate::daemon_client;

/// `cohort top`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct TopArgs {
    /// Other nodes to show too, as a Slurm host list (`node[01-04],gpu7`); their daemons are
    /// asked by this node's.
    #[arg(long, value_name = "LIST")]
    nodes: Option<String>,
    /// Print once and exit (the default when the output is not a terminal).
    #[arg(long)]
    once: bool,
    /// Seconds between refreshes.
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0)]
    interval: f64,
    /// Print the nodes as JSON, once.
    #[arg(long)]
    json: bool,
    /// cohortd's socket.
    #[arg(long, value_name = "PATH", default_value = cohort_proto::daemon::DEFAULT_SOCKET)]
    socket: PathBuf,
}

/// Runs `cohort top`: exit 0, or 1 when a node could not be asked.
pub(crate) fn run(args: &TopArgs) -> Result<ExitCode> {
    if !(args.interval.is_finite() && args.interval >= 0.1) {
        bail!("--interval {}: give at least 0.1 seconds", args.interval);
    }
    let nodes = match &args.nodes {
        Some(list) => {
            cohort_proto::hostlist::expand(list).map_err(|e| anyhow::anyhow!("--nodes: {e}"))?
        }
        None => Vec::new(),
    };
    let request = Request::GetTop { nodes };
    let refresh = !args.once && !args.json && std::io::stdout().is_terminal();
    loop {
        let Response::Top { nodes: top } = daemon_client::ask(&args.socket, &request)? else {
            bail!("cohortd answered with something other than its GPUs");
        };
        let failed = top.iter().any(|node| node.error.is_some());
        if args.json {
            crate::write_out(&format!("{}\n", serde_json::to_string_pretty(&top)?))?;
        } else {
            let mut text = String::new();
            if refresh {
                // Home and clear, then the page.
                text.push_str("\x1b[H\x1b[2J");
            }
            text.push_str(&render(&top, &user_name));
            crate::write_out(&text)?;
        }
        if !refresh {
            return Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            });
        }
        std::thread::sleep(Duration::from_secs_f64(args.interval));
    }
}

/// A user's name, else the uid.
fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |user| user.name)
}

/// The page: per node, a table of its GPUs and the steps the asker may see.
fn render(nodes: &[TopNode], user_name: &dyn Fn(u32) -> String) -> String {
    let mut text = String::new();
    for node in nodes {
        if let Some(e) = &node.error {
            text.push_str(&format!("{}: cannot ask: {e}\n\n", node.node));
            continue;
        }
        let busy = node.gpus.iter().filter(|g| g.in_use).count();
        text.push_str(&format!(
            "{}: {} GPU(s), {busy} held by running steps\n",
            node.node,
            node.gpus.len()
        ));
        if !node.gpus.is_empty() {
            let rows: Vec<[String; 8]> = node.gpus.iter().map(|g| row(g, user_name)).collect();
            let header = [
                "GPU", "MODEL", "UTIL", "MEMORY", "POWER", "TEMP", "STEP", "USER",
            ]
            .map(str::to_owned);
            let mut widths = header.clone().map(|h| h.len());
            for r in &rows {
                for (w, cell) in widths.iter_mut().zip(r) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            for (i, r) in std::iter::once(&header).chain(&rows).enumerate() {
                let mut line = String::from(" ");
                for (cell, w) in r.iter().zip(widths) {
                    line.push_str(&format!(" {cell:<w$}"));
                }
                if let Some(flag) = i.checked_sub(1).and_then(|g| flags(&node.gpus[g])) {
                    line.push_str(&format!("  {flag}"));
                }
                text.push_str(line.trim_end());
                text.push('\n');
            }
        }
        if !node.steps.is_empty() {
            text.push_str("  steps:\n");
            for step in &node.steps {
                text.push_str(&format!("    {step}\n"));
            }
        }
        text.push('\n');
    }
    text
}

/// One GPU's cells.
fn row(gpu: &TopGpu, user_name: &dyn Fn(u32) -> String) -> [String; 8] {
    let gib = |bytes: u64| {
        #[allow(clippy::cast_precision_loss)]
        let g = bytes as f64 / f64::from(1u32 << 30);
        g
    };
    let dash = || "-".to_owned();
    let (util, memory, power, temp) = match &gpu.sample {
        Some(s) => (
            format!("{}%", s.util),
            format!("{:.1}/{:.1} GiB", gib(s.memory_used), gib(s.memory_total)),
            s.power_mw
                .map_or_else(dash, |mw| format!("{:.0} W", f64::from(mw) / 1000.0)),
            s.temperature_c.map_or_else(dash, |t| format!("{t} C")),
        ),
        None => (dash(), dash(), dash(), dash()),
    };
    let (step, user) = match (&gpu.step, gpu.uid, gpu.in_use) {
        (Some(step), Some(uid), _) => (step.clone(), user_name(uid)),
        (_, _, true) => ("(another user's)".to_owned(), dash()),
        _ => ("free".to_owned(), dash()),
    };
    [
        gpu.index.to_string(),
        gpu.model.clone().unwrap_or_else(dash),
        util,
        memory,
        power,
        temp,
        step,
        user,
    ]
}

/// What is worth a sysadmin's eye about one GPU.
fn flags(gpu: &TopGpu) -> Option<String> {
    let mut flags = Vec::new();
    if let Some(idle) = gpu.idle_seconds {
        flags.push(format!("IDLE for {idle} s"));
    }
    if let Some(s) = &gpu.sample {
        if !s.throttle.is_empty() {
            flags.push(format!("throttled: {}", s.throttle.join(",")));
        }
    }
    if let Some(e) = &gpu.error {
        flags.push(format!("cannot sample: {e}"));
    }
    (!flags.is_empty()).then(|| flags.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cohort_proto::daemon::GpuSample;

    #[test]
    fn a_page_shows_each_gpu_its_step_and_user_and_flags_and_unreachable_nodes() {
        let sample = |util| GpuSample {
            util,
            memory_used: 20 << 30,
            memory_total: 40 << 30,
            power_mw: Some(250_000),
            temperature_c: Some(55),
            ..GpuSample::default()
        };
        let gpu = |index, util, step: Option<&str>, uid, in_use| TopGpu {
            index,
            bus_id: format!("0000:1{index}:00.0"),
            model: Some("A100".into()),
            sample: Some(sample(util)),
            error: None,
            in_use,
            step: step.map(str::to_owned),
            uid,
            idle_seconds: None,
        };
        let mut idle = gpu(1, 0, Some("14.0"), Some(1000), true);
        idle.idle_seconds = Some(600);
        let nodes = vec![
            TopNode {
                node: "node1".into(),
                error: None,
                gpus: vec![
                    gpu(0, 97, Some("14.0"), Some(1000), true),
                    idle,
                    gpu(2, 50, None, None, true),
                    gpu(3, 0, None, None, false),
                ],
                steps: vec!["14.0 attempt 0: 2 ranks on 1 node(s), running".into()],
            },
            TopNode {
                node: "node2".into(),
                error: Some("no answer within 5 s".into()),
                gpus: Vec::new(),
                steps: Vec::new(),
            },
        ];
        let page = render(&nodes, &|uid| format!("user{uid}"));
        let lines: Vec<&str> = page.lines().collect();
        assert_eq!(lines[0], "node1: 4 GPU(s), 3 held by running steps");
        assert!(lines[1]
            .split_whitespace()
            .eq(["GPU", "MODEL", "UTIL", "MEMORY", "POWER", "TEMP", "STEP", "USER"]));
        assert!(lines[2].split_whitespace().eq([
            "0",
            "A100",
            "97%",
            "20.0/40.0",
            "GiB",
            "250",
            "W",
            "55",
            "C",
            "14.0",
            "user1000"
        ]));
        assert!(
            lines[3].ends_with("user1000  IDLE for 600 s"),
            "{}",
            lines[3]
        );
        assert!(lines[4].contains("(another user's)"), "{}", lines[4]);
        assert!(lines[5].contains(" free "), "{}", lines[5]);
        assert!(page.contains("node2: cannot ask: no answer within 5 s"));
    }
}
