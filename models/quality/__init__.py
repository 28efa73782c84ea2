"""The quality report's computation, in torch: the metric registry, each metric, detector features,
the evaluation run and its plots. Only the work horse and ``drawai evaluate`` import it."""
