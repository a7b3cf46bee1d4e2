"""Transcribe output formats: SRT / WebVTT that real subtitle parsers read (`srt`, `webvtt-py`),
cue and word times monotone and inside the audio, and word times from the CTC alignment."""

from __future__ import annotations

import json

import numpy as np
import pytest
import srt
import webvtt
from test_eval import DIGITS, make_stand_in
from test_transcribe import RATE, _bursts, checkpoint  # noqa: F401 - the module fixture

from mdm_asr_jax import subtitles
from mdm_asr_jax import transcribe as tr
from mdm_asr_jax.audio import write_wav
from mdm_asr_jax.ctc import ctc_forced_align


def _peaky(path: list[int], vocab: int = 6) -> np.ndarray:
    """CTC log-probs [S, V] whose best frame-wise labels are `path`."""
    log_probs = np.full((len(path), vocab), -6.0)
    log_probs[np.arange(len(path)), path] = -0.01
    return log_probs


def test_forced_alignment_finds_each_tokens_frames_and_needs_blanks_between_repeats():
    log_probs = _peaky([0, 1, 1, 0, 2, 0, 1])  # blank 0
    assert ctc_forced_align(log_probs, [1, 2, 1]).tolist() == [[1, 2], [4, 4], [6, 6]]
    # "1 1" must put a blank between the two 1s: the first 1 is frames 1-2, the second frame 6.
    assert ctc_forced_align(log_probs, [1, 1]).tolist() == [[1, 2], [6, 6]]
    # A forced token the frames do not favour still gets a frame, in order.
    spans = ctc_forced_align(log_probs, [3, 2])
    assert spans[0, 0] <= spans[0, 1] < spans[1, 0] <= spans[1, 1]
    assert ctc_forced_align(log_probs[:2], [1, 1]) is None  # needs 3 frames
    assert ctc_forced_align(log_probs, []).shape == (0, 2)


def test_word_spans_group_tokens_into_the_decoded_words(checkpoint):  # noqa: F811
    tok = checkpoint.tokenizer
    ids = tok.encode("one two three")
    spans = np.stack([np.arange(len(ids)) * 2, np.arange(len(ids)) * 2 + 1], axis=1)
    words = tr.word_spans(tok, ids, spans)
    assert [w for _, _, w in words] == ["one", "two", "three"]
    starts = [a for a, _, _ in words]
    assert starts == sorted(starts) and all(a <= b for a, b, _ in words)


@pytest.fixture(scope="module")
def long_result(checkpoint, tmp_path_factory):  # noqa: F811
    """A 3.2 s file cut into >= 4 pieces of <= 1 s; piece i says DIGITS[i]; word times on."""
    folder = tmp_path_factory.mktemp("formats")
    path = folder / "long.wav"
    write_wav(path, _bursts([0.7, 1.6, 2.4], 3.2))
    tok = checkpoint.tokenizer
    decode = make_stand_in({i: tok.encode(DIGITS[i]) for i in range(10)}, 3)
    transcriber = tr.Transcriber(
        checkpoint,
        sampler="ctc_greedy",
        batch_size=4,
        window_seconds=1.0,
        decode_fn=decode,
        word_times=True,
    )
    (result,) = transcriber.transcribe([str(path)])
    return result


def _vtt_spans(cues) -> list[tuple[float, float]]:
    """(start, end) seconds of webvtt-py captions (its *_in_seconds round down to whole s)."""
    return [
        (c.start_time.in_milliseconds() / 1e3, c.end_time.in_milliseconds() / 1e3) for c in cues
    ]


def _check_times(spans, duration):
    starts = [s for s, _ in spans]
    assert starts == sorted(starts)
    assert all(0.0 <= s <= e <= duration + 1e-3 for s, e in spans)


def test_word_times_come_from_the_ctc_alignment_and_lie_in_their_segments(long_result):
    words = long_result.words
    assert [w for _, _, w in words] == long_result.text.split()
    _check_times([(s, e) for s, e, _ in words], long_result.seconds)
    for (start, end, text), word in zip(long_result.segments, words, strict=True):
        assert word[2] == text and start <= word[0] < word[1] <= end + 1e-9
    row = long_result.to_json()
    assert [w["word"] for w in row["words"]] == long_result.text.split()


def test_srt_parses_with_the_srt_library_and_times_are_monotone(long_result):
    text = subtitles.to_srt(subtitles.transcript_cues(long_result))
    cues = list(srt.parse(text))
    assert " ".join(c.content for c in cues) == long_result.text
    _check_times(
        [(c.start.total_seconds(), c.end.total_seconds()) for c in cues], long_result.seconds
    )
    assert [c.index for c in cues] == list(range(1, len(cues) + 1))


