//! cohortd: the per-node daemon, as a library so that the fuzz targets reach the real local
//! API and frame reader (`fuzzing`). `main` parses arguments, loads the configuration, sets up
//! logging, builds the runtime and runs the app until a signal; the work is in `app`. Every
//! other module stays crate-private.
//!
//! Exit codes: 0 after a clean shutdown (SIGTERM, SIGINT) or a valid `--check-config`, 1 when
//! the daemon fails while running, 2 for a bad configuration.

#![forbid(unsafe_code)]

mod accounting;
mod api;
mod app;
mod bench;
mod config;
mod frame;
pub mod fuzzing;
mod gang;
mod limits;
mod peer;
mod planning;
mod top;
mod topo;
mod trace;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// cohortd: discovers this node's topology and serves it to the SPANK plugin and the CLI.
#[derive(Debug, Parser)]
#[command(name = "cohortd", version, about)]
struct Args {
    /// Configuration file.
    #[arg(long, value_name = "FILE", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    /// Check the configuration (and the topology file it names) and exit.
    #[arg(long)]
    check_config: bool,
    /// Write a new cluster key to FILE (mode 0600; never overwrites) and exit.
    #[arg(long, value_name = "FILE")]
    gen_key: Option<PathBuf>,
    /// Measure a gang start across N simulated nodes in this process and exit.
    #[arg(long, value_name = "N")]
    bench_gang: Option<u32>,
    /// Runs of --bench-gang.
    #[arg(long, default_value_t = 5, requires = "bench_gang")]
    repeats: u32,
    /// The followers' side of --bench-gang, which starts it in a second process.
    #[arg(long, value_name = "ADDRESS", hide = true, requires = "bench_gang")]
    bench_followers_of: Option<std::net::SocketAddr>,
    /// Write the man page cohortd.8 (from these same definitions) into DIR and exit.
    #[arg(long, value_name = "DIR", hide = true)]
    generate_man: Option<PathBuf>,
}

/// The `cohortd` command: everything the binary does.
pub fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.generate_man {
        use clap::CommandFactory;
        let page = clap_mangen::Man::new(Args::command()).section("8");
        let mut out = Vec::new();
        let written = page
            .render(&mut out)
            .and_then(|()| std::fs::create_dir_all(dir))
            .and_then(|()| std::fs::write(dir.join("cohortd.8"), &out));
        return match written {
            Ok(()) => {
                println!("{}: man page written", dir.join("cohortd.8").display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cohortd: {}: cannot write the man page: {e}", dir.display());
                ExitCode::from(2)
            }
        };
    }
    if let Some(path) = &args.gen_key {
        return match peer::generate_key(path) {
            Ok(()) => {
                println!(
                    "{}: cluster key written; copy it to every node (mode 0600, owned by root)",
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cohortd: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Some(nodes) = args.bench_gang {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build();
        return match runtime.map_err(anyhow::Error::from).and_then(|rt| {
            rt.block_on(async {
                match args.bench_followers_of {
                    Some(leader) => bench::followers(nodes, leader).await,
                    None => bench::gang(nodes, args.repeats.max(1)).await,
                }
            })
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cohortd: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let config = match config::Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("cohortd: {e}");
            return ExitCode::from(2);
        }
    };
    // Without the cluster key, daemons cannot trust each other: refuse to start.
    let key = match peer::load_key(&config.key_file) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("cohortd: {}: {e}", args.config.display());
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        return match topo::check_source(&config.topology) {
            Ok(()) => {
                println!("{}: configuration is valid", args.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cohortd: {}: {e}", args.config.display());
                ExitCode::from(2)
            }
        };
    }
    trace::init(&config);
    // A leader holds one connection per node of a starting step: take every open file the
    // hard limit allows (the packaged unit sets it to 65,536).
    if let Ok((soft, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        if soft < hard {
            let _ = nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_NOFILE,
                hard,
                hard,
            );
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("cohortd")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cohortd: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(app::run(config, key));
    // A discovery still running on a blocking thread (hwloc or NVML stuck in the kernel, a
    // topology file that never ends) must not hold up the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("cohortd: {e:#}");
            ExitCode::from(1)
        }
    }
}
