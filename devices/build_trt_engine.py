#!/usr/bin/env python3
"""Builds a TensorRT engine from an export folder's ONNX model, on the Jetson itself.

  python3 devices/build_trt_engine.py exports/mnist-none/tensorrt                 # FP16
  python3 devices/build_trt_engine.py exports/mnist-none/tensorrt --precision int8

An engine is specific to the GPU and the TensorRT version that built it, so it
is built on the board, from the folder `make export TARGET=tensorrt` wrote.
The folder's files are checked against manifest.json first. The engine goes
beside the ONNX model as model_<precision>.engine, with model_<precision>.json
describing how it was built.

INT8 calibrates with TensorRT's IInt8EntropyCalibrator2 on calibration_data.npy
(representative images the exporter preprocessed) and keeps the scales in
calibration.cache, which later builds reuse instead of calibrating again.

Needs TensorRT's Python bindings (JetPack installs them: python3-libnvinfer)
and numpy; INT8 calibration also needs pycuda. Runs on Python 3.6 (JetPack 4.6).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from devices import manifest as manifest_format  # noqa: E402

EXIT_USAGE = 2
PRECISIONS = ("fp16", "int8", "fp32")
CALIBRATION_FILE = "calibration_data.npy"
CALIBRATION_CACHE = "calibration.cache"
ONNX_TARGETS = ("tensorrt", "onnx")


class UsageError(Exception):
    """A request this script cannot carry out; the message says what to do."""


def build_parser():
    p = argparse.ArgumentParser(prog="build_trt_engine.py", description=__doc__.split("\n\n")[0])
    p.add_argument("export_dir", help="exports/<run>/tensorrt (or exports/<run>/onnx)")
    p.add_argument("--precision", default="fp16", choices=PRECISIONS)
    p.add_argument("--max-batch", type=int, default=1, help="largest batch the engine takes")
    p.add_argument("--opt-batch", type=int, default=1, help="the batch TensorRT tunes for")
    p.add_argument("--workspace-mib", type=int, default=512, help="builder scratch memory")
    p.add_argument("--calibration-batch", type=int, default=8, help="images per INT8 step")
    p.add_argument("--dla-core", type=int, default=None, help="build for this DLA core (Xavier)")
    p.add_argument("--engine", default=None, help="output path; default model_<precision>.engine")
    return p


def check_request(args):
    """Validates the arguments and the export folder; returns its manifest."""
    if not 1 <= args.opt_batch <= args.max_batch:
        raise UsageError(
            "Expected 1 <= opt_batch <= max_batch, got opt_batch={} max_batch={}".format(
                args.opt_batch, args.max_batch
            )
        )
    for name in ("workspace_mib", "calibration_batch"):
        if getattr(args, name) < 1:
            raise UsageError("Expected {} >= 1, got {}".format(name, getattr(args, name)))
    if not os.path.isdir(args.export_dir):
        raise UsageError(
            "{} does not exist; export with 'make export TARGET=tensorrt' and copy the "
            "whole folder to the board".format(args.export_dir)
        )
    try:
        manifest = manifest_format.read_manifest(args.export_dir)
        manifest_format.verify_files(args.export_dir, manifest)
    except manifest_format.ManifestError as exc:
        raise UsageError(str(exc)) from None
    if manifest["target"] not in ONNX_TARGETS:
        raise UsageError(
            "{} holds the {} export; TensorRT builds from the tensorrt or onnx export".format(
                args.export_dir, manifest["target"]
            )
        )
    if args.precision == "int8" and not (
        os.path.isfile(os.path.join(args.export_dir, CALIBRATION_CACHE))
        or os.path.isfile(os.path.join(args.export_dir, CALIBRATION_FILE))
    ):
        raise UsageError(
            "INT8 needs {} (written by 'make export TARGET=tensorrt'); {} has none".format(
                CALIBRATION_FILE, args.export_dir
            )
        )
    return manifest


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise UsageError(
            "tensorrt is not installed ({}): build engines on the Jetson, where JetPack "
            "provides TensorRT's Python bindings (sudo apt-get install python3-libnvinfer)".format(
                exc
            )
        ) from None
    return tensorrt


def entropy_calibrator(trt, data_path, cache_path, batch_size):
    """An IInt8EntropyCalibrator2 feeding calibration_data.npy to the GPU, caching its scales."""
    import numpy as np

    try:
        import pycuda.autoinit  # noqa: F401 - creates the CUDA context
        import pycuda.driver as cuda
    except ImportError:
        raise UsageError(
            "INT8 calibration copies images to the GPU with pycuda: pip3 install pycuda, "
            "or build FP16"
        ) from None
    images = np.load(data_path).astype(np.float32) if os.path.isfile(data_path) else None

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.position = 0
            self.device_input = None
            if images is not None:
                self.device_input = cuda.mem_alloc(batch_size * images[0].nbytes)

        def get_batch_size(self):
            return batch_size

        def get_batch(self, names):
            if images is None or self.position + batch_size > len(images):
                return None
            batch = np.ascontiguousarray(images[self.position : self.position + batch_size])
            cuda.memcpy_htod(self.device_input, batch)
            self.position += batch_size
            return [int(self.device_input)]

        def read_calibration_cache(self):
            if os.path.isfile(cache_path):
                with open(cache_path, "rb") as f:
                    return f.read()
            return None

        def write_calibration_cache(self, cache):
            with open(cache_path, "wb") as f:
                f.write(cache)

    return EntropyCalibrator()


def build_engine(trt, args, manifest):
    """Parses the ONNX model, configures precision and batch range, returns the serialized plan."""
    onnx_path = os.path.join(args.export_dir, manifest["model_file"])
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Explicit batch is required for ONNX before TensorRT 10 and the only mode from 10 on.
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    network = builder.create_network(0 if explicit is None else 1 << int(explicit))
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        if not parser.parse(f.read()):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise UsageError(
                "TensorRT's ONNX parser rejected {}: {}".format(onnx_path, "; ".join(errors))
            )

    config = builder.create_builder_config()
    workspace_bytes = args.workspace_mib * (1 << 20)
    if hasattr(config, "set_memory_pool_limit"):  # TensorRT >= 8.4
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    else:
        config.max_workspace_size = workspace_bytes

    # A dynamic batch axis needs an optimisation profile: the batch range the engine serves.
    image = network.get_input(0)
    shape = tuple(image.shape)
    if shape[0] == -1:
        profile = builder.create_optimization_profile()
        profile.set_shape(
            image.name,
            (1,) + shape[1:],
            (args.opt_batch,) + shape[1:],
            (args.max_batch,) + shape[1:],
        )
        config.add_optimization_profile(profile)
    elif args.max_batch > shape[0]:
        raise UsageError(
            "{} has a fixed batch of {}; use the dynamic-batch model.onnx for --max-batch {}".format(
                onnx_path, shape[0], args.max_batch
            )
        )

    if args.precision in ("fp16", "int8"):
        if not getattr(builder, "platform_has_fast_fp16", True):
            print("warning: this GPU has no fast FP16; the engine may be slow", file=sys.stderr)
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 layers without int8 kernels fall back to it
    if args.precision == "int8":
        if not getattr(builder, "platform_has_fast_int8", True):
            print(
                "warning: this GPU has no fast INT8 (Jetson Nano); expect no speed-up",
                file=sys.stderr,
            )
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = entropy_calibrator(
            trt,
            os.path.join(args.export_dir, CALIBRATION_FILE),
            os.path.join(args.export_dir, CALIBRATION_CACHE),
            args.calibration_batch,
        )
        if shape[0] == -1 and hasattr(config, "set_calibration_profile"):
            calibration_profile = builder.create_optimization_profile()
            fixed = (args.calibration_batch,) + shape[1:]
            calibration_profile.set_shape(image.name, fixed, fixed, fixed)
            config.set_calibration_profile(calibration_profile)
    if args.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = args.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)

    if hasattr(builder, "build_serialized_network"):  # TensorRT >= 8.0
        plan = builder.build_serialized_network(network, config)
    else:
        engine = builder.build_engine(network, config)
        plan = engine.serialize() if engine is not None else None
    if plan is None:
        raise UsageError(
            "TensorRT could not build an engine from {} (see its messages above)".format(onnx_path)
        )
    return plan, shape


def write_atomic(path, content):
    tmp = "{}.tmp-{}".format(path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(content)
    os.replace(tmp, path)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        manifest = check_request(args)
        trt = import_tensorrt()
        start = time.time()
        plan, shape = build_engine(trt, args, manifest)
        engine_path = args.engine or os.path.join(
            args.export_dir, "model_{}.engine".format(args.precision)
        )
        write_atomic(engine_path, bytes(plan))
        info = {
            "engine_file": os.path.basename(engine_path),
            "onnx_file": manifest["model_file"],
            "precision": args.precision,
            "tensorrt": trt.__version__,
            "input_shape": list(shape),
            "batch": {"min": 1, "opt": args.opt_batch, "max": args.max_batch},
            "dla_core": args.dla_core,
            "calibration_cache": CALIBRATION_CACHE if args.precision == "int8" else None,
            "build_seconds": round(time.time() - start, 1),
        }
        manifest_format.write_json_atomic(os.path.splitext(engine_path)[0] + ".json", info)
        print(
            "wrote {} ({} bytes, TensorRT {}, {}, {:.0f} s)".format(
                engine_path,
                len(bytes(plan)),
                trt.__version__,
                args.precision,
                info["build_seconds"],
            )
        )
        return 0
    except UsageError as exc:
        print("error: {}".format(exc), file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
