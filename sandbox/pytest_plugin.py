"""pytest fixtures for the sandbox tenant.

`sandbox_server` (session): one running Sandbox. `sandbox` (function): the same server with a
fresh tenant from scenarios/basic.yaml, faults cleared, counters reset. `sandbox_load`: load
another scenario (path, name under sandbox/scenarios/, or mapping) into it.
`sandbox_campaign`: deliver a generated campaign into the current tenant, returns its truth.
"""
from __future__ import annotations

import os

import pytest

BASIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenarios", "basic.yaml")


@pytest.fixture(scope="session")
def sandbox_server(tmp_path_factory):
    from sandbox.server import Sandbox
    server = Sandbox.from_scenario_file(BASIC, data_dir=str(tmp_path_factory.mktemp("sandbox")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sandbox(sandbox_server):
    sandbox_server.load_scenario_file(BASIC)
    yield sandbox_server
    sandbox_server.reset()


@pytest.fixture
def sandbox_load(sandbox):
    """sandbox_load("demo.yaml") or sandbox_load({...}) -> the new Tenant."""
    def load(scenario):
        if isinstance(scenario, (dict, bytes)) or (isinstance(scenario, str)
                                                   and "\n" in scenario):
            return sandbox.load_scenario(scenario)
        return sandbox.load_scenario_file(str(scenario))
    return load


@pytest.fixture
def sandbox_campaign(sandbox):
    """sandbox_campaign(message_id="<c@evil.example>", copies=50, seed=1) -> CampaignTruth."""
    return sandbox.generate_campaign
