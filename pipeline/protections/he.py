"""PROT=he: train a square-activation MLP, then classify test images encrypted with CKKS.

  make train DATASET=mnist PROT=he EPOCHS=20 HE_SAMPLES=512
  python -m pipeline.train --dataset digits --prot he --poly-modulus-degree 8192

Homomorphic encryption protects the inference inputs: the server computes on
ciphertexts it cannot read. The model trains on plaintext as usual (`he_mlp`:
dense -> x*x -> dense); after training, the first HE_SAMPLES test images go
through the client/server protocol of pipeline/he.py, and metrics.json
records the encrypted accuracy, its agreement with the same model on
plaintext, the cost per image (encryption, evaluation, decryption) and sizes,
the parameters and the security level they reach. docs/he.md has the details.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from pipeline import he, models
from pipeline.errors import UsageError
from pipeline.protections.base import Protection

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = 512


@dataclasses.dataclass(frozen=True)
class HEOptions:
    """Encrypted-inference settings.

    Attributes:
      poly_modulus_degree: CKKS ring degree N (power of two, 1024..32768); N/2 slots.
      coeff_mod_bit_sizes: modulus chain in bits, comma-separated, first to special prime; its
        total must give 128-bit security at N (HE standard), and the network's depth needs 5
        primes. A string, so that the run's config.json compares equal when the run resumes.
      global_scale_bits: log2 of the encoding scale; more bits are more precise.
      he_hidden_units: width of the squared hidden layer, a power of two <= N/2. Wider learns
        more but packs fewer images per ciphertext (N/2 / width).
      he_samples: test images classified encrypted, >= 1 (capped at the test set).
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: str = "50,35,35,35,50"
    global_scale_bits: int = 35
    he_hidden_units: int = models.HE_HIDDEN_UNITS
    he_samples: int = DEFAULT_SAMPLES

    def __post_init__(self):
        params = self.params  # validates the scheme and its security
        if self.he_hidden_units < 1 or self.he_hidden_units & (self.he_hidden_units - 1):
            raise UsageError(
                f"Expected he_hidden_units a power of two >= 1, got "
                f"he_hidden_units={self.he_hidden_units}"
            )
        he.images_per_ciphertext(params, self.he_hidden_units)
        if self.he_samples < 1:
            raise UsageError(f"Expected he_samples >= 1, got he_samples={self.he_samples}")

    @property
    def params(self) -> he.CKKSParams:
        return he.CKKSParams(
            self.poly_modulus_degree, _int_list(self.coeff_mod_bit_sizes), self.global_scale_bits
        )


class HEProtection(Protection):
    """Plain training of he_mlp; encrypted evaluation of the trained model after fit."""

    name = "he"
    default_model = "he_mlp"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.options = cfg.options if cfg.options is not None else HEOptions()
        if cfg.model_name != "he_mlp":
            raise UsageError(
                f"PROT=he evaluates the square-activation he_mlp under encryption, not "
                f"MODEL={cfg.model_name}; leave MODEL out"
            )
        he._tenseal()  # fail before training if TenSEAL is missing
        self._metrics: dict = {}

    # --- configuration ----------------------------------------------------

    @classmethod
    def add_arguments(cls, parser) -> None:
        d = HEOptions()
        parser.add_argument(
            "--poly-modulus-degree", type=int, default=None, help=f"default {d.poly_modulus_degree}"
        )
        parser.add_argument(
            "--coeff-mod-bit-sizes",
            default=None,
            help=f"comma-separated bits, default {d.coeff_mod_bit_sizes}",
        )
        parser.add_argument(
            "--global-scale-bits", type=int, default=None, help=f"default {d.global_scale_bits}"
        )
        parser.add_argument(
            "--he-hidden-units", type=int, default=None, help=f"default {d.he_hidden_units}"
        )
        parser.add_argument(
            "--he-samples",
            type=int,
            default=None,
            help=f"test images encrypted, default {d.he_samples}",
        )

    @classmethod
    def options_from_args(cls, args) -> HEOptions:
        names = [f.name for f in dataclasses.fields(HEOptions)]
        return HEOptions(**{n: getattr(args, n) for n in names if getattr(args, n) is not None})

    # --- training steps ---------------------------------------------------

    def build_model(self, input_shape, num_classes):
        return models.he_mlp(input_shape, num_classes, self.options.he_hidden_units, self.cfg.seed)

    def after_fit(self, trainer, model):
        splits = trainer.splits
        n = min(self.options.he_samples, len(splits.x_test))
        self._metrics = evaluate_encrypted(
            model, splits.x_test[:n], splits.y_test[:n], self.options.params
        )
        return model

    def metrics(self) -> dict:
        return self._metrics


