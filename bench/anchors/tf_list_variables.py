"""P3 anchor: tf.train.list_variables of a checkpoint prefix (run with a Python that has TensorFlow)."""
import os
import sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf
print(len(tf.train.list_variables(sys.argv[1])))
