"""The TFLite schema (``tensorflow/compiler/mlir/lite/schema/schema.fbs``) as data: field indices of the tables
read, the tensor types, and the builtin operator names (checked against TF 2.21's ``schema_py_generated``)."""
from __future__ import annotations


from ...dtypes import DtypeTable
from ..magic import TFLITE_IDENTIFIER

__all__ = ["IDENTIFIER", "MODEL", "SUBGRAPH", "TENSOR", "BUFFER", "QUANT", "OPCODE", "OPERATOR", "METADATA",
           "TENSOR_TYPES", "TYPE_NAMES", "BUILTIN_OPS", "op_name", "RECURRENT_OPTIONS", "ACTIVATIONS", "LSTM_INPUTS", "CELL_INPUTS",
           "BIDI_LSTM_INPUTS", "LSTM_KERNEL_TYPES", "BASIC_LSTM_INPUTS"]

IDENTIFIER = TFLITE_IDENTIFIER

# table -> field name -> its index in the schema (declaration order)
MODEL = {"version": 0, "operator_codes": 1, "subgraphs": 2, "description": 3, "buffers": 4, "metadata_buffer": 5,
         "metadata": 6, "signature_defs": 7, "external_buffer_groups": 8, "external_buffers": 9}
SUBGRAPH = {"tensors": 0, "inputs": 1, "outputs": 2, "operators": 3, "name": 4}
TENSOR = {"shape": 0, "type": 1, "buffer": 2, "name": 3, "quantization": 4, "is_variable": 5, "sparsity": 6,
          "shape_signature": 7, "has_rank": 8, "variant_tensors": 9, "external_buffer": 10}
BUFFER = {"data": 0, "offset": 1, "size": 2}  # offset/size: the large-model layout, bytes after the flatbuffer
QUANT = {"min": 0, "max": 1, "scale": 2, "zero_point": 3, "details_type": 4, "details": 5, "quantized_dimension": 6}
OPCODE = {"deprecated_builtin_code": 0, "custom_code": 1, "version": 2, "builtin_code": 3}
OPERATOR = {"opcode_index": 0, "inputs": 1, "outputs": 2, "builtin_options_type": 3, "builtin_options": 4}
METADATA = {"name": 0, "buffer": 1}

# TensorType -> numpy dtype (little-endian, as TFLite stores every number)
TENSOR_TYPES = DtypeTable({
    0: "<f4",  # FLOAT32
    1: "<f2",  # FLOAT16
    2: "<i4",  # INT32
    3: "u1",  # UINT8
    4: "<i8",  # INT64
    6: "bool",  # BOOL
    7: "<i2",  # INT16
    8: "<c8",  # COMPLEX64
    9: "i1",  # INT8
    10: "<f8",  # FLOAT64
    11: "<c16",  # COMPLEX128
    12: "<u8",  # UINT64
    15: "<u4",  # UINT32
    16: "<u2",  # UINT16
    18: "bfloat16",  # BFLOAT16
})
# every TensorType by name; the ones without a dtype above are listed, not read (strings, handles, packed)
TYPE_NAMES = ("float32 float16 int32 uint8 int64 string bool int16 complex64 int8 float64 complex128 uint64 "
              "resource variant uint32 uint16 int4 bfloat16 int2 uint4").split()

# BuiltinOperator codes 0..209, in order
BUILTIN_OPS = tuple("""
ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE EMBEDDING_LOOKUP FLOOR
FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D LOCAL_RESPONSE_NORMALIZATION LOGISTIC
LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX
SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD
UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE
UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE
BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM ARG_MAX MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL
LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT
RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND LOGICAL_NOT
UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE RESIZE_NEAREST_NEIGHBOR
LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND COS WHERE RANK
ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE NON_MAX_SUPPRESSION_V4
NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL PLACEHOLDER_FOR_GREATER_OP_CODES
CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG REAL COMPLEX_ABS HASHTABLE HASHTABLE_FIND HASHTABLE_IMPORT
HASHTABLE_SIZE REDUCE_ALL CONV_3D_TRANSPOSE VAR_HANDLE READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS
RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU DYNAMIC_UPDATE_SLICE RELU_0_TO_1
UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2 UNSORTED_SEGMENT_MIN SIGN BITCAST
BITWISE_XOR RIGHT_SHIFT STABLEHLO_LOGISTIC STABLEHLO_ADD STABLEHLO_DIVIDE STABLEHLO_MULTIPLY
STABLEHLO_MAXIMUM STABLEHLO_RESHAPE STABLEHLO_CLAMP STABLEHLO_CONCATENATE STABLEHLO_BROADCAST_IN_DIM
STABLEHLO_CONVOLUTION STABLEHLO_SLICE STABLEHLO_CUSTOM_CALL STABLEHLO_REDUCE STABLEHLO_ABS STABLEHLO_AND
STABLEHLO_COSINE STABLEHLO_EXPONENTIAL STABLEHLO_FLOOR STABLEHLO_LOG STABLEHLO_MINIMUM STABLEHLO_NEGATE
STABLEHLO_OR STABLEHLO_POWER STABLEHLO_REMAINDER STABLEHLO_RSQRT STABLEHLO_SELECT STABLEHLO_SUBTRACT
STABLEHLO_TANH STABLEHLO_SCATTER STABLEHLO_COMPARE STABLEHLO_CONVERT STABLEHLO_DYNAMIC_SLICE
STABLEHLO_DYNAMIC_UPDATE_SLICE STABLEHLO_PAD STABLEHLO_IOTA STABLEHLO_DOT_GENERAL STABLEHLO_REDUCE_WINDOW
STABLEHLO_SORT STABLEHLO_WHILE STABLEHLO_GATHER STABLEHLO_TRANSPOSE DILATE STABLEHLO_RNG_BIT_GENERATOR
REDUCE_WINDOW STABLEHLO_COMPOSITE STABLEHLO_SHIFT_LEFT STABLEHLO_CBRT STABLEHLO_CASE
""".split())


