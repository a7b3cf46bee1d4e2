"""Turns the ablation JSON lines (benchmarks/ablations.py) into markdown tables and PNG plots.

    python benchmarks/ablation_report.py            # docs/data/ablations*.jsonl -> docs/ablations.md

Reads every line of the given JSONL files, groups them by scale (the recipe: the demo first,
then e.g. the Whisper-initialised `whisper_synth`, whose headings and PNG names carry the recipe
name) and by ablation, and writes the tables
(mean over seeds and half the spread between the seeds) between the markers
`<!-- ablation_report:begin -->` and `<!-- ablation_report:end -->` of the markdown page (the
written reading around them is kept), and one PNG per ablation into the image directory. Each
table states the exact command(s), seeds, commit(s) and machine(s) of its lines. Running it
twice on the same lines gives the same page and plots.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

BEGIN = "<!-- ablation_report:begin -->"
END = "<!-- ablation_report:end -->"

# spec as recorded (parse_sampler's canonical spelling) -> the name in tables and plots
SAMPLER_NAMES = {
    "random(mode=count,temperature=0)": "random",
    "dfm(temperature=1)": "DFM",
    "topk(schedule=linear,temperature=0)": "top-K linear",
    "topk(schedule=cosine,temperature=0)": "top-K cosine",
    "eb(gamma=0.05,proxy=confidence,temperature=0)": "EB (confidence)",
    "eb(gamma=0.05,proxy=entropy,temperature=0)": "EB (entropy)",
    "pbeb(lam=0.2,gamma=0.05,temperature=0)": "PBEB",
    "ar_greedy": "AR greedy",
}
SAMPLER_ORDER = list(SAMPLER_NAMES.values())
# The scale whose sections keep the plain headings and PNG names (the first on the page).
FIRST_SCALE = "demo"
SCALE_TITLES = {"whisper_synth": "Whisper tiny.en, whisper_synth"}


class ReportError(ValueError):
    """Unreadable or missing input lines (the message names the file and line)."""


def read_lines(paths: Iterable[Path]) -> list[dict[str, Any]]:
    lines = []
    for path in paths:
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError as err:
                raise ReportError(f"{path}:{number}: not a JSON line ({err})") from None
            if "ablation" not in line:
                raise ReportError(
                    f"{path}:{number}: no 'ablation' field (not an ablations.py line)"
                )
            lines.append(line)
    return lines


def scale_of(line: dict[str, Any]) -> str:
    """The recipe's name ("demo", "whisper_synth", ...): the lines of one scale."""
    return re.split(r"[\s,]", str(line.get("recipe", "?")), maxsplit=1)[0] or "?"


def heading(title: str, tag: str) -> str:
    return f"## {title}" + (f" ({SCALE_TITLES.get(tag, tag)})" if tag else "")


def png(name: str, tag: str) -> str:
    return f"ablation_{name}{'_' + tag if tag else ''}.png"


def sampler_name(spec: str | None) -> str:
    return SAMPLER_NAMES.get(spec or "", spec or "?")


