"""Prefect flows and deployments for ferroflow. Orchestration only: every step calls
the library (``pipeline``); no science lives here.

Embedded mode (no ``PREFECT_API_URL``) runs a temporary Prefect server on SQLite. Its
telemetry service writes to that database while flow runs do, and SQLite then answers
``database is locked`` with a traceback on the console; ferroflow turns the telemetry
heartbeat off unless the user has set ``PREFECT_SERVER_ANALYTICS_ENABLED`` themselves.
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

# Prefect creates PREFECT_HOME without its parents and, failing, starts a server that
# cannot open its database: make the folder first.
if os.environ.get("PREFECT_HOME"):
    os.makedirs(os.path.expanduser(os.environ["PREFECT_HOME"]), exist_ok=True)

# Dask's INFO logs narrate every worker start and stop, and on cluster shutdown a
# closed connection is logged at INFO *with a traceback* (distributed.batched). Nothing
# there needs the user: show warnings and errors only, unless they chose a level.
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
