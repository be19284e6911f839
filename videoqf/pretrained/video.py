"""``load_pretrained(path, variant=..., num_frames=...)``: a video model of any variant built around an image checkpoint.

The video model's Q-Former sizes follow from the checkpoint's image Q-Former (a frame Q-Former is that Q-Former;
a new video Q-Former or pooled head keeps its variant's layer and query counts at the checkpoint's width and
vocabulary); its frozen encoders and LLM are the checkpoint's own (a released folder's modules are shared, not
copied; a model trained here rebuilds them from its config). ``videoqf.pretrained.init_from`` then fills it.
``num_frames`` sizes the frame position table of the variants that have one (cascaded, spatiotemporal).
"""
from __future__ import annotations

from dataclasses import asdict, replace

from videoqf.backends import backend_config
from videoqf.llm.bridge import VideoLLMBridge
from videoqf.llm.projector import Projector
from videoqf.models.video_lm import VideoLanguageModel
from videoqf.pretrained.init_from import IMAGE_VARIANTS, InitError, InitReport, check_image_model, init_from_image
from videoqf.qformer import QFormerConfig

POSITION_VARIANTS = ("cascaded", "spatiotemporal")


def expert_groups(num_queries: int) -> list[int]:
    """Spatial / temporal / semantic query groups in the 3 : 3 : 2 proportion of the 12 / 12 / 8 default."""
    side = num_queries * 3 // 8
    return [side, side, num_queries - 2 * side]


def _reader(image: QFormerConfig, like: QFormerConfig) -> QFormerConfig:
    """A new Q-Former over the image Q-Former's outputs: ``like``'s depth and queries at the image one's width."""
    return replace(image, num_layers=like.num_layers, cross_attention_frequency=like.cross_attention_frequency,
                   encoder_width=image.hidden_size, num_queries=like.num_queries, text_branch=True)


def video_backend(source, variant: str, num_frames: int | None) -> dict:
    """The backend section of the video model of ``variant`` around ``source``'s image Q-Former."""
    if variant not in (*IMAGE_VARIANTS, *POSITION_VARIANTS, "pooled"):
        raise ValueError(f"variant={variant!r}: expected one of {[*IMAGE_VARIANTS, *POSITION_VARIANTS, 'pooled']}")
    if num_frames is not None and variant not in POSITION_VARIANTS:
        raise TypeError(f"num_frames sizes the frame position table of {POSITION_VARIANTS}; {variant!r} has none")
    image = source.backend.head.config
    base = backend_config(variant, {}, preset=source.config.preset)
    frames = {"max_frames": num_frames} if num_frames is not None else {}
    if variant in IMAGE_VARIANTS:
        out = replace(base, qformer=image)
    elif variant == "cascaded":
        out = replace(base, frame_qformer=replace(image, text_branch=False),
                      video_qformer=_reader(image, base.video_qformer), audio=source.config.use_audio, **frames)
    elif variant == "spatiotemporal":
        out = replace(base, qformer=image, group_sizes=expert_groups(image.num_queries), **frames)
    else:
        out = replace(base, vision_width=image.encoder_width, head=_reader(image, base.head))
    return asdict(out)


def video_from_image(source, variant: str, *, num_frames: int | None = None, source_path: str = ""
                     ) -> tuple[VideoLanguageModel, InitReport]:
    """(the video model of ``variant`` started from the image model ``source``, in eval mode; what it copied)."""
    check_image_model(source)
    config = replace(source.config, variant=variant, backend=video_backend(source, variant, num_frames),
                     init_from=str(source_path))
    if source.config.llm is not None:  # built here from a config: the same config rebuilds its frozen encoders
        model = VideoLanguageModel(config, source.tokenizer)
        model.bridge.llm = source.bridge.llm  # the checkpoint's LLM itself (a config may name a random one)
    else:  # a released checkpoint's tower and LLM, shared; the projection is the target's own
        old = source.bridge
        bridge = VideoLLMBridge(projector=Projector(source.backend.hidden_size, old.llm.embed_dim, kind="linear"),
                                llm=old.llm, tokenizer=old.tokenizer, prompt=old.prompt,
                                instruction_aware=old.instruction_aware, max_text_len=old.max_text_len)
        model = VideoLanguageModel(config, source.tokenizer, vision=source.vision, bridge=bridge)
    report = init_from_image(model, source, source_path=str(source_path))
    return model.eval(), report


def init_run_model(model: VideoLanguageModel, path: str) -> InitReport:
    """Fill a training run's ``model`` (built from its config) from the image checkpoint at ``path``
    (``model.init_from``); the checkpoint's frozen encoders must be the ones the config builds."""
    from videoqf.models.io import frozen_hashes
    from videoqf.pretrained import load_pretrained

    source = load_pretrained(path)
    if source.config.llm is None:
        raise InitError(f"model.init_from={path}: a training run builds its encoders and LLM from its config, so it "
                        "starts from this project's image models; a released folder loads with load_pretrained(path, "
                        "variant=...)")
    ours, theirs = frozen_hashes(model), frozen_hashes(source)
    differ = [name for name in ours.keys() & theirs.keys() if ours[name] != theirs[name]]
    if differ:
        raise InitError(f"model.init_from={path}: its frozen {differ} encoder differs from the one this config builds "
                        "(check model.vision / model.audio and model.frozen_init_seed)")
    # a fresh N(0, 1) frame table, not the zero one that reads a static clip as the image model: order is learnt sooner
    return init_from_image(model, source, source_path=str(path), exact_on_static_clips=False)
