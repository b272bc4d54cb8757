"""/docs and /redoc work offline (assets served by ingest, no CDN); the OpenAPI document lists
the 400 the API answers for bad input, never FastAPI's default 422."""

from __future__ import annotations

import re

import pytest

from .harness import Harness

pytestmark = pytest.mark.unit

# src= / href= / url(...) pointing at another host, or a protocol-relative URL
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["'](?:https?:)?//|url\(\s*["']?(?:https?:)?//""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_docs_reference_no_external_host_and_their_assets_answer(h: Harness, page: str) -> None:
    r = h.client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not EXTERNAL.search(r.text), r.text
    assert "cdn" not in r.text.lower() and "googleapis" not in r.text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", r.text)
    assert assets, r.text
    for asset in assets:
        assert asset.startswith("/docs-assets/"), asset
        answer = h.client.get(asset)
        assert answer.status_code == 200, asset
        assert len(answer.content) > 1000, asset
    assert "/openapi.json" in r.text


def test_swagger_ui_bundle_reads_openapi_3_1(h: Harness) -> None:
    """FastAPI writes OpenAPI 3.1; Swagger UI before 5 renders it as an error page."""
    assert h.client.get("/openapi.json").json()["openapi"].startswith("3.1")
    bundle = h.client.get("/docs-assets/swagger-ui-bundle.js").text
    assert "SwaggerUIBundle" in bundle and "3.1" in bundle


def test_openapi_lists_400_with_the_error_body_and_never_422(h: Harness) -> None:
    spec = h.client.get("/openapi.json").json()
    operations = [
        (path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()
    ]
    assert operations
    for path, method, op in operations:
        assert "422" not in op["responses"], (method, path)
        has_input = op.get("parameters") or op.get("requestBody")
        if has_input and path not in ("/healthz", "/readyz", "/metrics"):
            assert "400" in op["responses"], (method, path)
            schema = op["responses"]["400"]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas


def test_the_400_documented_is_what_a_bad_body_gets(h: Harness) -> None:
    r = h.client.post("/applications", json={"name": "x"}, headers=h.alice.control)
    assert r.status_code == 400 and set(r.json()) == {"error", "message"}


def test_the_signing_secret_points_to_the_verification_guide(h: Harness) -> None:
    schemas = h.client.get("/openapi.json").json()["components"]["schemas"]
    for model in ("AppCreated", "RotatedSecret"):
        doc = schemas[model]["properties"]["signingSecret"]["description"]
        assert "whsec_" in doc and "UTF-8" in doc and "docs/WEBHOOKS.md" in doc, doc
