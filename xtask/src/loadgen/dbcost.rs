//! PostgreSQL's work per upload as rounds accumulate, and the sizing it implies.
//!
//! Replicas of a `single` server (one; then three behind nginx) on a fresh database take f32
//! uploads from [`CLIENTS`] closed-loop clients in rounds of K for [`WINDOWS`] consecutive
//! windows of [`WINDOW`]. At each window's edge the bench reads, from the `postgres` database (so
//! that its reads stay out of the measured database's counters): `pg_stat_database`
//! (transactions, tuples written, blocks touched), `pg_stat_statements` (statements and their
//! execution time, when loaded), the WAL position, the cluster's and the replicas' CPU time from
//! /proc, and a 10 ms sampling of the backends waiting on a lock. Each window's figures per accepted upload stay flat from the first
//! rounds to the last when per-upload database work does not grow with the rounds (and with
//! the ids every round leaves in `updates`). pg_stat_database lags by up to a second (backends
//! flush their counters at most once a second); pg_stat_statements and the WAL do not.
//!
//! The one replica's totals over all windows give the per-upload cost that the sizing estimate
//! scales; with three, the lock wait is the batches of several replicas queueing for the open
//! round's row.

use super::replicas::{LockWait, Nginx, Pg, backend_pid, db_name, process_cpu_s, start_replicas};
use super::{drive, metric, single_env};
use hearth_core::privacy::wire::Encoding;
use postgres::Client;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// Clients of the measured run.
pub(super) const CLIENTS: usize = 64;
/// Windows compared, and each one's length.
const WINDOWS: u32 = 5;
const WINDOW: Duration = Duration::from_secs(6);
/// Uploads at the busiest hour against the day's average, for the sizing.
const PEAK_FACTOR: f64 = 3.0;
/// Participating devices a day (one upload each) that the sizing is given for.
const DEVICES_PER_DAY: [f64; 2] = [1e6, 1e8];

/// Cumulative counters at one window edge.
#[derive(Debug, Clone, Copy)]
struct Snapshot {
    accepted: f64,
    rounds_closed: f64,
    transactions: f64,
    tuples: f64,
    blocks: f64,
    /// pg_stat_statements' calls and total execution time (ms), when loaded.
    statements: Option<(f64, f64)>,
    wal_bytes: f64,
    lock_wait_ms: f64,
    db_cpu_s: f64,
    aggregator_cpu_s: f64,
}

/// The cost of the uploads between two snapshots, per upload.
#[derive(Debug, Clone)]
struct PerUpload {
    uploads: f64,
    /// The rounds closed within the window (first, last).
    rounds: (u64, u64),
    statements: Option<f64>,
    exec_ms: Option<f64>,
    transactions: f64,
    tuples: f64,
    blocks: f64,
    lock_wait_ms: f64,
    wal_bytes: f64,
    db_cpu_ms: f64,
    aggregator_cpu_ms: f64,
}

impl PerUpload {
    fn between(a: &Snapshot, b: &Snapshot) -> PerUpload {
        let uploads = b.accepted - a.accepted;
        let per = |x: f64, y: f64| (y - x) / uploads;
        let statements = a.statements.zip(b.statements);
        PerUpload {
            uploads,
            rounds: (a.rounds_closed as u64 + 1, b.rounds_closed as u64),
            statements: statements.map(|((c0, _), (c1, _))| per(c0, c1)),
            exec_ms: statements.map(|((_, t0), (_, t1))| per(t0, t1)),
            transactions: per(a.transactions, b.transactions),
            tuples: per(a.tuples, b.tuples),
            blocks: per(a.blocks, b.blocks),
            lock_wait_ms: per(a.lock_wait_ms, b.lock_wait_ms),
            wal_bytes: per(a.wal_bytes, b.wal_bytes),
            db_cpu_ms: per(a.db_cpu_s, b.db_cpu_s) * 1e3,
            aggregator_cpu_ms: per(a.aggregator_cpu_s, b.aggregator_cpu_s) * 1e3,
        }
    }

