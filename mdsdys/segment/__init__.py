"""Finding nuclei: the U-Net, its augmentation, post-processing, scale, detection, training and evaluation."""
