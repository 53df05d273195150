"""TensorRT on a Jetson: builds an engine from the exported ONNX once on the board, then runs it.

An engine is specific to the GPU and TensorRT version that built it, so the
exporters ship ONNX and the board builds the engine; it is cached next to the
model as model.<precision>.b<max batch>.trt<version>.engine. Supports the
TensorRT 8.0-8.4 bindings API (JetPack 4.6: TensorRT 8.2, Python 3.6) and the
named-tensor API of 8.5 and later (JetPack 5 and 6), with pycuda or cuda-python
for device memory. Python 3.6 compatible.
"""

import logging
import os

import numpy as np

from devices.backends import Backend, BackendError

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "int8", "fp32")
DEVICES = ("GPU", "DLA")
# 256 MiB of builder scratch: enough for these models, modest on a 4 GB Jetson Nano.
WORKSPACE_BYTES = 1 << 28
# int8 calibration: TensorRT's own cache if present, else inputs to calibrate on.
CALIBRATION_CACHE = "calibration.cache"
# The exporters ship the representative images as calibration_data.npy (exporters/tensorrt.py).
CALIBRATION_DATA = "calibration_data.npy"


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendError(
            "TensorRT's Python API is not importable ({}); on a Jetson it comes with JetPack "
            "('sudo apt-get install python3-libnvinfer', see devices/README.md); on a PC "
            "measure the same ONNX with --backend onnxruntime".format(exc)
        ) from None
    return trt


def cuda_memory():
    """pycuda if importable, else cuda-python: the runner needs host<->device copies only."""
    errors = []
    for make in (_PyCuda, _CudaPython):
        try:
            return make()
        except ImportError as exc:
            errors.append(str(exc))
    raise BackendError(
        "TensorRT needs pycuda or cuda-python for GPU memory ({}); install one with "
        "'pip3 install pycuda' (see devices/README.md)".format("; ".join(errors))
    )


class _PyCuda(object):
    def __init__(self):
        import pycuda
        import pycuda.autoinit  # noqa: F401 - creates the CUDA context on import
        import pycuda.driver as cuda

        self.name, self.version = "pycuda", pycuda.VERSION_TEXT
        self._cuda = cuda
        self._stream = cuda.Stream()
        self.stream_handle = self._stream.handle

    def host(self, shape, dtype):
        return self._cuda.pagelocked_empty(tuple(shape), dtype)

    def device(self, nbytes):
        return self._cuda.mem_alloc(max(1, nbytes))

    def to_device(self, pointer, array):
        self._cuda.memcpy_htod_async(pointer, array, self._stream)

    def to_host(self, array, pointer):
        self._cuda.memcpy_dtoh_async(array, pointer, self._stream)

    def synchronize(self):
        self._stream.synchronize()


class _CudaPython(object):
    def __init__(self):
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        import cuda

        self.name, self.version = "cuda-python", getattr(cuda, "__version__", "unknown")
        self._rt = cudart
        self._stream = self._check(cudart.cudaStreamCreate())
        self.stream_handle = int(self._stream)

    def _check(self, result):
        err, rest = result[0], result[1:]
        if int(err) != 0:
            raise BackendError("CUDA call failed: {}".format(err))
        return rest[0] if rest else None

    def host(self, shape, dtype):
        return np.empty(tuple(shape), dtype)

    def device(self, nbytes):
        return self._check(self._rt.cudaMalloc(max(1, nbytes)))

    def to_device(self, pointer, array):
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(
            self._rt.cudaMemcpyAsync(pointer, array.ctypes.data, array.nbytes, kind, self._stream)
        )

    def to_host(self, array, pointer):
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(
            self._rt.cudaMemcpyAsync(array.ctypes.data, pointer, array.nbytes, kind, self._stream)
        )

    def synchronize(self):
        self._check(self._rt.cudaStreamSynchronize(self._stream))


