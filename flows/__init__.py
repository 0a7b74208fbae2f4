"""Prefect flows that alternate SimCSE training, re-mining negatives with the current encoder, and the
curriculum's next stage, round after round; the `simcse-curriculum` CLI (`run`, `serve`, `demo`).

Entry points: `flows.orchestration.curriculum_flow.curriculum_flow(config)` (and `mine_flow`, `train_flow`,
`evaluate_flow`), `flows.run.config.load_config(path)`, `flows.rounds.report.build_report(run_dir)`. See docs/flows.md.
Nothing here is imported by `simcse`, `mining` or `curriculum`; importing `flows` does not import Prefect.
"""
