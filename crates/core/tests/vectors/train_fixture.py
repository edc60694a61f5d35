#!/usr/bin/env python3
"""Independent numpy implementation of Hearth's local training step, written from the
model's math (README "The model") rather than from the Rust code. Writes
crates/core/tests/vectors/train.json, which crates/core/tests/train.rs holds the Rust
gradient, the reconstruction of local_u and the global Adam steps to.

    python3 crates/core/tests/vectors/train_fixture.py     # needs numpy; run from the repository root

Before writing, it checks its own gradient against central finite differences in float64.
"""
import json
import os
import numpy as np

B, D, H = 16, 3, 4          # buckets, embedding size, hidden units
U, C, A = 5, 2, 3           # user, context and ad slots
N = 10                      # examples
LAYOUT = [("emb", (B, D)), ("bias", (B, 1)), ("w1_ad", (D, H)), ("w1_user", (D, H)),
          ("w1_ctx", (D, H)), ("b1", (H,)), ("w2", (H, 1)), ("b2", (1,))]
ADAM = dict(lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8)
LOCAL_L2 = 1e-3
RECONSTRUCTION_STEPS = 3
BATCH = 4                   # three global steps: 4 + 4 + 2 examples
rng = np.random.default_rng(20261123)


def unflatten(flat):
    out, at = {}, 0
    for name, shape in LAYOUT:
        n = int(np.prod(shape))
        out[name] = flat[at:at + n].reshape(shape)
        at += n
    return out


def slots(k):
    used = rng.integers(1, k + 1)
    ids = np.zeros(k, dtype=np.int64)
    w = np.zeros(k)
    ids[:used] = rng.integers(1, B, size=used)
    w[:used] = rng.normal(size=used)
    return ids, w


def forward_backward(flat, u_local, ex):
    """Weighted BCE loss of one example, its gradient w.r.t. the flat parameters and local_u."""
    P = unflatten(flat)
    (ui, uw), (ci, cw), (ai, aw) = ex["user"], ex["ctx"], ex["ad"]
    a = aw @ P["emb"][ai]
    u = uw @ P["emb"][ui] + u_local
    c = cw @ P["emb"][ci]
    pre = a @ P["w1_ad"] + u @ P["w1_user"] + c @ P["w1_ctx"] + P["b1"]
    h = np.maximum(pre, 0.0)
    z = h @ P["w2"][:, 0] + P["b2"][0] + a @ (u + c) + aw @ P["bias"][ai, 0]
    y, wt = ex["label"], ex["weight"]
    loss = wt * (np.logaddexp(0.0, z) - y * z)
    dz = wt * (1.0 / (1.0 + np.exp(-z)) - y)
    G = {name: np.zeros(shape) for name, shape in LAYOUT}
    G["b2"][0] = dz
    G["w2"][:, 0] = dz * h
    dpre = dz * P["w2"][:, 0] * (pre > 0)
    G["b1"] = dpre
    G["w1_ad"] = np.outer(a, dpre)
    G["w1_user"] = np.outer(u, dpre)
    G["w1_ctx"] = np.outer(c, dpre)
    da = P["w1_ad"] @ dpre + dz * (u + c)
    du = P["w1_user"] @ dpre + dz * a
    dc = P["w1_ctx"] @ dpre + dz * a
    for ids, w, g in [(ai, aw, da), (ui, uw, du), (ci, cw, dc)]:
        np.add.at(G["emb"], ids, np.outer(w, g))
    np.add.at(G["bias"][:, 0], ai, dz * aw)
    return loss, np.concatenate([G[n].ravel() for n, _ in LAYOUT]), du


def batch_grad(flat, u_local, batch):
    total = sum(e["weight"] for e in batch)
    g, gu, loss = 0.0, 0.0, 0.0
    for e in batch:
        l, gp, du = forward_backward(flat, u_local, e)
        loss, g, gu = loss + l, g + gp, gu + du
    return loss / total, g / total, gu / total


def adam(theta, grads):
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        g = g(theta)
        m = ADAM["beta1"] * m + (1 - ADAM["beta1"]) * g
        v = ADAM["beta2"] * v + (1 - ADAM["beta2"]) * g * g
        theta = theta - ADAM["lr"] * (m / (1 - ADAM["beta1"] ** t)) / (np.sqrt(v / (1 - ADAM["beta2"] ** t)) + ADAM["eps"])
    return theta


params = np.concatenate([rng.normal(scale=0.5, size=int(np.prod(s))) for _, s in LAYOUT])
params = params.astype(np.float32).astype(np.float64)  # exactly representable in f32
u0 = rng.normal(scale=0.3, size=D).astype(np.float32).astype(np.float64)
examples = []
for i in range(N):
    ex = {"user": slots(U), "ctx": slots(C), "ad": slots(A), "label": float(i % 2), "weight": [1.0, 3.0][i % 3 == 2]}
    ex = {k: ((v[0], v[1].astype(np.float32).astype(np.float64)) if isinstance(v, tuple) else v) for k, v in ex.items()}
    examples.append(ex)

# Self-check: the hand-written gradient against central differences.
loss0, grad0, gu0 = batch_grad(params, u0, examples)
eps = 1e-6
for i in range(params.size):
    e = np.zeros_like(params)
    e[i] = eps
    fd = (batch_grad(params + e, u0, examples)[0] - batch_grad(params - e, u0, examples)[0]) / (2 * eps)
    assert abs(fd - grad0[i]) < 1e-6 * max(1, abs(fd)), (i, fd, grad0[i])

# Stage (a): full-batch Adam on local_u with L2, global frozen.
u_rec = adam(u0, [lambda u: batch_grad(params, u, examples)[2] + 2 * LOCAL_L2 * u] * RECONSTRUCTION_STEPS)
# Stage (b): mini-batch Adam on the global parameters with the reconstructed local_u.
batches = [examples[i:i + BATCH] for i in range(0, N, BATCH)]
after = adam(params, [lambda th, b=b: batch_grad(th, u_rec, b)[1] for b in batches])

enc = lambda ids, w: {"ids": ids.tolist(), "weights": w.tolist()}
out = {
    "generator": "crates/core/tests/vectors/train_fixture.py",
    "numpy": np.__version__,
    "arch": {"buckets": B, "dim": D, "hidden": H},
    "adam": ADAM, "local_l2": LOCAL_L2, "reconstruction_steps": RECONSTRUCTION_STEPS, "batch_size": BATCH,
    "params": params.tolist(), "local_u": u0.tolist(),
    "examples": [{"user": enc(*e["user"]), "context": enc(*e["ctx"]), "ad": enc(*e["ad"]),
                  "label": e["label"], "weight": e["weight"]} for e in examples],
    "mean_loss": loss0, "grad": grad0.tolist(), "grad_u": gu0.tolist(),
    "local_u_reconstructed": u_rec.tolist(), "params_after": after.tolist(),
}
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.json"), "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print(f"wrote crates/core/tests/vectors/train.json: {params.size} parameters, {N} examples, loss {loss0:.6f}")
