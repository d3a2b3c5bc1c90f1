"""GET /loralab/train_progress: the loss history nodes/host/training.py keeps per node, for a page
that reloads mid-run; a new run replaces the old one, a saved file is kept apart, NaN goes out as null."""
import json
import math


def _get(host, query: str):
    from aiohttp.test_utils import make_mocked_request
    route = next(r for r in host.server.routes
                 if getattr(r, "path", None) == "/loralab/train_progress" and r.method == "GET")
    response = host.loop.run_until_complete(route.handler(make_mocked_request("GET", "/loralab/train_progress" + query)))
    return response.status, json.loads(response.body)


def test_train_progress_keeps_the_last_run_per_node(host):
    training = host.module("nodes.host.training")
    node = "e2e-history-7"
    status, body = _get(host, f"?node={node}")
    assert status == 200 and body["events"] == [] and body["run"] is None
    for step in range(1, 4):
        training.record_progress({"node": node, "run": "old", "step": step, "total": 3, "loss": 1.0, "t": step})
    for step in range(1, 3):
        training.record_progress({"node": node, "run": "new", "step": step, "total": 9,
                                  "loss": math.nan if step == 2 else 0.5, "t": 10 + step})
    training.record_progress({"node": node, "run": "new", "step": 2, "total": 9, "saved": "a/b.safetensors"})
    status, body = _get(host, f"?node={node}")
    assert status == 200 and body["run"] == "new"
    assert [(e["step"], e["loss"]) for e in body["events"]] == [(1, 0.5), (2, None)]
    assert body["saved"]["saved"] == "a/b.safetensors"
    status, body = _get(host, "")
    assert node in body["nodes"]


def test_train_progress_history_is_bounded(host):
    training = host.module("nodes.host.training")
    node = "e2e-history-long"
    n = training.HISTORY_LIMIT * 3
    for step in range(1, n + 1):
        training.record_progress({"node": node, "run": "r", "step": step, "total": n, "loss": 0.1})
    events = training.train_progress(node)["events"]
    steps = [e["step"] for e in events]
    assert len(events) <= training.HISTORY_LIMIT and steps[0] == 1 and steps[-1] == n and steps == sorted(steps)
