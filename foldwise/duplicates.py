"""Duplicate groups: samples whose images are the same (one content hash) or nearly the same (64-bit
perceptual hashes within a distance). One rule, shared by the folds (tasks/) and the dashboard; it reads
nothing, so each caller brings the samples (see `db.samples.stored_samples`)."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np


class HashedSample(Protocol):
    """What grouping needs of a sample (`db.samples.StoredSample` has it)."""

    @property
    def key(self) -> str: ...
    @property
    def content_hash(self) -> str: ...
    @property
    def perceptual_hash(self) -> str | None: ...  # hex; None: not computed
    @property
    def labels(self) -> frozenset[str]: ...


class DisjointSets:
    """Union-find over row indices; a set is named by its smallest row."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, row: int) -> int:
        while self.parent[row] != row:
            self.parent[row] = self.parent[self.parent[row]]
            row = self.parent[row]
        return row

    def union(self, rows: Sequence[int]) -> None:
        roots = {self.find(row) for row in rows}
        smallest = min(roots)
        for root in roots:
            self.parent[root] = smallest


def near_pairs(hashes: Sequence[int], distance: int) -> list[tuple[int, int]]:
    """Index pairs of distinct 64-bit hashes within `distance` bits of each other.

    Banding: the 64 bits are cut into distance + 1 bands, and two hashes within the distance agree
    exactly on at least one band (pigeonhole), so only hashes sharing a band value are compared.
    Not quadratic unless many hashes share a band, which near-duplicate-free data rarely does.
    """
    edges = np.linspace(0, 64, distance + 2).astype(int)
    pairs = set()
    for low, high in itertools.pairwise(edges):
        mask = (1 << int(high - low)) - 1
        buckets: dict[int, list[int]] = defaultdict(list)
        for index, value in enumerate(hashes):
            buckets[(value >> int(low)) & mask].append(index)
        for members in buckets.values():
            for a, b in itertools.combinations(members, 2):
                if (hashes[a] ^ hashes[b]).bit_count() <= distance:
                    pairs.add((a, b))
    return sorted(pairs)


def duplicate_groups(samples: Sequence[HashedSample], near_distance: int | None = None) -> list[int]:
    """Group per sample, as the index of the group's first sample: samples with the same image content,
    and with `near_distance`, those whose perceptual hashes differ in at most that many bits (chains
    included: a near b near c puts all three in one group)."""
    sets = DisjointSets(len(samples))
    rows_by_key: dict[str, list[int]] = defaultdict(list)
    for row, sample in enumerate(samples):
        rows_by_key[sample.content_hash].append(row)
        if near_distance is not None and sample.perceptual_hash:  # '' : a near-uniform image
            rows_by_key["phash:" + sample.perceptual_hash].append(row)  # identical pHashes: one bucket
    for rows in rows_by_key.values():
        sets.union(rows)
    if near_distance:
        distinct = [key for key in rows_by_key if key.startswith("phash:")]
        hashes = [int(key.removeprefix("phash:"), 16) for key in distinct]
        for a, b in near_pairs(hashes, near_distance):
            sets.union([rows_by_key[distinct[a]][0], rows_by_key[distinct[b]][0]])
    return [sets.find(row) for row in range(len(samples))]


S = TypeVar("S", bound=HashedSample)


@dataclass(frozen=True)
class Duplicates(Generic[S]):
    """Samples and the duplicate group of each (the index of the group's first sample)."""

    samples: list[S]
    group_of: list[int]

    @classmethod
    def of(cls, samples: list[S], near_distance: int | None) -> Duplicates[S]:
        return cls(samples, duplicate_groups(samples, near_distance))

    @property
    def groups(self) -> list[list[S]]:
        """The groups of more than one sample."""
        members: dict[int, list[S]] = defaultdict(list)
        for sample, group in zip(self.samples, self.group_of, strict=True):
            members[group].append(sample)
        return [group for group in members.values() if len(group) > 1]

    @property
    def conflicting(self) -> list[list[S]]:
        """The groups whose members disagree on labels: label noise."""
        return [group for group in self.groups if is_conflicting(group)]

    def __str__(self) -> str:
        groups = self.groups
        return (
            f"{len(groups)} duplicate groups ({sum(len(group) for group in groups)} samples), "
            f"{len(self.conflicting)} with conflicting labels"
        )


def is_conflicting(group: Sequence[HashedSample]) -> bool:
    return len({sample.labels for sample in group}) > 1


def labels_in_words(sample: HashedSample) -> str:
    return " ".join(sorted(sample.labels)) or "no label"


def describe_group(group: Sequence[HashedSample]) -> str:
    """A duplicate group in words: each id with its labels."""
    return " / ".join(f"{sample.key} ({labels_in_words(sample)})" for sample in group)
