"""The run's core: its config, its folder and the names of its files, its inputs and their fingerprints, the
scheduled runs' folders, and what it shows while it works. No Prefect, no MLflow; imports nothing else of flows/."""
