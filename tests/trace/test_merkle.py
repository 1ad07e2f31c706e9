"""RFC 6962 tree arithmetic against a naive recursive recomputation."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentd.trace._merkle import MerkleFrontier, inclusion_path
from agentd.trace.verifier import EMPTY_ROOT, leaf_hash, node_hash, root_from_inclusion_path


def naive_root(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) exactly as RFC 6962 section 2.1 writes it."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(naive_root(leaves[:k]), naive_root(leaves[k:]))


def naive_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) exactly as RFC 6962 section 2.1.1 writes it."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return naive_path(m, leaves[:k]) + [naive_root(leaves[k:])]
    return naive_path(m - k, leaves[k:]) + [naive_root(leaves[:k])]


def leaves_for(n: int) -> list[bytes]:
    return [leaf_hash(f"record {i}".encode()) for i in range(n)]


def test_frontier_root_matches_naive_root_for_every_size() -> None:
    leaves = leaves_for(70)
    frontier = MerkleFrontier()
    assert frontier.root() == EMPTY_ROOT
    for n, leaf in enumerate(leaves, start=1):
        frontier.append(leaf)
        assert frontier.size == n
        assert len(frontier.nodes) == bin(n).count("1")
        assert frontier.root() == naive_root(leaves[:n])
        assert MerkleFrontier.decode(n, frontier.encode()).root() == frontier.root()


def test_every_path_in_small_trees_matches_rfc_and_verifies() -> None:
    leaves = leaves_for(33)
    for n in range(1, len(leaves) + 1):
        root = naive_root(leaves[:n])
        for m in range(n):
            left = MerkleFrontier()
            for leaf in leaves[:m]:
                left.append(leaf)
            path = inclusion_path(left, leaves[m:n], n)
            assert path == naive_path(m, leaves[:n])
            assert root_from_inclusion_path(m, n, leaves[m], path) == root


@settings(max_examples=60, deadline=None)
@given(n=st.integers(min_value=1, max_value=600), data=st.data())
def test_random_paths_verify_and_reject_a_changed_leaf(n: int, data: st.DataObject) -> None:
    leaves = leaves_for(n)
    m = data.draw(st.integers(min_value=0, max_value=n - 1))
    left = MerkleFrontier()
    for leaf in leaves[:m]:
        left.append(leaf)
    path = inclusion_path(left, leaves[m:], n)
    root = naive_root(leaves)
    assert path == naive_path(m, leaves)
    assert root_from_inclusion_path(m, n, leaves[m], path) == root
    assert root_from_inclusion_path(m, n, leaf_hash(b"forged"), path) != root
    if path:
        bent = [*path[:-1], bytes(32)]
        assert root_from_inclusion_path(m, n, leaves[m], bent) != root


@pytest.mark.parametrize(
    ("index", "size", "path_len"), [(5, 5, 0), (0, 1, 1), (3, 8, 2), (3, 8, 4), (-1, 4, 2)]
)
def test_paths_of_the_wrong_shape_are_rejected(index: int, size: int, path_len: int) -> None:
    with pytest.raises(ValueError):
        root_from_inclusion_path(index, size, bytes(32), [bytes(32)] * path_len)
