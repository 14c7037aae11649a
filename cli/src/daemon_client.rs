//! A blocking client of the local cohortd: connect, exchange hello, ask one thing.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cohort_proto::daemon::{Request, Response, API_VERSION};
use cohort_proto::frame::{read_frame, write_frame};

/// Sends one request after the hello and returns the response.
pub(crate) fn ask(socket: &Path, request: &Request) -> Result<Response> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach cohortd at {} (is it running? `cohortd --config ...`)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    write_frame(
        &mut stream,
        &Request::Hello {
            api_version: API_VERSION,
            client: format!("cohort {}", env!("CARGO_PKG_VERSION")),
        },
    )
    .context("talking to cohortd")?;
    match read_frame::<Response>(&mut stream).context("reading cohortd's hello")? {
        Response::Hello { .. } => {}
        Response::Error { code, message } => {
            bail!("cohortd refused the connection ({code:?}): {message}")
        }
        other => bail!("cohortd answered hello with {other:?}"),
    }
    write_frame(&mut stream, request).context("talking to cohortd")?;
    let response = read_frame::<Response>(&mut stream).context("reading cohortd's answer")?;
    if let Response::Error { code, message } = &response {
        bail!("cohortd ({code:?}): {message}");
    }
    Ok(response)
}
