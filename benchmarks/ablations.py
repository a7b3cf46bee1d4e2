"""The paper's ablations on trained checkpoints, recorded as eval JSON lines.

For one or more trained workdirs (several workdirs of one recipe = several seeds) and their
held-out test splits, this runs and appends to a JSON-lines file (one eval result a line, the
eval contract of `mdm_asr_jax.eval.evaluate` plus where it came from):

  a  samplers: random, DFM, top-K (linear, cosine), EB (confidence and entropy order), PBEB, at
     NFE 4, 8, 16, 32; AR greedy as the reference (MDM-ASR paper, Fig. 3);
  b  PBEB lambda in {0, 0.1, 0.2, 0.5, 1} x gamma in {0.01, 0.05, 0.1, 0.5} at NFE 32;
  c  canvas: the paper's 256 slots, the recipe's canvas, adaptive (sized from the audio); a
     canvas the decoder cannot hold (learned positions) is recorded as a `skipped` line;
  d  RTFx and decoder passes per transcript-length bin for PBEB, top-K and AR greedy (Fig. 2);
  e  training ablations (`--train`): ISCT K=2 vs plain MDM (K=1) at equal steps, and K=3 with the
     later-time options (independent / same / lower) — launches `mdm-asr-train` runs with config
     overrides, then evaluates each at NFE 2, 4, 8, 16, 32 (Fig. 4).

The paper's two-run recipe (an AR run, then an MDM run started from it with
`configs/<recipe>.py:mdm,from_ar=AR_WORKDIR`) leaves the MDM workdir without an AR decoder and
without a data/ folder: its test manifests are found through its config (`data.<split>_manifest`)
and `--ar_workdir=AR_WORKDIR` (one per `--workdir`, same order) supplies the AR greedy lines,
decoded on the same padded batch and recorded with the MDM run's recipe and seed.

Compile cost dominates on a small CPU, so one model is loaded per workdir and every split is
decoded as ONE batch padded to the same shape (all splits, all workdirs): the jitted decode is
compiled once per (sampler, NFE, canvas) and reused by every seed and split. RTFx therefore
times one padded batch (the encoder runs on the longest frame bucket for every utterance); it is
a side-by-side ratio between decoders, not the bucketed eval's number. The length bins of (d)
are equal-sized batches of the same padded shape, so the encoder cost per utterance is the same
in every bin and the differences come from the decoders.

Each line carries `ablation`, `recipe`, `seed`, `workdir`, `split`, `commit`, `machine` and the
exact `command`. Workdirs are only read (the evaluation writes nothing into them).

  python benchmarks/ablations.py --workdir=RUN_SEED0 --workdir=RUN_SEED1 \
      --splits=test,test_accent --parts=a,b,c,d --out=docs/data/ablations.jsonl

`benchmarks/ablation_report.py` turns the lines into tables and plots (docs/ablations.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SAMPLERS_A = (
    "random",
    "dfm",
    "topk(schedule=linear)",
    "topk(schedule=cosine)",
    "eb(gamma=0.05,proxy=confidence)",
    "eb(gamma=0.05,proxy=entropy)",
    "pbeb(lam=0.2,gamma=0.05)",
)
NFES_A = (4, 8, 16, 32)
LAMS_B = (0.0, 0.1, 0.2, 0.5, 1.0)
GAMMAS_B = (0.01, 0.05, 0.1, 0.5)
NFE_B = 32
PAPER_CANVAS = 256
CANVASES = ("paper_256", "recipe", "adaptive")
SAMPLERS_D = ("pbeb(lam=0.2,gamma=0.05)", "topk(schedule=linear)", "ar_greedy")
NFE_D = 32
NFES_E = (2, 4, 8, 16, 32)
# Training ablations: name -> config overrides (on top of the recipe's config file).
TRAIN_VARIANTS = {
    "isct_k2": ("--config.objective.isct_steps=2",),
    "plain_mdm": ("--config.objective.isct_steps=1",),
    "isct_k3_independent": (
        "--config.objective.isct_steps=3",
        "--config.objective.later_times=independent",
    ),
    "isct_k3_same": ("--config.objective.isct_steps=3", "--config.objective.later_times=same"),
    "isct_k3_lower": ("--config.objective.isct_steps=3", "--config.objective.later_times=lower"),
}
PARTS = ("a", "b", "c", "d")


class AblationError(ValueError):
    """Bad arguments or a workdir this script cannot evaluate (the message names the fix)."""


# ----------------------------------------------------------------------------- provenance


def git_commit() -> str:
    """The commit of this checkout, suffixed "+dirty" when tracked files differ from it."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def machine_line() -> str:
    """One line: CPU / accelerator kind, cores, Python and JAX versions, dtype policy."""
    import jax

    device = jax.local_devices()[0]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    kind = device.device_kind if device.platform != "cpu" else f"{platform.machine()} CPU"
    return (
        f"{kind} ({device.platform}, {jax.local_device_count()} device), {cores} cores, "
        f"JAX {jax.__version__}, Python {platform.python_version()}"
    )


