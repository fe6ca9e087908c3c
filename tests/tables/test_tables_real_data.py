"""Checks on the real tabular data in shared/data/tabular (read in place, never copied)."""

from __future__ import annotations

import gzip
import math

import pytest
import torch

from embedkit._io import data_dir
from embedkit.tables import FullTables, HashingTrick, UnifiedEmbedding, hash_strings, plan_budget

pytestmark = pytest.mark.slow  # reads real data


def expected_occupied(n: int, m: int) -> float:
    """Expected number of non-empty rows when n distinct values hash uniformly into m rows."""
    return m * (1 - (1 - 1 / m) ** n)


def test_movielens_zip_codes_as_strings():
    path = data_dir() / "tabular" / "movielens-100k" / "u.user"
    zips = [line.rstrip("\n").split("|")[4] for line in path.open() if line.strip()]
    assert len(zips) == 943
    full = FullTables({"zip": zips}, embedding_dim=4)
    assert full.num_parameters() == (795 + 1) * 4  # 795 distinct zip codes + the OOV row
    rows = full.rows("zip", hash_strings(zips))
    assert bool((rows > 0).all()) and len(set(rows.tolist())) == 795
    ht = HashingTrick(["zip"], num_rows=200, embedding_dim=4)
    occupied = len(set(ht.rows("zip", hash_strings(sorted(set(zips)))).tolist()))
    assert abs(occupied - expected_occupied(795, 200)) < 4 * math.sqrt(200 * 0.02 * 0.98) + 3


def test_talkingdata_ip_collisions_match_uniform_hashing():
    path = data_dir() / "tabular" / "talkingdata-adtracking-sample" / "train_sample.csv.gz"
    with gzip.open(path, "rt") as f:
        header = f.readline().strip().split(",")
        k = header.index("ip")
        ips = torch.tensor(sorted({int(line.split(",")[k]) for line in f}))
    assert ips.numel() == 34857
    for m in (1000, 5000):
        occ = torch.unique(HashingTrick(["ip"], num_rows=m, seed=2).rows("ip", ips)).numel()
        assert abs(occ - expected_occupied(34857, m)) < 0.02 * m
        ue = UnifiedEmbedding(["ip"], num_buckets=m, num_chunks=2, seed=2).rows("ip", ips)
        # two independent probes: almost no pair of ips shares both rows
        pairs = torch.unique(ue[:, 0] * m + ue[:, 1]).numel()
        assert pairs > 34857 - expected_pair_collisions(34857, m * m) - 40
    plan = plan_budget("unified", {"ip": 34857}, 0.016)
    assert plan.num_parameters <= plan.budget == int(0.016 * 34858 * 16)


def expected_pair_collisions(n: int, cells: int) -> float:
    return n - expected_occupied(n, cells)
