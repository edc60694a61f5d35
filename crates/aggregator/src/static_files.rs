//! Demo mode's static files: the `www` directory (the demo site, the snippet and its worker
//! modules).
//!
//! tower-http's `ServeDir` refuses `..` but follows symlinks, so a link in `www` to
//! `/etc/passwd` or to the database was served. Here each requested path is resolved to its
//! canonical form (every symlink followed) and served only if that lies inside the canonical
//! `www` root: a link inside `www` to a file inside `www` still works, one that leads out is
//! 404, like a file that does not exist. The file served is the canonical path checked.
//!
//! HTML documents also get a Content-Security-Policy and frame protection ([`CSP`]).

use crate::http::reject;
use crate::reason::{Reason, Reject};
use axum::Router;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tower_http::services::ServeFile;
use tower_http::set_header::SetResponseHeaderLayer;

/// The Content-Security-Policy of every HTML document served, fitted to the demo and bench pages
/// and the snippet they load:
/// - scripts only from this origin, plus the ad frame's inline script by its hash (the snippet
///   writes each ad into a sandboxed `srcdoc` iframe, which inherits this policy: `FRAME`'s
///   `<script>` in www/hearth.js, a test holds the hash to the file) and WebAssembly compilation (`'wasm-unsafe-eval'`: the bench page runs wasm on the page);
///   never `eval` or other inline scripts;
/// - inline styles (the ad frame's and the bench page's `<style>`; styles cannot run code);
/// - `img-src data:` for the pages' empty `data:` favicon;
/// - `connect-src` any http(s) origin: the worker fetches the secure-aggregation helper, which
///   runs on another origin each page names (`data-helper`), unknown to this server;
/// - workers from this origin or `blob:` (the snippet's bootstrap when it is loaded cross-origin);
/// - no plugins, no `<base>`, forms post only here, and only this origin may frame the pages.
pub const CSP: &str = concat!(
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval' '",
    "sha256-EUWP4YjYiCuJLxy3CMpRxA0CEc0fB0p7j8r1T+ivFNo=",
    "'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self' http: https:; ",
    "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
);

/// The routes that serve `root`'s files, for any path the API does not claim.
pub fn routes(root: PathBuf) -> Router {
    Router::new()
        .route("/{*path}", get(serve))
        .with_state(Arc::new(root))
        .layer(SetResponseHeaderLayer::overriding(header::CONTENT_SECURITY_POLICY, html_only(CSP)))
        // For browsers without CSP's frame-ancestors.
        .layer(SetResponseHeaderLayer::overriding(header::X_FRAME_OPTIONS, html_only("SAMEORIGIN")))
}

/// `value` on HTML documents only.
fn html_only(value: &'static str) -> impl Fn(&Response) -> Option<HeaderValue> + Clone {
    move |r: &Response| {
        let html =
            r.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("text/html"));
        html.then(|| HeaderValue::from_static(value))
    }
}

/// Where a requested path leads.
enum Found {
    File(PathBuf),
    /// A directory asked for without its trailing slash: redirected, so relative links resolve.
    Directory,
}

async fn serve(State(root): State<Arc<PathBuf>>, UrlPath(path): UrlPath<String>, request: Request) -> Response {
    let wants_directory = request.uri().path().ends_with('/');
    let found = tokio::task::spawn_blocking(move || resolve(&root, &path, wants_directory)).await.ok().flatten();
    match found {
        Some(Found::File(file)) => match ServeFile::new(file).try_call(request).await {
            Ok(resp) => resp.into_response(),
            Err(_) => not_found(),
        },
        Some(Found::Directory) => {
            let uri = request.uri();
            let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
            Redirect::temporary(&format!("{}/{query}", uri.path())).into_response()
        }
        None => not_found(),
    }
}

fn not_found() -> Response {
    reject(Reject::new(Reason::NotFound, "no such file"))
}

/// The file `requested` (percent-decoded, relative to `root`) names, if its canonical path lies
/// inside `root`'s; a directory's is its `index.html`.
fn resolve(root: &Path, requested: &str, wants_directory: bool) -> Option<Found> {
    let root = root.canonicalize().ok()?;
    let mut path = root.clone();
    for segment in requested.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            s if s.contains(['\\', '\0']) => return None,
            s => path.push(s),
        }
    }
    let inside = |p: &Path| p.canonicalize().ok().filter(|c| c.starts_with(&root));
    let target = inside(&path)?;
    if !target.is_dir() {
        return (!wants_directory && target.is_file()).then_some(Found::File(target));
    }
    if !wants_directory {
        return Some(Found::Directory);
    }
    inside(&target.join("index.html")).filter(|p| p.is_file()).map(Found::File)
}
