"""TensorFlow checkpoints (tensor bundle V2) read without TensorFlow: the LevelDB index (``sstable``),
partitioned variables (``tf_slices``), prefixes from folders and state files (``tf_paths``)."""
