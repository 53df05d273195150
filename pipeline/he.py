"""Private inference with CKKS (TenSEAL): a client that holds the secret key, a server that does not.

The client encrypts images, the server evaluates a square-activation MLP
(dense -> x*x -> dense) on the ciphertexts with its own plaintext weights,
and only the client can decrypt the logits:

  client = Client(CKKSParams())                      # secret, relinearisation and Galois keys
  server = Server(client.public_context(), weights)  # evaluation keys only, never the secret key
  request = client.encrypt(images)                   # list[bytes], one ciphertext per input feature
  response = server.infer(request)                   # list[bytes], one ciphertext per class
  logits = client.decrypt(response, len(images))     # (images, classes)

Packing (why the layout looks like this): CKKS computes on vectors of N/2
slots at once. Slot j*k + b of the ciphertext for input feature i holds
pixel i of image b, repeated for every hidden unit j (k = N/2 / hidden images
per ciphertext). The first layer is then one plaintext-vector product per
input feature, with no rotation: the slot j*k + b accumulates
sum_i W1[i, j] x[b, i]. The square is one ciphertext product. The second
layer needs sums across hidden units, i.e. across blocks of k slots; that is
TenSEAL's `enc_matmul_plain`, log2(hidden) rotations per class with the
Galois keys. Depth: three rescalings (dense, square, dense), so the modulus
chain needs 3 inner primes of global_scale_bits plus the first and the
special prime.

Security: the total modulus bits must stay within the Homomorphic Encryption
Standard's table (homomorphicencryption.org, Nov. 2018, uniform ternary
secret, classical attacks) for 128-bit security; weaker parameters are
refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from pipeline.errors import UsageError, require

SCHEME = "CKKS"
# Multiplicative depth of dense -> square -> dense: one rescaling each.
DEPTH = 3
# Largest total coefficient-modulus bits (log2 Q) per polynomial degree N for each security
# level, from the Homomorphic Encryption Standard's table for a ternary secret (as SEAL uses).
MAX_LOG_Q = {
    128: {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881},
    192: {1024: 19, 2048: 37, 4096: 75, 8192: 152, 16384: 305, 32768: 611},
    256: {1024: 14, 2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476},
}
MIN_SECURITY_BITS = 128
# SEAL's limit on one prime of the coefficient modulus.
MAX_PRIME_BITS = 60


def security_bits(poly_modulus_degree: int, total_modulus_bits: int) -> int:
    """The highest standard security level (128, 192, 256) the parameters reach, or 0 if none."""
    levels = [
        s for s, table in MAX_LOG_Q.items() if total_modulus_bits <= table[poly_modulus_degree]
    ]
    return max(levels, default=0)


@dataclasses.dataclass(frozen=True)
class CKKSParams:
    """CKKS encryption parameters for the depth-3 square-activation MLP.

    Attributes:
      poly_modulus_degree: N, a power of two in 1024..32768; N/2 slots per ciphertext. A larger
        N allows a larger modulus (more depth or precision) at the same security and costs
        time and bytes roughly in proportion.
      coeff_mod_bit_sizes: bits of each prime of the modulus chain, first to special; at least
        DEPTH + 2 primes, the inner ones equal to global_scale_bits, each at most 60.
      global_scale_bits: log2 of the encoding scale; more bits give more precise results and
        need larger primes.
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (50, 35, 35, 35, 50)
    global_scale_bits: int = 35

    def __post_init__(self):
        n, bits, scale = (
            self.poly_modulus_degree,
            tuple(self.coeff_mod_bit_sizes),
            self.global_scale_bits,
        )
        object.__setattr__(self, "coeff_mod_bit_sizes", bits)
        if n not in MAX_LOG_Q[128]:
            raise UsageError(
                f"Expected poly_modulus_degree in {', '.join(map(str, MAX_LOG_Q[128]))}, "
                f"got poly_modulus_degree={n}"
            )
        if len(bits) < DEPTH + 2:
            raise UsageError(
                f"the square-activation MLP needs {DEPTH} rescalings, so coeff_mod_bit_sizes needs "
                f"at least {DEPTH + 2} primes (first, {DEPTH} of global_scale_bits, special), "
                f"got {len(bits)}: {','.join(map(str, bits))}"
            )
        if not all(isinstance(b, int) and 0 < b <= MAX_PRIME_BITS for b in bits):
            raise UsageError(
                f"Expected every coeff_mod_bit_sizes entry in 1..{MAX_PRIME_BITS}, got {bits}"
            )
        if any(b != scale for b in bits[1:-1]):
            raise UsageError(
                f"Expected the inner coeff_mod_bit_sizes {bits[1:-1]} to equal "
                f"global_scale_bits={scale}: each rescaling divides by one inner prime"
            )
        if bits[0] <= scale:
            raise UsageError(
                f"Expected the first prime ({bits[0]} bits) > global_scale_bits={scale}: "
                "it holds the decrypted result's integer part"
            )
        if bits[-1] < max(bits[:-1]):
            raise UsageError(
                f"Expected the special (last) prime ({bits[-1]} bits) to be the largest, "
                f"got {','.join(map(str, bits))}"
            )
        total, limit = sum(bits), MAX_LOG_Q[MIN_SECURITY_BITS][n]
        if total > limit:
            raise UsageError(
                f"coeff_mod_bit_sizes {','.join(map(str, bits))} total {total} bits, above the "
                f"{limit} bits that give {MIN_SECURITY_BITS}-bit security at poly_modulus_degree={n} "
                "(HE standard); use fewer or smaller primes or a larger poly_modulus_degree"
            )

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def total_modulus_bits(self) -> int:
        return sum(self.coeff_mod_bit_sizes)

    @property
    def security_bits(self) -> int:
        return security_bits(self.poly_modulus_degree, self.total_modulus_bits)

    def to_dict(self) -> dict:
        return {
            "scheme": SCHEME,
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "global_scale_bits": self.global_scale_bits,
            "security_bits": self.security_bits,
        }


