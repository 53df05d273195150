"""Representations of training records for anomaly detection: pixels after a PCA, or embeddings.

- `pixels`: the flattened inputs projected on their first PCA_COMPONENTS principal
  components; cheap, and blind to anything that changes meaning but not pixels.
- `embedding`: the penultimate-layer activations of the project's model trained
  briefly on the (possibly poisoned) training set itself, then the same PCA; a
  trained network maps natural images of a class close together and critical
  inputs away from them, which pixels do far less.
The PCA keeps the isolation trees' random splits on directions that carry variance.
"""

from __future__ import annotations

import numpy as np

from pipeline import surrogate
from pipeline.errors import choice_error

FEATURE_KINDS = ("pixels", "embedding")
PCA_COMPONENTS = 16
PCA_FIT_SAMPLES = 2000


def extract(
    kind: str,
    x: np.ndarray,
    y: np.ndarray,
    model_name: str,
    num_classes: int,
    epochs: int,
    seed: int = 0,
) -> np.ndarray:
    """(N, <= PCA_COMPONENTS) float32 features of the records (x, y).

    Args:
      kind: "pixels" or "embedding".
      model_name, num_classes, epochs: the briefly trained embedding model (epochs >= 1).
      seed: seeds the PCA solver and the embedding model.
    """
    if kind not in FEATURE_KINDS:
        raise choice_error("feature kind", kind, FEATURE_KINDS)
    if kind == "pixels":
        raw = x.reshape(len(x), -1)  # (N, h*w*c)
    else:
        model = surrogate.train_brief(x, y, model_name, num_classes, epochs, seed)
        raw = surrogate.penultimate(model, x)  # (N, width of the last hidden layer)
    return project(raw, seed)


def project(raw: np.ndarray, seed: int = 0) -> np.ndarray:
    """The first PCA_COMPONENTS principal components of (N, D) rows (fewer if D or N is smaller).

    The components are fitted on at most PCA_FIT_SAMPLES seeded rows: a few
    thousand rows pin down 16 directions, and the fit is most of a filter's cost.
    """
    from sklearn.decomposition import PCA

    components = min(PCA_COMPONENTS, raw.shape[1], len(raw))
    rows = np.random.default_rng(seed).permutation(len(raw))[:PCA_FIT_SAMPLES]
    pca = PCA(components, random_state=seed).fit(raw[rows])
    return pca.transform(raw).astype(np.float32)
