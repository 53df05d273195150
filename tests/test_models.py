import pytest

from pipeline import models


def _layer_types(model):
    return {type(layer).__name__ for layer in model.layers}


def test_mlp_has_669706_parameters_on_mnist():
    assert models.build("mlp", (28, 28, 1)).count_params() == 669_706


@pytest.mark.parametrize("dp_ready", [False, True])
def test_cnn_has_between_5_6_and_6_0_million_parameters(dp_ready):
    count = models.build("cnn", (32, 32, 3), dp_ready=dp_ready).count_params()
    assert 5_600_000 <= count <= 6_000_000


def test_dp_ready_cnn_has_no_batch_normalization():
    assert "BatchNormalization" in _layer_types(models.build("cnn", (32, 32, 3)))
    assert "BatchNormalization" not in _layer_types(models.build("cnn", (32, 32, 3), dp_ready=True))


@pytest.mark.parametrize("name", models.MODELS)
def test_models_output_logits_not_probabilities(name):
    model = models.build(name, (8, 8, 1))
    assert model.layers[-1].get_config()["activation"] == "linear"
    assert model.output_shape == (None, 10)


def test_cnn_uses_only_static_4d_shapes():
    model = models.build("cnn", (32, 32, 3))
    for layer in model.layers:
        shape = (
            layer.output_shape
            if not isinstance(layer.output_shape, list)
            else layer.output_shape[0]
        )
        assert len(shape) <= 4 and all(d is not None for d in shape[1:])
