//! Races at round close (issue 14, item 8): a device that retries an upload the server already
//! accepted must learn it counted (409 `duplicate_nonce`), even when the retry arrives after its
//! round ended or was queued while the round closed. Only an upload that was never accepted is
//! refused for naming an ended round.

mod common;

use common::*;
use hearth_core::learning::round::RoundTask;
use hearth_core::privacy::wire::Encoding;
use std::sync::Arc;

const K: u64 = 10;

fn error(answer: &(u16, serde_json::Value)) -> (u16, &str) {
    (answer.0, answer.1["error"].as_str().unwrap_or(""))
}

fn updates(task: &RoundTask, params: usize, seeds: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    seeds.map(|seed| honest_update(task, params, seed, Encoding::F32).encode()).collect()
}

#[test]
fn a_retry_after_its_round_closed_is_a_duplicate() {
    let dir = scratch("round-close-closed");
    let server = Server::start(&dir, &config(&small_pack(&dir), K, ""));
    let task = server.task();
    let params = fetch_pack(&server).0.params.values.len();
    let sent = updates(&task, params, 0..K);
    for u in &sent {
        assert_eq!(server.post(u).0, 202);
    }
    assert_eq!(server.wait_round_after(task.round_id).model_version, 2);

    assert_eq!(error(&server.post(&sent[3])), (409, "duplicate_nonce"), "a retry of an accepted upload");
    // Never accepted: its round (and model) are gone.
    let late = updates(&task, params, 100..101);
    assert_eq!(error(&server.post(&late[0])), (409, "stale_model"));
    assert_eq!(server.metric("hearth_updates_accepted_total"), K as f64);
}

#[test]
fn a_retry_after_its_round_was_abandoned_is_a_duplicate() {
    let dir = scratch("round-close-abandoned");
    // Rounds end at their 2 s deadline with nothing released, so the model stays the same.
    let server = Server::start_with_env(&dir, &config(&small_pack(&dir), K, ""), &[("HEARTH_AGG__ROUND__DEADLINE_SECS", "2")]);
    let params = fetch_pack(&server).0.params.values.len();
    // One upload accepted in some round (a round may end between fetching its task and posting).
    let (task, accepted) = (0..5)
        .find_map(|seed| {
            let task = server.task();
            let u = updates(&task, params, seed..seed + 1).remove(0);
            (server.post(&u).0 == 202).then_some((task, u))
        })
        .expect("no upload was accepted in five rounds");
    let next = server.wait_round_after(task.round_id);
    assert_eq!(next.model_version, task.model_version);

    assert_eq!(error(&server.post(&accepted)), (409, "duplicate_nonce"), "a retry of an accepted upload");
    let never = updates(&task, params, 100..101);
    assert_eq!(error(&server.post(&never[0])), (409, "wrong_round"), "an upload never accepted");
}

#[test]
fn retries_racing_the_round_close_are_all_duplicates() {
    let dir = scratch("round-close-race");
    let server = Arc::new(Server::start(&dir, &config(&small_pack(&dir), K, "")));
    let task = server.task();
    let params = fetch_pack(&server).0.params.values.len();
    let sent = Arc::new(updates(&task, params, 0..K));
    for u in &sent[..K as usize - 1] {
        assert_eq!(server.post(u).0, 202);
    }
    // The last upload closes the round while retries of the others are validated, queued and
    // stored around it: before, in, and after the batch that closes it.
    let retries: Vec<_> = (0..4)
        .map(|t| {
            let (server, sent) = (server.clone(), sent.clone());
            std::thread::spawn(move || (0..12).map(|i| server.post(&sent[(t * 12 + i) % (K as usize - 1)])).collect::<Vec<_>>())
        })
        .collect();
    assert_eq!(server.post(&sent[K as usize - 1]).0, 202);
    for answer in retries.into_iter().flat_map(|r| r.join().unwrap()) {
        assert_eq!(error(&answer), (409, "duplicate_nonce"), "{}", answer.1);
    }
    assert_eq!(server.wait_round_after(task.round_id).model_version, 2);
    assert_eq!(server.metric("hearth_updates_accepted_total"), K as f64);
}
