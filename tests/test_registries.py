"""The config's CHOICES are the names of the registries that build those objects."""

from __future__ import annotations

from arw_sv.arw import NORMALIZATIONS
from arw_sv.config import CHOICES, OPTIMIZER_NAMES
from arw_sv.models.adversary import ADVERSARIES
from arw_sv.models.ecapa import PRESETS
from arw_sv.train.build import AUTOCAST_DTYPES, OPTIMIZERS


def test_every_registry_backed_choice_lists_exactly_the_registrys_names():
    # config.py stays torch-free, so it cannot import the registries: this test (and the
    # import-time check in train/build.py for the optimizers) keeps them from drifting.
    assert set(CHOICES["adversary.formulation"]) == set(ADVERSARIES)
    assert set(CHOICES["model.preset"]) == set(PRESETS)
    assert set(CHOICES["train.precision"]) == set(AUTOCAST_DTYPES)
    assert set(CHOICES["adversary.normalize"]) == set(NORMALIZATIONS)


def test_learner_and_adversary_take_the_same_optimizer_names():
    assert CHOICES["train.optimizer"] == CHOICES["adversary.optimizer"] == OPTIMIZER_NAMES
    assert tuple(OPTIMIZERS) == OPTIMIZER_NAMES
