//! The server's own accept loop (HTTP/1.1 on hyper). `axum::serve` has no header-read timeout,
//! no idle timeout and no connection cap, so connections that send nothing, or a byte now and
//! then, held every file descriptor until `accept` failed and nobody was answered.
//!
//! A connection is at any moment busy (a request in flight: from its complete head until hyper
//! has taken the last of its response body) or idle (everything else, a connection still sending
//! its head included). An idle connection has one deadline: `header_timeout` after it was
//! accepted or after the first byte of its next head, else `idle_timeout` after its last
//! response. hyper's own `header_read_timeout` is not used: it restarts the moment a kept-alive
//! connection goes idle, so it would close every kept-alive connection `header_timeout` after its
//! last response whatever `idle_timeout` says.
//!
//! Writes are watched apart from the phase: hyper takes a body of one chunk (a model, 1.1 MB)
//! whole and writes it out while the connection is already idle, and a client that never reads
//! stops those writes. The kernel autotunes a socket's send buffer up to megabytes, so each such
//! client pinned its whole answer in kernel memory: 4,000 of them held 1.84 GB, past
//! `net.ipv4.tcp_mem`, and the kernel starved every socket on the host, honest uploads too. So
//! each socket's send buffer is fixed at `send_buffer_bytes`, and a connection whose writes make
//! no progress for `send_timeout` is closed (nginx's `send_timeout`), whatever its phase. A
//! connection closed with bytes it could not send is reset rather than closed gracefully: a
//! graceful close would leave them in kernel memory until the peer reads them or the kernel
//! gives up (nginx's `reset_timedout_connection`).
//!
//! At `max_connections` each new connection displaces the one idle longest, so an idle flood
//! only ever displaces itself, and the descriptors above the cap stay free for the listener, the
//! database and logs (with `www` served, each connection counts for two: it may hold the file it
//! sends open). When none is idle (each is sending an answer of many chunks, a large static
//! file), it displaces the one whose writes have stalled longest, if for at least
//! [`STALL_EVICTABLE`], so a cap full of clients that never read cannot lock honest ones out. The
//! peer's address is dropped at `accept`: it is never logged or stored.
//!
//! A request framed by Transfer-Encoding is refused (400, then the connection closes). hyper
//! drops a Content-Length that comes with Transfer-Encoding before the router sees the request,
//! so the ambiguous pair RFC 9112 §6.3 warns of cannot be told from chunked framing alone; no
//! client of this API sends chunked bodies, so both are refused.

use crate::config::{Config, FD_RESERVE};
use crate::reason::{Reason, Reject};
use axum::Router;
use axum::body::Body;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::header::{CONNECTION, HeaderValue, TRANSFER_ENCODING};
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Longest a request in flight at shutdown may take to finish before its connection is cut.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// The most connections `max_connections` may allow, whatever the open-file limit (Linux's
/// default ceiling on open files, `fs.nr_open`).
const MAX_CONNECTIONS_CEILING: usize = 1 << 20;
/// The most connections `max_connections = 0` allows, however high the open-file limit (a
/// container's is often 2^20): each connection may hold up to `http::PRE_SLOT_BYTES` (64 KiB) of
/// an upload before it takes a slot, so this bounds that memory to 256 MiB. An operator who wants
/// more sets `max_connections`.
const AUTOMATIC_CEILING: usize = 4_096;
/// Pause after an `accept` failure that is not the client's doing (out of descriptors or
/// memory), so that a lasting one does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// A repeated warning (accept failures, the cap reached) is logged at most once per this.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// At the cap with no connection idle, one whose writes have made no progress for at least this
/// long is closed to admit the new one. An honest client's writes stall for about a round trip
/// at a time; a whole second without taking a byte is a client gone or one that never reads.
const STALL_EVICTABLE: Duration = Duration::from_secs(1);

