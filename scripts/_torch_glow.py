"""A plain PyTorch model of an npflows image flow (the Glow of ``scripts/bench_images.py``), built layer by layer
from the npflows bijector and holding a copy of its parameters, so the two compute the same function.

Nothing here is imported by npflows; the caller passes the ``torch`` module.  Each npflows layer becomes the
module a PyTorch user would write for it: ``nn.Conv2d`` for the coupling network, ``F.conv2d`` with a
``(C, C, 1, 1)`` weight for the 1x1 convolution (as normflows does), ``F.pixel_unshuffle`` for the
channel-major squeeze, autograd for every gradient.  Supported layers: ``Reshape``, ``Squeeze`` (its three
orders), ``ActNorm2d``, ``Invertible1x1Conv``, ``LUInvertible1x1Conv``, ``ImageAffineCoupling`` with the channel
mask (every scale map, layout and ``shift_first``), ``Sequential`` and ``MultiScale`` (both ``factor_out``).
"""
import numpy as np


def torch_model(torch, flow, params, dtype):
    """A plain torch model of ``flow``, built layer by layer from the npflows model, holding a copy of ``params``;
    returns ``(model, log_prob, {npflows key: torch parameter})``."""
    nn, F = torch.nn, torch.nn.functional
    tdt = getattr(torch, np.dtype(dtype).name)
    keymap = {}

    def param(key, value):
        p = nn.Parameter(torch.tensor(np.asarray(value, dtype=dtype)))
        keymap[key] = p
        return p

    class Reshape(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self.shape = tuple(shape)

        def forward(self, x):
            return x.reshape((x.shape[0],) + self.shape), 0.0

    class Squeeze(nn.Module):
        def __init__(self, C, order):
            super().__init__()
            self.C, self.order = C, order
            self.checker = [0, 3, 1, 2]      # block positions (0,0), (1,1), (0,1), (1,0)

        def forward(self, x):
            if self.order == "channel_major":           # o = 4c + 2 di + dj
                return F.pixel_unshuffle(x, 2), 0.0
            n, C, H, W = x.shape
            t = x.reshape(n, C, H // 2, 2, W // 2, 2).permute(0, 3, 5, 1, 2, 4)      # n, di, dj, c, i, j
            t = t.reshape(n, 4, C, H // 2, W // 2)
            if self.order == "checkerboard":
                t = t[:, self.checker]
            return t.reshape(n, 4 * C, H // 2, W // 2), 0.0

    class ActNorm2d(nn.Module):
        def __init__(self, b, p, prefix):
            super().__init__()
            self.log_scale, self.shift = param(prefix + "log_scale", p["log_scale"]), param(prefix + "shift", p["shift"])
            self.hw = b.event_shape[1] * b.event_shape[2]

        def forward(self, x):
            y = x * torch.exp(self.log_scale).view(1, -1, 1, 1) + self.shift.view(1, -1, 1, 1)
            return y, self.hw * self.log_scale.sum()

    class Conv1x1(nn.Module):
        def __init__(self, b, p, prefix):
            super().__init__()
            self.W = param(prefix + "W", p["W"])
            self.hw = b.event_shape[1] * b.event_shape[2]

        def forward(self, x):
            C = self.W.shape[0]
            return F.conv2d(x, self.W.view(C, C, 1, 1)), self.hw * torch.linalg.slogdet(self.W)[1]

    class LUConv1x1(nn.Module):
        def __init__(self, b, p, prefix):
            super().__init__()
            self.lower, self.upper = param(prefix + "lower", p["lower"]), param(prefix + "upper", p["upper"])
            self.log_scale = param(prefix + "log_scale", p["log_scale"])
            C = b.channels
            self.register_buffer("P", torch.tensor(np.eye(C)[b.perm], dtype=tdt))
            self.register_buffer("lo", torch.tensor(np.tril(np.ones((C, C)), -1), dtype=tdt))
            self.register_buffer("eye", torch.eye(C, dtype=tdt))
            self.register_buffer("sign", torch.tensor(b.sign.astype(np.float64), dtype=tdt))
            self.hw = b.event_shape[1] * b.event_shape[2]

        def forward(self, x):
            L = self.lower * self.lo + self.eye
            M = self.upper * self.lo.T + torch.diag(self.sign * torch.exp(self.log_scale))
            W = self.P @ (L @ M)
            C = W.shape[0]
            return F.conv2d(x, W.view(C, C, 1, 1)), self.hw * self.log_scale.sum()

    scale_maps = {
        "exp": lambda r, c: r,
        "tanh": lambda r, c: c * torch.tanh(r),
        "sigmoid": lambda r, c: torch.log(torch.sigmoid(r + 2.0) + 1e-3),
        "softplus": lambda r, c: torch.log(F.softplus(r) + 1e-3),
        "softclip": lambda r, c: r / (1.0 + r.abs() / c),
        "logsigmoid": lambda r, c: F.logsigmoid(r + 2.0),
        "neg_logsigmoid": lambda r, c: -F.logsigmoid(r + 2.0),
    }
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "leaky_relu": lambda: nn.LeakyReLU(0.01)}

    class Coupling(nn.Module):
        """Channel-mask affine coupling with Glow's network; the npflows layer's options."""

        def __init__(self, b, p, prefix):
            super().__init__()
            if b.mask != "channel":
                raise NotImplementedError("_torch_glow: the torch model has only the channel mask")
            net, k = b.net, b.net.kernel
            convs = [nn.Conv2d(net.in_channels, net.hidden, k, padding=k // 2),
                     nn.Conv2d(net.hidden, net.hidden, 1),
                     nn.Conv2d(net.hidden, net.out_channels, k, padding=k // 2)]
            for l, c in enumerate(convs):
                c.weight = param(f"{prefix}net.W{l}", p[f"net.W{l}"])
                c.bias = param(f"{prefix}net.b{l}", p[f"net.b{l}"])
            self.net = nn.Sequential(convs[0], acts[net.activation](), convs[1], acts[net.activation](), convs[2])
            self.ia, self.ib, self.parity = b._ia, b._ib, b.parity
            self.K, self.layout, self.shift_first = b.n_transformed, b.layout, b.shift_first
            self.scale, self.bound = scale_maps[b.scale], b.scale_bound

        def forward(self, x):
            xa, xb = x[:, self.ia], x[:, self.ib]
            h = self.net(xa)
            K = self.K
            if self.layout == "scale_shift":
                r, t = h[:, :K], h[:, K:]
            elif self.layout == "shift_scale":
                r, t = h[:, K:], h[:, :K]
            else:
                r, t = h[:, 1::2], h[:, 0::2]
            s = self.scale(r, self.bound)
            yb = (xb + t) * torch.exp(s) if self.shift_first else xb * torch.exp(s) + t
            y = torch.cat([xa, yb] if self.parity == 0 else [yb, xa], dim=1)
            return y, s.flatten(1).sum(1)

    class Chain(nn.Module):
        def __init__(self, mods):
            super().__init__()
            self.mods = nn.ModuleList(mods)

        def forward(self, x):
            logdet = 0.0
            for m in self.mods:
                x, ld = m(x)
                logdet = logdet + ld
            return x, logdet

    class MultiScale(nn.Module):
        """Stages; after every stage but the last, half the channels go to the output (``factor_out``)."""

        def __init__(self, stages, n_out, factor_out):
            super().__init__()
            self.stages, self.n_out, self.factor_out = nn.ModuleList(stages), n_out, factor_out

        def forward(self, x):
            n, pieces, logdet = x.shape[0], [], 0.0
            for i, st in enumerate(self.stages):
                y, ld = st(x)
                logdet = logdet + ld
                if i < len(self.stages) - 1:
                    m = self.n_out[i]
                    if self.factor_out == "first":
                        out, x = y[:, :m], y[:, m:]
                    else:
                        k = y.shape[1] - m
                        out, x = y[:, k:], y[:, :k]
                    y = out
                pieces.append(y.reshape(n, -1))
            return torch.cat(pieces, dim=1), logdet

    def convert(b, p, prefix):
        kind = type(b).__name__
        if kind == "Reshape":
            return Reshape(b.out_event_shape)
        if kind == "Squeeze":
            return Squeeze(b.event_shape[0], b.order)
        if kind == "ActNorm2d":
            return ActNorm2d(b, {k: p[prefix + k] for k in b.param_shapes()}, prefix)
        if kind == "Invertible1x1Conv":
            return Conv1x1(b, {k: p[prefix + k] for k in b.param_shapes()}, prefix)
        if kind == "LUInvertible1x1Conv":
            return LUConv1x1(b, {k: p[prefix + k] for k in b.param_shapes()}, prefix)
        if kind == "ImageAffineCoupling":
            return Coupling(b, {k: p[prefix + k] for k in b.param_shapes()}, prefix)
        if kind == "Sequential":
            return Chain([convert(c, p, f"{prefix}{i}.") for i, c in enumerate(b.layers)])
        if kind == "MultiScale":
            return MultiScale([convert(st, p, f"{prefix}{i}.") for i, st in enumerate(b.stages)], b._n_out,
                              b.factor_out)
        raise NotImplementedError(f"_torch_glow: no torch counterpart for the npflows layer {kind}")

    model = convert(flow.bijector, params, "").to(tdt)
    half_log_2pi = 0.5 * np.log(2 * np.pi)

    def log_prob(x):
        z, logdet = model(x)
        return -0.5 * (z * z).sum(1) - z.shape[1] * half_log_2pi + logdet

    missing = set(flow.bijector.param_shapes()) - set(keymap)
    if missing:
        raise RuntimeError(f"_torch_glow: the torch model lacks parameters {sorted(missing)[:5]}")
    return model, log_prob, keymap


def torch_step(torch, model, log_prob, x):
    """A callable doing torch's train step on the NumPy batch ``x``: ``zero_grad()``, the mean negative
    log-likelihood, ``backward()`` (the gradients land in the parameters' ``.grad``); it returns the loss."""
    xt = torch.from_numpy(x)

    def step():
        model.zero_grad()
        loss = -log_prob(xt).mean()
        loss.backward()
        return loss
    return step
