"""The draw algorithm, written to be re-implemented by anyone (docs/protocol.md).

Inputs: ``seed`` (32 bytes, revealed after the draw; ``commitment`` = hex SHA-256 of it,
published before the first entry), ``entrants`` (user ids, sorted ascending by their
UTF-8 bytes), ``k`` = min(winners, len(entrants)).

Random numbers: the i-th 64-bit block is the first 8 bytes (big-endian) of
HMAC-SHA256(key=seed, msg=i as 8 bytes big-endian), i = 0, 1, 2, ... across the whole
draw. ``below(m)`` takes blocks until one is < 2^64 - (2^64 mod m) (rejection sampling:
no modulo bias) and returns it mod m.

Selection: a partial Fisher-Yates shuffle: for j in 0..k-1, swap position j with position
j + below(n - j); the winners are positions 0..k-1, in that order.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from typing import Any

ALGORITHM = "hmac-sha256-fisher-yates-v1"
_SPAN = 1 << 64


def commitment(seed: bytes) -> str:
    return hashlib.sha256(seed).hexdigest()


class _Stream:
    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.counter = 0

    def block(self) -> int:
        msg = self.counter.to_bytes(8, "big")
        self.counter += 1
        return int.from_bytes(hmac.new(self.seed, msg, hashlib.sha256).digest()[:8], "big")

    def below(self, m: int) -> int:
        limit = _SPAN - (_SPAN % m)
        while True:
            x = self.block()
            if x < limit:
                return x % m


def order(entrants: Sequence[str]) -> list[str]:
    """Entrants in the order the algorithm uses: unique, ascending by UTF-8 bytes."""
    return sorted(set(entrants), key=lambda user_id: user_id.encode())


def pick(seed: bytes, entrants: Sequence[str], winners: int) -> list[str]:
    """The winners, drawn from ``entrants`` already in :func:`order`."""
    pool = list(entrants)
    stream = _Stream(seed)
    for j in range(min(winners, len(pool))):
        k = j + stream.below(len(pool) - j)
        pool[j], pool[k] = pool[k], pool[j]
    return pool[: min(winners, len(pool))]


def verify(proof: Mapping[str, Any]) -> list[str]:
    """What is wrong with a published proof (empty: it checks out)."""
    problems = []
    seed = bytes.fromhex(str(proof["seed"]))
    if commitment(seed) != proof["commitment"]:
        problems.append("sha256(seed) differs from the commitment")
    if proof.get("algorithm") != ALGORITHM:
        problems.append(f"unknown algorithm {proof.get('algorithm')!r}")
    entrants = [str(e) for e in proof["entrants"]]
    if entrants != order(entrants):
        problems.append("entrants are not unique and in ascending order")
    wanted = int(proof.get("winners_wanted", len(proof["winners"])))
    again = pick(seed, order(entrants), wanted)
    if again != list(proof["winners"]):
        problems.append(f"recomputed winners {again} differ from {proof['winners']}")
    return problems