/// The connection settings, `max_connections` resolved against this process's open-file limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub send_timeout: Duration,
    pub send_buffer_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error(
        "max_connections = {wanted} is above the {allowed} connections this process's open-file limit allows \
         ({FD_RESERVE} descriptors are kept for the listener, the database and logs, and with `www` set each \
         connection counts twice, for the file it sends); raise the limit \
         (ulimit -n, systemd's LimitNOFILE=) or lower max_connections"
    )]
    AboveFdLimit { wanted: usize, allowed: usize },
    #[error(
        "this process's open-file limit ({soft}) leaves no descriptors for connections once {FD_RESERVE} are kept \
         for the listener, the database and logs; raise it (ulimit -n, systemd's LimitNOFILE=)"
    )]
    NoDescriptors { soft: u64 },
}

impl Limits {
    /// Reads the connection settings and checks `max_connections` against the open-file limit
    /// (RLIMIT_NOFILE's soft limit); call it before listening, so a cap the process cannot hold
    /// stops the start.
    pub fn from_config(config: &Config) -> Result<Limits, LimitError> {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        // Serving `www`, a connection also holds open the file it is sending.
        let per_connection = if config.www.is_some() { 2 } else { 1 };
        let allowed = match soft {
            Some(s) if s <= FD_RESERVE as u64 + per_connection as u64 => return Err(LimitError::NoDescriptors { soft: s }),
            Some(s) => {
                (usize::try_from(s - FD_RESERVE as u64).unwrap_or(usize::MAX) / per_connection).min(MAX_CONNECTIONS_CEILING)
            }
            None => MAX_CONNECTIONS_CEILING,
        };
        let max_connections = match config.max_connections {
            0 => allowed.min(AUTOMATIC_CEILING),
            n if n > allowed => return Err(LimitError::AboveFdLimit { wanted: n, allowed }),
            n => n,
        };
        Ok(Limits {
            max_connections,
            header_timeout: Duration::from_millis(config.header_timeout_ms),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            send_timeout: Duration::from_millis(config.send_timeout_ms),
            send_buffer_bytes: config.send_buffer_bytes,
        })
    }
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, closes idle
/// connections at once and gives requests in flight up to [`SHUTDOWN_GRACE`] to finish.
pub async fn serve(listener: TcpListener, router: Router, limits: &Limits, shutdown: impl Future<Output = ()>) {
    let registry = Arc::new(Registry::new(limits.clone()));
    let mut http = http1::Builder::new();
    // The watchdog enforces header_timeout (see the module doc); hyper has no timer here.
    http.header_read_timeout(None);
    let mut shutdown = pin!(shutdown);
    let mut accept_failed = Throttled::default();
    let mut at_cap = Throttled::default();
    loop {
        // One permit per open connection plus one: waits while a displaced connection closes.
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = registry.permits.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else { break };
        let stream = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                // The peer's address ends here.
                Ok((stream, _)) => stream,
                Err(e) if is_peer_error(&e) => continue,
                Err(e) => {
                    if let Some(held_back) = accept_failed.due() {
                        tracing::warn!(error = %e, held_back, "accepting a connection failed; retrying shortly");
                    }
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        if registry.permits.available_permits() == 0 {
            if let Some(held_back) = at_cap.due() {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    held_back,
                    "at max_connections: each new connection closes the one idle longest, else the one whose writes \
                     have stalled longest (at least 1 s), or is itself closed"
                );
            }
            let made_room = {
                let mut table = registry.lock();
                table.close_idlest() || table.close_stalled(registry.clock())
            };
            if !made_room {
                continue;
            }
        }
        let conn = Arc::new(Conn::admit(&registry));
        tokio::spawn(run(conn, stream, http.clone(), router.clone(), permit));
    }
    drop(listener);
    registry.lock().shut_down();
    // Every permit back: every connection has closed.
    let all = u32::try_from(limits.max_connections + 1).unwrap_or(u32::MAX);
    let _ = registry.permits.acquire_many(all).await;
}

/// Failures of one client's connection attempt, not of the listener: the next accept may
/// proceed at once.
fn is_peer_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Serves one connection until it ends, its watchdog closes it, or shutdown drains it.
async fn run(conn: Arc<Conn>, stream: TcpStream, http: http1::Builder, router: Router, _permit: OwnedSemaphorePermit) {
    // Fixed, which turns the kernel's autotuning off (see the module doc).
    if let Err(e) = rustix::net::sockopt::set_socket_send_buffer_size(&stream, conn.registry.limits.send_buffer_bytes) {
        tracing::debug!(error = %e, "setting the connection's send buffer failed");
    }
    let io = TokioIo::new(Watched { stream, conn: conn.clone() });
    let mut served = pin!(http.serve_connection(io, service(conn.clone(), router)));
    let stop = tokio::select! {
        result = served.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            None
        }
        stop = watchdog(&conn) => Some(stop),
    };
    if stop == Some(Stop::Drain) {
        served.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, served).await;
    }
    conn.registry.lock().remove(conn.id);
}

