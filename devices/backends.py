"""Inference backends behind one call: predict(x) -> outputs, for each runtime a board may have.

Standard library, numpy and the runtime itself only; Python 3.6 compatible
(JetPack 4.6 ships 3.6, Coral's Mendel 3.7). Each runtime is imported when its
backend opens, so a board needs only the one it uses.

  tflite       TFLite through ai_edge_litert, TensorFlow's interpreter or tflite_runtime
  edgetpu      TFLite with the libedgetpu delegate (through pycoral when installed)
  openvino     OpenVINO's current API or the 2022.3 one (the last with MYRIAD, the NCS2)
  tensorrt     an engine built on the board from the exported ONNX (devices/tensorrt_backend.py)
  onnxruntime  ONNX Runtime, CPU or CUDA
  keras        the Keras model through TensorFlow, as a PC baseline
"""

import ctypes
import logging
import os
import sys

import numpy as np

log = logging.getLogger(__name__)

BACKENDS = ("tflite", "edgetpu", "openvino", "tensorrt", "onnxruntime", "keras")

# Model files each backend can open, by suffix.
SUFFIXES = {
    "tflite": (".tflite",),
    "edgetpu": (".tflite",),
    "openvino": (".xml", ".onnx"),
    "tensorrt": (".onnx", ".engine", ".plan"),
    "onnxruntime": (".onnx",),
    "keras": (".keras", ".h5"),
}

# Fastest first: ai_edge_litert and TensorFlow ship the optimised int8 kernels
# (about 20 us for the int8 MNIST MLP on a desktop CPU); the tflite_runtime
# 2.14 wheel does not (about 2.7 ms for the same file).
TFLITE_RUNTIMES = ("ai_edge_litert", "tensorflow", "tflite_runtime")
# The Edge TPU delegate must match the interpreter it is loaded into; Coral
# builds libedgetpu against tflite_runtime, so that comes first.
EDGETPU_RUNTIMES = ("tflite_runtime", "ai_edge_litert", "tensorflow")
EDGETPU_LIBRARY = {
    "linux": "libedgetpu.so.1",
    "darwin": "libedgetpu.1.dylib",
    "win32": "edgetpu.dll",
}
OPENVINO_APIS = ("openvino", "openvino.runtime")

DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "int8": np.int8,
    "uint8": np.uint8,
    "int32": np.int32,
    "int64": np.int64,
}


class BackendError(Exception):
    """A backend that cannot run here or cannot open this artifact; the message says what to do."""


class Backend(object):
    """One opened model. Subclasses set runtime, settings, input_shape and input_dtype.

    predict(x) takes a batch shaped like input_shape and returns the first
    output; the array may be reused by the next call, so read it before then.
    """

    name = ""

    def __init__(self, export_dir, manifest, options):
        self.export_dir = export_dir
        self.manifest = manifest
        self.options = options
        self.runtime = {"name": None, "version": None}
        self.settings = {}
        self.input_shape = None  # batch axis included; -1 where dynamic
        self.input_dtype = None

    @classmethod
    def tuning_candidates(cls, options, cpu_count):
        """Settings worth timing against each other; one entry means nothing to tune."""
        return [dict(options)]

    # Whether last_latency_ms() gives the runtime's own timing of the last call.
    reports_latency = False

    def predict(self, x):
        raise NotImplementedError

    def last_latency_ms(self):
        return None

    def close(self):
        pass

    def model_path(self, file_name=None):
        return os.path.join(self.export_dir, file_name or self.manifest["model_file"])


def cpu_thread_candidates(options, cpu_count):
    """Thread counts worth timing on a CPU device; other devices have nothing to tune."""
    if (options.get("device") or "CPU") != "CPU":
        return [dict(options)]
    return [dict(options, threads=t) for t in thread_candidates(options.get("threads"), cpu_count)]


