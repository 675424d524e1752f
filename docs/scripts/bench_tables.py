"""The CPU benchmark pages' tables, one function per bench script's results file."""

from __future__ import annotations

from md_format import num, percent, ratio, table
from result_files import Result, dig
from verdicts import soak_trend

CLI_COLUMNS = ["cli", "library", "st-encode", "tutorial", "cli-openvino", "cli-bf16"]


def cli_tables(results: list[Result]) -> str:
    parts = []
    for result in results:
        if not result.present:
            parts.append(result.source())
            continue
        corpora = result.data["corpora"]
        rows = []
        for corpus, c in corpora.items():
            contenders = c["contenders"]
            cells = [f"{corpus} ({c['texts']:,} texts)"]
            cells += [num(dig(contenders, f"{name}.net_s")) for name in CLI_COLUMNS]
            r = c.get("ratios", {})
            cells += [
                ratio(r.get("st-encode / cli")),
                ratio(r.get("tutorial / cli")),
                num(dig(contenders, "cli.mfu")),
                num(dig(contenders, "cli.startup_s"), 1),
                num(dig(contenders, "cli.peak_rss_mib"), 0),
            ]
            rows.append(cells)
        header = [
            "corpus",
            *CLI_COLUMNS,
            "ST / cli",
            "tutorial / cli",
            "cli MFU",
            "cli start-up s",
            "cli peak RSS MiB",
        ]
        parts.append(f"**`{result.name}`**: net seconds (start-up subtracted)\n\n")
        parts.append(table(header, rows) + "\n")
        extra = []
        for corpus, c in corpora.items():
            contenders = c["contenders"]
            for name in (
                "cli-parquet",
                "cli-tokens",
                "library-parquet",
                "library-tokens",
                "library-embed",
            ):
                if name in contenders:
                    extra.append(
                        [
                            corpus,
                            name,
                            num(contenders[name]["net_s"]),
                            contenders[name].get("net_from", ""),
                            num(contenders[name].get("mfu")),
                        ]
                    )
        if extra:
            parts.append(
                '<details markdown="1"><summary>Other contenders in this file</summary>\n\n'
                + table(["corpus", "contender", "net s", "timed by", "MFU"], extra)
                + "\n</details>\n\n"
            )
        exact = [
            [
                corpus,
                f"{c['cli_vs_tutorial_max_abs_diff']:.1e}",
                " ".join(
                    f"{x:.5f}" for x in dig(c, "contenders.cli-bf16.min_cosine_per_layer") or []
                ),
            ]
            for corpus, c in corpora.items()
            if "cli_vs_tutorial_max_abs_diff" in c
        ]
        if exact:
            parts.append(
                table(
                    [
                        "corpus",
                        "cli vs tutorial loop, max abs diff",
                        "cli-bf16: lowest cosine to float32, per layer",
                    ],
                    exact,
                )
                + "\n"
            )
        parts.append(result.source() + "\n")
    return "".join(parts)


SPEED_CONTENDERS = [
    "tutorial",
    "hf-batched",
    "st-encode",
    "bertlayers",
    "bl-tokens",
    "bl-openvino",
    "bl-int8",
    "bl-bf16",
]


def speed_tables(results: list[Result]) -> str:
    parts = []
    for result in results:
        if not result.present:
            parts.append(result.source())
            continue
        for model in result.data["models"]:
            parts.append(
                f"**{model['model']}** in `{result.name}` ({model['layers']} layers, hidden "
                f"{model['hidden']}; {model['texts']:,} texts, "
                f"{model['real_tokens']:,} real tokens; "
                f"fp32 matmul ceiling measured at {num(model['matmul_ceiling_gflops'], 1)} "
                f"GFLOP/s)\n\n"
            )
            rows = []
            for name in SPEED_CONTENDERS:
                c = model["contenders"].get(name)
                if c is None:
                    continue
                cos = c.get("min_cosine_per_layer")
                rows.append(
                    [
                        name,
                        num(c["seconds"]),
                        num(c["texts_per_s"], 1),
                        num(c["real_tokens_per_s"], 0),
                        num(c["padding_efficiency"]),
                        num(c["mfu"]),
                        ratio(c["bertlayers_speedup"]),
                        f"{min(cos):.4f}" if cos else "",
                    ]
                )
            parts.append(
                table(
                    [
                        "contender",
                        "seconds",
                        "texts/s",
                        "real tokens/s",
                        "padding efficiency",
                        "MFU",
                        "time / bertlayers' time",
                        "lowest cosine to float32",
                    ],
                    rows,
                )
            )
            diffs = [
                f"{k.replace('_vs_tutorial_max_abs_diff', '')} {v:.1e}"
                for k, v in model.items()
                if k.endswith("_vs_tutorial_max_abs_diff")
            ]
            if diffs:
                parts.append(f"\nLargest difference from the per-text loop: {', '.join(diffs)}.\n")
            parts.append("\n")
        parts.append(result.source() + "\n")
    return "".join(parts)


