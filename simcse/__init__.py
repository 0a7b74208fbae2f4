"""SimCSE sentence encoders: encoder (`simcse.model`), losses, batching, training loop, evaluation.

Submodules are imported on demand (`from simcse.model import SimCSEEncoder`), so light users such as
`simcse.io` and `simcse.errors` do not pay for importing torch.
"""
