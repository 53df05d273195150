"""Encrypted inference time per image on the MNIST square MLP, against plaintext, alone and packed.

  python benchmarks/bench_he.py --dataset mnist --data-dir ../shared/data --epochs 5
  make bench-he DATA_DIR=../shared/data

Trains he_mlp briefly, then measures in this one process: one image sent
alone (a full request: one ciphertext per input feature; the mean of one
request before and one after the packed one) and a request that
packs N/2 / hidden images into the same ciphertexts, each as client
encryption + server evaluation + client decryption; plaintext Keras inference
of the same images alone and as one batch. The batching factor is the
per-image time alone over the per-image time packed.
Goals: encrypted predictions agree with plaintext on >= 99% of the packed
images, and packing gains at least half of its ideal factor (images per request).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import data, he, models  # noqa: E402
from pipeline.errors import run_cli  # noqa: E402
from pipeline.protections.he import HEOptions  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# The shared data folder sits next to the main checkout, or next to a worktree's parent.
SHARED = next(
    (
        d
        for d in (ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data")
        if (d / "mnist-t10k.npz").exists()
    ),
    ROOT.parent / "shared" / "data",
)
AGREEMENT_GOAL = 0.99
# Share of the ideal batching factor (images per request) that packing must deliver.
PACKING_GOAL = 0.5
PLAINTEXT_REPEATS = 50


def train_he_mlp(splits, hidden_units: int, epochs: int):
    import tensorflow as tf

    model = models.he_mlp(splits.spec.image_shape, splits.spec.num_classes, hidden_units, seed=0)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(splits.x_train, splits.y_train, epochs=epochs, batch_size=128, verbose=0)
    return model


def encrypted_seconds(client, server, images) -> tuple[dict, np.ndarray, int]:
    """Encrypt, evaluate, decrypt one request; returns seconds per step, logits, request bytes."""
    t0 = time.perf_counter()
    request = client.encrypt(images)
    t1 = time.perf_counter()
    response = server.infer(request)
    t2 = time.perf_counter()
    logits = client.decrypt(response, len(images))
    t3 = time.perf_counter()
    seconds = {"encrypt": t1 - t0, "evaluate": t2 - t1, "decrypt": t3 - t2}
    seconds["total"] = t3 - t0
    return seconds, logits, sum(map(len, request))


def plaintext_seconds(model, images) -> float:
    model.predict_on_batch(images)  # traces outside the timing
    times = []
    for _ in range(PLAINTEXT_REPEATS):
        start = time.perf_counter()
        model.predict_on_batch(images)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_dir = SHARED if (SHARED / "mnist-t10k.npz").exists() else None
    d = HEOptions()
    p.add_argument("--dataset", default="mnist" if default_dir else "digits")
    p.add_argument("--data-dir", default=str(default_dir) if default_dir else None)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--poly-modulus-degree", type=int, default=d.poly_modulus_degree)
    p.add_argument("--coeff-mod-bit-sizes", default=d.coeff_mod_bit_sizes)
    p.add_argument("--global-scale-bits", type=int, default=d.global_scale_bits)
    p.add_argument("--he-hidden-units", type=int, default=d.he_hidden_units)
    args = p.parse_args(argv)
    options = HEOptions(
        args.poly_modulus_degree,
        args.coeff_mod_bit_sizes,
        args.global_scale_bits,
        args.he_hidden_units,
    )
    params = options.params

    splits = data.load(args.dataset, args.data_dir)
    model = train_he_mlp(splits, options.he_hidden_units, args.epochs)
    weights = he.SquareMLPWeights.from_keras(model)

    start = time.perf_counter()
    client = he.Client(params, weights.hidden)
    public_context = client.public_context()
    server = he.Server(public_context, weights)
    setup_s = time.perf_counter() - start
    k = client.batch_size
    packed_images = splits.x_test[:k]

    # Alone before and after the packed request, against drift on a shared machine.
    alone, _, alone_bytes = encrypted_seconds(client, server, packed_images[:1])
    packed, logits, packed_bytes = encrypted_seconds(client, server, packed_images)
    again, _, _ = encrypted_seconds(client, server, packed_images[:1])
    alone = {key: (alone[key] + again[key]) / 2 for key in alone}
    plain_alone_s = plaintext_seconds(model, packed_images[:1])
    plain_packed_s = plaintext_seconds(model, packed_images) / k

    plain_logits = np.asarray(model.predict_on_batch(packed_images))
    agreement = float(np.mean(logits.argmax(1) == plain_logits.argmax(1)))
    accuracy = float(np.mean(logits.argmax(1) == splits.y_test[:k]))
    per_image_packed = {key: s / k for key, s in packed.items()}
    batching_factor = alone["total"] / per_image_packed["total"]

    print(
        f"data: {args.dataset} ({weights.features} inputs), he_mlp {weights.features}-"
        f"{weights.hidden}-x^2-{weights.classes} trained {args.epochs} epochs; CKKS "
        f"N={params.poly_modulus_degree}, moduli {','.join(map(str, params.coeff_mod_bit_sizes))} "
        f"({params.total_modulus_bits} bits, {params.security_bits}-bit security), "
        f"scale 2^{params.global_scale_bits}"
    )
    print(
        f"keys: public context {len(public_context) / 1e6:.1f} MB, key generation and "
        f"transfer {setup_s:.1f} s (once per client)"
    )
    print(f"{'per image (ms)':28s}{'encrypt':>10s}{'evaluate':>10s}{'decrypt':>10s}{'total':>11s}")
    for label, sec in (("encrypted, alone", alone), (f"encrypted, {k} packed", per_image_packed)):
        print(
            f"{label:28s}"
            + "".join(f"{1000 * sec[key]:10.1f}" for key in ("encrypt", "evaluate", "decrypt"))
            + f"{1000 * sec['total']:11.1f}"
        )
    print(f"{'plaintext Keras, alone':28s}{'':30s}{1000 * plain_alone_s:11.3f}")
    print(f"{f'plaintext Keras, batch {k}':28s}{'':30s}{1000 * plain_packed_s:11.4f}")
    print(
        f"ratio encrypted/plaintext: alone {alone['total'] / plain_alone_s:,.0f}x, "
        f"packed {per_image_packed['total'] / plain_packed_s:,.0f}x (batch against batch)"
    )
    print(
        f"request size per image: alone {alone_bytes / 1e6:.1f} MB, packed "
        f"{packed_bytes / k / 1e6:.2f} MB"
    )
    print(
        f"encrypted accuracy {accuracy:.4f} on {k} test images, agreement with plaintext "
        f"{agreement:.4f}  (goal >= {AGREEMENT_GOAL}: "
        f"{'met' if agreement >= AGREEMENT_GOAL else 'MISSED'})"
    )
    print(
        f"batching factor {batching_factor:.1f} ({k} images per request; goal >= "
        f"{PACKING_GOAL * k:.0f}: {'met' if batching_factor >= PACKING_GOAL * k else 'MISSED'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
