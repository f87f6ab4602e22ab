"""sgd.py: the same steps as torch.optim.SGD, bit for bit, and the same state_dict."""

from __future__ import annotations

import pytest
import torch

from cnnlab.sgd import MomentumSGD

from .conftest import small_network


def groups(network, decay: float):
    weights = [p for name, p in network.named_parameters() if name.endswith("weight")]
    others = [p for name, p in network.named_parameters() if not name.endswith("weight")]
    return [{"params": weights, "weight_decay": decay}, {"params": others, "weight_decay": 0.0}]


def steps(optimizer, network, count: int, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    for step in range(count):
        for group in optimizer.param_groups:
            group["lr"] = 0.1 * (step + 1) / count  # a schedule, as training sets it
        x = torch.rand(8, 1, 28, 28, generator=generator)
        y = torch.randint(10, (8,), generator=generator)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(network(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize(
    ("momentum", "nesterov", "decay"), [(0.9, True, 1e-3), (0.9, False, 0.0), (0.0, False, 1e-2)]
)
def test_every_step_equals_torch_sgd_bit_for_bit(momentum, nesterov, decay):
    ours, theirs = small_network(seed=3), small_network(seed=3)
    mine = MomentumSGD(groups(ours, decay), lr=0.1, momentum=momentum, nesterov=nesterov)
    reference = torch.optim.SGD(groups(theirs, decay), lr=0.1, momentum=momentum,
                                nesterov=nesterov)  # fmt: skip
    steps(mine, ours, 6)
    steps(reference, theirs, 6)
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.equal(a, b), name


def test_its_state_dict_is_torchs_and_resumes_either_way():
    trained, reference_net = small_network(seed=1), small_network(seed=1)
    mine = MomentumSGD(groups(trained, 1e-3), lr=0.1, momentum=0.9, nesterov=True)
    reference = torch.optim.SGD(groups(reference_net, 1e-3), lr=0.1, momentum=0.9, nesterov=True)
    steps(mine, trained, 3)
    steps(reference, reference_net, 3)
    saved, theirs = mine.state_dict(), reference.state_dict()
    assert saved["param_groups"] == theirs["param_groups"]
    assert saved["state"].keys() == theirs["state"].keys()
    for index, values in theirs["state"].items():
        assert torch.equal(saved["state"][index]["momentum_buffer"], values["momentum_buffer"])
    # a run saved by torch.optim.SGD continues here exactly as it would there
    resumed = small_network(seed=1)
    resumed.load_state_dict(reference_net.state_dict())
    again = MomentumSGD(groups(resumed, 1e-3), lr=0.1, momentum=0.9, nesterov=True)
    again.load_state_dict(theirs)
    steps(again, resumed, 3, seed=5)
    steps(reference, reference_net, 3, seed=5)
    for a, b in zip(resumed.parameters(), reference_net.parameters()):
        assert torch.equal(a, b)


def test_a_state_of_other_parameters_is_refused():
    network = small_network()
    optimizer = MomentumSGD(groups(network, 0.0), lr=0.1, momentum=0.9)
    steps(optimizer, network, 1)
    saved = optimizer.state_dict()
    one_group = {"state": {}, "param_groups": saved["param_groups"][:1]}
    with pytest.raises(ValueError, match="other parameter groups"):
        optimizer.load_state_dict(one_group)
    wrong = {**saved, "state": {0: {"momentum_buffer": torch.zeros(3)}}}
    with pytest.raises(ValueError, match="momentum of shape"):
        optimizer.load_state_dict(wrong)