def thread_candidates(threads, cpu_count):
    """The user's thread count, else one thread and every core (and half of them on 4+ cores).

    One thread usually wins for tiny models at batch 1 (no hand-off between
    threads); larger ones gain from more, so both are timed.
    """
    if threads:
        return [threads]
    cpu_count = cpu_count or 1
    return sorted({1, max(1, cpu_count // 2), cpu_count})


def choose(manifest, forced=None):
    """The backend for an export: the forced one if it can open the file, else by file type."""
    model_file = manifest["model_file"]
    suffix = os.path.splitext(model_file)[1].lower()
    if forced:
        if forced not in BACKENDS:
            raise BackendError(
                "unknown backend {!r}; choose one of: {}".format(forced, ", ".join(BACKENDS))
            )
        if suffix not in SUFFIXES[forced]:
            raise BackendError(
                "backend {} cannot open {} (it opens {} files); pick another --backend".format(
                    forced, model_file, " ".join(SUFFIXES[forced])
                )
            )
        return forced
    target = manifest.get("target", "")
    if suffix == ".tflite":
        if target == "edgetpu" and not edgetpu_compiled(manifest):
            raise BackendError(
                "{} was not compiled for the Edge TPU (see edgetpu_report.json in the export); "
                "compile it with edgetpu_compiler, or pass --backend tflite to measure it on "
                "the CPU".format(model_file)
            )
        return "edgetpu" if edgetpu_compiled(manifest) else "tflite"
    if suffix == ".xml":
        return "openvino"
    if suffix in (".engine", ".plan") or (suffix == ".onnx" and target == "tensorrt"):
        return "tensorrt"
    if suffix == ".onnx":
        return "onnxruntime"
    if suffix in (".keras", ".h5"):
        return "keras"
    raise BackendError(
        "no backend opens {}; expected one of .tflite .xml .onnx .engine .keras".format(model_file)
    )


def edgetpu_compiled(manifest):
    return manifest["model_file"].endswith("_edgetpu.tflite")


def backend_class(name):
    if name == "tensorrt":
        from devices import tensorrt_backend

        return tensorrt_backend.TensorRTBackend
    return {
        "tflite": TFLiteBackend,
        "edgetpu": EdgeTPUBackend,
        "openvino": OpenVINOBackend,
        "onnxruntime": OnnxRuntimeBackend,
        "keras": KerasBackend,
    }[name]


def open_backend(name, export_dir, manifest, options):
    return backend_class(name)(export_dir, manifest, options)


def _import_error(exc):
    return "{}: {}".format(type(exc).__name__, exc)


# --- TFLite -----------------------------------------------------------------


class _TFLiteRuntime(object):
    def __init__(self, name, version, interpreter, load_delegate, op_resolver):
        self.name = name
        self.version = version
        self.Interpreter = interpreter
        self.load_delegate = load_delegate
        self.OpResolverType = op_resolver


def load_tflite_runtime(name):
    """The interpreter class and delegate loader of one TFLite package; ImportError if absent."""
    if name == "ai_edge_litert":
        import ai_edge_litert
        from ai_edge_litert import interpreter as m

        version = getattr(ai_edge_litert, "__version__", "unknown")
    elif name == "tflite_runtime":
        import tflite_runtime
        from tflite_runtime import interpreter as m

        version = getattr(tflite_runtime, "__version__", "unknown")
    elif name == "tensorflow":
        import tensorflow as tf

        return _TFLiteRuntime(
            name,
            tf.__version__,
            tf.lite.Interpreter,
            tf.lite.experimental.load_delegate,
            getattr(tf.lite.experimental, "OpResolverType", None),
        )
    else:
        raise BackendError(
            "unknown TFLite runtime {!r}; choose one of: {}".format(
                name, ", ".join(TFLITE_RUNTIMES)
            )
        )
    return _TFLiteRuntime(
        name, version, m.Interpreter, m.load_delegate, getattr(m, "OpResolverType", None)
    )


def _first_tflite_runtime(order, what):
    errors = []
    for name in order:
        try:
            rt = load_tflite_runtime(name)
        except ImportError as exc:  # an absent or broken package: try the next one
            errors.append("{} ({})".format(name, _import_error(exc)))
            continue
        if errors:
            log.info(
                "%s: using %s %s; not importable: %s", what, rt.name, rt.version, "; ".join(errors)
            )
        return rt
    raise BackendError(
        "{} needs a TFLite runtime and none imports: {}; install one with "
        "'pip install ai-edge-litert' (Python 3.10+), or 'pip install tflite-runtime' "
        "(older Pythons; see devices/README.md)".format(what, "; ".join(errors))
    )


class TFLiteBackend(Backend):
    """A .tflite model in a TFLite interpreter on the CPU, XNNPACK on or off."""

    name = "tflite"

    @classmethod
    def tuning_candidates(cls, options, cpu_count):
        xnnpack = [options["xnnpack"]] if options.get("xnnpack") is not None else [True, False]
        return [
            dict(options, threads=t, xnnpack=x)
            for t in thread_candidates(options.get("threads"), cpu_count)
            for x in xnnpack
        ]

    def __init__(self, export_dir, manifest, options):
        Backend.__init__(self, export_dir, manifest, options)
        forced = options.get("runtime")
        rt = (
            load_tflite_runtime(forced)
            if forced
            else _first_tflite_runtime(TFLITE_RUNTIMES, "tflite")
        )
        self._open(rt, delegates=None)

    def _open(self, rt, delegates):
        options = self.options
        kwargs = {"model_path": self.model_path()}
        if delegates:
            kwargs["experimental_delegates"] = delegates
        if options.get("threads"):
            kwargs["num_threads"] = int(options["threads"])
        xnnpack = options.get("xnnpack")
        if xnnpack is not None and rt.OpResolverType is not None and not delegates:
            # BUILTIN applies the default delegate (XNNPACK); the other keeps plain kernels.
            kwargs["experimental_op_resolver_type"] = (
                rt.OpResolverType.BUILTIN
                if xnnpack
                else rt.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
        try:
            self.interpreter = rt.Interpreter(**kwargs)
        except TypeError:
            # Old interpreters (tflite_runtime 2.5 on Mendel) lack the op resolver argument.
            kwargs.pop("experimental_op_resolver_type", None)
            self.interpreter = rt.Interpreter(**kwargs)
            xnnpack = None
        except ValueError as exc:
            raise BackendError(
                "{} cannot load {}: {}".format(rt.name, self.model_path(), exc)
            ) from None
        interp = self.interpreter
        inp = interp.get_input_details()[0]
        batch = options.get("batch_size") or 1
        if batch != int(inp["shape"][0]):
            try:
                interp.resize_tensor_input(inp["index"], [batch] + list(inp["shape"][1:]))
            except (ValueError, RuntimeError) as exc:
                raise BackendError(
                    "cannot resize the model to batch {}: {}".format(batch, exc)
                ) from None
        try:
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BackendError(
                "{} cannot run {}: {}".format(rt.name, self.model_path(), exc)
            ) from None
        inp = interp.get_input_details()[0]
        out = interp.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in inp["shape"])
        self.input_dtype = np.dtype(inp["dtype"])
        # Bound methods looked up once: the loop below runs 10,000 times per benchmark.
        self._set, self._invoke, self._get = interp.set_tensor, interp.invoke, interp.get_tensor
        self._in, self._out = inp["index"], out["index"]
        self.runtime = {"name": rt.name, "version": rt.version}
        self.settings = {
            "threads": options.get("threads"),
            "xnnpack": xnnpack,
            "delegate": None,
            "batch_size": batch,
        }

    def predict(self, x):
        self._set(self._in, x)
        self._invoke()
        return self._get(self._out)

    def close(self):
        self.interpreter = self._set = self._invoke = self._get = None


class EdgeTPUBackend(TFLiteBackend):
    """An Edge-TPU-compiled .tflite model through the libedgetpu delegate."""

    name = "edgetpu"

    @classmethod
    def tuning_candidates(cls, options, cpu_count):
        return [dict(options, threads=options.get("threads") or 1, xnnpack=None)]

    def __init__(self, export_dir, manifest, options):
        Backend.__init__(self, export_dir, manifest, options)
        if not edgetpu_compiled(manifest):
            log.warning(
                "%s was not compiled for the Edge TPU: every operation runs on the CPU",
                manifest["model_file"],
            )
        library = EDGETPU_LIBRARY.get(sys.platform, "libedgetpu.so.1")
        forced = options.get("runtime")
        errors = []
        try:
            # Checked first: a TFLite delegate that fails to load leaves a half-built object.
            ctypes.CDLL(library)
        except OSError as exc:
            errors.append("{} ({})".format(library, exc))
        runtimes = [] if errors else [forced] if forced else list(EDGETPU_RUNTIMES)
        for name in runtimes:
            try:
                rt = load_tflite_runtime(name)
            except ImportError as exc:
                errors.append("{} ({})".format(name, _import_error(exc)))
                continue
            try:
                delegate = rt.load_delegate(library)
            except (ValueError, OSError, RuntimeError) as exc:
                errors.append("{} could not load {} ({})".format(name, library, exc))
                continue
            self._open(rt, delegates=[delegate])
            self.runtime["edgetpu_runtime"] = _edgetpu_runtime_version()
            self.settings.update(delegate=library, threads=None, xnnpack=None)
            return
        from devices import board

        raise BackendError(
            "the Edge TPU cannot be used here ({}); Edge TPU detected: {}. Install the Edge TPU "
            "runtime ('sudo apt-get install libedgetpu1-std python3-pycoral' from Coral's apt "
            "repository, see devices/README.md) and plug the accelerator in, or pass "
            "--backend tflite to measure the CPU".format(
                "; ".join(errors), "yes" if board.edgetpu_present() else "no"
            )
        )


def _edgetpu_runtime_version():
    try:
        from pycoral.utils import edgetpu
    except ImportError:
        return None
    try:
        return edgetpu.get_runtime_version()
    except Exception:  # a version string is not worth failing a benchmark over
        return None


# --- OpenVINO ---------------------------------------------------------------


def load_openvino(preferred=None):
    """(api name, module with Core/Tensor/PartialShape, version) for the newest API importable."""
    errors = []
    for name in [preferred] if preferred else OPENVINO_APIS:
        if name not in OPENVINO_APIS:
            raise BackendError(
                "unknown OpenVINO API {!r}; choose one of: {}".format(
                    name, ", ".join(OPENVINO_APIS)
                )
            )
        try:
            if name == "openvino":
                import openvino as ov

                ov.Core  # noqa: B018 - 2022.3 has the package but keeps Core in openvino.runtime
            else:
                import openvino.runtime as ov
            return name, ov, ov.get_version()
        except (ImportError, AttributeError) as exc:
            errors.append("{} ({})".format(name, _import_error(exc)))
    raise BackendError(
        "OpenVINO is not importable ({}); install it with 'pip install openvino' (CPU, GPU) "
        "or 'pip install openvino==2022.3.1' (the last release with MYRIAD, for the NCS2)".format(
            "; ".join(errors)
        )
    )


class OpenVINOBackend(Backend):
    """An OpenVINO IR (or ONNX) model compiled for CPU, GPU or MYRIAD with the latency hint."""

    name = "openvino"

    @classmethod
    def tuning_candidates(cls, options, cpu_count):
        return cpu_thread_candidates(options, cpu_count)

    def __init__(self, export_dir, manifest, options):
        Backend.__init__(self, export_dir, manifest, options)
        api, ov, version = load_openvino(options.get("runtime"))
        device = options.get("device") or "CPU"
        core = ov.Core()
        available = list(core.available_devices)
        if not any(d.split(".")[0] == device for d in available):
            hint = ""
            if device == "MYRIAD":
                hint = (
                    "; plug in the NCS2, install its udev rules and use OpenVINO 2022.3.1, "
                    "the last release with the MYRIAD plugin (see devices/README.md)"
                )
            raise BackendError(
                "OpenVINO {} sees no {} device (available: {}){}".format(
                    version, device, ", ".join(available) or "none", hint
                )
            )

        model_file, precision = self._variant(device, options.get("precision"))
        model = core.read_model(self.model_path(model_file))
        batch = options.get("batch_size") or 1
        shape = _ov_shape(model.input(0).get_partial_shape())
        if shape[0] != batch:
            model.reshape(ov.PartialShape([batch] + shape[1:]))
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if device == "CPU" and options.get("threads"):
            config["INFERENCE_NUM_THREADS"] = str(int(options["threads"]))
        try:
            compiled = core.compile_model(model, device, config)
        except RuntimeError as exc:
            # Older plugins (MYRIAD in 2022.3) refuse some properties; their defaults still run.
            log.warning(
                "OpenVINO refused %s on %s (%s); compiling with defaults", config, device, exc
            )
            config = {}
            compiled = core.compile_model(model, device)
        port = compiled.input(0)
        self.input_shape = tuple(_ov_shape(port.get_partial_shape()))
        self.input_dtype = np.dtype(port.get_element_type().to_dtype())
        self._request = compiled.create_infer_request()
        # The request reads its input straight from this buffer: no tensor built per call.
        self._buffer = np.zeros(self.input_shape, dtype=self.input_dtype)
        self._request.set_input_tensor(ov.Tensor(self._buffer, shared_memory=True))
        self._compiled = compiled
        self.runtime = {"name": api, "version": version}
        self.settings = {
            "device": device,
            "model_file": model_file,
            "precision": precision,
            "threads": options.get("threads"),
            "config": config,
            "batch_size": batch,
        }
        for key in ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "INFERENCE_PRECISION_HINT"):
            try:
                value = compiled.get_property(key)
            except Exception:  # not every plugin reports every property
                continue
            self.settings[key.lower()] = (
                value.get_type_name() if hasattr(value, "get_type_name") else str(value)
            )

    def _variant(self, device, precision):
        # The NCS2 (and Intel GPUs) compute in FP16; the CPU runs the FP32 IR.
        variants = self.manifest.get("variants") or {}
        wanted = (precision or ("FP32" if device == "CPU" else "FP16")).upper()
        if wanted in variants:
            return variants[wanted], wanted
        if precision:
            raise BackendError(
                "the export has no {} variant (it has: {}); drop --precision".format(
                    wanted, ", ".join(sorted(variants)) or "only " + self.manifest["model_file"]
                )
            )
        return self.manifest["model_file"], None

    reports_latency = True

    def predict(self, x):
        self._buffer[...] = x
        self._request.infer()
        return self._request.get_output_tensor(0).data

    def last_latency_ms(self):
        # Measured inside the runtime, as benchmark_app reports it.
        return self._request.latency

    def close(self):
        self._request = self._compiled = None


def _ov_shape(partial_shape):
    return [d.get_length() if d.is_static else -1 for d in partial_shape]


# --- ONNX Runtime -----------------------------------------------------------


class OnnxRuntimeBackend(Backend):
    """An ONNX model in ONNX Runtime, on the CPU or, with --device GPU, through CUDA."""

    name = "onnxruntime"
    ONNX_TYPES = {
        "tensor(float)": "float32",
        "tensor(float16)": "float16",
        "tensor(int8)": "int8",
        "tensor(uint8)": "uint8",
    }

    @classmethod
    def tuning_candidates(cls, options, cpu_count):
        return cpu_thread_candidates(options, cpu_count)

    def __init__(self, export_dir, manifest, options):
        Backend.__init__(self, export_dir, manifest, options)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError(
                "onnxruntime is not importable ({}); install it with 'pip install onnxruntime' "
                "(on a Jetson: NVIDIA's onnxruntime-gpu wheel for your JetPack)".format(exc)
            ) from None
        device = options.get("device") or "CPU"
        if device == "CPU":
            providers = ["CPUExecutionProvider"]
        elif device == "GPU":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendError(
                    "this onnxruntime has no CUDA provider (it has: {}); install onnxruntime-gpu "
                    "or use --device CPU".format(", ".join(ort.get_available_providers()))
                )
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            raise BackendError("onnxruntime runs on --device CPU or GPU, not {}".format(device))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.inter_op_num_threads = 1
        if options.get("threads"):
            so.intra_op_num_threads = int(options["threads"])
        try:
            self.session = ort.InferenceSession(self.model_path(), so, providers=providers)
        except Exception as exc:  # ORT raises its own exception types for corrupt models
            raise BackendError(
                "onnxruntime cannot load {}: {}".format(self.model_path(), exc)
            ) from None
        inp = self.session.get_inputs()[0]
        batch = options.get("batch_size") or 1
        shape = [d if isinstance(d, int) else -1 for d in inp.shape]
        if shape[0] not in (-1, batch):
            raise BackendError(
                "{} has a fixed batch of {}; export it with a dynamic batch for batch {}".format(
                    self.manifest["model_file"], shape[0], batch
                )
            )
        shape[0] = batch
        self.input_shape = tuple(shape)
        self.input_dtype = np.dtype(self.ONNX_TYPES.get(inp.type, "float32"))
        self._run = self.session.run
        self._in_name = inp.name
        self._out_names = [self.session.get_outputs()[0].name]
        self.runtime = {"name": "onnxruntime", "version": ort.__version__}
        self.settings = {
            "device": device,
            "providers": self.session.get_providers(),
            "threads": options.get("threads"),
            "graph_optimization": "all",
            "batch_size": batch,
        }

    def predict(self, x):
        return self._run(self._out_names, {self._in_name: x})[0]

    def close(self):
        self.session = self._run = None


# --- Keras ------------------------------------------------------------------


class KerasBackend(Backend):
    """A Keras model called through one traced tf.function, the PC reference."""

    name = "keras"

    def __init__(self, export_dir, manifest, options):
        Backend.__init__(self, export_dir, manifest, options)
        try:
            import tensorflow as tf
        except ImportError as exc:
            raise BackendError(
                "the keras backend needs TensorFlow ({}); it runs on the PC, not on "
                "the boards".format(exc)
            ) from None
        model = tf.keras.models.load_model(self.model_path(), compile=False)
        batch = options.get("batch_size") or 1
        shape = [batch] + [int(d) for d in model.input_shape[1:]]
        dtype = tf.as_dtype(model.inputs[0].dtype)

        def call(inputs):
            return model(inputs, training=False)

        # A traced graph: calling the model eagerly costs several times more per call.
        self._fn = tf.function(call, autograph=False).get_concrete_function(
            tf.TensorSpec(shape, dtype)
        )
        self._tf = tf
        self.input_shape = tuple(shape)
        self.input_dtype = np.dtype(dtype.as_numpy_dtype)
        self.runtime = {"name": "tensorflow", "version": tf.__version__}
        self.settings = {
            "call": "tf.function",
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or "auto",
            "batch_size": batch,
        }

    def predict(self, x):
        return self._fn(self._tf.constant(x)).numpy()

    def close(self):
        self._fn = None
