"""GET /loralab/blocks is registered on ComfyUI's server when the pack loads and answers the editor."""
import json


def _get(host, query: str):
    from aiohttp.test_utils import make_mocked_request  # ComfyUI's dependency, not the engine's
    route = next(r for r in host.server.routes if getattr(r, "path", None) == "/loralab/blocks" and r.method == "GET")
    response = host.loop.run_until_complete(route.handler(make_mocked_request("GET", "/loralab/blocks" + query)))
    return response.status, json.loads(response.body)


def test_blocks_route_serves_the_catalog(host):
    catalog = host.module("loralab.blocks.catalog")
    status, body = _get(host, "?arch=flux")
    assert status == 200
    assert body == json.loads(json.dumps(catalog.block_catalog("flux")))
    assert body["blocks"][:3] == ["CLIP", "T5", "IN"]


def test_blocks_route_lists_archs_and_refuses_unknown_ones(host):
    status, body = _get(host, "")
    assert status == 200
    assert [a["id"] for a in body["archs"]] == list(host.module("loralab.layouts.archs").ARCHS)
    assert {"sd1", "sdxl", "flux"} <= {a["id"] for a in body["archs"]}
    status, body = _get(host, "?arch=%3Cscript%3E")
    assert status == 404
    assert "unknown architecture '<script>'" in body["error"]