def op_name(code: int, custom: str | None = None) -> str:
    if custom:
        return f"CUSTOM:{custom}"
    return BUILTIN_OPS[code] if 0 <= code < len(BUILTIN_OPS) else f"BUILTIN_{code}"


# Recurrent ops whose options and inputs the reader states: op -> (BuiltinOptions union type, [(field, index,
# struct code, schema default)])
_CLIPS = [("fused_activation_function", 0, "b", 0), ("cell_clip", 1, "f", 0.0), ("proj_clip", 2, "f", 0.0)]
RECURRENT_OPTIONS: dict[str, tuple[int, list[tuple[str, int, str, int | float | bool]]]] = {
    "LSTM": (14, _CLIPS + [("kernel_type", 3, "b", 0), ("asymmetric_quantize_inputs", 4, "?", False)]),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": (71, _CLIPS + [("time_major", 3, "?", False), ("asymmetric_quantize_inputs", 4, "?", False),
                                                   ("diagonal_recurrent_tensors", 5, "?", False)]),
    "BIDIRECTIONAL_SEQUENCE_LSTM": (69, _CLIPS + [("merge_outputs", 3, "?", False), ("time_major", 4, "?", True),
                                                  ("asymmetric_quantize_inputs", 5, "?", False)]),
}
ACTIVATIONS = ("none", "relu", "relu_n1_to_1", "relu6", "tanh", "sign_bit")  # ActivationFunctionType
# UNIDIRECTIONAL_SEQUENCE_LSTM / LSTM inputs by position (lstm_shared.h); -1 in the file: an absent optional input
LSTM_INPUTS = ("input", "input_to_input_weights", "input_to_forget_weights", "input_to_cell_weights",
               "input_to_output_weights", "recurrent_to_input_weights", "recurrent_to_forget_weights",
               "recurrent_to_cell_weights", "recurrent_to_output_weights", "cell_to_input_weights",
               "cell_to_forget_weights", "cell_to_output_weights", "input_gate_bias", "forget_gate_bias",
               "cell_gate_bias", "output_gate_bias", "projection_weights", "projection_bias", "output_state",
               "cell_state", "input_layer_norm_coefficients", "forget_layer_norm_coefficients",
               "cell_layer_norm_coefficients", "output_layer_norm_coefficients")
# one direction's weights (LSTM_INPUTS[1:18]); BIDIRECTIONAL_SEQUENCE_LSTM holds them twice, fw_ then bw_
CELL_INPUTS = LSTM_INPUTS[1:18]
# BIDIRECTIONAL_SEQUENCE_LSTM inputs by position (bidirectional_sequence_lstm.cc); no layer-norm inputs. aux_input
# (39): with the aux weights, a second input both directions read (stack_bidirectional_rnn's cross links); without
# them, the backward direction's input (static_bidirectional_rnn)
BIDI_LSTM_INPUTS = (("input",) + tuple(f"fw_{r}" for r in CELL_INPUTS) + tuple(f"bw_{r}" for r in CELL_INPUTS)
                    + ("fw_output_state", "fw_cell_state", "bw_output_state", "bw_cell_state", "aux_input")
                    + tuple(f"{d}_aux_input_to_{g}_weights" for d in ("fw", "bw")
                            for g in ("input", "forget", "cell", "output")))
LSTM_KERNEL_TYPES = ("full", "basic")  # LSTMOptions.kernel_type (LSTMKernelType)
# the LSTM op's basic kernel (kernel_type BASIC): concatenated weights (4 * n_cell, n_input + n_output)
BASIC_LSTM_INPUTS = ("input", "prev_activation", "weights", "biases", "prev_state")
