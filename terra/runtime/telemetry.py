"""OpenTelemetry tracing: off by default, OTLP (or console) by setting.

FastStream's NATS middleware carries the trace context in message headers and FastAPI's
instrumentation starts it at the HTTP request, so one trace id runs from the REST call
through NATS to the worker and back to the WebSocket push.
"""

from __future__ import annotations

from opentelemetry import metrics, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from terra.settings import RuntimeSettings, TraceExporter


def _exporter(settings: RuntimeSettings) -> SpanExporter | None:
    if settings.trace_exporter is TraceExporter.OTLP:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otlp_endpoint
        return OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces" if endpoint else None)
    if settings.trace_exporter is TraceExporter.CONSOLE:
        return ConsoleSpanExporter()
    return None


def setup_tracing(
    settings: RuntimeSettings, service_name: str, exporter: SpanExporter | None = None
) -> TracerProvider:
    """Install tracer and meter providers for this process. `exporter` overrides the
    settings' span exporter (tests). Metrics are exported only with OTLP."""
    resource = Resource.create({"service.name": service_name})
    provider = TracerProvider(resource=resource)
    exporter = exporter or _exporter(settings)
    if exporter is None:
        return provider  # not installed: the API's no-op tracer costs next to nothing
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if settings.trace_exporter is TraceExporter.OTLP:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        endpoint = settings.otlp_endpoint
        reader = PeriodicExportingMetricReader(OTLPMetricExporter(
            endpoint=f"{endpoint.rstrip('/')}/v1/metrics" if endpoint else None))
        metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))
    return provider


def flush_spans(timeout_s: float = 5.0) -> None:
    """Export the spans still buffered: a process that stops on a signal would lose its
    last batch (no exit handlers run after the signal is re-raised)."""
    provider = trace.get_tracer_provider()
    if hasattr(provider, "force_flush"):
        provider.force_flush(int(timeout_s * 1000))


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
