"""Classifying cells: architectures, model inputs, training, proposals, Grad-CAM and the paper's metrics."""
