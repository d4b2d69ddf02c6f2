"""Figures of LAM results drawn with Pillow: per network the image with the window, the heat map
and the blend (the paper's Figure 2 layout, DI in the caption), and a row per network to compare.

The heat map is the map enlarged to HR size by pixel repetition, coloured white (0) to dark red
(1) like the positive half of the diverging palette LAM's figures use. The blend shows where the
attribution lies at a glance, as LAM's figures do: the map's kernel density estimate (pixel
positions weighted by the map, a Gaussian kernel of the weighted position covariance times
Scott's factor ``n_eff ** (-1/6)``), normalised to 1, 60 % over 40 % image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Colour stops (value, RGB) of the heat map: white through red to dark red.
HEAT_STOPS = ((0.0, (255, 255, 255)), (0.5, (240, 60, 40)), (1.0, (128, 0, 0)))

#: Window outline colour and width in pixels.
WINDOW_COLOUR, WINDOW_LINE = (255, 0, 0), 2

#: Weight of the image in the blend (LAM's figures use 0.4).
BLEND_IMAGE = 0.4

#: Height of the caption strip under each row and the gap between panels, in pixels.
CAPTION, GAP = 22, 4

#: Smallest width of a grid tile: smaller feature maps are enlarged by pixel repetition.
MIN_TILE = 192


@dataclass
class Row:
    """One network's panels: its label, the HR-size image, the LR-size map, the window and the DI."""

    label: str
    image: np.ndarray
    map: np.ndarray
    x: int
    y: int
    window: int
    di: float


def heat_colours(values: np.ndarray) -> np.ndarray:
    """``values`` in [0, 1] as uint8 RGB through :data:`HEAT_STOPS` (piecewise linear)."""
    positions = np.array([stop for stop, _ in HEAT_STOPS])
    colours = np.array([rgb for _, rgb in HEAT_STOPS], dtype=np.float64)
    v = np.clip(values, 0.0, 1.0)
    channels = [np.interp(v, positions, colours[:, i]) for i in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def heat_map(attribution_map: np.ndarray, height: int, width: int) -> Image.Image:
    """The LR-size map coloured and enlarged to ``width x height`` by pixel repetition."""
    return Image.fromarray(heat_colours(attribution_map)).resize((width, height), Image.NEAREST)


def density_map(attribution_map: np.ndarray) -> np.ndarray:
    """The kernel density estimate of the map's mass over the pixel grid (see the module docstring), max 1."""
    weights = np.asarray(attribution_map, dtype=np.float64)
    total = weights.sum()
    if not total > 0:
        return weights
    h, w = weights.shape
    rows, cols = np.mgrid[0:h, 0:w]
    positions = np.stack([rows.ravel(), cols.ravel()])
    p = weights.ravel() / total
    mean = positions @ p
    centred = positions - mean[:, None]
    covariance = (centred * p) @ centred.T / (1.0 - np.sum(p ** 2))
    n_effective = 1.0 / np.sum(p ** 2)
    bandwidth = covariance * n_effective ** (-2.0 / 6.0) + np.eye(2) * 1e-6
    dy, dx = np.mgrid[-(h - 1):h, -(w - 1):w]
    offsets = np.stack([dy.ravel(), dx.ravel()])
    exponent = np.sum(offsets * (np.linalg.inv(bandwidth) @ offsets), axis=0)
    kernel = np.exp(-0.5 * exponent).reshape(dy.shape)
    density = cv2.filter2D(weights, -1, kernel, borderType=cv2.BORDER_CONSTANT)
    return density / density.max()


def with_window(image: np.ndarray, x: int, y: int, window: int) -> Image.Image:
    """``image`` (HWC uint8 RGB) with the analysed window outlined."""
    picture = Image.fromarray(image).convert('RGB')
    ImageDraw.Draw(picture).rectangle((x, y, x + window - 1, y + window - 1), outline=WINDOW_COLOUR,
                                      width=WINDOW_LINE)
    return picture


def row_panels(row: Row) -> list[Image.Image]:
    """The three panels of one network: image with window, heat map, density blended over the image."""
    height, width = row.image.shape[:2]
    picture = with_window(row.image, row.x, row.y, row.window)
    heat = heat_map(row.map, height, width)
    density = Image.fromarray(heat_colours(density_map(row.map))).resize((width, height), Image.BICUBIC)
    return [picture, heat, Image.blend(density, picture, BLEND_IMAGE)]


def caption(row: Row) -> str:
    """The caption under a row: network and diffusion index."""
    return f'{row.label}   DI {row.di:.2f}'


def lam_figure(rows: Sequence[Row]) -> np.ndarray:
    """One figure, a row of three panels per network in the given order, each captioned with its DI."""
    panels = [row_panels(row) for row in rows]
    width = max(sum(p.width for p in group) + GAP * (len(group) - 1) for group in panels)
    height = sum(group[0].height + CAPTION for group in panels) + GAP * (len(panels) - 1)
    canvas = Image.new('RGB', (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    top = 0
    for row, group in zip(rows, panels):
        left = 0
        for panel in group:
            canvas.paste(panel, (left, top))
            left += panel.width + GAP
        top += group[0].height
        draw.text((4, top + 4), caption(row), fill=(0, 0, 0), font=font)
        top += CAPTION + GAP
    return np.asarray(canvas)


def grid_figure(tiles: Sequence[np.ndarray], captions: Sequence[str], columns: int) -> np.ndarray:
    """Gray ``(h, w)`` images in [0, 1], each normalised to its own range, on a captioned grid."""
    images = []
    for tile in tiles:
        low, high = float(tile.min()), float(tile.max())
        scaled = (tile - low) / (high - low) if high > low else np.zeros_like(tile)
        image = Image.fromarray(np.rint(scaled * 255).astype(np.uint8)).convert('RGB')
        zoom = -(-MIN_TILE // image.width)
        images.append(image.resize((image.width * zoom, image.height * zoom), Image.NEAREST))
    cell_w = max(image.width for image in images)
    cell_h = max(image.height for image in images) + CAPTION
    rows = -(-len(images) // columns)
    canvas = Image.new('RGB', (columns * (cell_w + GAP) - GAP, rows * (cell_h + GAP) - GAP), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for index, (image, text) in enumerate(zip(images, captions)):
        left, top = (index % columns) * (cell_w + GAP), (index // columns) * (cell_h + GAP)
        canvas.paste(image, (left, top))
        draw.text((left + 2, top + image.height + 4), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)
