"""Build a tiny, randomly initialised Canary-style NeMo model and save it as a `.nemo` archive.

Used by the NeMo parity tests (they run in their own virtual environment, see
`.ci/run_nemo.sh`). The model has the architecture of canary-1b-flash / canary-180m-flash
(FastConformer encoder with 8x depthwise-striding subsampling, relative-position attention, macaron
feed-forward, conv module with batch norm; pre-LN Transformer decoder with sinusoidal positions and
an embedding LayerNorm; token classifier tied to the embedding; canary2 prompt format; aggregate
tokenizer of a special-token SentencePiece model and per-language SentencePiece models), only tiny.

The multitask example config of NeMo's repository is not in the wheel, so the config is written here
from what NeMo's classes require. Every norm weight, bias and batch-norm statistic is randomised after
construction (fresh init leaves them at 0/1, which would hide mapping mistakes), and the output
bias is randomised so that EOS is sometimes likely.
"""

from __future__ import annotations

import os
import pathlib

import torch
from omegaconf import OmegaConf

GUTENBERG = pathlib.Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "text"

# Widths: encoder 64, decoder 96 (different, so NeMo inserts the encoder->decoder projection, as in
# canary-180m-flash); 2 layers each; 4 heads.
TINY = dict(
    num_mels=128,
    enc_width=64,
    enc_layers=2,
    enc_heads=4,
    subsampling_channels=32,
    conv_kernel=9,
    dec_width=96,
    dec_layers=2,
    dec_heads=4,
    lang_vocab=160,
)

SPECIAL_TOKENS = [
    "<|startofcontext|>",
    "<|emo:undefined|>",
    "<|emo:neutral|>",
    "<|en|>",
    "<|fr|>",
    "<|transcribe|>",
    "<|translate|>",
    "<|itn|>",
    "<|noitn|>",
    "<|timestamp|>",
    "<|notimestamp|>",
    "<|diarize|>",
    "<|nodiarize|>",
]


def _text_lines(lang: str, limit: int = 3000) -> list[str]:
    path = GUTENBERG.resolve() / f"gutenberg_{lang}.txt"
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[:limit]


