"""Facts every layer shares, stated once: the version, the custom ops' domain, the files of an export, defaults.

The command line and the stages read these names; none restates them. This module imports nothing.
"""

from __future__ import annotations

__version__ = "0.1.0"

# The custom ops (plugins/OPS.md): domain and version of com.yoso::FastHash and com.yoso::LSHCumulation.
OP_DOMAIN = "com.yoso"
OP_VERSION = 1
OP_NAMES = ("FastHash", "LSHCumulation")
ATTENTION_MODES = ("lsh", "expectation")  # LSH (the two ops, linear cost) or exact YOSO-E (standard ONNX ops)

# An export directory (``yoso-deploy export``): what it holds.
MODEL_FILE = "model.onnx"  # the ONNX model (the manifest's ``model_file`` may name another)
MANIFEST_FILE = "yoso_export.json"  # the manifest (yoso_deploy.manifest)
CONFIG_FILE = "config.json"  # the transformers config of the checkpoint
ENGINE_FILE = "model.plan"  # a TensorRT engine built by ``yoso-deploy build-engine``
MODEL_CARD_FILE = "README.md"  # the model card (yoso_deploy.model_card.write_model_card)
TOKENIZER_FILE = "tokenizer.json"  # the tokenizers-library file the runtime reads
TOKENIZER_FILES = (  # every tokenizer file an export copies from its checkpoint
    TOKENIZER_FILE,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
)

# Graph optimization levels of ``yoso-deploy optimize`` / ``export --optimize`` (yoso_deploy.optimization).
OPTIMIZE_LEVELS = ("O1", "O2", "O3")

# Where ``scripts/main.sh`` puts the default export, and so what ``--model`` means when it is not given.
DEFAULT_EXPORT_DIR = "out/qa"

# The compiled libraries inside the package (yoso_deploy/lib) and the variables that override their paths.
ORT_LIBRARY_NAME = "libyoso_ort.so"
ORT_LIBRARY_ENV = "YOSO_ORT_LIBRARY"
ORT_BUILD_INFO = "yoso_ort_build.json"
KERNELS_LIBRARY_NAME = "libyoso_kernels.so"
KERNELS_LIBRARY_ENV = "YOSO_KERNELS_LIBRARY"
TRT_LIBRARY_NAME = "libyoso_trt.so"
TRT_LIBRARY_ENV = "YOSO_TRT_LIBRARY"

# Defaults of the library functions the commands call: the CLI shows these, it never restates them.
DEFAULT_OPSET = 18  # export: the ONNX opset written (17 is reached by conversion)
DEFAULT_PORTABLE = "functions"  # export: the custom ops also carry standard-ONNX function bodies
DEFAULT_ATOL = 1e-4  # parity: absolute tolerance of outputs and layer tensors (hash codes injected)
DEFAULT_RTOL = 1e-3  # parity: relative tolerance
DEFAULT_HIDDEN_RTOL = 1e-4  # parity: per-feature relative error of hidden states and layer tensors
VALIDATE_BACKENDS = ("torch", "ort-cpu", "ort-cuda", "trt")  # validate: torch is the reference
VALIDATE_BATCHES = (1, 4)
VALIDATE_SEQ_LENS = (16, 128)
QUANTIZE_METHOD = "dynamic"  # quantize: activations quantized per call, no calibration
QUANTIZE_QK = "int8"  # quantize: the query/key projections too
BENCH_BACKENDS = ("ort-cpu",)
BENCH_BATCHES = (1,)
BENCH_SEQ_LENS = (128, 512, 2048)
BENCH_WARMUP = 3
BENCH_ITERATIONS = 20
SERVE_HOST = "127.0.0.1"  # loopback unless asked
SERVE_PORT = 8000
SERVE_MAX_BATCH_SIZE = 8  # rows per model run (dynamic batches, and the largest request accepted)
SERVE_BATCH_WAIT_MS = 5.0  # how long a dynamic batch waits to fill; 0: no dynamic batching
SERVE_MAX_REQUEST_BYTES = 8 * 2**20  # the largest request body
SERVE_MAX_JSON_DEPTH = 32  # the deepest JSON nesting read
SERVE_MAX_INFLIGHT_TOKENS = 65_536  # tokens of all requests in flight (admission)
SERVE_RUN_TOKENS = 2048  # positions of one model run: the granularity at which requests interleave
TRITON_MAX_BATCH_SIZE = 8
TRITON_QUEUE_DELAY_US = 2000
BATCH_SIZE = 8  # batch: records per chunk and rows per model run
ENGINE_BATCH = (1, 1, 8)  # build-engine: min, opt, max batch of the optimization profile
