"""Run by the TensorFlow test venv (.tfvenv), never imported by the suite: TensorFlow's own side of the tests.

    python tests/tf_side.py COMMAND SPEC.json

Each command reads its spec (JSON), does one thing with TensorFlow itself, and writes its results to the
``out`` npz the spec names. Commands:
  savev2     write the arrays of ``npz`` with tf.raw_ops.SaveV2 at ``prefix`` (bf16 arrive as uint16 + ``bf16``)
  load       every tensor of ``prefix`` read by tf.train.load_checkpoint
  tf1        build TF1 recurrent graphs (``nets``), restore them from ``prefix`` with init_from_checkpoint
             (``assignment_map``) or a Saver, run them on ``x``; with ``save_template`` save fresh ones instead
             (``train_steps``: Adam steps first, in a training graph, its gradients named ``gradients_name``;
             ``control_flow``: "v1" for TF 1.x loops; ``saved_prefix``: the Saver writes each variable under
             that prefix + its name)
  init       fresh TF1 variables with the initializers named, saved at ``prefix``
  keras      build a tf.keras 2 model (``layers``) or load one (``load_saved_model``), save_weights(``template``),
             save a SavedModel (``saved_model``) or load_weights(``prefix``), and run it
"""
from __future__ import annotations

import contextlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

v1 = tf.compat.v1


def savev2(spec: dict) -> dict:
    z = np.load(spec["npz"])
    names = sorted(k for k in z.files)
    values = [tf.bitcast(tf.constant(z[k]), tf.bfloat16) if k in spec.get("bf16", ()) else tf.constant(z[k]) for k in names]
    tf.raw_ops.SaveV2(prefix=spec["prefix"], tensor_names=names, shape_and_slices=[""] * len(names), tensors=values)
    return {}


def load(spec: dict) -> dict:
    reader = tf.train.load_checkpoint(spec["prefix"])
    out = {}
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        out[name] = value.view(np.uint16) if value.dtype.name == "bfloat16" else value
    return out


# activations that are not one tf.nn function (a net's "activation": these names, else tf.nn.<name>)
_ACTIVATIONS = {"identity": tf.identity, "leaky_relu0": lambda x: tf.nn.leaky_relu(x, alpha=0.0),
                "two_tanh": lambda x: 2.0 * tf.tanh(x), "x_sigmoid": lambda x: x * tf.sigmoid(x),
                "python_identity": lambda x: x}


def _cell(net: dict):
    rnn = v1.nn.rnn_cell
    kind, hidden = net["kind"], net["hidden"]
    act = {"activation": _ACTIVATIONS.get(net["activation"]) or getattr(tf.nn, net["activation"])} \
        if net.get("activation") else {}
    if kind == "gru":
        cell = rnn.GRUCell(hidden, **act)
    elif kind == "basic_lstm":
        cell = rnn.BasicLSTMCell(hidden, forget_bias=net.get("forget_bias", 1.0), **act)
    else:
        cell = rnn.LSTMCell(hidden, forget_bias=net.get("forget_bias", 1.0), use_peepholes=net.get("peepholes", False),
                            num_proj=net.get("num_proj"), cell_clip=net.get("cell_clip"), **act)
    wrapper = net.get("wrapper")  # a wrapper adds no variable: only the MetaGraph shows it
    if wrapper == "residual":
        return rnn.ResidualWrapper(cell)
    if wrapper == "dropout":
        return rnn.DropoutWrapper(cell, output_keep_prob=1.0)
    return cell


# custom getters (a net's "getter"): what sits between a variable and the ops that read it
_GETTERS = {"scaled": lambda getter, *args, **kwargs: getter(*args, **kwargs) * 1.0,
            # mixed precision's shape: the variable cast to half (here cast back, so the cell runs in float32)
            "half": lambda getter, *args, **kwargs: tf.cast(tf.cast(getter(*args, **kwargs), tf.float16), tf.float32)}