def build_tokenizers(workdir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Train the special-token and per-language SentencePiece models; return their folders."""
    from nemo.collections.common.tokenizers.canary_tokenizer import CanaryTokenizer
    from nemo.collections.common.tokenizers.sentencepiece_tokenizer import create_spt_model

    dirs = {}
    spl_dir = workdir / "tokenizers" / "spl_tokens"
    CanaryTokenizer.build_special_tokenizer(SPECIAL_TOKENS, spl_dir, force_rebuild=False)
    dirs["spl_tokens"] = spl_dir
    for lang in ("en", "fr"):
        lang_dir = workdir / "tokenizers" / lang
        lang_dir.mkdir(parents=True, exist_ok=True)
        text_path = lang_dir / "train_text.txt"
        text_path.write_text("\n".join(_text_lines(lang)) + "\n", encoding="utf-8")
        create_spt_model(
            str(text_path),
            vocab_size=TINY["lang_vocab"],
            sample_size=-1,
            do_lower_case=False,
            tokenizer_type="bpe",
            output_dir=str(lang_dir),
        )
        dirs[lang] = lang_dir
    return dirs


def model_config(tokenizer_dirs: dict[str, pathlib.Path]) -> dict:
    """The EncDecMultiTaskModel config of the tiny model (a dict for OmegaConf)."""
    t = TINY
    return {
        "sample_rate": 16000,
        "prompt_format": "canary2",
        "prompt_defaults": [
            {
                "role": "user",
                "slots": {
                    "decodercontext": "",
                    "emotion": "<|emo:undefined|>",
                    "source_lang": "<|en|>",
                    "target_lang": "<|en|>",
                    "pnc": "<|pnc|>",
                    "itn": "<|noitn|>",
                    "timestamp": "<|notimestamp|>",
                    "diarize": "<|nodiarize|>",
                },
            }
        ],
        "restore_timestamps_model": False,
        "model_defaults": {
            "asr_enc_hidden": t["enc_width"],
            "lm_enc_hidden": t["dec_width"],
            "lm_dec_hidden": t["dec_width"],
        },
        "tokenizer": {
            "dir": None,
            "type": "agg",
            "langs": {lang: {"dir": str(d), "type": "bpe"} for lang, d in tokenizer_dirs.items()},
            "custom_tokenizer": {
                "_target_": "nemo.collections.common.tokenizers.canary_tokenizer.CanaryTokenizer"
            },
        },
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": 16000,
            "normalize": "per_feature",
            "window_size": 0.025,
            "window_stride": 0.01,
            "window": "hann",
            "features": t["num_mels"],
            "n_fft": 512,
            "log": True,
            "frame_splicing": 1,
            "dither": 1e-5,
            "pad_to": 0,
            "pad_value": 0.0,
        },
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder",
            "feat_in": t["num_mels"],
            "feat_out": -1,
            "n_layers": t["enc_layers"],
            "d_model": t["enc_width"],
            "subsampling": "dw_striding",
            "subsampling_factor": 8,
            "subsampling_conv_channels": t["subsampling_channels"],
            "causal_downsampling": False,
            "ff_expansion_factor": 4,
            "self_attention_model": "rel_pos",
            "n_heads": t["enc_heads"],
            "att_context_size": [-1, -1],
            "xscaling": True,
            "untie_biases": True,
            "pos_emb_max_len": 5000,
            "conv_kernel_size": t["conv_kernel"],
            "conv_norm_type": "batch_norm",
            "conv_context_size": None,
            "dropout": 0.0,
            "dropout_pre_encoder": 0.0,
            "dropout_emb": 0.0,
            "dropout_att": 0.0,
        },
        "transf_encoder": {
            "_target_": "nemo.collections.asr.modules.transformer.transformer_encoders.TransformerEncoder",
            "num_layers": 0,
            "hidden_size": t["dec_width"],
            "inner_size": 4 * t["dec_width"],
            "num_attention_heads": t["dec_heads"],
            "ffn_dropout": 0.0,
            "attn_score_dropout": 0.0,
            "attn_layer_dropout": 0.0,
            "mask_future": False,
            "pre_ln": True,
            "pre_ln_final_layer_norm": True,
        },
        "transf_decoder": {
            "_target_": "nemo.collections.asr.modules.transformer.get_nemo_transformer",
            "model_name": None,
            "pretrained": False,
            "encoder": None,
            "pre_ln_final_layer_norm": True,
            "config_dict": {
                "max_sequence_length": 512,
                "num_token_types": 0,
                "embedding_dropout": 0.0,
                "learn_positional_encodings": False,
                "hidden_size": t["dec_width"],
                "inner_size": 4 * t["dec_width"],
                "num_layers": t["dec_layers"],
                "num_attention_heads": t["dec_heads"],
                "ffn_dropout": 0.0,
                "attn_score_dropout": 0.0,
                "attn_layer_dropout": 0.0,
                "hidden_act": "relu",
                "pre_ln": True,
                "vocab_size": None,
            },
        },
        "head": {
            "_target_": "nemo.collections.asr.parts.submodules.token_classifier.TokenClassifier",
            "num_layers": 1,
            "activation": "relu",
            "log_softmax": True,
            "hidden_size": t["dec_width"],
            "num_classes": None,
            "dropout": 0.0,
            "use_transformer_init": True,
        },
        "loss": {
            "_target_": "nemo.collections.common.losses.smoothed_cross_entropy.SmoothedCrossEntropyLoss",
            "label_smoothing": 0.0,
            "pad_id": None,
        },
    }


@torch.no_grad()
def randomise_statistics(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every norm weight/bias, batch-norm statistic, attention bias and output bias a random
    value, so that a converter that drops or swaps any of them fails the parity test."""
    gen = torch.Generator().manual_seed(seed)

    def rand_like(t: torch.Tensor, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(t.shape, generator=gen, dtype=t.dtype)

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.copy_(rand_like(module.running_mean, -0.5, 0.5))
            module.running_var.copy_(rand_like(module.running_var, 0.5, 2.0))
            module.weight.copy_(rand_like(module.weight, 0.5, 1.5))
            module.bias.copy_(rand_like(module.bias, -0.3, 0.3))
        elif isinstance(module, torch.nn.LayerNorm):
            module.weight.copy_(rand_like(module.weight, 0.5, 1.5))
            module.bias.copy_(rand_like(module.bias, -0.3, 0.3))
    for name, param in model.named_parameters():
        if name.endswith("pos_bias_u") or name.endswith("pos_bias_v"):
            param.copy_(rand_like(param, -0.5, 0.5))
        elif name.endswith(".bias") and "norm" not in name:
            param.add_(rand_like(param, -0.1, 0.1))


def build_tiny_canary(workdir: str | os.PathLike, seed: int = 0):
    """Build, randomise and save the tiny model; return (model in eval mode, path of the .nemo)."""
    from nemo.collections.asr.models import EncDecMultiTaskModel

    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    dirs = build_tokenizers(workdir)
    cfg = OmegaConf.create(model_config(dirs))
    model = EncDecMultiTaskModel(cfg=cfg, trainer=None)
    randomise_statistics(model, seed=seed)
    model.eval()
    path = workdir / "tiny_canary.nemo"
    model.save_to(str(path))
    return model, path


if __name__ == "__main__":
    import sys
    import tarfile

    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny_canary")
    model, path = build_tiny_canary(out)
    print(path)
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            print("archive:", member.name, member.size)
    for name, tensor in model.state_dict().items():
        print("tensor:", name, tuple(tensor.shape), tensor.dtype)
    print(model.prompt.encode_dialog(model.prompt.get_default_dialog_slots())["context_ids"])
    print("vocab", model.tokenizer.vocab_size, model.tokenizer.special_tokens)
