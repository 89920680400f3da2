"""Per-document outcomes packed into array sets and encoded for a binary COPY.

One row of ``sample_outcome_sets`` holds every document of one (run, task, metric, filter):
``doc_ids integer[]``, ``"values" double precision[]`` and ``doc_hashes bytea``, the documents'
sha256 digests packed back to back (32 bytes each, in ``doc_ids`` order). The rows are built with
vectorised Arrow and numpy kernels from the outcomes table the runner already holds for
``outcomes.parquet`` and encoded by pgpq into PostgreSQL's binary COPY format, so neither the
client nor the server parses hundreds of thousands of values one by one.
"""

from __future__ import annotations

import binascii
import uuid
from collections.abc import AsyncIterator

import numpy as np
import numpy.typing as npt
import pgpq
import pyarrow as pa
import pyarrow.compute as pc

from evallab.errors import StorageError

__all__ = [
    "DIGEST_BYTES",
    "SET_COLUMNS",
    "copy_stream",
    "outcome_sets",
    "unpack_digests",
]

DIGEST_BYTES = 32
"""Bytes in one packed document hash (a sha256 digest)."""

_HEX_CHARS = 2 * DIGEST_BYTES

SET_COLUMNS = ("run_id", "task", "metric", "filter", "doc_ids", "doc_hashes", "values")
"""The ``sample_outcome_sets`` columns, in the order the COPY payload carries them."""


def _refuse_hash(table: pa.Table, bad: pa.Array) -> StorageError:
    row = table.filter(bad).slice(0, 1).to_pylist()[0]
    return StorageError(
        "a document hash is not a sha256 hex digest (64 hex characters), "
        "which the outcome store packs into 32 bytes",
        value=f"{row['task']}/{row['metric']} doc {row['doc_id']}: {row['doc_hash']!r}",
        fix="use sha256 hex digests for doc_hash (lm-eval's and the code harness's doc_hash are)",
    )


def _decode_hashes(table: pa.Table) -> npt.NDArray[np.void]:
    """The ``doc_hash`` hex digests decoded to 32-byte digests, one per row, in row order."""
    hashes = table.column("doc_hash").combine_chunks()
    if hashes.null_count or not pc.all(pc.equal(pc.binary_length(hashes), _HEX_CHARS)).as_py():
        lengths = pc.fill_null(pc.binary_length(hashes), 0)
        raise _refuse_hash(table, pc.not_equal(lengths, _HEX_CHARS))
    # Every value is 64 characters, so the string data is the hex digests back to back and one
    # C-level decode handles all of them; reordering fixed-size digests afterwards is cheap.
    start = int(np.frombuffer(hashes.buffers()[1], np.int32)[hashes.offset])
    data = memoryview(hashes.buffers()[2])[start : start + _HEX_CHARS * len(hashes)]
    try:
        return unpack_digests(binascii.a2b_hex(data))
    except binascii.Error:
        not_hex = pc.invert(pc.match_substring_regex(table.column("doc_hash"), "^[0-9a-fA-F]*$"))
        raise _refuse_hash(table, not_hex) from None


def _int32_ids(ids: pa.Array) -> pa.Array:
    """Document ids as ``integer`` values, refusing ids PostgreSQL's ``integer`` can't hold."""
    bounds = pc.min_max(ids)
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    if low is not None and (low < -(2**31) or high >= 2**31):
        bad = low if low < -(2**31) else high
        raise StorageError(
            "a document id does not fit the outcome store's 32-bit integer doc_id",
            value=f"doc_id {bad}",
            fix="number documents from 0 (lm-eval and the code harness do)",
        )
    return pc.cast(ids, pa.int32())


def _group_codes(table: pa.Table) -> pa.Array:
    """One integer per row, equal exactly when (task, metric, filter) are equal."""
    code: npt.NDArray[np.int64] | None = None
    for name in ("task", "metric", "filter"):
        encoded = pc.dictionary_encode(table.column(name).combine_chunks())
        index = np.asarray(encoded.indices, dtype=np.int64)
        code = index if code is None else code * len(encoded.dictionary) + index
    return pa.array(code)


def outcome_sets(run_id: uuid.UUID, table: pa.Table) -> pa.Table:
    """Group an outcomes table into ``sample_outcome_sets`` rows.

    Args:
        run_id: The run the outcomes belong to.
        table: Outcomes with the columns of ``evallab.store.ingest.OUTCOME_SCHEMA``.

    Returns:
        One row per (task, metric, filter) with the columns of :data:`SET_COLUMNS`; within a set
        documents keep the order they had in ``table``.

    Raises:
        StorageError: a document hash is not a sha256 hex digest (nothing is encoded).
    """
    digests = _decode_hashes(table)  # validated before any other work
    codes = _group_codes(table)
    # A stable sort of small integers groups the rows and keeps each group's document order.
    order = pc.sort_indices(codes)
    ends = pc.run_end_encode(codes.take(order), run_end_type=pa.int32()).run_ends
    offsets = pa.concat_arrays([pa.array([0], pa.int32()), ends])
    n_sets = len(offsets) - 1
    head = table.take(pc.take(order, offsets[:-1]))

    def column(name: str) -> pa.Array:
        return table.column(name).combine_chunks().take(order)

    packed = digests[np.asarray(order)]
    digest_offsets = pa.py_buffer(np.asarray(offsets, dtype=np.int32) * DIGEST_BYTES)
    doc_hashes = pa.Array.from_buffers(
        pa.binary(), n_sets, [None, digest_offsets, pa.py_buffer(packed)]
    )
    doc_ids = _int32_ids(column("doc_id"))
    return pa.table(
        {
            # uuid's binary wire format is its 16 raw bytes, the same as a 16-byte bytea's.
            "run_id": pa.array([run_id.bytes] * n_sets, pa.binary(16)),
            "task": head.column("task"),
            "metric": head.column("metric"),
            "filter": head.column("filter"),
            "doc_ids": pa.ListArray.from_arrays(offsets, doc_ids),
            "doc_hashes": doc_hashes,
            "values": pa.ListArray.from_arrays(offsets, column("value")),
        }
    )


async def copy_stream(sets: pa.Table, sets_per_chunk: int = 4) -> AsyncIterator[bytes]:
    """``sets`` encoded as a PostgreSQL binary COPY stream, a few sets per chunk.

    Chunks are encoded as the server consumes the previous ones, so encoding overlaps the
    server's work instead of preceding it.
    """
    encoder = pgpq.ArrowToPostgresBinaryEncoder(sets.schema)
    yield encoder.write_header()
    for batch in sets.to_batches(max_chunksize=sets_per_chunk):
        yield encoder.write_batch(batch)
    yield encoder.finish()


def unpack_digests(packed: bytes) -> npt.NDArray[np.void]:
    """Packed ``doc_hashes`` as an array of 32-byte digests, comparable element-wise."""
    return np.frombuffer(packed, dtype=np.dtype((np.void, DIGEST_BYTES)))
