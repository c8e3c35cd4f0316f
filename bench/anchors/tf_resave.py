"""P10r set-up: TensorFlow's own bundle of the same variables (read SRC with TF, write DST with SaveV2)."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

reader = tf.train.load_checkpoint(sys.argv[1])
names = sorted(reader.get_variable_to_shape_map())
tf.raw_ops.SaveV2(prefix=sys.argv[2], tensor_names=names, shape_and_slices=[""] * len(names),
                  tensors=[tf.constant(reader.get_tensor(n)) for n in names])