def test_vtt_parses_with_webvtt_py_and_times_are_monotone(long_result):
    text = subtitles.to_vtt(subtitles.transcript_cues(long_result))
    cues = list(webvtt.from_string(text))
    assert " ".join(c.text for c in cues) == long_result.text
    _check_times(_vtt_spans(cues), long_result.seconds)
    # Without word times each piece is a cue with the piece's span.
    segments_only = tr.Transcript(
        long_result.audio, long_result.text, long_result.seconds, long_result.segments
    )
    cues = list(webvtt.from_string(subtitles.to_vtt(subtitles.transcript_cues(segments_only))))
    assert len(cues) == len(long_result.segments)
    assert _vtt_spans(cues)[-1][1] == pytest.approx(long_result.seconds, abs=1e-3)


def test_word_cues_respect_the_length_limits():
    words = [(0.5 * i, 0.5 * i + 0.4, f"w{i}") for i in range(40)]
    cues = subtitles.word_cues(words, max_seconds=3.0, max_words=5)
    assert " ".join(t for _, _, t in cues) == " ".join(w for _, _, w in words)
    assert all(len(t.split()) <= 5 and e - s <= 3.0 for s, e, t in cues)


def _run_cli(argv, inputs):
    from mdm_asr_jax.cli import transcribe as cli

    cli.FLAGS.unparse_flags()
    cli.FLAGS(["mdm-asr-transcribe", *argv])
    try:
        cli.main(["mdm-asr-transcribe", *map(str, inputs)])
    finally:
        cli.FLAGS.unparse_flags()


@pytest.mark.slow  # four CLI runs, each compiling the AR decoder and the CTC pass
def test_cli_writes_parseable_srt_and_vtt_files_with_word_times(checkpoint, tmp_path):  # noqa: F811
    files = [tmp_path / "a.wav", tmp_path / "b.wav"]
    write_wav(files[0], _bursts([0.7], 1.6))
    write_wav(files[1], _bursts([], 0.6, seed=1))
    common = [f"--checkpoint={checkpoint.path}", "--sampler=ar_greedy", "--window_seconds=1"]
    for fmt in ("srt", "vtt"):
        out = tmp_path / fmt
        _run_cli([*common, f"--format={fmt}", "--word_times", f"--output_dir={out}"], files)
        for path, seconds in ((out / f"a.{fmt}", 1.6), (out / f"b.{fmt}", 0.6)):
            text = path.read_text(encoding="utf-8")
            if fmt == "srt":
                spans = [(c.start.total_seconds(), c.end.total_seconds()) for c in srt.parse(text)]
            else:
                spans = _vtt_spans(webvtt.from_string(text))
            _check_times(spans, seconds)
    # jsonl with word times: a words field; plain jsonl (the default behaviour) has none.
    _run_cli([*common, "--format=jsonl", "--word_times", f"--output={tmp_path / 'w.jsonl'}"], files)
    _run_cli([*common, "--jsonl", f"--output={tmp_path / 'p.jsonl'}"], files)
    with_words = [json.loads(x) for x in (tmp_path / "w.jsonl").read_text().splitlines()]
    plain = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert all("words" in r for r in with_words) and not any("words" in r for r in plain)
    for row in with_words:
        # The random model may say more tokens than a short piece has encoder frames: that
        # piece gets no word times (documented), the others all of theirs, in order.
        text, words = iter(row["text"].split()), [w["word"] for w in row["words"]]
        assert all(any(w == t for t in text) for w in words)
        _check_times([(w["start"], w["end"]) for w in row["words"]], row["seconds"])


def test_cli_subtitles_for_several_inputs_need_an_output_dir(checkpoint, tmp_path, capsys):  # noqa: F811
    files = [tmp_path / "a.wav", tmp_path / "b.wav"]
    for f in files:
        write_wav(f, _bursts([], 0.5))
    with pytest.raises(SystemExit) as info:
        _run_cli([f"--checkpoint={checkpoint.path}", "--format=srt"], files)
    assert info.value.code == 2 and "--output_dir" in capsys.readouterr().err


def test_word_times_need_a_ctc_head(tmp_path):
    from test_eval import _make_checkpoint

    from mdm_asr_jax.checkpoint import load_checkpoint

    loaded = load_checkpoint(_make_checkpoint(tmp_path, ar=True, ctc=False))
    with pytest.raises(tr.TranscribeError, match="CTC head"):
        tr.Transcriber(loaded, sampler="ar_greedy", word_times=True)


def test_timestamps_are_formatted_per_spec():
    cues = [(3725.5, 3726.042, "a --> b\n\nc")]
    assert subtitles.to_srt(cues) == "1\n01:02:05,500 --> 01:02:06,042\na -> b c\n"
    assert subtitles.to_vtt(cues) == "WEBVTT\n\n01:02:05.500 --> 01:02:06.042\na -> b c\n"
    assert RATE == 16000
