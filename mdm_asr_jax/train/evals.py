"""Named evaluations: `config.evals.<name>` plug-ins scored during and after training.

A config declares the evaluation sets of its recipe by name, each with its own decoder and
normaliser, instead of a script that knows them:

    c.evals.fsdd = named_eval("test_fsdd", normalizer="basic")           # final only
    c.evals.dev_clean = named_eval("tfds:librispeech/dev_clean", every=5000, final=False)

Fields of an entry (`named_eval` builds one; plain dicts work too):

  source          a split the recipe made ("dev", "test", "test_<name>"), "tfds:NAME/SPLIT",
                  or a manifest path (.jsonl)
  sampler         a decoder spec or a tuple of them (None: `eval.sampler` when periodic,
                  `eval.final_samplers` at the end)
  nfe             the NFE cap (None: `eval.nfe`)
  normalizer      None: `eval.normalizer`
  every           > 0: also scored every that many steps (a dev-style curve line per decoder in
                  WORKDIR/curve.jsonl, tagged with the eval's name); 0: only at the end
  final           scored at the end (a final JSON line per decoder, in WORKDIR/results.json)
  max_utterances  0 = all

The recipe's own test splits are still scored at the end with `eval.final_samplers` (the
trainer's default behaviour), except those a named eval takes over (same `source`): a config
that needs another normaliser or decoder for one test set names it once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import ml_collections

from mdm_asr_jax.diffusion.samplers import SamplerSpecError, parse_sampler
from mdm_asr_jax.text.normalize import NormalizerError, get_normalizer
from mdm_asr_jax.train.config import TrainError

FIELDS = ("source", "sampler", "nfe", "normalizer", "every", "final", "max_utterances")


@dataclasses.dataclass(frozen=True)
class EvalSpec:
    """One named evaluation, with the config's `eval` defaults filled in."""

    name: str
    source: str
    samplers: tuple[str, ...]
    final_samplers: tuple[str, ...]
    nfe: int
    normalizer: str
    every: int
    final: bool
    max_utterances: int

    def data_source(self, data: ml_collections.ConfigDict) -> dict[str, str | None]:
        """`manifest=` / `dataset=` for the evaluator: a recipe split is looked up in `data`
        (after the recipe ran), "tfds:..." is a dataset, anything else a manifest path."""
        if self.source.startswith("tfds:"):
            return {"manifest": None, "dataset": self.source}
        splits = recipe_splits(data)
        if self.source in splits:
            return splits[self.source]
        if self.source.endswith(".jsonl") or "/" in self.source:
            return {"manifest": self.source, "dataset": None}
        raise TrainError(
            f"evals.{self.name}.source={self.source!r} is not a split of this run "
            f"(have {sorted(splits)}), a tfds:NAME/SPLIT, or a manifest path"
        )


def named_eval(
    source: str,
    *,
    sampler: str | tuple[str, ...] | None = None,
    nfe: int | None = None,
    normalizer: str | None = None,
    every: int = 0,
    final: bool = True,
    max_utterances: int = 0,
) -> ml_collections.ConfigDict:
    """A `config.evals.<name>` entry (see the module docstring for the fields)."""
    return ml_collections.ConfigDict(
        dict(
            source=source,
            sampler=sampler,
            nfe=nfe,
            normalizer=normalizer,
            every=every,
            final=final,
            max_utterances=max_utterances,
        )
    )


def recipe_splits(data: ml_collections.ConfigDict) -> dict[str, dict[str, str | None]]:
    """Every split the run's data config names: dev (manifest or TFDS), test, test_<name>."""
    splits: dict[str, dict[str, str | None]] = {}
    if data.get("dev_manifest") or data.get("dev_tfds"):
        dev_tfds = data.get("dev_tfds") or None
        splits["dev"] = {"manifest": data.get("dev_manifest") or None, "dataset": dev_tfds}
    for split, manifest in test_manifests(data).items():
        splits[split] = {"manifest": manifest, "dataset": None}
    return splits


