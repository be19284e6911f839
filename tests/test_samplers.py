"""Frame samplers: count, order, range, seed determinism and the short-clip rule."""
import numpy as np
import pytest

from videoqf.data.samplers import SAMPLERS, SampledFrames, build_sampler

FIXED_COUNT = ["uniform", "random_segment", "head_tail", "middle"]


@pytest.mark.parametrize("name", FIXED_COUNT)
@pytest.mark.parametrize("num_video_frames", [8, 9, 31, 300])
def test_count_sorted_in_range_all_real(name, num_video_frames):
    out = build_sampler(name, num_frames=8)(num_video_frames, 30.0, rng=0)
    assert isinstance(out, SampledFrames)
    assert len(out.indices) == 8 and out.mask == [True] * 8
    assert out.indices == sorted(out.indices)
    assert len(set(out.indices)) == 8  # no repeats when the clip is long enough
    assert 0 <= out.indices[0] and out.indices[-1] < num_video_frames


def test_uniform_takes_segment_midpoints():
    assert build_sampler("uniform", num_frames=4)(16, 8.0).indices == [1, 5, 9, 13]
    assert build_sampler("middle", num_frames=4)(16, 8.0).indices == [6, 7, 8, 9]


@pytest.mark.parametrize("name", ["random_segment", "head_tail"])
def test_random_samplers_are_seeded(name):
    sampler = build_sampler(name, num_frames=8)
    runs = {tuple(sampler(200, 25.0, rng=seed).indices) for seed in range(6)}
    assert len(runs) > 1  # the seed matters
    assert sampler(200, 25.0, rng=3).indices == sampler(200, 25.0, rng=3).indices
    gen_a, gen_b = np.random.default_rng(5), np.random.default_rng(5)
    assert sampler(200, 25.0, rng=gen_a).indices == sampler(200, 25.0, rng=gen_b).indices


def test_random_segment_stays_in_its_segments():
    for seed in range(20):
        idx = build_sampler("random_segment", num_frames=4)(40, 10.0, rng=seed).indices
        assert [i // 10 for i in idx] == [0, 1, 2, 3]


def test_head_tail_splits_between_halves():
    for seed in range(20):
        idx = build_sampler("head_tail", num_frames=5)(100, 10.0, rng=seed).indices
        assert sum(i < 50 for i in idx) == 3 and sum(i >= 50 for i in idx) == 2


@pytest.mark.parametrize("name", FIXED_COUNT)
def test_short_clip_repeats_last_frame_masked(name):
    out = build_sampler(name, num_frames=8)(5, 8.0, rng=1)
    assert out.indices == [0, 1, 2, 3, 4, 4, 4, 4]
    assert out.mask == [True] * 5 + [False] * 3


def test_fps_sampler_rate_and_cap():
    sampler = build_sampler("fps", num_frames=16, target_fps=2.0)
    out = sampler(240, 30.0)  # 8 s at 2 fps -> 16 frames, one per 15-frame segment
    assert out.indices == list(range(7, 240, 15)) and all(out.mask)
    assert len(sampler(900, 30.0)) == 16  # 30 s would give 60: capped
    assert len(sampler(45, 30.0)) == 3  # 1.5 s -> 3 frames, no padding
    assert len(sampler(2, 30.0)) == 1


def test_registry_and_errors():
    assert set(SAMPLERS) == {"uniform", "random_segment", "head_tail", "fps", "middle"}
    with pytest.raises(KeyError, match="unknown sampler"):
        build_sampler("nope", num_frames=4)
    with pytest.raises(ValueError):
        build_sampler("uniform", num_frames=4)(0, 8.0)
