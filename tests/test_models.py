"""ECAPA shapes and the AAM-softmax head against SpeechBrain and in float64 gradcheck."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from arw_sv.models.ecapa import PRESETS, build_extractor
from arw_sv.models.heads import AAMSoftmax, margin_at


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("samples", [4000, 16000, 23456])
def test_extractor_shapes_across_batches_and_lengths(batch, samples):
    model = build_extractor("tiny", embedding_dim=24).eval()
    assert model(torch.randn(batch, samples)).shape == (batch, 24)


def test_presets_have_the_published_widths():
    assert PRESETS["c512"] == (512, 512, 512, 512, 1536)
    assert PRESETS["c1024"] == (1024, 1024, 1024, 1024, 3072)
    c512 = build_extractor("c512")
    # ECAPA-TDNN c512 has about 6.2 M parameters (Desplanques et al. report 6.2 M).
    assert 5.9e6 < sum(p.numel() for p in c512.parameters()) < 6.5e6


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="c2048"):
        build_extractor("c2048")


def test_aam_matches_speechbrain_additive_angular_margin():
    from speechbrain.nnet.losses import AdditiveAngularMargin

    torch.manual_seed(0)
    head = AAMSoftmax(16, 7, margin=0.3, scale=25.0)
    emb = torch.randn(9, 16)
    labels = torch.randint(0, 7, (9,))
    cosine = F.linear(F.normalize(emb), F.normalize(head.weight))
    reference_logits = AdditiveAngularMargin(margin=0.3, scale=25.0)(
        cosine, F.one_hot(labels, 7).float()
    )
    torch.testing.assert_close(head.logits(emb, labels), reference_logits, atol=2e-5, rtol=1e-5)
    reference_loss = F.cross_entropy(reference_logits, labels, reduction="none")
    torch.testing.assert_close(head(emb, labels), reference_loss, atol=2e-5, rtol=1e-5)


def test_aam_per_sample_loss_is_per_sample():
    head = AAMSoftmax(8, 5)
    emb, labels = torch.randn(6, 8), torch.randint(0, 5, (6,))
    losses = head(emb, labels)
    assert losses.shape == (6,)
    for i in range(6):
        torch.testing.assert_close(losses[i : i + 1], head(emb[i : i + 1], labels[i : i + 1]))


def test_aam_closed_form_for_one_sample():
    head = AAMSoftmax(2, 2, margin=0.25, scale=10.0)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    theta = 0.4
    emb = torch.tensor([[math.cos(theta), math.sin(theta)]])
    loss = head(emb, torch.tensor([0]))
    target = 10 * math.cos(theta + 0.25)
    other = 10 * math.sin(theta)
    expected = -target + math.log(math.exp(target) + math.exp(other))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_aam_gradcheck_float64():
    torch.manual_seed(1)
    head = AAMSoftmax(5, 4, margin=0.2, scale=8.0).double()
    emb = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    weight = head.weight.detach().clone().requires_grad_(True)
    labels = torch.tensor([0, 2, 3])

    def loss(e, w):
        return torch.func.functional_call(head, {"weight": w}, (e, labels))

    assert torch.autograd.gradcheck(loss, (emb, weight))


def test_margin_warmup_schedule():
    assert margin_at(0, 0.2, start=10, ramp_steps=20) == 0.0
    assert margin_at(20, 0.2, start=10, ramp_steps=20) == pytest.approx(0.1)
    assert margin_at(100, 0.2, start=10, ramp_steps=20) == pytest.approx(0.2)
    assert margin_at(5, 0.2, start=0, ramp_steps=0) == 0.2
