"""The PNG figures of the tools (matplotlib, Agg backend), and the t-SNE they use.

t-SNE is the exact O(N^2) algorithm of van der Maaten & Hinton (2008) in numpy (perplexity-calibrated
Gaussian affinities, Student-t similarities, early exaggeration, momentum and adaptive gains), so no
extra dependency is needed; above ``TSNE_MAX_POINTS`` points a seeded subsample is embedded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

TSNE_MAX_POINTS = 2000


def _save(fig: plt.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _palette(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _strategy_colors(strategies: Sequence[str]) -> list:
    """A fixed colour per strategy name (S1 is always the same colour, in every figure; the S6 variants
    have their own); names outside ``prompt_strategies.STRATEGIES`` take the colours after them."""
    from ..prompt_strategies import STRATEGIES

    known = list(STRATEGIES)
    palette = _palette(10)
    return [palette[(known.index(s) if s in known else len(known) + k) % 10] for k, s in enumerate(strategies)]


def dataset_preview(path: Path, dataset, n: int) -> Path:
    """The first ``n`` images of a ``data.CocoDataset`` with their masks tinted by class."""
    n = min(n, len(dataset))
    cols = min(3, max(n, 1))
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.2 * rows), squeeze=False)
    colors = np.array(_palette(len(dataset.labels)))[:, :3]
    index = {lb.id: k for k, lb in enumerate(dataset.labels)}
    for ax in axes.ravel():
        ax.axis("off")
    for i, ax in zip(range(n), axes.ravel()):
        rgb, sample = dataset.load_image(i).astype(np.float32) / 255, dataset[i]
        for inst in sample.instances:
            rgb[inst.mask] = 0.45 * rgb[inst.mask] + 0.55 * colors[index[inst.class_id]]
        ax.imshow(rgb)
        for inst in sample.instances:
            ax.text(inst.box[0], inst.box[1], inst.class_name, fontsize=6, color="white",
                    bbox=dict(facecolor=colors[index[inst.class_id]], pad=0.5, lw=0))
        ax.set_title(f"image {sample.image_id}: {len(sample.instances)} instances", fontsize=9)
    return _save(fig, path)


def dice_boxplot(path: Path, dice: Mapping[str, Mapping[str, Sequence[float]]]) -> Path:
    """Box plots of per-instance DICE: one group per model, one box per strategy ({model: {strategy: values}})."""
    models = list(dice)
    strategies = sorted({s for per in dice.values() for s in per})
    colors = _strategy_colors(strategies)
    width = 0.8 / max(len(strategies), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(models) * max(1, len(strategies) / 3)), 4.5))
    for k, s in enumerate(strategies):
        data = [list(dice[m].get(s, [])) or [np.nan] for m in models]
        pos = np.arange(len(models)) + (k - (len(strategies) - 1) / 2) * width
        bp = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=True,
                        flierprops=dict(markersize=2))
        for box in bp["boxes"]:
            box.set_facecolor(colors[k])
        ax.plot([], [], color=colors[k], lw=8, label=s)
    ax.set_xticks(range(len(models)), models)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("DICE (best-DICE candidate)")
    ax.set_title("DICE per model and prompting strategy")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def ra_bars(path: Path, dice: Mapping[str, Mapping[str, float]], ra: Mapping[str, Mapping[str, float]]) -> Path:
    """Robust accuracy RA (solid) over clean DICE (pale) per model and strategy ({model: {strategy: value}})."""
    models = list(ra)
    strategies = sorted({s for per in ra.values() for s in per})
    colors = _strategy_colors(strategies)
    width = 0.8 / max(len(strategies), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(models) * max(1, len(strategies) / 3)), 4.5))
    for k, s in enumerate(strategies):
        pos = np.arange(len(models)) + (k - (len(strategies) - 1) / 2) * width
        ax.bar(pos, [dice[m].get(s, np.nan) for m in models], width * 0.9, color=colors[k], alpha=0.3)
        bars = ax.bar(pos, [ra[m].get(s, np.nan) for m in models], width * 0.9, color=colors[k], label=s)
        ax.bar_label(bars, fmt="%.2f", fontsize=6)
    ax.set_xticks(range(len(models)), models)
    ax.set_ylim(min(0.0, *(v for per in ra.values() for v in per.values())) - 0.02, 1.05)
    ax.set_ylabel("RA = DICE - mean DICE drop (pale: clean DICE)")
    ax.set_title("Robust accuracy under shifted / expanded prompts")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def confusion_plot(path: Path, panels: Sequence[tuple[str, np.ndarray]], names: Sequence[str]) -> Path:
    """One row-normalised confusion matrix per (title, (K, K) counts), counts written in the cells."""
    k = len(names)
    fig, axes = plt.subplots(1, len(panels), figsize=(0.6 * k * len(panels) + 2.5 * len(panels), 0.6 * k + 2),
                             squeeze=False)
    for ax, (title, cm) in zip(axes[0], panels):
        rows = cm.sum(axis=1, keepdims=True)
        norm = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for (i, j), c in np.ndenumerate(cm):
            ax.text(j, i, int(c), ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), names, rotation=45, ha="right")
        ax.set_yticks(range(k), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def tsne_plot(path: Path, panels: Sequence[tuple[str, np.ndarray, np.ndarray]], label_ids: Sequence[int],
              names: Sequence[str], seed: int = 0) -> Path:
    """t-SNE of image embeddings per (title, (N, D) embeddings, (N,) true class ids), coloured by class."""
    colors = _palette(len(label_ids))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for ax, (title, emb, ids) in zip(axes[0], panels):
        emb, ids = np.asarray(emb, np.float64), np.asarray(ids)
        if len(emb) > TSNE_MAX_POINTS:
            keep = np.random.default_rng(seed).choice(len(emb), TSNE_MAX_POINTS, replace=False)
            emb, ids = emb[keep], ids[keep]
        y = tsne(emb, seed=seed) if len(emb) >= 3 else np.zeros((len(emb), 2))
        for c, (cid, name) in enumerate(zip(label_ids, names)):
            sel = ids == cid
            ax.scatter(y[sel, 0], y[sel, 1], s=8, color=colors[c], label=f"{name} ({int(sel.sum())})")
        ax.set_title(f"{title}: t-SNE of {len(emb)} embeddings", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.legend(fontsize=7, markerscale=1.5)
    return _save(fig, path)


def _sq_dists(x: np.ndarray) -> np.ndarray:
    s = np.sum(x * x, axis=1)
    return np.maximum(s[:, None] + s[None, :] - 2 * x @ x.T, 0.0)


def conditional_affinities(x: np.ndarray, perplexity: float, tol: float = 1e-5, steps: int = 100) -> np.ndarray:
    """(N, N) rows p_{j|i}: Gaussian kernels whose precision is bisected per row so the row's entropy
    is log(perplexity) (natural log)."""
    d = _sq_dists(np.asarray(x, np.float64))
    np.fill_diagonal(d, np.inf)
    d = d - d.min(axis=1, keepdims=True)  # shift per row: same p, no underflow
    target = np.log(perplexity)
    beta, lo, hi = np.ones(len(d)), np.zeros(len(d)), np.full(len(d), np.inf)
    for _ in range(steps):
        p = np.exp(-d * beta[:, None])
        p /= p.sum(axis=1, keepdims=True)
        h = -np.sum(np.where(p > 0, p * np.log(np.maximum(p, 1e-300)), 0.0), axis=1)
        if np.all(np.abs(h - target) < tol):
            break
        too_flat = h > target  # entropy too high: sharpen
        lo = np.where(too_flat, beta, lo)
        hi = np.where(too_flat, hi, beta)
        beta = np.where(np.isinf(hi), beta * 2, (lo + hi) / 2)
    return p


def tsne(x: np.ndarray, dims: int = 2, perplexity: float = 30.0, iters: int = 750, seed: int = 0) -> np.ndarray:
    """(N, dims) t-SNE embedding of (N, D) ``x``; perplexity is capped at (N - 1) / 3."""
    n = len(x)
    perplexity = min(perplexity, max((n - 1) / 3.0, 1.0))
    p = conditional_affinities(x, perplexity)
    p = np.maximum((p + p.T) / (2 * n), 1e-12)
    rng = np.random.default_rng(seed)
    y = rng.normal(0, 1e-4, (n, dims))
    update, gains = np.zeros_like(y), np.ones_like(y)
    lr = max(n / 12.0 / 4.0, 50.0)
    for it in range(iters):
        exaggeration, momentum = (12.0, 0.5) if it < 250 else (1.0, 0.8)
        num = 1.0 / (1.0 + _sq_dists(y))
        np.fill_diagonal(num, 0.0)
        q = np.maximum(num / num.sum(), 1e-12)
        pq = (exaggeration * p - q) * num
        grad = 4.0 * (np.diag(pq.sum(axis=1)) - pq) @ y
        same = (grad > 0) == (update > 0)
        gains = np.maximum(np.where(same, gains * 0.8, gains + 0.2), 0.01)
        update = momentum * update - lr * gains * grad
        y = y + update
        y -= y.mean(axis=0)
    return y
