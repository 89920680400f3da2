-- evallab schema, version 7: how the served weights were made, when the lab made them.
-- A model converted to GGUF (and quantized) by the lab records the file's sha256, the quant
-- type, the exporter version and the llama.cpp build that quantized it; a packaged GGUF records
-- its package; other models record nothing ('{}').
ALTER TABLE runs ADD COLUMN model_provenance jsonb NOT NULL DEFAULT '{}';
