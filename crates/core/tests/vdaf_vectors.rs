//! The VDAF layer against the draft's published test vectors: draft-irtf-cfrg-vdaf-08's
//! Prio3SumVec vectors (tests/vectors/vdaf-08/, where they come from is in the README there) run
//! through the prio crate as hearth-core re-exports it (`hearth_core::measure::prio`), the
//! implementation the device and both aggregators use.
//!
//! For each report of a vector: the public share and every input share decode and re-encode to
//! the vector's bytes; each aggregator's `prepare_init` with the vector's verify key gives the
//! vector's prep share, their combination the vector's prep message, `prepare_next` the vector's
//! output share (field element by field element). Over all reports: each aggregator's aggregate
//! share and the unsharded result. Everything is compared byte for byte.
//!
//! Sharding with the vector's `rand` is the one step the public API cannot replay: prio 0.16.8
//! keeps `Prio3::shard_with_random` crate-private and `Client::shard` draws its randomness from
//! the OS. So the shard is checked by what it must produce instead: for each vector's
//! measurement and nonce, `Client::shard` gives shares of the vector's encoded sizes, which the
//! vector's verify key prepares to output shares summing to the measurement.

use hearth_core::measure::prio::codec::{Encode, ParameterizedDecode};
use hearth_core::measure::prio::field::Field128;
use hearth_core::measure::prio::vdaf::prio3::{Prio3InputShare, Prio3PublicShare, Prio3SumVec};
use hearth_core::measure::prio::vdaf::{AggregateShare, Aggregator, Client, Collector, OutputShare, PrepareTransition, Vdaf};
use serde::Deserialize;

/// One vector file. `deny_unknown_fields`: a field this test does not know is a field it would
/// silently not check.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    /// Prio3 has no aggregation parameter: the files say `null`.
    agg_param: (),
    agg_result: Vec<u128>,
    agg_shares: Vec<String>,
    bits: usize,
    chunk_length: usize,
    length: usize,
    prep: Vec<Prep>,
    shares: u8,
    verify_key: String,
}

/// One report of a vector, through every step.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Prep {
    measurement: Vec<u128>,
    nonce: String,
    /// The sharding randomness.
    rand: String,
    public_share: String,
    input_shares: Vec<String>,
    /// One list per preparation round (Prio3 has one), one entry per aggregator.
    prep_shares: Vec<Vec<String>>,
    prep_messages: Vec<String>,
    /// Per aggregator, one hex string per field element.
    out_shares: Vec<Vec<String>>,
}

const VECTORS: [(&str, &str); 2] = [
    ("Prio3SumVec_0", include_str!("vectors/vdaf-08/Prio3SumVec_0.json")),
    ("Prio3SumVec_1", include_str!("vectors/vdaf-08/Prio3SumVec_1.json")),
];

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd-length hex: {s}");
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit")).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn encoded(value: &impl Encode) -> String {
    hex(&value.get_encoded().expect("encodes"))
}

fn array16(s: &str) -> [u8; 16] {
    unhex(s).try_into().expect("16 bytes")
}

fn load(name: &str, json: &str) -> (Vector, Prio3SumVec) {
    let v: Vector = serde_json::from_str(json).unwrap_or_else(|e| panic!("{name}: {e}"));
    let vdaf = Prio3SumVec::new_sum_vec(v.shares, v.bits, v.length, v.chunk_length).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(vdaf.num_aggregators(), usize::from(v.shares));
    (v, vdaf)
}

/// The vector's shares of one report, decoded and checked to re-encode to the same bytes.
fn decode_shares(vdaf: &Prio3SumVec, p: &Prep, what: &str) -> (Prio3PublicShare<16>, Vec<Prio3InputShare<Field128, 16>>) {
    let public_share = Prio3PublicShare::get_decoded_with_param(vdaf, &unhex(&p.public_share))
        .unwrap_or_else(|e| panic!("{what}: public share: {e}"));
    assert_eq!(encoded(&public_share), p.public_share, "{what}: public share");
    let input_shares: Vec<_> = p
        .input_shares
        .iter()
        .enumerate()
        .map(|(agg_id, bytes)| {
            let share = Prio3InputShare::get_decoded_with_param(&(vdaf, agg_id), &unhex(bytes))
                .unwrap_or_else(|e| panic!("{what}: input share {agg_id}: {e}"));
            assert_eq!(&encoded(&share), bytes, "{what}: input share {agg_id}");
            share
        })
        .collect();
    assert_eq!(input_shares.len(), vdaf.num_aggregators(), "{what}: one input share per aggregator");
    (public_share, input_shares)
}

