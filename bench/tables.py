"""Compressed categorical embedding tables: AUC / log-loss against parameters (a Pareto benchmark).

A small CTR model (per-feature embeddings -> DLRM-style pairwise dot interaction + the
embeddings -> MLP 64 -> 1) is trained with each table method of
``embedkit.tables`` at parameter budgets of 100%, 25%, 6.25% and 1.6% of
FullTables, 3 seeds each, on two real datasets from ``shared/data/tabular`` (read in place,
never copied):

* ``movielens``: MovieLens-100k, GroupLens split u1.base / u1.test; label rating >= 4; fields
  user, item, age, gender, occupation, zip (string), genres (multi-valued, mean-pooled bag).
  10% of u1.base (fixed seed) is held out for early stopping.
* ``talkingdata``: TalkingData AdTracking train_sample (100k clicks, 227 positives); fields
  ip, app, device, os, channel, click hour; stratified random 70/10/20 train/val/test split
  (seed 0). The test split holds ~45 positives, so AUC is noisy: log-loss is reported beside it.

Vocabularies (FullTables, QRTrick) come from the training split; unseen ids go to the OOV row.
Each run: Adam (lr 5e-3), batch 1024, at most ``--epochs`` epochs, early stopping on validation
log-loss (patience 2, best epoch restored), then test AUC and log-loss. Seed s sets torch's
RNG (init, shuffling) and the hash seed. UnifiedEmbedding uses 2 chunks of 8 dims per feature
(one shared table); HashingTrick/QRTrick use water-filled per-feature sizes
(see ``embedkit.tables.budget``). Table parameters are the budgeted quantity; the
MLP (identical for all methods) is reported separately.

Targets (issue 8): UnifiedEmbedding mean AUC >= HashingTrick's at every budget <= 25%, and
within 0.5% (relative) of FullTables at 25%. The script prints and records whether each is met.

Run:  OMP_NUM_THREADS=2 flock /tmp/embedkit-cpu.lock .venv/bin/python bench/tables.py
Quick smoke run:  .venv/bin/python bench/tables.py --quick --out /tmp/tables.json
"""

from __future__ import annotations

import argparse
import gzip
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from embedkit._io import atomic_write_json, data_dir, sha256_file  # noqa: E402
from embedkit.tables import hash_strings, plan_budget, tables_for_budget  # noqa: E402

METHOD_NAMES = {"full": "FullTables", "hashing": "HashingTrick", "qr": "QRTrick", "unified": "UnifiedEmbedding"}


# ----------------------------------------------------------------------------------------- data
def _read_lines(path: Path, encoding: str = "utf-8") -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding=encoding) as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def load_movielens(val_fraction: float = 0.1):
    root = data_dir() / "tabular" / "movielens-100k"
    users = {}
    for line in _read_lines(root / "u.user"):
        uid, age, gender, occ, zip_code = line.split("|")
        users[int(uid)] = (int(age), gender, occ, zip_code)
    genres = {}
    for line in _read_lines(root / "u.item", encoding="latin-1"):
        parts = line.split("|")
        flags = [i for i, x in enumerate(parts[5:24]) if x == "1"]
        genres[int(parts[0])] = flags

    def split(name: str):
        rows = [tuple(map(int, line.split("\t")[:3])) for line in _read_lines(root / "splits" / f"{name}.gz")]
        u = np.array([r[0] for r in rows])
        i = np.array([r[1] for r in rows])
        y = np.array([r[2] >= 4 for r in rows], dtype=np.float32)
        width = max(len(g) for g in genres.values())
        g = np.full((len(rows), width), -1, dtype=np.int64)
        for k, item in enumerate(i):
            g[k, : len(genres[item])] = genres[item]
        feats = {
            "user": torch.from_numpy(u).long(),
            "item": torch.from_numpy(i).long(),
            "age": torch.tensor([users[x][0] for x in u]),
            "gender": hash_strings([users[x][1] for x in u]),
            "occupation": hash_strings([users[x][2] for x in u]),
            "zip": hash_strings([users[x][3] for x in u]),
            "genres": torch.from_numpy(g),
        }
        return feats, torch.from_numpy(y)

    train_x, train_y = split("u1.base")
    test_x, test_y = split("u1.test")
    perm = torch.from_numpy(np.random.default_rng(0).permutation(len(train_y)))
    n_val = int(len(perm) * val_fraction)
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    take = lambda x, idx: {k: v[idx] for k, v in x.items()}  # noqa: E731
    files = [root / "u.user", root / "u.item", root / "splits" / "u1.base.gz", root / "splits" / "u1.test.gz"]
    return (take(train_x, tr_idx), train_y[tr_idx]), (take(train_x, val_idx), train_y[val_idx]), (test_x, test_y), files


