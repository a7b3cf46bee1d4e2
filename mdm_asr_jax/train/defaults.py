"""The base training config: every key a config file may set is declared here.

Config files in `configs/` call `base_config()`, override what they need and return it;
`mdm-asr-train` locks it, so a typo in `--config.x=...` is an error, not a silent new key.
"""

from __future__ import annotations

import ml_collections

from mdm_asr_jax.diffusion.samplers import DEFAULT_NFE, PAPER_SAMPLER


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    # Named data recipe run before training (cached in WORKDIR/data):
    # "" | "demo" | "digits" | "whisper_synth".
    c.recipe = ""
    c.recipe_options = ml_collections.ConfigDict(
        dict(
            num_train=2000,  # synthesised training utterances
            num_dev=100,
            num_test=200,
            fsdd_dir="",  # FSDD recordings for the digits recipe ("" = ../shared/data/fsdd if present)
            test_speaker="george",  # FSDD speaker held out for the test set
            num_workers=2,
            # whisper_synth only:
            text_file="",  # one sentence per line ("" = ../shared/data/text/gutenberg_en.txt)
            min_words=4,
            max_words=16,
            fsdd_train=300,  # FSDD connected-digit utterances added to train
            fsdd_test=100,  # ... and from the held-out speaker, the test_fsdd set
            # whisper_multilingual only:
            text_dir="",  # folder of gutenberg_{lang}.txt ("" = ../shared/data/text)
            languages="en,fr,de,es",  # comma-separated eSpeak languages; counts are per language
        )
    )

    c.data = ml_collections.ConfigDict(
        dict(
            train_manifest="",
            dev_manifest="",
            test_manifest="",
            train_tfds="",  # e.g. "librispeech/train_clean100" (tfds name/split), read via data_source
            dev_tfds="",
            tfds_data_dir="",
            batch_size=16,  # global batch (split over processes and the data/fsdp mesh axes)
            eval_batch_size=16,
            frame_buckets=(400, 800, 1600, 3000),  # feature frames a batch is padded to
            max_seconds=30.0,  # longer utterances are dropped (and reported)
            num_workers=0,  # grain worker processes (0 = in-process)
            shuffle=True,
            strict=False,  # fail on the first bad manifest line instead of reporting and skipping
        )
    )

    c.features = ml_collections.ConfigDict(dict(kind="whisper", num_mels=80))

    c.tokenizer = ml_collections.ConfigDict(
        dict(
            path="",  # an existing SentencePiece .model; "" = train one on the training transcripts
            vocab_size=256,
            model_type="unigram",
            lowercase=True,
        )
    )

    c.model = ml_collections.ConfigDict(
        dict(
            encoder_kind="conformer",
            encoder_size="tiny",  # row of nn.config.ENCODER_SIZES
            decoder_size="tiny",  # row of nn.config.DECODER_SIZES
            subsampling=4,
            subsampling_channels=0,  # conv channels of the subsampling stages; 0 = width
            mdm=True,  # masked-diffusion decoder
            ar=False,  # autoregressive decoder on the same encoder (baseline)
            ctc=False,  # CTC head on the encoder
            max_length=0,  # decoder positions; 0 = prompt + objective.canvas_length
            dropout=0.1,
            dtype="float32",  # compute dtype (bfloat16 on TPU/GPU)
            param_dtype="float32",
            # A converted checkpoint (mdm-asr-convert) whose architecture, tokenizer and features
            # to fine-tune; "" = build the model from the size tables above.
            base_checkpoint="",
            init_from="",  # checkpoint directory to copy weights from ("" = base_checkpoint)
            init_map=(),  # ((target prefix, source prefix), ...); () = same names
            # Whisper base checkpoints: encoder window in frames (-1 = the checkpoint's, i.e.
            # 30 s; 0 = run inputs as padded by data.frame_buckets, e.g. 5/10 s windows).
            encoder_min_frames=-1,
            # Deep models: identical blocks as one nn.scan over stacked parameters (compile time
            # independent of depth; parameter names `blocks`/`layers`, see nn.stack; loop-layout
            # checkpoints given to init_from are stacked on load).
            scan_layers=False,
            # Recompute block activations in the backward pass (less memory, more compute):
            # "none" | "full" | "dots_saveable" | "dots_with_no_batch_dims_saveable".
            remat="none",
            # MDM logits of canvas slot i read from the decoder output at slot i - 1 (the last
            # prompt token for slot 0): the layout of an AR decoder's next-token head, kept
            # when the MDM decoder starts from an AR one (a base trained with it keeps it).
            mdm_shift=False,
        )
    )

    c.objective = ml_collections.ConfigDict(
        dict(
            mdm_weight=1.0,
            ar_weight=0.0,
            ctc_weight=0.0,
            canvas_length=64,  # MDM canvas (paper: 256); transcripts + EOS padding
            schedule="linear",  # alpha_t = 1 - t (paper) | cosine
            eps=1e-3,
            low_discrepancy=True,
            count_padding_eos=True,
            isct_steps=2,  # K (paper: 2); 1 = plain MDM
            later_times="independent",  # t_k for k >= 2: independent | same | lower
            prediction="argmax",  # x_k from logits: argmax | sample
            step_weights=(),  # per-step loss weights; () = all 1
            # MDM loss per real target token (transcript + first EOS), like the AR and CTC
            # losses; "canvas" divides by every canvas slot (most of them EOS padding).
            normalize="real_tokens",
            time_weight="elbo",  # w(t): elbo (1/t, paper) | capped | masked_mean
            time_weight_cap=10.0,  # for time_weight="capped"
            exclude_special=True,  # [MASK] / pad / prompt / special ids: no training probability
            isct_deterministic_first=False,  # ISCT step 1 without dropout
            tail_mask_prob=0.0,  # P(an utterance's whole EOS tail is masked): unknown length
            suffix_mask_prob=0.0,  # P(a canvas is masked as a suffix): left-to-right states
            mdm_warmup_steps=0,  # MDM weight ramps from 0 over these steps (CTC/AR align first)
            mdm_start_step=0,  # MDM loss off before this step (then the warm-up above)
            # The paper's recipe in one run: at mdm_start_step the MDM decoder is overwritten
            # with the (by then trained) AR decoder's weights, then both train on.
            mdm_from_ar=False,
            spec_augment=True,
            freq_masks=2,
            freq_width=15,
            time_masks=2,
            time_width_ratio=0.05,
        )
    )

    c.optim = ml_collections.ConfigDict(
        dict(
            learning_rate=1e-3,
            warmup_steps=500,
            decay="cosine",  # cosine | linear | constant | rsqrt
            end_factor=0.0,
            b1=0.9,
            b2=0.98,
            eps=1e-9,
            weight_decay=0.01,
            clip_norm=1.0,
            # k train steps (micro-batches of data.batch_size) per optimiser update; the
            # step-valued keys (train.num_steps, warmup_steps) still count train steps.
            grad_accum_steps=1,
            ema_decay=0.0,  # > 0 keeps EMA params, used for eval and export
            freeze=(),  # regexes over 'a/b/c' param paths, e.g. ("encoder/.*",)
            lr_multipliers=(),  # ((regex, multiplier), ...)
        )
    )

    c.train = ml_collections.ConfigDict(
        dict(
            num_steps=10_000,
            log_every=50,
            eval_every=1000,  # 0 = no periodic eval
            checkpoint_every=1000,
            keep_checkpoints=3,
            async_checkpointing=True,
            # orbax's OCDBT array format (one manifest per step); False writes one
            # TensorStore directory per array instead (e.g. for a GCS emulator that rejects
            # OCDBT's conditional writes). Restore reads either.
            checkpoint_ocdbt=True,
            # Frozen encoder only (optim.freeze covers encoder/.*, no SpecAugment): compute each
            # training utterance's encoder output once and reuse it in later epochs.
            cache_encoder=False,
            # "FIRST,LAST": jax.profiler trace of train steps FIRST..LAST (1-based) written to
            # WORKDIR/profile (e.g. "10,15"); "" = no trace.
            profile_steps="",
            # A rerun in a workdir must have the config it was trained with, except the keys of
            # train.resume.ALWAYS_ALLOWED (num_steps, logging, eval, mesh); True accepts any
            # change (printed as a diff), e.g. a new learning rate for the remaining steps.
            allow_config_change=False,
        )
    )

    c.mesh = ml_collections.ConfigDict(
        dict(
            shape=(-1, 1, 1),  # (data, fsdp, tensor); -1 = the remaining devices
            rules=(),  # logical axis rules; () = train.sharding.DEFAULT_RULES
            multihost=False,  # call jax.distributed.initialize() (TPU pods, multi-node GPU)
            coordinator_address="",  # "" = auto-detect (TPU, SLURM); else "host:port" and the two below
            num_processes=1,
            process_id=0,
        )
    )

    c.eval = ml_collections.ConfigDict(
        dict(
            sampler=PAPER_SAMPLER,
            nfe=DEFAULT_NFE,
            normalizer="english",
            max_utterances=0,  # 0 = the whole dev set
            final_samplers=(PAPER_SAMPLER,),  # evaluated on the test set at the end
            # more decoders scored on dev at every periodic eval (WORKDIR/curve.jsonl holds
            # the WER-vs-steps curve of these and of `sampler`), e.g. ("ar_greedy",)
            curve_samplers=(),
        )
    )
    # Named evaluations (train/evals.py): `c.evals.<name> = named_eval(source, ...)`, each with
    # its own decoder, NFE, normaliser and schedule, e.g. a second test set that needs another
    # normaliser, or LibriSpeech dev-clean next to dev-other.
    c.evals = ml_collections.ConfigDict()
    return c
