//! The binary's command line and its log output.

mod common;

use common::{config, default_pack, scratch};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hearth-aggregator");

#[test]
fn help_documents_every_flag_and_the_environment() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    for wanted in [
        "--config <FILE>",
        "[default: none",
        "--init",
        "\n  init ",
        "never creates its database",
        "--help",
        "--version",
        "HEARTH_AGG__SECTION__KEY=VALUE",
        "HEARTH_LOG",
    ] {
        assert!(help.contains(wanted), "--help lacks {wanted:?}:\n{help}");
    }
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), format!("hearth-aggregator {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn a_usage_error_exits_2_before_starting() {
    for args in [&["--bogus"][..], &["--config"], &["--config", "a.toml", "extra"], &["--init", "init"], &["init", "extra"]] {
        let out = Command::new(BIN).args(args).env("HEARTH_AGG__LISTEN", "\"127.0.0.1:0\"").output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: it started");
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "), "{args:?}: {out:?}");
    }
}

/// Logs into a pipe or a file are plain text: no ANSI colour codes around levels and fields.
#[test]
fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = scratch("cli-no-ansi");
    let file = dir.join("aggregator.toml");
    std::fs::write(&file, config(&default_pack(), 10, "")).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&file)
        .arg("--init")
        .env("HEARTH_AGG__LISTEN", "\"127.0.0.1:0\"")
        .env("HEARTH_AGG__DATABASE", format!("{:?}", dir.join("hearth.db")))
        .env("HEARTH_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let until = Instant::now() + Duration::from_secs(60);
    let mut log = Vec::new();
    while let Ok(line) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
        let ready = line.contains("aggregator ready");
        log.push(line);
        if ready {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = log.join("\n");
    assert!(log.contains("aggregator ready"), "no start-up log line:\n{log}");
    assert!(!log.contains('\x1b'), "colour codes in the log: {log:?}");
    assert!(log.contains(" INFO ") && log.contains("model_version=1"), "{log}");
}
