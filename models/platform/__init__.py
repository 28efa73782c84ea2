"""The torch-free platform: settings, the store, manifests and schemas, the Redis connection, domain errors,
latent sampling through ONNX Runtime and image grids. Imported by the API, the worker and every other layer."""
