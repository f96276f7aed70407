"""A local sandbox tenant that speaks the providers' real wire protocols (see README.md).

Import cost matters (tests import it once per session): heavy modules load on first use.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Sandbox", "Faults", "Tenant", "load_scenario", "load_scenario_file",
           "generate_campaign"]


def __getattr__(name: str) -> Any:
    if name == "Sandbox":
        from sandbox.server import Sandbox
        return Sandbox
    if name == "Faults":
        from sandbox.faults import Faults
        return Faults
    if name == "Tenant":
        from sandbox.tenant import Tenant
        return Tenant
    if name in ("load_scenario", "load_scenario_file", "generate_campaign"):
        from sandbox import scenario
        return getattr(scenario, name)
    raise AttributeError("module 'sandbox' has no attribute %r" % name)
