"""The quality check: does a classifier trained on the real digits recognise the class we asked for?

A support-vector classifier is fitted on scikit-learn's real 8×8 digits (pixel values 0–16, about 99 %
accurate on held-out real digits). Generated images are brought back to the 8×8 grid and classified;
the share whose predicted class equals the requested one is the model's *class accuracy*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .data import load_digits_arrays, to_source_grid
from .diffusion import sample
from .model import DiTMoE


@dataclass
class DigitClassifier:
    """An SVC on flattened real 8×8 digits (0–16) and its held-out accuracy on real digits."""

    estimator: Any
    real_holdout_accuracy: float

    @classmethod
    def fit(cls, seed: int = 0) -> DigitClassifier:
        from sklearn.model_selection import train_test_split
        from sklearn.svm import SVC

        images, labels = load_digits_arrays()
        flat = images.reshape(len(images), -1)
        x_tr, x_te, y_tr, y_te = train_test_split(
            flat, labels, test_size=0.25, random_state=seed, stratify=labels
        )
        holdout = float(SVC(gamma=0.001, C=10.0).fit(x_tr, y_tr).score(x_te, y_te))
        return cls(estimator=SVC(gamma=0.001, C=10.0).fit(flat, labels), real_holdout_accuracy=holdout)

    def predict(self, images01: torch.Tensor, source_size: int = 8) -> np.ndarray:
        """Predicted classes of generated images [n, H, W] in [0, 1]."""
        grid = to_source_grid(images01, source_size).reshape(len(images01), -1).numpy()
        return np.asarray(self.estimator.predict(grid), dtype=np.int64)


def class_accuracy(
    model: DiTMoE,
    classifier: DigitClassifier,
    *,
    per_class: int,
    steps: int,
    cfg_scale: float,
    seed: int,
    classes: list[int] | None = None,
) -> dict[str, Any]:
    """Sample `per_class` images of each class and report the share the classifier assigns to that class."""
    wanted = classes if classes is not None else list(range(model.config.n_classes))
    targets = torch.tensor([c for c in wanted for _ in range(per_class)], dtype=torch.long)
    images = sample(model, targets, steps=steps, cfg_scale=cfg_scale, seed=seed)
    predicted = classifier.predict(images, model.config.source_size)
    hits = predicted == targets.numpy()
    return {
        "cfg_scale": cfg_scale,
        "steps": steps,
        "seed": seed,
        "samples": len(targets),
        "accuracy": float(hits.mean()),
        "per_class": {str(c): float(hits[targets.numpy() == c].mean()) for c in wanted},
    }
