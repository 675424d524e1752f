"""The core: tokenize and batch records, run the encoder up to the deepest layer asked for,
select and combine layers, pool; `Engine` (one loaded model), `stream` (chunks into a sink)
and `Extractor` (the Python API over both). Never imports stores, analysis or the CLI."""
