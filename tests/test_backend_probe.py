"""benchmarks/backend_probe.py: its loss and accuracy leave out the event slots a clip does not have."""
import torch

from benchmarks.backend_probe import CLASSES, probe_loss


def test_missing_slots_are_left_out_of_the_loss():
    g = torch.Generator().manual_seed(0)
    outputs = [torch.randn(4, n, generator=g) for n in CLASSES * 3]
    labels = torch.tensor([[0, 1, 2, 1, 0, 3, -1, -1, -1]] * 2 + [[1, 2, 0, 3, 1, 5, 2, 0, 1]] * 2)
    present = [torch.nn.functional.cross_entropy(o[labels[:, j] >= 0], labels[labels[:, j] >= 0, j])
               for j, o in enumerate(outputs)]
    assert torch.allclose(probe_loss(outputs, labels), sum(present))
    assert probe_loss(outputs, labels).isfinite()