def test_manifests(data: ml_collections.ConfigDict) -> dict[str, str]:
    """The test sets to score at the end: `test` and every other `test_<name>` a recipe made
    (e.g. a held-out accent, a held-out real speaker), in that order."""
    splits = {"test": data.test_manifest} if data.get("test_manifest") else {}
    for key in sorted(data.keys()):
        if key.startswith("test_") and key.endswith("_manifest") and data[key]:
            splits[key[: -len("_manifest")]] = data[key]
    return splits


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def parse_evals(config: ml_collections.ConfigDict) -> list[EvalSpec]:
    """`config.evals` checked and completed from `config.eval`; every problem (unknown field,
    bad sampler spec, unknown normaliser, missing manifest, negative `every`) is a `TrainError`
    naming `evals.<name>.<field>`, raised before any training work."""
    entries: Mapping[str, Any] = config.get("evals") or {}
    specs = []
    for name, entry in entries.items():
        entry = dict(entry)
        unknown = sorted(set(entry) - set(FIELDS))
        if unknown:
            raise TrainError(f"evals.{name}: unknown field(s) {unknown}; the fields are {FIELDS}")
        if not entry.get("source"):
            raise TrainError(f"evals.{name}.source is empty; give a split, tfds:NAME/SPLIT or path")
        samplers = _as_tuple(entry.get("sampler"))
        for spec in samplers:
            try:
                parse_sampler(spec)
            except SamplerSpecError as err:
                raise TrainError(f"evals.{name}.sampler: {err}") from None
        normalizer = entry.get("normalizer") or config.eval.normalizer
        try:
            get_normalizer(normalizer)
        except NormalizerError as err:
            raise TrainError(f"evals.{name}.normalizer: {err}") from None
        nfe = int(config.eval.nfe if entry.get("nfe") is None else entry["nfe"])
        every = int(entry.get("every") or 0)
        if nfe < 1 or every < 0 or int(entry.get("max_utterances") or 0) < 0:
            raise TrainError(
                f"evals.{name}: nfe must be >= 1, every and max_utterances >= 0 "
                f"(got nfe={nfe}, every={every}, max_utterances={entry.get('max_utterances')})"
            )
        source = str(entry["source"])
        if source.endswith(".jsonl") and not Path(source).exists() and "://" not in source:
            raise TrainError(f"evals.{name}.source: manifest {source} does not exist")
        specs.append(
            EvalSpec(
                name=name,
                source=source,
                samplers=samplers or (config.eval.sampler,),
                final_samplers=samplers or tuple(config.eval.final_samplers),
                nfe=nfe,
                normalizer=normalizer,
                every=every,
                final=bool(entry.get("final", True)),
                max_utterances=int(entry.get("max_utterances") or 0),
            )
        )
    return specs


def periodic(specs: list[EvalSpec], step: int, num_steps: int) -> Iterator[EvalSpec]:
    """The named evals due at `step` (every `every` steps and at the last step)."""
    for spec in specs:
        if spec.every > 0 and (step % spec.every == 0 or step == num_steps):
            yield spec


def default_test_splits(data: ml_collections.ConfigDict, specs: list[EvalSpec]) -> list[str]:
    """The recipe's test splits scored with `eval.final_samplers` at the end: all of them but
    those a named eval takes over."""
    taken = {spec.source for spec in specs}
    return [split for split in test_manifests(data) if split not in taken]


def recorded_test_sets(
    run_config: Mapping[str, Any],
) -> dict[str, tuple[dict[str, str | None], str]]:
    """name -> (evaluator source, normaliser) of the test sets a finished run scored at the end,
    from its recorded training config (WORKDIR/config.json's `info.config`): the recipe's test
    splits under their split names with `eval.normalizer`, and every final named eval under its
    name with its own normaliser. Lets a script score other models on exactly those sets."""
    config = ml_collections.ConfigDict({"evals": {}, **run_config})
    specs = parse_evals(config)
    sets = {
        split: ({"manifest": manifest, "dataset": None}, config.eval.normalizer)
        for split, manifest in test_manifests(config.data).items()
        if split in default_test_splits(config.data, specs)
    }
    for spec in specs:
        if spec.final:
            sets[spec.name] = (spec.data_source(config.data), spec.normalizer)
    return sets