def load_talkingdata():
    path = data_dir() / "tabular" / "talkingdata-adtracking-sample" / "train_sample.csv.gz"
    lines = _read_lines(path)
    header = lines[0].split(",")
    col = {c: k for k, c in enumerate(header)}
    rows = [line.split(",") for line in lines[1:]]
    feats = {c: torch.tensor([int(r[col[c]]) for r in rows]) for c in ("ip", "app", "device", "os", "channel")}
    feats["hour"] = torch.tensor([int(r[col["click_time"]][11:13]) for r in rows])
    y = torch.tensor([float(r[col["is_attributed"]]) for r in rows])
    rng = np.random.default_rng(0)
    parts = {"train": [], "val": [], "test": []}
    for label in (0.0, 1.0):  # stratified 70/10/20
        idx = rng.permutation(np.nonzero(y.numpy() == label)[0])
        a, b = int(0.7 * len(idx)), int(0.8 * len(idx))
        parts["train"].append(idx[:a])
        parts["val"].append(idx[a:b])
        parts["test"].append(idx[b:])
    out = []
    for name in ("train", "val", "test"):
        idx = torch.from_numpy(np.sort(np.concatenate(parts[name])))
        out.append(({k: v[idx] for k, v in feats.items()}, y[idx]))
    return out[0], out[1], out[2], [path]


DATASETS = {"movielens": load_movielens, "talkingdata": load_talkingdata}


# ---------------------------------------------------------------------------------------- model
class CTRModel(nn.Module):
    """Embeddings -> [flattened embeddings, pairwise dot products] -> MLP(hidden) -> logit."""

    def __init__(self, tables, hidden: int = 64) -> None:
        super().__init__()
        self.tables = tables
        n = len(tables.feature_names)
        self.pairs = torch.triu_indices(n, n, offset=1)
        self.mlp = nn.Sequential(nn.Linear(tables.output_dim + self.pairs.shape[1], hidden), nn.ReLU(),
                                 nn.Linear(hidden, 1))

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.tables(x)
        e = torch.stack([out[f] for f in self.tables.feature_names], dim=1)  # (B, F, d)
        dots = torch.einsum("bfd,bgd->bfg", e, e)[:, self.pairs[0], self.pairs[1]]
        return self.mlp(torch.cat([e.flatten(1), dots], dim=1)).squeeze(1)


def predict(model, x, batch: int = 8192) -> torch.Tensor:
    n = len(next(iter(x.values())))
    model.eval()
    with torch.no_grad():
        out = [torch.sigmoid(model({k: v[s : s + batch] for k, v in x.items()})) for s in range(0, n, batch)]
    model.train()
    return torch.cat(out)


def log_loss(y: torch.Tensor, p: torch.Tensor) -> float:
    p = p.double().clamp(1e-7, 1 - 1e-7)
    y = y.double()
    return float(-(y * p.log() + (1 - y) * (1 - p).log()).mean())


def auc(y: torch.Tensor, p: torch.Tensor) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y.numpy(), p.numpy()))