def _net(net: dict, x):
    """One network under ``variable_scope(net['scope'])``, named as TF1 names it; returns [B, T, units].

    ``per_layer``: constructor arguments per layer (a MultiRNNCell of different cells); ``bw``: the backward
    cell's own arguments; ``bidi_scope``: the ``scope=`` given to bidirectional_dynamic_rnn."""
    layers, bi = net.get("layers", 1), net.get("bidirectional", False)
    per_layer = net.get("per_layer") or [{}] * layers
    getter = _GETTERS[net["getter"]] if net.get("getter") else None
    with v1.variable_scope(net["scope"], custom_getter=getter):
        if net.get("shared_layers"):  # one cell object for every layer: one layer's variables, run as a stack
            shared = _cell(net)
            out, _ = v1.nn.dynamic_rnn(v1.nn.rnn_cell.MultiRNNCell([shared] * layers), x, dtype=tf.float32)
            return out
        if not bi:
            cell = _cell(net) if layers == 1 else v1.nn.rnn_cell.MultiRNNCell([_cell({**net, **per_layer[k]})
                                                                                for k in range(layers)])
            if net.get("static"):  # static_rnn: every step's ops in the graph itself, no loop
                outs, _ = v1.nn.static_rnn(cell, tf.unstack(x, axis=1), dtype=tf.float32)
                return tf.stack(outs, axis=1)
            out, _ = v1.nn.dynamic_rnn(cell, x, dtype=tf.float32)
            return out
        if layers == 1:
            (fw, bw), _ = v1.nn.bidirectional_dynamic_rnn(_cell(net), _cell({**net, **net.get("bw", {})}), x,
                                                          dtype=tf.float32, scope=net.get("bidi_scope"))
            return tf.concat([fw, bw], -1)
        out = x  # what tf.contrib.rnn.stack_bidirectional_dynamic_rnn does, layer by layer
        with v1.variable_scope("stack_bidirectional_rnn"):
            for k in range(layers):
                with v1.variable_scope(f"cell_{k}"):
                    (fw, bw), _ = v1.nn.bidirectional_dynamic_rnn(_cell(net), _cell(net), out, dtype=tf.float32)
                    out = tf.concat([fw, bw], -1)
        return out


def tf1(spec: dict) -> dict:
    if spec.get("control_flow") == "v1":  # TF 1.x's own loops (Enter/Merge/Switch in the graph)
        v1.disable_control_flow_v2()
    x_val = np.load(spec["x"])["x"]
    with tf.Graph().as_default():
        v1.set_random_seed(spec.get("seed", 0))  # the same fresh variables every run: statistical checks do not flake
        x = v1.placeholder(tf.float32, x_val.shape)
        outs = {net["scope"]: _net(net, x) for net in spec["nets"]}
        train = None
        if spec.get("train_steps"):  # a training graph: gradients, Adam's slots and a global step, as users saved them
            loss = tf.add_n([tf.reduce_sum(tf.square(o)) for o in outs.values()])
            variables = v1.trainable_variables()  # tf.gradients' scope: "gradients", or the name= users gave it
            outer, _, name = spec.get("gradients_name", "gradients").rpartition("/")  # "tower_0/gradients": a tower's
            with (tf.name_scope(outer) if outer else contextlib.nullcontext()):
                grads = tf.gradients(loss, variables, name=name)
            train = v1.train.AdamOptimizer(0.01).apply_gradients(zip(grads, variables),
                                                                  global_step=v1.train.get_or_create_global_step())
        names = sorted(v.op.name for v in v1.global_variables())
        if spec.get("restore") == "init_from_checkpoint":
            v1.train.init_from_checkpoint(spec["prefix"], spec["assignment_map"])
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            if spec.get("restore") == "saver":
                v1.train.Saver().restore(sess, spec["prefix"])
            if spec.get("random_biases"):  # non-zero biases, so that bias handling is exercised
                rng = np.random.default_rng(1)
                for var in v1.global_variables():
                    if "bias" in var.name:
                        var.load(rng.uniform(-0.5, 0.5, var.shape.as_list()).astype(np.float32), sess)
            for _ in range(spec.get("train_steps", 0)):
                sess.run(train, {x: x_val})
            if spec.get("save_template"):
                v1.train.Saver().save(sess, spec["save_template"], write_meta_graph=False)
            if spec.get("save_with_meta"):  # as users save: the bundle and its MetaGraph (PREFIX.meta)
                renamed = {spec.get("saved_prefix", "") + v.op.name: v for v in v1.global_variables()}
                v1.train.Saver(renamed).save(sess, spec["save_with_meta"])
            values = sess.run(outs, {x: x_val})
    return {**values, "__variables__": np.array(names)}


