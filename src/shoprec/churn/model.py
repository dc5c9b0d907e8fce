"""The churn classifier: a small MLP over the user_stats features, raw values in, logits out.

The input transform (signed log1p, then standardisation with the training set's centre and
scale) lives inside the module as buffers, so the safetensors file carries everything serving
needs and a server feeds the online store's values as they come.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

KIND = "churn-mlp"


def signed_log1p(x: torch.Tensor) -> torch.Tensor:
    """Counts and day spans are heavy-tailed: compress them (the sign keeps -1 = "never seen")."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


class ChurnNet(nn.Module):
    """x [B, F] raw feature values -> churn logit [B]."""

    kind = KIND

    def __init__(self, n_features: int, hidden: int = 32, dropout: float = 0.1) -> None:
        super().__init__()
        self.n_features = n_features
        self.hidden = hidden
        self.dropout = dropout
        # Filled by `fit_scaling` from the training rows; saved with the weights.
        self.register_buffer("center", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.layers = nn.Sequential(
            nn.Linear(n_features, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1),
        )

    def fit_scaling(self, x: np.ndarray) -> None:
        """Centre and scale of the transformed training features (a constant column gets scale 1)."""
        z = signed_log1p(torch.as_tensor(x, dtype=torch.float32))  # [N, F]
        std = z.std(dim=0, unbiased=False)
        self.center.copy_(z.mean(dim=0))
        self.scale.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (signed_log1p(x) - self.center) / self.scale  # [B, F]
        return self.layers(z).squeeze(-1)  # [B]

    @torch.no_grad()
    def probability(self, x: np.ndarray, batch: int = 65_536) -> np.ndarray:
        """Churn probabilities for raw rows [N, F] (eval mode, CPU or the module's device)."""
        self.eval()
        device = self.center.device
        out = [torch.sigmoid(self(torch.as_tensor(x[i:i + batch], dtype=torch.float32, device=device))).cpu()
               for i in range(0, len(x), batch)]
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)

    def config(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "hidden": self.hidden, "dropout": self.dropout}

    @classmethod
    def from_state(cls, config: dict[str, Any], state: dict[str, torch.Tensor]) -> "ChurnNet":
        model = cls(int(config["n_features"]), int(config["hidden"]), float(config["dropout"]))
        model.load_state_dict(state)
        return model.eval()
