"""SimCSE sentence encoders: encoder (`simcse.model`), losses, batching, training loop, evaluation.

Submodules are imported on demand (`from simcse.model import SimCSEEncoder`), so `import simcse` does not
load torch. Errors, atomic writes and table reading are shared with the other packages (`dataio`).
"""
