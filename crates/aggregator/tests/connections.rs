//! Connection handling against hostile clients: an idle flood past the open-file limit, silent
//! and slowloris connections, idle kept-alive connections, model downloads that are never read,
//! ambiguous framing, and no client address in the logs at any level.

mod common;

use common::*;
use hearth_core::privacy::wire::Encoding;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::net::sockopt::set_socket_recv_buffer_size;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

const K: u64 = 10;
/// Longest any step may take on a busy machine before the server is deemed not to have acted.
const CEILING: Duration = Duration::from_secs(15);
/// The timeouts of [`timeouts`]: far enough apart to tell which one closed a connection.
const HEADER_TIMEOUT: Duration = Duration::from_millis(1_000);
const IDLE_TIMEOUT: Duration = Duration::from_millis(3_000);
/// Early slack allowed on a deadline: the server's clock starts at `accept`, a little after ours.
const EARLY: Duration = Duration::from_millis(100);
/// `send_timeout_ms` where a test waits for it.
const SEND_TIMEOUT: Duration = Duration::from_millis(1_000);
/// A published model of the default pack: its answer (1.1 MB) fits in no socket buffer of
/// [`non_reader`]'s and the server's default `send_buffer_bytes`.
const MODEL: &str = "/v1/models/1/model.onnx";
/// A non-reader's receive buffer: small, so that the host's TCP defaults cannot make room for a
/// whole answer at this end.
const NON_READER_BUFFER: usize = 16 * 1024;

/// One test at a time: the idle flood lowers this process's open-file limit while it spawns its
/// server, and nothing else may spawn or open files meanwhile.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This process's open-file soft limit, lowered until dropped (children spawned meanwhile keep
/// the lowered one).
struct FdLimit(Rlimit);

impl FdLimit {
    fn lower_to(soft: u64) -> FdLimit {
        let was = getrlimit(Resource::Nofile);
        assert!(was.current.is_none_or(|s| s > soft), "the open-file limit is already at most {soft}");
        setrlimit(Resource::Nofile, Rlimit { current: Some(soft), maximum: was.maximum }).unwrap();
        FdLimit(was)
    }
}

impl Drop for FdLimit {
    fn drop(&mut self) {
        setrlimit(Resource::Nofile, self.0).unwrap();
    }
}

fn addr(server: &Server) -> String {
    server.url.trim_start_matches("http://").to_string()
}

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(addr(server)).unwrap();
    s.set_read_timeout(Some(CEILING)).unwrap();
    s
}

/// A request head (and body) as bytes.
fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n").into_bytes();
    for (k, v) in headers {
        r.extend(format!("{k}: {v}\r\n").bytes());
    }
    r.extend(b"\r\n");
    r.extend(body);
    r
}

/// Reads one response with a Content-Length body; status 0 if none came within the read timeout.
fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            _ => return (0, String::from_utf8_lossy(&got).into()),
        }
    }
    let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let length = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    if s.read_exact(&mut body).is_err() {
        return (0, head);
    }
    (status, String::from_utf8_lossy(&body).into())
}