    /// (metric, value, unit) of each figure measured.
    fn figures(&self) -> Vec<(&'static str, f64, &'static str)> {
        let mut f = vec![
            ("db_transactions_per_upload", self.transactions, "ratio"),
            ("db_tuples_per_upload", self.tuples, "ratio"),
            ("db_blocks_per_upload", self.blocks, "ratio"),
            ("db_lock_wait_per_upload", self.lock_wait_ms, "ms"),
            ("db_wal_bytes_per_upload", self.wal_bytes, "bytes"),
            ("db_cpu_per_upload", self.db_cpu_ms, "ms"),
            ("aggregator_cpu_per_upload", self.aggregator_cpu_ms, "ms"),
        ];
        if let (Some(s), Some(t)) = (self.statements, self.exec_ms) {
            f.insert(0, ("db_statements_per_upload", s, "ratio"));
            f.insert(1, ("db_exec_time_per_upload", t, "ms"));
        }
        f
    }
}

/// The windows' records for `replicas` replicas of a `single` server (behind nginx when more
/// than one), and with one the sizing's; all printed as well.
pub(super) fn run(
    binary: &Path,
    pg: &Pg,
    nginx: &Path,
    replicas: usize,
    k: u64,
    params: usize,
    commit: &str,
) -> Result<Vec<Value>, String> {
    let dir = Path::new("target/bench/aggregator-run/db-cost");
    let _ = std::fs::remove_dir_all(dir);
    let url = pg.database("bench_db_cost");
    let result = measure(binary, dir, pg, nginx, &url, replicas, k);
    let kept = id_bytes(&url);
    pg.drop_database(&url)?;
    let _ = std::fs::remove_dir_all(dir);
    let (windows, total, statements) = result?;
    let id_bytes = kept?;

    let base = json!({
        "path": "plaintext", "role": "single", "backend": "postgres", "replicas": replicas, "clients": CLIENTS,
        "params": params, "min_clients": k, "commit": commit,
    });
    let record = |metric: &str, value: f64, unit: &str, extra: &[(&str, Value)]| {
        let mut r = base.clone();
        r["metric"] = json!(metric);
        r["value"] = json!(value);
        r["unit"] = json!(unit);
        for (key, v) in extra {
            r[*key] = v.clone();
        }
        r
    };
    println!(
        "PostgreSQL work per upload, {replicas} replica(s), f32, {CLIENTS} clients, rounds of {k}, windows of {} s:",
        WINDOW.as_secs()
    );
    let names: Vec<&str> = total.figures().iter().map(|f| f.0.trim_end_matches("_per_upload")).collect();
    println!("{:>9} {:>7}{}", "rounds", "uploads", names.iter().map(|n| format!("{n:>16}")).collect::<String>());
    let mut records = Vec::new();
    for w in &windows {
        let rounds = format!("{}-{}", w.rounds.0, w.rounds.1);
        let figures = w.figures();
        println!("{rounds:>9} {:>7.0}{}", w.uploads, figures.iter().map(|(_, v, _)| format!("{v:>16.3}")).collect::<String>());
        for (metric, value, unit) in figures {
            records.push(record(metric, value, unit, &[("rounds", json!(rounds)), ("uploads", json!(w.uploads))]));
        }
    }
    if !statements.is_empty() {
        println!("  statements per accepted upload over the whole run, warm-up included (pg_stat_statements):");
        for (per_upload, query) in &statements {
            println!("  {per_upload:8.3}  {query}");
        }
    }
    if replicas == 1 {
        records.extend(sizing(&total, id_bytes, &record));
    }
    Ok(records)
}

/// What [`measure`] measured: each window's cost per upload, the whole run's, and the
/// statements most run per upload (calls per upload, the statement's text).
type Measured = (Vec<PerUpload>, PerUpload, Vec<(f64, String)>);

