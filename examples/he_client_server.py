"""Private inference in three messages: the server classifies digits it cannot read.

  python examples/he_client_server.py                     # trains a small he_mlp on digits first
  python examples/he_client_server.py --run runs/digits-he  # or uses a PROT=he run

1. The client makes the keys and sends the public context (parameters, public,
   relinearisation and Galois keys; no secret key) to the server once.
2. The client encrypts images and sends the ciphertexts (bytes).
3. The server evaluates its model on them and returns encrypted logits, which
   only the client can decrypt.

The script ends by checking what it claims: the server's context holds no
secret key, and encrypted predictions agree with plaintext ones on >= 99%.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import data, he, models, runs  # noqa: E402
from pipeline.errors import UsageError, run_cli  # noqa: E402

IMAGES = 128


def trained_model(run: str | None):
    import tensorflow as tf

    if run:
        path = Path(run) / runs.MODEL_FILE
        if not path.exists():
            raise UsageError(f"{path} does not exist; train one with 'make train PROT=he'")
        return tf.keras.models.load_model(path, compile=False)
    splits = data.load("digits")
    model = models.he_mlp(splits.spec.image_shape, seed=0)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-2),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(splits.x_train, splits.y_train, epochs=10, batch_size=64, verbose=0)
    return model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=None, help="a PROT=he run folder; default trains on digits")
    args = p.parse_args(argv)
    model = trained_model(args.run)
    x_test = data.load("digits").x_test[:IMAGES]

    # Client: keys stay here; only the public context leaves.
    client = he.Client(he.CKKSParams(), hidden=model.get_layer("dense_1").units)
    public_context = client.public_context()

    # Server: its own plaintext weights and the client's public context.
    server = he.Server(public_context, he.SquareMLPWeights.from_keras(model))
    assert not server.holds_secret_key

    request = client.encrypt(x_test)  # list[bytes]
    response = server.infer(request)  # list[bytes]
    encrypted = client.decrypt(response, len(x_test)).argmax(1)

    plaintext = np.asarray(model.predict_on_batch(x_test)).argmax(1)
    agreement = float(np.mean(encrypted == plaintext))
    print(
        f"{len(x_test)} digits classified encrypted: agreement with plaintext {agreement:.4f}; "
        f"request {sum(map(len, request)) / 1e6:.1f} MB, response "
        f"{sum(map(len, response)) / 1e6:.2f} MB, public context {len(public_context) / 1e6:.1f} MB"
    )
    assert agreement >= 0.99, agreement
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
