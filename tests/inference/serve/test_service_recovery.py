"""Crash recovery: what is on disk decides. Unfinished analyses are redone after a restart
(exactly once), an analysis that keeps killing the process gives up after max_attempts, a
re-submitted id is not analysed twice; and `ductai serve` refuses unsafe or clashing
starts, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
import yaml

from ductai.inference.serve.config import ServeConfig
from ductai.inference.serve.service import AnalysisService
from ductai.inference.serve.store import AnalysisStore


def _finished_events(records) -> Counter:
    return Counter(r["analysis_id"] for r in records if r.get("event") == "analysis_finished")


@pytest.mark.slow
def test_recovery_in_process(tmp_path, tiny_predictor, simulated_study):
    data = tmp_path / "data"
    store = AnalysisStore(data)
    files = list(simulated_study.images)
    queued = store.create("a-queued", files, source="http", study_uids=[])
    # Killed mid-run once: left running, with half-written results.
    running = store.create("b-running", files, source="http", study_uids=[])
    store.write(running.evolve(state="running", attempts=1))
    (store.results_tmp_dir("b-running") / "half").mkdir(parents=True)
    # Killed mid-run max_attempts times: a file that crashes the worker.
    poison = store.create("c-poison", files[:1], source="http", study_uids=[])
    store.write(poison.evolve(state="running", attempts=3, error="Segmentation fault"))
    # A submission cut before it was complete.
    (store.root / ".d-cut.incoming" / "input").mkdir(parents=True)

    config = ServeConfig(data_dir=data, max_attempts=3, dicom={"enabled": False})
    service = AnalysisService(config, predictor=tiny_predictor)
    finished = []
    service.add_listener(finished.append)
    service.start()
    try:
        failed = service.get("c-poison")
        assert failed.state == "failed"  # decided at start, never run again
        assert "3 times" in failed.error and "Segmentation fault" in failed.error
        for analysis_id, attempts in (("a-queued", 1), ("b-running", 2)):
            done = service.wait(analysis_id, 120)
            assert done.state == "done", done
            assert done.attempts == attempts
            assert done.results and len(done.results["views"]) == 2
            assert not store.results_tmp_dir(analysis_id).exists()
            assert (store.results_dir(analysis_id) / "run.json").is_file()
        assert not (store.root / ".d-cut.incoming").exists()
        assert queued.id in store.ids() and ".d-cut.incoming" not in store.ids()

        # The same id submitted twice (a DICOM study re-sent): stored and analysed once.
        first = service.submit(files, source="dicom:TEST", analysis_id="study-1")
        again = service.submit(files, source="dicom:TEST", analysis_id="study-1")
        assert first.id == again.id == "study-1"
        assert service.wait("study-1", 120).state == "done"
        assert service.submit(files, source="dicom:TEST", analysis_id="study-1").state == "done"
        assert service.get("study-1").attempts == 1

        # Listeners heard each end once.
        counts = Counter(a.id for a in finished)
        assert counts == {"c-poison": 1, "a-queued": 1, "b-running": 1, "study-1": 1}
        assert [a.id for a in service.list(2)] == ["study-1", "c-poison"]  # newest first
    finally:
        service.stop()
    status = json.loads((store.folder("b-running") / "status.json").read_text())
    assert status["state"] == "done" and status["attempts"] == 2


@pytest.mark.slow
def test_sigkill_mid_analysis_then_restart_finishes_each_once(
    serve_process, simulated_study, wait_analysis
):
    server = serve_process()
    files = [
        ("files", (p.name, p.read_bytes(), "application/dicom")) for p in simulated_study.images
    ]
    with server.client() as client:
        ids = []
        for _ in range(3):
            response = client.post("/v1/analyses", files=files)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        # Kill the whole process group the moment the first one runs.
        wait_analysis(client, ids[0], states=("running", "done", "failed"), timeout=120)
    server.kill()  # SIGKILL
    before = {
        i: json.loads((server.data_dir / "analyses" / i / "status.json").read_text()) for i in ids
    }
    unfinished = [i for i, s in before.items() if s["state"] in ("queued", "running")]
    assert unfinished, f"all finished before the kill: {before}"

    server.restart()
    with server.client() as client:
        for analysis_id in ids:
            done = wait_analysis(client, analysis_id, timeout=180)
            assert done["state"] == "done", done
            assert len(done["views"]) == 2
            started_before = before[analysis_id]["attempts"]
            if before[analysis_id]["state"] == "running":
                assert done["attempts"] == started_before + 1  # redone once
            folder = server.data_dir / "analyses" / analysis_id
            assert not (folder / "results.tmp").exists()
            assert (folder / "results" / "run.json").is_file()

    # Exactly one "finished" line per analysis over both runs; none for the killed ones in
    # the first run.
    counts = _finished_events(server.log_records())
    assert counts == {i: 1 for i in ids}, counts
    first_run = _finished_events(server.log_records(run=1))
    assert not any(first_run[i] for i in unfinished)
    assert any(r.get("msg", "").startswith("recovered analysis") for r in server.log_records(run=2))

    # A second server on the same data folder is refused while this one runs.
    clash = subprocess.run(
        [
            sys.executable,
            "-m",
            "ductai.cli",
            "serve",
            "--config",
            str(server.config_path),
            "port=0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert clash.returncode == 2
    assert "used by another ductai serve" in clash.stderr

    # SIGTERM: a clean stop, exit status 0.
    assert server.stop() == 0
    assert any(r.get("event") == "stopped" for r in server.log_records(run=2))


def test_refuses_non_loopback_without_tokens(tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text(
        yaml.safe_dump(
            {"host": "0.0.0.0", "port": 0, "tokens": [], "data_dir": str(tmp_path / "d")}
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "DUCTAI_SERVE_TOKENS"}
    result = subprocess.run(
        [sys.executable, "-m", "ductai.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert "no tokens" in result.stderr and "host=0.0.0.0" in result.stderr
    assert not (tmp_path / "d" / "analyses").exists()  # refused before anything was made


def test_config_tokens_from_environment_and_clear_errors(tmp_path):
    from ductai.config import ConfigError
    from ductai.inference.serve.config import load_serve_config

    config = load_serve_config(
        overrides=["tokens=[a]", "port=9000"], environ={"DUCTAI_SERVE_TOKENS": " b, a ,,c"}
    )
    assert config.tokens == ["a", "b", "c"] and config.port == 9000
    assert config.dicom.enabled and config.dicom.destination is None
    with pytest.raises(ConfigError, match=r"dicom\.retry\.initial: unknown key"):
        load_serve_config(overrides=["dicom.retry.initial=1"], environ={})
    with pytest.raises(ConfigError, match="queue_size"):
        load_serve_config(overrides=["queue_size=0"], environ={})
    bad = tmp_path / "serve.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_serve_config(bad, environ={})


@pytest.mark.slow
def test_a_model_that_cannot_load_stops_the_server_with_a_clear_error(tmp_path):
    config = tmp_path / "serve.yaml"
    missing = tmp_path / "no-such-bundle"
    config.write_text(
        yaml.safe_dump(
            {
                "port": 0,
                "model": str(missing),
                "data_dir": str(tmp_path / "d"),
                "dicom": {"enabled": False},
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "ductai.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"ductai serve: error: model not found: {missing}" in result.stderr
