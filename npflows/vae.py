"""Variational autoencoders whose posteriors (and decoders) are npflows flows, every gradient derived by hand.

A VAE (Kingma & Welling 2013, "Auto-Encoding Variational Bayes", arXiv:1312.6114) has a prior
:math:`p(z) = \\mathcal N(0, I_L)`, a decoder :math:`p_\\theta(x \\mid z)` and an encoder that gives an
approximate posterior :math:`q_\\phi(z \\mid x)`.  Here the posterior is the encoder's diagonal Gaussian pushed
through a flow :math:`f` in its sampling direction (a bijector's ``forward``, as in a
:class:`~npflows.PushForward`)::

    vae = VAE(64, 2, hidden=(128,), flow=planar_posterior(2, 8, 16), context_dim=16)  # or flow=None, an IAF
    params = vae.init(rng)
    loss, grads = vae.loss_and_grad(params, x_batch, rng)     # -ELBO of the batch and its gradient
    params, state = npflows.adam(params, grads, state)
    elbo, iw = vae.bounds(params, x_test, rng, samples=1000)  # per image: ELBO and the IW bound on log p(x)

The posteriors of Rezende & Mohamed 2015 (planar flows, arXiv:1505.05770) and of Kingma et al. 2016 (inverse
autoregressive flow conditioned on a context vector from the encoder, arXiv:1606.04934) are built by
:func:`planar_posterior` and :func:`iaf_posterior`.  The decoder is a Bernoulli MLP over binarised images
(:class:`BernoulliDecoder`) or a conditional normalizing flow over continuous (dequantized, logit-space)
images (:class:`FlowDecoder`).  See :class:`VAE` for the derivation of the gradient.

Runtime: NumPy and SciPy only.
"""
import math

import numpy as np

from ._checks import FLOAT_DTYPES, QUIET, all_finite, check_count, check_event, check_finite_result, check_params
from ._checks import check_rng, unbox
from .core.bijector import ERRORS, in_layer
from .nn.mlp import ACTIVATIONS, MLP

ENC, DEC, FLOW = "enc.", "dec.", "flow."
"""Key prefixes of the encoder, decoder and posterior-flow parameters in a VAE's flat dict."""
BINARY_THRESHOLD = 8
""":func:`binarize`: a digits pixel (grey level 0..16) is 1 when it is at least this."""
CHUNK_ROWS = 4096
"""Rows (images x samples) per pass of :meth:`VAE.bounds`.  Each pass keeps every layer's activations (the
forward passes build their backward caches): 4096 rows of a 128-wide MLP are 4 MiB in float64, and of a
64-D autoregressive spline decoder (5 layers, MADE 256-256, 25 outputs per pixel) about 200 MiB."""


def binarize(images, threshold=BINARY_THRESHOLD, dtype=np.float64):
    """Binarised images: 1.0 where the grey level is ``>= threshold`` (8 of the digits' 0..16), else 0.0."""
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.integer):
        raise ValueError(f"binarize: expected integer grey levels, got dtype {images.dtype}")
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise ValueError(f"binarize: dtype must be float32 or float64, got {np.dtype(dtype)}")
    return (images >= threshold).astype(dtype)


def _sigmoid(a):
    """The logistic function without overflow (plain NumPy, keeps the dtype)."""
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def _sub(params, prefix, keys):
    """``{k: params[prefix + k]}``: a child's own parameter dict from the flat dict."""
    return {k: params[prefix + k] for k in keys}


