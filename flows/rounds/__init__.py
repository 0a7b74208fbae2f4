"""The rounds: the loop and its plain steps (mine, schedule, train, evaluate, close), recovery, the report and model
cards, and what comes before a run (validate, estimate, init's scaffold) and around it (continuing from a
registry). No Prefect: the experiment harness calls these steps directly; builds on flows.run and flows.registry."""
