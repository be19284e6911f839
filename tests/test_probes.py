"""videoqf.eval.probes: the ridge probe reads what is linearly there and nothing that is not; the labels follow
the spec; the read-out loss leaves out the event slots a clip does not have."""
import math

import torch

from videoqf.eval.probes import CLASSES, EVENT_ACTIONS, event_labels, probe_loss, ridge_accuracy


def test_probe_reads_a_linear_signal_and_not_noise():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (400,), generator=g)
    noise = torch.randn(400, 100, generator=g, dtype=torch.float64)
    signal = noise.clone()
    signal[:, :4] += 5.0 * torch.nn.functional.one_hot(labels, 4).double()
    train, test = slice(0, 300), slice(300, 400)
    assert ridge_accuracy(signal[train], labels[train], signal[test], labels[test], 0.1) > 0.9
    assert ridge_accuracy(noise[train], labels[train], noise[test], labels[test], 0.1) < 0.45  # chance 0.25
    missing = labels.clone()
    missing[::2] = -1  # slots a clip does not have are left out, not scored
    assert ridge_accuracy(signal[train], missing[train], signal[test], missing[test], 0.1) > 0.9
    none = torch.full_like(labels, -1)  # no clip has the attribute: nothing to fit or score
    assert math.isnan(ridge_accuracy(signal[train], none[train], signal[test], labels[test], 0.1))
    assert math.isnan(ridge_accuracy(signal[train], labels[train], signal[test], none[test], 0.1))


def test_event_labels_follow_the_spec_in_order():
    record = {"spec": {"events": [
        {"action": "moves", "direction": "up", "shape": "circle", "colour": "blue"},
        {"action": "turns", "shape": "square", "colour": "red", "new_colour": "green"},
    ]}}
    assert event_labels(record) == [2, 1, EVENT_ACTIONS.index("moves up"), 0, 0, EVENT_ACTIONS.index("turns"),
                                    -1, -1, -1]


def test_missing_slots_are_left_out_of_the_loss():
    g = torch.Generator().manual_seed(0)
    outputs = [torch.randn(4, n, generator=g) for n in CLASSES * 3]
    labels = torch.tensor([[0, 1, 2, 1, 0, 3, -1, -1, -1]] * 2 + [[1, 2, 0, 3, 1, 5, 2, 0, 1]] * 2)
    present = [torch.nn.functional.cross_entropy(o[labels[:, j] >= 0], labels[labels[:, j] >= 0, j])
               for j, o in enumerate(outputs)]
    assert torch.allclose(probe_loss(outputs, labels), sum(present))
    assert probe_loss(outputs, labels).isfinite()
