import numpy as np
import pytest

from pipeline import he
from pipeline.errors import UsageError, run_cli
from pipeline.train import main

FORMATS_KEYS = {
    "plaintext_accuracy",
    "encrypted_accuracy",
    "agreement",
    "samples",
    "latency_ms",
    "ciphertext_bytes",
    "keys_bytes",
    "scheme",
    "poly_modulus_degree",
    "coeff_mod_bit_sizes",
    "global_scale_bits",
    "security_bits",
}


@pytest.fixture(scope="module")
def he_run(tmp_path_factory):
    """A PROT=he run on digits whose first 128 test images were classified encrypted."""
    from pipeline.config import TrainConfig
    from pipeline.protections.he import HEOptions
    from pipeline.train import train

    out = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(
        dataset="digits",
        prot="he",
        epochs=12,
        out=str(out),
        evaluations=("none",),
        options=HEOptions(he_samples=128),
    )
    return cfg.run_dir, train(cfg)


@pytest.fixture(scope="module")
def client():
    return he.Client(he.CKKSParams(), hidden=8)


@pytest.fixture(scope="module")
def server(client, weights):
    return he.Server(client.public_context(), weights)


@pytest.fixture(scope="module")
def weights():
    rng = np.random.default_rng(0)
    return he.SquareMLPWeights(
        rng.normal(size=(6, 8)) / 3,
        rng.normal(size=8) / 3,
        rng.normal(size=(8, 3)),
        rng.normal(size=3),
    )


def test_encrypted_and_plaintext_predictions_agree_on_99_percent_of_digits(he_run):
    _, metrics = he_run
    prot = metrics["protection"]
    assert prot["samples"] == 128
    assert prot["agreement"] >= 0.99
    assert abs(prot["encrypted_accuracy"] - prot["plaintext_accuracy"]) <= 0.01
    assert prot["plaintext_accuracy"] > 0.8
    assert prot["max_abs_logit_error"] < 0.05


def test_run_records_the_formats_keys_and_128_bit_parameters(he_run):
    _, metrics = he_run
    prot = metrics["protection"]
    assert FORMATS_KEYS <= prot.keys()
    assert set(prot["latency_ms"]) == {"encrypt", "evaluate", "decrypt", "total", "plaintext"}
    assert set(prot["keys_bytes"]) == {"public", "galois", "relin"}
    keys = prot["keys_bytes"]
    assert keys["galois"] > keys["relin"] > keys["public"] > 0
    assert prot["scheme"] == "CKKS" and prot["security_bits"] == 128
    assert prot["coeff_mod_bit_sizes"] == [50, 35, 35, 35, 50]
    assert prot["latency_ms"]["total"] > prot["latency_ms"]["plaintext"]
    assert prot["images_per_ciphertext"] == 8192 // 2 // 32
    assert metrics["model"] == "he_mlp"
    assert prot["server_holds_secret_key"] is False


def test_finished_he_run_is_not_evaluated_again(he_run):
    from pipeline.config import TrainConfig
    from pipeline.protections.he import HEOptions
    from pipeline.train import train

    run_dir, metrics = he_run
    cfg = TrainConfig(
        dataset="digits",
        prot="he",
        epochs=12,
        out=str(run_dir.parent),
        evaluations=("none",),
        options=HEOptions(he_samples=128),
    )
    assert train(cfg)["protection"] == metrics["protection"]


def test_deployed_model_is_the_one_evaluated_encrypted(he_run):
    run_dir, metrics = he_run
    import tensorflow as tf

    from pipeline import data, runs

    model = tf.keras.models.load_model(run_dir / runs.MODEL_FILE, compile=False)
    x = data.load("digits").x_test[:128]
    plain = np.asarray(model.predict_on_batch(x)).argmax(1)
    y = data.load("digits").y_test[:128]
    assert np.mean(plain == y) == pytest.approx(metrics["protection"]["plaintext_accuracy"])


@pytest.mark.parametrize(
    "n, bits, secure",
    [
        (8192, 218, 128),
        (8192, 219, 0),
        (8192, 152, 192),
        (16384, 205, 256),
        (4096, 109, 128),
        (32768, 881, 128),
    ],
)
def test_security_level_follows_the_he_standard_table(n, bits, secure):
    assert he.security_bits(n, bits) == secure


