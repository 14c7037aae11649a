//! Daemon-to-daemon messages: the input as one `PeerMsg` in JSON (a follower's summary is
//! validated as the leader validates it), and as a peer connection's frames through the
//! daemon's own frame reader.

#![no_main]

use cohort_proto::peer::PeerMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = serde_json::from_slice::<PeerMsg>(data) {
        if let PeerMsg::Summary(summary) = &message {
            let _ = summary.validate();
        }
        // What was read writes back.
        let _ = serde_json::to_vec(&message);
    }
    cohort_daemon::fuzzing::peer_frames(data);
});
