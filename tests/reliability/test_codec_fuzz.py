"""Property-based fuzzing of the AgentX decoder: 100k+ inputs, only AgentXParseError escapes.

Plain `random` with fixed seeds (reproducible, fast): random bytes, random headers over random
payloads, and valid packets of every PDU type mutated by bit flips, byte overwrites,
truncation, insertion, deletion and length-field edits. Every decoded PDU must re-encode, and
`decode_packet` must never consume more than it was given or hand back bytes it did not get.

The inputs and the contract check are bench/fuzz_agentx.py's (`python -m bench.fuzz_agentx`
runs the same for a million inputs); here they run at test size with their own seeds.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from bench.fuzz_agentx import (
    check_one,
    chunked,
    decode_stream,
    mutate,
    random_bytes,
    random_header,
    seed_packets,
)
from pmta_snmp.agentx.codec import HEADER_LEN, MAX_PAYLOAD_LEN

SEEDS = seed_packets()
TOTAL = 120_000


def test_seed_corpus_has_every_pdu_type_in_both_byte_orders() -> None:
    kinds = {(data[1], bool(data[2] & 0x10)) for data in SEEDS}
    assert kinds == {(t, big) for t in range(1, 19) for big in (True, False)}


def test_decoder_survives_100k_random_and_mutated_inputs() -> None:
    rng = random.Random(20250114)  # fixed seed: a failure is reproducible
    stats: Counter[str] = Counter()

    def check(data: bytes) -> None:
        """decode_packet on `data`: only AgentXParseError; a decoded PDU re-encodes sanely."""
        problem, outcome = check_one(data)
        assert problem is None, (problem, data.hex())
        stats[outcome] += 1

    n = 0
    # 1) pure random bytes of random length (mostly too short or bad version)
    for _ in range(20_000):
        check(random_bytes(rng))
        n += 1
    # 2) valid headers over random payloads
    for _ in range(40_000):
        check(random_header(rng))
        n += 1
    # 3) mutated valid packets of every PDU type
    while n < TOTAL:
        check(mutate(rng, rng.choice(SEEDS)))
        n += 1
    # The corpus must exercise all outcomes, or it tests nothing.
    assert stats["parse_error"] > 10_000, stats
    assert stats["decoded"] > 5_000, stats
    assert stats["incomplete"] > 1_000, stats
    print(f"fuzz: {n} inputs: {dict(stats)}")  # the decoder's speed: `./run bench fuzz`


@pytest.mark.parametrize("seed", range(3))
def test_stream_of_concatenated_packets_decodes_or_fails_cleanly(seed: int) -> None:
    """A stream of valid and mutated packets, fed in random chunks like data_received does."""
    rng = random.Random(seed)
    stream = b"".join(
        rng.choice(SEEDS) if rng.random() < 0.7 else mutate(rng, rng.choice(SEEDS))
        for _ in range(2_000)
    )
    got = decode_stream(chunked(rng, stream, largest=700))
    assert got.most_buffered <= HEADER_LEN + MAX_PAYLOAD_LEN  # never beyond one packet
    assert got.pdus and got.errors > 0