def command_line(argv: Sequence[str]) -> str:
    """The command as run, with the script path relative to the repository."""
    script = "benchmarks/ablations.py"
    return "python " + " ".join([script, *(shlex.quote(a) for a in argv)])


# ----------------------------------------------------------------------------- workdirs


@dataclasses.dataclass
class Run:
    """One trained workdir: its checkpoint, recipe, seed and test manifests."""

    workdir: Path
    checkpoint: Any
    recipe: str
    seed: int | None
    manifests: dict[str, Path]
    ar: Any = None  # the AR baseline's checkpoint when this run's model has no AR decoder
    ar_workdir: Path | None = None


def find_manifest(workdir: Path, split: str, info: dict[str, Any] | None = None) -> Path:
    """WORKDIR/data/<recipe>/<split>.jsonl (the layout `mdm-asr-train` writes), else the
    training config's `data.<split>_manifest` (an MDM run started from an AR run reads the AR
    workdir's data)."""
    found = sorted(workdir.glob(f"data/*/{split}.jsonl"))
    if found:
        return found[0]
    config = (info or {}).get("config", {}) if isinstance(info, dict) else {}
    recorded = config.get("data", {}).get(f"{split}_manifest") or ""
    if recorded and Path(recorded).exists():
        return Path(recorded)
    raise AblationError(
        f"no {split}.jsonl under {workdir}/data/*/ and no existing data.{split}_manifest in its "
        f"config: pass a training workdir whose recipe wrote that split, or choose --splits from "
        f"the files there"
    )


def recipe_of(workdir: Path, info: dict[str, Any]) -> tuple[str, int | None]:
    """(recipe name with its version and the objective's schedule, seed) of a workdir."""
    config = info.get("config", {}) if isinstance(info, dict) else {}
    recipe_file = sorted(workdir.glob("data/*/recipe.json"))
    recipe: dict[str, Any] = json.loads(recipe_file[0].read_text()) if recipe_file else {}
    name = str(recipe.get("recipe", config.get("recipe", "unknown")))
    if "version" in recipe:
        name += f" v{recipe['version']}"
    objective = config.get("objective", {})
    if objective.get("mdm_from_ar"):
        name += f", AR->MDM at step {objective.get('mdm_start_step')}"
    steps = config.get("train", {}).get("num_steps")
    if steps:
        name += f", {steps} steps"
    if "isct_steps" in objective:
        name += f", ISCT K={objective['isct_steps']}"
        if int(objective["isct_steps"]) > 2:
            name += f" ({objective.get('later_times')})"
    seed = config.get("seed", recipe.get("seed"))
    return name, None if seed is None else int(seed)


def _load_workdir(path: Path) -> Any:
    from mdm_asr_jax.checkpoint import load_checkpoint

    if not (path / "config.json").exists():
        raise AblationError(
            f"{path} has no config.json: pass a training workdir (mdm-asr-train --workdir=...)"
        )
    return load_checkpoint(path)


def open_run(
    workdir: str | os.PathLike, splits: Sequence[str], ar_workdir: str | os.PathLike | None = None
) -> Run:
    path = Path(workdir)
    checkpoint = _load_workdir(path)
    if checkpoint.model_config.mdm_decoder is None:
        raise AblationError(
            f"{path} has no MDM decoder: pass the MDM run as --workdir and its AR run as "
            f"--ar_workdir"
        )
    manifests = {split: find_manifest(path, split, checkpoint.info) for split in splits}
    recipe, seed = recipe_of(path, checkpoint.info)
    run = Run(path, checkpoint, recipe, seed, manifests)
    if ar_workdir is not None:
        ar_path = Path(ar_workdir)
        ar = _load_workdir(ar_path)
        if ar.model_config.ar_decoder is None:
            raise AblationError(f"--ar_workdir={ar_path}: its model has no AR decoder")
        if ar.feature_config != checkpoint.feature_config:
            raise AblationError(
                f"--ar_workdir={ar_path}: its features differ from {path}'s, so the two cannot "
                f"decode the same batch; pass the AR run this MDM run was started from"
            )
        run.ar, run.ar_workdir = ar, ar_path
    return run


