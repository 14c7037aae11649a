//! The plugin's only conversation: join the step through the local cohortd, with a deadline.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use cohort_proto::daemon::{JoinRequest, Request, Response, StepPlan, TaskExit, API_VERSION};
use cohort_proto::frame::{read_frame, write_frame};

use crate::args::PluginConfig;

/// Reports a task's end (best effort, a few seconds at most).
pub(crate) fn report_exit(socket: &std::path::Path, exit: &TaskExit) -> Result<(), String> {
    let mut stream =
        UnixStream::connect(socket).map_err(|e| format!("cohortd at {}: {e}", socket.display()))?;
    let limit = Some(Duration::from_secs(3));
    stream
        .set_read_timeout(limit)
        .and_then(|()| stream.set_write_timeout(limit))
        .map_err(|e| e.to_string())?;
    let talk = |e: cohort_proto::frame::FrameError| e.to_string();
    write_frame(
        &mut stream,
        &Request::Hello {
            api_version: API_VERSION,
            client: format!("spank_cohort {}", env!("CARGO_PKG_VERSION")),
        },
    )
    .map_err(talk)?;
    let _: Response = read_frame(&mut stream).map_err(talk)?;
    write_frame(&mut stream, &Request::TaskExit(exit.clone())).map_err(talk)?;
    match read_frame::<Response>(&mut stream).map_err(talk)? {
        Response::Recorded => Ok(()),
        Response::Error { message, .. } => Err(message),
        other => Err(format!("cohortd answered {other:?}")),
    }
}

/// Joins the step; the error says why in words for srun's stderr.
pub(crate) fn join(config: &PluginConfig, request: &JoinRequest) -> Result<StepPlan, String> {
    let socket = config.socket.display();
    let mut stream = UnixStream::connect(&config.socket).map_err(|e| {
        format!("cannot reach cohortd at {socket} ({e}); is it running on this node?")
    })?;
    // The daemon answers by the gang's deadline; a little more for the answer to arrive.
    let limit = config.timeout + Duration::from_secs(5);
    stream
        .set_read_timeout(Some(limit))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(10))))
        .map_err(|e| format!("cohortd at {socket}: {e}"))?;
    let talk = |e: cohort_proto::frame::FrameError| format!("cohortd at {socket}: {e}");
    write_frame(
        &mut stream,
        &Request::Hello {
            api_version: API_VERSION,
            client: format!("spank_cohort {}", env!("CARGO_PKG_VERSION")),
        },
    )
    .map_err(talk)?;
    match read_frame::<Response>(&mut stream).map_err(talk)? {
        Response::Hello { .. } => {}
        Response::Error { message, .. } => return Err(format!("cohortd refused: {message}")),
        other => return Err(format!("cohortd answered hello with {other:?}")),
    }
    write_frame(&mut stream, &Request::Join(request.clone())).map_err(talk)?;
    match read_frame::<Response>(&mut stream).map_err(talk)? {
        Response::Joined(plan) => Ok(*plan),
        Response::Error { message, .. } => Err(format!(
            "step {}.{} could not start: {message}",
            request.job_id, request.step_id
        )),
        other => Err(format!("cohortd answered the join with {other:?}")),
    }
}