def run_one(data, method: str, fraction: float, seed: int, args) -> dict:
    (trx, try_), (vax, vay), (tex, tey) = data
    torch.manual_seed(seed)
    vocab = {k: v[v != -1] if v.dim() == 2 else v for k, v in trx.items()}
    tables = tables_for_budget(method, vocab, fraction, args.dim, seed=seed, num_chunks=args.chunks)
    plan = plan_budget(method, {k: torch.unique(v).numel() for k, v in vocab.items()}, fraction, args.dim,
                       num_chunks=args.chunks)
    assert tables.num_parameters() == plan.num_parameters
    model = CTRModel(tables, hidden=args.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    lossf = nn.BCEWithLogitsLoss()
    n = len(try_)
    best, best_state, best_epoch, bad = math.inf, None, 0, 0
    t0 = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(n)
        for s in range(0, n, args.batch_size):
            idx = perm[s : s + args.batch_size]
            loss = lossf(model({k: v[idx] for k, v in trx.items()}), try_[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        val = log_loss(vay, predict(model, vax))
        if val < best - 1e-5:
            best, best_epoch, bad = val, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= args.patience:
                break
    train_time = time.perf_counter() - t0
    model.load_state_dict(best_state)
    p = predict(model, tex)
    return {
        "method": METHOD_NAMES[method],
        "fraction": fraction,
        "seed": seed,
        "auc": auc(tey, p),
        "log_loss": log_loss(tey, p),
        "val_log_loss": best,
        "best_epoch": best_epoch,
        "epochs_run": epoch,
        "table_parameters": tables.num_parameters(),
        "budget_parameters": plan.budget,
        "over_budget": plan.over_budget,
        "mlp_parameters": sum(p.numel() for p in model.mlp.parameters()),
        "train_seconds": train_time,
    }


# -------------------------------------------------------------------------------------- report
def summarise(runs: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["method"], r["fraction"]), []).append(r)
    out = []
    for (ds, method, frac), rs in groups.items():
        row = {"dataset": ds, "method": method, "fraction": frac, "seeds": len(rs),
               "table_parameters": rs[0]["table_parameters"], "budget_parameters": rs[0]["budget_parameters"],
               "over_budget": rs[0]["over_budget"]}
        for key in ("auc", "log_loss", "train_seconds"):
            v = np.array([r[key] for r in rs])
            row[f"{key}_mean"] = float(v.mean())
            row[f"{key}_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        out.append(row)
    return out


def check_targets(summary: list[dict]) -> list[dict]:
    get = {(s["dataset"], s["method"], s["fraction"]): s for s in summary}
    targets = []
    for ds in sorted({s["dataset"] for s in summary}):
        for frac in sorted({s["fraction"] for s in summary if s["dataset"] == ds}, reverse=True):
            ue, ht = get.get((ds, "UnifiedEmbedding", frac)), get.get((ds, "HashingTrick", frac))
            if frac <= 0.25 and ue and ht:
                # a win only when the mean difference exceeds the seed spread (the two standard deviations
                # added: the mean +- std bands do not overlap); within it the methods tie
                diff, spread = ue["auc_mean"] - ht["auc_mean"], ue["auc_std"] + ht["auc_std"]
                verdict = "win" if diff > spread else "loss" if diff < -spread else "tie (within seed spread)"
                targets.append({"dataset": ds, "target": f"UnifiedEmbedding AUC >= HashingTrick AUC at {frac:.2%}",
                                "unified_auc": ue["auc_mean"], "other_auc": ht["auc_mean"],
                                "unified_std": ue["auc_std"], "other_std": ht["auc_std"],
                                "met": ue["auc_mean"] >= ht["auc_mean"], "verdict": verdict, "spread": spread,
                                "gap_in_stds": diff / max(math.hypot(ue["auc_std"], ht["auc_std"]), 1e-12)})
        ue, full = get.get((ds, "UnifiedEmbedding", 0.25)), get.get((ds, "FullTables", 1.0))
        if ue and full:
            rel = (full["auc_mean"] - ue["auc_mean"]) / full["auc_mean"]
            targets.append({"dataset": ds, "target": "UnifiedEmbedding AUC at 25% within 0.5% of FullTables",
                            "unified_auc": ue["auc_mean"], "other_auc": full["auc_mean"],
                            "relative_drop": rel, "met": rel <= 0.005})
    for t in targets:
        if not t["met"]:
            t["note"] = MISS_NOTES["full" if "FullTables" in t["target"] else "hashing"]
    return targets


MISS_NOTES = {
    "full": "a quarter of the parameters gives fewer shared rows than there are known values, so per-id "
    "information (user and item identity, which carries most of MovieLens' signal) is lost to collisions; "
    "same model, optimiser and early stopping as FullTables, so the gap is the compression's cost",
    "hashing": "below hashing; compare the verdict (seed spread); both methods share model, optimiser and budget",
}


def plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({s["dataset"] for s in summary})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False)
    styles = {"FullTables": ("k", "*"), "HashingTrick": ("tab:blue", "o"), "QRTrick": ("tab:green", "s"),
              "UnifiedEmbedding": ("tab:red", "D")}
    for ax, ds in zip(axes[0], datasets):
        for method, (color, marker) in styles.items():
            rows = sorted((s for s in summary if s["dataset"] == ds and s["method"] == method),
                          key=lambda s: s["table_parameters"])
            if not rows:
                continue
            ax.errorbar([r["table_parameters"] for r in rows], [r["auc_mean"] for r in rows],
                        yerr=[r["auc_std"] for r in rows], color=color, marker=marker, capsize=3,
                        ms=9 if method == "FullTables" else 5, label=method)
        ax.set_xscale("log")
        ax.set_xlabel("embedding-table parameters")
        ax.set_ylabel("test AUC (mean ± sd over seeds)")
        ax.set_title(ds)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="movielens,talkingdata")
    ap.add_argument("--methods", default="full,hashing,qr,unified")
    ap.add_argument("--budgets", default="1,0.25,0.0625,0.016", help="fractions of FullTables' parameters")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--targets-only", action="store_true", help="recompute the targets of --out from its summary "
                    "(no training) and rewrite it")
    ap.add_argument("--epochs", type=int, default=12, help="max epochs (early stopping on validation)")
    ap.add_argument("--patience", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--dim", type=int, default=16, help="embedding dimension of every feature")
    ap.add_argument("--chunks", type=int, default=2, help="UnifiedEmbedding chunks per feature")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared CPU)")
    ap.add_argument("--quick", action="store_true", help="1 seed, 2 epochs: a smoke test")
    ap.add_argument("--out", type=Path, default=common.RESULTS / "tables.json")
    ap.add_argument("--plot", type=Path, default=None, help="PNG path (default: --out with .png)")
    args = ap.parse_args(argv)
    if args.targets_only:
        import json

        payload = json.loads(args.out.read_text())
        payload["targets"] = check_targets(payload["summary"])
        atomic_write_json(args.out, payload)
        for t in payload["targets"]:
            print(t["dataset"], t["target"], t.get("verdict", "met" if t["met"] else "MISSED"))
        return 0
    if args.quick:
        args.seeds, args.epochs = 1, 2
    torch.set_num_threads(args.threads)
    budgets = [float(b) for b in args.budgets.split(",")]
    methods = args.methods.split(",")
    runs, inputs = [], {}
    t_all = time.perf_counter()
    for ds in args.datasets.split(","):
        train, val, test, files = DATASETS[ds]()
        inputs[ds] = {"files": {str(f): sha256_file(f) for f in files},
                      "rows": {"train": len(train[1]), "val": len(val[1]), "test": len(test[1])},
                      "positives": {"train": int(train[1].sum()), "val": int(val[1].sum()), "test": int(test[1].sum())}}
        for frac in budgets:
            for method in methods:
                if (method == "full") != (frac == 1.0):
                    continue  # FullTables is the 100% reference; compressed methods at < 100%
                for seed in range(args.seeds):
                    r = {"dataset": ds, **run_one((train, val, test), method, frac, seed, args)}
                    runs.append(r)
                    print(f"{ds:12s} {r['method']:17s} {frac:7.2%} seed {seed}  AUC {r['auc']:.4f}  "
                          f"logloss {r['log_loss']:.4f}  params {r['table_parameters']:>7d}"
                          f"{' (over budget)' if r['over_budget'] else ''}  epochs {r['best_epoch']}/{r['epochs_run']}"
                          f"  {r['train_seconds']:.1f}s", flush=True)
    summary = summarise(runs)
    targets = check_targets(summary)
    print("\nsummary (mean ± sd over seeds)")
    for s in summary:
        print(f"{s['dataset']:12s} {s['method']:17s} {s['fraction']:7.2%}  params {s['table_parameters']:>7d}  "
              f"AUC {s['auc_mean']:.4f} ± {s['auc_std']:.4f}  logloss {s['log_loss_mean']:.4f} ± {s['log_loss_std']:.4f}"
              f"  {s['train_seconds_mean']:.1f}s")
    print("\ntargets")
    for t in targets:
        print(f"{'MET   ' if t['met'] else 'MISSED'} {t['dataset']:12s} {t['target']}: "
              f"{t['unified_auc']:.4f} vs {t['other_auc']:.4f}" + (f"  ({t['note']})" if "note" in t else ""))
    payload = {
        "benchmark": "tables",
        "command": "OMP_NUM_THREADS=2 flock /tmp/embedkit-cpu.lock .venv/bin/python bench/tables.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": common.machine_info(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "inputs": inputs,
        "total_seconds": time.perf_counter() - t_all,
        "summary": summary,
        "targets": targets,
        "runs": runs,
    }
    atomic_write_json(args.out, payload)
    png = args.plot or args.out.with_suffix(".png")
    plot(summary, png)
    print(f"wrote {args.out} and {png} in {payload['total_seconds']:.0f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
