//! Malformed and hostile uploads: each gets the right status and reason and stores nothing.
//! Afterwards the round closes on honest updates alone and the model moves by exactly their
//! mean, so no refused byte reached the aggregate.

mod common;

use common::*;
use hearth_core::privacy::noise::Sampler;
use hearth_core::privacy::privatize::build_update;
use hearth_core::privacy::wire::{Encoding, Payload, Update};
use std::time::Duration;

const K: u64 = 10;

/// A request written by hand: chunks of bytes, each followed by a pause.
type Written = Vec<(Vec<u8>, Duration)>;

fn request(path: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n").into_bytes();
    for (k, v) in headers {
        r.extend(format!("{k}: {v}\r\n").bytes());
    }
    r.extend(b"\r\n");
    r.extend(body);
    r
}

fn every_kind_of_bad_upload_is_refused_with_its_reason_and_nothing_is_stored(backend: Backend) {
    let dir = scratch_on("bad-input", backend);
    let server = Server::start(&dir, &config(&small_pack(&dir), K, ""));
    let task = server.task();
    let (before, _) = fetch_pack(&server);
    let d = before.params.values.len();
    let good = |seed| honest_update(&task, d, seed, Encoding::F32);
    let with = |f: &dyn Fn(&mut Update)| {
        let mut u = good(1);
        f(&mut u);
        u.encode()
    };
    let patched = |at: usize, bytes: &[u8]| {
        let mut b = good(2).encode();
        b[at..at + bytes.len()].copy_from_slice(bytes);
        b
    };
    let limit = good(3).encode().len();

    let mut honest = vec![good(100)];
    assert_eq!(server.post(&honest[0].encode()).0, 202);

    // Payload floats start after the 51-byte header.
    let mut nan = good(4).encode();
    nan[59..63].copy_from_slice(&f32::NAN.to_le_bytes());
    let unnoised = {
        let delta = vec![0.5 / (d as f32).sqrt(); d];
        let (mut u, _) =
            build_update(delta, task.model_version, task.round_id, 1.0, 0.0, Encoding::F32, &mut Sampler::os()).unwrap();
        u.noise_multiplier = task.noise_multiplier;
        u.encode()
    };
    let quantized = honest_update(&task, d, 5, Encoding::QuantizedI16).encode();
    let short_payload = with(&|u| {
        if let Payload::F32(v) = &mut u.payload {
            v.pop();
        }
    });
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("empty body", UPDATE_TYPE, vec![], 400, "malformed_update"),
        ("truncated", UPDATE_TYPE, good(6).encode()[..limit / 2].to_vec(), 400, "malformed_update"),
        ("bad magic", UPDATE_TYPE, patched(0, b"HRTX"), 400, "malformed_update"),
        ("wrong format version", UPDATE_TYPE, patched(4, &7u16.to_le_bytes()), 400, "unsupported_format_version"),
        ("unknown encoding", UPDATE_TYPE, patched(6, &[9]), 400, "malformed_update"),
        ("NaN in the payload", UPDATE_TYPE, nan, 422, "non_finite"),
        (
            "huge norm",
            UPDATE_TYPE,
            with(&|u| u.payload = Payload::F32(u.values().iter().map(|x| x * 50.0).collect())),
            422,
            "implausible_norm",
        ),
        ("no noise", UPDATE_TYPE, unnoised, 422, "implausible_norm"),
        ("other clip norm", UPDATE_TYPE, with(&|u| u.clip_norm = 2.0), 422, "privacy_parameters_mismatch"),
        ("other noise multiplier", UPDATE_TYPE, with(&|u| u.noise_multiplier = 0.1), 422, "privacy_parameters_mismatch"),
        ("stale model", UPDATE_TYPE, with(&|u| u.model_version = 0), 409, "stale_model"),
        ("wrong round", UPDATE_TYPE, with(&|u| u.round_id = 0), 409, "wrong_round"),
        // A round another replica may have opened moments ago: the device is told to retry.
        ("a later round", UPDATE_TYPE, with(&|u| u.round_id += 1), 503, "busy"),
        ("wrong parameter count", UPDATE_TYPE, short_payload, 422, "wrong_parameter_count"),
        ("wrong encoding", UPDATE_TYPE, quantized, 422, "wrong_encoding"),
        ("replayed nonce", UPDATE_TYPE, honest[0].encode(), 409, "duplicate_nonce"),
        ("one byte too many", UPDATE_TYPE, [good(7).encode(), vec![0]].concat(), 413, "payload_too_large"),
        ("wrong content type", "application/octet-stream", good(8).encode(), 415, "unsupported_media_type"),
        ("JSON instead of an update", "application/json", b"{\"delta\": [1, 2, 3]}".to_vec(), 415, "unsupported_media_type"),
    ];
    for (what, content_type, body, status, code) in &cases {
        let (got, reply) = post(&server.url("/v1/updates"), content_type, body);
        assert_eq!((got, reply["error"].as_str()), (*status, Some(*code)), "{what}: {reply}");
        assert!(!reply["detail"].as_str().unwrap_or("").is_empty(), "{what}: no detail");
    }

    // Requests no well-behaved client sends, written by hand.
    let body = good(9).encode();
    let media = ("Content-Type", UPDATE_TYPE.to_string());
    let raw_cases: Vec<(&str, Written, u16, &str)> = vec![
        (
            "declared length over the limit",
            vec![(request("/v1/updates", &[media.clone(), ("Content-Length", "1000000000".into())], &[]), Duration::ZERO)],
            413,
            "payload_too_large",
        ),
        (
            // Transfer-Encoding framing is refused before any body is read (tests/connections.rs).
            "chunked body over the limit",
            vec![(
                request(
                    "/v1/updates",
                    &[media.clone(), ("Transfer-Encoding", "chunked".into())],
                    &[format!("{:x}\r\n", limit + 1).as_bytes(), &vec![0u8; limit + 1], b"\r\n0\r\n\r\n"].concat(),
                ),
                Duration::ZERO,
            )],
            400,
            "transfer_encoding_refused",
        ),
        (
            "slow body",
            vec![
                (
                    request("/v1/updates", &[media.clone(), ("Content-Length", body.len().to_string())], &body[..100]),
                    Duration::from_millis(2500),
                ),
                (body[100..].to_vec(), Duration::ZERO),
            ],
            408,
            "body_timeout",
        ),
        (
            "gzip content encoding",
            vec![(
                request(
                    "/v1/updates",
                    &[media.clone(), ("Content-Encoding", "gzip".into()), ("Content-Length", body.len().to_string())],
                    &body,
                ),
                Duration::ZERO,
            )],
            415,
            "unsupported_content_encoding",
        ),
        (
            "no content type",
            vec![(request("/v1/updates", &[("Content-Length", body.len().to_string())], &body), Duration::ZERO)],
            415,
            "unsupported_media_type",
        ),
    ];
    for (what, chunks, status, code) in &raw_cases {
        let chunks: Vec<(&[u8], Duration)> = chunks.iter().map(|(b, d)| (&b[..], *d)).collect();
        let (got, text) = raw(&server.url(""), &chunks);
        assert_eq!(got, *status, "{what}: {text}");
        assert!(text.contains(&format!("\"error\":\"{code}\"")), "{what}: {text}");
    }
    assert_eq!(cases.len() + raw_cases.len(), 24);

    // Nothing but the one honest update was stored or counted.
    assert_eq!(server.metric("hearth_round_updates"), 1.0);
    assert_eq!(server.metric("hearth_updates_rejected_total{reason=\"implausible_norm\"}"), 2.0);
    assert_eq!(stored_ids(&dir), 1);

    // The round closes on honest updates only, and the model moves by exactly their mean.
    for seed in 101..100 + K {
        let u = good(seed);
        assert_eq!(server.post(&u.encode()).0, 202);
        honest.push(u);
    }
    server.wait_round_after(task.round_id);
    let (after, _) = fetch_pack(&server);
    assert_fedavg(&before.params, &after.params, 0.01, &mean(&honest));
}

