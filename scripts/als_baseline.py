"""External baseline for `make sim`: implicit's ALS (Hu, Koren & Volinsky 2008) on the split
hearth-sim wrote, scored exactly as hearth-sim scores its runs.

    python scripts/als_baseline.py SPLIT_DIR OUT_JSON [SEED]

Every training rating is an implicit interaction (confidence 1, or 1 + LIKED_BOOST when it is a
click, i.e. rated >= 4). AUC and log loss are over the held-out ratings; for log loss the dot
products are mapped to probabilities by Platt scaling fitted on the training ratings. HR@10 and
NDCG@10 rank each held-out positive against the same 99 sampled movies, ties counted half.
"""
import csv
import json
import sys
import time

import numpy as np
import scipy.sparse as sp
from implicit.als import AlternatingLeastSquares

FACTORS, REGULARIZATION, ITERATIONS, LIKED_BOOST = 64, 0.05, 20, 4.0


def read(path):
    with open(path, newline="") as f:
        return [(int(r["user"]), int(r["movie"]), float(r["label"])) for r in csv.DictReader(f)]


def auc(scores, labels):
    order = np.argsort(scores, kind="mergesort")
    s, y = scores[order], labels[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):  # average ranks over ties, 1-based
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i : j + 1] = (i + j) / 2 + 1
        i = j + 1
    pos = y.sum()
    neg = len(y) - pos
    return float((ranks[y > 0.5].sum() - pos * (pos + 1) / 2) / (pos * neg))


def platt(scores, labels, steps=500, lr=0.5):
    """Fits p = sigmoid(a*s + b) by gradient descent on the mean log loss."""
    a, b = 1.0, 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(a * scores + b)))
        a -= lr * np.mean((p - labels) * scores)
        b -= lr * np.mean(p - labels)
    return a, b


def main():
    split, out = sys.argv[1], sys.argv[2]
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    started = time.time()
    train, test = read(f"{split}/train.csv"), read(f"{split}/test.csv")
    with open(f"{split}/candidates.csv") as f:
        candidates = [(int(u), [int(m) for m in ms.split()]) for u, ms in csv.reader(f)]
    users = sorted({u for u, _, _ in train + test} | {u for u, _ in candidates})
    movies = sorted({m for _, m, _ in train + test} | {m for _, ms in candidates for m in ms})
    ui, mi = {u: i for i, u in enumerate(users)}, {m: i for i, m in enumerate(movies)}
    rows = [ui[u] for u, _, _ in train]
    cols = [mi[m] for _, m, _ in train]
    vals = [1.0 + LIKED_BOOST * y for _, _, y in train]
    matrix = sp.csr_matrix((vals, (rows, cols)), shape=(len(users), len(movies)), dtype=np.float32)
    model = AlternatingLeastSquares(factors=FACTORS, regularization=REGULARIZATION, iterations=ITERATIONS, random_state=seed)
    model.fit(matrix, show_progress=False)
    uf, vf = np.asarray(model.user_factors), np.asarray(model.item_factors)

    def score(pairs):
        return np.array([float(uf[ui[u]] @ vf[mi[m]]) for u, m, _ in pairs])

    train_s, train_y = score(train), np.array([y for _, _, y in train])
    test_s, test_y = score(test), np.array([y for _, _, y in test])
    a, b = platt(train_s, train_y)
    p = np.clip(1 / (1 + np.exp(-(a * test_s + b))), 1e-7, 1 - 1e-7)
    logloss = float(-np.mean(test_y * np.log(p) + (1 - test_y) * np.log(1 - p)))
    hits, ndcgs = [], []
    for u, ms in candidates:
        s = vf[[mi[m] for m in ms]] @ uf[ui[u]]
        rank = int(np.floor((s[1:] > s[0]).sum() + (s[1:] == s[0]).sum() / 2))
        hits.append(1.0 if rank < 10 else 0.0)
        ndcgs.append(1 / np.log2(rank + 2) if rank < 10 else 0.0)
    result = [{
        "name": "external-implicit-als",
        "auc": auc(test_s, test_y),
        "logloss": logloss,
        "hr10": float(np.mean(hits)),
        "ndcg10": float(np.mean(ndcgs)),
        "wall_s": time.time() - started,
        "config": {"factors": FACTORS, "regularization": REGULARIZATION, "iterations": ITERATIONS, "liked_boost": LIKED_BOOST, "seed": seed},
    }]
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result[0]))


if __name__ == "__main__":
    main()
