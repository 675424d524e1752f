"""Write pairs of BBC articles scored 1 (same topic) or 0 (different topics), for
`bertlayers probe --task similarity`: the similarity data the README's table uses.

    python examples/bbc_topic_pairs.py ../shared/data/news-bbc.jsonl out/bbc-pairs.tsv --pairs 2000

Pairs are drawn at random (seeded), half of them from the same topic; each row holds the two
articles' ids, their texts and the score. The corpus is read, never copied into the repository.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", help="news-bbc.jsonl (id, label, title, text)")
    parser.add_argument("output", help="the TSV to write (id, text, pair, score)")
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--field", default="text", help="title or text")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with open(args.corpus, encoding="utf-8") as lines:
        articles = [json.loads(line) for line in lines if line.strip()]
    by_topic: dict[str, list[dict]] = {}
    for article in articles:
        by_topic.setdefault(article["label"], []).append(article)
    rng = random.Random(args.seed)
    rows = []
    for i in range(args.pairs):
        a = rng.choice(articles)
        if i % 2 == 0:
            b = rng.choice([x for x in by_topic[a["label"]] if x["id"] != a["id"]])
        else:
            b = rng.choice([x for x in articles if x["label"] != a["label"]])
        same = int(a["label"] == b["label"])
        text_a, text_b = (" ".join(x[args.field].split()) for x in (a, b))
        rows.append([f"{a['id']}~{b['id']}", text_a, text_b, same])
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, delimiter="\t", lineterminator="\n")
        writer.writerow(["id", "text", "pair", "score"])
        writer.writerows(rows)


if __name__ == "__main__":
    main()
