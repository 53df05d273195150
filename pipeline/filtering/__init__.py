"""Training-data filters: score every training record, drop the highest scores.

- features: what a record looks like to a filter (pixels after a PCA, or embeddings).
- isolation: class-conditional IsolationForest anomaly scores, and the selection of what to drop.
- exposure: each record's exposure to membership inference, from reference models.
- gallery: a picture of the dropped records, for a person to check.
"""
