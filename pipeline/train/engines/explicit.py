"""Forward and backward passes written out for a stack of runs, for the models and losses
most sweeps use, in place of `vmap(grad_and_value(...))`: the batched engine's fast path.

- `FeatureNet`: a model linear in its parameters (`FeatureModel`): its features of each
  run's rows are computed once, a step is two batched products;
- `SequentialNet`: an `nn.Sequential` of `Linear` layers and elementwise activations
  (ReLU, Sigmoid, Tanh, Identity): forward layer by layer, backward by the chain rule
  (the very formulas of torch's own backward functions);
- the loss: `MSELoss` or `L1Loss`, reduction mean or sum.

Each run's parameters are one row of a (runs, n_params) tensor laid out as
`parameters_to_vector` lays them out, so the stacked optimisers and the divergence checks
see what they see with the generic path. Anything else takes the generic path
(`batched._run_loss` under `vmap`). A step costs a dozen batched kernels instead of
torch.func's per-step tracing (the toy MLP: ~0.5 ms a step for 1,000 runs, not ~10 ms).
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import torch
from torch import Tensor, nn

from pipeline.models import FeatureModel

ACTIVATIONS = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Identity)
_SMALL = 16  # a contraction over at most this many terms is summed term by term, not by BLAS


def times(a: Tensor, b: Tensor) -> Tensor:
    """(runs, i, k) @ (runs, k, j): for small k one elementwise pass per term (batched BLAS on
    thousands of tiny matrices costs microseconds each), else `bmm`."""
    if a.shape[2] > _SMALL:
        return torch.bmm(a, b)
    out = a[:, :, :1] * b[:, :1, :]
    for k in range(1, a.shape[2]):
        out = out + a[:, :, k : k + 1] * b[:, k : k + 1, :]
    return out


def outer_sum(g: Tensor, h: Tensor) -> Tensor:
    """(runs, n, i), (runs, n, j) -> (runs, i, j) = sum over the n rows of g^T h."""
    return torch.bmm(g.transpose(1, 2), h)


def loss_and_output_grad(loss_fn: nn.Module) -> Optional[Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]]:
    """(pred, y) -> ((runs,) loss, d loss / d pred) for MSELoss and L1Loss (mean or sum); else None."""
    if type(loss_fn) not in (nn.MSELoss, nn.L1Loss) or loss_fn.reduction not in ("mean", "sum"):
        return None
    squared, mean = isinstance(loss_fn, nn.MSELoss), loss_fn.reduction == "mean"

    def evaluate(pred: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        diff = pred - y
        values = diff * diff if squared else diff.abs()
        loss = values.mean(dim=(1, 2)) if mean else values.sum(dim=(1, 2))
        count = diff.shape[1] * diff.shape[2] if mean else 1
        # as torch's mse_loss_backward (2 / count times the difference) and abs, mean backward
        grad = (2.0 / count) * diff if squared else torch.sign(diff) / count
        return loss, grad

    return evaluate


class FeatureNet:
    """prediction = F theta, F the features of each run's rows (computed once)."""

    def __init__(self, model: FeatureModel, loss: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]):
        self.model, self.loss = model, loss

    def prepare(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model.features(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)

    def loss_and_grad(self, params: Tensor, features: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        pred = times(features, params.unsqueeze(2))
        loss, grad = self.loss(pred, y)
        return loss, outer_sum(grad, features)[:, 0]


class SequentialNet:
    """Linear layers and elementwise activations, forward and backward by hand."""

    def __init__(self, model: nn.Sequential, loss: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]):
        self.layers, self.loss = list(model), loss
        self.shapes = [(layer.out_features, layer.in_features, layer.bias is not None) for layer in self.linear()]

    def linear(self) -> list[nn.Linear]:
        return [layer for layer in self.layers if isinstance(layer, nn.Linear)]

    def prepare(self, x: Tensor) -> Tensor:
        return x

    def _views(self, params: Tensor) -> list[tuple[Tensor, Optional[Tensor]]]:
        """Each Linear layer's (weight (runs, out, in), bias (runs, out)), views of the flat vectors."""
        views, offset = [], 0
        for out, inp, has_bias in self.shapes:
            weight = params[:, offset : offset + out * inp].view(-1, out, inp)
            offset += out * inp
            bias = params[:, offset : offset + out] if has_bias else None
            offset += out if has_bias else 0
            views.append((weight, bias))
        return views

    def loss_and_grad(self, params: Tensor, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        views = iter(self._views(params))
        saved: list[tuple[Union[nn.Module, str], Tensor, Optional[Tensor]]] = []
        h = x
        for layer in self.layers:
            if isinstance(layer, nn.Linear):
                weight, bias = next(views)
                saved.append(("linear", h, weight))
                h = times(h, weight.transpose(1, 2))
                h = h if bias is None else h + bias.unsqueeze(1)
            elif not isinstance(layer, nn.Identity):
                h = layer(h)
                saved.append((layer, h, None))
        loss, g = self.loss(h, y)
        grads: list[Tensor] = []
        for kind, value, weight in reversed(saved):
            if kind == "linear":
                grads.append(g.sum(dim=1))  # bias (dropped below if the layer has none)
                grads.append(outer_sum(g, value).flatten(1))  # weight
                g = times(g, weight)
            elif isinstance(kind, nn.ReLU):  # threshold_backward: 0 where the output is 0
                g = g * (value > 0)
            elif isinstance(kind, nn.Sigmoid):  # sigmoid_backward
                g = g * (1 - value) * value
            else:  # tanh_backward
                g = g * (1 - value * value)
        ordered, pieces = [], iter(reversed(grads))
        for _, _, has_bias in self.shapes:
            ordered.append(next(pieces))  # weight
            bias = next(pieces)
            if has_bias:
                ordered.append(bias)
        return loss, torch.cat(ordered, dim=1)


StackedNet = Union[FeatureNet, SequentialNet]


def explicit_net(model: nn.Module, loss_fn: nn.Module) -> Optional[StackedNet]:
    """The written-out passes for this model and loss, or None (the generic path)."""
    loss = loss_and_output_grad(loss_fn)
    if loss is None or any(b.numel() for b in model.buffers()):
        return None
    if isinstance(model, FeatureModel):
        return FeatureNet(model, loss)
    if type(model) is nn.Sequential and all(type(m) in (nn.Linear, *ACTIVATIONS) for m in model):
        return SequentialNet(model, loss)
    return None
