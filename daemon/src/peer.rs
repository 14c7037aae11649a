//! The daemon-to-daemon transport: the cluster key, a mutual HMAC-SHA256 challenge over fresh
//! nonces with the protocol version (so unauthenticated, replayed and wrong-version peers are
//! refused), and length-prefixed JSON frames.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use cohort_proto::peer::PEER_VERSION;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAGIC: &[u8; 8] = b"COHORTP1";

/// Reads the cluster key, refusing a file that others can read.
pub(crate) fn load_key(path: &Path) -> Result<Vec<u8>, String> {
    let how = "create one with `cohortd --gen-key PATH` and copy it to every node (mode 0600, owned by root), as with munge's key";
    let metadata = std::fs::metadata(path)
        .map_err(|e| format!("cluster key {}: {e}; {how}", path.display()))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "cluster key {} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            metadata.permissions().mode() & 0o777
        ));
    }
    let key = std::fs::read(path).map_err(|e| format!("cluster key {}: {e}", path.display()))?;
    let key: Vec<u8> = key.trim_ascii().to_vec();
    if key.len() < 32 {
        return Err(format!(
            "cluster key {} is shorter than 32 bytes; {how}",
            path.display()
        ));
    }
    Ok(key)
}

/// Writes a fresh random key (64 hex characters) with mode 0600; never overwrites.
pub(crate) fn generate_key(path: &Path) -> Result<(), String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(file, "{hex}").map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

fn tag(key: &[u8], role: &[u8], node: &str, theirs: &[u8], mine: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length, so this cannot fail; an all-zero tag would never verify.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(role);
    mac.update(&PEER_VERSION.to_le_bytes());
    // The accepting node's name, length first: a proof made for one node never verifies at
    // another, so a listener that is no node (a user's, named in `cohort top --nodes`) cannot
    // pass a daemon's proof on to a real node.
    mac.update(&u32::try_from(node.len()).unwrap_or(u32::MAX).to_le_bytes());
    mac.update(node.as_bytes());
    mac.update(theirs);
    mac.update(mine);
    mac.finalize().into_bytes().into()
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs the handshake; both sides prove the key over both fresh nonces and the accepting node's
/// name: `node` is the node the initiator asked for, or the acceptor's own name.
pub(crate) async fn handshake(
    stream: &mut TcpStream,
    key: &[u8],
    initiator: bool,
    node: &str,
    limit: Duration,
) -> Result<(), String> {
    tokio::time::timeout(limit, handshake_inner(stream, key, initiator, node))
        .await
        .map_err(|_| "the handshake timed out".to_owned())?
}

async fn handshake_inner(
    stream: &mut TcpStream,
    key: &[u8],
    initiator: bool,
    node: &str,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("during the handshake: {e}");
    let mut mine = [0u8; 32];
    getrandom::fill(&mut mine).map_err(|e| format!("no randomness: {e}"))?;
    let mut hello = Vec::with_capacity(44);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&PEER_VERSION.to_le_bytes());
    hello.extend_from_slice(&mine);
    stream.write_all(&hello).await.map_err(io)?;
    let mut theirs = [0u8; 44];
    stream.read_exact(&mut theirs).await.map_err(io)?;
    if &theirs[..8] != MAGIC {
        return Err("the peer does not speak Cohort's peer protocol".into());
    }
    let version = u32::from_le_bytes([theirs[8], theirs[9], theirs[10], theirs[11]]);
    if version != PEER_VERSION {
        return Err(format!(
            "the peer speaks peer protocol version {version}, this daemon {PEER_VERSION}"
        ));
    }
    let nonce = &theirs[12..];
    let (my_role, their_role): (&[u8], &[u8]) = if initiator {
        (b"connect", b"accept")
    } else {
        (b"accept", b"connect")
    };
    stream
        .write_all(&tag(key, my_role, node, nonce, &mine))
        .await
        .map_err(io)?;
    let mut proof = [0u8; 32];
    stream.read_exact(&mut proof).await.map_err(io)?;
    if !same(&proof, &tag(key, their_role, node, &mine, nonce)) {
        return Err(if initiator {
            format!("the peer does not hold the cluster key, or is not node {node}")
        } else {
            format!("the peer does not hold the cluster key, or did not ask for this node ({node})")
        });
    }
    Ok(())
}

