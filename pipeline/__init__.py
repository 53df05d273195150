"""Train Keras models with protections against attacks on AI and measure them."""

import os

# TensorFlow's C++ start-up chatter (CUDA probing on CPU-only hosts) hides the
# project's own log lines; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
