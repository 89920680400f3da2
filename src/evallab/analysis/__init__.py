"""Analysis of stored results: which run is better, by how much, and what differs between them.

Every function takes a :class:`evallab.store.Store` (one per command); the SQL lives in
:mod:`evallab.store.analysis`, and nothing here touches the database directly.

Modules:
    selectors:  name one run by an id prefix or ``key=value`` filters (:func:`resolve_run`).
    outcomes:   per-document outcomes aligned by document; raw texts from the runs' Parquet.
    stats:      the statistics: standard errors, exact McNemar, vectorised paired bootstrap.
    paired:     the paired comparison of two runs, with the documents that flipped.
    provenance: what differs in two runs' provenance (``evallab diff``).
    matrix:     model x quant x runtime against benchmarks, with paired deltas (``evallab matrix``).
"""