/// Runs the load and reads the counters at each window's edge.
fn measure(binary: &Path, dir: &Path, pg: &Pg, nginx: &Path, url: &str, replicas: usize, k: u64) -> Result<Measured, String> {
    let started = start_replicas(binary, dir, url, &single_env(Encoding::F32, k), replicas)?;
    let urls: Vec<String> = started.iter().map(|(_, u)| u.clone()).collect();
    let pids: Vec<u32> = started.iter().map(|(c, _)| c.id()).collect();
    let proxy = if replicas > 1 { Some(Nginx::start(nginx, &dir.join("nginx"), &urls)) } else { None };
    let result = (|| {
        let front = match &proxy {
            Some(p) => p.as_ref().map_err(Clone::clone)?.url.clone(),
            None => urls[0].clone(),
        };
        let database = db_name(url).to_string();
        let locks = LockWait::start(pg, &database)?;
        let mut monitor = pg.admin()?;
        let me = backend_pid(&mut monitor)?;
        // The bench's own backends: their CPU is not the aggregator's database work.
        let ours = [me, locks.backend];
        let from = Instant::now() + super::WARM_UP;
        let load = std::thread::spawn(move || drive(&front, CLIENTS, from..from + WINDOW * WINDOWS, false));
        let mut snapshots = Vec::new();
        for i in 0..=WINDOWS {
            std::thread::sleep((from + WINDOW * i).saturating_duration_since(Instant::now()));
            match snapshot(&mut monitor, pg, &database, &urls, &pids, &locks, &ours) {
                Ok(s) => snapshots.push(s),
                Err(e) => {
                    let _ = load.join();
                    locks.stop();
                    return Err(e);
                }
            }
        }
        let driven = load.join().map_err(|_| "the load generator panicked".to_string())?;
        locks.stop();
        driven?;
        let abandoned: f64 = urls.iter().filter_map(|u| metric(u, "hearth_rounds_abandoned_total")).sum();
        if abandoned > 0.0 {
            return Err(format!("{abandoned} rounds abandoned under the db-cost load"));
        }
        let accepted: f64 = urls.iter().filter_map(|u| metric(u, "hearth_updates_accepted_total")).sum();
        let statements = if pg.statements { top_statements(&mut monitor, &database, accepted)? } else { Vec::new() };
        Ok((snapshots, statements))
    })();
    drop(proxy);
    for (mut child, _) in started {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (snapshots, statements) = result?;
    let windows: Vec<PerUpload> = snapshots.windows(2).map(|w| PerUpload::between(&w[0], &w[1])).collect();
    if windows.iter().any(|w| w.uploads < 1.0) {
        return Err(format!("a db-cost window without accepted uploads: {windows:?}"));
    }
    let total = PerUpload::between(&snapshots[0], &snapshots[snapshots.len() - 1]);
    Ok((windows, total, statements))
}

/// The statements run most often in `database`, per accepted upload, with their text
/// (whitespace folded, cut short).
fn top_statements(monitor: &mut Client, database: &str, accepted: f64) -> Result<Vec<(f64, String)>, String> {
    let rows = monitor
        .query(
            "SELECT calls::float8, left(regexp_replace(query, '\\s+', ' ', 'g'), 100) FROM pg_stat_statements
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1) ORDER BY calls DESC LIMIT 10",
            &[&database],
        )
        .map_err(|e| format!("pg_stat_statements: {e}"))?;
    Ok(rows.iter().map(|r| (r.get::<_, f64>(0) / accepted.max(1.0), r.get(1))).collect())
}

fn snapshot(
    monitor: &mut Client,
    pg: &Pg,
    database: &str,
    urls: &[String],
    pids: &[u32],
    locks: &LockWait,
    ours: &[u32],
) -> Result<Snapshot, String> {
    let err = |e: postgres::Error| format!("PostgreSQL statistics: {e}");
    // The replicas' counters first, then the database's: an upload the database has committed
    // but no replica has yet counted is charged to the next window, not lost.
    let sum = |name: &str| -> Result<f64, String> {
        urls.iter().map(|u| metric(u, name).ok_or_else(|| format!("{u}: no {name}"))).sum()
    };
    let accepted = sum("hearth_updates_accepted_total")?;
    let rounds_closed = sum("hearth_rounds_closed_total")?;
    let row = monitor
        .query_one(
            "SELECT (xact_commit + xact_rollback)::float8, (tup_inserted + tup_updated + tup_deleted)::float8,
                    (blks_read + blks_hit)::float8, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8
             FROM pg_stat_database WHERE datname = $1",
            &[&database],
        )
        .map_err(err)?;
    let statements = if pg.statements {
        let s = monitor
            .query_one(
                "SELECT coalesce(sum(calls), 0)::float8, coalesce(sum(total_exec_time), 0)::float8
                 FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = $1)",
                &[&database],
            )
            .map_err(err)?;
        Some((s.get(0), s.get(1)))
    } else {
        None
    };
    Ok(Snapshot {
        accepted,
        rounds_closed,
        transactions: row.get(0),
        tuples: row.get(1),
        blocks: row.get(2),
        statements,
        wal_bytes: row.get(3),
        lock_wait_ms: locks.ms(),
        db_cpu_s: pg.cpu_s(ours),
        aggregator_cpu_s: pids.iter().map(|&p| process_cpu_s(p)).sum(),
    })
}

