"""The masked convolution's sequential inverse against its one-pass forward (npflows.MaskedConv2d).

The forward is one convolution (im2col and one GEMM over every pixel of the batch); the inverse solves pixel by
pixel in raster order, each pixel a product with the taps already solved and a C x C triangular solve: H*W
sequential pixel steps of C sequential channel steps.  For each event shape and batch the table gives the median
milliseconds of forward, backward and inverse (timed in rotation, BLAS on one thread), inverse / forward, and
the round-trip error, checked before timing.

    python scripts/bench_masked_conv.py [--quick] [--kernel 3] [--taps raster]
"""
import argparse
import os
import sys

import numpy as np
import scipy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import npflows as nf  # noqa: E402
from _bench_util import env_lines, fmt_table, time_interleaved, use_native_kernel  # noqa: E402

SHAPES = [(1, 8, 8), (4, 4, 4)]
BATCHES = [1, 64]


def main(argv=None):
    use_native_kernel(__file__)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few timed calls per cell: a smoke run")
    p.add_argument("--kernel", type=int, default=3, help="odd kernel size (default 3)")
    p.add_argument("--taps", default="raster", choices=["raster", "quadrant"],
                   help="the mask: 'raster' (PixelCNN: every tap before the centre in raster order) or 'quadrant' "
                        "(the 2x2 causal kernel when kernel is 3) (default raster)")
    p.add_argument("--dtype", default="float64", choices=["float64", "float32"], help="(default float64)")
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_limits

    print(__doc__.split("\n")[0])
    for line in env_lines(np, scipy, extra=["BLAS pinned to 1 thread with threadpoolctl.threadpool_limits(1)"]):
        print(line)
    rng = np.random.default_rng(0)
    rows = []
    reps = dict(min_repeats=3, min_time=0.0) if args.quick else dict(min_repeats=30, min_time=0.5)
    with threadpool_limits(1):
        for shape in SHAPES:
            b = nf.MaskedConv2d(shape, kernel_size=args.kernel, taps=args.taps)
            params = {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(args.dtype)
                      for k, v in b.init(rng).items()}
            for n in BATCHES:
                x = rng.standard_normal((n,) + shape).astype(args.dtype)
                y, ld, cache = b.forward(params, x)
                x2, ld2 = b.inverse(params, y)
                err = float(np.max(np.abs(x2 - x)))
                dy, dl = np.ones_like(y), np.ones_like(ld)
                t = time_interleaved({"forward": lambda: b.forward(params, x),
                                      "backward": lambda: b.backward(params, dy, dl, cache),
                                      "inverse": lambda: b.inverse(params, y)}, **reps)
                rows.append([str(shape), n, shape[1] * shape[2], f"{t['forward'][0]:.3f}", f"{t['backward'][0]:.3f}",
                             f"{t['inverse'][0]:.3f}", f"{t['inverse'][0] / t['forward'][0]:.1f}", f"{err:.1e}"])
    print(f"kernel {args.kernel}x{args.kernel}, taps {args.taps!r}, {args.dtype}")
    print(fmt_table(["event (C, H, W)", "batch", "pixel steps", "forward ms", "backward ms", "inverse ms",
                     "inverse / forward", "round trip max err"], rows))
    if args.quick:
        print("(a --quick smoke run: few timed calls)")


if __name__ == "__main__":
    main()
