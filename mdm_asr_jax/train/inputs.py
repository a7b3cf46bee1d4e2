"""Training inputs: the data recipe, the tokenizer and the grain training pipeline."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import jax
import ml_collections
from absl import logging

from mdm_asr_jax import checkpoint as ckpt
from mdm_asr_jax import multihost, paths
from mdm_asr_jax.audio import FeatureConfig
from mdm_asr_jax.data import recipes
from mdm_asr_jax.data.manifest import read_manifest
from mdm_asr_jax.data.pipeline import DataConfig, make_pipeline
from mdm_asr_jax.text import SentencePieceTokenizer, Tokenizer, load_tokenizer
from mdm_asr_jax.train.config import TrainError
from mdm_asr_jax.train.objective import ObjectiveConfig


def prepare_data(config: ml_collections.ConfigDict, workdir: Path) -> ml_collections.ConfigDict:
    """Run the config's data recipe (if any) and return data config with manifest paths set."""
    data = config.data
    if config.recipe:
        # An MDM run fine-tuned from an AR training workdir reuses that run's corpus.
        base = config.model.base_checkpoint
        local_base = base and not paths.is_remote(base)
        reuse = (Path(base) / "data",) if local_base and (Path(base) / "data").is_dir() else ()
        # A shared workdir: process 0 builds the corpus, the others then find it built (the
        # recipes cache their output). A gs:// workdir builds on each host's local disk.
        ordered = jax.process_count() > 1 and not paths.is_remote(workdir)
        if ordered and not multihost.is_leader():
            multihost.barrier("mdm_asr: data recipe built")
        manifests = recipes.prepare(config.recipe, recipe_data_dir(workdir), config, reuse=reuse)
        if ordered and multihost.is_leader():
            multihost.barrier("mdm_asr: data recipe built")
        with data.unlocked():
            for split, path in manifests.items():
                data[f"{split}_manifest"] = str(path)
    if not (data.train_manifest or data.train_tfds):
        raise TrainError(
            "no training data: set config.data.train_manifest, config.data.train_tfds "
            "or config.recipe"
        )
    return data


def recipe_data_dir(workdir: os.PathLike) -> Path:
    """Where a data recipe builds its corpus: WORKDIR/data, or for a gs:// workdir a local
    cache folder named after it (recipes write many small files; they are deterministic, so a
    new VM rebuilds the same corpus)."""
    if not paths.is_remote(workdir):
        return Path(os.fspath(workdir)) / "data"
    digest = hashlib.sha256(os.fspath(workdir).encode()).hexdigest()[:16]
    return Path(os.path.expanduser("~")) / ".cache" / "mdm_asr_jax" / "recipe_data" / digest


def load_or_train_tokenizer(
    config: ml_collections.ConfigDict, workdir: Path, data: ml_collections.ConfigDict
) -> Tokenizer:
    """The workdir's tokenizer when resuming, else `tokenizer.path`, else SentencePiece trained
    on the training transcripts."""
    if (workdir / ckpt.CONFIG_FILE).exists():
        payload = json.loads((workdir / ckpt.CONFIG_FILE).read_text())
        return load_tokenizer(paths.local_copy(workdir / ckpt.TOKENIZER_DIR), payload["tokenizer"])
    tok = config.tokenizer
    if tok.path:
        return SentencePieceTokenizer(tok.path)
    if not data.train_manifest:
        raise TrainError(
            "config.tokenizer.path is empty and there is no train manifest to train "
            "SentencePiece on: set config.tokenizer.path"
        )
    entries, _ = read_manifest(data.train_manifest)
    texts = [e.text for e in entries]
    remote = paths.is_remote(workdir)
    out = Path(f"{recipe_data_dir(workdir)}_spm") if remote else Path(os.fspath(workdir)) / "spm"
    logging.info(
        "training SentencePiece (%s, vocab %d) on %d transcripts",
        tok.model_type,
        tok.vocab_size,
        len(texts),
    )
    return SentencePieceTokenizer.train(
        texts, out, tok.vocab_size, tok.model_type, lowercase=tok.lowercase, hard_vocab_limit=False
    )


def make_train_pipeline(
    data: ml_collections.ConfigDict,
    tokenizer: Tokenizer,
    features: FeatureConfig,
    objective: ObjectiveConfig,
    seed: int,
):
    """The grain training pipeline for `config.data` (manifest or TFDS split)."""
    source = data.train_manifest or f"tfds:{data.train_tfds}"
    data_config = DataConfig(
        source=source,
        batch_size=data.batch_size,
        frame_buckets=tuple(int(b) for b in data.frame_buckets),
        max_tokens=objective.canvas_length - 1,  # room for at least one EOS on the canvas
        max_seconds=data.max_seconds,
        seed=seed,
        shuffle=data.shuffle,
        num_workers=data.num_workers,
        strict=data.strict,
        tfds_data_dir=data.tfds_data_dir or None,
    )
    pipeline = make_pipeline(data_config, tokenizer=tokenizer, feature_config=features, train=True)
    if pipeline.report.num_dropped and jax.process_index() == 0:
        print(f"training data: {pipeline.report.summary()}", flush=True)
    return pipeline