/// Bytes the `updates` table and its index hold per id: every accepted upload's id stays (a
/// replay of any round is refused), so this is the store's growth per upload.
fn id_bytes(url: &str) -> Result<f64, String> {
    let mut client = Client::connect(url, postgres::NoTls).map_err(|e| e.to_string())?;
    let row = client
        .query_one("SELECT pg_total_relation_size('updates')::float8, count(*)::float8 FROM updates", &[])
        .map_err(|e| e.to_string())?;
    let (bytes, ids): (f64, f64) = (row.get(0), row.get(1));
    Ok(bytes / ids.max(1.0))
}

/// Makes a record of (metric, value, unit, keys beyond the run's).
type MakeRecord<'a> = dyn Fn(&str, f64, &str, &[(&str, Value)]) -> Value + 'a;

/// Capacity of one replica core, one PostgreSQL core and one round's row from the measured
/// cost per upload, and what [`DEVICES_PER_DAY`] then need; printed as a paragraph, returned
/// as records (made by `record`).
fn sizing(cost: &PerUpload, id_bytes: f64, record: &MakeRecord<'_>) -> Vec<Value> {
    let replica_core = 1e3 / cost.aggregator_cpu_ms;
    let db_core = 1e3 / cost.db_cpu_ms;
    // Every upload batch of every replica locks the open round's row for its transaction: the
    // statements' execution time per upload bounds one round's intake, at the batch sizes
    // measured (larger batches under more load spread the partial sum's write over more uploads).
    let round_row = cost.exec_ms.map(|ms| 1e3 / ms);
    let mut records = vec![
        record("capacity_uploads_per_s", replica_core, "per_s", &[("limit", json!("replica_core"))]),
        record("capacity_uploads_per_s", db_core, "per_s", &[("limit", json!("db_core"))]),
    ];
    if let Some(r) = round_row {
        records.push(record("capacity_uploads_per_s", r, "per_s", &[("limit", json!("round_row"))]));
    }
    println!(
        "Sizing, from that run's whole-run cost per upload ({:.2} ms of replica CPU, {:.2} ms of PostgreSQL CPU, {:.1} KiB of WAL{}, {:.0} bytes of kept id): one replica core takes about {:.0} uploads/s and one PostgreSQL core about {:.0}/s{}.",
        cost.aggregator_cpu_ms,
        cost.db_cpu_ms,
        cost.wal_bytes / 1024.0,
        cost.exec_ms.map(|ms| format!(", {ms:.3} ms of statement time")).unwrap_or_default(),
        id_bytes,
        replica_core,
        db_core,
        round_row
            .map(|r| format!("; every batch locks the open round's row, which bounds one round's intake near {r:.0} uploads/s at the measured batch size, whatever the replicas"))
            .unwrap_or_default(),
    );
    for devices in DEVICES_PER_DAY {
        let mean = devices / 86_400.0;
        let peak = mean * PEAK_FACTOR;
        let replicas = (peak / replica_core).ceil().max(1.0);
        let wal = peak * cost.wal_bytes;
        let db_cores = peak * cost.db_cpu_ms / 1e3;
        let ids_per_day = devices * id_bytes;
        let keys = [("devices_per_day", json!(devices)), ("peak_factor", json!(PEAK_FACTOR)), ("uploads_per_s", json!(peak))];
        records.push(record("sizing_replicas", replicas, "ratio", &keys));
        records.push(record("sizing_db_wal_bytes_per_s", wal, "bytes", &keys));
        records.push(record("sizing_db_cores", db_cores, "ratio", &keys));
        records.push(record("sizing_db_id_bytes_per_day", ids_per_day, "bytes", &keys));
        let over = round_row.filter(|&r| peak > r).map_or(String::new(), |r| {
            format!(
                " That peak is above one round's row bound ({r:.0}/s): it needs larger group commits or several rounds open at once, not more replicas."
            )
        });
        println!(
            "{devices:.0e} devices a day (one upload each) average {mean:.0} uploads/s, {peak:.0}/s at a {PEAK_FACTOR}x peak: {replicas:.0} replica core(s) busy (run one more to survive losing one), {db_cores:.2} PostgreSQL core(s), {:.1} MiB/s of WAL, and the kept ids grow the database by {:.1} GiB a day.{over}",
            wal / 1048576.0,
            ids_per_day / 1073741824.0,
        );
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(accepted: f64, rounds_closed: f64, scale: f64) -> Snapshot {
        Snapshot {
            accepted,
            rounds_closed,
            transactions: 2.0 * scale,
            tuples: 3.0 * scale,
            blocks: 4.0 * scale,
            statements: Some((5.0 * scale, 6.0 * scale)),
            wal_bytes: 7.0 * scale,
            lock_wait_ms: 8.0 * scale,
            db_cpu_s: 9.0 * scale,
            aggregator_cpu_s: 10.0 * scale,
        }
    }

    /// A window's figures are its counters' growth over its uploads, named by the rounds that
    /// closed within it.
    #[test]
    fn a_window_divides_each_counter_by_its_uploads() {
        let w = PerUpload::between(&snapshot(100.0, 1.0, 1.0), &snapshot(300.0, 3.0, 3.0));
        assert_eq!((w.uploads, w.rounds), (200.0, (2, 3)));
        let figures = w.figures();
        let value = |name: &str| figures.iter().find(|f| f.0 == name).unwrap().1;
        assert_eq!(value("db_transactions_per_upload"), 4.0 / 200.0);
        assert_eq!(value("db_statements_per_upload"), 10.0 / 200.0);
        assert_eq!(value("db_exec_time_per_upload"), 12.0 / 200.0);
        assert_eq!(value("db_wal_bytes_per_upload"), 14.0 / 200.0);
        assert_eq!(value("db_lock_wait_per_upload"), 16.0 / 200.0);
        assert_eq!(value("db_cpu_per_upload"), 18.0 / 200.0 * 1e3);
        assert_eq!(value("aggregator_cpu_per_upload"), 20.0 / 200.0 * 1e3);
    }

    /// 10^8 devices at 3x peak is about 3,472 uploads/s: at 1 ms of replica CPU each, 4 cores.
    #[test]
    fn sizing_scales_the_cost_per_upload_to_the_peak() {
        let mut cost = PerUpload::between(&snapshot(0.0, 0.0, 0.0), &snapshot(1000.0, 10.0, 1.0));
        cost.aggregator_cpu_ms = 1.0;
        cost.wal_bytes = 1000.0;
        let records = sizing(&cost, 100.0, &|m, v, u, e| {
            let mut r = json!({"metric": m, "value": v, "unit": u});
            for (k, x) in e {
                r[*k] = x.clone();
            }
            r
        });
        let find = |metric: &str, devices: f64| {
            records.iter().find(|r| r["metric"] == metric && r["devices_per_day"] == json!(devices)).unwrap()["value"]
                .as_f64()
                .unwrap()
        };
        assert_eq!(find("sizing_replicas", 1e8), 4.0);
        assert_eq!(find("sizing_replicas", 1e6), 1.0);
        assert!((find("sizing_db_wal_bytes_per_s", 1e8) - 1e8 / 86_400.0 * 3.0 * 1000.0).abs() < 1e-6);
        assert_eq!(find("sizing_db_id_bytes_per_day", 1e6), 1e8);
    }
}