def evaluate_encrypted(model, x: np.ndarray, y: np.ndarray, params: he.CKKSParams) -> dict:
    """Classifies `x` through the client/server protocol and compares with plaintext inference.

    Latencies are per image, amortised over full ciphertexts of packed images;
    `batch_latency_ms` is one request's, which is also the latency of one image sent alone.
    """
    from tqdm import tqdm

    weights = he.SquareMLPWeights.from_keras(model)
    start = time.perf_counter()
    client = he.Client(params, weights.hidden)
    public_context = client.public_context()
    server = he.Server(public_context, weights)
    keygen_seconds = time.perf_counter() - start

    # Plaintext reference: the Keras model itself, timed on the same images.
    model.predict_on_batch(x[:1])  # traces once, outside the timing
    start = time.perf_counter()
    plain_logits = np.asarray(model.predict_on_batch(x))
    plain_ms = (time.perf_counter() - start) * 1000 / len(x)

    k = client.batch_size
    seconds = {"encrypt": 0.0, "evaluate": 0.0, "decrypt": 0.0}
    enc_logits, request_bytes, response_bytes, ciphertext_bytes = [], 0, 0, 0
    batches = range(0, len(x), k)
    for first in tqdm(batches, desc="encrypted inference", unit="request", leave=False):
        images = x[first : first + k]
        t0 = time.perf_counter()
        request = client.encrypt(images)
        t1 = time.perf_counter()
        response = server.infer(request)
        t2 = time.perf_counter()
        enc_logits.append(client.decrypt(response, len(images)))
        t3 = time.perf_counter()
        for key, s in zip(seconds, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            seconds[key] += s
        request_bytes += sum(map(len, request))
        response_bytes += sum(map(len, response))
        ciphertext_bytes = len(request[0])
    enc_logits = np.concatenate(enc_logits)

    enc_pred, plain_pred = enc_logits.argmax(1), plain_logits.argmax(1)
    latency_ms = {key: 1000 * s / len(x) for key, s in seconds.items()}
    latency_ms["total"] = sum(latency_ms.values())
    latency_ms["plaintext"] = plain_ms
    result = {
        "plaintext_accuracy": float(np.mean(plain_pred == y)),
        "encrypted_accuracy": float(np.mean(enc_pred == y)),
        "agreement": float(np.mean(enc_pred == plain_pred)),
        "samples": int(len(x)),
        "latency_ms": {key: round(v, 4) for key, v in latency_ms.items()},
        "batch_latency_ms": {key: round(1000 * s / len(batches), 2) for key, s in seconds.items()},
        "slowdown_vs_plaintext": round(latency_ms["total"] / plain_ms, 1),
        "ciphertext_bytes": int(ciphertext_bytes),
        "request_bytes_per_image": int(request_bytes / len(x)),
        "response_bytes_per_image": int(response_bytes / len(x)),
        "keys_bytes": client.key_sizes_bytes(public_context),
        "public_context_bytes": len(public_context),
        "keygen_seconds": round(keygen_seconds, 3),
        **params.to_dict(),
        "total_modulus_bits": params.total_modulus_bits,
        "hidden_units": weights.hidden,
        "images_per_ciphertext": k,
        "max_abs_logit_error": float(np.max(np.abs(enc_logits - plain_logits))),
        "server_holds_secret_key": server.holds_secret_key,
    }
    log.info(
        "encrypted inference on %d images: accuracy %.4f (plaintext %.4f), agreement %.4f, "
        "%.1f ms per image (%.0fx plaintext), %d-bit security",
        len(x),
        result["encrypted_accuracy"],
        result["plaintext_accuracy"],
        result["agreement"],
        latency_ms["total"],
        result["slowdown_vs_plaintext"],
        params.security_bits,
    )
    return result


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        raise UsageError(
            f"Expected comma-separated integers such as 50,35,35,35,50, got {text!r}"
        ) from None


PROTECTION = HEProtection
