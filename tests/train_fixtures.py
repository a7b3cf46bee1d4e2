"""A tiny on-disk corpus and training config for end-to-end trainer tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from mdm_asr_jax.train.defaults import base_config

WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "zero"]


def write_corpus(directory: Path, count: int = 16, seed: int = 0) -> Path:
    """`count` short tone sequences (one pitch per word) with digit-word transcripts."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        words = [int(w) for w in rng.integers(0, 10, rng.integers(1, 4))]
        pieces = []
        for w in words:
            t = np.arange(int(0.15 * 16000)) / 16000
            pieces.append(0.3 * np.sin(2 * np.pi * (200 + 80 * w) * t))
            pieces.append(np.zeros(800))
        path = directory / f"utt{i}.wav"
        sf.write(path, np.concatenate(pieces).astype(np.float32), 16000)
        lines.append({"audio": path.name, "text": " ".join(WORDS[w] for w in words)})
    manifest = directory / "train.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


def tiny_train_config(manifest: Path, num_steps: int = 4):
    c = base_config()
    c.data.train_manifest = str(manifest)
    c.data.batch_size = 8
    c.data.frame_buckets = (128,)
    c.data.max_seconds = 1.28
    c.tokenizer.vocab_size = 24
    c.model.encoder_size = "test"
    c.model.decoder_size = "test"
    c.model.ar = True
    c.objective.ar_weight = 0.5
    c.objective.canvas_length = 12
    c.objective.spec_augment = False
    c.optim.decay = "constant"
    c.optim.warmup_steps = 0
    c.train.num_steps = num_steps
    c.train.log_every = 1
    c.train.eval_every = 0
    c.train.checkpoint_every = 2
    c.train.async_checkpointing = False
    c.mesh.shape = (-1, 1, 1)
    return c
