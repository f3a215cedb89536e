"""Tokens page, vision-language runs: one image of the sample as its patch grid, each patch coloured by the
top-1 expert of its token at the chosen layer.

A VLM input's image tokens sit in the text as a run of identical placeholder tokens, which says nothing
about where each patch is; runs recorded with images place every image token on its image's merged patch
grid (`tokens.image`, `row`, `col`), so the same grid the diffusion runs draw (`markup.patch_grid_html`)
shows where in the picture an expert's tokens come from. Kept apart from tokens.py, which draws text and
diffusion samples.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from routescope.dashboard import state
from routescope.dashboard.markup import patch_grid_html


def image_patches(routing: pd.DataFrame, image: int) -> pd.DataFrame:
    """The rows of `routing` (`analysis.token_routing` of a run recorded with images) that are patches of
    image `image` (first frame), with their `row` and `col`."""
    if "image" not in routing.columns:
        return routing.iloc[0:0]
    patches = routing[(routing["image"] == image) & (routing["frame"].fillna(0) == 0)]
    return patches[patches["row"].notna() & patches["col"].notna()]


def show_image_patches(
    routing: pd.DataFrame, uncertain: pd.Series, n_experts: int, *, run_name: str, sample: int
) -> None:
    """A chooser of the sample's images (when it has several) and the chosen image's patch grid."""
    images = sorted(int(i) for i in routing["image"].dropna().unique()) if "image" in routing else []
    if not images:
        return
    st.subheader("Image patches")
    image = images[0]
    if len(images) > 1:
        image = int(st.selectbox("Image", images, key=state.scoped(state.TOKENS_IMAGE, run_name, sample)))
    patches = image_patches(routing, image)
    rows, cols = int(patches["row"].max()) + 1, int(patches["col"].max()) + 1
    st.caption(f"image {image}: {rows} × {cols} merged patches, each coloured by its top-1 expert")
    st.html(patch_grid_html(patches, uncertain.loc[patches.index], n_experts))
