"""The Ray session a command runs in: an existing cluster, or a fresh local instance."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from rllib_seps.cli.errors import UserError


@contextlib.contextmanager
def ray_running(address: str | None, num_cpus: int | None) -> Iterator[None]:
    """Connects to a cluster (``--address`` or RAY_ADDRESS) or starts a local Ray instance, and
    shuts it down afterwards; a Ray instance that is already running is used and left running."""
    import ray

    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address)
        except ConnectionError as error:
            # Ray 2.60 sends its token only to a cluster it finds itself ("auto").
            hint = ("" if os.environ.get("RAY_AUTH_MODE") else "; if the cluster uses token "
                    "authentication (Ray 2.60's default), set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN "
                    "(the output of `ray get-auth-token` on the head node), or use --address auto "
                    "on the head node")
            raise UserError("--address", None, f"cannot connect to {address}: {error}{hint}") from None
    else:
        # "local": a fresh instance, never another process's cluster found in Ray's temp dir.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
    try:
        yield
    finally:
        ray.shutdown()
