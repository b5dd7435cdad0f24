"""Release ordering: tables of pairs, and properties over a corpus of real-world names."""

from __future__ import annotations

import itertools
import random

import pytest

from liveupd.kernel.versions import newest, sort_releases, version_key

# (older, newer)
PAIRS = [
    ("6.1.0-9-cloud-amd64", "6.1.0-50-cloud-amd64"),
    ("6.1.0-55-cloud-amd64", "6.1.0-56-cloud-amd64"),
    ("6.9.0", "6.12.0"),
    ("6.9", "6.12"),
    ("6.9.12", "6.10.1"),
    ("5.15.0-1044-azure", "6.1.0-1-amd64"),
    ("6.12.0-rc3", "6.12.0"),
    ("6.12.0-rc3", "6.12.0-rc10"),
    ("6.12-rc6-amd64", "6.12-amd64"),
    ("6.12~rc6", "6.12"),
    ("6.12.0-rc7", "6.12.1"),
    ("6.8.0-45-generic", "6.8.0-100-generic"),
    ("6.9.0-0.rc3.30.fc41.x86_64", "6.9.0-63.fc41.x86_64"),
    ("6.8.5-301.fc40.x86_64", "6.9.1-100.fc40.x86_64"),
    ("6.9.1-arch1-1", "6.9.1-arch2-1"),
    ("6.1.0", "6.1.0-cloud-amd64"),
    ("6.1.0-cloud-amd64", "6.1.0-1-cloud-amd64"),
    ("4.19.0-27-amd64", "4.19.0-27-amd64+1"),
    ("6.6.30-alpha1", "6.6.30-beta1"),
]


@pytest.mark.parametrize(("older", "newer"), PAIRS)
def test_pairs(older: str, newer: str) -> None:
    assert version_key(older) < version_key(newer)
    assert sort_releases([newer, older]) == [older, newer]
    assert newest([older, newer]) == newer


def test_upstream_version_is_padded() -> None:
    assert version_key("6.12")[0] == version_key("6.12.0")[0]


CORPUS = sorted({r for pair in PAIRS for r in pair} | {"6.1.0-50", "6.1.0-9", "7.0", "6.1"})


def test_the_order_is_total_antisymmetric_and_transitive() -> None:
    keys = {r: version_key(r) for r in CORPUS}
    for a, b in itertools.permutations(CORPUS, 2):
        assert (keys[a] < keys[b]) != (keys[b] < keys[a]), (a, b)
    for a, b, c in itertools.permutations(CORPUS, 3):
        if keys[a] < keys[b] and keys[b] < keys[c]:
            assert keys[a] < keys[c], (a, b, c)


@pytest.mark.parametrize("seed", range(20))
def test_sorting_does_not_depend_on_input_order(seed: int) -> None:
    shuffled = CORPUS[:]
    random.Random(seed).shuffle(shuffled)
    assert sort_releases(shuffled) == sort_releases(CORPUS)


def test_newest_of_nothing_is_none() -> None:
    assert newest([]) is None
