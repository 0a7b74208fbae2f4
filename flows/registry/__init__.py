"""The model registry and tracking: the MLflow store, versions and the promotion gate, warm starts, the MLflow run
of a run folder, and retention. The only room that imports MLflow; it builds on flows.run only."""
