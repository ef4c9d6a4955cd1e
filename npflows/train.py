"""A minibatch training loop with Adam, progress lines and early stopping on a validation split."""
import math
import sys
import time

import numpy as np

from ._checks import check_array, check_count, check_positive, check_rng
from .optim import adam, adam_init


def split_train_val(x, val_fraction, rng):
    """Shuffle the rows of ``x`` (``(N, D)`` or ``(N, C, H, W)``, batch first) and split off ``val_fraction`` of
    them: ``(train, val)``."""
    owner = "split_train_val"
    check_array(owner, x, what="data")
    if x.ndim < 2:
        raise ValueError(f"{owner}: expected data of rank 2 or more (batch first: (N, D) or (N, C, H, W)), got "
                         f"shape {x.shape}")
    check_rng(owner, rng)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float, np.floating)) \
            or not 0.0 < val_fraction < 1.0:
        raise ValueError(f"{owner}: val_fraction must lie in (0, 1), got {val_fraction!r}")
    if x.shape[0] < 2:
        raise ValueError(f"{owner}: needs at least 2 rows (one for each split), got {x.shape[0]}")
    idx = rng.permutation(x.shape[0])
    n_val = min(x.shape[0] - 1, max(1, int(round(val_fraction * x.shape[0]))))
    return x[idx[n_val:]], x[idx[:n_val]]


def _lr_at(step, steps, lr, schedule, warmup):
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return 0.5 * lr * (1.0 + math.cos(math.pi * step / steps))
    raise ValueError(f"fit: unknown lr schedule {schedule!r}; choose 'constant' or 'cosine'")


