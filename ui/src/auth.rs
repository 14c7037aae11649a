//! The access token: made at start, printed in the URL, then carried by a cookie the first
//! page sets (HttpOnly, SameSite=Strict), or by `Authorization: Bearer TOKEN` for scripts.

use axum::extract::Request;
use axum::http::{header, HeaderMap};

use crate::Shared;

/// A fresh token: 32 random bytes, in hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    // The system's random source failing is no reason to serve without a token: a token
    // from a weaker source would still be better than none, but getrandom does not fail on
    // Linux once the pool is ready.
    getrandom::fill(&mut bytes).expect("the system's random source");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a request proved it may read.
pub(crate) enum Access {
    /// It did not.
    Denied,
    /// By the cookie or an `Authorization` header.
    Cookie,
    /// By `?token=` in the URL: the response sets the cookie.
    Url,
}

/// Compares without stopping at the first difference.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

pub(crate) fn check(shared: &Shared, request: &Request) -> Access {
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|t| same(t.trim(), &shared.token)) {
        return Access::Cookie;
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == shared.cookie);
    if cookie.is_some_and(|(_, value)| same(value, &shared.token)) {
        return Access::Cookie;
    }
    let query = request.uri().query().unwrap_or("");
    let token = crate::form::pairs(query)
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v);
    if token.is_some_and(|t| same(&t, &shared.token)) {
        return Access::Url;
    }
    Access::Denied
}

/// The cookie that carries the token for the pages' own requests.
pub(crate) fn cookie_header(shared: &Shared) -> String {
    format!(
        "{}={}; Path=/; HttpOnly; SameSite=Strict",
        shared.cookie, shared.token
    )
}

/// Whether the request's Host names this machine's loopback (`localhost`, `127.0.0.1`,
/// `[::1]`, with any port): what a browser sends through an SSH tunnel.
pub(crate) fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "::1"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_and_fresh() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(same(&a, &a.clone()) && !same(&a, &b) && !same(&a, &a[1..]));
    }

    #[test]
    fn only_loopback_hosts_pass() {
        let host = |h: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, h.parse().unwrap());
            loopback_host(&headers)
        };
        assert!(host("localhost:7180") && host("127.0.0.1:7180") && host("[::1]:7180"));
        assert!(host("LOCALHOST"));
        assert!(!host("evil.example:7180") && !host("127.0.0.1.evil.example"));
        assert!(!loopback_host(&HeaderMap::new()));
    }
}