def _keras_model(spec: dict):
    import tf_keras as keras

    layers = keras.layers
    inp = keras.Input((None, spec["input"]))
    h = inp
    for row in spec["layers"]:
        cls = {"lstm": layers.LSTM, "gru": layers.GRU}[row["kind"]]
        kw = {k: v for k, v in row.items() if k not in ("kind", "bidirectional", "merge_mode")}
        if row.get("bidirectional"):
            h = layers.Bidirectional(cls(return_sequences=True, **kw), merge_mode=row.get("merge_mode", "concat"))(h)
        else:
            h = cls(return_sequences=True, **kw)(h)
    return keras.Model(inp, h)


def keras(spec: dict) -> dict:
    tf.keras.utils.set_random_seed(spec.get("seed", 0))
    if spec.get("load_saved_model"):
        import tf_keras

        model = tf_keras.models.load_model(spec["load_saved_model"])
    else:
        model = _keras_model(spec)
    if spec.get("template"):
        model.save_weights(spec["template"])
    if spec.get("saved_model"):
        model.save(spec["saved_model"], save_format="tf")
    if spec.get("trained_h5"):  # one Adam step, then the full model with its optimizer state (optimizer_weights/)
        model.compile(optimizer="adam", loss="mse")
        x = np.load(spec["x"])["x"]
        model.fit(x, np.zeros(model(x).shape, np.float32), epochs=1, verbose=0)
        model.save(spec["trained_h5"])
    if spec.get("prefix"):
        model.load_weights(spec["prefix"]).assert_existing_objects_matched()
    x = np.load(spec["x"])["x"]
    return {"y": model(x).numpy()}


def init(spec: dict) -> dict:
    """Fresh TF1 variables (``variables``: name, shape, initializer class in tf.compat.v1, its kwargs), saved."""
    with tf.Graph().as_default():
        v1.set_random_seed(spec.get("seed", 0))
        for row in spec["variables"]:
            v1.get_variable(row["name"], row["shape"], initializer=getattr(v1, row["initializer"])(**row.get("kwargs", {})))
        with v1.Session() as sess:
            sess.run(v1.global_variables_initializer())
            v1.train.Saver().save(sess, spec["prefix"], write_meta_graph=False)
    return {}


def subclassed_savedmodel(spec: dict) -> dict:
    """A tf.keras 2 subclassed model holding a list of two LSTMs that its call() runs in reverse list order."""
    layers = tf.keras.layers

    class RevStack(tf.keras.Model):
        def __init__(self):
            super().__init__()
            self.rnns = [layers.LSTM(4, return_sequences=True), layers.LSTM(4, return_sequences=True)]

        def call(self, x):
            for rnn in reversed(self.rnns):
                x = rnn(x)
            return x

    x = np.random.default_rng(1).standard_normal((2, 5, 4)).astype("float32")
    model = RevStack()
    model(x)
    model.save(spec["path"], save_format="tf")
    return {"x": x, "y": model(x).numpy()}


COMMANDS = {"savev2": savev2, "load": load, "tf1": tf1, "keras": keras, "init": init,
            "subclassed_savedmodel": subclassed_savedmodel}

if __name__ == "__main__":
    command, spec_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as fh:
        spec = json.load(fh)
    result = COMMANDS[command](spec)
    if spec.get("out"):
        np.savez(spec["out"], **result)