/// What one report's preparation produced, encoded as the vectors encode it.
struct Prepared {
    prep_shares: Vec<String>,
    prep_message: String,
    out_shares: Vec<OutputShare<Field128>>,
}

/// Runs every aggregator's preparation of one report (one round: init, combine, next).
fn prepare(
    vdaf: &Prio3SumVec,
    verify_key: &[u8; 16],
    nonce: &[u8; 16],
    public_share: &Prio3PublicShare<16>,
    input_shares: &[Prio3InputShare<Field128, 16>],
) -> Result<Prepared, String> {
    let mut states = Vec::new();
    let mut shares = Vec::new();
    for (agg_id, input_share) in input_shares.iter().enumerate() {
        let (state, share) = vdaf
            .prepare_init(verify_key, agg_id, &(), nonce, public_share, input_share)
            .map_err(|e| format!("prepare_init of aggregator {agg_id}: {e}"))?;
        states.push(state);
        shares.push(share);
    }
    let prep_shares = shares.iter().map(encoded).collect();
    let message =
        vdaf.prepare_shares_to_prepare_message(&(), shares).map_err(|e| format!("prepare_shares_to_prepare_message: {e}"))?;
    let mut out_shares = Vec::new();
    for (agg_id, state) in states.into_iter().enumerate() {
        match vdaf.prepare_next(state, message.clone()).map_err(|e| format!("prepare_next of aggregator {agg_id}: {e}"))? {
            PrepareTransition::Finish(out) => out_shares.push(out),
            PrepareTransition::Continue(..) => return Err(format!("aggregator {agg_id}: Prio3 has one round, got two")),
        }
    }
    Ok(Prepared { prep_shares, prep_message: encoded(&message), out_shares })
}

fn field_elements(out: &OutputShare<Field128>) -> Vec<String> {
    out.as_ref().iter().map(encoded).collect()
}

#[test]
fn prio3_sum_vec_matches_the_vdaf_08_vectors() {
    for (name, json) in VECTORS {
        let (v, vdaf) = load(name, json);
        let verify_key = array16(&v.verify_key);
        assert!(!v.prep.is_empty(), "{name}: no reports");
        let mut per_aggregator: Vec<Vec<OutputShare<Field128>>> = vec![Vec::new(); vdaf.num_aggregators()];
        for (i, p) in v.prep.iter().enumerate() {
            let what = format!("{name} report {i}");
            let (public_share, input_shares) = decode_shares(&vdaf, p, &what);
            // A helper's input share is nothing but seeds drawn from `rand` (measurement share,
            // proof share, joint-randomness blind: 3 × 16 bytes, helper by helper, first in
            // `rand`): the shares prepared here are the ones the draft's shard made from it.
            let seeds = unhex(&p.rand);
            for (agg_id, share) in p.input_shares.iter().enumerate().skip(1) {
                assert_eq!(unhex(share), seeds[(agg_id - 1) * 48..agg_id * 48], "{what}: helper {agg_id}'s seeds");
            }
            let got = prepare(&vdaf, &verify_key, &array16(&p.nonce), &public_share, &input_shares)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(p.prep_shares.len(), 1, "{what}: Prio3 has one preparation round");
            assert_eq!(got.prep_shares, p.prep_shares[0], "{what}: prep shares");
            assert_eq!(vec![got.prep_message], p.prep_messages, "{what}: prep message");
            let outs: Vec<_> = got.out_shares.iter().map(field_elements).collect();
            assert_eq!(outs, p.out_shares, "{what}: output shares");
            for (agg_id, out) in got.out_shares.into_iter().enumerate() {
                per_aggregator[agg_id].push(out);
            }
        }

        let agg_shares: Vec<AggregateShare<Field128>> = per_aggregator
            .into_iter()
            .map(|outs| vdaf.aggregate(&v.agg_param, outs).unwrap_or_else(|e| panic!("{name}: aggregate: {e}")))
            .collect();
        assert_eq!(agg_shares.iter().map(encoded).collect::<Vec<_>>(), v.agg_shares, "{name}: aggregate shares");
        // The vector's own aggregate shares, decoded, unshard to its result too (the collector's
        // side reads bytes, not our in-memory shares).
        let decoded: Vec<AggregateShare<Field128>> = v
            .agg_shares
            .iter()
            .map(|s| AggregateShare::get_decoded_with_param(&(&vdaf, &()), &unhex(s)).expect("aggregate share decodes"))
            .collect();
        for shares in [agg_shares, decoded] {
            let result = vdaf.unshard(&v.agg_param, shares, v.prep.len()).unwrap_or_else(|e| panic!("{name}: unshard: {e}"));
            assert_eq!(result, v.agg_result, "{name}: aggregate result");
        }
        let sum: Vec<u128> = (0..v.length).map(|j| v.prep.iter().map(|p| p.measurement[j]).sum()).collect();
        assert_eq!(sum, v.agg_result, "{name}: the result is the sum of the measurements");
    }
}

