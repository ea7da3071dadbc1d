"""Network factories and registry, checkpoints and export."""
