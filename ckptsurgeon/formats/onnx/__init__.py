"""ONNX models: the reader (``onnx_fmt``), the recurrent-node description (``graph``) and the graft writer
(``patch``). Reading needs no onnx package; folding computed weights needs it (``pip install 'ckptsurgeon[onnx]'``)."""
