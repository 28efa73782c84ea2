"""The GAN, in torch: networks, losses, augmentation, the training loop, ONNX export, publishing a version.
Only the worker's work horse imports it."""
