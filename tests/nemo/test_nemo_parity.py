"""Parity of the Canary import with NeMo itself, on a tiny randomly initialised Canary model.

Needs NeMo and PyTorch (`.ci/run_nemo.sh` builds that environment; `parity.py` is also the
command line for checking a real checkpoint). The model is built by `tiny_canary.py` with random
batch-norm statistics and norm weights, saved as .nemo and converted with `convert_nemo` (what
`mdm-asr-convert nemo` runs); both sides then run on the same real recordings (FSDD) in float32:
features, encoder output, teacher-forced decoder log-probabilities (causal, and bidirectional =
NeMo's decoder with its causal mask removed, the paper's MDM initialisation) to <= 1e-4
relative, and greedy AR decoding (identical tokens; ours runs the KV-cache step path).
"""

from __future__ import annotations

import json
import pathlib
import sys
import tarfile

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("nemo")

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import parity  # noqa: E402
from tiny_canary import build_tiny_canary  # noqa: E402

from mdm_asr_jax.audio import FeatureConfig, load_audio  # noqa: E402
from mdm_asr_jax.convert.nemo import convert_nemo, read_nemo  # noqa: E402
from mdm_asr_jax.convert.torch_zip import read_torch_zip  # noqa: E402

FSDD = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "fsdd"
REL_TOL = 1e-4


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(NeMo model in eval mode, .nemo path, converted checkpoint dir) of the tiny model."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("canary")
    model, nemo_path = build_tiny_canary(root / "nemo", seed=0)
    report = convert_nemo(nemo_path, root / "ckpt")
    assert all("not used" in w for w in report.warnings), report.warnings
    return model, nemo_path, root / "ckpt"


@pytest.fixture(scope="module")
def audio_batch():
    """Two FSDD recordings of different lengths at 16 kHz, zero-padded: (audio [2, N], lengths)."""
    files = sorted(FSDD.resolve().glob("*.wav"))[:2]
    audio, lengths = parity.pad_batch([load_audio(f) for f in files])
    assert lengths[0] != lengths[1]
    return audio, lengths


@pytest.fixture(scope="module")
def ours(converted):
    return parity.load_ours(converted[2])


@pytest.fixture(scope="module")
def nemo_out(converted, audio_batch):
    return parity.nemo_encode(converted[0], *audio_batch)


def test_torch_free_reader_reads_every_tensor_like_torch_load(converted, tmp_path):
    with tarfile.open(converted[1]) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("model_weights.ckpt"))
        data = tar.extractfile(member).read()
    (tmp_path / "w.ckpt").write_bytes(data)
    reference = torch.load(tmp_path / "w.ckpt", map_location="cpu", weights_only=True)
    ours = read_torch_zip(data)
    assert set(ours) == set(reference)
    for name, tensor in reference.items():
        np.testing.assert_array_equal(ours[name], tensor.numpy(), err_msg=name)


def test_every_nemo_tensor_is_mapped_or_reported(converted):
    report = json.loads((converted[2] / "conversion_report.json").read_text())
    archive = read_nemo(converted[1])
    assert set(report["mapped"]) | set(report["unused"]) == set(archive.tensors)
    for name in report["unused"]:  # only buffers and counters may go unused
        assert name.startswith(("preprocessor.", "transf_decoder._embedding.position")) or (
            name.endswith("num_batches_tracked")
        ), name


def test_tokenizer_ids_and_prompt_match_nemo(converted, ours):
    model = converted[0]
    tokenizer = ours[2].tokenizer
    for text, lang in (("The quick brown fox.", "en"), ("Il était une fois, dit-elle.", "fr")):
        ids = model.tokenizer.text_to_ids(text, lang)
        assert tokenizer.encode(text, lang) == ids
        assert tokenizer.decode(ids) == model.tokenizer.ids_to_text(ids).strip()
    slots = dict(model.prompt.get_default_dialog_slots()[0]["slots"])
    slots["prompt_language"] = "spl_tokens"
    nemo_prompt = model.prompt.encode_dialog([{"role": "user", "slots": slots}])["context_ids"]
    assert tuple(tokenizer.prompt_ids) == tuple(nemo_prompt.tolist())
    assert (tokenizer.eos_id, tokenizer.pad_id) == (model.tokenizer.eos_id, model.tokenizer.pad_id)


def test_features_match_nemo_preprocessor(nemo_out, audio_batch, ours):
    config = ours[2].feature_config
    assert config == FeatureConfig(kind="nemo", num_mels=128)
    # Per-feature normalisation divides by a small std, so compare on the normalised scale.
    assert parity.feature_error(nemo_out, *audio_batch, config) < 5e-4


def test_encoder_output_matches_nemo(nemo_out, ours):
    assert parity.encoder_error(nemo_out, ours) <= REL_TOL


def test_teacher_forced_ar_log_probs_match_nemo(converted, nemo_out, ours):
    tokens, lengths = parity.teacher_tokens(
        ours[2].tokenizer, [("seven", "en"), ("zero trois", "fr")]
    )
    assert lengths[0] != lengths[1]  # padded decoder rows
    assert parity.ar_log_prob_error(converted[0], nemo_out, ours, tokens, lengths) <= REL_TOL


def test_bidirectional_decoder_matches_nemo_without_causal_mask(converted, nemo_out, ours):
    tokenizer = ours[2].tokenizer
    canvas = np.array([tokenizer.encode("four two", "en")] * 2)
    canvas[:, 1] = tokenizer.mask_id - 1  # a filler id: still a row of NeMo's vocabulary
    assert parity.mdm_log_prob_error(converted[0], nemo_out, ours, canvas) <= REL_TOL


def test_greedy_ar_decoding_matches_nemo(converted, nemo_out, ours):
    mine, reference = parity.greedy_both(converted[0], nemo_out, ours, steps=12)
    np.testing.assert_array_equal(mine, reference)


SAMPLERS = (
    "pbeb(lam=0.2,gamma=0.05)",
    "eb(gamma=0.05)",
    "topk(schedule=linear)",
    "dfm",
    "random",
    "ar_greedy",
    "ar_beam(size=2)",
)


def test_converted_model_decodes_with_every_sampler_through_the_eval_cli(converted, tmp_path):
    """The converted checkpoint (MDM + AR heads) runs under `mdm-asr-eval` with every sampler.
    Random weights: the WER is meaningless, the point is that every path decodes."""
    import subprocess

    files = sorted(FSDD.resolve().glob("*.wav"))[:2]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "".join(json.dumps({"audio": str(f), "text": "digit"}) + "\n" for f in files)
    )
    command = [
        sys.executable,
        "-c",
        "from mdm_asr_jax.cli.evaluate import run; run()",
        f"--checkpoint={converted[2]}",
        f"--manifest={manifest}",
        f"--sampler={','.join(SAMPLERS)}",
        "--nfe=4",
        "--batch_size=2",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [r["sampler"].split("(")[0] for r in results] == [s.split("(")[0] for s in SAMPLERS]
    for result in results:
        assert result["n"] == 2 and result["skipped"]["count"] == 0, result
