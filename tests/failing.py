"""A model that passes validation (a forward pass on 2 rows) and raises in the task:
a stand-in for a user's model with a bug that only real data trigger."""

import torch
from torch import nn


class RaisesOnFullData(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 2:
            raise RuntimeError("boom: a bug that only the full data trigger")
        return x[:, :1] * self.w
