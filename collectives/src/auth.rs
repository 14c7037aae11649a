//! Mutual authentication of two processes of one job over a fresh connection: each side proves
//! it holds the job secret with an HMAC-SHA256 over both sides' fresh nonces, so a recorded
//! exchange cannot be replayed and a process without the secret learns nothing.

use std::io::{Read, Write};
use std::time::Instant;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::CommError;

const MAGIC: &[u8; 8] = b"COHORT1\0";

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], role: &[u8], nonce_theirs: &[u8], nonce_mine: &[u8], id: u32) -> [u8; 32] {
    // HMAC takes keys of any length, so this cannot fail; an all-zero tag would never verify.
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return [0; 32];
    };
    mac.update(role);
    mac.update(nonce_theirs);
    mac.update(nonce_mine);
    mac.update(&id.to_le_bytes());
    mac.finalize().into_bytes().into()
}

fn nonce() -> Result<[u8; 32], CommError> {
    let mut nonce = [0u8; 32];
    getrandom::fill(&mut nonce).map_err(|e| CommError::Auth {
        who: "local".into(),
        detail: format!("no randomness for a nonce: {e}"),
    })?;
    Ok(nonce)
}

/// Generates a fresh random job secret (hex).
pub fn generate_secret() -> Result<String, CommError> {
    Ok(nonce()?.iter().map(|b| format!("{b:02x}")).collect())
}

fn set_deadline(stream: &std::net::TcpStream, deadline: Instant) -> std::io::Result<()> {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(std::time::Duration::from_millis(1));
    stream.set_read_timeout(Some(left))?;
    stream.set_write_timeout(Some(left))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs the handshake on a connected stream; `id` is this side's identity (rank, or
/// `u32::MAX` for the store). Returns the peer's identity.
pub(crate) fn handshake(
    stream: &mut std::net::TcpStream,
    secret: &[u8],
    id: u32,
    initiator: bool,
    deadline: Instant,
    who: &str,
) -> Result<u32, CommError> {
    let fail = |detail: String| CommError::Auth {
        who: who.to_owned(),
        detail,
    };
    let io = |e: std::io::Error| fail(format!("during the handshake: {e}"));
    set_deadline(stream, deadline).map_err(io)?;
    let mine = nonce()?;
    let mut hello = Vec::with_capacity(44);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&mine);
    hello.extend_from_slice(&id.to_le_bytes());
    let read_hello = |stream: &mut std::net::TcpStream| -> Result<([u8; 32], u32), CommError> {
        let mut buf = [0u8; 44];
        stream.read_exact(&mut buf).map_err(io)?;
        if &buf[..8] != MAGIC {
            return Err(fail("the peer does not speak Cohort's protocol".into()));
        }
        let mut theirs = [0u8; 32];
        theirs.copy_from_slice(&buf[8..40]);
        let peer = u32::from_le_bytes([buf[40], buf[41], buf[42], buf[43]]);
        Ok((theirs, peer))
    };
    if initiator {
        stream.write_all(&hello).map_err(io)?;
        let (theirs, peer) = read_hello(stream)?;
        let mut their_mac = [0u8; 32];
        stream.read_exact(&mut their_mac).map_err(io)?;
        if !constant_time_eq(&their_mac, &mac(secret, b"accept", &mine, &theirs, peer)) {
            return Err(fail("the peer does not hold the job secret".into()));
        }
        stream
            .write_all(&mac(secret, b"connect", &theirs, &mine, id))
            .map_err(io)?;
        let mut ok = [0u8; 1];
        stream.read_exact(&mut ok).map_err(io)?;
        if ok[0] != 1 {
            return Err(fail("the peer refused our proof of the job secret".into()));
        }
        Ok(peer)
    } else {
        let (theirs, peer) = read_hello(stream)?;
        stream.write_all(&hello).map_err(io)?;
        stream
            .write_all(&mac(secret, b"accept", &theirs, &mine, id))
            .map_err(io)?;
        let mut their_mac = [0u8; 32];
        stream.read_exact(&mut their_mac).map_err(io)?;
        if !constant_time_eq(&their_mac, &mac(secret, b"connect", &mine, &theirs, peer)) {
            let _ = stream.write_all(&[0]);
            return Err(fail("the peer does not hold the job secret".into()));
        }
        stream.write_all(&[1]).map_err(io)?;
        Ok(peer)
    }
}