def stats(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, half of max - min, count)."""
    arr = np.asarray(values, np.float64)
    return float(arr.mean()), float((arr.max() - arr.min()) / 2), len(arr)


def cell(values: Sequence[float], digits: int = 1, bold: bool = False) -> str:
    if not values:
        return "–"
    mean, half, n = stats(values)
    text = f"{mean:.{digits}f}" + (f" ± {half:.{digits}f}" if n > 1 else "")
    return f"**{text}**" if bold else text


def public_command(command: str) -> str:
    """The recorded command with each workdir's parent directory (and a training root) written
    as RUNS/."""

    def shorten(match: re.Match) -> str:
        return f"{match.group(1)}RUNS/{Path(match.group(2)).name}"

    command = re.sub(r"(--(?:ar_)?workdir=)(\S+)", shorten, command)
    command = re.sub(r"(from_ar=)(\S+)", shorten, command)
    command = re.sub(r"(--train_root=)(\S+)", r"\1RUNS", command)
    return re.sub(r"(--out=)(\S*/)?(\S+)", r"\1docs/data/\3", command)


def provenance(lines: Sequence[dict[str, Any]]) -> str:
    """Commands, seeds (with their workdirs), commits and machines of these lines."""
    commands = sorted({public_command(x.get("command", "?")) for x in lines})
    seeds = sorted({(x.get("seed"), x.get("workdir")) for x in lines}, key=str)
    commits = sorted({x.get("commit", "?") for x in lines})
    machines = sorted({x.get("machine", "?") for x in lines})
    recipes = sorted({x.get("recipe", "?") for x in lines})
    measured = next((x for x in lines if "normalizer" in x), {})
    out = ["```bash", *commands, "```", ""]
    out.append(
        "Seeds (workdir): "
        + ", ".join(f"{s} (`{w}`)" for s, w in seeds)
        + f". Recipe: {'; '.join(recipes)}. Commit: {', '.join(f'`{c}`' for c in commits)}. "
        + f"Machine: {'; '.join(machines)}; {measured.get('dtype', '?')}, "
        + f"normaliser `{measured.get('normalizer', '?')}`."
    )
    return "\n".join(out)


def splits_of(lines: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({x["split"] for x in lines}, key=lambda s: (s != "test", s))


# ----------------------------------------------------------------------------- (a) samplers


def samplers_section(
    lines: list[dict[str, Any]], img: Path, img_rel: str, tag: str = ""
) -> list[str]:
    lines = [x for x in lines if x.get("ablation_group") != "training"]
    if not lines:
        return []
    nfes = sorted({int(x["nfe"]) for x in lines if x.get("nfe") is not None})
    out = [heading("Samplers × NFE", tag), ""]
    out.append(
        "WER % (mean ± half the spread over seeds); `passes` = decoder passes per utterance "
        "at the largest NFE cap (AR: tokens + EOS). Bold: the best sampler at that NFE."
    )
    out.append("")
    for split in splits_of(lines):
        rows = [x for x in lines if x["split"] == split]
        by: dict[tuple[str, int | None], list[float]] = defaultdict(list)
        passes: dict[str, list[float]] = defaultdict(list)
        for x in rows:
            by[sampler_name(x["sampler"]), x.get("nfe")].append(x["wer"])
            if x.get("nfe") in (None, nfes[-1]) and x.get("mean_nfe") is not None:
                passes[sampler_name(x["sampler"])].append(x["mean_nfe"])
        best = {
            nfe: min(
                (np.mean(v), name)
                for (name, n), v in by.items()
                if n == nfe and name != "AR greedy"
            )[1]
            for nfe in nfes
        }
        out.append(f"`{split}`:")
        out.append("")
        out.append("| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " | passes |")
        out.append("|---|" + "---|" * (len(nfes) + 1))
        for name in [n for n in SAMPLER_ORDER if any(k[0] == n for k in by)]:
            if name == "AR greedy":
                values = by[name, None]
                cells = [cell(values)] * len(nfes)
            else:
                cells = [cell(by[name, n], bold=best[n] == name) for n in nfes]
            out.append(f"| {name} | " + " | ".join(cells) + f" | {cell(passes[name])} |")
        out.append("")
        ranking = []
        for n in nfes:
            order = sorted(
                (np.mean(v), name) for (name, k), v in by.items() if k == n and name != "AR greedy"
            )
            ranking.append(f"NFE {n}: " + " < ".join(name for _, name in order))
        out.append("Ranking by mean WER (best first): " + "; ".join(ranking) + ".")
        out.append("")
    plot_samplers(lines, nfes, img / png("samplers", tag))
    out.append(f"![WER vs NFE per sampler]({img_rel}/{png('samplers', tag)})")
    out.append("")
    out.append(provenance(lines))
    out.append("")
    return out


def plot_samplers(lines: list[dict[str, Any]], nfes: list[int], path: Path) -> None:
    plt = _pyplot()
    splits = splits_of(lines)
    fig, axes = plt.subplots(1, len(splits), figsize=(5.2 * len(splits), 3.8), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, split in zip(axes, splits, strict=True):
        rows = [x for x in lines if x["split"] == split]
        for name in SAMPLER_ORDER:
            if name == "AR greedy":
                values = [x["wer"] for x in rows if sampler_name(x["sampler"]) == name]
                if values:
                    ax.axhline(np.mean(values), color="black", ls="--", lw=1, label=name)
                continue
            xs, means, lo, hi = [], [], [], []
            for n in nfes:
                v = [x["wer"] for x in rows if sampler_name(x["sampler"]) == name and x["nfe"] == n]
                if v:
                    xs.append(n)
                    means.append(np.mean(v))
                    lo.append(np.mean(v) - min(v))
                    hi.append(max(v) - np.mean(v))
            if xs:
                ax.errorbar(xs, means, yerr=[lo, hi], marker="o", ms=3, capsize=2, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(nfes, [str(n) for n in nfes])
        ax.set_xlabel("NFE cap")
        ax.set_title(split)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("WER %")
    axes[-1].legend(fontsize=7, loc="upper right")
    _save(fig, path)


# ----------------------------------------------------------------------------- (b) PBEB grid


def grid_section(lines: list[dict[str, Any]], img: Path, img_rel: str, tag: str = "") -> list[str]:
    if not lines:
        return []
    lams = sorted({x["lam"] for x in lines})
    gammas = sorted({x["gamma"] for x in lines})
    nfe = lines[0].get("nfe")
    out = [heading("PBEB λ × γ", tag), ""]
    out.append(
        f"WER % at NFE {nfe} (mean ± half the spread over seeds); rows λ (position bias), "
        "columns γ (entropy budget). Bold: the best cell. `passes` columns: mean decoder passes "
        "per utterance."
    )
    out.append("")
    for split in splits_of(lines):
        rows = [x for x in lines if x["split"] == split]
        wer = {
            (lam, g): [x["wer"] for x in rows if x["lam"] == lam and x["gamma"] == g]
            for lam in lams
            for g in gammas
        }
        passes = {
            (lam, g): [x["mean_nfe"] for x in rows if x["lam"] == lam and x["gamma"] == g]
            for lam in lams
            for g in gammas
        }
        best = min((np.mean(v), k) for k, v in wer.items() if v)[1]
        out.append(f"`{split}`:")
        out.append("")
        header = (
            " | ".join(f"γ {g}" for g in gammas)
            + " | "
            + " | ".join(f"passes γ {g}" for g in gammas)
        )
        out.append(f"| λ | {header} |")
        out.append("|---|" + "---|" * (2 * len(gammas)))
        for lam in lams:
            cells = [cell(wer[lam, g], bold=(lam, g) == best) for g in gammas]
            cells += [cell(passes[lam, g]) for g in gammas]
            out.append(f"| {lam} | " + " | ".join(cells) + " |")
        out.append("")
    plot_grid(lines, lams, gammas, img / png("pbeb_grid", tag))
    out.append(f"![PBEB WER over lambda and gamma]({img_rel}/{png('pbeb_grid', tag)})")
    out.append("")
    out.append(provenance(lines))
    out.append("")
    return out


def plot_grid(
    lines: list[dict[str, Any]], lams: list[float], gammas: list[float], path: Path
) -> None:
    plt = _pyplot()
    splits = splits_of(lines)
    fig, axes = plt.subplots(1, len(splits), figsize=(4.4 * len(splits), 3.6))
    axes = np.atleast_1d(axes)
    for ax, split in zip(axes, splits, strict=True):
        rows = [x for x in lines if x["split"] == split]
        grid = np.full((len(lams), len(gammas)), np.nan)
        for i, lam in enumerate(lams):
            for j, g in enumerate(gammas):
                v = [x["wer"] for x in rows if x["lam"] == lam and x["gamma"] == g]
                if v:
                    grid[i, j] = np.mean(v)
        image = ax.imshow(grid, cmap="viridis_r", aspect="auto")
        for i in range(len(lams)):
            for j in range(len(gammas)):
                if np.isfinite(grid[i, j]):
                    ax.text(
                        j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=7, color="w"
                    )
        ax.set_xticks(range(len(gammas)), [str(g) for g in gammas])
        ax.set_yticks(range(len(lams)), [str(lam) for lam in lams])
        ax.set_xlabel("γ (entropy budget)")
        ax.set_ylabel("λ (position bias)")
        ax.set_title(f"{split}: WER %")
        fig.colorbar(image, ax=ax, shrink=0.8)
    _save(fig, path)


# ----------------------------------------------------------------------------- (c) canvas


def canvas_section(lines: list[dict[str, Any]], tag: str = "") -> list[str]:
    if not lines:
        return []
    out = [heading("Canvas length", tag), ""]
    skipped = sorted({x["skipped_reason"] for x in lines if x.get("skipped_reason")})
    measured = [x for x in lines if not x.get("skipped_reason")]
    out.append(
        "PBEB (λ 0.2, γ 0.05). `recipe`: the canvas the model was trained with; `adaptive`: "
        "ceil(seconds × 10 tokens/s) + 1 slots per utterance, the rest EOS from the start. "
        "WER %, mean ± half the spread over seeds; RTFx of one padded batch per split."
    )
    out.append("")
    out.append("| split | canvas | slots (at most) | NFE | WER % | passes | RTFx |")
    out.append("|---|---|---|---|---|---|---|")
    keys = sorted(
        {(x["split"], x["variant"], x["canvas"], x["nfe"]) for x in measured},
        key=lambda k: (k[0] != "test", k[0], k[1] != "recipe", k[1], k[3]),
    )
    for split, variant, canvas, nfe in keys:
        rows = [
            x
            for x in measured
            if (x["split"], x["variant"], x["canvas"], x["nfe"]) == (split, variant, canvas, nfe)
        ]
        out.append(
            f"| {split} | {variant} | {canvas} | {nfe} | {cell([x['wer'] for x in rows])} | "
            f"{cell([x['mean_nfe'] for x in rows], 2)} | {cell([x['rtfx'] for x in rows], 0)} |"
        )
    out.append("")
    for reason in skipped:
        out.append(f"Not run: {reason}.")
        out.append("")
    out.append(provenance(lines))
    out.append("")
    return out


# ----------------------------------------------------------------------------- (d) length bins


def length_section(
    lines: list[dict[str, Any]], img: Path, img_rel: str, tag: str = ""
) -> list[str]:
    if not lines:
        return []
    bins = sorted({x["bin"] for x in lines})
    names = [n for n in SAMPLER_ORDER if any(sampler_name(x["sampler"]) == n for x in lines)]
    out = [heading("RTFx and decoder passes vs transcript length", tag), ""]
    out.append(
        "Each split's utterances sorted by reference length (tokens) and cut into equal bins; "
        "every bin is one batch of the same padded shape, so the encoder's cost per utterance "
        "is the same in every bin. Mean over seeds and splits (± half the spread); NFE cap "
        f"{lines[0].get('nfe') or 32} for the MDM samplers; the fastest of "
        f"{lines[0].get('repeats', 1)} timed passes."
    )
    out.append("")
    header = (
        " | ".join(f"{n} RTFx" for n in names) + " | " + " | ".join(f"{n} passes" for n in names)
    )
    out.append(f"| bin | tokens (mean) | {header} | PBEB / AR RTFx |")
    out.append("|---|---|" + "---|" * (2 * len(names) + 1))
    for b in bins:
        rows = [x for x in lines if x["bin"] == b]
        tokens = [x["tokens_mean"] for x in rows if sampler_name(x["sampler"]) == names[0]]
        rtfx = {n: [x["rtfx"] for x in rows if sampler_name(x["sampler"]) == n] for n in names}
        passes = {
            n: [x["mean_nfe"] for x in rows if sampler_name(x["sampler"]) == n] for n in names
        }
        ratio = []
        for x in rows:
            if sampler_name(x["sampler"]) == "PBEB":
                ar = [
                    y["rtfx"]
                    for y in rows
                    if sampler_name(y["sampler"]) == "AR greedy"
                    and (y["workdir"], y["split"]) == (x["workdir"], x["split"])
                ]
                if ar:
                    ratio.append(x["rtfx"] / ar[0])
        lo = min(x["tokens_min"] for x in rows)
        hi = max(x["tokens_max"] for x in rows)
        out.append(
            f"| {b} ({lo}-{hi}) | {np.mean(tokens):.1f} | "
            + " | ".join(cell(rtfx[n], 0) for n in names)
            + " | "
            + " | ".join(cell(passes[n], 1) for n in names)
            + f" | {cell(ratio, 2)} |"
        )
    out.append("")
    plot_length(lines, bins, names, img / png("length", tag))
    out.append(f"![RTFx and passes vs transcript length]({img_rel}/{png('length', tag)})")
    out.append("")
    out.append(provenance(lines))
    out.append("")
    return out


def plot_length(lines: list[dict[str, Any]], bins: list[int], names: list[str], path: Path) -> None:
    plt = _pyplot()
    fig, (ax_rtfx, ax_pass) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name in names:
        xs, rtfx, passes = [], [], []
        for b in bins:
            rows = [x for x in lines if x["bin"] == b and sampler_name(x["sampler"]) == name]
            if rows:
                xs.append(np.mean([x["tokens_mean"] for x in rows]))
                rtfx.append(np.mean([x["rtfx"] for x in rows]))
                passes.append(np.mean([x["mean_nfe"] for x in rows]))
        ax_rtfx.plot(xs, rtfx, marker="o", label=name)
        ax_pass.plot(xs, passes, marker="o", label=name)
    ax_rtfx.set_ylabel("RTFx")
    ax_pass.set_ylabel("decoder passes / utterance")
    for ax in (ax_rtfx, ax_pass):
        ax.set_xlabel("reference length (tokens, bin mean)")
        ax.grid(alpha=0.3)
    ax_pass.legend(fontsize=8)
    _save(fig, path)


# ----------------------------------------------------------------------------- (e) training


def training_section(
    lines: list[dict[str, Any]], img: Path, img_rel: str, tag: str = ""
) -> list[str]:
    if not lines:
        return []
    variants = sorted({x["train_variant"] for x in lines})
    nfes = sorted({int(x["nfe"]) for x in lines if x.get("nfe") is not None})
    out = [heading("Training objective × NFE", tag), ""]
    ar_runs = sorted({x["ar_workdir"] for x in lines if x.get("ar_workdir")})
    ar_text = (
        f"the AR run every variant started from (`{'`, `'.join(ar_runs)}`)"
        if ar_runs
        else "the same checkpoints (their AR decoder trains beside the MDM decoder)"
    )
    out.append(
        "PBEB WER % per training variant at each NFE cap (mean ± half the spread over seeds), "
        f"PBEB's decoder passes per utterance at the largest cap, and the AR greedy WER of {ar_text}."
    )
    out.append("")
    top = max(nfes) if nfes else None
    for split in splits_of(lines):
        rows = [x for x in lines if x["split"] == split]
        out.append(f"`{split}`:")
        out.append("")
        out.append(
            "| variant | seeds | steps | "
            + " | ".join(f"NFE {n}" for n in nfes)
            + f" | passes (NFE {top}) | AR greedy |"
        )
        out.append("|---|---|---|" + "---|" * (len(nfes) + 2))
        for variant in variants:
            mine = [x for x in rows if x["train_variant"] == variant]
            steps = sorted({str(x.get("train_steps")) for x in mine})
            seeds = sorted({int(x["seed"]) for x in mine})
            cells = [cell([x["wer"] for x in mine if x["nfe"] == n]) for n in nfes]
            cells.append(cell([x["mean_nfe"] for x in mine if x["nfe"] == top]))
            cells.append(cell([x["wer"] for x in mine if x.get("nfe") is None]))
            out.append(
                f"| {variant} | {', '.join(map(str, seeds))} | {', '.join(steps)} | "
                + " | ".join(cells)
                + " |"
            )
        out.append("")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for variant in variants:
        means = [
            np.mean(
                [x["wer"] for x in lines if x["train_variant"] == variant and x["nfe"] == n]
                or [np.nan]
            )
            for n in nfes
        ]
        ax.plot(nfes, means, marker="o", label=variant)
    ax.set_xscale("log", base=2)
    ax.set_xticks(nfes, [str(n) for n in nfes])
    ax.set_xlabel("NFE cap")
    ax.set_ylabel("WER % (mean over splits and seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, img / png("training", tag))
    out.append(f"![WER vs NFE per training objective]({img_rel}/{png('training', tag)})")
    out.append("")
    train_commands = sorted({x.get("train_command", "?") for x in lines})
    out.append("Training commands:")
    out.append("")
    out.append("```bash")
    out.extend(public_command(c) for c in train_commands)
    out.append("```")
    out.append("")
    out.append(provenance(lines))
    out.append("")
    return out


# ----------------------------------------------------------------------------- page


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 8, "svg.hashsalt": "ablations"})
    return plt


def _save(fig: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    # No timestamp in the PNG metadata: the same lines give byte-identical images.
    fig.savefig(path, dpi=90, metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)


def generate(lines: list[dict[str, Any]], img: Path, img_rel: str) -> str:
    """The generated markdown (tables, image links, provenance) for these lines."""
    parts = [
        "<!-- Generated by `python benchmarks/ablation_report.py` from docs/data/ablations*.jsonl;"
        " do not edit by hand. -->",
        "",
    ]
    scales = sorted({scale_of(x) for x in lines}, key=lambda s: (s != FIRST_SCALE, s))
    for scale in scales:
        tag = "" if scale == FIRST_SCALE else scale
        by = defaultdict(list)
        for x in lines:
            if scale_of(x) == scale:
                group = "training" if x.get("ablation_group") == "training" else x["ablation"]
                by[group].append(x)
        parts += samplers_section(by["samplers"], img, img_rel, tag)
        parts += grid_section(by["pbeb_grid"], img, img_rel, tag)
        parts += canvas_section(by["canvas"], tag)
        parts += length_section(by["length_bins"], img, img_rel, tag)
        parts += training_section(by["training"], img, img_rel, tag)
    return "\n".join(parts).rstrip() + "\n"


def write_page(page: Path, generated: str) -> None:
    """Replaces the text between the markers (or appends a marked section)."""
    text = page.read_text(encoding="utf-8") if page.exists() else "# Ablations\n\n"
    block = f"{BEGIN}\n{generated}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    page.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "inputs", nargs="*", help="JSONL files (default: docs/data/ablations*.jsonl)"
    )
    parser.add_argument("--page", default="docs/ablations.md")
    parser.add_argument("--img", default="docs/img", help="PNG directory")
    args = parser.parse_args(argv)
    inputs = [Path(p) for p in args.inputs] or sorted(Path("docs/data").glob("ablations*.jsonl"))
    if not inputs:
        print(
            "error: no input: pass JSONL files written by benchmarks/ablations.py", file=sys.stderr
        )
        return 2
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        print(f"error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        lines = read_lines(inputs)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    page, img = Path(args.page), Path(args.img)
    try:
        img_rel = str(img.resolve().relative_to(page.parent.resolve()))
    except ValueError:
        img_rel = str(img.resolve())
    write_page(page, generate(lines, img, img_rel))
    print(f"{len(lines)} lines -> {page}, plots in {img}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
