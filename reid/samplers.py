"""P x K identity sampler (BoT ``RandomIdentitySampler`` / fast-reid ``NaiveIdentitySampler``): every
batch holds P identities with K images each (an identity with fewer than K images is sampled with
replacement). Seeded per epoch, and DDP-aware without changing the recipe: every process draws the
same epoch of P x K batches and rank r takes identities [r P/W, (r+1) P/W) of each, so W processes
train on the global batch P x K with as many steps per epoch as one process does (BoT is a
single-GPU batch-64 recipe). P must be divisible by W."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch.utils.data import Sampler


class IdentitySampler(Sampler[int]):
    def __init__(self, pids: list[int], p: int = 16, k: int = 4, seed: int = 0, rank: int = 0, world: int = 1) -> None:
        if p < 1 or k < 1:
            raise ValueError(f"p and k must be >= 1, got p={p}, k={k}")
        self.index: dict[int, list[int]] = defaultdict(list)
        for i, pid in enumerate(pids):
            self.index[pid].append(i)
        if len(self.index) < p:
            raise ValueError(f"P = {p} identities per batch but the data has only {len(self.index)}")
        if p % world:
            raise ValueError(f"data.p = {p} identities per global batch cannot be split evenly over {world} "
                             f"processes: use a P divisible by {world}, or another number of processes")
        self.p, self.k, self.seed, self.rank, self.world, self.epoch = p, k, seed, rank, world, 0
        self.pids = sorted(self.index)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """All batches of the epoch (before sharding): every identity cut into groups of K images."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        groups = []
        for pid in self.pids:
            idx, m = self.index[pid], len(self.index[pid])
            pick = torch.randint(m, (self.k,), generator=g) if m < self.k else torch.randperm(m, generator=g)
            chosen = [idx[j] for j in pick.tolist()]
            groups += [(pid, chosen[s:s + self.k]) for s in range(0, len(chosen) - self.k + 1, self.k)]
        pending = [groups[o] for o in torch.randperm(len(groups), generator=g).tolist()]
        batches, current, used = [], [], set()
        while pending:  # greedily fill batches with P distinct identities
            rest = []
            for pid, grp in pending:
                if pid in used:
                    rest.append((pid, grp))
                    continue
                current += grp
                used.add(pid)
                if len(used) == self.p:
                    batches.append(current)
                    current, used = [], set()
            pending = rest if len(rest) < len(pending) else []  # stop after a pass that placed nothing
        return batches

    @property
    def batch_size(self) -> int:
        """Images per batch on this rank: P / W identities x K."""
        return self.p // self.world * self.k

    def __iter__(self):
        share = self.batch_size  # a batch is P groups of K consecutive indices: this rank's P / W groups
        for b in self.batches():
            yield from b[self.rank * share:(self.rank + 1) * share]

    def __len__(self) -> int:
        return len(self.batches()) * self.batch_size
