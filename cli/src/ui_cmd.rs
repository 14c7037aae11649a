//! `cohort ui`: serves the read-only web view of the catalog (the `cohort-ui` crate) and says
//! how to reach it from a laptop through SSH.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;

use crate::catalog::{catalog_root, CatalogArg};

/// The port `cohort ui` listens on unless told.
pub(crate) const DEFAULT_PORT: u16 = 7180;

/// `cohort ui`'s options.
#[derive(Debug, Args)]
pub(crate) struct UiArgs {
    #[command(flatten)]
    catalog: CatalogArg,
    /// Where to listen: loopback by default, reached through an SSH tunnel. Any other address
    /// lets others on the network reach it (the token still guards it).
    #[arg(long, value_name = "ADDR:PORT", default_value_t = SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))]
    bind: SocketAddr,
    /// The access token every request must carry (default: a new random one). Give your own
    /// to keep bookmarks across restarts; keep it secret.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "COHORT_UI_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "this-host".into())
}

pub(crate) fn ui(args: &UiArgs) -> Result<ExitCode> {
    let token = match &args.token {
        Some(t)
            if t.len() < 16
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)) =>
        {
            anyhow::bail!("--token: give at least 16 letters, digits, '-' or '_'");
        }
        Some(t) => t.clone(),
        None => cohort_ui::new_token(),
    };
    let root = catalog_root(args.catalog.path())?;
    let server = cohort_ui::Ui::bind(&cohort_ui::Options {
        catalog: root.clone(),
        bind: args.bind,
        token: token.clone(),
    })
    .with_context(|| format!("cohort ui on {}", args.bind))?;
    let addr = server.local_addr();
    let port = addr.port();
    let text = if addr.ip().is_loopback() {
        format!(
            "cohort ui: the catalog at {} (read-only), on http://localhost:{port}/?token={token}\n  from your machine: ssh -N -L {port}:localhost:{port} {}@{}   then open the URL above\n",
            root.display(),
            std::env::var("USER").unwrap_or_else(|_| "you".into()),
            host_name()
        )
    } else {
        let host = if addr.ip().is_unspecified() {
            host_name()
        } else {
            addr.ip().to_string()
        };
        format!(
            "cohort ui: the catalog at {} (read-only), on http://{host}:{port}/?token={token}\n  listening on {addr}: anyone who can reach it needs the token; keep it secret\n",
            root.display()
        )
    };
    // Said once; a closed stdout (`cohort ui | head -1`) does not stop the server.
    let mut out = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut out, format!("{text}  Ctrl-C stops it\n").as_bytes());
    let _ = std::io::Write::flush(&mut out);
    drop(out);
    server.serve()?;
    Ok(ExitCode::SUCCESS)
}