def backends_table(result: Result) -> str:
    if not result.present:
        return result.source()
    rows = []
    names = []
    for model in result.data["models"]:
        for name in model["backends"]:
            if name not in names:
                names.append(name)
    for name in names:
        row = [name]
        for model in result.data["models"]:
            b = model["backends"].get(name)
            row += (
                [
                    num(b["seconds"]),
                    ratio(b["vs_eager"]),
                    num(b["startup_s"], 1),
                    f"{b['max_abs_diff_vs_eager']:.1e}",
                ]
                if b
                else ["", "", "", ""]
            )
        rows.append(row)
    header = ["backend"]
    for model in result.data["models"]:
        m = model["model"]
        header += [f"{m} s", f"{m} speed vs eager", f"{m} start-up s", f"{m} max abs diff"]
    return table(header, rows) + "\n" + result.source()


def text_file(result: Result) -> str:
    if not result.present:
        return result.source()
    return f"```text\n{result.data.rstrip()}\n```\n\n" + result.source()


def memory_table(result: Result) -> str:
    if not result.present:
        return result.source()
    d = result.data
    rows = []
    for fmt, v in d["formats"].items():
        small, big = v["runs"][0], v["runs"][-1]
        rows.append(
            [
                fmt,
                f"{small['texts']:,} → {big['texts']:,}",
                f"{num(small['output_mib'], 0)} → {num(big['output_mib'], 0)}",
                num(small["peak_rss_mib"], 0),
                num(big["peak_rss_mib"], 0),
                percent(v["rss_growth"]),
            ]
        )
    note = f"\n*Note recorded in the file:* {d['note']}\n" if d.get("note") else ""
    head = f"**`{result.name}`**: {d['level']} level, layers `{d['layers']}`\n\n"
    return (
        head
        + table(
            ["format", "texts", "output MiB", "peak RSS MiB (1x)", "peak RSS MiB (10x)", "growth"],
            rows,
        )
        + note
        + "\n"
        + result.source()
    )


def serve_tables(serve: Result, single: Result, soaks: list[Result]) -> str:
    parts = []
    if serve.present:
        d = serve.data
        parts.append(
            f"{d['texts']:,} texts, {num(d['mean_texts_per_request'], 1)} per request on average. "
            f"The library's own offline throughput on the same texts: "
            f"{num(d['offline']['last']['texts_per_s'], 1)} texts/s (last layer), "
            f"{num(d['offline']['all']['texts_per_s'], 1)} texts/s (all layers).\n\n"
        )
        works = {
            "last": "last layer (OpenAI endpoint)",
            "all-base64": "all layers, base64",
            "all-float": "all layers, JSON floats",
            "all-npy": "all layers, .npy",
            "infinity": "last layer (its /embeddings)",
        }
        rows = []
        for server, s in d["servers"].items():
            for key, r in s["rows"].items():
                work, _, clients = key.partition("@")
                if key == "open":
                    work, clients = (
                        "last layer, open loop",
                        f"{num(d['open_loop_texts_per_s'], 1)} texts/s offered",
                    )
                rows.append(
                    [
                        server,
                        works.get(work, work),
                        clients,
                        num(r["texts_per_s"], 1),
                        num(r["tokens_per_s"], 0),
                        num(r["p50_s"]),
                        num(r["p99_s"]),
                        str(r["failed"]),
                        num(r["server_rss_mb"], 0),
                    ]
                )
        parts.append(
            table(
                [
                    "server",
                    "work",
                    "clients",
                    "texts/s",
                    "tokens/s",
                    "p50 s",
                    "p99 s",
                    "failed",
                    "server RSS MB",
                ],
                rows,
            )
        )
        startups = ", ".join(f"{n} {num(s['startup_s'], 1)} s" for n, s in d["servers"].items())
        parts.append(f"\nStart-up to ready: {startups}.\n\n")
    parts.append(serve.source() + "\n")
    if single.present:
        rows = [
            [k, num(r["texts_per_s"], 1), num(r["p50_s"], 3), num(r["p99_s"], 3), str(r["failed"])]
            for k, r in single.data["rows"].items()
        ]
        parts.append("**One text per request**\n\n")
        parts.append(table(["work@clients", "texts/s", "p50 s", "p99 s", "failed"], rows))
        parts.append(f"\n32 clients / 1 client: {ratio(single.data['batching_32_vs_1'])}.\n\n")
    parts.append(single.source() + "\n")
    rows = []
    for soak in soaks:
        if not soak.present:
            continue
        d = soak.data
        rss = [r for _, r in d["rss_mb_samples"]]
        rows.append(
            [
                f"`{soak.name}`",
                " ".join(d.get("server_args") or []) or "(none)",
                num(d["seconds"] / 60, 0) + " min",
                num(d["row"]["offered_texts_per_s"], 1),
                f"{d['row']['requests']:,}",
                str(d["row"]["failed"]),
                num(d["row"]["p99_s"]),
                f"{num(min(rss), 0)}-{num(max(rss), 0)}",
                percent(soak_trend(d)),
            ]
        )
    if rows:
        parts.append("**Soak**: an open loop at about 70% of capacity\n\n")
        parts.append(
            table(
                [
                    "file",
                    "server options",
                    "length",
                    "texts/s offered",
                    "requests",
                    "failed",
                    "p99 s",
                    "server RSS MB",
                    "RSS trend after minute 1 (linear fit)",
                ],
                rows,
            )
            + "\n"
        )
    for soak in soaks:
        parts.append(soak.source() + "\n")
    return "".join(parts)


