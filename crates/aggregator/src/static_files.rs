//! Demo mode's static files: the `www` directory (the demo site, the snippet and its worker
//! modules).
//!
//! tower-http's `ServeDir` refuses `..` but follows symlinks, so a link in `www` to
//! `/etc/passwd` or to the database was served. Here each requested path is resolved to its
//! canonical form (every symlink followed) and served only if that lies inside the canonical
//! `www` root: a link inside `www` to a file inside `www` still works, one that leads out is
//! 404, like a file that does not exist. The file served is the canonical path checked.
//!
//! HTML documents also get a Content-Security-Policy and frame protection ([`CSP`]), except the
//! ad renderer, which publisher pages frame: it gets a policy of its own ([`RENDERER_CSP`]).

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

/// The Content-Security-Policy of every HTML document served but the ad renderer, fitted to the
/// demo and bench pages and the snippet they load:
/// - scripts only from this origin and WebAssembly compilation (`'wasm-unsafe-eval'`: the bench
///   page runs wasm on the page); never `eval` or inline scripts;
/// - inline styles (the bench page's `<style>`; styles cannot run code);
/// - `img-src data:` for the pages' empty `data:` favicon;
/// - `connect-src` any http(s) origin: the worker fetches the secure-aggregation helper, which
///   runs on another origin each page names (`data-helper`), unknown to this server;
/// - workers and frames (the ad renderer, [`RENDERER`]) from this origin only;
/// - no plugins, no `<base>`, forms post only here, and only this origin may frame the pages.
pub const CSP: &str = concat!(
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; ",
    "img-src 'self' data:; connect-src 'self' http: https:; worker-src 'self'; object-src 'none'; ",
    "base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
);

/// The ad renderer, relative to `www`: the document the snippet frames for each ad, on publisher
/// pages of any origin.
pub const RENDERER: &str = "hearth/frame.html";

/// The renderer's own Content-Security-Policy: its one script and stylesheet from this origin and
/// no other fetch (no connections, images, fonts or form posts); the same sandbox as the snippet's `<iframe sandbox>` even where
/// it is opened some other way (an opaque origin: no storage, no cookies, no access to a page);
/// framed by any page (`frame-ancestors *`, and no `X-Frame-Options`).
pub const RENDERER_CSP: &str = concat!(
    "default-src 'none'; script-src 'self'; style-src 'self'; base-uri 'none'; form-action 'none'; ",
    "sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox; frame-ancestors *"
);

/// The routes that serve `root`'s files, for any path the API does not claim.
pub fn routes(root: PathBuf) -> Router {
    Router::new().route("/{*path}", get(serve)).with_state(Arc::new(root))
}

/// Where a requested path leads.
enum Found {
    File(PathBuf),
    /// A directory asked for without its trailing slash: redirected, so relative links resolve.
    Directory,
}

async fn serve(State(root): State<Arc<PathBuf>>, UrlPath(path): UrlPath<String>, request: Request) -> Response {
    let wants_directory = request.uri().path().ends_with('/');
    let renderer = root.join(RENDERER);
    let found = tokio::task::spawn_blocking(move || {
        let found = resolve(&root, &path, wants_directory);
        // Compared canonical to canonical, as `resolve` returns it.
        let is_renderer = matches!(&found, Some(Found::File(f)) if renderer.canonicalize().is_ok_and(|r| &r == f));
        found.map(|f| (f, is_renderer))
    })
    .await
    .ok()
    .flatten();
    match found {
        Some((Found::File(file), is_renderer)) => match ServeFile::new(file).try_call(request).await {
            Ok(resp) => with_document_headers(resp.into_response(), is_renderer),
            Err(_) => not_found(),
        },
        Some((Found::Directory, _)) => {
            let uri = request.uri();
            let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
            Redirect::temporary(&format!("{}/{query}", uri.path())).into_response()
        }
        None => not_found(),
    }
}

/// An HTML document's Content-Security-Policy and frame protection: the renderer's own
/// ([`RENDERER_CSP`]), or [`CSP`] and `X-Frame-Options` (for browsers without CSP's
/// `frame-ancestors`) on every other page.
fn with_document_headers(mut response: Response, is_renderer: bool) -> Response {
    let headers = response.headers_mut();
    let html = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("text/html"));
    if !html {
        return response;
    }
    if is_renderer {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(RENDERER_CSP));
    } else {
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
    }
    response
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
