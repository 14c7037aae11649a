//! `cohort bench allreduce|broadcast|allgather|reduce_scatter`: nccl-tests' options and
//! columns. Run under `cohort run`; started directly, it starts itself under `cohort run
//! -n RANKS`.

use cohort_proto::env as vars;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use cohort_collectives::bench::{self, BenchConfig, BenchOp};
use cohort_collectives::{Communicator, DataType, ReduceOp};

#[derive(Debug, Clone, Args)]
pub(crate) struct CollArgs {
    /// Smallest size in bytes (K, M, G suffixes).
    #[arg(short = 'b', long = "minbytes", default_value = "8", value_parser = parse_size)]
    min_bytes: usize,
    /// Largest size in bytes.
    #[arg(short = 'e', long = "maxbytes", default_value = "128M", value_parser = parse_size)]
    max_bytes: usize,
    /// Factor between sizes.
    #[arg(short = 'f', long = "stepfactor", default_value_t = 2)]
    factor: usize,
    /// Timed iterations per size.
    #[arg(short = 'n', long = "iters", default_value_t = 20)]
    iters: u32,
    /// Warm-up iterations per size.
    #[arg(short = 'w', long = "warmup_iters", default_value_t = 5)]
    warmup: u32,
    /// Element type: float, double, half, bfloat16, int32, int64, uint8.
    #[arg(short = 'd', long = "datatype", default_value = "float")]
    dtype: String,
    /// Reduction: sum, prod, min, max, avg.
    #[arg(short = 'o', long = "op", default_value = "sum")]
    op: String,
    /// Check every size's result (1) or not (0).
    #[arg(short = 'c', long = "check", default_value_t = 1)]
    check: u8,
    /// Ranks to start when not already running under `cohort run`.
    #[arg(long, default_value_t = 2)]
    ranks: u32,
}

fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (number, multiplier) = match text.chars().last() {
        Some('K' | 'k') => (&text[..text.len() - 1], 1usize << 10),
        Some('M' | 'm') => (&text[..text.len() - 1], 1 << 20),
        Some('G' | 'g') => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("{text:?} is not a size (like 8, 64K, 128M)"))
}

pub(crate) fn collective(op: BenchOp, args: &CollArgs) -> Result<ExitCode> {
    let Some(dtype) = DataType::parse(&args.dtype) else {
        bail!(
            "-d {}: unknown type (float, double, half, bfloat16, int32, int64, uint8)",
            args.dtype
        );
    };
    let Some(redop) = ReduceOp::parse(&args.op) else {
        bail!(
            "-o {}: unknown reduction (sum, prod, min, max, avg)",
            args.op
        );
    };
    if args.min_bytes > args.max_bytes {
        bail!("-b {} is larger than -e {}", args.min_bytes, args.max_bytes);
    }
    if std::env::var_os(vars::RANK).is_none() {
        // Not under a launcher: start this same command under `cohort run`.
        let exe = std::env::current_exe().context("finding the cohort executable")?;
        let status = std::process::Command::new(&exe)
            .arg("run")
            .arg("-n")
            .arg(args.ranks.to_string())
            .arg("--no-prefix")
            .arg("--no-track")
            .arg("--")
            .arg(&exe)
            .args(std::env::args_os().skip(1))
            .status()
            .context("starting cohort run")?;
        return Ok(ExitCode::from(
            u8::try_from(status.code().unwrap_or(1)).unwrap_or(1),
        ));
    }
    // What the program and its libraries hold before any link or buffer exists.
    let at_start = resident_bytes("VmRSS:");
    let comm = Communicator::from_env()?;
    let config = BenchConfig {
        op,
        dtype,
        redop,
        sizes: bench::sizes(args.min_bytes, args.max_bytes, args.factor),
        iters: args.iters.max(1),
        warmup: args.warmup,
        check: args.check != 0,
    };
    let rows = bench::run(&comm, &config)?;
    // The most any rank held resident, beside the largest message.
    let mut peak =
        [i64::try_from(resident_bytes("VmHWM:").saturating_sub(at_start)).unwrap_or(i64::MAX)];
    comm.allreduce(&mut peak, ReduceOp::Max)?;
    let routes = gather_routes(&comm)?;
    if comm.rank() == 0 {
        let mut out = format!(
            "# Cohort {}: {} ranks ({}), {} {}\n#{:>12} {:>13} {:>9} {:>7} {:>11} {:>8} {:>8} {:>7}\n#{:>12} {:>13} {:>9} {:>7} {:>11} {:>8} {:>8} {:>7}\n",
            op.name(),
            comm.size(),
            comm.transport_summary(),
            dtype.name(),
            redop.name(),
            "size", "count", "type", "redop", "time", "algbw", "busbw", "#wrong",
            "(B)", "(elements)", "", "", "(us)", "(GB/s)", "(GB/s)", "",
        );
        // Like nccl-tests' per-rank lines: how each rank reaches the others.
        let routes_at = out.find("\n#").map_or(out.len(), |at| at + 1);
        let lines: String = routes
            .iter()
            .enumerate()
            .map(|(rank, routes)| format!("#  Rank {rank:>3} reaches {routes}\n"))
            .collect();
        out.insert_str(routes_at, &lines);
        let mut total_busbw = 0.0;
        for row in &rows {
            out.push_str(&format!(
                " {:>12} {:>13} {:>9} {:>7} {:>11.2} {:>8.3} {:>8.3} {:>7}\n",
                row.size,
                row.count,
                dtype.name(),
                redop.name(),
                row.time_us,
                row.algbw,
                row.busbw,
                row.wrong
            ));
            total_busbw += row.busbw;
        }
        #[allow(clippy::cast_precision_loss)]
        let average = total_busbw / rows.len().max(1) as f64;
        out.push_str(&format!("# Avg bus bandwidth    : {average:.3}\n"));
        let largest = rows.iter().map(|row| row.size).max().unwrap_or(0);
        let mib = |bytes: f64| bytes / f64::from(1u32 << 20);
        #[allow(clippy::cast_precision_loss)]
        let (peak, largest) = (mib(peak[0] as f64), mib(largest as f64));
        out.push_str(&format!(
            "# Peak memory per rank: {peak:.1} MiB above the program's own (largest message {largest:.1} MiB; {:.1} MiB besides)\n",
            peak - largest
        ));
        crate::write_out(&out)?;
    }
    let wrong: u64 = rows.iter().map(|row| row.wrong).sum();
    if wrong > 0 {
        bail!("{wrong} wrong elements");
    }
    Ok(ExitCode::SUCCESS)
}