class BernoulliDecoder:
    """:math:`p_\\theta(x \\mid z) = \\prod_d \\mathrm{Bernoulli}(x_d;\\ \\mathrm{sigmoid}(l_d))`,
    :math:`l = \\mathrm{MLP}_\\theta(z)`: binary images ``(N, D)`` of 0.0 and 1.0.

    Parameters
    ----------
    data_dim, latent_dim : int
        D and L.
    hidden : sequence of int
        The MLP's hidden widths.
    activation : str
        One of :data:`npflows.nn.ACTIVATIONS`.

    Notes
    -----
    :math:`\\log p(x \\mid z) = \\sum_d [x_d l_d - \\mathrm{softplus}(l_d)]` (the negative binary cross-entropy
    with logits, computed as ``x*l - logaddexp(0, l)``: no overflow for any logit).  Its derivative in the
    logit is :math:`\\partial/\\partial l_d = x_d - \\mathrm{sigmoid}(l_d)`, so a cotangent
    :math:`\\bar\\ell_n` of :math:`\\log p(x_n \\mid z_n)` gives :math:`\\bar l_n = \\bar\\ell_n (x_n -
    \\mathrm{sigmoid}(l_n))`, and the MLP's backward (:class:`~npflows.nn.MLP`) takes it to
    :math:`\\bar z` and :math:`\\bar\\theta`.
    """

    kind = "bernoulli"

    def __init__(self, data_dim, latent_dim, hidden=(128,), activation="tanh"):
        self.data_dim, self.latent_dim = int(data_dim), int(latent_dim)
        self.hidden, self.activation = tuple(int(h) for h in hidden), activation
        self.net = MLP(self.latent_dim, self.data_dim, self.hidden, activation)
        self.dim = self.data_dim

    def param_shapes(self):
        return self.net.param_shapes()

    def init(self, rng, dtype=np.float64):
        return self.net.init(rng, dtype=dtype)

    def check_data(self, owner, x):
        """``ValueError`` unless ``x`` is a float array ``(N, D)`` of 0.0 and 1.0."""
        check_event(owner, x, (self.data_dim,), what="data")
        xv = unbox(x)
        if xv.size and not np.all((xv == 0) | (xv == 1)):
            bad = xv[(xv != 0) & (xv != 1)]
            raise ValueError(f"{owner}: the Bernoulli decoder models binary data, 0.0 or 1.0; {bad.size} value(s) "
                             f"are neither (e.g. {bad.flat[0]!r}); binarise the images first (npflows.vae.binarize)")

    def log_prob(self, params, x, z, xp=np):
        """``(log p(x | z), cache)``, shape ``(N,)``."""
        logits, nc = self.net.forward(params, z, xp)
        lp = xp.sum(x * logits - xp.logaddexp(0.0, logits), axis=1)
        return lp, (x, logits, nc)

    def log_prob_backward(self, params, dlogp, cache):
        """``(dz, grads)`` for the cotangent ``dlogp`` ``(N,)`` of :meth:`log_prob`."""
        x, logits, nc = cache
        dl = dlogp[:, None] * (x - _sigmoid(logits))
        return self.net.backward(params, dl, nc)

    def decode(self, params, z):
        """The pixel probabilities :math:`\\mathrm{sigmoid}(l)` at ``z`` (the decoder's mean), shape ``(N, D)``."""
        return _sigmoid(self.net.forward(params, z)[0])

    def __repr__(self):
        return f"BernoulliDecoder(data_dim={self.data_dim}, latent_dim={self.latent_dim}, hidden={self.hidden})"


