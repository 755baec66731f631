"""A real OTLP trace receiver for tests: the OTLP TraceService over gRPC and OTLP/HTTP protobuf.

Why this exists:
    The OpenTelemetry Collector is a Go binary too heavy to build here; what our exporters must
    get right is the protocol, which ``opentelemetry-proto`` defines. This receiver serves that
    protocol as a Collector's ``otlp`` receiver does: ``TraceService/Export`` on a grpcio server
    (port 4317's role) and ``POST /v1/traces`` with ``application/x-protobuf`` (port 4318's role),
    answering ``ExportTraceServiceResponse``. It records each request with the headers (gRPC
    metadata) it came with, so tests can check service names, resource attributes and auth headers.

Usage:
    >>> with OtlpReceiver() as receiver:     # GRPC_PORT and HTTP_PORT on 127.0.0.1
    ...     ...  # run a process with OTEL_EXPORTER_OTLP_ENDPOINT=receiver.grpc_endpoint
    ...     receiver.spans()     # [(protocol, resource attributes, span), ...]
"""

from __future__ import annotations

import gzip
import threading
import zlib
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

# Near the test broker's port (LLMOPS_TEST_KAFKA_PORT, and its controller on the port after it).
GRPC_PORT, HTTP_PORT = 29195, 29196


@dataclass
class Received:
    """One export request as it reached the receiver."""

    protocol: str  # "grpc" or "http/protobuf"
    headers: dict[str, str]  # lower-case names (gRPC metadata or HTTP headers)
    request: trace_service_pb2.ExportTraceServiceRequest


def plain(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a Python value (strings, numbers, booleans, arrays)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [plain(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


def attributes(items: Any) -> dict[str, Any]:
    """OTLP ``KeyValue`` list as a dict."""
    return {item.key: plain(item.value) for item in items}


@dataclass
class OtlpReceiver:
    """Both OTLP transports on loopback ports; ``received`` grows as exporters send."""

    grpc_port: int = GRPC_PORT
    http_port: int = HTTP_PORT
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._grpc: grpc.Server | None = None
        self._http: ThreadingHTTPServer | None = None

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def record(self, protocol: str, headers: dict[str, str], request: Any) -> None:
        with self._lock:
            self.received.append(Received(protocol, headers, request))

    def spans(self) -> list[tuple[Received, dict[str, Any], Any]]:
        """(the request it came in, its resource attributes, the span) for every span received."""
        with self._lock:
            received = list(self.received)
        return [
            (item, attributes(resource_spans.resource.attributes), span)
            for item in received
            for resource_spans in item.request.resource_spans
            for scope in resource_spans.scope_spans
            for span in scope.spans
        ]

    def __enter__(self) -> OtlpReceiver:
        receiver = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
                headers = {key.lower(): value for key, value in context.invocation_metadata()}
                receiver.record("grpc", headers, request)
                return trace_service_pb2.ExportTraceServiceResponse()

        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self._grpc)
        if self._grpc.add_insecure_port(f"127.0.0.1:{self.grpc_port}") == 0:
            raise OSError(f"the OTLP gRPC receiver could not bind 127.0.0.1:{self.grpc_port}")
        self._grpc.start()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(404 if self.path != "/v1/traces" else 415)
                    return
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                receiver.record("http/protobuf", {k.lower(): v for k, v in self.headers.items()}, request)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._http = ThreadingHTTPServer(("127.0.0.1", self.http_port), Handler)
        threading.Thread(target=self._http.serve_forever, name="otlp-http-receiver", daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        if self._grpc is not None:
            self._grpc.stop(grace=None).wait()
