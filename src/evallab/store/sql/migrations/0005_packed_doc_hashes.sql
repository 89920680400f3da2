-- evallab schema, version 5: document hashes packed as raw sha256 digests.
-- sample_outcome_sets.doc_hashes held the documents' hex digests joined by commas in one text;
-- it now holds the 32-byte digests back to back (bytea), in doc_ids order. That halves what each
-- document costs to store and lets ingest send the sets as one binary COPY (see
-- docs/decisions/0001-outcomes-as-array-sets.md). Existing rows are converted in place.
DROP VIEW sample_outcomes;

ALTER TABLE sample_outcome_sets
    ALTER COLUMN doc_hashes TYPE bytea USING decode(replace(doc_hashes, ',', ''), 'hex');

-- Digests are incompressible and the id/value arrays gain little from pglz, while compressing
-- them costs more time than the whole COPY: keep them out of line, uncompressed.
ALTER TABLE sample_outcome_sets
    ALTER COLUMN doc_ids SET STORAGE EXTERNAL,
    ALTER COLUMN doc_hashes SET STORAGE EXTERNAL,
    ALTER COLUMN "values" SET STORAGE EXTERNAL;

ALTER TABLE sample_outcome_sets
    ADD CONSTRAINT sample_outcome_sets_digests_match_ids
    CHECK (octet_length(doc_hashes) = 32 * cardinality(doc_ids));

-- One row per document, as before. The packed digests are copied out of TOAST once per set
-- (the OFFSET 0 lateral), not once per document.
CREATE VIEW sample_outcomes AS
SELECT s.run_id, s.task, u.doc_id,
       encode(substr(p.packed, 32 * (u.n::integer - 1) + 1, 32), 'hex') AS doc_hash,
       s.metric, s.filter, u.value
FROM sample_outcome_sets s
CROSS JOIN LATERAL (SELECT s.doc_hashes || ''::bytea AS packed OFFSET 0) p
CROSS JOIN LATERAL unnest(s.doc_ids, s."values") WITH ORDINALITY AS u (doc_id, value, n);
