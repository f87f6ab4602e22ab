"""Ensembles: the two ways of combining members, on crafted probabilities and for real."""

from __future__ import annotations

import pytest
import torch

from cnnlab.arch import parse_arch
from cnnlab.ensemble import (
    average_vote,
    evaluate_folder,
    load_members,
    majority_vote,
    train_members,
)
from cnnlab.train import TrainConfig


def crafted() -> torch.Tensor:
    # 3 members, 2 images, 3 classes
    return torch.tensor(
        [
            [[0.6, 0.4, 0.0], [0.5, 0.0, 0.5]],
            [[0.6, 0.4, 0.0], [0.0, 0.6, 0.4]],
            [[0.0, 1.0, 0.0], [0.45, 0.0, 0.55]],
        ]
    )


def test_majority_vote_counts_top_classes():
    # image 0: two members say 0, one says 1 (very confidently): the vote says 0
    # image 1: votes 0, 1, 2 are tied; class 2 has the highest mean probability
    assert majority_vote(crafted()).tolist() == [0, 2]


def test_average_vote_follows_the_mean_probability():
    # image 0: mean (0.4, 0.6, 0) — the confident member carries it
    assert average_vote(crafted()).tolist() == [1, 2]


def test_a_single_member_ensemble_is_that_member():
    probabilities = torch.softmax(torch.randn(1, 50, 10), 2)
    assert torch.equal(majority_vote(probabilities), probabilities[0].argmax(1))
    assert torch.equal(average_vote(probabilities), probabilities[0].argmax(1))


def test_members_train_in_parallel_processes_with_their_own_seeds(tmp_path, mnist):
    spec = {"input": [1, 28, 28], "layers": parse_arch("conv4x5-pool2-fc16-softmax10")}
    config = TrainConfig(
        epochs=2, batch_size=20, lr=0.05, momentum=0.9, train_subset=1000, tta="shifts"
    )
    results = train_members(spec, config, members=2, out=tmp_path, processes=2, log=print)
    assert [r["seed"] for r in results] == [0, 1]
    (first, first_meta), (second, second_meta) = load_members(tmp_path)
    assert not torch.equal(first.layers[0].weight, second.layers[0].weight)
    scores = evaluate_folder(tmp_path)
    assert len(scores["members"]) == 2 and 0.7 < scores["vote"] <= 1
    # each member is scored as its training scored it: with its test-time shifts
    saved = [first_meta["test_accuracy"], second_meta["test_accuracy"]]
    assert scores["members"] == pytest.approx(saved, abs=2e-4)