/// How long after `since` the server closed `s` (EOF or reset), reading and discarding anything
/// it sent; `None` if it was still open `CEILING` after `since`.
fn closed_after(s: &mut TcpStream, since: Instant) -> Option<Duration> {
    let mut buf = [0u8; 1024];
    while since.elapsed() < CEILING {
        match s.read(&mut buf) {
            Ok(0) => return Some(since.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(_) => return Some(since.elapsed()),
        }
    }
    None
}

/// A connection that sends `requests` and never reads.
fn non_reader(server: &Server, requests: &[u8]) -> TcpStream {
    let mut s = connect(server);
    set_socket_recv_buffer_size(&s, NON_READER_BUFFER).unwrap();
    s.write_all(requests).unwrap();
    s
}

/// How long after `since` the server closed `s` (FIN or reset), found without reading: a read
/// would let the server's writes progress. `None` if it was still open `CEILING` after `since`.
fn hung_up_after(s: &TcpStream, since: Instant) -> Option<Duration> {
    let tick = Timespec { tv_sec: 0, tv_nsec: 100_000_000 };
    while since.elapsed() < CEILING {
        // Hang-ups and errors are reported whatever is asked for.
        if poll(&mut [PollFd::new(s, PollFlags::RDHUP)], Some(&tick)).is_ok_and(|ready| ready > 0) {
            return Some(since.elapsed());
        }
    }
    None
}

fn timeouts() -> String {
    format!("header_timeout_ms = {}\nidle_timeout_ms = {}", HEADER_TIMEOUT.as_millis(), IDLE_TIMEOUT.as_millis())
}

#[test]
fn an_idle_flood_past_the_open_file_limit_does_not_stop_honest_requests() {
    let _serial = serial();
    let dir = scratch("connections-idle-flood");
    let pack = small_pack(&dir);
    // Timeouts beyond the test's length: only the connection cap can make room.
    let config = config(&pack, K, "header_timeout_ms = 600000\nidle_timeout_ms = 600000");
    // The server's max_connections is then 256 - FD_RESERVE = 192.
    let server = {
        let _lowered = FdLimit::lower_to(256);
        Server::start(&dir, &config)
    };
    let task = server.task();
    let update = honest_update(&task, fetch_pack(&server).0.params.values.len(), 1, Encoding::F32).encode();

    let flood: Vec<TcpStream> = (0..300).map(|_| connect(&server)).collect();
    let healthz = raw(&server.url("/"), &[(&request("GET", "/healthz", &[("Connection", "close")], b""), Duration::ZERO)]);
    assert_eq!(healthz.0, 200, "/healthz under an idle flood: {}", healthz.1);
    let round = raw(&server.url("/"), &[(&request("GET", "/v1/round", &[("Connection", "close")], b""), Duration::ZERO)]);
    assert_eq!(round.0, 200, "/v1/round under an idle flood: {}", round.1);
    let length = update.len().to_string();
    let upload = request(
        "POST",
        "/v1/updates",
        &[("Connection", "close"), ("Content-Type", UPDATE_TYPE), ("Content-Length", &length)],
        &update,
    );
    let accepted = raw(&server.url("/"), &[(&upload, Duration::ZERO)]);
    assert_eq!(accepted.0, 202, "an upload under an idle flood: {}", accepted.1);
    drop(flood);
}

#[test]
fn silent_slow_and_idle_connections_are_closed_on_time() {
    let _serial = serial();
    let dir = scratch("connections-timeouts");
    let server = Server::start(&dir, &config(&small_pack(&dir), K, &timeouts()));

    let mut silent = connect(&server);
    let took = closed_after(&mut silent, Instant::now()).expect("a connection that sends nothing was never closed");
    assert!(took >= HEADER_TIMEOUT - EARLY, "closed after {took:?}, before header_timeout_ms");

    // Slowloris: one byte of a head every 200 ms, never finishing it.
    let mut slow = connect(&server);
    let started = Instant::now();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ").unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = [0u8; 256];
    let took = loop {
        assert!(started.elapsed() < CEILING, "a slowloris head was never cut off");
        if slow.write_all(b"a").is_err() {
            break started.elapsed();
        }
        match slow.read(&mut buf) {
            Ok(0) => break started.elapsed(),
            Ok(_) => panic!("the server answered a head that never ended"),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break started.elapsed(),
        }
    };
    assert!(took >= HEADER_TIMEOUT - EARLY, "closed after {took:?}, before header_timeout_ms");

    // Kept alive: idle for longer than header_timeout is fine, the next head is timed from its
    // first byte; idle past idle_timeout is not.
    let mut kept = connect(&server);
    kept.write_all(&request("GET", "/healthz", &[], b"")).unwrap();
    assert_eq!(read_response(&mut kept).0, 200);
    std::thread::sleep(HEADER_TIMEOUT + HEADER_TIMEOUT / 2);
    kept.write_all(&request("GET", "/healthz", &[], b"")).unwrap();
    assert_eq!(read_response(&mut kept).0, 200, "a kept-alive connection idle past header_timeout was cut");
    let idle_since = Instant::now();
    let took = closed_after(&mut kept, idle_since).expect("an idle kept-alive connection was never closed");
    assert!(took >= IDLE_TIMEOUT - EARLY, "closed after {took:?} idle, before idle_timeout_ms");
}

#[test]
fn a_download_never_read_is_closed_after_send_timeout() {
    let _serial = serial();
    let dir = scratch("connections-unread-download");
    // An idle timeout beyond the test's length: only the send timeout can close it.
    let extra = format!("send_timeout_ms = {}\nidle_timeout_ms = 600000", SEND_TIMEOUT.as_millis());
    let server = Server::start(&dir, &config(&default_pack(), K, &extra));
    let (status, _, whole) = get(&server.url(MODEL));
    assert_eq!(status, 200, "an honest download");

    let mut unread = non_reader(&server, &request("GET", MODEL, &[], b""));
    let took = hung_up_after(&unread, Instant::now()).expect("a download never read was never closed");
    assert!(took >= SEND_TIMEOUT - EARLY, "closed after {took:?}, before send_timeout_ms");
    // What reached this end before the close, then EOF or a reset: never the whole answer.
    let mut got = 0;
    let mut buf = [0u8; 64 * 1024];
    while let Ok(n @ 1..) = unread.read(&mut buf) {
        got += n;
    }
    assert!(got < whole.len(), "the whole answer ({got} bytes) was sent to a client that never read");
}

#[test]
fn a_cap_full_of_stalled_downloads_still_admits_honest_requests() {
    const CAP: usize = 20;
    /// A static file larger than the kernel's autotuned send buffer (tcp_wmem's ceiling, 4 MiB
    /// by default) and hyper's write queue hold: it is sent in chunks, so its request stays in
    /// flight until the last is written, and the connection is never idle. (A model is one
    /// chunk, handed to hyper whole: its connection is idle at once.)
    const FILE_BYTES: usize = 8 << 20;
    let _serial = serial();
    let dir = scratch("connections-stalled-cap");
    let www = dir.join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("big.bin"), vec![7u8; FILE_BYTES]).unwrap();
    // Send and idle timeouts beyond the test's length: only closing a stalled connection at the
    // cap can make room.
    let extra = format!("www = {www:?}\nmax_connections = {CAP}\nsend_timeout_ms = 600000\nidle_timeout_ms = 600000");
    let server = Server::start(&dir, &config(&small_pack(&dir), K, &extra));

    let stalled: Vec<TcpStream> = (0..CAP).map(|_| non_reader(&server, &request("GET", "/big.bin", &[], b""))).collect();
    // The first bytes of an answer on each: every one is admitted, and the cap is full.
    for s in &stalled {
        assert!(s.peek(&mut [0u8; 1]).is_ok_and(|n| n == 1), "a download was not answered");
    }
    let started = Instant::now();
    let healthz = loop {
        let answer = raw(&server.url("/"), &[(&request("GET", "/healthz", &[("Connection", "close")], b""), Duration::ZERO)]);
        if answer.0 == 200 || started.elapsed() > CEILING {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(healthz.0, 200, "/healthz with every connection a stalled download: {}", healthz.1);
    drop(stalled);
}

#[test]
fn content_length_with_transfer_encoding_is_refused_and_the_connection_closed() {
    let _serial = serial();
    let dir = scratch("connections-framing");
    let server = Server::start(&dir, &config(&small_pack(&dir), K, ""));
    let task = server.task();
    let update = honest_update(&task, fetch_pack(&server).0.params.values.len(), 1, Encoding::F32).encode();
    let length = update.len().to_string();
    let mut chunked = format!("{:x}\r\n", update.len()).into_bytes();
    chunked.extend(&update);
    chunked.extend(b"\r\n0\r\n\r\n");
    for framing in [
        [("Content-Length", length.as_str()), ("Transfer-Encoding", "chunked")],
        [("Transfer-Encoding", "chunked"), ("Content-Length", length.as_str())],
    ] {
        let mut s = connect(&server);
        let headers = [("Content-Type", UPDATE_TYPE), framing[0], framing[1]];
        s.write_all(&request("POST", "/v1/updates", &headers, b"")).unwrap();
        // The head alone decides: the answer comes before any body is sent.
        let (status, body) = read_response(&mut s);
        assert_eq!(status, 400, "{framing:?}: {body}");
        let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(reply["error"], "transfer_encoding_refused", "{reply}");
        // Whatever follows is never read as a request.
        let _ = s.write_all(&chunked);
        assert!(closed_after(&mut s, Instant::now()).is_some(), "{framing:?}: the connection stayed open");
    }
    // Nothing of the refused uploads was taken: the same update is still new.
    assert_eq!(server.post(&update).0, 202);
}

#[test]
fn no_client_address_is_logged_even_at_trace() {
    let _serial = serial();
    let dir = scratch("connections-logs");
    let mut server = Server::start_with_env(&dir, &config(&small_pack(&dir), K, ""), &[("HEARTH_LOG", "trace")]);
    let mut client = connect(&server);
    let port = client.local_addr().unwrap().port();
    for (method, path, headers) in [
        ("GET", "/healthz", vec![]),
        ("GET", "/v1/round", vec![]),
        ("POST", "/v1/updates", vec![("Content-Type", "text/plain"), ("Content-Length", "0")]),
        ("GET", "/no/such/thing", vec![("Connection", "close")]),
    ] {
        client.write_all(&request(method, path, &headers, b"")).unwrap();
        assert_ne!(read_response(&mut client).0, 0, "{method} {path} got no answer");
    }
    drop(client);
    server.sigkill();
    let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap();
    assert!(log.contains("DEBUG"), "HEARTH_LOG=trace did not take effect:\n{log}");
    // The port after ':' (host:port) or '=' (a field), not followed by another digit.
    let named = ["=", ":"].iter().any(|sep| {
        let peer = format!("{sep}{port}");
        log.match_indices(&peer).any(|(at, _)| !log[at + peer.len()..].starts_with(|c: char| c.is_ascii_digit()))
    });
    assert!(!named, "the log names the client's address (port {port}):\n{log}");
}
