"""RFC 6962 Merkle tree state kept by the decision log.

The log never holds the whole tree. It keeps a `MerkleFrontier`: the roots of the perfect
subtrees that cover leaves [0, size), one per set bit of `size`, largest (leftmost) first. That is
enough to append a leaf, to compute the root, and, for any later tree size, to supply every audit
path node that lies left of `size`: an audit path node entirely inside [0, P) is always one of the
frontier nodes of P (its sibling on the path straddles or follows P, which pins it to the
subtree for one set bit of P). So after retention deletes records 1..P, the frontier at P (stored
with the checkpoint at P) keeps every root and every proof of the retained records computable.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .verifier import EMPTY_ROOT, node_hash

__all__ = ["MerkleFrontier", "consistency_path", "inclusion_path", "subtree_root"]


class MerkleFrontier:
    """The compact state of an append-only RFC 6962 tree."""

    __slots__ = ("_nodes", "size")

    def __init__(self, size: int = 0, nodes: Sequence[bytes] = ()) -> None:
        if size < 0 or len(nodes) != size.bit_count():
            raise ValueError(f"a frontier of size {size} has {size.bit_count()} nodes")
        self.size = size
        self._nodes = list(nodes)

    @property
    def nodes(self) -> tuple[bytes, ...]:
        return tuple(self._nodes)

    def copy(self) -> MerkleFrontier:
        return MerkleFrontier(self.size, self._nodes)

    def append(self, leaf: bytes) -> None:
        """Add the next leaf hash."""
        node, index = leaf, self.size
        # Each trailing one bit of the old size is a full subtree that the new leaf completes.
        while index & 1:
            node = node_hash(self._nodes.pop(), node)
            index >>= 1
        self._nodes.append(node)
        self.size += 1

    def root(self) -> bytes:
        """The RFC 6962 root of leaves [0, size)."""
        if not self._nodes:
            return EMPTY_ROOT
        root = self._nodes[-1]
        for node in reversed(self._nodes[:-1]):
            root = node_hash(node, root)
        return root

    def ranges(self) -> Iterator[tuple[int, int, bytes]]:
        """(start, end, hash) of each frontier subtree, left to right."""
        start, nodes = 0, iter(self._nodes)
        for bit in range(self.size.bit_length() - 1, -1, -1):
            if self.size >> bit & 1:
                yield start, start + (1 << bit), next(nodes)
                start += 1 << bit

    def encode(self) -> str:
        """Text form stored beside a checkpoint: hex nodes joined by commas."""
        return ",".join(n.hex() for n in self._nodes)

    @classmethod
    def decode(cls, size: int, text: str) -> MerkleFrontier:
        return cls(size, [bytes.fromhex(h) for h in text.split(",") if h])


def _split(n: int) -> int:
    """The largest power of two smaller than n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 MTH of a list of leaf hashes."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(subtree_root(leaves[:k]), subtree_root(leaves[k:]))


def inclusion_path(left: MerkleFrontier, leaves: Sequence[bytes], tree_size: int) -> list[bytes]:
    """Audit path for leaf `left.size` in the tree of `tree_size` leaves.

    `left` is the frontier of the leaves before it; `leaves` are the leaf hashes from the proved
    leaf up to `tree_size` (so `leaves[0]` is the proved leaf).
    """
    index = left.size
    if not index < tree_size or len(leaves) != tree_size - index:
        raise ValueError("need the leaves from the proved one up to the tree size")
    known = {(lo, hi): h for lo, hi, h in left.ranges()}

    def range_hash(lo: int, hi: int) -> bytes:
        if hi <= index:
            return known[(lo, hi)]
        return subtree_root(leaves[lo - index : hi - index])

    path: list[bytes] = []
    lo, hi = 0, tree_size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(range_hash(lo + k, hi))
            hi = lo + k
        else:
            path.append(range_hash(lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def consistency_path(old: MerkleFrontier, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 consistency proof from the tree of `old.size` leaves to that of
    `old.size + len(leaves)` leaves (`leaves` are the leaf hashes appended since).

    Every proof node lies either inside [0, old.size), where it is one of `old`'s frontier
    nodes (a left sibling on the way down, or the old tree's last complete subtree), or at or
    after `old.size`, where `leaves` give it.
    """
    m, n = old.size, old.size + len(leaves)
    if m == 0 or m == n:
        return []
    known = {(lo, hi): h for lo, hi, h in old.ranges()}

    def range_hash(lo: int, hi: int) -> bytes:
        if hi <= m:
            return known[(lo, hi)]
        return subtree_root(leaves[lo - m : hi - m])

    path: list[bytes] = []

    def subproof(lo: int, hi: int, complete: bool) -> None:
        # SUBPROOF(m - lo, D[lo:hi], complete) of RFC 6962 section 2.1.2, in absolute offsets
        if hi - lo == m - lo:
            if not complete:
                path.append(range_hash(lo, hi))
            return
        k = _split(hi - lo)
        if m - lo <= k:
            subproof(lo, lo + k, complete)
            path.append(range_hash(lo + k, hi))
        else:
            subproof(lo + k, hi, False)
            path.append(range_hash(lo, lo + k))

    subproof(0, n, True)
    return path
