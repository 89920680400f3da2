-- evallab schema, version 10: what the runtime session reported about itself, per run.
-- For llama.cpp: the GGUF file served and its quant type, the build flags, compiler and
-- system info of the compiled library; for vLLM: the server's own version report and
-- settings. '{}' for runs stored before this version.
ALTER TABLE runs ADD COLUMN runtime_extra jsonb NOT NULL DEFAULT '{}';