def ray_tables(ray: Result, rates: Result) -> str:
    parts = []
    if ray.present:
        d = ray.data
        rows = []
        local = d["results"].get("local", {})
        for name, r in d["results"].items():
            gross = (r["texts_per_s_gross"] / local["texts_per_s_gross"]) if local else None
            diff = r.get("max_abs_diff_vs_local")
            rows.append(
                [
                    name,
                    num(r["texts_per_s_net"], 1),
                    ratio(r.get("net_vs_local")),
                    num(r["texts_per_s_gross"], 1),
                    ratio(gross),
                    num(r["startup_s"], 1),
                    " / ".join(num(w, 1) for w in r.get("walls", [])),
                    "" if diff is None else f"{diff:.1e}",
                ]
            )
        parts.append(f"{d.get('corpus', '')}; {d.get('rounds')} rounds, medians.\n\n")
        parts.append(
            table(
                [
                    "contender",
                    "net texts/s",
                    "net vs local",
                    "whole-process texts/s",
                    "whole process vs local",
                    "start-up s",
                    "walls per round s",
                    "max abs diff vs local",
                ],
                rows,
            )
        )
        parts.append(
            "\n*Net* leaves start-up out (measured on a one-line file and subtracted); "
            "*whole process* is texts over the wall time a user waits.\n\n"
        )
    parts.append(ray.source() + "\n")
    if rates.present:
        plan, tok = rates.data["plan"], rates.data["tokenizer"]
        parts.append(
            table(
                ["what", "rate", "on"],
                [
                    [
                        "the driver's plan (reads every input once)",
                        f"{plan['records_per_s']:,} records/s ({num(plan['mb_per_s'], 1)} MB/s)",
                        f"{plan['records']:,} records, {num(plan['mb'], 1)} MB",
                    ],
                    [
                        "the fast tokenizer, batched",
                        f"{tok['tokens_per_s']:,} tokens/s",
                        f"{tok['texts']:,} texts, {num(tok['tokens_per_text'], 1)} tokens each",
                    ],
                ],
            )
            + "\n"
        )
    parts.append(rates.source())
    return "".join(parts)


def truncate_table(result: Result) -> str:
    if not result.present:
        return result.source()
    d = result.data
    rows = []
    for keep, e in sorted(d.get("keep", {}).items(), key=lambda kv: int(kv[0])):
        rows.append(
            [
                keep,
                num(e.get("size_mb"), 1),
                num(e.get("cut_s"), 1),
                num(dig(e, "st-encode cut.texts_per_s"), 1),
                num(dig(e, "cli full.texts_per_s"), 1),
                num(dig(e, "cli cut.texts_per_s"), 1),
                ""
                if e.get("cli_cut_vs_full_max_abs_diff") is None
                else f"{e['cli_cut_vs_full_max_abs_diff']:.1e}",
            ]
        )
    full = d.get("full", {})
    head = (
        f"Full model: {num(full.get('size_mb'), 1)} MB on disk; sentence-transformers on it: "
        f"{num(dig(full, 'st-encode.texts_per_s'), 1)} texts/s.\n\n"
    )
    return (
        head
        + table(
            [
                "K",
                "size MB",
                "cut s",
                "st-encode on the cut, texts/s",
                "cli --layers K on the full model, texts/s",
                "cli on the cut, texts/s",
                "cut vs full, max abs diff",
            ],
            rows,
        )
        + "\n"
        + result.source()
    )
