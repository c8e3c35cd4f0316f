"""The framework side of the conformance suite: real flax and real paddle, in the framework venv (.fwvenv).

Started once per test session by ``cf_fw.py`` (``.fwvenv/bin/python tests/conformance/cf_fw_side.py``), it reads
one JSON request per line on stdin and answers one JSON line on stdout (framework chatter goes to stderr):

``{"target": "flax"|"paddle", "file": OUT, "scope": "enc/rnn0", "x": X.npy, "y": Y.npy, "desc": {...}}``
-> ``{"ok": true, "meta": {...}}`` (flax: the file's ``__metadata__`` as msgpack_restore returns it) after writing
the target framework's output sequence (time-major ``(T, B, D*H)``) to ``Y.npy``; ``{"ok": false, "error": ...}``.

flax: ``msgpack_restore`` the file, take the scope's subtree, check it holds exactly the parameters of the linen model
built from ``desc`` (``nn.RNN(LSTMCell|GRUCell)``, ``nn.Bidirectional`` of two, a ``layer`` list for a stack;
``gate_fn``/``activation_fn``, ``reverse``/``keep_order`` and ``merge_fn`` from the description), each with the
model's shape and dtype, ``from_state_dict`` them and ``apply``. paddle: ``paddle.load`` the file, take the scope's
entries, ``set_state_dict`` them into ``paddle.nn.LSTM``/``GRU`` (every key the module has, none it has not),
``eval()`` and run. Neither imports ckptsurgeon.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

_FW: dict = {}


def _flax():
    if "flax" not in _FW:
        import flax.linen as nn
        import jax
        import jax.numpy as jnp
        from flax import serialization

        _FW["flax"] = (nn, jax, jnp, serialization)
    return _FW["flax"]


def _act(name: str):
    """A ckptsurgeon formula name -> the jax function a flax cell takes as gate_fn/activation_fn."""
    nn, jax, jnp, _ = _flax()
    table = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu, "linear": lambda x: x,
             "softsign": jax.nn.soft_sign, "softplus": jax.nn.softplus,
             "hard_sigmoid_keras2": lambda x: jnp.clip(0.2 * x + 0.5, 0.0, 1.0),
             "hard_sigmoid_keras3": lambda x: jax.nn.relu6(x + 3.0) / 6.0}
    if name not in table:
        raise ValueError(f"no jax function for the activation {name!r}")
    return table[name]


_MERGE = {"concat": None, "none": None, "sum": lambda a, b: a + b, "mul": lambda a, b: a * b, "ave": lambda a, b: (a + b) / 2}


def _flax_model(desc: dict):
    nn, jax, jnp, _ = _flax()
    kind, H, D, L = desc["kind"], desc["hidden_size"], desc["directions"], desc["num_layers"]
    acts = dict(gate_fn=_act(desc.get("recurrent_activation", "sigmoid")), activation_fn=_act(desc.get("activation", "tanh")))
    back = bool(desc.get("go_backwards"))

    def rnn(**kw):
        cell = nn.LSTMCell(H, **acts) if kind == "lstm" else nn.GRUCell(H, **acts)
        return nn.RNN(cell, **kw)

    def layer():
        if D == 1:  # Keras go_backwards: last step first, outputs in that order
            return rnn(reverse=True, keep_order=False) if back else rnn()
        merge = _MERGE[desc.get("merge_mode") or "concat"]
        return nn.Bidirectional(rnn(), rnn(), **({} if merge is None else {"merge_fn": merge}))

    if L == 1:
        return layer()

    class Layers(nn.Module):  # type: ignore[name-defined]  # flax, imported on first use
        def setup(self):
            self.layer = [layer() for _ in range(L)]

        def __call__(self, x):
            for m in self.layer:
                x = m(x)
            return x

    return Layers()


def run_flax(req: dict) -> tuple[np.ndarray, dict]:
    nn, jax, jnp, serialization = _flax()
    with open(req["file"], "rb") as fh:
        tree = serialization.msgpack_restore(fh.read())
    meta = tree.pop("__metadata__", {})
    node = tree
    for seg in [s for s in req["scope"].split("/") if s]:
        node = node[seg]
    desc = req["desc"]
    model = _flax_model(desc)
    x = jnp.asarray(np.load(req["x"]).transpose(1, 0, 2))  # time-major -> flax's batch-major
    params = model.init(jax.random.PRNGKey(0), x)["params"]
    want = {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    have = {jax.tree_util.keystr(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(node)[0]}
    if set(want) != set(have):
        raise ValueError(f"the file's params under {req['scope']!r} are not the model's: missing "
                         f"{sorted(set(want) - set(have))}, unexpected {sorted(set(have) - set(want))}")
    for k, leaf in want.items():
        if have[k].shape != leaf.shape or have[k].dtype != leaf.dtype:
            raise ValueError(f"{k}: file {have[k].dtype}{have[k].shape}, model {leaf.dtype}{leaf.shape}")
    loaded = serialization.from_state_dict(params, node)
    y = np.asarray(model.apply({"params": loaded}, x))
    return y.transpose(1, 0, 2), {k: (v if isinstance(v, str) else str(v)) for k, v in dict(meta).items()}


def run_paddle(req: dict) -> tuple[np.ndarray, dict]:
    if "paddle" not in _FW:
        import paddle

        paddle.set_device("cpu")
        _FW["paddle"] = paddle
    paddle = _FW["paddle"]
    desc = req["desc"]
    state = paddle.load(req["file"])
    prefix = req["scope"].replace("/", ".") + "." if req["scope"] else ""
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    cls = paddle.nn.LSTM if desc["kind"] == "lstm" else paddle.nn.GRU
    module = cls(desc["input_size"], desc["hidden_size"], num_layers=desc["num_layers"],
                 direction="bidirect" if desc["directions"] == 2 else "forward", time_major=True)
    keys = list(module.state_dict())
    if sorted(sub) != sorted(keys):
        raise ValueError(f"the file's entries under {prefix!r} are not paddle.nn.{cls.__name__}'s state dict: missing "
                         f"{sorted(set(keys) - set(sub))}, unexpected {sorted(set(sub) - set(keys))}")
    missing, unexpected = module.set_state_dict(sub)
    if missing or unexpected:
        raise ValueError(f"set_state_dict: missing {missing}, unexpected {unexpected}")
    for k, p in module.state_dict().items():  # loaded, not just accepted
        if not np.array_equal(p.numpy(), np.asarray(sub[k])):
            raise ValueError(f"{k}: set_state_dict did not load the file's values")
    module.eval()
    with paddle.no_grad():
        y = module(paddle.to_tensor(np.load(req["x"]).astype(np.float32)))[0].numpy()
    return y, {}


def main() -> None:
    out = os.fdopen(os.dup(1), "w")  # the protocol's channel; anything else printed goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
            y, meta = (run_flax if req["target"] == "flax" else run_paddle)(req)
            np.save(req["y"], y)
            answer = {"ok": True, "meta": meta}
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the test, with its type
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
