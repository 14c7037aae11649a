//! Length-prefixed frames: a little-endian u32 byte count, then that many bytes of JSON.
//!
//! These blocking helpers serve the CLI and the SPANK plugin; the daemon reads the same frames
//! asynchronously.

use std::io::{Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest frame accepted: far above any message, far below a memory problem.
pub const MAX_FRAME: u32 = 16 << 20;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection failed or closed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The peer announced a frame larger than [`MAX_FRAME`].
    #[error("frame of {0} bytes is larger than the limit")]
    TooLarge(u32),
    /// The frame is not the expected JSON.
    #[error("malformed message: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes one message as a frame.
pub fn write_frame<T: Serialize>(out: &mut impl Write, message: &T) -> Result<(), FrameError> {
    let body = serde_json::to_vec(message)?;
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge(u32::MAX))?;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut frame = Vec::with_capacity(body.len() + 4);
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&body);
    out.write_all(&frame)?;
    out.flush()?;
    Ok(())
}

/// Reads one frame and parses it.
pub fn read_frame<T: DeserializeOwned>(input: &mut impl Read) -> Result<T, FrameError> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len as usize];
    input.read_exact(&mut body)?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::Request;

    #[test]
    fn frames_round_trip_and_oversized_ones_are_refused() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &Request::GetStatus).unwrap();
        let back: Request = read_frame(&mut buffer.as_slice()).unwrap();
        assert_eq!(back, Request::GetStatus);
        let huge = (MAX_FRAME + 1).to_le_bytes();
        let err = read_frame::<Request>(&mut huge.as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge(_)), "{err}");
        let garbage = [3u8, 0, 0, 0, b'x', b'y', b'z'];
        assert!(matches!(
            read_frame::<Request>(&mut garbage.as_slice()),
            Err(FrameError::Json(_))
        ));
    }
}
