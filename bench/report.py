"""Rewrite the figures table in BENCHMARKS.md and the plots from bench/results/*.json.

The table sits between two marker comments; everything else in BENCHMARKS.md is prose and stays.

    python -m bench.report
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, load

DOC = ROOT / "BENCHMARKS.md"
START, END = "<!-- figures:start (bench/report.py rewrites this table) -->", "<!-- figures:end -->"
ORDER = [("pipeline", "1"), ("bitrate", "2"), ("throughput", "3"), ("long_audio", "4"), ("memory", "5"),
         ("history", "6"), ("startup", "7"), ("answer_cache", "8"), ("replicas", "9"), ("recognizer", "10"),
         ("note_cpu", "12"), ("reencode", "13"), ("idle_memory", "14")]


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×"


def _met(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "**no**")


def table() -> str:
    lines = ["| # | what | measured | baseline | ratio | target | met? |",
             "|---|---|---|---|---|---|---|"]
    whens, loads, machine = [], [], None
    for name, number in ORDER:
        data = load(name)
        if data is None:
            lines.append(f"| {number} | ({name}: not run yet) | | | | | |")
            continue
        whens.append(data["when"])
        machine = machine or data.get("machine")
        loads.append((name, (data.get("machine") or {}).get("loadavg_at_save", [None])[0]))
        prototypes = [load(p.stem) for p in sorted(RESULTS.glob(f"{name}-*.json"))]
        for r in data["rows"] + [r for p in prototypes if p for r in p["rows"]]:
            lines.append(f"| {number} | {r['what']} | {r['measured']} | {r['baseline']} | {_ratio(r['ratio'])} "
                         f"| {r['target']} | {_met(r['met'])} |")
    if machine:
        lines += ["", f"Measured {min(whens)} – {max(whens)} on {machine.get('cpus')} × {machine.get('cpu')}, "
                      f"Python {machine.get('python')}, "
                      f"{' '.join(machine.get('ffmpeg_version', 'ffmpeg').split()[:3])} "
                      f"(`{machine.get('ffmpeg')}`). One-minute load average when each benchmark finished: "
                      + ", ".join(f"{name} {load}" for name, load in loads if load is not None)
                      + " (the machine is shared; anything above ~2 means other work competed for the cores)."]
    return "\n".join(lines)


def write_table() -> None:
    text = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    block = f"{START}\n{table()}\n{END}"
    if START in text and END in text:
        text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text += "\n" + block + "\n"
    DOC.write_text(text)


def plots() -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    tp = load("throughput")
    if tp:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        colours = ("tab:blue", "tab:orange", "tab:green")
        for latency, colour in zip(sorted({c["latency"] for c in tp["cases"]}), colours, strict=False):
            cs = sorted((c for c in tp["cases"] if c["latency"] == latency), key=lambda c: c["n"])
            ns = [c["n"] for c in cs]
            ax.plot(ns, [c["wall_s"] for c in cs], "o-", color=colour, label=f"earshot, L = {latency:g} s")
            ax.plot(ns, [c["ideal_s"] for c in cs], "--", color=colour, alpha=0.6,
                    label=f"ideal L×⌈N/{tp['limit']}⌉, L = {latency:g} s")
            ax.plot(ns, [c["ideal_s"] * 1.2 for c in cs], ":", color=colour, alpha=0.4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("chats sending a 5 s voice note at once (N)")
        ax.set_ylabel("wall time until every answer is sent (s)")
        ax.set_title("Throughput through the Telegram bot (dotted: 1.2× ideal)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = ROOT / "bench" / "throughput.png"
        fig.savefig(path)
        plt.close(fig)
        made.append(path)
    pl = load("pipeline")
    if pl:
        cases = pl["cases"]
        fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
        x = range(len(cases))
        width = 0.38
        ax.bar([i - width / 2 for i in x], [c["earshot_s"] * 1000 for c in cases], width,
               label="earshot: prepare + request body")
        ax.bar([i + width / 2 for i in x], [c["ffmpeg_s"] * 1000 for c in cases], width,
               label="plain ffmpeg -i in.ogg -ac 1 -ar 16000 out.mp3")
        for i, c in zip(x, cases, strict=True):
            ax.annotate(f"{c['ratio']:.2f}×", (i, max(c["earshot_s"], c["ffmpeg_s"]) * 1000), ha="center",
                        va="bottom", fontsize=9)
        ax.set_xticks(list(x), [f"{c['label']} Opus note" for c in cases])
        ax.set_yscale("log")
        ax.set_ylabel("median wall time (ms)")
        ax.set_title("Pipeline overhead per voice note")
        ax.legend(fontsize=8, loc="upper left")
        ax.margins(y=0.25)
        fig.tight_layout()
        path = ROOT / "bench" / "pipeline.png"
        fig.savefig(path)
        plt.close(fig)
        made.append(path)
    return made


def main(argv: list[str] | None = None) -> dict[str, Any]:
    write_table()
    made = plots()
    print(f"rewrote the table in {DOC.relative_to(ROOT)}" + (f" and {', '.join(str(p.relative_to(ROOT)) for p in made)}"
                                                              if made else ""))
    return {}


if __name__ == "__main__":
    main()
