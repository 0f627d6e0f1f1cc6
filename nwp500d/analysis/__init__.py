"""Root-cause analysis: the pure classifier and the renderers of its verdicts."""
