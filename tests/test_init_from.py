"""A video model built from an image model (videoqf.pretrained.video / init_from): at initialisation it computes
what the image model computes on a static clip, and it says what it copied and what is new."""
import pytest
import torch

from _tiny import model_config
from videoqf.data.batch import CACHED_FRAMES
from videoqf.data.synthetic import load_tokenizer
from videoqf.models.video_lm import VideoLanguageModel
from videoqf.pretrained.init_from import InitError, init_from_image
from videoqf.pretrained.video import video_from_image

FRAMES, TOKENS, WIDTH = 4, 17, 192  # vit_tiny at 64 px: a 4 x 4 grid + [CLS], 192 wide


@pytest.fixture(scope="module")
def image_model(synthetic_dir, tmp_path_factory):
    """The blip2 recipe's model (meanpool over one frame), its weights moved off their init so a copy is told apart."""
    torch.manual_seed(0)
    model = VideoLanguageModel(model_config("meanpool", tmp_path_factory.mktemp("cfg")), load_tokenizer(synthetic_dir))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def static(seed=0, frames=FRAMES):
    """One frame's features [1, 1, N, D] and the clip of ``frames`` copies of it."""
    one = torch.randn(1, 1, TOKENS, WIDTH, generator=torch.Generator().manual_seed(seed))
    batch = lambda x: {CACHED_FRAMES: x, "frame_mask": torch.ones(x.shape[:2], dtype=torch.bool)}  # noqa: E731
    return batch(one), batch(one.expand(-1, frames, -1, -1).contiguous())


@torch.no_grad()
def test_cascaded_frame_qformer_gives_each_frame_the_image_qformers_queries(image_model):
    video, report = video_from_image(image_model, "cascaded")
    seen = []
    video.backend.frame_qformer.register_forward_hook(lambda m, args, out: seen.append(out.query_output))
    frame, clip = static()
    video.encode(clip, audio=False)
    image = image_model.encode(frame).tokens[0]  # meanpool over one frame: the image Q-Former's queries
    (per_frame,) = seen
    assert per_frame.shape[0] == FRAMES
    for t in range(FRAMES):
        torch.testing.assert_close(per_frame[t], image, atol=1e-5, rtol=0)
    assert all(n.startswith("backend.frame_qformer.") or n.startswith(("backend.ln_vision.", "vision_norm.", "audio_norm."))
               for n in report.copied)
    assert any(n.startswith("backend.head.") for n in report.new)  # the video Q-Former is new
    assert any(n.startswith("backend.frame_position.") for n in report.new)
    assert any(n.startswith("bridge.projector.") for n in report.new)


@torch.no_grad()
def test_spatiotemporal_queries_on_a_static_clip_are_the_image_models(image_model):
    video, report = video_from_image(image_model, "spatiotemporal", num_frames=FRAMES)
    frame, clip = static(seed=1)
    image = image_model.encode(frame).tokens
    torch.testing.assert_close(video.encode(clip).tokens, image, atol=1e-5, rtol=0)
    experts = video.backend.head.layers[0].ffn.experts
    assert set(experts) == {"spatial", "temporal", "semantic"}
    for name in experts:  # every expert starts as the image Q-Former's query FFN
        assert report.copied[f"backend.head.layers.0.ffn.experts.{name}.up.weight"] == \
            "backend.head.layers.0.ffn.experts.query.up.weight"
    assert video.backend.frame_position.num_positions == FRAMES
    # the init is about static clips: a clip whose frames differ gets other queries than its first frame
    _, moving = static(seed=2)
    moving[CACHED_FRAMES][:, 1:] += torch.randn_like(moving[CACHED_FRAMES][:, 1:])
    assert not torch.allclose(video.encode(moving).tokens, image, atol=1e-3)


@torch.no_grad()
def test_a_training_runs_spatiotemporal_init_keeps_its_fresh_frame_table(image_model):
    exact, _ = video_from_image(image_model, "spatiotemporal", num_frames=FRAMES)
    torch.manual_seed(1)
    model = VideoLanguageModel(exact.config, image_model.tokenizer).eval()
    fresh = model.backend.frame_position.table.clone()
    report = init_from_image(model, image_model, exact_on_static_clips=False)  # as init_run_model (model.init_from)
    table = model.backend.frame_position.table
    assert torch.equal(table, fresh) and 0.5 < table.std() < 2  # N(0, 1), as from scratch
    assert "backend.frame_position.table" in report.new
    _, clip = static(seed=1)
    assert not torch.allclose(model.encode(clip).tokens, exact.encode(clip).tokens, atol=1e-3)
    table.zero_()  # the frame offsets are its only departure from the exact init
    torch.testing.assert_close(model.encode(clip).tokens, exact.encode(clip).tokens, atol=1e-5, rtol=0)


@torch.no_grad()
def test_framewise_on_one_frame_captions_as_the_image_model(image_model):
    video, report = video_from_image(image_model, "framewise")
    assert not report.new  # InstructBLIP-Video is BLIP-2's Q-Former per frame: nothing new
    frame, _ = static(seed=3)
    torch.manual_seed(0)
    kwargs = dict(max_new_tokens=6, do_sample=False)
    assert video.caption(frame, **kwargs) == image_model.caption(frame, **kwargs)
    torch.testing.assert_close(video.encode_for_llm(frame, None).tokens, image_model.encode_for_llm(frame, None).tokens)


def test_init_from_a_video_model_is_refused(image_model):
    video, _ = video_from_image(image_model, "cascaded")
    with pytest.raises(InitError, match="image model"):
        video_from_image(video, "spatiotemporal")


def test_pooled_takes_the_frozen_side_only_and_says_what_is_new(image_model):
    video, report = video_from_image(image_model, "pooled")
    assert {n.split(".")[1] for n in report.copied if n.startswith("backend.")} == {"ln_vision"}
    assert any(n.startswith("backend.head.") for n in report.new) and any(n.startswith("backend.proj.") for n in report.new)
    assert "backend.head" in report.summary()


@torch.no_grad()
def test_a_released_blip2_folder_builds_every_video_variant(tmp_path):
    import _hf_tiny as H
    from videoqf.pretrained import load_pretrained

    H.build("blip2-opt", tmp_path)
    image = load_pretrained(tmp_path)
    frame = {"frames": torch.randn(1, 1, 3, H.IMAGE_SIZE, H.IMAGE_SIZE), "frame_mask": torch.ones(1, 1, dtype=torch.bool)}
    clip = {"frames": frame["frames"].expand(-1, 3, -1, -1, -1), "frame_mask": torch.ones(1, 3, dtype=torch.bool)}
    video = load_pretrained(tmp_path, variant="spatiotemporal", num_frames=3)
    assert not [n for n in video.init_report.new if n.startswith(("backend.head.", "bridge."))]
    torch.testing.assert_close(video.encode(clip).tokens, image.encode(frame).tokens, atol=1e-5, rtol=0)
    torch.testing.assert_close(video.bridge.projector.net.weight, image.bridge.projector.net.weight)
    for variant in ("cascaded", "pooled"):
        model = load_pretrained(tmp_path, variant=variant)
        assert model.init_report.copied and model.encode(clip).tokens.isfinite().all()
    with pytest.raises(TypeError, match="num_frames"):
        load_pretrained(tmp_path, variant="pooled", num_frames=3)