@dataclasses.dataclass(frozen=True)
class SquareMLPWeights:
    """Plaintext weights of dense(hidden) -> x*x -> dense(classes); the server's own model."""

    w1: np.ndarray  # (features, hidden)
    b1: np.ndarray  # (hidden,)
    w2: np.ndarray  # (hidden, classes)
    b2: np.ndarray  # (classes,)

    def __post_init__(self):
        features, hidden = np.shape(self.w1)
        if np.shape(self.b1) != (hidden,) or np.shape(self.w2)[0] != hidden:
            raise UsageError(
                f"inconsistent square-MLP weights: w1 {np.shape(self.w1)}, b1 {np.shape(self.b1)}, "
                f"w2 {np.shape(self.w2)}"
            )
        if np.shape(self.b2) != (np.shape(self.w2)[1],):
            raise UsageError(f"b2 {np.shape(self.b2)} does not match w2 {np.shape(self.w2)}")
        if hidden & (hidden - 1):
            raise UsageError(
                f"Expected a power-of-two hidden width (slots split into equal blocks), got {hidden}"
            )

    @property
    def features(self) -> int:
        return int(np.shape(self.w1)[0])

    @property
    def hidden(self) -> int:
        return int(np.shape(self.w1)[1])

    @property
    def classes(self) -> int:
        return int(np.shape(self.w2)[1])

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The same network on plaintext (float64), the reference for the encrypted one."""
        h = x.reshape(len(x), -1).astype(np.float64) @ self.w1 + self.b1
        return (h * h) @ self.w2 + self.b2

    @classmethod
    def from_keras(cls, model) -> SquareMLPWeights:
        """Reads the two Dense layers of pipeline.models' `he_mlp`."""
        dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
        if len(dense) != 2:
            raise UsageError(
                f"encrypted inference needs the he_mlp model (two Dense layers), got "
                f"{model.name} with {len(dense)}"
            )
        (w1, b1), (w2, b2) = (d.get_weights() for d in dense)
        return cls(*(np.asarray(a, np.float64) for a in (w1, b1, w2, b2)))


def images_per_ciphertext(params: CKKSParams, hidden: int) -> int:
    """The batching factor: images packed side by side in one set of ciphertexts."""
    if hidden > params.slots:
        raise UsageError(
            f"hidden width {hidden} exceeds the {params.slots} slots of "
            f"poly_modulus_degree={params.poly_modulus_degree}"
        )
    return params.slots // hidden


