"""Mini-batch SGD with momentum: ``torch.optim.SGD``'s arithmetic and state, started at once.

PyTorch's optimizers import ``torch._dynamo`` the first time one is built (their
methods are wrapped to keep the compiler out), which costs over a second: as
long as the whole one-epoch training of the default network. This optimizer
does the same steps with the same numbers, bit for bit (tested against
``torch.optim.SGD``), reads and writes the same ``state_dict`` (so checkpoints
written with either resume with either), and updates all of a group's
parameters with one multi-tensor operation per step of the rule.

The rule, per parameter w with gradient g (weight decay λ' per group, momentum μ,
learning rate η): g ← g + λ'·w; v ← g on the first step, else μ·v + g; then
w ← w − η·(g + μ·v) with Nesterov's momentum, w ← w − η·v without.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

# What torch.optim.SGD keeps in each parameter group besides its parameters, with its defaults.
GROUP_DEFAULTS = {"lr": 0.01, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0,
                  "nesterov": False, "maximize": False, "foreach": None,
                  "differentiable": False, "fused": None}  # fmt: skip
RULE_KEYS = ("lr", "momentum", "dampening", "weight_decay", "nesterov")


class MomentumSGD:
    """SGD over ``groups`` (dicts with ``params`` and optionally ``weight_decay``)."""

    def __init__(
        self,
        groups: Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if lr < 0 or not 0 <= momentum < 1 or (nesterov and momentum == 0):
            raise ValueError(f"no SGD with lr {lr}, momentum {momentum}, nesterov {nesterov}")
        self.param_groups: list[dict[str, Any]] = []
        for group in groups:
            settings = {**GROUP_DEFAULTS, "lr": lr, "momentum": momentum, "nesterov": nesterov}
            settings |= {k: v for k, v in group.items() if k != "params"}
            if settings["weight_decay"] < 0 or settings["maximize"] or settings["dampening"]:
                raise ValueError(f"unsupported SGD settings {settings}")
            self.param_groups.append({"params": list(group["params"]), **settings})
        self.state: dict[Tensor, dict[str, Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update(group, params)

    def _update(self, group: dict[str, Any], params: list[Tensor]) -> None:
        grads = [p.grad for p in params]
        if group["weight_decay"] != 0:
            grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
        momentum = group["momentum"]
        if momentum != 0:
            buffers = []
            for p, g in zip(params, grads):
                state = self.state.setdefault(p, {})
                if "momentum_buffer" not in state:  # the first step: v = g
                    state["momentum_buffer"] = torch.clone(g).detach()
                    buffers.append(None)
                else:
                    buffers.append(state["momentum_buffer"])
            older = [i for i, b in enumerate(buffers) if b is not None]
            if older:
                kept = [buffers[i] for i in older]
                torch._foreach_mul_(kept, momentum)
                torch._foreach_add_(kept, [grads[i] for i in older], alpha=1 - group["dampening"])
            velocity = [self.state[p]["momentum_buffer"] for p in params]
            if group["nesterov"]:
                grads = torch._foreach_add(grads, velocity, alpha=momentum)
            else:
                grads = velocity
        torch._foreach_add_(params, grads, alpha=-group["lr"])

    # ---- saving and restoring, in torch.optim.SGD's format -------------------------------------
    def state_dict(self) -> dict[str, Any]:
        index: dict[Tensor, int] = {}
        groups = []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                index.setdefault(p, len(index))
                ids.append(index[p])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[p]: dict(values) for p, values in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Settings and momentum from ``saved``; ValueError if it is not of these parameters."""
        groups = saved["param_groups"]
        if len(groups) != len(self.param_groups) or any(
            len(mine["params"]) != len(theirs["params"])
            for mine, theirs in zip(self.param_groups, groups)
        ):
            raise ValueError("the saved optimizer state is of other parameter groups")
        params = {
            i: p
            for theirs, mine in zip(groups, self.param_groups)
            for i, p in zip(theirs["params"], mine["params"])
        }
        state: dict[Tensor, dict[str, Tensor]] = {}
        for i, values in saved["state"].items():
            p = params.get(int(i))
            buffer = values.get("momentum_buffer") if isinstance(values, dict) else None
            if p is None:
                raise ValueError(f"a saved state for parameter {i}, which is not one of these")
            if buffer is None:  # torch saves none for plain SGD (momentum 0)
                continue
            if not isinstance(buffer, Tensor) or buffer.shape != p.shape:
                raise ValueError(f"a saved momentum of shape {getattr(buffer, 'shape', None)}")
            state[p] = {"momentum_buffer": buffer.to(device=p.device, dtype=p.dtype, copy=True)}
        for mine, theirs in zip(self.param_groups, groups):
            mine.update({k: theirs[k] for k in RULE_KEYS if k in theirs})
        self.state = state


Optimizer = MomentumSGD | torch.optim.Optimizer  # what training steps with (Adam: PyTorch's own)