/// The router behind the framing check, each request marked in flight until hyper has taken
/// its whole response body.
fn service(
    conn: Arc<Conn>,
    router: Router,
) -> impl hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future: Send> {
    let router = TowerToHyperService::new(router);
    hyper::service::service_fn(move |request: Request<Incoming>| {
        let in_flight = InFlight::begin(conn.clone());
        let routed = (!request.headers().contains_key(TRANSFER_ENCODING)).then(|| router.call(request));
        async move {
            let response = match routed {
                Some(routed) => routed.await?,
                None => transfer_encoding_refused(),
            };
            Ok(response.map(|body| Body::new(TrackedBody { body, _in_flight: in_flight })))
        }
    })
}

fn transfer_encoding_refused() -> Response<Body> {
    let mut response = crate::http::reject(Reject::new(
        Reason::TransferEncodingRefused,
        "request bodies must be framed by Content-Length alone, without Transfer-Encoding",
    ));
    // RFC 9112 §6.3: the connection's framing can no longer be trusted.
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Every open connection's phase, under one lock (a few transitions per request).
struct Registry {
    limits: Limits,
    table: Mutex<Table>,
    /// `max_connections + 1`: the extra one admits a connection at the cap while the one it
    /// displaces closes.
    permits: Arc<Semaphore>,
    next_id: AtomicU64,
    /// Where the clock of write stalls starts: a stall is kept in an atomic, as milliseconds
    /// since.
    epoch: Instant,
}

impl Registry {
    fn new(limits: Limits) -> Registry {
        let permits = Arc::new(Semaphore::new(limits.max_connections + 1));
        Registry { limits, table: Mutex::new(Table::default()), permits, next_id: AtomicU64::new(0), epoch: Instant::now() }
    }

    /// Now, on the clock of write stalls.
    fn clock(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The instant `ms` on the clock of write stalls.
    fn instant(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every update leaves the table consistent, so a panic elsewhere does not spoil it.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct Table {
    slots: HashMap<u64, Slot>,
    /// The idle connections by when they became idle: the first is closed at the cap.
    idle: BTreeSet<(Instant, u64)>,
    /// Connections whose writes were stalled when their watchdog last looked, by when the stall
    /// began: the cap closes the first when none is idle. Writes that go through tell no one, so
    /// an entry may be of a stall that has ended; [`Table::close_stalled`] checks.
    stalled: BTreeSet<(u64, u64)>,
}

struct Slot {
    phase: Phase,
    wake: Arc<Notify>,
    stall: Arc<Stall>,
    /// This connection's entry in `stalled`.
    filed: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request in flight since `since`; `head_by` once a head is due (the connection is new,
    /// or bytes of its next head have arrived).
    Idle {
        since: Instant,
        head_by: Option<Instant>,
    },
    Busy,
    /// Shutdown began while busy: close once this request is done.
    Draining,
    Closing,
}

impl Table {
    /// Moves connection `id` to `phase`, keeping `idle` and `stalled` in step, and wakes its
    /// watchdog.
    fn set(&mut self, id: u64, phase: Phase) {
        if phase == Phase::Closing {
            self.file_stall(id, None);
        }
        let Some(slot) = self.slots.get_mut(&id) else { return };
        if let Phase::Idle { since, .. } = slot.phase {
            self.idle.remove(&(since, id));
        }
        if let Phase::Idle { since, .. } = phase {
            self.idle.insert((since, id));
        }
        slot.phase = phase;
        slot.wake.notify_one();
    }

    fn phase(&self, id: u64) -> Phase {
        self.slots.get(&id).map_or(Phase::Closing, |s| s.phase)
    }

    /// Connection `id`'s phase, for its watchdog, which files the stall of its writes, if any
    /// (`since`), unless it is closing.
    fn watch(&mut self, id: u64, since: Option<u64>) -> Phase {
        let phase = self.phase(id);
        if phase != Phase::Closing {
            self.file_stall(id, since);
        }
        phase
    }

    fn file_stall(&mut self, id: u64, since: Option<u64>) {
        let Some(slot) = self.slots.get_mut(&id) else { return };
        if slot.filed == since {
            return;
        }
        if let Some(old) = slot.filed {
            self.stalled.remove(&(old, id));
        }
        if let Some(new) = since {
            self.stalled.insert((new, id));
        }
        slot.filed = since;
    }

    /// Closes the connection whose writes have stalled longest, if for at least
    /// [`STALL_EVICTABLE`] at `now`; false if none has.
    fn close_stalled(&mut self, now: u64) -> bool {
        let evictable = STALL_EVICTABLE.as_millis() as u64;
        while let Some(&(filed, id)) = self.stalled.first() {
            // A connection's stalls only ever begin later than the one filed: if the first filed
            // is too recent, every one is.
            if now.saturating_sub(filed) < evictable {
                return false;
            }
            let since = self.slots.get(&id).and_then(|s| s.stall.since());
            if since == Some(filed) {
                self.set(id, Phase::Closing);
                return true;
            }
            // That stall ended: file the one now under way, if any, and look again.
            self.file_stall(id, since);
        }
        false
    }

    /// Closes the connection idle longest; false if every connection has a request in flight.
    fn close_idlest(&mut self) -> bool {
        let Some(&(_, id)) = self.idle.first() else { return false };
        self.set(id, Phase::Closing);
        true
    }

    fn shut_down(&mut self) {
        let ids: Vec<(u64, Phase)> = self.slots.iter().map(|(id, s)| (*id, s.phase)).collect();
        for (id, phase) in ids {
            self.set(id, if phase == Phase::Busy { Phase::Draining } else { Phase::Closing });
        }
    }

    fn remove(&mut self, id: u64) {
        self.set(id, Phase::Closing);
        self.slots.remove(&id);
    }
}

/// One connection's handle on its registry entry.
struct Conn {
    id: u64,
    registry: Arc<Registry>,
    wake: Arc<Notify>,
    /// Set when a response is done: the next byte read starts a head. Keeps reads of a body
    /// from taking the lock.
    awaiting_head: AtomicBool,
    stall: Arc<Stall>,
}

impl Conn {
    fn admit(registry: &Arc<Registry>) -> Conn {
        let id = registry.next_id.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let wake = Arc::new(Notify::new());
        let stall = Arc::new(Stall::default());
        let phase = Phase::Idle { since: now, head_by: now.checked_add(registry.limits.header_timeout) };
        let mut table = registry.lock();
        table.slots.insert(id, Slot { phase: Phase::Closing, wake: wake.clone(), stall: stall.clone(), filed: None });
        table.set(id, phase);
        drop(table);
        Conn { id, registry: registry.clone(), wake, awaiting_head: AtomicBool::new(false), stall }
    }

    fn request_started(&self) {
        let mut table = self.registry.lock();
        if let Phase::Idle { .. } = table.phase(self.id) {
            table.set(self.id, Phase::Busy);
        }
    }

    fn request_finished(&self) {
        let mut table = self.registry.lock();
        match table.phase(self.id) {
            Phase::Busy => {
                table.set(self.id, Phase::Idle { since: Instant::now(), head_by: None });
                self.awaiting_head.store(true, Ordering::Relaxed);
            }
            Phase::Draining => table.set(self.id, Phase::Closing),
            Phase::Idle { .. } | Phase::Closing => {}
        }
    }

    fn bytes_arrived(&self) {
        if !self.awaiting_head.swap(false, Ordering::Relaxed) {
            return;
        }
        let mut table = self.registry.lock();
        if let Phase::Idle { since, head_by: None } = table.phase(self.id) {
            let head_by = Instant::now().checked_add(self.registry.limits.header_timeout);
            table.set(self.id, Phase::Idle { since, head_by });
        }
    }

    /// Notes a write's outcome: one that goes through ends a stall; one that finds the send
    /// buffer full begins one, and wakes the watchdog to time it.
    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(1..)) => self.stall.progressed(),
            Poll::Pending if self.stall.since().is_none() => {
                self.stall.began(self.registry.clock());
                self.wake.notify_one();
            }
            Poll::Ready(_) | Poll::Pending => {}
        }
    }

    /// When the connection must close; `None`: not while it stays as it is. Idle, its header or
    /// idle deadline; in any phase, `send_timeout` after its writes stalled.
    fn deadline(&self, phase: Phase, stalled: Option<u64>) -> Option<Instant> {
        let limits = &self.registry.limits;
        let idle = match phase {
            Phase::Idle { since, head_by } => head_by.or_else(|| since.checked_add(limits.idle_timeout)),
            _ => None,
        };
        let send = stalled.and_then(|since| self.registry.instant(since).checked_add(limits.send_timeout));
        match (idle, send) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Since when a connection's writes have made no progress, on its registry's clock of write
/// stalls. [`Watched`] keeps it without a lock (a write that goes through costs one load), for
/// the watchdog and the cap to read.
struct Stall(AtomicU64);

impl Stall {
    /// Writes go through.
    const NONE: u64 = u64::MAX;

    fn since(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&since| since != Stall::NONE)
    }

    fn began(&self, now: u64) {
        self.0.store(now, Ordering::Relaxed);
    }

    fn progressed(&self) {
        if self.since().is_some() {
            self.0.store(Stall::NONE, Ordering::Relaxed);
        }
    }
}

impl Default for Stall {
    fn default() -> Stall {
        Stall(AtomicU64::new(Stall::NONE))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Close now: past a deadline, displaced at the cap, or idle at shutdown.
    Now,
    /// Shutdown: finish the request in flight, then close.
    Drain,
}

/// Resolves when the connection must stop.
async fn watchdog(conn: &Conn) -> Stop {
    loop {
        // Created before reading the phase: a change in between leaves a permit, not a miss.
        let woken = conn.wake.notified();
        let stalled = conn.stall.since();
        let phase = conn.registry.lock().watch(conn.id, stalled);
        match (phase, conn.deadline(phase, stalled)) {
            (Phase::Closing, _) => return Stop::Now,
            (Phase::Draining, _) => return Stop::Drain,
            (_, Some(at)) if at <= Instant::now() => return Stop::Now,
            (_, Some(at)) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = woken => {}
                }
            }
            (_, None) => woken.await,
        }
    }
}

/// A request in flight on its connection, until dropped with its response body (taken whole, or
/// abandoned when the connection ends).
struct InFlight(Arc<Conn>);

impl InFlight {
    fn begin(conn: Arc<Conn>) -> InFlight {
        conn.request_started();
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response body that keeps its request in flight until hyper drops it.
struct TrackedBody {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, telling its connection when bytes arrive (the first of a kept-alive
/// connection's next head starts its header deadline) and how its writes fare.
struct Watched {
    stream: TcpStream,
    conn: Arc<Conn>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        // Bytes it could not send: reset (SO_LINGER 0), so the kernel frees them now (see the
        // module doc). Should that fail, the close is only graceful.
        if self.conn.stall.since().is_some() {
            let _ = rustix::net::sockopt::set_socket_linger(&self.stream, Some(Duration::ZERO));
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.bytes_arrived();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.conn.wrote(&polled);
        polled
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.conn.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A warning repeated at most once per [`WARN_EVERY`].
#[derive(Default)]
struct Throttled {
    last: Option<Instant>,
    held_back: u64,
}

impl Throttled {
    /// `Some(warnings held back since the last one)` when this one is due.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_connections: usize) -> Config {
        Config { max_connections, ..Config::default() }
    }

    #[test]
    fn max_connections_is_held_to_the_open_file_limit() {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let Some(allowed) = soft.map(|s| (s as usize).saturating_sub(FD_RESERVE).min(MAX_CONNECTIONS_CEILING)) else {
            return;
        };
        assert_eq!(Limits::from_config(&config(0)).unwrap().max_connections, allowed.min(AUTOMATIC_CEILING));
        // Serving files takes a second descriptor per connection.
        let serving = Config { www: Some(".".into()), ..config(0) };
        let halved = (soft.unwrap() as usize - FD_RESERVE) / 2;
        assert_eq!(Limits::from_config(&serving).unwrap().max_connections, halved.min(AUTOMATIC_CEILING));
        assert!(Limits::from_config(&Config { max_connections: halved + 1, ..serving }).is_err());
        assert_eq!(Limits::from_config(&config(1)).unwrap().max_connections, 1);
        let refused = Limits::from_config(&config(allowed + 1)).unwrap_err().to_string();
        assert!(refused.contains("max_connections") && refused.contains(&allowed.to_string()), "{refused}");
    }

    #[test]
    fn the_cap_closes_the_connection_idle_longest_and_never_a_busy_one() {
        let registry = Arc::new(Registry::new(Limits::from_config(&config(0)).unwrap()));
        // Idle since the same instant or later, in this order; ties go by id, also in this order.
        let [first, second, third] = [(); 3].map(|()| Conn::admit(&registry));
        second.request_started();
        let closed = |c: &Conn| registry.lock().phase(c.id) == Phase::Closing;
        assert!(registry.lock().close_idlest() && closed(&first) && !closed(&third));
        assert!(registry.lock().close_idlest() && closed(&third));
        assert!(!registry.lock().close_idlest() && !closed(&second), "the busy connection was closed");
        second.request_finished();
        assert!(registry.lock().close_idlest() && closed(&second));
    }

    #[test]
    fn the_cap_closes_the_connection_stalled_longest_once_stalled_long_enough() {
        let registry = Arc::new(Registry::new(Limits::from_config(&config(0)).unwrap()));
        let [early, late, flowing] = [(); 3].map(|()| Conn::admit(&registry));
        let evictable = STALL_EVICTABLE.as_millis() as u64;
        for c in [&early, &late, &flowing] {
            c.request_started();
        }
        // Their watchdogs file `early`'s stall from 0 and `late`'s from 100; then `early`'s writes
        // go through and stall again at 500, which no one files.
        for (c, since) in [(&early, 0), (&late, 100)] {
            c.stall.began(since);
            registry.lock().watch(c.id, Some(since));
        }
        early.stall.progressed();
        early.stall.began(500);
        let closed = |c: &Conn| registry.lock().phase(c.id) == Phase::Closing;
        assert!(!registry.lock().close_stalled(evictable + 99), "a connection stalled less than STALL_EVICTABLE was closed");
        assert!(registry.lock().close_stalled(evictable + 100) && closed(&late) && !closed(&early));
        assert!(!registry.lock().close_stalled(evictable + 499));
        assert!(registry.lock().close_stalled(evictable + 500) && closed(&early));
        assert!(!registry.lock().close_stalled(u64::MAX - 1) && !closed(&flowing), "a connection whose writes flow was closed");
    }
}