class TensorRTBackend(Backend):
    """A TensorRT engine on the Jetson's GPU (or DLA), built from the export's ONNX if needed."""

    name = "tensorrt"

    def __init__(self, export_dir, manifest, options):
        Backend.__init__(self, export_dir, manifest, options)
        trt = import_tensorrt()
        self._mem = cuda_memory()
        self._trt = trt
        precision = (options.get("precision") or "fp16").lower()
        if precision not in PRECISIONS:
            raise BackendError(
                "TensorRT precision {!r}; choose one of: {}".format(
                    precision, ", ".join(PRECISIONS)
                )
            )
        device = options.get("device") or "GPU"
        if device not in DEVICES:
            raise BackendError("TensorRT runs on --device GPU or DLA, not {}".format(device))
        batch = options.get("batch_size") or 1
        max_batch = max(batch, options.get("max_batch_size") or 1)

        logger = trt.Logger(trt.Logger.WARNING)
        model_file = manifest["model_file"]
        if model_file.endswith((".engine", ".plan")):
            engine_path, built = self.model_path(), False
        elif (
            device == "GPU"
            and max_batch == 1
            and os.path.isfile(self.model_path("model_{}.engine".format(precision)))
        ):
            # Built on this board by devices/build_trt_engine.py.
            engine_path, built = self.model_path("model_{}.engine".format(precision)), False
        else:
            engine_path = self.model_path(
                "model.{}.{}.b{}.trt{}.engine".format(
                    precision, device.lower(), max_batch, trt.__version__
                )
            )
            built = not os.path.isfile(engine_path)
            if built:
                self._build(logger, engine_path, precision, device, max_batch)
        with open(engine_path, "rb") as f:
            self.engine = trt.Runtime(logger).deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise BackendError(
                "TensorRT {} cannot load {}; delete it so it is built again".format(
                    trt.__version__, engine_path
                )
            )
        self.context = self.engine.create_execution_context()
        if hasattr(self.engine, "num_io_tensors"):
            self._bind_named(batch)
        else:
            self._bind_indexed(batch)
        self.runtime = {
            "name": "tensorrt",
            "version": trt.__version__,
            "cuda_binding": "{} {}".format(self._mem.name, self._mem.version),
        }
        self.settings = {
            "device": device,
            "precision": precision,
            "engine_file": os.path.basename(engine_path),
            "engine_built_now": built,
            "max_batch_size": max_batch,
            "batch_size": batch,
            "workspace_bytes": WORKSPACE_BYTES,
        }

    def _build(self, logger, engine_path, precision, device, max_batch):
        trt = self._trt
        log.info(
            "building a %s TensorRT engine from %s (minutes on a Nano)",
            precision,
            self.model_path(),
        )
        builder = trt.Builder(logger)
        major = int(trt.__version__.split(".")[0])
        # TensorRT 10 networks are always explicit-batch; 8 needs the flag.
        flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        with open(self.model_path(), "rb") as f:
            if not parser.parse(f.read()):
                errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
                raise BackendError(
                    "TensorRT cannot parse {}: {}".format(self.model_path(), "; ".join(errors))
                )
        config = builder.create_builder_config()
        if hasattr(config, "set_memory_pool_limit"):
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
        else:
            config.max_workspace_size = WORKSPACE_BYTES
        if precision in ("fp16", "int8"):
            if not builder.platform_has_fast_fp16:
                log.warning("this GPU has no fast FP16: the %s engine may be slow", precision)
            config.set_flag(trt.BuilderFlag.FP16)
        if device == "DLA":
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = 0
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        inp = network.get_input(0)
        shape = list(inp.shape)
        profile = None
        if shape[0] == -1:
            profile = builder.create_optimization_profile()
            rest = shape[1:]
            profile.set_shape(inp.name, [1] + rest, [1] + rest, [max_batch] + rest)
            config.add_optimization_profile(profile)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = self._calibrator([1] + shape[1:])
            if profile is not None and hasattr(config, "set_calibration_profile"):
                config.set_calibration_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendError(
                "TensorRT could not build an engine from {} (see its log above)".format(
                    self.model_path()
                )
            )
        tmp = engine_path + ".partial"
        with open(tmp, "wb") as f:
            f.write(serialized)
        os.replace(tmp, engine_path)

    def _calibrator(self, shape):
        trt, mem = self._trt, self._mem
        cache_path = os.path.join(self.export_dir, CALIBRATION_CACHE)
        data_path = os.path.join(self.export_dir, CALIBRATION_DATA)
        data = None
        if os.path.isfile(data_path):
            data = np.ascontiguousarray(np.load(data_path), dtype=np.float32)
        elif not os.path.isfile(cache_path):
            raise BackendError(
                "int8 needs {} or {} in the export folder; use --precision fp16".format(
                    CALIBRATION_CACHE, CALIBRATION_DATA
                )
            )

        class Calibrator(trt.IInt8EntropyCalibrator2):
            def __init__(self):
                trt.IInt8EntropyCalibrator2.__init__(self)
                self.index = 0
                self.pointer = mem.device(int(np.prod(shape)) * 4)

            def get_batch_size(self):
                return 1

            def get_batch(self, names):
                if data is None or self.index >= len(data):
                    return None
                mem.to_device(self.pointer, data[self.index : self.index + 1])
                mem.synchronize()
                self.index += 1
                return [int(self.pointer)]

            def read_calibration_cache(self):
                if os.path.isfile(cache_path):
                    with open(cache_path, "rb") as f:
                        return f.read()
                return None

            def write_calibration_cache(self, cache):
                with open(cache_path, "wb") as f:
                    f.write(cache)

        return Calibrator()

    def _buffers(self, in_shape, in_dtype, out_shape, out_dtype):
        mem = self._mem
        self._host_in = mem.host(in_shape, in_dtype)
        self._host_out = mem.host(out_shape, out_dtype)
        self._dev_in = mem.device(self._host_in.nbytes)
        self._dev_out = mem.device(self._host_out.nbytes)
        self.input_shape = tuple(in_shape)
        self.input_dtype = np.dtype(in_dtype)

    def _bind_named(self, batch):
        # TensorRT 8.5 and later: tensors are addressed by name.
        trt, engine, ctx = self._trt, self.engine, self.context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        shape = list(engine.get_tensor_shape(inputs[0]))
        shape[0] = batch
        ctx.set_input_shape(inputs[0], shape)
        self._buffers(
            shape,
            trt.nptype(engine.get_tensor_dtype(inputs[0])),
            list(ctx.get_tensor_shape(outputs[0])),
            trt.nptype(engine.get_tensor_dtype(outputs[0])),
        )
        ctx.set_tensor_address(inputs[0], int(self._dev_in))
        ctx.set_tensor_address(outputs[0], int(self._dev_out))
        for extra in outputs[1:]:
            size = int(np.prod(ctx.get_tensor_shape(extra))) * 4
            ctx.set_tensor_address(extra, int(self._mem.device(size)))
        handle = self._mem.stream_handle
        self._execute = lambda: ctx.execute_async_v3(handle)

    def _bind_indexed(self, batch):
        # TensorRT 8.0-8.4 (JetPack 4.6): bindings are addressed by index.
        trt, engine, ctx = self._trt, self.engine, self.context
        indices = list(range(engine.num_bindings))
        inp = [i for i in indices if engine.binding_is_input(i)][0]
        outs = [i for i in indices if not engine.binding_is_input(i)]
        shape = list(engine.get_binding_shape(inp))
        shape[0] = batch
        ctx.set_binding_shape(inp, shape)
        self._buffers(
            shape,
            trt.nptype(engine.get_binding_dtype(inp)),
            list(ctx.get_binding_shape(outs[0])),
            trt.nptype(engine.get_binding_dtype(outs[0])),
        )
        bindings = [0] * len(indices)
        bindings[inp], bindings[outs[0]] = int(self._dev_in), int(self._dev_out)
        for extra in outs[1:]:
            bindings[extra] = int(self._mem.device(int(np.prod(ctx.get_binding_shape(extra))) * 4))
        handle = self._mem.stream_handle
        self._execute = lambda: ctx.execute_async_v2(bindings, handle)

    def predict(self, x):
        mem = self._mem
        np.copyto(self._host_in, x)
        mem.to_device(self._dev_in, self._host_in)
        self._execute()
        mem.to_host(self._host_out, self._dev_out)
        mem.synchronize()
        return self._host_out

    def close(self):
        self.context = self.engine = self._execute = None
