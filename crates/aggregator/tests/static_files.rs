//! Static files in demo mode and security headers (issue 14, item 6): nothing outside `www` is
//! served, symlinks included; every response says `nosniff`; HTML documents carry a
//! Content-Security-Policy and frame protection that still let the demo's snippet work.

mod common;

use common::*;
use hearth_aggregator::static_files::RENDERER_CSP;
use std::os::unix::fs::symlink;
use std::path::Path;

const K: u64 = 10;

fn html_headers_are_set(headers: &[(String, String)], path: &str) {
    let csp = header(headers, "content-security-policy").unwrap_or_else(|| panic!("{path}: no CSP"));
    for directive in ["default-src 'self'", "object-src 'none'", "base-uri 'none'", "frame-ancestors 'self'"] {
        assert!(csp.contains(directive), "{path}: CSP {csp:?} lacks {directive:?}");
    }
    assert!(!csp.contains("'unsafe-eval'"), "{path}: {csp}");
    assert_eq!(header(headers, "x-frame-options"), Some("SAMEORIGIN"), "{path}");
    assert_eq!(header(headers, "x-content-type-options"), Some("nosniff"), "{path}");
}

#[test]
fn only_files_inside_www_are_served_symlinks_included() {
    let dir = scratch("static-files");
    let www = dir.join("www");
    std::fs::create_dir_all(www.join("sub")).unwrap();
    std::fs::write(www.join("app.js"), "export const app = 1;\n").unwrap();
    std::fs::write(www.join("sub/index.html"), "<!doctype html><title>sub</title>\n").unwrap();
    std::fs::write(dir.join("secret.txt"), "outside www\n").unwrap();
    // Links that lead out of www: to a file, to the database (created at start), to a directory.
    symlink(dir.join("secret.txt"), www.join("leak.txt")).unwrap();
    symlink(dir.join("hearth.db"), www.join("db.sqlite")).unwrap();
    symlink(&dir, www.join("up")).unwrap();
    symlink("/etc/passwd", www.join("passwd")).unwrap();
    // A link that stays inside.
    symlink(www.join("app.js"), www.join("alias.js")).unwrap();
    let server = Server::start(&dir, &config(&small_pack(&dir), K, &format!("www = {www:?}")));

    for path in ["/leak.txt", "/db.sqlite", "/up/secret.txt", "/up/hearth.db", "/passwd"] {
        let (status, headers, body) = get(&server.url(path));
        assert_eq!(status, 404, "{path} was served: {:?}", String::from_utf8_lossy(&body));
        assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"), "{path}");
    }
    // Traversal, sent as is (an HTTP client would resolve the dots itself).
    for path in ["/sub/../../secret.txt", "/%2e%2e/secret.txt", "/sub/%2e%2e/%2e%2e/secret.txt", "/..%2fsecret.txt"] {
        let (status, text) = raw(
            &server.url(""),
            &[(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(), Default::default())],
        );
        assert_eq!(status, 404, "{path}: {text}");
        assert!(!text.contains("outside www"), "{path}: {text}");
    }

    for path in ["/app.js", "/alias.js"] {
        let (status, headers, body) = get_with(&server.url(path), &[("Origin", "https://publisher.example")]);
        assert_eq!((status, body.as_slice()), (200, b"export const app = 1;\n".as_slice()), "{path}");
        assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(header(&headers, "content-security-policy"), None, "{path}: a CSP is for documents");
        assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"), "{path}: publisher pages fetch it");
        assert_eq!(header(&headers, "cross-origin-resource-policy"), Some("cross-origin"), "{path}");
    }
    // A directory's index, with and without its trailing slash (a redirect).
    for path in ["/sub/", "/sub"] {
        let (status, headers, body) = get(&server.url(path));
        assert_eq!(status, 200, "{path}");
        assert!(String::from_utf8_lossy(&body).contains("<title>sub</title>"), "{path}");
        html_headers_are_set(&headers, path);
    }
    // The API answers with nosniff too.
    for path in ["/healthz", "/v1/round", "/v1/model/manifest.json", "/v1/no-such-route"] {
        let (_, headers, _) = get(&server.url(path));
        assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(header(&headers, "content-security-policy"), None, "{path}");
    }
}

#[test]
fn the_helper_and_a_server_without_www_send_nosniff() {
    let dir = scratch("static-files-helper");
    let server = Server::start(&dir, &config(&small_pack(&dir), K, ""));
    let helper_dir = dir.join("helper");
    std::fs::create_dir_all(&helper_dir).unwrap();
    let helper = Server::start(&helper_dir, &helper_config(K, 4.0));
    for url in [server.url("/v1/round"), server.url("/demo/"), helper.url("/v1/helper_config"), helper.url("/healthz")] {
        let (_, headers, _) = get(&url);
        assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"), "{url}");
    }
}

#[test]
fn the_demo_pages_and_the_ad_renderer_carry_their_policies() {
    let www = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../www");
    let dir = scratch("static-files-demo");
    let server = Server::start(&dir, &config(&small_pack(&dir), K, &format!("www = {:?}", www.canonicalize().unwrap())));
    for path in ["/", "/demo/profile.html", "/demo/articles/autos-leasing.html", "/bench/"] {
        let (status, headers, _) = get(&server.url(path));
        assert_eq!(status, 200, "{path}");
        html_headers_are_set(&headers, path);
        let csp = header(&headers, "content-security-policy").unwrap();
        assert!(csp.contains("'wasm-unsafe-eval'"), "{path}: {csp}");
        // The ad frame is a document of its own now: no inline script to allow by a hash.
        let scripts = csp.split(';').find(|d| d.trim().starts_with("script-src")).unwrap();
        assert!(!scripts.contains("'sha256-") && !scripts.contains("'unsafe-inline'"), "{path}: {csp}");
    }
    // The renderer: framed by publisher pages on any origin, in the snippet's sandbox even when
    // opened some other way, loading nothing but its own script and stylesheet.
    let (status, headers, body) = get_with(&server.url("/hearth/frame.html"), &[("Origin", "https://publisher.example")]);
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("<html lang=\"en\">"));
    assert_eq!(header(&headers, "content-security-policy"), Some(RENDERER_CSP));
    assert_eq!(header(&headers, "x-frame-options"), None, "publisher pages frame it");
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors *"] {
        assert!(RENDERER_CSP.contains(directive), "{directive}");
    }
    assert!(RENDERER_CSP.contains("sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox;"));
    assert!(!RENDERER_CSP.contains("allow-same-origin") && !RENDERER_CSP.contains("unsafe"));
    for path in ["/hearth/frame.js", "/hearth/frame.css"] {
        let (status, headers, _) = get_with(&server.url(path), &[("Origin", "https://publisher.example")]);
        assert_eq!(status, 200, "{path}");
        assert_eq!(header(&headers, "cross-origin-resource-policy"), Some("cross-origin"), "{path}");
    }
}
