"""The model card's figure: a grid of generated digits, one row per class, written as a grayscale PNG.

Neither matplotlib nor Pillow is a RouteScope dependency, and a grayscale PNG is a few lines of zlib, so
the figure is written directly (each pixel enlarged to a square block, one blank pixel between images).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch


def png_bytes(gray: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of a uint8 array [H, W]."""
    if gray.dtype != np.uint8 or gray.ndim != 2:
        raise ValueError("expected a uint8 array [H, W]")
    height, width = gray.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + gray[r].tobytes() for r in range(height))  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def image_grid(images01: torch.Tensor, rows: int, cols: int, scale: int = 4, pad: int = 1) -> np.ndarray:
    """Images [rows·cols, H, W] in [0, 1] → one uint8 mosaic, white digits on black, gray separators."""
    n, h, w = images01.shape
    if n != rows * cols:
        raise ValueError(f"{n} images do not fill a {rows}×{cols} grid")
    cell_h, cell_w = h * scale, w * scale
    out = np.full((rows * (cell_h + pad) + pad, cols * (cell_w + pad) + pad), 96, dtype=np.uint8)
    pixels = (images01.clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        block = np.kron(pixels[i], np.ones((scale, scale), dtype=np.uint8))
        top, left = pad + r * (cell_h + pad), pad + c * (cell_w + pad)
        out[top : top + cell_h, left : left + cell_w] = block
    return out


def write_grid_png(path: Path, images01: torch.Tensor, rows: int, cols: int, scale: int = 4) -> None:
    path.write_bytes(png_bytes(image_grid(images01, rows, cols, scale=scale)))
