"""Plots of 2-D densities, samples and training curves (matplotlib is an optional extra).

matplotlib is imported only inside the functions that draw, so ``import npflows`` never needs it; install
it with ``pip install 'npflows[plot]'``.  Figures are built on matplotlib's object API with the Agg
canvas and written straight to a file: no screen, no pyplot, and the caller's global matplotlib state
(backend, current figure) is left untouched.
"""
import warnings

import numpy as np

MISSING = "matplotlib is needed for plots: pip install 'npflows[plot]'"


def _figure(n_panels, width, height):
    """A ``Figure`` with an Agg canvas and a row of ``n_panels`` axes, each about ``width x height`` inches."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(MISSING) from e
    fig = Figure(figsize=(width * n_panels, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    return fig, axes


def save_small(fig, path, dpi):
    """Write ``fig`` to ``path`` as a PNG of at most 64 colours when Pillow is there (matplotlib depends on it):
    a few tens of kB instead of a few hundred, for pictures committed to a repository (docs/images)."""
    fig.savefig(path, dpi=dpi)
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def density_grid(log_prob_fn, xlim, ylim, n=200, chunk=8192):
    """Evaluate a 2-D log-density on a regular ``n x n`` grid, in chunks of ``chunk`` points.

    Parameters
    ----------
    log_prob_fn : callable
        ``log_prob_fn(x) -> logp`` with ``x`` of shape ``(M, 2)`` (float64) and ``logp`` of shape ``(M,)``.
    xlim, ylim : (float, float)
        The ranges of the first and second coordinate.
    n : int
        Grid points per axis.
    chunk : int
        Points per call of ``log_prob_fn`` (bounds the memory of the model's forward pass).

    Returns
    -------
    xx, yy : ndarray, shape (n, n)
        The grid (``numpy.meshgrid`` with ``indexing="xy"``: ``xx[i, j] = xs[j]``, ``yy[i, j] = ys[i]``).
    logp : ndarray, shape (n, n)
        ``log_prob_fn`` at each grid point; ``-inf`` where the density is zero, NaN (drawn blank) where
        ``log_prob_fn`` raised ``ValueError`` or ``FloatingPointError``.

    Notes
    -----
    A flow can overflow at grid points far from its training data (an affine coupling's log-scale grows
    without bound outside it), and its ``log_prob`` then raises for the whole chunk.  Such a chunk is
    split in halves, recursively, so only the points that fail themselves become NaN; a warning says
    how many.  Overflow warnings from NumPy are silenced while the grid is evaluated.
    """
    if int(n) < 2:
        raise ValueError(f"density_grid: n must be at least 2, got {n}")
    xx, yy = np.meshgrid(np.linspace(*xlim, int(n)), np.linspace(*ylim, int(n)))
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1)
    with np.errstate(over="ignore", invalid="ignore"):
        logp = np.concatenate([_eval(log_prob_fn, pts[s:s + chunk]) for s in range(0, pts.shape[0], chunk)])
    bad = int(np.isnan(logp).sum())
    if bad:
        warnings.warn(f"density_grid: log_prob_fn failed at {bad} of {logp.size} grid points; "
                      f"they are NaN (blank in plots)", RuntimeWarning, stacklevel=2)
    return xx, yy, logp.reshape(xx.shape)


def _eval(log_prob_fn, pts):
    """``log_prob_fn(pts)``; if it raises, bisect the batch so only failing single points become NaN."""
    try:
        return np.asarray(log_prob_fn(pts), dtype=np.float64).reshape(pts.shape[0])
    except (ValueError, FloatingPointError):
        if pts.shape[0] == 1:
            return np.full(1, np.nan)
        h = pts.shape[0] // 2
        return np.concatenate([_eval(log_prob_fn, pts[:h]), _eval(log_prob_fn, pts[h:])])


def _limits(data, margin=0.1):
    """Axis ranges covering the central 99.8% of ``data`` ``(N, 2)`` plus a margin, as two pairs."""
    lo, hi = np.percentile(data, [0.1, 99.9], axis=0)
    pad = margin * (hi - lo)
    return (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])


def _scatter(ax, pts, title, color, max_points):
    pts = pts[:max_points]
    ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.4, color=color, linewidths=0, rasterized=True)
    ax.set_title(f"{title} ({pts.shape[0]} points)")


def _density_grids(fns, xlim, ylim, n_grid):
    """The densities ``exp(log_prob)`` of every function in ``fns`` on one grid, and the colour-scale top they
    share: the largest 99.5th percentile among them (a thin spike must not wash out the rest)."""
    grids = [density_grid(fn, xlim, ylim, n_grid) for fn in fns]
    dens = [np.exp(lp) for _, _, lp in grids]
    tops = [np.percentile(d[np.isfinite(d)], 99.5) for d in dens if np.isfinite(d).any()]
    vmax = max(tops) if tops and max(tops) > 0 else None
    return grids[0][0], grids[0][1], dens, vmax


def plot_density_and_samples(path, data, samples, log_prob_fn, true_log_prob_fn=None, title=None,
                             xlim=None, ylim=None, n_grid=200, max_points=5000):
    """Write one PNG comparing a 2-D density model with its data.

    Panels, left to right: the data; samples from the model (same axes, so the two sit side by side);
    the learned density :math:`\\exp\\log p(x)` on a grid; and, when ``true_log_prob_fn`` is given, the
    true density on the same grid.  Both densities share one colour scale (from 0 to the larger of their
    99.5th percentiles) and one colour bar, so equal colours mean equal densities; every panel has axis
    labels.

    Parameters
    ----------
    path : str or path-like
        Output file (PNG).
    data, samples : ndarray, shape (N, 2) and (M, 2)
        Points from the data distribution and from the model; at most ``max_points`` of each are drawn.
    log_prob_fn : callable
        The model's log-density, ``(K, 2) -> (K,)``, e.g. ``lambda x: flow.log_prob(params, x)``.
    true_log_prob_fn : callable, optional
        The exact log-density, same signature; ``-inf`` outside its support is fine.
    title : str, optional
        Figure title.
    xlim, ylim : (float, float), optional
        Axis ranges of every panel; by default the central 99.8% of ``data`` plus 10%.
    n_grid : int
        Grid points per axis for the density panels.
    """
    data, samples = np.asarray(data), np.asarray(samples)
    for what, a in (("data", data), ("samples", samples)):
        if a.ndim != 2 or a.shape[1] != 2:
            raise ValueError(f"plot_density_and_samples: expected {what} of shape (N, 2), got {a.shape}")
    auto_x, auto_y = _limits(data)
    xlim, ylim = xlim or auto_x, ylim or auto_y
    aspect = (ylim[1] - ylim[0]) / (xlim[1] - xlim[0])
    fig, axes = _figure(3 if true_log_prob_fn is None else 4, 3.6, 3.6 * min(max(aspect, 0.4), 1.5) + 0.8)
    _scatter(axes[0], data, "data", "tab:blue", max_points)
    _scatter(axes[1], samples, "model samples", "tab:orange", max_points)
    fns = [log_prob_fn] + ([true_log_prob_fn] if true_log_prob_fn is not None else [])
    xx, yy, dens, vmax = _density_grids(fns, xlim, ylim, n_grid)
    mesh = None
    for ax, d, name in zip(axes[2:], dens, ("learned density", "true density")):
        mesh = ax.pcolormesh(xx, yy, d, shading="auto", cmap="viridis", vmin=0.0, vmax=vmax, rasterized=True)
        ax.set_title(name)
    fig.colorbar(mesh, ax=list(axes[2:]), shrink=0.8,
                 label="density" + (", shared scale" if len(dens) > 1 else ""))
    for ax in axes:
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)


def plot_history(path, history, title=None, limit=None, limit_label="true density, validation points"):
    """Write the training curve of :func:`npflows.fit` to a PNG.

    Parameters
    ----------
    path : str or path-like
        Output file (PNG).
    history : dict
        ``fit``'s history: lists ``step``, ``train_loss`` (mean over the steps since the previous
        evaluation) and ``val_loss`` (NaN when there was no validation objective), of equal length.
    title : str, optional
        Axes title.
    limit : float, optional
        A reference loss drawn as a dashed line: the negative mean log-likelihood of the true density on
        the validation points, the points whose loss the validation curve shows.
    limit_label : str
        The legend entry of that line.

    Notes
    -----
    The y-axis spans the curves from their lowest point to the 90th percentile of the values drawn: the
    first evaluations of a run are far above the rest and would flatten everything else.  When that hides
    points, the axis label says so.
    """
    step = np.asarray(history["step"])
    train, val = np.asarray(history["train_loss"], float), np.asarray(history["val_loss"], float)
    fig, (ax,) = _figure(1, 6.4, 4.4)
    ax.plot(step, train, label="train (running mean)")
    if np.isfinite(val).any():
        ax.plot(step, val, label="validation")
    if limit is not None:
        ax.axhline(limit, color="k", ls="--", lw=1, label=limit_label)
    finite = np.concatenate([train, val[np.isfinite(val)]] + ([[limit]] if limit is not None else []))
    lo, hi = finite.min(), np.percentile(finite, 90)       # ignore the first, steep evaluations
    ax.set_ylim(lo - 0.05 * (hi - lo + 1e-12), hi + 0.05 * (hi - lo + 1e-12))
    ax.set_xlabel("step")
    clipped = int((finite > hi + 0.05 * (hi - lo + 1e-12)).sum())
    ax.set_ylabel("negative log-likelihood (nats)" + (f"\n(clipped at the 90th percentile: {clipped} early "
                                                      f"value(s) above)" if clipped else ""))
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.savefig(path, dpi=110)
