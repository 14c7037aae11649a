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
