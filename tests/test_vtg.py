"""VTG loss against an explicit token-by-token reference: values and gradients."""
import torch

from videoqf.objectives.vtg import decoder_input_ids, video_grounded_generation_loss


def reference_loss(logits, ids, mask, eps):
    total, count = 0.0, 0
    vocab = logits.shape[-1]
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1] - 1):
            if not mask[b, t + 1]:
                continue
            logp = logits[b, t] - torch.logsumexp(logits[b, t], 0)
            target = ids[b, t + 1]
            total = total - (1 - eps) * logp[target] - eps * logp.sum() / vocab
            count += 1
    return total / count


def test_vtg_loss_matches_reference_values_and_grads():
    torch.manual_seed(0)
    ids = torch.tensor([[5, 3, 7, 2, 0], [5, 9, 0, 0, 0], [5, 1, 1, 4, 8]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]).bool()
    logits = torch.randn(3, 5, 11, dtype=torch.float64, requires_grad=True)
    loss = video_grounded_generation_loss(logits, ids, mask, label_smoothing=0.1)
    (grad,) = torch.autograd.grad(loss, logits)
    ref = reference_loss(logits, ids, mask, 0.1)
    (ref_grad,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grad, ref_grad)
    # The last position and padded positions predict nothing.
    assert grad[:, -1].abs().max() == 0
    assert grad[1, 2:].abs().max() == 0


def test_padding_tokens_do_not_change_loss():
    torch.manual_seed(1)
    ids = torch.tensor([[5, 3, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0]]).bool()
    logits = torch.randn(1, 5, 11)
    other = ids.clone()
    other[0, 3:] = torch.tensor([4, 6])
    torch.testing.assert_close(
        video_grounded_generation_loss(logits, ids, mask),
        video_grounded_generation_loss(logits, other, mask),
    )


def test_decoder_input_ids_replaces_first_token_only():
    ids = torch.tensor([[101, 3, 4], [101, 5, 0]])
    out = decoder_input_ids(ids, 7)
    assert out.tolist() == [[7, 3, 4], [7, 5, 0]]
    assert ids[0, 0] == 101
