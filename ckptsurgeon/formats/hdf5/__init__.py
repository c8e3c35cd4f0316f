"""HDF5 files and the Keras layouts stored in them: tf.keras 2 / Keras 2 / Keras 1 ``.h5``, Keras 3
``.weights.h5`` and ``.keras`` archives (``keras_zip``); ``hdf5_safe`` refuses links and external data."""
