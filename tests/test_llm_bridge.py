"""Stage-2 bridge on tiny GPT-2 and T5 configs: loss only on caption tokens, frozen LLM that still
passes gradients to its inputs, deterministic greedy generation, cache == no cache."""
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from torch import nn

from videoqf.llm.bridge import VideoLLMBridge
from videoqf.llm.config import LLMConfig, ProjectorConfig
from videoqf.llm.frozen_lm import FrozenLLM
from videoqf.llm.projector import Projector
from videoqf.llm.tokenizer import load_tokenizer

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[BOS]"]
SENTENCES = [
    "a red ball rolls to the left",
    "a blue square moves up",
    "the green circle bounces twice",
    "a small red square spins slowly",
    "two balls collide and stop",
    "describe the video",
    "what happens in the clip",
]
H, M = 12, 3


def train_tiny_tokenizer(path, sentences=SENTENCES):
    """A WordPiece tokenizer.json trained in the test, written to `path`; returns the path."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(sentences, trainers.WordPieceTrainer(vocab_size=200, special_tokens=SPECIALS))
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_tokenizer(train_tiny_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json"))


def model_config(arch, tokenizer):
    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    if arch == "causal":
        return {"model_type": "gpt2", "vocab_size": len(tokenizer), "n_positions": 64, "n_embd": 16,
                "n_layer": 2, "n_head": 2, "bos_token_id": tokenizer.bos_token_id, **ids}
    return {"model_type": "t5", "vocab_size": len(tokenizer), "d_model": 16, "d_kv": 8, "d_ff": 32,
            "num_layers": 2, "num_heads": 2, "decoder_start_token_id": tokenizer.pad_token_id, **ids}


def make_bridge(arch, tokenizer, **kw):
    torch.manual_seed(0)
    cfg = LLMConfig(arch=arch, model_config=model_config(arch, tokenizer), projector=ProjectorConfig(kind="mlp"),
                    **kw)
    return VideoLLMBridge.from_config(cfg, video_dim=H, tokenizer=tokenizer)


def video_batch(batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, M, H, generator=gen)
    mask = torch.ones(batch, M, dtype=torch.bool)
    mask[-1, -1] = False
    return tokens, mask


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_only_caption_tokens_carry_loss(arch, tokenizer):
    bridge = make_bridge(arch, tokenizer)
    tokens, mask = video_batch()
    captions = ["a red ball rolls", "two balls collide and stop"]
    prompts = ["describe the video", "what happens"]
    out = bridge(tokens, mask, captions, prompts)
    caption_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for c in captions]
    for row, ids in zip(out.labels.tolist(), caption_ids):
        assert [t for t in row if t != -100] == ids

    # Reference: the LM's mean cross-entropy over exactly the caption positions.
    logits = out.logits
    if arch == "causal":
        logits, targets = logits[:, :-1], out.labels[:, 1:]
    else:
        targets = out.labels
    keep = targets != -100
    ref = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(out.loss, ref)

    # Another prompt, or another padded video token, changes the input but the labels stay caption-only.
    other = bridge(tokens, mask, captions, ["what happens in the clip", "describe"])
    assert [t for t in other.labels[0].tolist() if t != -100] == caption_ids[0]
    assert not torch.isclose(other.loss, out.loss)
    tokens2 = tokens.clone()
    tokens2[-1, -1] += 100.0  # masked-out video token
    torch.testing.assert_close(bridge(tokens2, mask, captions, prompts).loss, out.loss)


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_caption_log_likelihood_is_the_per_caption_loss(arch, tokenizer):
    bridge = make_bridge(arch, tokenizer)
    tokens, mask = video_batch()
    captions = ["a red ball rolls", "two balls collide and stop"]
    scores = bridge.caption_log_likelihood(tokens, mask, captions)
    assert scores.shape == (2,) and (scores < 0).all()
    for i, caption in enumerate(captions):  # alone, each is minus its mean loss times its token count
        alone = bridge(tokens[i : i + 1], mask[i : i + 1], [caption])
        count = (alone.labels != -100).sum()
        torch.testing.assert_close(scores[i], -alone.loss * count, rtol=1e-5, atol=1e-5)
    other = tokens.clone()
    other[0, 0] += 1.0  # a real video token: the score hears it
    assert not torch.isclose(bridge.caption_log_likelihood(other, mask, captions)[0], scores[0])


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_frozen_llm_passes_gradients_to_projector_and_backend(arch, tokenizer):
    bridge = make_bridge(arch, tokenizer)
    backend = nn.Linear(5, H)  # stands for the video backend
    bridge.train()
    assert not bridge.llm.model.training and bridge.projector.training
    assert all(not m.training for m in bridge.llm.modules())
    features, mask = video_batch()
    features = features[..., :5]
    out = bridge(backend(features), mask, ["a red ball", "a blue square moves up"])
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in bridge.llm.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in bridge.projector.parameters())
    assert backend.weight.grad is not None and backend.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_greedy_generation_deterministic_and_cache_invariant(arch, tokenizer):
    bridge = make_bridge(arch, tokenizer, prompt="describe the video")
    tokens, mask = video_batch(batch=3, seed=1)
    prompts = ["describe the video", "what happens in the clip", "describe"]
    first = bridge.generate(tokens, mask, prompts, max_new_tokens=8)
    again = bridge.generate(tokens, mask, prompts, max_new_tokens=8)
    no_cache = bridge.generate(tokens, mask, prompts, max_new_tokens=8, use_cache=False)
    assert first == again == no_cache
    assert len(first) == 3 and any(first)
    # Batched equals one by one (left padding and position ids are right).
    single = [bridge.generate(tokens[i : i + 1], mask[i : i + 1], prompts[i : i + 1], max_new_tokens=8)[0]
              for i in range(3)]
    assert single == first
    beams = bridge.generate(tokens, mask, prompts, max_new_tokens=8, num_beams=3)
    torch.manual_seed(0)
    sampled = bridge.generate(tokens, mask, None, max_new_tokens=8, do_sample=True, top_p=0.9)
    assert len(beams) == len(sampled) == 3


def test_generation_stops_at_eos(tokenizer):
    bridge = make_bridge("causal", tokenizer)
    # A bias making EOS overwhelmingly likely: generation must stop at once, leaving "".
    head = bridge.llm.model.lm_head
    head.bias = nn.Parameter(torch.zeros(head.out_features), requires_grad=False)
    head.bias.data[tokenizer.eos_token_id] = 10.0
    tokens, mask = video_batch()
    assert bridge.generate(tokens, mask, max_new_tokens=5) == ["", ""]


def test_instruction_aware_hands_prompts_back(tokenizer):
    bridge = make_bridge("causal", tokenizer, prompt="describe the video", instruction_aware=True)
    tokens, mask = video_batch()
    assert bridge.instructions_for_qformer(None, 2) == ["describe the video"] * 2
    out = bridge(tokens, mask, ["a", "b"], ["what happens", "describe"])
    assert out.instructions == ["what happens", "describe"]
    assert make_bridge("causal", tokenizer).instructions_for_qformer(None, 2) is None


def test_missing_local_dir_is_a_clear_error(tmp_path):
    missing = tmp_path / "no_such_llm"
    with pytest.raises(FileNotFoundError, match="no_such_llm"):
        FrozenLLM.from_config(LLMConfig(path=str(missing)))
    with pytest.raises(FileNotFoundError, match="no_such_tok"):
        load_tokenizer(tmp_path / "no_such_tok")
    with pytest.raises(ValueError, match="exactly one"):
        LLMConfig()


def test_projector_kinds():
    assert isinstance(Projector(4, 6).net, nn.Linear)
    mlp = Projector(4, 6, kind="mlp", hidden_dim=10)
    assert mlp(torch.randn(2, 3, 4)).shape == (2, 3, 6)
    assert isinstance(mlp.net[1], nn.GELU) and mlp.net[0].out_features == 10
    with pytest.raises(ValueError, match="kind"):
        Projector(4, 6, kind="conv")


def test_flatten_projector_mixes_every_token_and_ignores_masked_ones():
    proj = Projector(4, 6, kind="flatten", num_tokens=3)
    tokens = torch.randn(2, 3, 4, requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    out = proj(tokens, mask)
    assert out.shape == (2, 3, 6) and proj.mixes_tokens
    out[:, 0].sum().backward()  # the first LLM token reads every real video token, and no masked one
    reads = tokens.grad.abs().sum(-1) > 0
    assert torch.equal(reads, mask)
    garbage = tokens.detach().clone()
    garbage[0, 2] = 1e4
    assert torch.allclose(proj(garbage, mask), out.detach())
    with pytest.raises(ValueError, match="built for 3 video tokens, got 4"):
        proj(torch.randn(2, 4, 4))
    with pytest.raises(ValueError, match="number of video tokens"):
        Projector(4, 6, kind="flatten")
    assert not Projector(4, 6).mixes_tokens