/// prio's own sharding (OS randomness) of each vector's measurement under its nonce: shares of
/// the vector's encoded sizes that the vector's verify key prepares back to the measurement.
#[test]
fn prio3_sum_vec_shards_what_the_vectors_prepare() {
    for (name, json) in VECTORS {
        let (v, vdaf) = load(name, json);
        let verify_key = array16(&v.verify_key);
        for (i, p) in v.prep.iter().enumerate() {
            let what = format!("{name} report {i}");
            let nonce = array16(&p.nonce);
            let (public_share, input_shares) =
                vdaf.shard(&p.measurement, &nonce).unwrap_or_else(|e| panic!("{what}: shard: {e}"));
            assert_eq!(encoded(&public_share).len(), p.public_share.len(), "{what}: public share size");
            let sizes: Vec<usize> = input_shares.iter().map(|s| encoded(s).len()).collect();
            assert_eq!(sizes, p.input_shares.iter().map(String::len).collect::<Vec<_>>(), "{what}: input share sizes");
            let got = prepare(&vdaf, &verify_key, &nonce, &public_share, &input_shares).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(
                got.prep_shares.iter().map(String::len).collect::<Vec<_>>(),
                p.prep_shares[0].iter().map(String::len).collect::<Vec<_>>()
            );
            let agg_shares = got.out_shares.into_iter().map(AggregateShare::from);
            let result = vdaf.unshard(&(), agg_shares, 1).unwrap_or_else(|e| panic!("{what}: unshard: {e}"));
            assert_eq!(result, p.measurement, "{what}: a fresh shard prepares back to its measurement");
        }
    }
}

/// The checks above can fail: a different verify key gives other prep shares than the vector's,
/// a share with one flipped byte is refused by the proof, and a measurement entry of 2^bits
/// cannot be sharded at all.
#[test]
fn the_vectors_pin_the_verify_key_and_refuse_tampering() {
    let (name, json) = VECTORS[0];
    let (v, vdaf) = load(name, json);
    let p = &v.prep[0];
    let nonce = array16(&p.nonce);
    let (public_share, input_shares) = decode_shares(&vdaf, p, name);

    let mut other_key = array16(&v.verify_key);
    other_key[0] ^= 1;
    // An honest report still verifies under any key the aggregators share, but its query
    // randomness, and so its prep shares, differ from the vector's.
    let got = prepare(&vdaf, &other_key, &nonce, &public_share, &input_shares).expect("honest report verifies");
    for (agg_id, (got, want)) in got.prep_shares.iter().zip(&p.prep_shares[0]).enumerate() {
        assert_ne!(got, want, "aggregator {agg_id}: the verify key must change the prep share");
    }

    // The leader's input share starts with its measurement share (Field128 elements, 16 bytes
    // each): flip one bit of the first element.
    let verify_key = array16(&v.verify_key);
    let mut bytes = unhex(&p.input_shares[0]);
    bytes[0] ^= 1;
    let tampered = Prio3InputShare::get_decoded_with_param(&(&vdaf, 0), &bytes).expect("still a well-formed share");
    let shares = [tampered, input_shares[1].clone()];
    let err =
        prepare(&vdaf, &verify_key, &nonce, &public_share, &shares).err().expect("a tampered measurement share must not verify");
    assert!(err.contains("proof verifier check failed"), "{err}");

    let mut too_big = p.measurement.clone();
    too_big[0] = 1 << v.bits;
    assert!(vdaf.shard(&too_big, &nonce).is_err(), "an entry of 2^bits is out of range");
}
