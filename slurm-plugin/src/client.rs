//! The plugin's conversations with the local cohortd: join the step, report task exits, take
//! the step's GPU series at its end; each with a deadline.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use cohort_proto::daemon::{
    GpuSeries, JoinRequest, Request, Response, StepPlan, TaskExit, API_VERSION,
};
use cohort_proto::frame::{read_frame, write_frame, FrameError};

use crate::args::PluginConfig;

fn talk(socket: &Path) -> impl Fn(FrameError) -> String + '_ {
    move |e| format!("cohortd at {}: {e}", socket.display())
}

/// Connects and exchanges hello; answers must come within `limit`.
fn connect(socket: &Path, limit: Duration) -> Result<UnixStream, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach cohortd at {} ({e}); is it running on this node?",
            socket.display()
        )
    })?;
    stream
        .set_read_timeout(Some(limit))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(10))))
        .map_err(|e| format!("cohortd at {}: {e}", socket.display()))?;
    write_frame(
        &mut stream,
        &Request::Hello {
            api_version: API_VERSION,
            client: format!("spank_cohort {}", env!("CARGO_PKG_VERSION")),
        },
    )
    .map_err(talk(socket))?;
    match read_frame::<Response>(&mut stream).map_err(talk(socket))? {
        Response::Hello { .. } => Ok(stream),
        Response::Error { message, .. } => Err(format!("cohortd refused: {message}")),
        other => Err(format!("cohortd answered hello with {other:?}")),
    }
}

/// Reports a task's end (best effort, a few seconds at most).
pub(crate) fn report_exit(socket: &Path, exit: &TaskExit) -> Result<(), String> {
    let mut stream = connect(socket, Duration::from_secs(3))?;
    write_frame(&mut stream, &Request::TaskExit(exit.clone())).map_err(talk(socket))?;
    match read_frame::<Response>(&mut stream).map_err(talk(socket))? {
        Response::Recorded => Ok(()),
        Response::Error { message, .. } => Err(message),
        other => Err(format!("cohortd answered {other:?}")),
    }
}

/// The series of the step's GPUs on this node (best effort, a few seconds at most).
pub(crate) fn step_gpus(socket: &Path, key: (u32, u32, u32)) -> Result<Vec<GpuSeries>, String> {
    let mut stream = connect(socket, Duration::from_secs(3))?;
    let request = Request::GetStepGpus {
        job_id: key.0,
        step_id: key.1,
        attempt: key.2,
    };
    write_frame(&mut stream, &request).map_err(talk(socket))?;
    match read_frame::<Response>(&mut stream).map_err(talk(socket))? {
        Response::StepGpus { series } => Ok(series),
        Response::Error { message, .. } => Err(message),
        other => Err(format!("cohortd answered {other:?}")),
    }
}

/// Joins the step; the error says why in words for srun's stderr.
pub(crate) fn join(config: &PluginConfig, request: &JoinRequest) -> Result<StepPlan, String> {
    // The daemon answers by the gang's deadline; a little more for the answer to arrive.
    let mut stream = connect(&config.socket, config.timeout + Duration::from_secs(5))?;
    write_frame(&mut stream, &Request::Join(request.clone())).map_err(talk(&config.socket))?;
    match read_frame::<Response>(&mut stream).map_err(talk(&config.socket))? {
        Response::Joined(plan) => Ok(*plan),
        Response::Error { message, .. } => Err(format!(
            "step {}.{} could not start: {message}",
            request.job_id, request.step_id
        )),
        other => Err(format!("cohortd answered the join with {other:?}")),
    }
}
