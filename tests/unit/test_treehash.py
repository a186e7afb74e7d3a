"""SHA-256 tree hash (PROTOCOLS.md §1.4): the vendor-derived vectors, parts that combine into the whole,
incremental hashing fed in arbitrary pieces, aligned ranges and part sizes — all cross-checked with
botocore.utils.calculate_tree_hash (AWS's own implementation)."""
from __future__ import annotations

import hashlib
import io
import random

import pytest
from botocore.utils import calculate_tree_hash
from hypothesis import given, settings
from hypothesis import strategies as st

from storefs.vaults import treehash
from storefs.vaults.treehash import (
    EMPTY_TREE_HASH,
    MiB,
    TreeHasher,
    combine_hex,
    is_mib_aligned_range,
    is_tree_aligned,
    is_valid_part_size,
    part_size_for,
    tree_hash,
    tree_hash_file,
)

# The vectors of PROTOCOLS.md §1.4 (derived from cas/utils/merkle.py; all match botocore).
DATA9 = bytes((13 * i + 5) % 253 for i in range(9 * MiB))
DATA2 = bytes((7 * i + 3) % 251 for i in range(2 * MiB + 1000))
DATA9_SHA256 = "4f2448e53d19a60cbcae345dc3d0b795c694c3648c21e49bcf3d32e6f21a25f9"
DATA9_TREE = "716112b3252ffb3b7f34e8f37b9a951eab9c3e1d616402d6a9c8f8104f552252"
DATA2_SHA256 = "fef8afcc090c82f829580e3d4b22ef7dbe33bcdbd66d7539fc07ab18306176e7"
DATA2_TREE = "5366943c7eae51090950231be31657cfd0117c6359eb286b5e46d2d52979e463"
ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
DATA9_PARTS = [  # 4 MiB parts
    (0, 4194303, "df93fe40db266e67432292f69d2bd08a69b6d855596547e8d61e07bebf82e9e5"),
    (4194304, 8388607, "4e56fdf7488682ac1b14ca8b771dbd38048a9263ab58d8253459f014b8343419"),
    (8388608, 9437183, "fae0e9f7675ad7ed3a6c7c16fb38c004e3dc98f85bae3f121d512d646a0a5518"),
]


def botocore_tree_hash(data: bytes) -> str:
    return calculate_tree_hash(io.BytesIO(data))


def test_vectors_data9_and_data2():
    assert hashlib.sha256(DATA9).hexdigest() == DATA9_SHA256
    assert tree_hash(DATA9) == DATA9_TREE == botocore_tree_hash(DATA9)
    assert hashlib.sha256(DATA2).hexdigest() == DATA2_SHA256
    assert tree_hash(DATA2) == DATA2_TREE == botocore_tree_hash(DATA2)


def test_vector_abc_is_plain_sha256():
    assert tree_hash(b"abc") == ABC == hashlib.sha256(b"abc").hexdigest() == botocore_tree_hash(b"abc")


def test_up_to_one_mib_equals_plain_sha256():
    data = bytes(range(256)) * 4096  # exactly 1 MiB
    assert tree_hash(data) == hashlib.sha256(data).hexdigest()
    assert tree_hash(data + b"x") != hashlib.sha256(data + b"x").hexdigest()


def test_empty_data_matches_botocore():
    assert tree_hash(b"") == EMPTY_TREE_HASH == botocore_tree_hash(b"")
    assert TreeHasher().hexdigest() == EMPTY_TREE_HASH


def test_data9_parts_and_their_combination():
    for start, end, expected in DATA9_PARTS:
        assert tree_hash(DATA9[start:end + 1]) == expected
    hashes = [h for _, _, h in DATA9_PARTS]
    assert combine_hex(hashes) == DATA9_TREE
    # raw and hex nodes mix
    assert combine_hex([bytes.fromhex(hashes[0]), hashes[1], hashes[2]]) == DATA9_TREE


def test_combine_needs_nodes_of_32_bytes():
    with pytest.raises(ValueError):
        combine_hex([])
    with pytest.raises(ValueError):
        combine_hex(["abcd"])


@pytest.mark.parametrize("part_mib", [1, 2, 4, 8])
def test_power_of_two_parts_combine_to_whole(part_mib):
    data = DATA2 + DATA9[: 5 * MiB + 17]  # 7 MiB + 1017 bytes, uneven tail
    part = part_mib * MiB
    parts = [tree_hash(data[i:i + part]) for i in range(0, len(data), part)]
    assert combine_hex(parts) == tree_hash(data) == botocore_tree_hash(data)


