"""Fixtures: the session's real API server with the CRDs and a Node, the operator's
ServiceAccount as the chart makes it, a namespace per test, the test's client, the kubelet's
part, and the operator as its own process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from harness import (
    Api,
    Kubelet,
    Operators,
    Paths,
    add_node,
    create_namespace,
    eventually,
    install_crds,
    stop,
)
from installed import Account, check_never_forbidden, install_account
from tests.helpers.control_plane import ControlPlane

# Where the cluster-mode operator's ServiceAccount lives (as `helm install -n` would put it).
OPERATOR_NAMESPACE = "e2e-operator"


@pytest.fixture(scope="session")
def cluster(control_plane: ControlPlane) -> ControlPlane:
    install_crds(control_plane)
    add_node(control_plane)
    return control_plane


@pytest.fixture(scope="session")
def cluster_account(
    cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Account]:
    """The chart's default (cluster-wide) install. When the session ends, the audit log must
    show not one request of it refused."""
    account = install_account(
        cluster, tmp_path_factory.mktemp("accounts"), "e2e", OPERATOR_NAMESPACE
    )
    yield account
    check_never_forbidden(cluster, account)


@pytest.fixture
def namespace(cluster: ControlPlane, request: pytest.FixtureRequest) -> str:
    return create_namespace(cluster, request.node.name)


@pytest.fixture
def paths(namespace: str) -> Paths:
    return Paths(namespace)


@pytest_asyncio.fixture
async def api(cluster: ControlPlane) -> AsyncIterator[Api]:
    client = Api(cluster)
    yield client
    await client.close()


@pytest_asyncio.fixture
async def kubelet(api: Api, namespace: str) -> AsyncIterator[Callable[[list[str]], Kubelet]]:
    """Start playing the kubelet for the test's namespace, giving pods these addresses."""
    tasks: list[asyncio.Task[None]] = []

    def start(ips: list[str]) -> Kubelet:
        node = Kubelet(api, namespace, ips)
        tasks.append(asyncio.create_task(node.run()))
        return node

    yield start
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


@pytest_asyncio.fixture
async def operator(
    cluster_account: Account, api: Api, paths: Paths, tmp_path: Path
) -> AsyncIterator[Operators]:
    """The operator as its own process; its log is printed, and must hold no traceback, and it
    must stop cleanly. At the end the test's EmbeddingProxies are deleted while it still runs,
    so that none is left holding its finalizer."""
    operators = Operators(cluster_account, tmp_path)
    # A Lease an earlier test's operator left held (killed, or stopped without giving it back)
    # would keep this test's operator standing by until it ran out.
    await api.delete(cluster_account.lease_path)
    yield operators
    failures: list[str] = []
    if any(proc.poll() is None for proc, _ in operators.started):
        for cr in await api.items(paths.proxies):
            await api.delete(f"{paths.proxies}/{cr['metadata']['name']}")

        async def released() -> bool:
            return not await api.items(paths.proxies)

        try:
            await eventually(released, "the test's EmbeddingProxies released", timeout=60)
        except AssertionError as e:
            failures.append(str(e))
    for proc, log in operators.started:
        began = time.monotonic()
        code = await stop(proc)
        took = time.monotonic() - began
        output = log.read_text(errors="replace")
        print(f"---- operator log ({log.name}, exit {code} {took:.1f} s after SIGTERM) ----")
        print(output[-20000:])
        if "Traceback" in output:
            failures.append(f"the operator logged an unhandled exception ({log.name})")
        if code != 0:
            failures.append(f"the operator did not stop cleanly on SIGTERM ({log.name}: {code})")
    assert not failures, failures