@pytest.mark.parametrize(
    "n, bits",
    [(4096, (30, 25, 25, 25, 30)), (8192, (60, 40, 40, 40, 60)), (2048, (20, 10, 10, 10, 20))],
)
def test_parameters_below_128_bit_security_are_refused(n, bits):
    with pytest.raises(UsageError, match="128-bit security"):
        he.CKKSParams(n, bits, bits[1])


def test_default_parameters_reach_128_bit_security():
    params = he.CKKSParams()
    assert params.total_modulus_bits == 205 and params.security_bits == 128


def test_server_context_holds_no_secret_key(client, server):
    assert not server.holds_secret_key
    assert not server._context.has_secret_key() and server._context.is_public()
    assert client._context.is_private()


def test_server_refuses_a_context_with_the_secret_key(client, weights):
    with pytest.raises(UsageError, match="secret key"):
        # Keys left out keep the test fast; the secret key alone must be refused.
        he.Server(client._context.serialize(False, True, False, False), weights)


@pytest.mark.parametrize(
    "request_", [np.zeros((4, 6)), [np.zeros(4)] * 6, [0.5] * 6, b"abc", ["text"] * 6]
)
def test_server_accepts_only_ciphertext_bytes(server, request_):
    with pytest.raises(UsageError, match="serialised ciphertexts"):
        server.infer(request_)


def test_server_refuses_bytes_that_are_not_ciphertexts(server):
    with pytest.raises(UsageError, match="does not load"):
        server.infer([b"not a ciphertext"] * 6)


def test_server_never_encrypts_plaintext_nor_touches_a_secret_key(client, server, monkeypatch):
    import tenseal as ts

    request = client.encrypt(np.random.default_rng(1).random((5, 6)))
    calls = []

    def forbid(name):
        def record(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"the server called {name}")

        return record

    monkeypatch.setattr(ts, "ckks_vector", forbid("ckks_vector"))
    monkeypatch.setattr(ts.Context, "secret_key", forbid("secret_key"))
    monkeypatch.setattr(ts.CKKSVector, "decrypt", forbid("decrypt"))
    response = server.infer(request)
    monkeypatch.undo()
    assert calls == [] and all(isinstance(r, bytes) for r in response)


def test_encrypted_forward_matches_a_float64_reference(client, server, weights):
    x = np.random.default_rng(2).random((client.batch_size, 6))
    logits = client.decrypt(server.infer(client.encrypt(x)), len(x))
    assert logits.shape == (client.batch_size, 3)
    np.testing.assert_allclose(logits, weights.forward(x), atol=1e-3)


def test_a_request_packs_up_to_half_the_ring_degree_over_hidden_images(client):
    assert client.batch_size == 8192 // 2 // 8
    with pytest.raises(UsageError, match=r"1\.\.512 images"):
        client.encrypt(np.zeros((client.batch_size + 1, 6)))


def test_client_server_example_checks_its_claims(he_run, capsys):
    import runpy

    run_dir, _ = he_run
    example = runpy.run_path("examples/he_client_server.py")
    assert example["main"](["--run", str(run_dir)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert float(line.split("agreement with plaintext ")[1].split(";")[0]) >= 0.99


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prot", "he", "--poly-modulus-degree", "4096"], "128-bit security"),
        (["--prot", "he", "--poly-modulus-degree", "5000"], "poly_modulus_degree in"),
        (["--prot", "he", "--coeff-mod-bit-sizes", "50,35,35,50"], "at least 5 primes"),
        (["--prot", "he", "--coeff-mod-bit-sizes", "50,x"], "comma-separated integers"),
        (["--prot", "he", "--global-scale-bits", "40"], "global_scale_bits=40"),
        (["--prot", "he", "--he-hidden-units", "33"], "power of two"),
        (["--prot", "he", "--he-samples", "0"], "he_samples >= 1"),
        (["--prot", "he", "--model", "cnn"], "not MODEL=cnn"),
        (["--prot", "none", "--he-samples", "10"], "applies to PROT=he"),
    ],
)
def test_bad_he_input_exits_2_with_one_line(argv, message, capsys, tmp_path):
    assert run_cli(main, [*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