/// This process's resident memory (`field` `VmRSS:`) or its peak (`VmHWM:`), or 0 where
/// /proc does not say.
/// A rank's routes grouped by route, each with its peers as ranges: `shm to 1-3; rdma rxe0
/// port 1 GID 1 10.0.0.1 (RoCE v2) to 4-7`.
fn describe_routes(routes: &[(u32, String)]) -> String {
    let mut groups: Vec<(&str, Vec<u32>)> = Vec::new();
    for (rank, route) in routes {
        match groups.iter_mut().find(|(r, _)| r == route) {
            Some((_, ranks)) => ranks.push(*rank),
            None => groups.push((route, vec![*rank])),
        }
    }
    groups
        .into_iter()
        .map(|(route, mut ranks)| {
            ranks.sort_unstable();
            let mut spans: Vec<String> = Vec::new();
            let mut at = 0;
            while at < ranks.len() {
                let mut end = at;
                while end + 1 < ranks.len() && ranks[end + 1] == ranks[end] + 1 {
                    end += 1;
                }
                spans.push(if end == at {
                    ranks[at].to_string()
                } else {
                    format!("{}-{}", ranks[at], ranks[end])
                });
                at = end + 1;
            }
            format!("{route} to {}", spans.join(","))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every rank's routes to its peers (`Communicator::routes`), as one line each, on every
/// rank (two collectives: the longest line's length, then the lines).
fn gather_routes(comm: &Communicator) -> Result<Vec<String>> {
    let mine = describe_routes(comm.routes());
    let mut longest = [i64::try_from(mine.len()).unwrap_or(i64::MAX)];
    comm.allreduce(&mut longest, ReduceOp::Max)?;
    let width = usize::try_from(longest[0]).context("route lines too long")?;
    if width == 0 {
        return Ok(vec![String::new(); comm.size() as usize]);
    }
    let mut line = mine.into_bytes();
    line.resize(width, 0);
    let mut all = vec![0u8; width * comm.size() as usize];
    comm.allgather(&line, &mut all)?;
    Ok(all
        .chunks(width)
        .map(|chunk| {
            let end = chunk.iter().position(|&b| b == 0).unwrap_or(chunk.len());
            String::from_utf8_lossy(&chunk[..end]).into_owned()
        })
        .collect())
}

fn resident_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::describe_routes;

    #[test]
    fn routes_are_grouped_with_their_peers_as_ranges() {
        let rdma = "rdma rxe0 port 1 GID 1 10.0.0.1 (RoCE v2)";
        let routes: Vec<(u32, String)> = [
            (1, "shm"),
            (2, "shm"),
            (4, rdma),
            (5, rdma),
            (7, rdma),
            (3, "shm"),
        ]
        .into_iter()
        .map(|(r, s)| (r, s.to_owned()))
        .collect();
        assert_eq!(
            describe_routes(&routes),
            format!("shm to 1-3; {rdma} to 4-5,7")
        );
        assert_eq!(describe_routes(&[]), "");
    }
}