def fit(loss_and_grad, params, data=None, *, rng, steps=1000, batch_size=256, lr=1e-3, schedule="constant",
        warmup=0, clip_norm=None, val_loss=None, eval_every=100, patience=None, progress=True, out=None,
        context=None):
    """Minimise an objective with Adam.

    Parameters
    ----------
    loss_and_grad : callable
        ``loss_and_grad(params, batch) -> (loss, grads)`` when ``data`` is given (batches are ``(B, ...)``
        rows drawn without replacement, reshuffled every epoch), else ``loss_and_grad(params, rng)`` (for
        objectives that sample, such as reverse KL).  With ``context``:
        ``loss_and_grad(params, batch, context_batch)``, which may return a third value (the context's
        cotangent, as a conditional flow's ``loss_and_grad`` does): it is ignored, the context being data here.
    params : dict
        Initial parameters (not modified).
    data : ndarray, optional
        Training data ``(N, D)`` or ``(N, C, H, W)``, batch first.
    context : ndarray, optional
        The data's contexts ``(N, C)`` (a conditional flow :math:`p(x \\mid c)`): each batch of data rows comes
        with the same rows of ``context``.
    rng : numpy.random.Generator
        Drives the minibatch order (and is passed to sampling objectives).
    schedule : {"constant", "cosine"}
        Learning-rate schedule after ``warmup`` linear-warmup steps.
    clip_norm : float, optional
        Gradient-norm clipping for Adam.
    val_loss : callable, optional
        ``val_loss(params) -> float``, evaluated every ``eval_every`` steps; the best parameters seen are
        returned, and training stops after ``patience`` evaluations without improvement.
    progress : bool
        Print one line per evaluation: step, mean training loss since the last line, validation loss,
        steps per second.

    Raises
    ------
    ValueError
        For a bad argument, before the first step: ``steps``, ``batch_size`` and ``eval_every`` must be
        integers >= 1, ``warmup`` an integer >= 0, ``patience`` None or an integer >= 1, ``lr`` and
        ``clip_norm`` (when given) finite and > 0, ``rng`` a ``numpy.random.Generator``, ``data`` (when given) a
        finite float array ``(N, ...)`` of rank >= 2 with ``N >= batch_size``, ``context`` (when given) a finite
        float array ``(N, C)`` with the data's rows and dtype, and only with ``data``.
    FloatingPointError
        When training diverges (a non-finite loss or gradient after the first step).

    Returns
    -------
    params : dict
        The parameters with the best validation loss (the last ones when there is no ``val_loss``).
    history : dict
        ``step``, ``train_loss`` and ``val_loss`` lists, one entry per evaluation, and ``stopped_at``.
    """
    owner = "fit"
    if not callable(loss_and_grad):
        raise ValueError(f"{owner}: loss_and_grad must be callable, got {type(loss_and_grad).__name__}")
    if not isinstance(params, dict) or not params:
        raise ValueError(f"{owner}: params must be a non-empty dict of arrays, got {type(params).__name__}")
    check_rng(owner, rng)
    steps = check_count(owner, steps, "steps", minimum=1)
    eval_every = check_count(owner, eval_every, "eval_every", minimum=1)
    warmup = check_count(owner, warmup, "warmup", minimum=0)
    lr = check_positive(owner, lr, "lr")
    if clip_norm is not None:
        clip_norm = check_positive(owner, clip_norm, "clip_norm")
    if patience is not None:
        patience = check_count(owner, patience, "patience", minimum=1)
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"{owner}: unknown lr schedule {schedule!r}; choose 'constant' or 'cosine'")
    if val_loss is not None and not callable(val_loss):
        raise ValueError(f"{owner}: val_loss must be callable or None, got {type(val_loss).__name__}")
    if data is not None:
        check_array(owner, data, what="data")
        if data.ndim < 2:
            raise ValueError(f"{owner}: expected data of rank 2 or more (batch first: (N, D) or (N, C, H, W)), "
                             f"got shape {data.shape}")
        batch_size = check_count(owner, batch_size, "batch_size", minimum=1)
        if data.shape[0] < batch_size:
            raise ValueError(f"{owner}: batch_size {batch_size} exceeds the {data.shape[0]} rows of data; lower "
                             f"batch_size or pass more data")
    if context is not None:
        if data is None:
            raise ValueError(f"{owner}: a context is batched alongside the data; pass data too")
        check_array(owner, context, ndim=2, what="context")
        if context.shape[0] != data.shape[0] or context.dtype != data.dtype:
            raise ValueError(f"{owner}: expected a context with one row per data row ({data.shape[0]}) in the "
                             f"data's dtype {data.dtype}, got shape {context.shape} and dtype {context.dtype}")
    out = out or sys.stdout
    state = adam_init(params)
    history = {"step": [], "train_loss": [], "val_loss": [], "stopped_at": steps}
    best, best_params, bad_evals = np.inf, params, 0
    order, pos = None, 0
    running, n_running, t0 = 0.0, 0, time.perf_counter()
    for step in range(steps):
        if data is not None:
            if order is None or pos + batch_size > data.shape[0]:
                order, pos = rng.permutation(data.shape[0]), 0
            rows = order[pos:pos + batch_size]
            batch = data[rows]
            pos += batch_size
        try:
            if context is not None:
                loss, grads = loss_and_grad(params, batch, context[rows])[:2]
            else:
                loss, grads = loss_and_grad(params, batch) if data is not None else loss_and_grad(params, rng)
        except (ValueError, FloatingPointError) as e:
            if step == 0:      # the very first step: bad data or a bad model, not divergence
                raise
            raise FloatingPointError(f"fit: step {step} failed after {step} good steps, so training diverged "
                                     f"(lower the learning rate or set clip_norm): {e}") from e
        if not np.isfinite(loss):
            raise FloatingPointError(f"fit: the loss became {loss} at step {step}; lower the learning rate "
                                     f"or set clip_norm")
        params, state = adam(params, grads, state, lr=_lr_at(step, steps, lr, schedule, warmup),
                             clip_norm=clip_norm)
        running += loss
        n_running += 1
        last = step == steps - 1
        if (step + 1) % eval_every == 0 or last:
            v = float(val_loss(params)) if val_loss is not None else float("nan")
            history["step"].append(step + 1)
            history["train_loss"].append(running / n_running)
            history["val_loss"].append(v)
            rate = n_running / (time.perf_counter() - t0)
            if val_loss is not None:
                if v < best:
                    best, best_params, bad_evals = v, params, 0
                else:
                    bad_evals += 1
            if progress:
                val = f"  val {v:.4f} (best {best:.4f})" if val_loss is not None else ""
                print(f"step {step + 1:>6}/{steps}  train {running / n_running:.4f}{val}  {rate:7.1f} steps/s",
                      file=out, flush=True)
            running, n_running, t0 = 0.0, 0, time.perf_counter()
            if patience is not None and bad_evals >= patience:
                history["stopped_at"] = step + 1
                if progress:
                    print(f"early stop at step {step + 1}: no improvement in {patience} evaluations", file=out)
                break
    return (best_params if val_loss is not None else params), history
