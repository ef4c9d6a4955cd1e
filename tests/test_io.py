"""Saving and loading whole models (npflows/io.py): every registry entry, inside a flow, comes back as a
working model whose numbers equal the original's bit for bit; bad files are refused with a clear error."""
import json

import numpy as np
import pytest

import npflows as nf
from registry import REGISTRY

BASES = [lambda d: nf.StandardNormal(d), lambda d: nf.DiagNormal(d), lambda d: nf.UniformBox(d, -4.0, 4.0)]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_entry_saves_and_loads_bit_for_bit(name, tmp_path):
    case = REGISTRY[name](np.random.default_rng(0))
    b = case.bijector
    i = sorted(REGISTRY).index(name)
    flow = nf.NormalizingFlow(b, BASES[i % 3](b.out_event_shape), chunk_rows=None if i % 2 else 64)   # image bases too
    params = {**case.params, **{"base." + k: v + 0.1 for k, v in flow.base.init(dtype=np.float64).items()}}
    path = tmp_path / "model.npz"
    nf.save(path, flow, params, {"entry": name})
    loaded, p2, config = nf.load(path)
    assert config == {"entry": name} and type(loaded) is nf.NormalizingFlow and loaded.chunk_rows == flow.chunk_rows
    assert p2.keys() == params.keys() and all(np.array_equal(p2[k], params[k]) for k in params)
    x, c = case.x, getattr(case, "context", None)        # a conditional entry's context (its context_dim is saved)
    assert loaded.context_dim == flow.context_dim
    assert np.array_equal(loaded.log_prob(p2, x, c), flow.log_prob(params, x, c))
    y, ld, _ = loaded.bijector.forward({k: p2[k] for k in case.params}, x, c)
    y0, ld0, _ = b.forward(case.params, x, c)
    assert np.array_equal(y, y0) and np.array_equal(ld, ld0)


def test_push_forward_and_bare_bijector_and_float32(tmp_path):
    rng = np.random.default_rng(1)
    push = nf.PushForward(nf.maf(2, n_layers=2, hidden=(8,)), nf.StandardNormal(2))
    p = nf.cast_params(push.init(rng), np.float32)
    nf.save(tmp_path / "iaf.npz", push, p)
    q, p2, config = nf.load(tmp_path / "iaf.npz")
    assert config is None and all(v.dtype == np.float32 for v in p2.values())     # saved without a config
    x1, l1 = push.sample_and_log_prob(p, 5, np.random.default_rng(2))
    x2, l2 = q.sample_and_log_prob(p2, 5, np.random.default_rng(2))
    assert np.array_equal(x1, x2) and np.array_equal(l1, l2)
    lin = nf.LULinear(3, perm=[2, 0, 1])
    nf.save(tmp_path / "lin.npz", lin, lin.init(rng))
    b, pb, _ = nf.load(tmp_path / "lin.npz")
    assert isinstance(b, nf.LULinear) and b.perm.tolist() == [2, 0, 1]


def test_bad_files_and_mismatched_parameters_are_refused(tmp_path):
    flow = nf.NormalizingFlow(nf.realnvp(2, n_layers=2, hidden=(4,)), nf.StandardNormal(2))
    p = flow.init(np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"save: the parameters do not match the model: .*'1.net.W1' has shape"):
        nf.save(tmp_path / "m.npz", flow, {**p, "1.net.W1": p["1.net.W1"][:, :1]})
    with pytest.raises(ValueError, match="reserved"):
        nf.save(tmp_path / "m.npz", flow, {**p, "__model__": np.zeros(1)})
    path = tmp_path / "m.npz"
    nf.save(path, flow, p)
    with np.load(path, allow_pickle=False) as f:       # the file itself opens without pickle
        arrays = {k: f[k] for k in f.files}
    assert json.loads(str(arrays["__model__"]))["type"] == "NormalizingFlow"
    np.savez(tmp_path / "v9.npz", **{**arrays, "__format__": np.array("9")})
    with pytest.raises(ValueError, match="format version 9; this npflows reads version 1"):
        nf.load(tmp_path / "v9.npz")
    np.savez(tmp_path / "old.npz", **p, __config__=np.array("{}"))          # written before models were saved
    with pytest.raises(ValueError, match="holds no model description"):
        nf.load(tmp_path / "old.npz")
    np.savez(tmp_path / "short.npz", **{k: v for k, v in arrays.items() if k != "0.net.b0"})
    with pytest.raises(ValueError, match=r"load: the parameters do not match the model: .*missing \['0.net.b0'\]"):
        nf.load(tmp_path / "short.npz")
    desc = json.loads(str(arrays["__model__"]))
    desc["bijector"]["layers"][0]["type"] = "NoSuchLayer"
    np.savez(tmp_path / "bad.npz", **{**arrays, "__model__": np.array(json.dumps(desc))})
    with pytest.raises(ValueError, match="cannot rebuild the model"):
        nf.load(tmp_path / "bad.npz")
