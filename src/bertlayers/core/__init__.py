"""The core: tokenize and batch records, run the encoder up to the deepest layer asked for,
select and combine layers, pool; `Engine` (one loaded model), `stream` (chunks into a sink)
and `Extractor` (the Python API over both); `modelcache` and `tokenizer` keep what
transformers makes of a model's files for later start-ups. Never imports stores, analysis or
the CLI."""