class FlowDecoder:
    """:math:`p_\\theta(x \\mid z)` a conditional normalizing flow with context :math:`z`: continuous data
    ``(N, D)`` (for images: dequantized and logit-transformed, :mod:`npflows.dequantize`).

    Parameters
    ----------
    bijector : Bijector
        A conditional bijector on R^D with ``context_dim`` = L whose ``forward`` maps data to the base (a
        conditional MAF, ``npflows.maf(D, ..., context_dim=L)``, or conditional couplings), as in a
        :class:`~npflows.NormalizingFlow`.
    latent_dim : int
        L; the bijector's ``context_dim`` must equal it.

    Notes
    -----
    With :math:`u = g(x; z)` the bijector's forward and the base :math:`\\mathcal N(0, I_D)`,
    :math:`\\log p(x \\mid z) = -\\tfrac12\\lVert u\\rVert^2 - \\tfrac D2\\log 2\\pi + \\log|\\det
    \\partial u/\\partial x|` (the change of variables for fixed :math:`z`).  A cotangent :math:`\\bar\\ell_n`
    of it gives the bijector's cotangents :math:`\\bar u_n = -\\bar\\ell_n u_n` (the base's pullback) and
    :math:`\\overline{\\mathrm{logdet}}_n = \\bar\\ell_n`, and the bijector's backward returns the parameter
    gradients and, because its forward was given the context, :math:`\\bar z` (the contract's
    ``(dx, grads, dcontext)``): the path by which the decoder's likelihood trains the encoder.
    """

    kind = "flow"

    def __init__(self, bijector, latent_dim):
        from .distributions import StandardNormal
        self.bijector, self.latent_dim = bijector, int(latent_dim)
        if getattr(bijector, "context_dim", None) != self.latent_dim:
            raise ValueError(f"FlowDecoder: the bijector must be conditional with context_dim = latent_dim = "
                             f"{self.latent_dim}, got context_dim {getattr(bijector, 'context_dim', None)}")
        if bijector.event_shape is None or len(bijector.event_shape) != 1:
            raise ValueError(f"FlowDecoder: needs a bijector on vectors (N, D), got event shape {bijector.event_shape}")
        self.data_dim = self.dim = bijector.dim
        self.base = StandardNormal(self.data_dim)

    def param_shapes(self):
        return self.bijector.param_shapes()

    def init(self, rng, dtype=np.float64):
        return self.bijector.init(rng, dtype=dtype)

    def check_data(self, owner, x):
        check_event(owner, x, (self.data_dim,), what="data")

    def log_prob(self, params, x, z, xp=np):
        """``(log p(x | z), cache)``, shape ``(N,)``."""
        try:
            u, logdet, cache = self.bijector.forward(params, x, context=z, xp=xp)
        except ERRORS as e:
            raise in_layer(e, "VAE decoder (FlowDecoder)") from None
        return self.base.log_prob({}, u, xp) + logdet, (u, cache)

    def log_prob_backward(self, params, dlogp, cache):
        """``(dz, grads)`` for the cotangent ``dlogp`` ``(N,)`` of :meth:`log_prob`."""
        u, bcache = cache
        du, _ = self.base.log_prob_backward({}, u, dlogp)
        try:
            _, grads, dz = self.bijector.backward(params, du, dlogp, bcache)
        except ERRORS as e:
            raise in_layer(e, "VAE decoder (FlowDecoder) backward") from None
        return dz, grads

    def decode(self, params, z, rng=None, temperature=1.0):
        """Data points for the latents ``z`` ``(N, L)``: the bijector's inverse at base draws scaled by
        ``temperature`` (from ``rng``), or at the base's mode 0 when ``rng`` is None."""
        n = z.shape[0]
        u = np.zeros((n, self.data_dim), z.dtype) if rng is None else \
            (temperature * rng.standard_normal((n, self.data_dim))).astype(z.dtype)
        return self.bijector.inverse(params, u, context=z)[0]

    def __repr__(self):
        return f"FlowDecoder({self.bijector!r}, latent_dim={self.latent_dim})"


def planar_posterior(latent_dim, n_flows, context_dim=None):
    """``n_flows`` planar layers in sequence (Rezende & Mohamed 2015, arXiv:1505.05770) to refine a VAE's
    Gaussian posterior: ``VAE(..., flow=planar_posterior(L, K, H), context_dim=H)``.

    With ``context_dim`` H (the paper's amortised flow), :class:`~npflows.ConditionalPlanar` layers whose
    parameters are affine in the encoder's context :math:`h(x)`: a planar map per image.  Without it,
    :class:`~npflows.Planar` layers with global parameters, one map shared by every image (see :class:`VAE`,
    Notes, for what that can and cannot do)."""
    from .bijectors.planar_radial import ConditionalPlanar, Planar
    from .core.compose import Sequential
    if int(n_flows) < 1:
        raise ValueError(f"planar_posterior: n_flows must be >= 1, got {n_flows}")
    if context_dim:
        return Sequential([ConditionalPlanar(latent_dim, context_dim) for _ in range(int(n_flows))])
    return Sequential([Planar(latent_dim) for _ in range(int(n_flows))])


def iaf_posterior(latent_dim, n_layers=2, hidden=(32, 32), context_dim=16, activation="elu", update="gated"):
    """An inverse autoregressive flow conditioned on the encoder's context (Kingma et al. 2016,
    arXiv:1606.04934): ``VAE(..., flow=iaf_posterior(L, T, hidden, H), context_dim=H)``.

    ``n_layers`` :class:`~npflows.MaskedAffineAutoregressive` layers with ``context_dim`` (MADE reads
    :math:`[z, h]`, the context connected to every hidden unit), orders alternating between natural and
    reversed (the paper reverses the order between steps), used in their ``forward``, the sampling direction:
    each layer maps :math:`z_{t-1}` to :math:`z_t` with coefficients computed from :math:`z_{t-1}` itself and
    :math:`h`, in one pass, and its logdet is the sum of its log-scales.  ``update="gated"`` is the paper's
    numerically stable form :math:`z_t = \\sigma_t\\odot z_{t-1} + (1-\\sigma_t)\\odot m_t`,
    :math:`\\sigma_t = \\mathrm{sigmoid}(r_t + 2)` (eq. 14 and sec. 4); ``"affine"`` is
    :math:`z_t = z_{t-1} e^{s_t} + m_t`."""
    from .bijectors.autoregressive import maf
    return maf(latent_dim, n_layers=n_layers, hidden=tuple(hidden), activation=activation, order="alternate",
               update=update, context_dim=int(context_dim))


