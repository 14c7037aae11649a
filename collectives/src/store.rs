//! The rendezvous store: a small key-value service that rank 0 serves and every rank uses to
//! publish its endpoints and find its peers'. Connections authenticate with the job secret
//! first; a client without it is refused and the refusal is logged on stderr.
//!
//! Wire format after the handshake, little-endian: a request is `op:u8, key_len:u32, key,
//! value_len:u32, value, wait_ms:u64`; a reply is `status:u8, len:u32, data`. Ops: 1 set,
//! 2 get (waits until the key exists or `wait_ms` passes), 3 add (value is an i64; replies with
//! the new total).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::auth::handshake;
use crate::error::CommError;

const OP_SET: u8 = 1;
const OP_GET: u8 = 2;
const OP_ADD: u8 = 3;
const STATUS_OK: u8 = 0;
const STATUS_TIMEOUT: u8 = 1;
const STATUS_BAD: u8 = 2;
/// Identity the store presents in the handshake.
const STORE_ID: u32 = u32::MAX;
/// Keys and values are small (addresses, counters); anything larger is a protocol error.
const MAX_FIELD: u32 = 1 << 20;

#[derive(Debug, Default)]
struct State {
    values: Mutex<HashMap<String, Vec<u8>>>,
    changed: Condvar,
}

/// The store's server side: an accept thread and one thread per client.
#[derive(Debug)]
pub struct StoreServer {
    address: SocketAddr,
}

impl StoreServer {
    /// Serves on `listener` in background threads that live as long as the process.
    pub fn spawn(listener: TcpListener, secret: Vec<u8>) -> Result<StoreServer, CommError> {
        let address = listener
            .local_addr()
            .map_err(|e| CommError::io("store listener address", e))?;
        let state = Arc::new(State::default());
        let secret = Arc::new(secret);
        std::thread::Builder::new()
            .name("cohort-store".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let state = Arc::clone(&state);
                    let secret = Arc::clone(&secret);
                    let _ = std::thread::Builder::new()
                        .name("cohort-store-client".into())
                        .spawn(move || serve_client(stream, &secret, &state));
                }
            })
            .map_err(|e| CommError::io("starting the store thread", e))?;
        Ok(StoreServer { address })
    }

    /// The address it listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

fn serve_client(mut stream: TcpStream, secret: &[u8], state: &State) {
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "unknown".to_owned(), |a| a.to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    if let Err(e) = handshake(&mut stream, secret, STORE_ID, false, deadline, &peer) {
        eprintln!("cohort: rendezvous store refused a connection from {peer}: {e}");
        return;
    }
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_nodelay(true);
    while let Ok(Some((op, key, value, wait_ms))) = read_request(&mut stream) {
        let (status, data) = match op {
            OP_SET => {
                lock(&state.values).insert(key, value);
                state.changed.notify_all();
                (STATUS_OK, Vec::new())
            }
            OP_GET => {
                let until = Instant::now() + Duration::from_millis(wait_ms);
                let mut values = lock(&state.values);
                loop {
                    if let Some(value) = values.get(&key) {
                        break (STATUS_OK, value.clone());
                    }
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break (STATUS_TIMEOUT, Vec::new());
                    }
                    values = match state.changed.wait_timeout(values, left) {
                        Ok((guard, _)) => guard,
                        Err(poisoned) => poisoned.into_inner().0,
                    };
                }
            }
            OP_ADD => match <[u8; 8]>::try_from(value.as_slice()) {
                Ok(bytes) => {
                    let delta = i64::from_le_bytes(bytes);
                    let mut values = lock(&state.values);
                    let old = values
                        .get(&key)
                        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                        .map_or(0, i64::from_le_bytes);
                    let new = old.wrapping_add(delta);
                    values.insert(key, new.to_le_bytes().to_vec());
                    state.changed.notify_all();
                    (STATUS_OK, new.to_le_bytes().to_vec())
                }
                Err(_) => (STATUS_BAD, Vec::new()),
            },
            _ => (STATUS_BAD, Vec::new()),
        };
        if write_reply(&mut stream, status, &data).is_err() {
            return;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking client thread must not take the store down with it.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

type Request = (u8, String, Vec<u8>, u64);

fn read_field(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_FIELD {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "field too large",
        ));
    }
    let mut data = vec![0u8; len as usize];
    stream.read_exact(&mut data)?;
    Ok(data)
}

fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut op = [0u8; 1];
    if stream.read(&mut op)? == 0 {
        return Ok(None);
    }
    let key = String::from_utf8(read_field(stream)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "key not UTF-8"))?;
    let value = read_field(stream)?;
    let mut wait = [0u8; 8];
    stream.read_exact(&mut wait)?;
    Ok(Some((op[0], key, value, u64::from_le_bytes(wait))))
}

fn write_reply(stream: &mut TcpStream, status: u8, data: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let mut reply = Vec::with_capacity(5 + data.len());
    reply.push(status);
    reply.extend_from_slice(&len.to_le_bytes());
    reply.extend_from_slice(data);
    stream.write_all(&reply)
}

