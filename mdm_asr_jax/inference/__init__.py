"""The inference layer: what eval, transcribe, the trainer's dev eval and benchmarks share.

Between `decode()` (one batch of features -> ids) and the tools that read audio and report:
  batching   host features padded into a few frame buckets (few compiled shapes)
  placement  params and batches on the local devices (data parallel within a host)
  eval_set   a manifest / TFDS split read once into host batches + references (and cached)
  heads      which sampler families a model can run; sampler spec checks
Nothing here scores or prints; `eval.evaluate` and `transcribe` do.
"""


class InferenceError(ValueError):
    """Decoding cannot run as asked (names the input and the fix)."""
