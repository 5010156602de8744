"""``diag-distill stub``: the loopback OpenAI-compatible test endpoint."""

from __future__ import annotations

import click


@click.command("stub")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on (keep it on loopback)")
@click.option("--port", type=click.IntRange(0, 65535), default=8099, show_default=True, help="0: any free port")
@click.option("--latency-ms", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="delay before every answer")
@click.option("--timeline", is_flag=True, help="keep every call's timing for GET /timeline")
def command(host: str, port: int, latency_ms: float, timeline: bool) -> None:
    """Serve a stub OpenAI-compatible endpoint that answers every step with valid, grounded JSON.

    Point an endpoint at it to try a configuration with no key:
    DIAG_API_1_BASE_URL=http://127.0.0.1:8099/v1 DIAG_API_1_KEY=stub DIAG_API_1_MODEL=stub-model.
    """
    from distill.bench.stub_server import serve

    serve(host, port, latency_ms, timeline)