/// A rank's connection to the store.
#[derive(Debug)]
pub struct StoreClient {
    stream: TcpStream,
    address: String,
}

impl StoreClient {
    /// Connects (retrying until `deadline`, since rank 0 may not be listening yet) and
    /// authenticates.
    pub fn connect(
        address: &str,
        secret: &[u8],
        rank: u32,
        deadline: Instant,
    ) -> Result<StoreClient, CommError> {
        let fail = |detail: String| CommError::Store {
            address: address.to_owned(),
            detail,
        };
        let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(address)
            .map_err(|e| fail(format!("cannot resolve: {e}")))?
            .collect();
        let Some(&addr) = addrs.first() else {
            return Err(fail("resolves to no address".into()));
        };
        let mut last_error = String::from("never tried");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(fail(format!(
                    "not reachable before the deadline (last error: {last_error})"
                )));
            }
            match TcpStream::connect_timeout(&addr, left.min(Duration::from_secs(1))) {
                Ok(mut stream) => {
                    handshake(&mut stream, secret, rank, true, deadline, address)?;
                    let _ = stream.set_nodelay(true);
                    return Ok(StoreClient {
                        stream,
                        address: address.to_owned(),
                    });
                }
                Err(e) => {
                    last_error = e.to_string();
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    fn request(
        &mut self,
        op: u8,
        key: &str,
        value: &[u8],
        deadline: Instant,
    ) -> Result<(u8, Vec<u8>), CommError> {
        let address = self.address.clone();
        let fail = |detail: String| CommError::Store {
            address: address.clone(),
            detail,
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        let mut request = Vec::with_capacity(17 + key.len() + value.len());
        request.push(op);
        request.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes());
        request.extend_from_slice(key.as_bytes());
        request.extend_from_slice(&u32::try_from(value.len()).unwrap_or(u32::MAX).to_le_bytes());
        request.extend_from_slice(value);
        request.extend_from_slice(&wait_ms.to_le_bytes());
        // The server answers a get at its own deadline; allow a little for the reply to travel.
        let io_timeout = wait + Duration::from_secs(5);
        let _ = self.stream.set_read_timeout(Some(io_timeout));
        let _ = self.stream.set_write_timeout(Some(io_timeout));
        let gone = |e: std::io::Error| {
            fail(format!(
                "connection lost ({e}); rank 0, which serves the store, may have exited"
            ))
        };
        self.stream.write_all(&request).map_err(gone)?;
        let mut head = [0u8; 5];
        self.stream.read_exact(&mut head).map_err(gone)?;
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
        if len > MAX_FIELD {
            return Err(fail("reply too large".into()));
        }
        let mut data = vec![0u8; len as usize];
        self.stream.read_exact(&mut data).map_err(gone)?;
        Ok((head[0], data))
    }

    /// Sets a key.
    pub fn set(&mut self, key: &str, value: &[u8], deadline: Instant) -> Result<(), CommError> {
        self.request(OP_SET, key, value, deadline).map(|_| ())
    }

    /// Gets a key, waiting until it is set or the deadline passes.
    pub fn get(&mut self, key: &str, deadline: Instant) -> Result<Vec<u8>, CommError> {
        match self.request(OP_GET, key, &[], deadline)? {
            (STATUS_OK, data) => Ok(data),
            (STATUS_TIMEOUT, _) => Err(CommError::Store {
                address: self.address.clone(),
                detail: format!("{key:?} was not published before the deadline"),
            }),
            (status, _) => Err(CommError::Store {
                address: self.address.clone(),
                detail: format!("refused get {key:?} (status {status})"),
            }),
        }
    }

    /// Adds to a counter and returns the new total.
    pub fn add(&mut self, key: &str, delta: i64, deadline: Instant) -> Result<i64, CommError> {
        let (status, data) = self.request(OP_ADD, key, &delta.to_le_bytes(), deadline)?;
        match <[u8; 8]>::try_from(data.as_slice()) {
            Ok(bytes) if status == STATUS_OK => Ok(i64::from_le_bytes(bytes)),
            _ => Err(CommError::Store {
                address: self.address.clone(),
                detail: format!("refused add {key:?} (status {status})"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_add_and_a_wrong_secret_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = StoreServer::spawn(listener, b"s3cret".to_vec()).unwrap();
        let address = server.address().to_string();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut a = StoreClient::connect(&address, b"s3cret", 0, deadline).unwrap();
        let mut b = StoreClient::connect(&address, b"s3cret", 1, deadline).unwrap();
        let waiter = std::thread::spawn(move || b.get("k", deadline).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        a.set("k", b"v", deadline).unwrap();
        assert_eq!(waiter.join().unwrap(), b"v");
        assert_eq!(a.add("n", 2, deadline).unwrap(), 2);
        assert_eq!(a.add("n", 3, deadline).unwrap(), 5);
        let short = Instant::now() + Duration::from_millis(100);
        assert!(a.get("never", short).is_err());
        let err = StoreClient::connect(&address, b"wrong", 2, deadline).unwrap_err();
        assert!(matches!(err, CommError::Auth { .. }), "{err}");
    }
}
