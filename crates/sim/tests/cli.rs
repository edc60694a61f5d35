//! `hearth-sim --help` for the runs and each subcommand: exits 0 and documents every flag with
//! its default; a usage error exits 2 before anything runs.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hearth-sim");

fn help(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?} --help: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_documents_every_flag_with_its_default() {
    let common = [
        "--data <DIR>",
        "[default: ../shared/data/movielens-small]",
        "--out <DIR>",
        "[default: target/sim]",
        "--seed <N>",
        "[default: 1]",
    ];
    let server = ["--server <SERVER>", "[default: fedadam]", "--server-lr <L>", "--local-epochs <E>"];
    let runs = [
        "--rounds <R>",
        "[default: 20]",
        "--clients <K>",
        "[default: 0]",
        "--sampling-rate <Q>",
        "[default: K / N",
        "--local-noise <Z>",
        "--epochs <E>",
        "--eval-every <N>",
        "[default: 5]",
        "--clip <C>",
        "[default: 0.5]",
        "--epsilons <LIST>",
        "[default: 1,3,8]",
        "--external <FILE>",
        "split",
        "scale",
    ];
    let cases: [(&[&str], Vec<&str>); 3] = [
        (&[], [&common[..], &server, &runs].concat()),
        (&["split"], common.to_vec()),
        (&["scale"], [&common[..], &server, &["--devices <N>", "[default: 10000]"]].concat()),
    ];
    for (args, wanted) in cases {
        let text = help(args);
        for w in wanted {
            assert!(text.contains(w), "{args:?} --help lacks {w:?}:\n{text}");
        }
    }
}

#[test]
fn a_usage_error_exits_2() {
    let out_dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sim-cli-usage");
    let _ = std::fs::remove_dir_all(&out_dir);
    let out = out_dir.to_str().unwrap();
    for args in [
        &["--bogus", "--out", out][..],
        &["--server", "sgd", "--out", out],
        &["--epsilons", "1,x", "--out", out],
        &["--sampling-rate", "0", "--out", out],
        &["--sampling-rate", "1.5", "--out", out],
        &["--rounds", "3", "split", "--out", out],
    ] {
        let result = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(result.status.code(), Some(2), "{args:?}: {result:?}");
        assert!(String::from_utf8_lossy(&result.stderr).starts_with("error: "), "{args:?}: {result:?}");
    }
    assert!(!out_dir.exists(), "a usage error wrote {out}");
}
