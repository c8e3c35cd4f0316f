"""TensorFlow Lite flatbuffers (``.tflite``)."""
