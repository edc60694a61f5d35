//! The published ad catalog: served whole with an ETag, revalidated with a 304, and a catalog
//! the devices would refuse stops the server at start instead of reaching them.
mod common;

use common::*;

const CATALOG: &str = r#"{"ads": [{"id": "a-1", "category": "sports", "features": ["topic:sports"]}],
  "creatives": {"a-1": {"title": "Trail shoes", "body": "Light.", "cta": "Shop", "url": "https://example.com/"}}}"#;

#[test]
fn catalog_is_served_whole_with_an_etag() {
    let dir = scratch("catalog-served");
    let file = dir.join("catalog.json");
    std::fs::write(&file, CATALOG).unwrap();
    let server = Server::start(&dir, &config(&default_pack(), 10, &format!("catalog = {file:?}")));
    let (status, headers, body) = get(&server.url("/v1/catalog.json"));
    assert_eq!(status, 200);
    assert_eq!(body, CATALOG.as_bytes());
    assert_eq!(header(&headers, "cache-control"), Some("no-cache"));
    let etag = header(&headers, "etag").expect("an ETag").to_string();
    let (status, _, body) = get_with(&server.url("/v1/catalog.json"), &[("If-None-Match", &etag)]);
    assert_eq!((status, body.len()), (304, 0));
    let (status, _, _) = get_with(&server.url("/v1/catalog.json"), &[("If-None-Match", "\"stale\"")]);
    assert_eq!(status, 200);
    server.kill();

    let dir = scratch("catalog-none");
    let server = Server::start(&dir, &config(&default_pack(), 10, ""));
    let (status, _, body) = get(&server.url("/v1/catalog.json"));
    assert_eq!(status, 404);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"], "no_catalog");
    server.kill();
}

#[test]
fn a_bad_catalog_stops_the_server_at_start() {
    for (name, doc, why) in [
        ("no-creative", r#"{"ads": [{"id": "a-1"}], "creatives": {}}"#, "has no creative"),
        ("unknown-field", r#"{"ads": [{"id": "a-1", "price": 3}], "creatives": {"a-1": {}}}"#, "unknown field"),
        ("not-json", "ads:", "catalog"),
    ] {
        let dir = scratch(&format!("catalog-bad-{name}"));
        let file = dir.join("catalog.json");
        std::fs::write(&file, doc).unwrap();
        let out = aggregator(&dir, &config(&default_pack(), 10, &format!("catalog = {file:?}"))).arg("--init").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: the server ran");
        assert!(stderr.contains(why), "{name}: {stderr}");
    }
}
