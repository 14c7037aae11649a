//! `proto`'s length-prefixed JSON frames over any async stream (the Unix socket and peer TCP).

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads one frame of at most `max` bytes; `None` when the other side closed the connection
/// between frames. The body's buffer grows as its bytes arrive, so a client that announces a
/// large frame and sends little holds little memory.
pub(crate) async fn read<T: DeserializeOwned>(
    stream: &mut (impl AsyncRead + Unpin),
    max: u32,
) -> Result<Option<T>, String> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let len = u32::from_le_bytes(len);
    if len > max {
        return Err(format!(
            "a frame of {len} bytes is larger than the limit of {max}"
        ));
    }
    let mut body = Vec::with_capacity((len as usize).min(64 << 10));
    let read = (&mut *stream)
        .take(u64::from(len))
        .read_to_end(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    if read != len as usize {
        return Err(format!(
            "the connection closed {read} bytes into a frame of {len}"
        ));
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| format!("malformed message: {e}"))
}

/// Writes one message as a frame (encoded as `proto::frame` encodes it).
pub(crate) async fn write<T: Serialize>(
    stream: &mut (impl AsyncWrite + Unpin),
    message: &T,
) -> Result<(), String> {
    let mut frame = Vec::new();
    cohort_proto::frame::write_frame(&mut frame, message).map_err(|e| e.to_string())?;
    stream.write_all(&frame).await.map_err(|e| e.to_string())
}