/// Writes one message as a frame.
pub(crate) async fn send<T: Serialize>(stream: &mut TcpStream, message: &T) -> Result<(), String> {
    crate::frame::write(stream, message).await
}

/// Reads one frame; the connection closing first is an error here.
pub(crate) async fn receive<T: DeserializeOwned>(stream: &mut TcpStream) -> Result<T, String> {
    crate::frame::read(stream, cohort_proto::frame::MAX_FRAME)
        .await?
        .ok_or_else(|| "the connection was closed".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(address), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    #[tokio::test]
    async fn the_same_key_passes_and_another_is_refused() {
        let key = b"0123456789abcdef0123456789abcdef".to_vec();
        let (mut a, mut b) = pair().await;
        let limit = Duration::from_secs(5);
        let (x, y) = tokio::join!(
            handshake(&mut a, &key, true, "node2", limit),
            handshake(&mut b, &key, false, "node2", limit)
        );
        assert_eq!((x, y), (Ok(()), Ok(())));
        let other = b"fedcba9876543210fedcba9876543210".to_vec();
        let (mut a, mut b) = pair().await;
        let (x, y) = tokio::join!(
            handshake(&mut a, &key, true, "node2", limit),
            handshake(&mut b, &other, false, "node2", limit)
        );
        assert!(x.is_err() && y.is_err(), "{x:?} {y:?}");
        // A daemon that asked for another node is refused, with the key.
        let (mut a, mut b) = pair().await;
        let (x, y) = tokio::join!(
            handshake(&mut a, &key, true, "evil", limit),
            handshake(&mut b, &key, false, "node2", limit)
        );
        assert!(x.is_err(), "{x:?}");
        assert!(y.unwrap_err().contains("did not ask for this node (node2)"));
    }

    /// A listener without the key, which a daemon dialled (as `cohort top --nodes` would a
    /// name a user gave), passes everything between that daemon and a real node: the proof
    /// the daemon made for the listener's name does not verify at the node.
    #[tokio::test]
    async fn a_proof_relayed_to_another_node_is_refused() {
        let key = b"0123456789abcdef0123456789abcdef".to_vec();
        let limit = Duration::from_secs(5);
        // The daemon dials the relay; the relay dials the real node.
        let (mut daemon, mut relay_in) = pair().await;
        let (mut relay_out, mut node) = pair().await;
        async fn copy(from: &mut TcpStream, to: &mut TcpStream, n: usize) -> std::io::Result<()> {
            let mut buf = vec![0u8; n];
            from.read_exact(&mut buf).await?;
            to.write_all(&buf).await
        }
        let relay = async move {
            // Hellos both ways, then the proofs both ways.
            let _ = copy(&mut relay_in, &mut relay_out, 44).await;
            let _ = copy(&mut relay_out, &mut relay_in, 44).await;
            let _ = copy(&mut relay_in, &mut relay_out, 32).await;
            let _ = copy(&mut relay_out, &mut relay_in, 32).await;
        };
        let (_, at_node, _) = tokio::join!(
            handshake(&mut daemon, &key, true, "relay.example", limit),
            handshake(&mut node, &key, false, "node2", limit),
            relay
        );
        assert!(
            at_node.unwrap_err().contains("did not ask for this node"),
            "the node took a relayed proof"
        );
    }

    #[test]
    fn keys_must_be_private_and_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        generate_key(&path).unwrap();
        assert_eq!(load_key(&path).unwrap().len(), 64);
        assert!(generate_key(&path).is_err(), "never overwrites");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_key(&path).unwrap_err().contains("readable by others"));
        let short = dir.path().join("short");
        std::fs::write(&short, "abc").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_key(&short)
            .unwrap_err()
            .contains("shorter than 32 bytes"));
        assert!(load_key(&dir.path().join("absent"))
            .unwrap_err()
            .contains("cohortd --gen-key"));
    }
}