class VAE:
    """A VAE with posterior :math:`q(z \\mid x) = f_\\#\\,\\mathcal N(\\mu(x), \\mathrm{diag}\\,\\sigma(x)^2)` and a
    hand-derived gradient of its one-sample reparameterised ELBO.

    Parameters
    ----------
    data_dim : int
        D, the size of one data vector.
    latent_dim : int
        L, the size of the latent vector (2 to 8 for the digits).
    hidden : sequence of int
        The encoder's hidden widths, and the decoder's unless ``decoder`` is given.
    activation : str
        Of the encoder (and of the default decoder): one of :data:`npflows.nn.ACTIVATIONS`.
    decoder : BernoulliDecoder or FlowDecoder, optional
        Default: ``BernoulliDecoder(data_dim, latent_dim, hidden, activation)``.
    flow : Bijector on R^L, optional
        The posterior flow in its sampling direction (``forward`` maps :math:`z_0` to :math:`z_K`): None (the
        diagonal Gaussian), :func:`planar_posterior` (amortised with a context, or global), or
        :func:`iaf_posterior` (conditioned on a context).
    context_dim : int
        H, the size of the context vector :math:`h(x)` that the encoder emits for a conditional ``flow``
        (an amortised planar chain, an IAF); 0 for a flow without a context.

    Parameters are one flat dict: the encoder's MLP under ``"enc."`` (its output is
    :math:`[\\mu, \\log\\sigma, h]`, ``2L + H`` units), the decoder's under ``"dec."`` and the flow's under
    ``"flow."``.

    Notes
    -----
    **The bound.**  For one image :math:`x`, with :math:`\\epsilon \\sim \\mathcal N(0, I_L)`,
    :math:`z_0 = \\mu + \\sigma\\odot\\epsilon` (:math:`\\sigma = e^{s}`, :math:`s = \\log\\sigma`) and
    :math:`z_K = f(z_0; h)`, the change of variables gives
    :math:`\\log q(z_K \\mid x) = \\log\\mathcal N(z_0; \\mu, \\sigma^2) - \\log|\\det\\partial z_K/\\partial z_0|`
    and :math:`\\log\\mathcal N(z_0; \\mu, \\sigma^2) = -\\tfrac12\\lVert\\epsilon\\rVert^2 - \\sum_j s_j -
    \\tfrac L2\\log 2\\pi`, so the log importance weight
    :math:`\\ell = \\log p(x \\mid z_K) + \\log p(z_K) - \\log q(z_K \\mid x)` is

    .. math:: \\ell(x, \\epsilon) = \\log p_\\theta(x \\mid z_K) - \\tfrac12\\lVert z_K\\rVert^2
              + \\tfrac12\\lVert\\epsilon\\rVert^2 + \\sum_j s_j + \\log|\\det\\partial f/\\partial z_0|

    (the two :math:`\\tfrac L2\\log 2\\pi` cancel).  The ELBO is
    :math:`\\mathcal L(x) = \\mathbb E_\\epsilon[\\ell] \\le \\log p(x)` (Rezende & Mohamed 2015, eq. 15);
    with ``K`` draws the importance-weighted bound
    :math:`\\log\\frac1K\\sum_k e^{\\ell_k}` is tighter and tends to :math:`\\log p(x)` (Burda et al. 2015,
    arXiv:1509.00519, theorem 1).

    **The gradient.**  One draw of :math:`\\epsilon` per image, held fixed, makes :math:`\\ell` a
    deterministic function of the parameters (the reparameterisation trick): its gradient is an unbiased
    estimate of the ELBO's.  For the objective :math:`J = \\sum_n a_n\\ell_n` (:math:`a_n = 1/N` for the
    mean ELBO, :math:`-1/N` for the loss), reverse mode through the forward pass, line by line:

    1. decoder: :math:`\\bar\\ell^{dec}_n = a_n`, and its backward gives :math:`\\bar\\theta` and the
       decoder's :math:`\\bar z_K` (:class:`BernoulliDecoder`: through :math:`x - \\mathrm{sigmoid}(l)`;
       :class:`FlowDecoder`: through the flow's context cotangent);
    2. prior: :math:`\\partial(-\\tfrac12\\lVert z_K\\rVert^2)/\\partial z_K = -z_K`, so
       :math:`\\bar z_K \\mathrel{+}= -a_n z_K`;
    3. flow: the flow's own backward with the cotangents :math:`(\\bar z_K, \\overline{\\mathrm{logdet}} =
       a_n)` (the logdet enters :math:`\\ell` with coefficient +1) gives :math:`\\bar z_0`, the flow's
       parameter gradients and, for a conditional flow, :math:`\\bar h`.  This is the only place where the
       flow's Jacobian structure enters, and each layer's Notes derive it;
    4. base sample: :math:`z_0 = \\mu + e^{s}\\odot\\epsilon` gives :math:`\\bar\\mu = \\bar z_0` and
       :math:`\\bar s = \\bar z_0\\odot\\sigma\\odot\\epsilon + a_n` (the :math:`+a_n` is the entropy term
       :math:`\\sum_j s_j`; :math:`\\tfrac12\\lVert\\epsilon\\rVert^2` depends on no parameter);
    5. encoder: the MLP's backward of :math:`[\\bar\\mu, \\bar s, \\bar h]` gives :math:`\\bar\\phi`.

    In step 4 the density of :math:`z_0` is written through :math:`\\epsilon` rather than through
    :math:`(z_0 - \\mu)/\\sigma`; they are the same number, and their total derivatives agree: through
    :math:`(z_0-\\mu)/\\sigma` the path term of :math:`\\mu` (:math:`-u/\\sigma`) cancels its direct term
    (:math:`+u/\\sigma`), leaving the :math:`-1` per :math:`s_j` used above.

    **Planar posteriors: amortised or global.**  Rezende & Mohamed amortise the flow: the encoder outputs
    each layer's :math:`u, w, b` per image.  :func:`planar_posterior` with a ``context_dim`` does this within
    the bijector contract: :class:`~npflows.ConditionalPlanar` layers take :math:`w_n = w + h_n C_w` (and so on)
    from the encoder's context :math:`h`, i.e. linear heads on the encoder's output, and their backward
    returns :math:`\\bar h`, which step 5 adds to the encoder's cotangent.  Without a context the layers are
    :class:`~npflows.Planar` bijectors with global parameters, the same map for every image: in the
    coordinate :math:`z_0` that model is a Gaussian posterior under the learned prior
    :math:`(f^{-1})_\\#\\mathcal N(0, I)`, so it can match the aggregate posterior better than a fixed
    :math:`\\mathcal N(0, I)`, but it cannot change the shape of any one image's posterior.
    """

    def __init__(self, data_dim, latent_dim, hidden=(128,), activation="tanh", decoder=None, flow=None,
                 context_dim=0):
        self.data_dim, self.latent_dim = int(data_dim), int(latent_dim)
        self.context_dim = int(context_dim)
        if self.data_dim < 1 or self.latent_dim < 1 or self.context_dim < 0:
            raise ValueError(f"VAE: need data_dim >= 1, latent_dim >= 1 and context_dim >= 0, got {data_dim}, "
                             f"{latent_dim}, {context_dim}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"VAE: unknown activation {activation!r}; choose one of {ACTIVATIONS}")
        self.hidden, self.activation = tuple(int(h) for h in hidden), activation
        self.encoder = MLP(self.data_dim, 2 * self.latent_dim + self.context_dim, self.hidden, activation,
                           prefix=ENC)
        self.decoder = decoder if decoder is not None else BernoulliDecoder(self.data_dim, self.latent_dim,
                                                                            self.hidden, activation)
        if getattr(self.decoder, "data_dim", self.data_dim) != self.data_dim or \
                getattr(self.decoder, "latent_dim", self.latent_dim) != self.latent_dim:
            raise ValueError(f"VAE: the decoder {self.decoder!r} does not map latent_dim {self.latent_dim} to "
                             f"data_dim {self.data_dim}")
        self.flow = flow
        if flow is not None and flow.dim is not None and flow.dim != self.latent_dim:
            raise ValueError(f"VAE: the posterior flow acts on R^{flow.dim}, the latent space is R^{self.latent_dim}")
        flow_context = getattr(flow, "context_dim", None) or 0
        if flow is not None and flow_context != self.context_dim:
            raise ValueError(f"VAE: the posterior flow takes a context of size {flow_context}, but context_dim is "
                             f"{self.context_dim}")
        if flow is None and self.context_dim:
            raise ValueError("VAE: context_dim > 0 needs a conditional posterior flow (planar_posterior with a "
                             "context_dim, iaf_posterior)")
        self._dec_keys = list(self.decoder.param_shapes())
        self._flow_keys = list(flow.param_shapes()) if flow is not None else []

    @property
    def name(self):
        return "VAE"

    # ------------------------------------------------------------------ parameters
    def param_shapes(self):
        shapes = dict(self.encoder.param_shapes())
        shapes.update({DEC + k: v for k, v in self.decoder.param_shapes().items()})
        if self.flow is not None:
            shapes.update({FLOW + k: v for k, v in self.flow.param_shapes().items()})
        return shapes

    def init(self, rng, dtype=np.float64):
        """Fresh parameters: the MLPs' default initialisation (:class:`~npflows.nn.MLP`), the flow's own
        ``init`` (near the identity for the planar and IAF posteriors)."""
        check_rng("VAE.init", rng)
        dtype = np.dtype(dtype)
        p = dict(self.encoder.init(rng, dtype=dtype))
        p.update({DEC + k: v for k, v in self.decoder.init(rng, dtype=dtype).items()})
        if self.flow is not None:
            p.update({FLOW + k: v for k, v in self.flow.init(rng, dtype=dtype).items()})
        return p

    def check_params(self, params, dtype=None):
        return check_params(self.name, params, {k: tuple(v) for k, v in self.param_shapes().items()}, dtype)

    def _split(self, params):
        return _sub(params, DEC, self._dec_keys), _sub(params, FLOW, self._flow_keys)

    # ------------------------------------------------------------------ the forward pass
    def _check(self, owner, params, x, eps=None):
        self.decoder.check_data(owner, x)
        dtype = unbox(x).dtype
        self.check_params(params, dtype)
        if eps is not None:
            check_event(owner, eps, (self.latent_dim,), what="noise eps")
            if unbox(eps).shape[0] != unbox(x).shape[0] or unbox(eps).dtype != dtype:
                raise ValueError(f"{owner}: eps must be ({unbox(x).shape[0]}, {self.latent_dim}) of the data's dtype "
                                 f"{dtype}, got {unbox(eps).shape} {unbox(eps).dtype}")

    def encode(self, params, x, xp=np):
        """``(mu, log_sigma, h, cache)``: the encoder's Gaussian ``(N, L)`` twice and the context ``(N, H)``."""
        out, cache = self.encoder.forward(params, x, xp)
        L = self.latent_dim
        return out[:, :L], out[:, L:2 * L], out[:, 2 * L:], cache

    def _flow_forward(self, pf, z0, h, xp):
        try:
            if self.context_dim:
                return self.flow.forward(pf, z0, context=h, xp=xp)
            return self.flow.forward(pf, z0, xp=xp)
        except ERRORS as e:
            raise in_layer(e, "VAE posterior flow") from None

    def _flow_backward(self, pf, dz, dlogdet, cache):
        """``(dz0, grads, dh)``; ``dh`` is None for a flow without context."""
        try:
            out = self.flow.backward(pf, dz, dlogdet, cache)
        except ERRORS as e:
            raise in_layer(e, "VAE posterior flow backward") from None
        if self.context_dim:
            dz0, g, dh = out
            return dz0, g, dh
        return out[0], out[1], None

    def posterior_sample(self, params, x, eps, xp=np, encoded=None):
        """``(z_K, z_0, mu, log_sigma, h, logdet, caches)``: the posterior's sample for the noise ``eps``.
        ``encoded``: ``(mu, log_sigma, h)`` already computed for these rows (:meth:`bounds` encodes each image
        once and repeats the rows for its samples); the encoder's cache is then None."""
        if encoded is None:
            mu, ls, h, ec = self.encode(params, x, xp)
        else:
            (mu, ls, h), ec = encoded, None
        sig = xp.exp(ls)
        if not all_finite(unbox(sig)):
            check_finite_result("VAE encoder", unbox(sig), "sigma = exp(log_sigma)",
                                hint=f"log_sigma reaches {float(np.max(unbox(ls))):.4g}, beyond the exp range of "
                                     f"{unbox(ls).dtype}")
        z0 = mu + sig * eps
        if self.flow is None:
            zk, logdet, fc = z0, None, None
        else:
            _, pf = self._split(params)
            zk, logdet, fc = self._flow_forward(pf, z0, h, xp)
        return zk, z0, mu, ls, h, logdet, (ec, sig, fc)

    def _log_weights(self, params, x, eps, xp=np, encoded=None):
        """:math:`\\ell` per image (Notes) and the cache of the backward; no input checks."""
        pd, _ = self._split(params)
        zk, z0, mu, ls, h, logdet, (ec, sig, fc) = self.posterior_sample(params, x, eps, xp, encoded)
        lpx, dc = self.decoder.log_prob(pd, x, zk, xp)
        ell = lpx - 0.5 * xp.sum(zk * zk, axis=1) + 0.5 * xp.sum(eps * eps, axis=1) + xp.sum(ls, axis=1)
        if logdet is not None:
            ell = ell + logdet
        return ell, (eps, zk, sig, ec, fc, dc)

    def log_weights(self, params, x, eps, xp=np):
        """The log importance weights :math:`\\ell = \\log p(x, z_K) - \\log q(z_K \\mid x)` ``(N,)`` of the
        posterior samples for the noise ``eps`` ``(N, L)`` (one per image): each is a one-sample ELBO
        estimate.  Traceable with ``xp`` (the tests check :meth:`elbo_and_grad` against autograd on it)."""
        owner = "VAE.log_weights"
        self._check(owner, params, x, eps)
        with np.errstate(**QUIET):
            ell, _ = self._log_weights(params, x, eps, xp)
        return check_finite_result(owner, ell, "the log importance weight", hint="a layer overflows")

    # ------------------------------------------------------------------ the gradient
    def elbo_and_grad(self, params, x, eps):
        """The mean one-sample ELBO of the batch for the fixed noise ``eps`` ``(N, L)`` and its gradient for
        every parameter by name (Notes, "The gradient")."""
        return self._objective_and_grad("VAE.elbo_and_grad", params, x, eps, 1.0)

    def loss_and_grad(self, params, x, rng):
        """The training objective: minus the mean one-sample ELBO (nats per image), with fresh noise from
        ``rng``, and its gradient (what :func:`npflows.adam` minimises)."""
        owner = "VAE.loss_and_grad"
        check_rng(owner, rng)
        self.decoder.check_data(owner, x)
        eps = rng.standard_normal((x.shape[0], self.latent_dim)).astype(x.dtype, copy=False)
        return self._objective_and_grad(owner, params, x, eps, -1.0)

    def _objective_and_grad(self, owner, params, x, eps, sign):
        self._check(owner, params, x, eps)
        n = x.shape[0]
        if n == 0:
            raise ValueError(f"{owner}: the batch is empty; a mean over no images is undefined")
        with np.errstate(**QUIET):
            ell, (eps, zk, sig, ec, fc, dc) = self._log_weights(params, x, eps)
        check_finite_result(owner, ell, "the log importance weight", hint="a layer overflows")
        pd, pf = self._split(params)
        a = np.full(n, sign / n, dtype=x.dtype)                            # d J / d ell_n
        with np.errstate(**QUIET):
            dzk, gdec = self.decoder.log_prob_backward(pd, a, dc)          # 1. decoder
            dzk = dzk - a[:, None] * zk                                    # 2. prior
            grads = {DEC + k: v for k, v in gdec.items()}
            dh = None
            if self.flow is not None:                                      # 3. flow, logdet cotangent a
                dz0, gflow, dh = self._flow_backward(pf, dzk, a, fc)
                grads.update({FLOW + k: v for k, v in gflow.items()})
            else:
                dz0 = dzk
            dls = dz0 * sig * eps + a[:, None]                             # 4. z0 = mu + e^s eps; entropy
            parts = [dz0, dls] + ([dh] if self.context_dim else [])
            _, genc = self.encoder.backward(params, np.concatenate(parts, axis=1), ec, need_dx=False)
        grads.update(genc)                                                 # 5. encoder
        for k, g in grads.items():
            check_finite_result(owner, g, f"the gradient of {k!r}")
        return sign * float(np.mean(ell, dtype=np.float64)), grads

    # ------------------------------------------------------------------ evaluation
    def bounds(self, params, x, rng, samples=1000, chunk_rows=CHUNK_ROWS):
        """Per image, the ELBO estimate and the importance-weighted bound on :math:`\\log p(x)` from the same
        ``samples`` posterior draws: ``(elbo, iw)``, both float64 ``(N,)``.

        :math:`\\mathrm{elbo} = \\frac1K\\sum_k\\ell_k` (an unbiased estimate of the ELBO) and
        :math:`\\mathrm{iw} = \\log\\frac1K\\sum_k e^{\\ell_k}` (Burda et al. 2015, arXiv:1509.00519; a lower
        bound on :math:`\\log p(x)` in expectation, never below the ELBO estimate by Jensen).  Computed in
        chunks of at most ``chunk_rows`` image-sample rows, with a running log-sum-exp per image."""
        owner = "VAE.bounds"
        self._check(owner, params, x)
        check_rng(owner, rng)
        samples = check_count(owner, samples, what="samples", minimum=1)
        chunk_rows = check_count(owner, chunk_rows, what="chunk_rows", minimum=1)
        n = x.shape[0]
        total = np.zeros(n)
        peak = np.full(n, -np.inf)
        scaled = np.zeros(n)           # sum_k exp(ell_k - peak)
        per_chunk = max(1, chunk_rows // max(n, 1))
        with np.errstate(**QUIET):
            encoded = self.encode(params, x)[:3]            # once per image; repeated for its samples below
        done = 0
        while done < samples:
            k = min(per_chunk, samples - done)
            eps = rng.standard_normal((k, n, self.latent_dim)).astype(x.dtype, copy=False)
            xr = np.broadcast_to(x, (k,) + x.shape).reshape(k * n, -1)
            rep = tuple(np.broadcast_to(a, (k,) + a.shape).reshape(k * n, -1) for a in encoded)
            with np.errstate(**QUIET):
                ell, _ = self._log_weights(params, xr, eps.reshape(k * n, -1), encoded=rep)
            check_finite_result(owner, ell, "the log importance weight", hint="a layer overflows")
            ell = ell.astype(np.float64).reshape(k, n)
            total += ell.sum(axis=0)
            new_peak = np.maximum(peak, ell.max(axis=0))
            scaled = scaled * np.exp(peak - new_peak) + np.exp(ell - new_peak).sum(axis=0)
            peak = new_peak
            done += k
        return total / samples, peak + np.log(scaled) - math.log(samples)

    def reconstruct(self, params, x):
        """The decoder's output (:meth:`BernoulliDecoder.decode`, :meth:`FlowDecoder.decode`) at the posterior's
        point for :math:`\\epsilon = 0`, :math:`z = f(\\mu(x); h(x))`."""
        owner = "VAE.reconstruct"
        self._check(owner, params, x)
        pd, _ = self._split(params)
        zk = self.posterior_sample(params, x, np.zeros((x.shape[0], self.latent_dim), x.dtype))[0]
        return self.decoder.decode(pd, zk)

    def latent(self, params, x):
        """:math:`f(\\mu(x); h(x))`, the posterior's point for :math:`\\epsilon = 0`, ``(N, L)``."""
        owner = "VAE.latent"
        self._check(owner, params, x)
        return self.posterior_sample(params, x, np.zeros((x.shape[0], self.latent_dim), x.dtype))[0]

    def sample(self, params, n, rng, dtype=np.float64, temperature=None):
        """The decoder's output at ``n`` prior draws :math:`z \\sim \\mathcal N(0, I_L)`, ``(n, D)``: the pixel
        probabilities of a :class:`BernoulliDecoder`; for a :class:`FlowDecoder`, its inverse at the base's mode
        (``temperature`` None) or at base draws scaled by ``temperature`` (from ``rng`` too)."""
        n, rng = check_count("VAE.sample", n), check_rng("VAE.sample", rng)
        self.check_params(params, dtype)
        pd, _ = self._split(params)
        z = rng.standard_normal((n, self.latent_dim)).astype(dtype, copy=False)
        if temperature is None:
            return self.decoder.decode(pd, z)
        if not isinstance(self.decoder, FlowDecoder):
            raise ValueError("VAE.sample: a temperature applies to a FlowDecoder's base draws only")
        return self.decoder.decode(pd, z, rng, temperature)

    def __repr__(self):
        return (f"VAE(data_dim={self.data_dim}, latent_dim={self.latent_dim}, hidden={self.hidden}, "
                f"decoder={self.decoder!r}, flow={self.flow!r}, context_dim={self.context_dim})")
