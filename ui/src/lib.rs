//! `cohort ui`: a read-only web view of the experiment catalog, served by the `cohort` binary
//! itself (every asset is embedded: it works with no internet).
//!
//! The server reads the catalog with the same functions as the CLI (`cohort_catalog::load`,
//! `query`, `json`), so its JSON is the CLI's JSON; it never writes to the catalog (its loads
//! do not write the index either). Every request must carry the access token printed at start
//! (in the URL once, then in a cookie the first page sets), bound to loopback or not; see
//! `docs/security.md`. Paths never come from requests: experiments are found by name and
//! trials by number through the catalog, and the one file read by name (a trial's output) is
//! opened without following symbolic links and only inside the catalog.

pub mod api;
mod assets;
mod auth;
mod cache;
mod form;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub use auth::new_token;

/// Why the UI could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// The catalog cannot be opened.
    #[error("{0}")]
    Catalog(#[from] cohort_catalog::CatalogError),
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed.
    #[error("the web server failed: {0}")]
    Serve(std::io::Error),
}

/// What `cohort ui` serves, and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// The catalog's root.
    pub catalog: PathBuf,
    /// Where to listen.
    pub bind: SocketAddr,
    /// The access token every request must carry.
    pub token: String,
}

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) catalog: cohort_catalog::Catalog,
    pub(crate) token: String,
    /// The cookie that carries the token after the first page (one name per port, so that
    /// two UIs on one host keep theirs).
    pub(crate) cookie: String,
    /// Whether the server listens on loopback only: requests must then name a loopback host
    /// (a page of another site cannot reach it through DNS rebinding).
    pub(crate) loopback: bool,
    pub(crate) cache: cache::Cache,
}

/// A bound UI, ready to serve.
#[derive(Debug)]
pub struct Ui {
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
}

impl Ui {
    /// Opens the catalog and binds the address (port 0: any free port).
    pub fn bind(options: &Options) -> Result<Ui, UiError> {
        let catalog = cohort_catalog::Catalog::open(&options.catalog)?;
        let listener =
            std::net::TcpListener::bind(options.bind).map_err(|source| UiError::Bind {
                addr: options.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| UiError::Bind {
            addr: options.bind,
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| UiError::Bind {
                addr: options.bind,
                source,
            })?;
        Ok(Ui {
            listener,
            shared: Arc::new(Shared {
                catalog,
                token: options.token.clone(),
                cookie: format!("cohort_ui_{}", addr.port()),
                loopback: addr.ip().is_loopback(),
                cache: cache::Cache::default(),
            }),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until the process ends (or the runtime is dropped). Every experiment is loaded
    /// once in the background as it starts, so that the first page does not wait for the
    /// filesystem either.
    pub fn serve(self) -> Result<(), UiError> {
        let warm = Arc::clone(&self.shared);
        std::thread::spawn(move || {
            if let Ok((experiments, _)) = warm.catalog.experiments() {
                for experiment in &experiments {
                    let _ = warm.cache.load(&warm.catalog, experiment);
                }
            }
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(UiError::Serve)?;
        runtime.block_on(async move {
            let listener =
                tokio::net::TcpListener::from_std(self.listener).map_err(UiError::Serve)?;
            axum::serve(listener, router(self.shared))
                .await
                .map_err(UiError::Serve)
        })
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{name}", get(assets::asset))
        .route("/api/experiments", get(api::experiments))
        .route("/api/experiments/{name}", get(api::experiment))
        .route("/api/experiments/{name}/trials", get(api::trials))
        .route("/api/experiments/{name}/table", get(api::table))
        .route("/api/experiments/{name}/trials/{id}", get(api::trial))
        .route(
            "/api/experiments/{name}/trials/{id}/output",
            get(api::output),
        )
        .route("/api/experiments/{name}/series", get(api::series))
        .route("/api/experiments/{name}/search", get(api::search))
        .route("/api/models", get(api::models))
        .route("/api/models/{name}", get(api::model))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            guard,
        ))
        .with_state(shared)
}

async fn not_found() -> Response {
    api::error(StatusCode::NOT_FOUND, "no such page".into())
}

/// Every request: the host check, the token, and the headers that keep pages to themselves.
async fn guard(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    if request.method() != axum::http::Method::GET && request.method() != axum::http::Method::HEAD {
        return api::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the catalog's web view is read-only".into(),
        );
    }
    if shared.loopback && !auth::loopback_host(request.headers()) {
        return api::error(
            StatusCode::FORBIDDEN,
            "this server answers requests for localhost only".into(),
        );
    }
    let granted =
        match auth::check(&shared, &request) {
            auth::Access::Denied => return api::error(
                StatusCode::UNAUTHORIZED,
                "an access token is needed: open the URL cohort ui printed (it ends in ?token=...)"
                    .into(),
            ),
            auth::Access::Cookie => None,
            auth::Access::Url => Some(auth::cookie_header(&shared)),
        };
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if let Some(cookie) = granted.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The token may be in the page's URL: never send it elsewhere.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response.into_response()
}
