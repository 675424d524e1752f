"""Tables of the runs that compare: start-up alone, one bench on the code before and after a
change, and the server under settings other than the default run's."""

from __future__ import annotations

from md_format import num, ratio, table
from result_files import Result, dig

STARTUP_NAMES = {
    "extract": "`bertlayers extract` (one line)",
    "extract-no-cache": "the same, model cache off (`BERTLAYERS_CACHE=off`)",
    "extract-transformers": "the same, cache off, transformers' model (`BERTLAYERS_FORWARD`)",
    "info": "`bertlayers info`",
    "layers-99": "`extract --layers 99` (refused before the weights load)",
    "st-encode": "sentence-transformers script (one line)",
}


def startup_table(result: Result) -> str:
    """Whole processes on one line of text, medians: each against the sentence-transformers
    script on the same model and line."""
    if not result.present:
        return result.source() + "\n"
    rows = [
        [STARTUP_NAMES.get(name, name), num(r["median_s"]), ratio(r["vs_st_encode"])]
        for name, r in result.data["startup"].items()
    ]
    return (
        table(["command", "median s", "/ sentence-transformers"], rows)
        + "\n"
        + (result.source() + "\n")
    )


def before_after_table(
    cli_before: Result, cli_after: Result, serve_before: Result, serve_after: Result
) -> str:
    """The same bench scripts on the code before the engine was taken apart and after: the CLI
    on short texts (net of start-up) and the server at 32 clients, each run with its peers."""
    short = ("corpora", "short")
    measures = [
        ("CLI, short texts: `bertlayers extract` net s", cli_before, cli_after,
         (*short, "contenders", "cli", "net_s"), 2),
        ("CLI, short texts: library net s", cli_before, cli_after,
         (*short, "contenders", "library", "net_s"), 2),
        ("CLI, short texts: sentence-transformers net s / cli net s", cli_before, cli_after,
         (*short, "ratios", "st-encode / cli"), 2),
        ("server, 32 clients, last layer: texts/s", serve_before, serve_after,
         ("servers", "bertlayers", "rows", "last@32", "texts_per_s"), 1),
        ("server, 32 clients, last layer: p99 s", serve_before, serve_after,
         ("servers", "bertlayers", "rows", "last@32", "p99_s"), 2),
        ("server, 32 clients, all layers (base64): texts/s", serve_before, serve_after,
         ("servers", "bertlayers", "rows", "all-base64@32", "texts_per_s"), 1),
        ("infinity in the same run, 32 clients: texts/s", serve_before, serve_after,
         ("servers", "infinity", "rows", "infinity@32", "texts_per_s"), 1),
    ]  # fmt: skip
    rows = []
    for label, before_file, after_file, keys, digits in measures:
        before, after = _value(before_file, keys), _value(after_file, keys)
        change = ratio(after / before) if before and after is not None else "-"
        rows.append([label, num(before, digits), num(after, digits), change])
    sources = "\n\n".join(r.source() for r in (cli_before, cli_after, serve_before, serve_after))
    return table(["measure", "before", "after", "after / before"], rows) + "\n" + sources + "\n"


def serve_variant_table(results: list[Result]) -> str:
    """Runs of bench/serve.py with other settings: each row its setting, ours against the
    offline library and against infinity where it ran."""
    rows = []
    for result in results:
        if not result.present:
            continue
        d = result.data
        ours = d["servers"]["bertlayers"]["rows"]
        peer = dig(d, "servers.infinity.rows") or {}
        setting = (
            f"{d.get('texts_per_request', '1-16, seeded')} texts per request; "
            f"server options: {' '.join(d.get('server_args') or []) or '(defaults)'}"
        )
        for key, row in ours.items():
            work, _, clients = key.partition("@")
            if work not in ("last", "all-base64") or not clients:
                continue
            offline = dig(d, f"offline.{'last' if work == 'last' else 'all'}.texts_per_s")
            other = peer.get(f"infinity@{clients}") if work == "last" else None
            rows.append(
                [
                    setting,
                    "last layer" if work == "last" else "all layers, base64",
                    clients,
                    num(row["texts_per_s"], 1),
                    num(row["p99_s"]),
                    ratio(row["texts_per_s"] / offline if offline else None),
                    ratio(row["texts_per_s"] / other["texts_per_s"] if other else None),
                    num(other["p99_s"]) if other else "-",
                ]
            )
    header = ["setting", "work", "clients", "texts/s", "p99 s", "/ offline", "/ infinity",
              "infinity p99 s"]  # fmt: skip
    sources = "\n\n".join(r.source() for r in results)
    return table(header, rows) + "\n" + sources + "\n"


def _value(result: Result, keys: tuple[str, ...]) -> float | None:
    data = result.data if result.present else None
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return float(data) if isinstance(data, int | float) else None


def attention_table(result: Result) -> str:
    """Maps per second against the bertviz user's loop, and the statistics' peak memory on 1x
    and 10x a corpus."""
    if not result.present:
        return result.source() + "\n"
    d = result.data
    rows = [
        [
            f"{r['tokens_per_text']} tokens ({r['texts']} texts)",
            num(r["contenders"]["loop"]["texts_per_s"], 1),
            num(r["contenders"]["bertlayers"]["texts_per_s"], 1),
            ratio(r["speedup"]),
            f"{r['max_abs_diff']:.1e}",
        ]
        for r in d["speed"].values()
    ]
    parts = [
        table(["texts", "loop texts/s", "bertlayers texts/s", "speed-up", "max abs diff"], rows)
    ]
    memory = d.get("stats_memory") or {}
    runs = [(k, v) for k, v in memory.items() if isinstance(v, dict)]
    if runs:
        parts.append(
            table(
                ["`attention --stats`", "texts", "wall s", "peak RSS MiB"],
                [
                    [k, num(v["texts"]), num(v["wall_s"]), num(v["peak_rss_mib"], 0)]
                    for k, v in runs
                ],
            )
            + f"\nPeak RSS growth from 1x to the largest: {num(100 * memory['growth'], 1)}%.\n"
        )
    return "\n".join(parts) + "\n" + result.source() + "\n"


def attention_view_table(result: Result) -> str:
    """The standalone page in headless Chromium: medians per text length."""
    if not result.present:
        return result.source() + "\n"
    rows = [
        [
            tokens,
            num(r["html_bytes"] / 1e6, 2),
            num(r["build_s"], 2),
            num(r["first_draw_ms"], 0),
            num(r["layer_switch_ms"], 0),
            num(r["model_view_ms"], 0),
        ]
        for tokens, r in result.data["results"].items()
    ]
    header = ["tokens", "page MB", "build s", "first draw ms", "layer switch ms",
              "model view ms"]  # fmt: skip
    browser = f"Chromium {result.data['chromium']}, headless. " if "chromium" in result.data else ""
    return table(header, rows) + "\n" + browser + result.source() + "\n"
