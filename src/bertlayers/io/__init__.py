"""Inputs: files (txt, csv, tsv, jsonl, conll, stdin) and Python lists -> records, lazily;
errors name the file and line."""
