"""numpy ``.npz`` archives and ``.npy`` files, read without pickle."""