class Client:
    """Holds the secret key: encrypts images and decrypts logits."""

    def __init__(self, params: CKKSParams, hidden: int):
        ts = _tenseal()
        self.params, self.hidden = params, hidden
        self.batch_size = images_per_ciphertext(params, hidden)
        self._context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=params.poly_modulus_degree,
            coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
        )
        self._context.global_scale = 2.0**params.global_scale_bits
        self._context.generate_galois_keys()  # rotations of the second layer

    def public_context(self) -> bytes:
        """Parameters and public evaluation keys (public, relinearisation, Galois); no secret key."""
        return self._context.serialize(save_secret_key=False)

    def key_sizes_bytes(self, public_context: bytes) -> dict:
        """Serialised size of each public key within `public_context` (from public_context())."""
        bare = len(self._context.serialize(False, False, False, False))
        sizes = {
            "public": len(self._context.serialize(True, False, False, False)) - bare,
            "relin": len(self._context.serialize(False, False, False, True)) - bare,
        }
        # The Galois keys dominate (tens of MB); derived instead of serialised once more.
        sizes["galois"] = len(public_context) - bare - sizes["public"] - sizes["relin"]
        return sizes

    def encrypt(self, images: np.ndarray) -> list[bytes]:
        """Encrypts up to `batch_size` images: one ciphertext per input feature.

        Args:
          images: (n, ...) preprocessed inputs, 1 <= n <= batch_size.
        """
        ts = _tenseal()
        x = np.asarray(images, np.float64).reshape(len(images), -1)
        if not 1 <= len(x) <= self.batch_size:
            raise UsageError(
                f"Expected 1..{self.batch_size} images per request (N/2 slots / {self.hidden} "
                f"hidden units), got {len(x)}"
            )
        padded = np.zeros((self.batch_size, x.shape[1]))
        padded[: len(x)] = x
        # Slot j*k + b: pixel i of image b, repeated for each hidden unit j.
        return [
            ts.ckks_vector(self._context, np.tile(padded[:, i], self.hidden)).serialize()
            for i in range(x.shape[1])
        ]

    def decrypt(self, response: Sequence[bytes], count: int) -> np.ndarray:
        """Logits (count, classes) of the first `count` images of the request."""
        ts = _tenseal()
        columns = [np.asarray(ts.ckks_vector_from(self._context, r).decrypt()) for r in response]
        return np.stack(columns, axis=1)[:count]


class Server:
    """Evaluates the square MLP on ciphertexts; holds only public evaluation keys."""

    def __init__(self, public_context: bytes, weights: SquareMLPWeights):
        ts = _tenseal()
        if not isinstance(public_context, bytes):
            raise UsageError(
                f"the server takes a serialised public context (bytes), got {type(public_context)}"
            )
        self._context = ts.context_from(public_context)
        if self._context.is_private():
            raise UsageError(
                "the context sent to the server holds the secret key; serialise it with "
                "save_secret_key=False (Client.public_context())"
            )
        if not self._context.has_galois_keys() or not self._context.has_relin_keys():
            raise UsageError("the server needs the Galois and relinearisation keys in the context")
        self.weights = weights

    @property
    def holds_secret_key(self) -> bool:
        return self._context.is_private()

    def infer(self, request: Sequence[bytes]) -> list[bytes]:
        """Encrypted logits, one ciphertext per class (slot b: image b), from encrypted inputs."""
        ts = _tenseal()
        w = self.weights
        if isinstance(request, bytes | bytearray | np.ndarray) or not all(
            isinstance(r, bytes) for r in request
        ):
            raise UsageError(
                "the server accepts only a list of serialised ciphertexts (bytes), one per input "
                "feature; encrypt the images with Client.encrypt"
            )
        if len(request) != w.features:
            raise UsageError(
                f"Expected {w.features} ciphertexts (one per input feature), got {len(request)}"
            )
        try:
            inputs = [ts.ckks_vector_from(self._context, r) for r in request]
        except (ValueError, RuntimeError) as exc:
            raise UsageError(
                f"a request ciphertext does not load under this context: {exc}"
            ) from None
        # Each input ciphertext holds `hidden` blocks of k images (see the module docstring).
        k, rest = divmod(inputs[0].size(), w.hidden)
        if rest or any(enc.size() != inputs[0].size() for enc in inputs):
            raise UsageError(
                f"request ciphertexts must each hold hidden={w.hidden} blocks of equal size; "
                "encrypt with a Client of the same hidden width"
            )

        # Dense 1: slot j*k + b collects sum_i W1[i, j] x[b, i]; no rotation needed.
        hidden = None
        for i, enc in enumerate(inputs):
            term = enc * np.repeat(w.w1[i], k).tolist()
            hidden = term if hidden is None else hidden + term
        hidden = hidden + np.repeat(w.b1, k).tolist()
        hidden = hidden.square()

        # Dense 2: for class c, sum over the hidden blocks (rotations by multiples of k).
        return [
            (hidden.enc_matmul_plain(w.w2[:, c].tolist(), k) + float(w.b2[c])).serialize()
            for c in range(w.classes)
        ]


def _tenseal():
    return require("tenseal", "tenseal==0.3.18", "homomorphic encryption (PROT=he)")
