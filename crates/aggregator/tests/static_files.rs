//! Static files in demo mode and security headers (issue 14, item 6): nothing outside `www` is
//! served, symlinks included; every response says `nosniff`; HTML documents carry a
//! Content-Security-Policy and frame protection that still let the demo's snippet work.

mod common;

use common::*;
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

/// `'sha256-…'` of `text`, as a CSP source.
fn csp_hash(text: &str) -> String {
    const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let hex = hearth_core::model::pack::sha256_hex(text.as_bytes());
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            out.push(if i <= chunk.len() { DIGITS[(n >> (18 - 6 * i)) as usize & 63] as char } else { '=' });
        }
    }
    format!("'sha256-{out}'")
}

#[test]
fn the_demo_pages_csp_allows_the_snippets_ad_frame() {
    let www = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../www");
    // The ad frame's script, as the snippet writes it into each frame's srcdoc.
    let snippet = std::fs::read_to_string(www.join("hearth.js")).unwrap();
    let frame = snippet.split("const FRAME = `").nth(1).unwrap().split('`').next().unwrap();
    let script = frame.split("<script>").nth(1).unwrap().split("<\\/script>").next().unwrap();
    // Taken from the source as it stands: no escapes or substitutions that the template would change.
    assert!(!script.contains('\\') && !script.contains("${"), "{script}");
    assert_eq!(csp_hash("abc"), "'sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0='");

    let dir = scratch("static-files-demo");
    let server = Server::start(&dir, &config(&small_pack(&dir), K, &format!("www = {:?}", www.canonicalize().unwrap())));
    for path in ["/", "/demo/profile.html", "/demo/articles/autos-leasing.html", "/bench/"] {
        let (status, headers, _) = get(&server.url(path));
        assert_eq!(status, 200, "{path}");
        html_headers_are_set(&headers, path);
        let csp = header(&headers, "content-security-policy").unwrap();
        assert!(csp.contains(&csp_hash(script)), "{path}: the CSP {csp:?} does not allow the ad frame's script");
        assert!(csp.contains("'wasm-unsafe-eval'"), "{path}: {csp}");
    }
}
