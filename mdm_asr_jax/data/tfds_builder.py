"""Turn JSONL manifests into a TFDS dataset (array_record files) for `tfds.data_source`.

`manifests_to_tfds(name, {"train": "train.jsonl", "test": "test.jsonl"}, data_dir)` writes
`data_dir/NAME/VERSION/` with one split per manifest and the features

    audio: int16 [N] at 16 kHz (decoded and resampled from any input rate)
    text:  the transcript
    id:    the manifest `id`, else the manifest line number

Read it back with the same pipeline as any TFDS split: `source="tfds:NAME/train"` and
`tfds_data_dir=data_dir` in the data config. Bad manifest lines and unreadable audio are
reported and left out (as everywhere else); `strict=True` stops on the first instead.

LibriSpeech takes the same road with TFDS's own builder, on a machine with internet:
`tfds build librispeech --file_format=array_record --data_dir=DIR`, then
`source="tfds:librispeech/train_clean100"` (splits train_clean100, train_clean360,
train_other500, dev_clean, dev_other, test_clean, test_other).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import numpy as np
from absl import logging

from mdm_asr_jax.audio import SAMPLE_RATE, AudioError, load_audio
from mdm_asr_jax.data.manifest import DataReport, ManifestError, Problem, read_manifest


def _examples(
    manifest: str, report: DataReport, strict: bool
) -> Iterator[tuple[str, dict[str, object]]]:
    entries, problems = read_manifest(manifest, strict=strict)
    report.extend(problems)
    for entry in entries:
        try:
            audio = load_audio(entry.audio, SAMPLE_RATE)
        except AudioError as err:
            problem = Problem(manifest, entry.line, "unreadable audio", str(err))
            if strict:
                raise ManifestError(f"{problem} (fix it, or run without --strict)") from err
            report.add(problem)
            continue
        samples = np.round(np.clip(audio, -1.0, 1.0 - 1.0 / 32768) * 32768).astype(np.int16)
        ident = entry.id if entry.id is not None else f"line{entry.line}"
        yield f"{entry.line:09d}", {"audio": samples, "text": entry.text, "id": ident}


def manifests_to_tfds(
    name: str,
    manifests: Mapping[str, str],
    data_dir: str,
    *,
    version: str = "1.0.0",
    strict: bool = False,
    description: str | None = None,
) -> DataReport:
    """Builds TFDS dataset `name` (one split per manifest) in `data_dir` as array_record.

    Returns the DataReport of utterances left out. Record order follows the manifest (TFDS
    shuffling disabled), so record index i is the i-th good manifest line.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            "Building a TFDS dataset needs TensorFlow and TFDS: pip install 'mdm_asr_jax[tfds]'."
        ) from err
    if not manifests:
        raise ValueError("manifests is empty: give at least one split=manifest.jsonl.")
    if os.path.isdir(os.path.join(data_dir, name, version)):
        raise ValueError(
            f"TFDS dataset {name}:{version} already exists in {data_dir!r}; delete that folder "
            "or choose another --name/--version."
        )
    report = DataReport()
    features = tfds.features.FeaturesDict(
        {
            "audio": tfds.features.Audio(
                shape=(None,), dtype=np.int16, sample_rate=SAMPLE_RATE, file_format=None
            ),
            "text": tfds.features.Text(),
            "id": tfds.features.Text(),
        }
    )
    splits = {split: _examples(path, report, strict) for split, path in manifests.items()}
    tfds.dataset_builders.store_as_tfds_dataset(
        name=name,
        version=version,
        features=features,
        split_datasets=splits,
        data_dir=data_dir,
        description=description or f"Speech from manifests {dict(manifests)}",
        file_format="array_record",
        disable_shuffling=True,
    )
    report.log_summary()
    logging.info("TFDS dataset %s written to %s", name, os.path.join(data_dir, name, version))
    return report
