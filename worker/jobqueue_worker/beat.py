"""`jobqueue-worker beat`: Celery beat for the JobQueue's app, on the JobQueue's broker, whatever its kind.

`celery --app APP --broker URL beat` cannot use a sentinel:// broker: kombu's Sentinel transport takes the
master name and the Sentinels' password from the transport options, which no command-line option or
variable sets. So beat loads the app here (as the worker does), gives it the broker URL
(JOBQUEUE_BROKER_URL) with the same transport options the worker's broker gets for finding the master
(`app.sentinel_options`, the master name from JOBQUEUE_BROKER_MASTER_NAME), and runs Celery's own `beat`
command with the remaining arguments.

On a sentinel:// broker each scheduled send waits for a replica to confirm it (`confirm.py`), like the
project's other producers; sends are retried for as long as `producer.publish_retry_policy` allows, longer
than a failover takes. The rest of the app's configuration stays its own (beat sends no result).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from jobqueue_worker.contract import SENTINEL_MASTER_NAME, Env

PROG = "jobqueue-worker beat"
EXIT_CONFIG = 2


def broker_config(url: str, master_name: str | None, own_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The Celery settings beat applies over the app's own: the broker URL, and for sentinel:// the confirming
    transport and how to find the master (the JobQueue's master name wins over the app's own `master_name`,
    as for the worker). The app's other transport options stay."""
    from jobqueue_worker import confirm
    from jobqueue_worker.app import sentinel_options, socket_options
    from jobqueue_worker.producer import publish_retry_policy

    own = dict(own_options or {})
    name = master_name or str(own.get("master_name") or SENTINEL_MASTER_NAME)
    config: dict[str, Any] = {
        "broker_url": url,
        "broker_transport_options": {
            **own,
            **socket_options(),
            **sentinel_options(url, name, own.get("sentinel_kwargs")),
        },
        "task_publish_retry_policy": publish_retry_policy(url),
    }
    if url.startswith("sentinel://"):
        config["broker_transport"] = confirm.TRANSPORT
    return config


def main(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> int:
    """Run beat with `argv` (Celery's `beat` options, e.g. `--schedule`); configuration errors print one line."""
    from jobqueue_worker.app import load_app
    from jobqueue_worker.settings import SettingsError

    missing = [name for name in (Env.APP, Env.BROKER_URL) if not environ.get(name)]
    if missing:
        print(f"{PROG}: {' and '.join(missing)} must be set", file=sys.stderr)
        return EXIT_CONFIG
    try:
        app = load_app(environ[Env.APP])
    except SettingsError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    own = app.conf.get("broker_transport_options")
    app.conf.update(broker_config(environ[Env.BROKER_URL], environ.get(Env.BROKER_MASTER_NAME) or None, own))
    return int(app.start(["beat", *argv]) or 0)