def test_non_power_of_two_parts_do_not_combine():
    data = DATA9
    parts = [tree_hash(data[i:i + 3 * MiB]) for i in range(0, len(data), 3 * MiB)]
    assert combine_hex(parts) != tree_hash(data)


@settings(max_examples=30, deadline=None)
@given(size=st.integers(0, 12 * MiB + 3), seed=st.integers(0, 2**32 - 1))
def test_incremental_hasher_matches_botocore(size, seed):
    rng = random.Random(seed)
    data = rng.randbytes(size)
    hasher = TreeHasher(linear=True, keep_leaves=True)
    pos = 0
    while pos < size:  # pieces of any size, across chunk boundaries
        step = rng.choice([1, 7, MiB - 1, MiB, MiB + 1, 3 * MiB + 5, rng.randint(1, 2 * MiB)])
        hasher.update(data[pos:pos + step])
        pos += step
    assert hasher.hexdigest() == botocore_tree_hash(data) == tree_hash(data)
    assert hasher.linear_hexdigest() == hashlib.sha256(data).hexdigest()
    assert hasher.size == size
    assert b"".join(hasher.all_leaves()) == b"".join(treehash.leaf_hashes(data))


def test_tree_hash_file_reads_exactly_its_length():
    f = io.BytesIO(b"head" + DATA2 + b"tail")
    f.seek(4)
    hasher = tree_hash_file(f, len(DATA2), linear=True)
    assert hasher.hexdigest() == DATA2_TREE and hasher.linear_hexdigest() == DATA2_SHA256
    assert f.read() == b"tail"
    with pytest.raises(ValueError):
        tree_hash_file(io.BytesIO(b"short"), 10)


def _nodes(total: int) -> set[tuple[int, int]]:
    """Every node of the tree of `total` bytes, built level by level as the SDKs pair them."""
    level = [(i, min(total, i + MiB)) for i in range(0, total, MiB)]
    found = set(level)
    while len(level) > 1:
        level = [(level[i][0], level[i + 1][1]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
        found.update(level)
    return found


@pytest.mark.parametrize("total", [1, MiB, MiB + 1, 3 * MiB, 5 * MiB + 9, 8 * MiB, 9 * MiB, 13 * MiB - 1])
def test_is_tree_aligned_names_exactly_the_tree_nodes(total):
    nodes = _nodes(total)
    bounds = sorted({0, total, *range(0, total, MiB // 2), *[n for pair in nodes for n in pair]})
    for start in bounds:
        for end in bounds:
            if start < end:
                assert is_tree_aligned(start, end, total) == ((start, end) in nodes), (start, end, total)


def test_tree_aligned_range_hash_is_the_node_hash():
    # data9, bytes 8 MiB-9 MiB: leaf 8, promoted; bytes 0-8 MiB: a full subtree.
    assert is_tree_aligned(8 * MiB, 9 * MiB, 9 * MiB)
    assert is_tree_aligned(0, 8 * MiB, 9 * MiB)
    assert not is_tree_aligned(4 * MiB, 9 * MiB, 9 * MiB)
    assert not is_tree_aligned(MiB, 3 * MiB, 9 * MiB)


def test_retrieval_ranges_must_be_mib_aligned():
    size = 9 * MiB + 5
    assert is_mib_aligned_range(0, size, size)
    assert is_mib_aligned_range(MiB, 3 * MiB, size)
    assert is_mib_aligned_range(9 * MiB, size, size)
    assert not is_mib_aligned_range(1, MiB, size)
    assert not is_mib_aligned_range(0, MiB + 1, size)
    assert not is_mib_aligned_range(0, size + 1, size)


def test_part_sizes():
    assert [is_valid_part_size(n * MiB) for n in (1, 2, 3, 4, 4096, 8192)] == [True, True, False, True, True, False]
    assert not is_valid_part_size(MiB + 1) and not is_valid_part_size(0)
    assert part_size_for(40 * MiB, 8 * MiB) == 8 * MiB
    assert part_size_for(1, 5 * MiB) == 8 * MiB            # rounded up to 1 MiB x 2^n
    assert part_size_for(100_000 * MiB, MiB) == 16 * MiB   # at most 10 000 parts
    with pytest.raises(ValueError):
        part_size_for(4096 * MiB * 10_001, MiB)
