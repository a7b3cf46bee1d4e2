"""Data: sources (JSONL manifests, TFDS), the grain input pipeline, corpus builders.

Modules (imported directly; this package imports nothing so that light tools stay light):
  manifest      read/validate/write JSONL manifests; `Problem` and `DataReport` for dropped input
  sources       random-access utterance sources: `ManifestSource`, `TFDSSource`, `open_source`
  pipeline      `DataConfig`, `make_pipeline` -> bucketed, padded, sharded, checkpointable batches
  synth         eSpeak NG speech corpora (en, fr, de, es) from text or built-in generators
  fsdd          connected digits from the Free Spoken Digit Dataset
  tfds_builder  manifests -> TFDS dataset (array_record) for `tfds:NAME/SPLIT` sources
"""
