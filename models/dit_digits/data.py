"""The training images and the pixel conversions between the digits' 8×8 grid and the model's grid.

scikit-learn ships 1,797 handwritten digits as 8×8 images with integer values 0–16; they are on every
machine that has scikit-learn, so the model can be retrained offline. The model works in [-1, 1], on the
native 8×8 grid by default; a config with a larger `image_size` upsamples bilinearly (a finer patch grid at
4× the cost per doubling), and `to_source_grid` maps its images back to 8×8 by average pooling so that a
classifier trained on the real digits can judge them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MAX_VALUE = 16.0
"""The largest pixel value in scikit-learn's digits."""


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 8, 8] float32 in 0..16, labels [N] int64) — all 1,797 scikit-learn digits."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)


def to_model_space(images: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
    """Raw digits [N, s, s] in 0..16 → [N, 1, image_size, image_size] in [-1, 1] (bilinear upsampling)."""
    x = torch.as_tensor(images, dtype=torch.float32)
    x = (x / MAX_VALUE) * 2.0 - 1.0
    x = x[:, None]
    if x.shape[-1] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x.clamp(-1.0, 1.0)


def to_source_grid(images01: torch.Tensor, source_size: int) -> torch.Tensor:
    """Generated images [N, H, W] in [0, 1] → [N, source_size, source_size] in 0..16 (average pooling)."""
    x = images01.float()[:, None]
    if x.shape[-1] != source_size:
        x = F.adaptive_avg_pool2d(x, (source_size, source_size))
    return x[:, 0] * MAX_VALUE
