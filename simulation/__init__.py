"""Physics-based simulator of galactograms with exact ground truth."""
