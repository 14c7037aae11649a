//! Agreeing on a one-sided link (RDMA) over the TCP connection two ranks already share: each
//! side offers its connection details or declines with a reason; when both offered, each
//! connects to the other's details and says whether that worked; when both did, each checks
//! the link end to end and says whether that worked. Only when both sides connected and
//! checked do both use the link; otherwise both go on over TCP, and both know why.
//!
//! The exchange is three rounds of small frames (tag, length, bytes) with a deadline, so a peer
//! that never answers cannot hold the job, and afterwards the connection carries nothing of
//! it: TCP can take over from the next byte.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// One side's part in setting up a link.
pub(crate) trait Setup {
    /// The connected link.
    type Link;
    /// What the peer needs to connect to this side.
    fn offer(&self) -> Vec<u8>;
    /// Connects to the peer's offer.
    fn connect(self, peer: &[u8]) -> Result<Self::Link, String>;
    /// Once both sides connected: checks that the link carries something both ways (a
    /// fabric can refuse what both ends set up).
    fn check(link: &mut Self::Link) -> Result<(), String>;
}

const DECLINE: u8 = 0;
const OFFER: u8 = 1;
const CONNECTED: u8 = 2;
const FAILED: u8 = 3;
/// Longest frame body accepted (an offer is tens of bytes; a reason a line).
const MAX_FRAME: usize = 4096;

/// Agrees with the peer at the other end of `stream` on a link: `local` is this side's setup,
/// or why it has none. `Ok(Err(why))`: the link is not used (the reason names which side and
/// what failed); `Err`: the connection itself failed.
pub(crate) fn agree<S: Setup>(
    stream: &mut TcpStream,
    local: Result<S, String>,
    deadline: Instant,
) -> std::io::Result<Result<S::Link, String>> {
    let (read_timeout, write_timeout) = (stream.read_timeout()?, stream.write_timeout()?);
    stream.set_nonblocking(false)?;
    let outcome = exchange(stream, local, deadline);
    stream.set_read_timeout(read_timeout)?;
    stream.set_write_timeout(write_timeout)?;
    outcome
}

fn exchange<S: Setup>(
    stream: &mut TcpStream,
    local: Result<S, String>,
    deadline: Instant,
) -> std::io::Result<Result<S::Link, String>> {
    match &local {
        Ok(setup) => send(stream, OFFER, &setup.offer(), deadline)?,
        Err(why) => send(stream, DECLINE, why.as_bytes(), deadline)?,
    }
    let (tag, body) = receive(stream, deadline)?;
    let setup = match (local, tag) {
        (Err(why), _) => return Ok(Err(format!("this side: {why}"))),
        (Ok(_), DECLINE) => return Ok(Err(format!("the peer: {}", text(&body)))),
        (Ok(setup), OFFER) => setup,
        (Ok(_), other) => return Err(bad(format!("unexpected frame {other} in the first round"))),
    };
    let mut link = match verdicts(stream, setup.connect(&body), deadline, "second")? {
        Ok(link) => link,
        Err(why) => return Ok(Err(why)),
    };
    let checked = S::check(&mut link).map(|()| link);
    verdicts(stream, checked, deadline, "third")
}

/// Sends this side's verdict on a step (done, or why not) and reads the peer's: the step's
/// result where both succeeded, else the first reason.
fn verdicts<T>(
    stream: &mut TcpStream,
    mine: Result<T, String>,
    deadline: Instant,
    round: &str,
) -> std::io::Result<Result<T, String>> {
    match &mine {
        Ok(_) => send(stream, CONNECTED, &[], deadline)?,
        Err(why) => send(stream, FAILED, why.as_bytes(), deadline)?,
    }
    let (tag, body) = receive(stream, deadline)?;
    Ok(match (mine, tag) {
        (Err(why), _) => Err(format!("this side: {why}")),
        (Ok(_), FAILED) => Err(format!("the peer: {}", text(&body))),
        (Ok(done), CONNECTED) => Ok(done),
        (Ok(_), other) => {
            return Err(bad(format!(
                "unexpected frame {other} in the {round} round"
            )))
        }
    })
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

fn bad(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

fn time_left(deadline: Instant) -> std::io::Result<std::time::Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    Ok(left)
}

fn send(stream: &mut TcpStream, tag: u8, body: &[u8], deadline: Instant) -> std::io::Result<()> {
    let body = &body[..body.len().min(MAX_FRAME)];
    let mut frame = Vec::with_capacity(5 + body.len());
    frame.push(tag);
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_le_bytes());
    frame.extend_from_slice(body);
    stream.set_write_timeout(Some(time_left(deadline)?))?;
    stream.write_all(&frame)
}

