"""Ray clusters of their own: a `ray start --head` cluster whose driver (the CLI) is killed
with SIGKILL mid-run and resumed, and a two-node `ray.cluster_utils.Cluster` that loses a
node mid-run. Each run's store must equal an uninterrupted one, every text exactly once."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from bertlayers import load
from bertlayers.core.config import ExtractConfig
from bertlayers.distributed import ReaderOptions, extract_to_store
from test_cli import assert_one_line_error
from test_ray import ENGINE, assert_same_store, vectors_of, write_corpus

pytestmark = [pytest.mark.ray, pytest.mark.slow]

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def auth(tmp_path_factory) -> dict:
    """Ray's token authentication for the head and its drivers, with a token of the test's
    own (as a user's cluster has one in ~/.ray/auth_token or $RAY_AUTH_TOKEN_PATH)."""
    token = tmp_path_factory.mktemp("ray-auth") / "auth_token"
    token.write_text(secrets.token_hex(32))
    return dict(
        os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), HF_HUB_OFFLINE="1"
    )


@pytest.fixture(scope="module")
def head(tmp_path_factory, auth):
    """A cluster as `ray start --head` makes one (2 CPUs), stopped with its process group."""
    port = free_port()
    temp = tmp_path_factory.mktemp("ray-head")
    process = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--node-ip-address=127.0.0.1",
            "--block",
            f"--ray-client-server-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--temp-dir={temp}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=auth,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        probe = subprocess.run(
            [RAY, "status", f"--address={address}"], capture_output=True, env=auth
        )
        if probe.returncode == 0:
            break
        time.sleep(1)
    else:
        os.killpg(process.pid, signal.SIGTERM)
        pytest.fail("ray start --head did not come up in 90 s")
    yield address, auth
    os.killpg(process.pid, signal.SIGTERM)  # its daemons may outlive SIGTERM: then SIGKILL
    time.sleep(3)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def cli(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bertlayers", "extract", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def test_driver_killed_then_resumed_gives_the_uninterrupted_store(head, tmp_path):
    address, env = head
    corpus = write_corpus(tmp_path / "corpus.jsonl", texts=60)
    common = [
        str(corpus),
        "--id-column",
        "id",
        "--address",
        address,
        "--engine",
        "ray",
        "--actors",
        "1",
        "--shard-size",
        "3",
        "--layers",
        "0,-1",
    ]
    whole = cli(env, *common, "-o", str(tmp_path / "whole"), "--quiet")
    assert whole.wait(timeout=600) == 0, whole.stderr.read()

    out, partial = tmp_path / "killed", tmp_path / "killed.partial"
    driver = cli(env, *common, "-o", str(out), "--quiet")
    deadline = time.monotonic() + 300
    while len(list(partial.glob("part-*.parquet"))) < 3 and time.monotonic() < deadline:
        assert driver.poll() is None, driver.stderr.read()
        time.sleep(0.05)
    driver.kill()  # SIGKILL: no clean-up runs
    driver.wait()
    done = len(list(partial.glob("part-*.parquet")))
    assert 3 <= done < 21, "the run was not interrupted part-way"
    assert not out.exists()

    # a rerun with another setting is refused, naming it; nothing is lost
    changed = cli(env, *common[:-1], "0", "-o", str(out), "--resume")
    changed.wait(timeout=300)
    result = subprocess.CompletedProcess(
        [], changed.returncode, changed.stdout.read(), changed.stderr.read()
    )
    assert_one_line_error(result, "cannot resume: config.layers was '0,-1', now '0'")
    assert len(list(partial.glob("part-*.parquet"))) >= done

    resumed = cli(env, *common, "-o", str(out), "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    said = resumed.stderr.read()
    assert "bertlayers: resuming: " in said and " of 21 shards are done" in said, said
    a, b = load(out), load(tmp_path / "whole")
    assert a.ids == b.ids == [json.loads(x)["id"] for x in corpus.read_text().splitlines()]
    np.testing.assert_array_equal(vectors_of(a), vectors_of(b))
    np.testing.assert_array_equal(a.n_tokens, b.n_tokens)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in (tmp_path / "whole").iterdir()
    )


def test_two_nodes_one_removed_mid_run(tmp_path):
    """Head with no CPU for work, two 1-CPU nodes; one node goes mid-run: the job finishes
    on the other, every text once, equal to the local engine."""
    from ray.cluster_utils import Cluster

    from test_ray import local_store

    corpus = write_corpus(tmp_path / "corpus.jsonl", texts=40)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    partial = tmp_path / "ray.partial"
    removed: list[bool] = []

    def remove_a_node_after_two_shards() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if len(list(partial.glob("part-*.parquet"))) >= 2:
                cluster.remove_node(nodes[1])
                removed.append(True)
                return
            time.sleep(0.05)

    remover = threading.Thread(target=remove_a_node_after_two_shards)
    try:
        remover.start()
        extract_to_store(
            [str(corpus)],
            tmp_path / "ray",
            ExtractConfig(layers=[0, -1]),
            ENGINE,
            ReaderOptions(id_column="id"),
            actors=2,
            shard_size=2,
        )
        remover.join()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert removed
    local = local_store(corpus, tmp_path / "local.parquet", "--layers", "0,-1")
    assert_same_store(tmp_path / "ray", local)


def test_serve_engine_ray_command(head):
    """`bertlayers serve --engine ray --replicas 2` on the cluster: it answers on loopback
    like `bertlayers serve`, and SIGTERM takes it down with exit 0."""
    import httpx

    address, env = head
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bertlayers",
            "serve",
            "--engine",
            "ray",
            "--replicas",
            "2",
            "--cpus-per-replica",
            "0.5",
            "--address",
            address,
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(server.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while not any(f"2 Ray Serve replicas at {url}" in line for line in said):
            assert server.poll() is None and time.monotonic() < deadline, "".join(said)
            time.sleep(0.5)
        assert httpx.get(f"{url}/ready", timeout=30).status_code == 200
        answer = httpx.post(
            f"{url}/v1/embed", json={"texts": ["a test"], "layers": [-1]}, timeout=60
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["shape"] == [1, 1, 384]
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=120)
        reader.join(timeout=10)
    assert code == 0, "".join(said)
    assert server.stdout.read() == ""
