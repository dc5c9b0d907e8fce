"""Training the churn classifier: full-batch-friendly sizes, early stopping on a held-out set of
users, on the GPU when one is present."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from shoprec.churn.model import ChurnNet
from shoprec.training.device import choose_device


@dataclass(frozen=True)
class FitConfig:
    hidden: int = 32
    dropout: float = 0.1
    epochs: int = 300
    batch_size: int = 512
    lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 25  # epochs without a better validation loss before stopping
    seed: int = 0
    device: str | None = None  # None: CUDA when present, else CPU


@dataclass
class FitResult:
    model: ChurnNet  # on the CPU, eval mode, the best epoch's weights
    device: str
    best_epoch: int
    valid_loss: float
    history: list[float] = field(default_factory=list)


def fit_churn(
    x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray,
    config: FitConfig = FitConfig(), progress: bool = False,
) -> FitResult:
    """Train on (x_train, y_train) and keep the epoch with the lowest log loss on the
    validation rows (other users than the training rows: see `train.split_users`)."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = choose_device(config.device)
    model = ChurnNet(x_train.shape[1], config.hidden, config.dropout)
    model.fit_scaling(x_train)
    model.to(device)
    xt = torch.as_tensor(x_train, dtype=torch.float32, device=device)
    yt = torch.as_tensor(y_train, dtype=torch.float32, device=device)
    xv = torch.as_tensor(x_valid, dtype=torch.float32, device=device)
    yv = torch.as_tensor(y_valid, dtype=torch.float32, device=device)
    loss_fn = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best = (float("inf"), 0, {k: v.detach().clone() for k, v in model.state_dict().items()})
    history: list[float] = []
    epochs = tqdm(range(config.epochs), desc="churn", disable=not progress, leave=False)
    for epoch in epochs:
        model.train()
        order = torch.randperm(len(xt), generator=generator).to(device)
        for start in range(0, len(xt), config.batch_size):
            rows = order[start:start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(xt[rows]), yt[rows]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            valid = float(loss_fn(model(xv), yv))
        history.append(valid)
        if valid < best[0] - 1e-5:
            best = (valid, epoch, {k: v.detach().clone() for k, v in model.state_dict().items()})
        elif epoch - best[1] >= config.patience:
            break
    model.load_state_dict(best[2])
    return FitResult(model.cpu().eval(), str(device), best[1], best[0], history)