def ar_source(run: Run) -> tuple[Any, dict[str, Any]] | None:
    """(checkpoint whose AR decoder gives the AR greedy lines, extra fields) or None."""
    if run.checkpoint.model_config.ar_decoder is not None:
        return run.checkpoint, {}
    if run.ar is not None:
        return run.ar, {"ar_workdir": run.ar_workdir.name}
    return None


# ----------------------------------------------------------------------------- batches

BATCH_KEYS = ("features", "feature_mask", "example_mask", "seconds", "index")


def merge_batches(batches: Sequence[dict[str, Any]], rows: int, frames: int) -> dict[str, Any]:
    """Host batches -> one batch of `rows` rows and `frames` frames (padding rows masked)."""

    def padded(x: np.ndarray) -> np.ndarray:  # [N,T,...] -> [N,frames,...]
        width = [(0, 0), (0, frames - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
        return np.pad(x, width)

    features = np.concatenate([padded(b["features"][b["example_mask"]]) for b in batches])
    mask = np.concatenate([padded(b["feature_mask"][b["example_mask"]]) for b in batches])
    seconds = np.concatenate([b["seconds"][b["example_mask"]] for b in batches])
    index = np.concatenate([b["index"][b["example_mask"]] for b in batches])
    return pad_rows(features, mask, seconds, index, rows, frames)


def pad_rows(
    features: np.ndarray,
    mask: np.ndarray,
    seconds: np.ndarray,
    index: np.ndarray,
    rows: int,
    frames: int,
) -> dict[str, Any]:
    n, t, m = features.shape
    if n > rows or t > frames:
        raise AblationError(f"cannot pad {n} rows x {t} frames into {rows} x {frames}")
    out_features = np.zeros((rows, frames, m), features.dtype)
    out_features[:n, :t] = features
    out_mask = np.zeros((rows, frames), mask.dtype)
    out_mask[:n, :t] = mask
    example_mask = np.zeros((rows,), bool)
    example_mask[:n] = True
    out_seconds = np.zeros((rows,), np.float32)
    out_seconds[:n] = seconds
    out_index = np.full((rows,), -1, np.int32)
    out_index[:n] = index
    return dict(
        features=out_features,
        feature_mask=out_mask,
        example_mask=example_mask,
        seconds=out_seconds,
        index=out_index,
    )


def every_nth(eval_set: Any, every: int) -> Any:
    """The utterances whose manifest index is a multiple of `every` (a spread-out subset)."""
    batches = []
    for batch in eval_set.batches:
        keep = batch["example_mask"] & (np.asarray(batch["index"]) % every == 0)
        if keep.any():
            batches.append({**batch, "example_mask": keep})
    refs = {i: t for i, t in eval_set.refs.items() if i % every == 0}
    audio = {i: a for i, a in eval_set.audio.items() if i % every == 0}
    return dataclasses.replace(eval_set, batches=batches, refs=refs, audio=audio)


def _pad_to(x: np.ndarray, frames: int) -> np.ndarray:
    """[T,...] -> [frames,...] with zeros."""
    return np.pad(x, [(0, frames - x.shape[0])] + [(0, 0)] * (x.ndim - 1))


def length_bins(eval_set: Any, tokenizer: Any, num_bins: int) -> list[np.ndarray]:
    """Manifest indices sorted by reference length in tokens, cut into `num_bins` equal bins."""
    indices = np.asarray(sorted(eval_set.refs), np.int64)
    lengths = np.asarray([len(tokenizer.encode(eval_set.refs[int(i)])) for i in indices])
    order = np.argsort(lengths, kind="stable")
    return [indices[part] for part in np.array_split(order, num_bins) if len(part)]


# ----------------------------------------------------------------------------- the sweep


class Recorder:
    """Appends result lines (with provenance) to a JSONL file and echoes them to stdout."""

    def __init__(self, out: Path, common: dict[str, Any]):
        self.out, self.common = out, common
        out.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, result: dict[str, Any], **fields: Any) -> dict[str, Any]:
        line = {**self.common, **fields, **_slim(result)}
        with open(self.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        print(json.dumps({k: line[k] for k in _ECHO if k in line}), flush=True)
        return line


_ECHO = ("ablation", "workdir", "split", "sampler", "nfe", "variant", "bin", "wer", "rtfx")


def _slim(result: dict[str, Any]) -> dict[str, Any]:
    """The eval contract without per-item skip details and host paths (kept small)."""
    out = {k: v for k, v in result.items() if k not in ("skipped", "checkpoint", "source")}
    if "skipped" in result:
        out["skipped_count"] = result["skipped"]["count"]
    return out


def canvas_capacity(run: Run) -> int:
    """The most canvas slots the MDM decoder's positions hold (after its prompt)."""
    config = run.checkpoint.model_config
    return config.mdm_decoder.max_length - len(config.prompt_ids)


def mdm_canvas(run: Run) -> int:
    """The canvas the recipe decodes with: its decoding default, else the decoder's capacity."""
    return int(run.checkpoint.decoding.canvas_length or canvas_capacity(run))


def sweep(
    runs: Sequence[Run],
    splits: Sequence[str],
    parts: Sequence[str],
    record: Recorder,
    *,
    normalizer: str,
    max_utterances: int | None,
    num_bins: int,
    repeats: int,
    every: int = 1,
    with_ar: bool = True,
    samplers_a: Sequence[str] = SAMPLERS_A,
    nfes_a: Sequence[int] = NFES_A,
    lams: Sequence[float] = LAMS_B,
    gammas: Sequence[float] = GAMMAS_B,
    canvases: Sequence[str] = CANVASES,
    extra: dict[str, Any] | None = None,
) -> int:
    """Runs `parts` on every (run, split); returns the number of lines written."""
    from mdm_asr_jax.eval.evaluate import Evaluator
    from mdm_asr_jax.inference.eval_set import eval_set_from_batches, load_eval_set
    from mdm_asr_jax.nn.model import ASRModel

    extra = extra or {}
    needs_ar = (with_ar and "a" in parts) or "d" in parts
    if needs_ar and (missing := [r.workdir.name for r in runs if ar_source(r) is None]):
        raise AblationError(
            f"{', '.join(missing)}: no AR decoder for the AR greedy lines; pass the AR run it "
            f"was started from as --ar_workdir (one per --workdir){' or --no_ar' if 'd' not in parts else ''}"
        )
    # Read every split of every run first: one padded shape for all of them.
    loaded: dict[tuple[int, str], Any] = {}
    for r, run in enumerate(runs):
        for split in splits:
            loaded[r, split] = load_eval_set(
                run.checkpoint,
                manifest=run.manifests[split],
                batch_size=64,
                max_utterances=max_utterances,
            )
    if every > 1:
        loaded = {k: every_nth(v, every) for k, v in loaded.items()}
    rows = max(s.num_utterances for s in loaded.values())
    frames = max(int(b["features"].shape[1]) for s in loaded.values() for b in s.batches)
    bin_rows = -(-rows // num_bins)
    model = ASRModel(runs[0].checkpoint.model_config)  # one module: the jit cache is shared
    written = 0

    def evaluator(run: Run, eval_set: Any, checkpoint: Any = None, **decode_kwargs: Any) -> Any:
        ev = Evaluator(
            checkpoint or run.checkpoint,
            eval_set,
            normalizer=normalizer,
            decode_kwargs=decode_kwargs or None,
        )
        if ev.checkpoint.model_config == model.config:
            ev.model = model
        return ev

    def ar_evaluator(run: Run, eval_set: Any, ev: Any) -> tuple[Any, dict[str, Any]]:
        """The AR greedy evaluator of `run` on `eval_set` (`ev` when its model has AR)."""
        checkpoint, fields = ar_source(run)
        return (ev if not fields else evaluator(run, eval_set, checkpoint)), fields

    cells = []  # (run, split, source, whole eval set, evaluator, provenance)
    for r, run in enumerate(runs):
        for split in splits:
            source = loaded[r, split]
            merged = merge_batches(source.batches, rows, frames)
            whole = eval_set_from_batches(
                [merged], source.refs, source.audio, source.report, source.source
            )
            where = dict(
                recipe=run.recipe,
                seed=run.seed,
                workdir=run.workdir.name,
                split=split,
                recipe_canvas=mdm_canvas(run),
                **extra,
            )
            cells.append((run, split, source, whole, evaluator(run, whole), where))
    # Part by part, so the first parts are complete for every seed and split before the next.
    for part in [p for p in PARTS if p in parts]:
        for run, _split, source, whole, ev, where in cells:
            if part == "a":
                for spec in samplers_a:
                    for nfe in nfes_a:
                        record(ev.run(spec, nfe), ablation="samplers", **where)
                        written += 1
                if with_ar:
                    ar_ev, fields = ar_evaluator(run, whole, ev)
                    record(ar_ev.run("ar_greedy"), ablation="samplers", **fields, **where)
                    written += 1
            if part == "b":
                for lam in lams:
                    for gamma in gammas:
                        result = ev.run(f"pbeb(lam={lam},gamma={gamma})", NFE_B)
                        record(result, ablation="pbeb_grid", lam=lam, gamma=gamma, **where)
                        written += 1
            if part == "c":
                written += canvas_part(run, whole, ev, evaluator, record, where, canvases)
            if part == "d":
                bins = length_bins(source, run.checkpoint.tokenizer, num_bins)
                by_index = {
                    int(i): (b, row)
                    for b in source.batches
                    for row, i in enumerate(b["index"])
                    if b["example_mask"][row]
                }
                for number, members in enumerate(bins):
                    picked = [by_index[int(i)] for i in members]
                    batch = pad_rows(
                        np.stack([_pad_to(b["features"][row], frames) for b, row in picked]),
                        np.stack([_pad_to(b["feature_mask"][row], frames) for b, row in picked]),
                        np.asarray([b["seconds"][row] for b, row in picked], np.float32),
                        np.asarray([b["index"][row] for b, row in picked], np.int32),
                        bin_rows,
                        frames,
                    )
                    refs = {int(i): source.refs[int(i)] for i in members}
                    bin_set = eval_set_from_batches([batch], refs, None, None, source.source)
                    lengths = [len(run.checkpoint.tokenizer.encode(refs[i])) for i in refs]
                    ev_bin = evaluator(run, bin_set)
                    ar_bin, ar_fields = ar_evaluator(run, bin_set, ev_bin)
                    for spec in SAMPLERS_D:
                        runner, fields = (
                            (ar_bin, ar_fields) if spec == "ar_greedy" else (ev_bin, {})
                        )
                        best = None
                        for _ in range(repeats):  # the fastest of `repeats` timed passes
                            result = runner.run(spec, NFE_D)
                            if best is None or result["rtfx"] > best["rtfx"]:
                                best = result
                        record(
                            best,
                            ablation="length_bins",
                            bin=number,
                            bins=len(bins),
                            tokens_min=int(min(lengths)),
                            tokens_max=int(max(lengths)),
                            tokens_mean=float(np.mean(lengths)),
                            repeats=repeats,
                            **fields,
                            **where,
                        )
                        written += 1
    return written


def canvas_part(
    run: Run,
    whole: Any,
    ev: Any,
    evaluator: Any,
    record: Recorder,
    where: dict[str, Any],
    canvases: Sequence[str] = CANVASES,
) -> int:
    """(c): PBEB at NFE 16 and 32 with the paper's canvas, the recipe's, and adaptive (those
    of them named in `canvases`)."""
    recipe_canvas = mdm_canvas(run)
    written = 0
    variants: list[tuple[str, dict[str, Any]]] = [("recipe", {})]
    if PAPER_CANVAS != recipe_canvas:
        variants.insert(0, ("paper_256", {"canvas_length": PAPER_CANVAS}))
    variants.append(("adaptive", {"adaptive_canvas": True}))
    variants = [(name, kwargs) for name, kwargs in variants if name in canvases]
    decoder = run.checkpoint.model_config.mdm_decoder
    capacity = canvas_capacity(run) if decoder.positions == "learned" else PAPER_CANVAS
    for name, kwargs in variants:
        if kwargs.get("canvas_length", 0) > capacity:
            line = dict(
                skipped_reason=(
                    f"canvas {PAPER_CANVAS} does not fit this MDM decoder: max_length "
                    f"{decoder.max_length} with {decoder.positions} positions (canvas "
                    f"{recipe_canvas}); train with --config.objective.canvas_length={PAPER_CANVAS}"
                )
            )
            record(line, ablation="canvas", variant=name, canvas=PAPER_CANVAS, **where)
            written += 1
            continue
        runner = ev if not kwargs else evaluator(run, whole, **kwargs)
        for nfe in (16, 32):
            result = runner.run("pbeb(lam=0.2,gamma=0.05)", nfe)
            canvas = kwargs.get("canvas_length", recipe_canvas)
            record(result, ablation="canvas", variant=name, canvas=canvas, **where)
            written += 1
    return written


# ----------------------------------------------------------------------------- training (e)


def train_command(
    config: str,
    workdir: Path,
    variant: str,
    seed: int,
    steps: int | None,
    overrides: Sequence[str] = (),
) -> list[str]:
    """The `mdm-asr-train` command line of one training variant."""
    if variant not in TRAIN_VARIANTS:
        raise AblationError(
            f"unknown training variant {variant!r}: one of {sorted(TRAIN_VARIANTS)}"
        )
    command = [
        sys.executable,
        "-m",
        "mdm_asr_jax.cli.train",
        f"--config={config}",
        f"--workdir={workdir}",
        f"--config.seed={seed}",
        *TRAIN_VARIANTS[variant],
    ]
    if steps is not None:
        command.append(f"--config.train.num_steps={steps}")
    return command + list(overrides)


def train_part(args: argparse.Namespace, record_for: Any) -> int:
    """(e): trains each variant (skipping a workdir that already holds a finished run), then
    evaluates it with PBEB at NFE 2..32 on the splits."""
    variants = [v for v in args.train_variants.split(",") if v]
    for variant in variants:
        if variant not in TRAIN_VARIANTS:
            raise AblationError(
                f"--train_variants: {variant!r} is not one of {sorted(TRAIN_VARIANTS)}"
            )
    if not Path(args.train_config.split(":")[0]).exists():
        raise AblationError(f"--train_config={args.train_config}: no such config file")
    root = Path(args.train_root)
    written = 0
    for seed in [int(s) for s in args.train_seeds.split(",")]:
        for variant in variants:
            workdir = root / f"{variant}_s{seed}"
            command = train_command(
                args.train_config, workdir, variant, seed, args.train_steps, args.train_override
            )
            if not (workdir / "config.json").exists() or not any(workdir.glob("checkpoints/*")):
                print("training:", shlex.join(command), flush=True)
                start = time.time()
                subprocess.run(command, check=True)
                print(f"trained {workdir} in {time.time() - start:.0f} s", flush=True)
            run = open_run(workdir, args.splits.split(","), (args.ar_workdir or [None])[0])
            record = record_for(
                train_variant=variant,
                train_command=shlex.join(["mdm-asr-train", *command[3:]]),
                train_steps=run.checkpoint.info.get("config", {}).get("train", {}).get("num_steps"),
            )
            written += sweep(
                [run],
                args.splits.split(","),
                ["a"],
                record,
                normalizer=args.normalizer,
                max_utterances=args.max_utterances,
                num_bins=args.bins,
                repeats=1,
                every=args.every,
                samplers_a=["pbeb(lam=0.2,gamma=0.05)"],
                nfes_a=NFES_E,
                with_ar=args.with_ar,
                extra={"ablation_group": "training"},
            )
    return written


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir", action="append", default=[], help="trained workdir (repeat = seeds)"
    )
    parser.add_argument(
        "--ar_workdir",
        action="append",
        default=[],
        help="AR run of a two-run recipe, one per --workdir (with --train: one for all); gives "
        "the AR greedy lines when the MDM run's model has no AR decoder",
    )
    parser.add_argument(
        "--splits", default="test,test_accent", help="test manifests in WORKDIR/data/*/"
    )
    parser.add_argument("--parts", default="a,b,c,d", help="subset of a,b,c,d")
    parser.add_argument("--out", default="docs/data/ablations.jsonl", help="JSONL file appended to")
    parser.add_argument("--normalizer", default="basic")
    parser.add_argument("--max_utterances", type=int, default=None, help="first N of each split")
    parser.add_argument(
        "--every", type=int, default=1, help="keep utterances whose manifest index %% N == 0"
    )
    parser.add_argument(
        "--samplers", default=";".join(SAMPLERS_A), help="(a): sampler specs, ';'-separated"
    )
    parser.add_argument("--nfes", default=",".join(map(str, NFES_A)), help="(a): NFE caps")
    parser.add_argument("--no_ar", dest="with_ar", action="store_false", help="(a): skip AR greedy")
    parser.add_argument("--lams", default=",".join(map(str, LAMS_B)), help="(b): PBEB lambdas")
    parser.add_argument("--gammas", default=",".join(map(str, GAMMAS_B)), help="(b): PBEB gammas")
    parser.add_argument(
        "--canvases", default=",".join(CANVASES), help="(c): subset of " + ",".join(CANVASES)
    )
    parser.add_argument("--bins", type=int, default=4, help="transcript-length bins for (d)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per bin, fastest kept")
    parser.add_argument("--train", action="store_true", help="run (e): train variants, evaluate")
    parser.add_argument("--train_config", default="configs/demo.py")
    parser.add_argument(
        "--train_root", default="", help="(e): workdirs go to TRAIN_ROOT/VARIANT_sSEED"
    )
    parser.add_argument("--train_variants", default="plain_mdm,isct_k2")
    parser.add_argument("--train_seeds", default="0")
    parser.add_argument(
        "--train_steps", type=int, default=None, help="override num_steps (label it)"
    )
    parser.add_argument(
        "--train_override",
        action="append",
        default=[],
        help="(e): more mdm-asr-train flags for every variant, e.g. "
        "--train_override=--config.recipe_options.num_train=3000 (repeat)",
    )
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    if bad := [p for p in parts if p not in PARTS]:
        parser.error(f"--parts: {bad} not in {list(PARTS)}")
    args.parts_list = parts
    args.canvases_list = [c for c in args.canvases.split(",") if c]
    if bad := [c for c in args.canvases_list if c not in CANVASES]:
        parser.error(f"--canvases: {bad} not in {list(CANVASES)}")
    try:
        args.samplers_list = [x.strip() for x in args.samplers.split(";") if x.strip()]
        args.nfes_list = [int(x) for x in args.nfes.split(",") if x]
        args.lams_list = [float(x) for x in args.lams.split(",") if x]
        args.gammas_list = [float(x) for x in args.gammas.split(",") if x]
    except ValueError as err:
        parser.error(f"--nfes / --lams / --gammas: comma-separated numbers ({err})")
    if not args.workdir and not args.train:
        parser.error("pass --workdir=TRAINED_WORKDIR (repeat it for seeds) or --train")
    if args.ar_workdir and not args.train and len(args.ar_workdir) != len(args.workdir):
        parser.error(
            f"--ar_workdir: {len(args.ar_workdir)} given for {len(args.workdir)} --workdir; "
            f"pass one AR run per MDM run, in the same order"
        )
    if args.train and len(args.ar_workdir) > 1:
        parser.error("--train takes one --ar_workdir (the AR run every variant starts from)")
    if args.train and not args.train_root:
        parser.error("--train needs --train_root=DIR (where the training workdirs go)")
    if args.bins < 1 or args.repeats < 1 or args.every < 1:
        parser.error("--bins, --repeats and --every must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    splits = [s for s in args.splits.split(",") if s]
    common = dict(commit=git_commit(), machine=machine_line(), command=command_line(argv))
    out = Path(args.out)

    def record_for(**fields: Any) -> Recorder:
        return Recorder(out, {**common, **fields})

    written = 0
    try:
        if args.workdir and args.parts_list:
            ars = args.ar_workdir if not args.train else []
            runs = [
                open_run(w, splits, ars[i] if ars else None) for i, w in enumerate(args.workdir)
            ]
            written += sweep(
                runs,
                splits,
                args.parts_list,
                record_for(),
                normalizer=args.normalizer,
                max_utterances=args.max_utterances,
                num_bins=args.bins,
                repeats=args.repeats,
                every=args.every,
                samplers_a=args.samplers_list,
                nfes_a=args.nfes_list,
                lams=args.lams_list,
                gammas=args.gammas_list,
                canvases=args.canvases_list,
                with_ar=args.with_ar,
            )
        if args.train:
            written += train_part(args, record_for)
    except AblationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {written} lines to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
