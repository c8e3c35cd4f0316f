"""P10r: read every tensor of a TensorFlow checkpoint with tf.train.load_checkpoint (run in the TF venv)."""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

reader = tf.train.load_checkpoint(sys.argv[1])
print(sum(reader.get_tensor(name).nbytes for name in reader.get_variable_to_shape_map()))
