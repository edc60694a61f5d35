#!/usr/bin/env python3
"""Cross-check Hearth's tract scoring against onnxruntime, an independent ONNX runtime.

Loads a model pack (default models/default), draws random padded inputs shaped as its
manifest declares, and scores them three ways: onnxruntime on model.onnx as written, and
Rust/tract through the whole graph and through the graph cut at `ad_side` (the
`ort_check_logits` test in crates/core/tests/import.rs, which this script runs). Exits non-zero
if any logit differs by more than the tolerance.

Needs `pip install onnxruntime numpy` and a Rust toolchain.

    python3 crates/core/tests/vectors/ort_check.py [--pack DIR] [--seed S] [--sizes 1,7,300] [--tol 1e-4]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[4]  # crates/core/tests/vectors/ -> repository root


def padded(rng, rows, slots, buckets):
    """Ids and weights as the engine pads them: a few real ids (1..buckets), then id 0 with
    weight 0."""
    ids = np.zeros((rows, slots), dtype=np.int64)
    w = np.zeros((rows, slots), dtype=np.float32)
    for r in range(rows):
        used = rng.integers(1, slots + 1)
        ids[r, :used] = rng.integers(1, buckets, size=used)
        w[r, :used] = rng.standard_normal(used).astype(np.float32)
    return ids, w


def rust_logits(pack, inputs):
    """Runs the ignored `ort_check_logits` test on `inputs`; returns its full and cut logits."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "inputs.json"), Path(tmp, "logits.json")
        src.write_text(json.dumps({k: v.ravel().tolist() for k, v in inputs.items()}))
        env = dict(os.environ, HEARTH_ORT_INPUTS=str(src), HEARTH_ORT_OUTPUT=str(dst), HEARTH_ORT_PACK=str(pack))
        cmd = ["cargo", "test", "-q", "-p", "hearth-core", "--test", "import", "ort_check_logits",
               "--", "--ignored", "--exact"]
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if run.returncode != 0:
            sys.stderr.write(run.stdout + run.stderr)
            sys.exit(f"ort_check: {' '.join(cmd)} failed")
        out = json.loads(dst.read_text())
    return np.array(out["full"], dtype=np.float32), np.array(out["cut"], dtype=np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pack", default=str(ROOT / "models" / "default"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sizes", default="1,7,300", help="candidate counts N to try")
    ap.add_argument("--tol", type=float, default=1e-4, help="allowed |a-b| / (1 + |b|)")
    args = ap.parse_args()

    pack = Path(args.pack).resolve()
    manifest = json.loads((pack / "manifest.json").read_text())
    f = manifest["features"]
    buckets, dim = f["buckets"], manifest["embedding_dim"]
    session = ort.InferenceSession(str(pack / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(args.seed)

    worst = 0.0
    for n in (int(s) for s in args.sizes.split(",")):
        user_ids, user_w = padded(rng, 1, f["user_slots"], buckets)
        ctx_ids, ctx_w = padded(rng, 1, f["context_slots"], buckets)
        ad_ids, ad_w = padded(rng, n, f["ad_slots"], buckets)
        inputs = {
            "user_ids": user_ids, "user_w": user_w,
            "local_u": (0.3 * rng.standard_normal((1, dim))).astype(np.float32),
            "ctx_ids": ctx_ids, "ctx_w": ctx_w,
            "ad_ids": ad_ids, "ad_w": ad_w,
        }
        (expected,) = session.run(["logits"], inputs)
        full, cut = rust_logits(pack, inputs)
        for name, got in (("whole graph", full), ("cut graph", cut)):
            if got.shape != expected.shape:
                sys.exit(f"ort_check: N={n} {name}: shape {got.shape}, onnxruntime {expected.shape}")
            err = float(np.max(np.abs(got - expected) / (1.0 + np.abs(expected))))
            worst = max(worst, err)
            print(f"N={n:>5} {name:<11}: max relative difference {err:.2e} "
                  f"(logits {expected.min():+.3f}..{expected.max():+.3f})")
    if worst > args.tol:
        sys.exit(f"ort_check: FAILED, worst difference {worst:.2e} exceeds {args.tol:.0e}")
    print(f"ort_check: tract matches onnxruntime {ort.__version__} within {args.tol:.0e}")


if __name__ == "__main__":
    main()
