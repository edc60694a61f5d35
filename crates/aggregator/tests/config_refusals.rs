//! Configurations that would break the aggregator (a deadline that overflows, a semaphore or
//! queue too large to allocate, noise or a step that destroys the model, a site that is not
//! there) are refused at start: exit status 2 and the key named on stderr, before anything
//! listens.
mod common;

use common::*;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A refusal comes before anything slow; a process still running after this has accepted its
/// configuration.
const REFUSAL_WITHIN: Duration = Duration::from_secs(20);

#[test]
fn each_bad_config_of_the_issue_exits_2_naming_its_key() {
    let dir = scratch("config-refusals");
    let file = dir.join("aggregator.toml");
    std::fs::write(&file, config(&small_pack(&dir), 10, "")).unwrap();
    let missing_www = format!("{:?}", dir.join("no-such-www"));
    let named_www = format!("www = {missing_www}");
    // The variable, its value, and what stderr must say.
    let cases = [
        ("HEARTH_AGG__ROUND__DEADLINE_SECS", "9223372036854775807", "round.deadline_secs = 9223372036854775807 is outside"),
        ("HEARTH_AGG__UPLOAD_CONCURRENCY", "4611686018427387904", "upload_concurrency = 4611686018427387904 is outside"),
        ("HEARTH_AGG__QUEUE", "4611686018427387904", "queue = 4611686018427387904 is outside"),
        ("HEARTH_AGG__ROUND__NOISE_MULTIPLIER", "1e30", "round.noise_multiplier = 1e30 is outside"),
        ("HEARTH_AGG__ROUND__CLIP_NORM", "1e-45", "round.clip_norm = 1e-45 is outside"),
        ("HEARTH_AGG__OPTIMIZER__LR", "3e38", "optimizer.lr = 3e38 is outside"),
        ("HEARTH_AGG__WWW", &missing_www, &named_www),
    ];
    // All at once: where they are accepted, the test waits REFUSAL_WITHIN once, not per case.
    let children: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, (variable, value, _))| {
            let log = |stream: &str| std::fs::File::create(dir.join(format!("{i}.{stream}"))).unwrap();
            Command::new(env!("CARGO_BIN_EXE_hearth-aggregator"))
                .arg("--config")
                .arg(&file)
                .env("HEARTH_AGG__LISTEN", "\"127.0.0.1:0\"")
                .env("HEARTH_AGG__DATABASE", format!("{:?}", dir.join(format!("{i}.db"))))
                .env(variable, value)
                .stdin(Stdio::null())
                .stdout(log("stdout"))
                .stderr(log("stderr"))
                .spawn()
                .unwrap()
        })
        .collect();
    // Every child has exited or been killed before any assertion can fail.
    let until = Instant::now() + REFUSAL_WITHIN;
    let exits: Vec<Option<ExitStatus>> = children
        .into_iter()
        .map(|mut child| {
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if Instant::now() >= until {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .collect();
    for (i, ((variable, value, named), exit)) in cases.iter().zip(exits).enumerate() {
        let stderr = std::fs::read_to_string(dir.join(format!("{i}.stderr"))).unwrap();
        let stdout = std::fs::read_to_string(dir.join(format!("{i}.stdout"))).unwrap();
        let Some(status) = exit else {
            panic!("{variable}={value} was accepted: still running after {REFUSAL_WITHIN:?}; stdout: {stdout}");
        };
        assert_eq!(status.code(), Some(2), "{variable}={value}: {status}; stderr: {stderr}");
        assert!(stderr.contains(named), "{variable}={value}: stderr does not name it: {stderr}");
        assert!(stdout.is_empty(), "{variable}={value}: it listened before refusing: {stdout}");
    }
}
