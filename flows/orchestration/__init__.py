"""The Prefect layer: tasks that wrap the plain steps, the flows, the scheduled flow, deployments, the server guard
and Prefect's settings. With flows.cli the only room that imports Prefect."""