fn receive(stream: &mut TcpStream, deadline: Instant) -> std::io::Result<(u8, Vec<u8>)> {
    let mut header = [0u8; 5];
    read_full(stream, &mut header, deadline)?;
    let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_FRAME {
        return Err(bad(format!("a frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    read_full(stream, &mut body, deadline)?;
    Ok((header[0], body))
}

fn read_full(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        stream.set_read_timeout(Some(time_left(deadline)?))?;
        match stream.read(&mut buf[got..]) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Duration;

    /// A mock of the verbs setup (no RDMA device here): offers a name, and connects unless
    /// told to fail; the link checks out unless its name says it does not.
    struct MockSetup {
        name: &'static str,
        fail: bool,
    }

    impl Setup for MockSetup {
        type Link = String;
        fn offer(&self) -> Vec<u8> {
            self.name.as_bytes().to_vec()
        }
        fn connect(self, peer: &[u8]) -> Result<String, String> {
            if self.fail {
                Err(format!("{} cannot reach {}", self.name, text(peer)))
            } else {
                Ok(format!("{}->{}", self.name, text(peer)))
            }
        }
        fn check(link: &mut String) -> Result<(), String> {
            if link.starts_with("unreachable") {
                Err(format!("{link}: no answer"))
            } else {
                Ok(())
            }
        }
    }

    fn mock(name: &'static str, fail: bool) -> Result<MockSetup, String> {
        Ok(MockSetup { name, fail })
    }

    /// Runs both sides at once; each then sends one more byte over the connection, which the
    /// other must read next (nothing of the exchange is left behind).
    fn both(
        a: Result<MockSetup, String>,
        b: Result<MockSetup, String>,
    ) -> (Result<String, String>, Result<String, String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let side_b = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            side(&mut stream, b, deadline, b"B", b"A")
        });
        let mut stream = TcpStream::connect(address).unwrap();
        let outcome = side(&mut stream, a, deadline, b"A", b"B");
        (outcome, side_b.join().unwrap())
    }

    /// Agrees, then sends `mine` and expects `theirs` as the next byte.
    fn side(
        stream: &mut TcpStream,
        setup: Result<MockSetup, String>,
        deadline: Instant,
        mine: &[u8; 1],
        theirs: &[u8; 1],
    ) -> Result<String, String> {
        let outcome = agree(stream, setup, deadline).unwrap();
        stream.write_all(mine).unwrap();
        let mut next = [0u8];
        stream.read_exact(&mut next).unwrap();
        assert_eq!(&next, theirs);
        outcome
    }

    #[test]
    fn both_offer_and_connect_then_both_use_the_link() {
        let (a, b) = both(mock("a", false), mock("b", false));
        assert_eq!(a.unwrap(), "a->b");
        assert_eq!(b.unwrap(), "b->a");
    }

    #[test]
    fn one_side_declines_then_neither_uses_it_and_both_know_why() {
        let (a, b) = both(mock("a", false), Err("no RDMA device on this node".into()));
        assert_eq!(a.unwrap_err(), "the peer: no RDMA device on this node");
        assert_eq!(b.unwrap_err(), "this side: no RDMA device on this node");
    }

    #[test]
    fn one_side_fails_to_connect_then_neither_uses_it() {
        let (a, b) = both(mock("a", true), mock("b", false));
        assert_eq!(a.unwrap_err(), "this side: a cannot reach b");
        assert_eq!(b.unwrap_err(), "the peer: a cannot reach b");
    }

    #[test]
    fn a_link_that_fails_its_check_is_not_used_by_either_side() {
        let (a, b) = both(mock("a", false), mock("unreachable-b", false));
        assert_eq!(a.unwrap_err(), "the peer: unreachable-b->a: no answer");
        assert_eq!(b.unwrap_err(), "this side: unreachable-b->a: no answer");
    }

    #[test]
    fn a_silent_peer_fails_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let _peer = listener.accept().unwrap();
        let start = Instant::now();
        let outcome = agree(
            &mut stream,
            mock("a", false),
            Instant::now() + Duration::from_millis(300),
        );
        assert!(outcome.is_err());
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
