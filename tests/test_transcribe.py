"""Transcription: long audio is cut at pauses into pieces covering it all, texts merged in order;
unreadable or missing input fails with a message naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_eval import DIGITS, _make_checkpoint, make_stand_in

from mdm_asr_jax import transcribe as tr
from mdm_asr_jax.audio import write_wav
from mdm_asr_jax.checkpoint import load_checkpoint

RATE = 16000


def _bursts(gaps_at: list[float], total: float, seed: int = 0) -> np.ndarray:
    """Noise 'speech' with 0.3 s silent gaps starting at `gaps_at` seconds."""
    rng = np.random.default_rng(seed)
    audio = (0.3 * rng.standard_normal(int(total * RATE))).astype(np.float32)
    for start in gaps_at:
        audio[int(start * RATE) : int((start + 0.3) * RATE)] = 0.0
    return audio


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return load_checkpoint(_make_checkpoint(tmp_path_factory.mktemp("tr"), ar=True, ctc=True))


def test_cuts_fall_in_pauses_and_pieces_cover_the_audio():
    audio = _bursts([8.2, 15.5, 23.0], 30.0)
    pieces = tr.split_points(audio, RATE, window_seconds=10.0, search_seconds=3.0)
    assert pieces[0][0] == 0 and pieces[-1][1] == audio.shape[0]
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))  # no gap/overlap
    assert all(end - start <= 10 * RATE for start, end in pieces)
    for _, cut in pieces[:-1]:
        assert np.all(audio[cut - 400 : cut + 400] == 0.0), f"cut at {cut / RATE:.2f}s not in a gap"


def test_short_audio_is_one_piece():
    assert tr.split_points(np.zeros(RATE, np.float32), RATE, 30.0) == [(0, RATE)]


def test_long_file_is_split_decoded_and_merged_in_order(checkpoint, tmp_path):
    # 3.2 s with pauses, window 1 s: at least 4 pieces. The stand-in decoder answers piece i
    # with the digit word DIGITS[i] (the piece's index in the batch), so the merged text must
    # list every piece's word in time order.
    path = tmp_path / "long.wav"
    write_wav(path, _bursts([0.7, 1.6, 2.4], 3.2))
    short = tmp_path / "short.wav"
    write_wav(short, _bursts([], 0.5, seed=1))
    tok = checkpoint.tokenizer
    decode = make_stand_in({i: tok.encode(DIGITS[i]) for i in range(10)}, 3)
    transcriber = tr.Transcriber(
        checkpoint, sampler="ctc_greedy", batch_size=4, window_seconds=1.0, decode_fn=decode
    )
    long_result, short_result = transcriber.transcribe([str(path), str(short)])
    count = len(long_result.segments)
    assert count >= 4
    assert long_result.text == " ".join(DIGITS[:count])
    starts = [s for s, _, _ in long_result.segments]
    ends = [e for _, e, _ in long_result.segments]
    assert starts[0] == 0.0 and ends[-1] == pytest.approx(3.2)
    assert starts[1:] == ends[:-1] and all(
        e - s <= 1.0 + 1e-9 for s, e in zip(starts, ends, strict=True)
    )
    assert short_result.text == DIGITS[count] and len(short_result.segments) == 1
    assert transcriber.stats["compile_seconds"] + transcriber.stats["decode_seconds"] > 0


def test_unreadable_and_missing_inputs_name_the_file(checkpoint, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"definitely not audio")
    decode = make_stand_in({}, 3)
    transcriber = tr.Transcriber(checkpoint, sampler="ctc_greedy", decode_fn=decode)
    with pytest.raises(tr.TranscribeError, match="broken.wav"):
        list(transcriber.transcribe([str(bad)]))
    (result,) = transcriber.transcribe([str(bad)], skip_bad=True)
    assert result.text == "" and "broken.wav" in result.error
    with pytest.raises(tr.TranscribeError, match="nowhere.wav"):
        tr.collect_inputs([str(tmp_path / "nowhere.wav")])
    listing = tmp_path / "files.txt"
    listing.write_text("broken.wav\nmissing.flac\n")
    with pytest.raises(tr.TranscribeError, match="files.txt:2"):
        tr.collect_inputs([str(listing)])


def test_directories_and_list_files_expand_in_order(tmp_path):
    (tmp_path / "d").mkdir()
    for name in ("b.wav", "a.flac", "notes.md"):
        (tmp_path / "d" / name).write_bytes(b"x")
    (tmp_path / "list.txt").write_text("d/b.wav\n# comment\n\nd/a.flac\n")
    got = tr.collect_inputs([str(tmp_path / "d"), "@" + str(tmp_path / "list.txt")])
    assert [Path(p).name for p in got] == ["a.flac", "b.wav", "b.wav", "a.flac"]


def test_transcribe_cli_writes_one_line_per_file(checkpoint, tmp_path, capsys):
    from mdm_asr_jax.cli import transcribe as cli

    files = []
    for i in range(3):
        files.append(tmp_path / f"f{i}.wav")
        write_wav(files[-1], _bursts([], 0.4 + 0.1 * i, seed=i))
    out = tmp_path / "out.jsonl"
    cli.FLAGS.unparse_flags()
    cli.FLAGS(
        ["mdm-asr-transcribe", f"--checkpoint={checkpoint.path}", "--sampler=ctc_greedy",
         "--jsonl", "--batch_size=4", f"--output={out}"]
    )  # fmt: skip
    try:
        cli.main(["mdm-asr-transcribe", *map(str, files)])
    finally:
        cli.FLAGS.unparse_flags()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["audio"] for r in rows] == [str(f) for f in files]
    # The real decode on a random tiny model: the text is whatever it says, one piece a file.
    assert all(isinstance(r["text"], str) and len(r["segments"]) == 1 for r in rows)
    assert "RTFx" in capsys.readouterr().err


def test_transcribe_cli_dtype_flag_decodes_in_bfloat16(checkpoint, tmp_path, monkeypatch):
    import jax

    from mdm_asr_jax.cli import transcribe as cli

    audio = tmp_path / "a.wav"
    write_wav(audio, _bursts([], 0.5))
    seen = []

    class Spy(cli.Transcriber):  # the real transcriber; records what it was given
        def __init__(self, loaded, **kwargs):
            params = {str(x.dtype) for x in jax.tree.leaves(loaded.params)}
            seen.append((loaded.model_config.dtype, params))
            super().__init__(loaded, **kwargs)

    monkeypatch.setattr(cli, "Transcriber", Spy)
    cli.FLAGS.unparse_flags()
    cli.FLAGS(
        ["mdm-asr-transcribe", f"--checkpoint={checkpoint.path}", "--sampler=ctc_greedy",
         "--dtype=bfloat16", f"--output={tmp_path / 'out.txt'}"]
    )  # fmt: skip
    try:
        cli.main(["mdm-asr-transcribe", str(audio)])
    finally:
        cli.FLAGS.unparse_flags()
    assert seen == [("bfloat16", {"bfloat16"})]
    assert (tmp_path / "out.txt").exists()


def test_no_sliver_is_left_as_the_last_piece():
    audio = _bursts([], 10.05)
    pieces = tr.split_points(audio, RATE, window_seconds=10.0, search_seconds=3.0)
    assert len(pieces) == 2 and pieces[-1][1] - pieces[-1][0] >= RATE


def test_console_scripts_parse_flags_and_report_bad_checkpoints(tmp_path):
    """Through `run()` (absl's global flags, as the installed scripts do), in a subprocess."""
    import subprocess
    import sys

    audio = tmp_path / "a.wav"
    write_wav(audio, _bursts([], 0.3))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    for module, args in (
        ("mdm_asr_jax.cli.transcribe", ["--nfe=4", str(audio)]),
        ("mdm_asr_jax.cli.evaluate", ["--nfe=4", f"--manifest={tmp_path / 'm.jsonl'}"]),
    ):
        result = subprocess.run(
            [sys.executable, "-m", module, f"--checkpoint={tmp_path / 'none'}", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert result.returncode == 2, result.stderr[-2000:]
        assert "error:" in result.stderr and "does not exist" in result.stderr