fn quantized_rounds_accept_honest_quantized_updates_and_refuse_f32(backend: Backend) {
    let dir = scratch_on("bad-input-quantized", backend);
    let server = Server::start(
        &dir,
        &config(&small_pack(&dir), K, "").replace("min_events = 5", "min_events = 5\nencoding = \"quantized\""),
    );
    let task = server.task();
    let d = fetch_pack(&server).0.params.values.len();
    assert_eq!(server.post(&honest_update(&task, d, 1, Encoding::QuantizedI16).encode()).0, 202);
    let (status, reply) = server.post(&honest_update(&task, d, 2, Encoding::F32).encode());
    assert_eq!((status, reply["error"].as_str()), (413, Some("payload_too_large")), "an f32 body exceeds the quantized size");
    let mut loud = honest_update(&task, d, 3, Encoding::QuantizedI16);
    if let Payload::QuantizedI16 { values, .. } = &mut loud.payload {
        values.iter_mut().for_each(|v| *v = v.saturating_mul(40));
    }
    let (status, reply) = server.post(&loud.encode());
    assert_eq!((status, reply["error"].as_str()), (422, Some("implausible_norm")), "{reply}");
}

on_both_backends!(
    every_kind_of_bad_upload_is_refused_with_its_reason_and_nothing_is_stored,
    quantized_rounds_accept_honest_quantized_updates_and_refuse_f32
);
