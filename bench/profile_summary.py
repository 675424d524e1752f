"""Where a `bertlayers extract` run's time goes, from py-spy's collapsed stacks.

    py-spy record --rate 100 --format raw -o cli.raw -- \
        bertlayers extract short.txt -o out.npy --layers all --quiet
    python bench/profile_summary.py cli.raw

Each sample counts once, in the first category that any of its frames matches.
"""

import sys
from collections import Counter

CATEGORIES = [  # the first category any frame of a sample matches takes the sample
    ("import (start-up)", ("_find_and_load", "exec_module")),
    ("model load", ("from_pretrained", "_load (bertlayers/core/encoder.py")),
    (
        "forward pass",
        ("hidden_state_list", "hidden_states (bertlayers", "forward (transformers", "_call_impl"),
    ),
    ("pooling", ("pool (bertlayers", "pooling.py")),
    ("tokenization", ("tokenize", "batching.py", "_batch_encode", "encode_batch")),
    (
        "store writes, staging, fsync",
        ("staging.py", "stores/", "sinks.py", "fsync", "write (bertlayers"),
    ),
    ("reading input", ("readers.py",)),
    ("progress bar", ("tqdm",)),
]
counts = Counter()
total = 0
with open(sys.argv[1], encoding="utf-8") as raw:
    lines = raw.read().splitlines()
for line in lines:
    stack, _, n = line.rstrip().rpartition(" ")
    n = int(n)
    total += n
    frames = stack.split(";")
    for name, keys in CATEGORIES:
        if any(any(k in f for k in keys) for f in frames):
            counts[name] += n
            break
    else:
        counts["other"] += n
for name, n in counts.most_common():
    print(f"{name:32} {100 * n / total:5.1f}%")
print(f"samples {total}")
