"""The export folder's manifest: what each file is, its SHA-256, and how to feed the model.

Shared by the exporters (which write it) and the board runner (which checks it
before benchmarking). Standard library only, and Python 3.6 compatible, since
boards run old Pythons (JetPack 4.6 ships Python 3.6).

An export folder, exports/<run>/<target>/, holds:
  manifest.json   this description
  <model files>   model.tflite | model_edgetpu.tflite | model.xml + model.bin | model.onnx ...
  test_data.npz   x: test inputs already preprocessed (and quantised) for the artifact,
                  y: integer labels
"""

import hashlib
import json
import os
import tempfile

MANIFEST_FILE = "manifest.json"
TEST_DATA_FILE = "test_data.npz"
FORMAT_VERSION = 1


class ManifestError(Exception):
    """A missing, corrupt or tampered export folder; the message names the file."""


def sha256(path, chunk_bytes=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_files(export_dir, names):
    """{name: {"sha256": ..., "size_bytes": ...}} for files inside export_dir."""
    out = {}
    for name in names:
        path = os.path.join(export_dir, name)
        out[name] = {"sha256": sha256(path), "size_bytes": os.path.getsize(path)}
    return out


def write_json_atomic(path, data):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes it owner-only; others copy results
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_manifest(export_dir, manifest):
    """Adds the file checksums and format version, then writes manifest.json atomically.

    `manifest` must name its files in manifest["files"] as a list of names
    (model files and test data); they are replaced by their descriptions.
    Expected keys: target, model_file, files, input {name, shape, dtype,
    quantization {scale, zero_point} or null}, output {same}, preprocessing,
    source {run, dataset, prot, model}, verification {agreement, accuracy, ...}.
    """
    manifest = dict(manifest)
    manifest["format_version"] = FORMAT_VERSION
    manifest["files"] = describe_files(export_dir, manifest["files"])
    write_json_atomic(os.path.join(export_dir, MANIFEST_FILE), manifest)
    return manifest


def read_manifest(export_dir):
    path = os.path.join(export_dir, MANIFEST_FILE)
    if not os.path.isfile(path):
        raise ManifestError(
            "{} has no {}; export the model with 'make export' and copy the whole folder".format(
                export_dir, MANIFEST_FILE
            )
        )
    try:
        with open(path) as f:
            manifest = json.load(f)
    except ValueError as exc:
        raise ManifestError("{} is not valid JSON ({}); export again".format(path, exc)) from None
    for key in ("target", "model_file", "files", "input"):
        if key not in manifest:
            raise ManifestError("{} lacks the key {!r}; export again".format(path, key))
    return manifest


def verify_files(export_dir, manifest):
    """Raises ManifestError naming the first file whose size or SHA-256 differs."""
    for name, expected in sorted(manifest["files"].items()):
        path = os.path.join(export_dir, name)
        if not os.path.isfile(path):
            raise ManifestError(
                "{} is missing from {}; copy the whole export folder".format(name, export_dir)
            )
        if os.path.getsize(path) != expected["size_bytes"] or sha256(path) != expected["sha256"]:
            raise ManifestError(
                "{} does not match its SHA-256 in {}: the file is truncated or was changed; "
                "copy it again from the export".format(path, MANIFEST_FILE)
            )
