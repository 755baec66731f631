"""Answering inference requests: parse, screen, search / classify / rag, and say who answered.

Why this exists:
    The infer agent only wires Kafka to this module. Everything that decides an answer lives
    here as plain code that tests call directly: parsing JSON or Avro requests into a checked
    :class:`InferenceRequest` (or a rejection with a reason), prompt-injection screening, the
    three tasks, deadlines, and the latency breakdown every response carries.

Screening:
    Every request text is screened (:class:`InjectionClassifier`, or the regex rules when none is
    given) in the same worker-thread hop that embeds it, reusing the query vector when folding
    changed nothing. For ``rag`` each retrieved passage is screened too before it reaches the
    context, a generator or the answer (indirect injection): a passage scoring at or above
    ``chunk_at`` is withheld, and the response lists it under ``withheld`` with its verdict.

Models:
    :class:`ModelSet` is an immutable snapshot of what answers (the embedder, the index, the
    production classifiers, shadow candidates). The agent swaps the snapshot when the registry
    changes; a request keeps the snapshot it started with, so in-flight requests finish on the
    versions they began with.

Usage:
    >>> service = InferenceService(settings, models)
    >>> response = await service.answer(request, received_at_ms)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from streams.index.embed import Embedder
from streams.index.vectorstore import Hit, VectorStore
from streams.inference.generator import GeneratorClient
from streams.inference.injection import InjectionClassifier
from streams.inference.requests import InferenceRequest, RequestRejected
from streams.inference.safety import Verdict, screen
from streams.models.artifacts import DEFAULT_MAX_BYTES, verify_digest
from streams.models.classifier import OnnxClassifier, explain
from streams.models.registry import Kind, ModelVersion, Registry, RegistryError
from streams.records import now_ms
from streams.telemetry import genai
from streams.telemetry.tracing import model_call

DEFAULT_CLASSIFIER = "stdlib-topic"
INJECTION_SCREEN = "prompt-injection-screen"  # gen_ai.request.model of the injection classifier
CONTEXT_ONLY_NOTE = "context only: no generator configured (set LLMOPS_GENERATOR_URL to an OpenAI-compatible endpoint)"


# --- models ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedClassifier:
    """A registered classifier version with its ONNX session."""

    version: ModelVersion
    head: OnnxClassifier


@dataclass(frozen=True)
class ModelSet:
    """What answers right now: an immutable snapshot, swapped whole on registry changes."""

    embedder: Embedder
    store: VectorStore | None
    registry: Registry = field(default_factory=Registry)
    classifiers: Mapping[str, LoadedClassifier] = field(default_factory=dict)  # by version key
    default_classifier: str = DEFAULT_CLASSIFIER

    def embedder_ref(self) -> dict[str, str]:
        return {"name": self.embedder.name, "version": self.embedder.version, "stage": "production"}

    def classifier_for(self, request: InferenceRequest) -> LoadedClassifier:
        spec = request.model or self.default_classifier
        try:
            version = self.registry.resolve(spec)
        except RegistryError as error:
            raise RequestRejected("UNKNOWN_MODEL", str(error), request.request_id, request.client_id) from None
        loaded = self.classifiers.get(version.key)
        if loaded is None:
            raise RequestRejected(
                "UNKNOWN_MODEL",
                f"{version.short} is registered but not loadable here (stage {version.stage}, no inline artifact)",
                request.request_id,
                request.client_id,
            )
        return loaded

    def shadows_for(self, production: LoadedClassifier) -> list[LoadedClassifier]:
        return [
            self.classifiers[v.key] for v in self.registry.shadows(production.version.name) if v.key in self.classifiers
        ]


def load_classifiers(
    registry: Registry, previous: Mapping[str, LoadedClassifier], max_bytes: int = DEFAULT_MAX_BYTES
) -> dict[str, LoadedClassifier]:
    """ONNX sessions for every classifier version with an inline artifact; sessions are reused.

    Archived versions stay loaded (they are small) so that a pin or a rollback answers at once.
    A new session loads only bytes whose sha256 is the record's ``model.onnx`` digest, no larger
    than ``max_bytes`` and with no external data (:func:`streams.models.artifacts.check_onnx_bytes`).

    Raises:
        ControlRejected: an artifact fails those checks (the caller keeps the models it has).
    """
    loaded = {}
    for version in registry.all():
        if version.kind is Kind.CLASSIFIER and version.artifact:
            old = previous.get(version.key)
            if old is not None and old.version.artifact == version.artifact:
                head = old.head
            else:
                verify_digest("model.onnx", version.artifact, version.files)
                head = OnnxClassifier(version.artifact, version.labels, max_bytes=max_bytes)
            loaded[version.key] = LoadedClassifier(version, head)
    return loaded


# --- answering ---------------------------------------------------------------------------------


@dataclass
class Timer:
    """Milliseconds per stage of one request."""

    stages: dict[str, float] = field(
        default_factory=lambda: dict.fromkeys(("embed", "search", "classify", "generate", "screen"), 0.0)
    )

    def measure(self, stage: str, started: float) -> None:
        self.stages[stage] += (time.perf_counter() - started) * 1000


def base_response(
    request_id: str,
    client_id: str | None,
    task: str,
    status: str,
    *,
    error: str | None = None,
    tenant: str | None = None,
) -> dict[str, Any]:
    """A response record with every field set (the Avro schema's defaults spelled out)."""
    return {
        "request_id": request_id,
        "client_id": client_id,
        "task": task,
        "status": status,
        "error": error,
        "tenant": tenant,
        "hits": [],
        "label": None,
        "probabilities": {},
        "explanation": [],
        "explanation_method": None,
        "context": None,
        "answer": None,
        "note": None,
        "safety": {"verdict": "allow", "score": 0.0, "rules": []},
        "withheld": [],
        "models": [],
        "latency": {
            "queue_ms": 0.0,
            "embed_ms": 0.0,
            "search_ms": 0.0,
            "classify_ms": 0.0,
            "generate_ms": 0.0,
            "screen_ms": 0.0,
            "total_ms": 0.0,
        },
        "shadow_of": None,
        "agrees": None,
        "created_at_ms": now_ms(),
    }


def rejection_response(error: RequestRejected) -> dict[str, Any] | None:
    """The INVALID/UNAVAILABLE response for a rejected request, or None when it has no id to answer."""
    if error.request_id is None:
        return None
    status = "UNAVAILABLE" if error.reason == "UNKNOWN_MODEL" else "INVALID"
    detail = f"{error.reason}: {error.detail}"
    # A valid tenant is kept: the answer goes to that tenant's topic, where its client reads.
    return base_response(error.request_id, error.client_id, "unknown", status, error=detail, tenant=error.tenant)


def hit_dict(hit: Hit) -> dict[str, Any]:
    """A RetrievedChunk record (the tenant is the request's, so it is not repeated per hit)."""
    return {name: value for name, value in asdict(hit).items() if name != "tenant"}


def assemble_context(hits: list[Hit]) -> str:
    """Numbered passages, each citing its chunk, for a generator or a reader."""
    return "\n\n".join(
        f"[{n}] {hit.title or hit.doc_id} ({hit.chunk_id})\n{hit.snippet}" for n, hit in enumerate(hits, 1)
    )


class InferenceService:
    """Answers checked requests with one :class:`ModelSet` snapshot per request."""

    def __init__(
        self,
        models: ModelSet,
        *,
        block_at: float = 0.7,
        flag_at: float = 0.3,
        generator: GeneratorClient | None = None,
        run_blocking: Callable[..., Any] | None = None,
        injection: InjectionClassifier | None = None,
        chunk_at: float = 0.5,
    ) -> None:
        self.models = models
        self.block_at, self.flag_at = block_at, flag_at
        self.generator = generator
        self.injection = injection
        self.chunk_at = chunk_at
        self._run_blocking = run_blocking or _inline

    def swap(self, models: ModelSet) -> None:
        """Answer later requests with ``models``; requests already started keep theirs."""
        self.models = models

    def screen(self, request: InferenceRequest, vector: Any = None) -> Verdict:
        """The verdict on the request text (``vector``: its embedding, when already computed)."""
        if self.injection is None:
            return screen(request.text, self.block_at, self.flag_at)
        with self._screen_call(texts=1):
            return self.injection.screen(request.text, vector)

    def _screen_call(self, texts: int) -> Any:
        """The model-call span of the injection classifier over ``texts`` texts."""
        assert self.injection is not None
        return model_call(
            genai.CLASSIFY, INJECTION_SCREEN, response_model=f"{INJECTION_SCREEN}@{self.injection.version}", texts=texts
        )

    def screen_passages(self, hits: list[Hit]) -> tuple[list[Hit], list[dict[str, Any]]]:
        """(passages that may reach a generator, withheld passages with their verdicts)."""
        if not hits:
            return hits, []
        if self.injection is None:
            verdicts = [screen(hit.snippet, self.block_at, self.flag_at) for hit in hits]
        else:
            with self._screen_call(texts=len(hits)):
                verdicts = self.injection.screen_many([hit.snippet for hit in hits])
        kept, withheld = [], []
        for hit, verdict in zip(hits, verdicts, strict=True):
            if verdict.score >= self.chunk_at:
                withheld.append({"chunk_id": hit.chunk_id, "doc_id": hit.doc_id, **verdict.to_avro()})
            else:
                kept.append(hit)
        return kept, withheld

    async def answer(self, request: InferenceRequest, received_ms: int) -> tuple[dict[str, Any], Verdict]:
        """The response to ``request`` (read from Kafka at ``received_ms``) and its safety verdict."""
        models = self.models  # this request's snapshot
        started_ms = now_ms()
        response = base_response(request.request_id, request.client_id, request.task, "OK", tenant=request.tenant)
        timer = Timer()
        late = request.deadline_ms is not None and started_ms > request.deadline_ms
        loaded: LoadedClassifier | None = None
        rejected: RequestRejected | None = None
        try:
            if request.task == "classify":
                loaded = models.classifier_for(request)
            elif models.store is None:
                raise RequestRejected("NO_INDEX", "the vector index is not open in this worker", request.request_id)
        except RequestRejected as error:
            rejected = error
        if late:  # not answered either way: the cheap rule screen decides only the dead-letter reason
            verdict = screen(request.text, self.block_at, self.flag_at)
        else:
            # One hop to a worker thread for all the CPU work of a request (embed, screen, then
            # search or classify): every extra hand-off between the event loop and a thread costs latency.
            verdict = await self._run_blocking(
                self._compute, models, loaded, request, response, timer, rejected is None
            )
        response["safety"] = verdict.to_avro()
        if late:
            assert request.deadline_ms is not None
            response["status"] = "TIMEOUT"
            response["error"] = f"deadline passed {started_ms - request.deadline_ms} ms before work could start"
        elif verdict.blocked:
            response["status"] = "BLOCKED"
            response["error"] = f"prompt injection suspected ({verdict.reason()}); request not answered"
        elif rejected is not None:
            response["status"] = "UNAVAILABLE" if rejected.reason == "UNKNOWN_MODEL" else "INVALID"
            response["error"] = f"{rejected.reason}: {rejected.detail}"
        elif request.task == "rag":
            await self._generate(request, response, timer)
        latency = response["latency"]
        latency["queue_ms"] = float(max(0, started_ms - received_ms))
        for stage, ms in timer.stages.items():
            latency[f"{stage}_ms"] = round(ms, 3)
        return response, verdict

    def finish(self, response: dict[str, Any], received_ms: int) -> None:
        """Stamp the total latency just before the response is produced."""
        response["created_at_ms"] = now_ms()
        response["latency"]["total_ms"] = float(max(0, response["created_at_ms"] - received_ms))

    async def _generate(self, request: InferenceRequest, response: dict[str, Any], timer: Timer) -> None:
        """rag after retrieval: a note when there is nothing to answer from, else the generator's answer."""
        withheld = response["withheld"]
        if not response["hits"]:
            response["note"] = (
                f"every retrieved chunk was withheld as a suspected prompt injection "
                f"({', '.join(w['chunk_id'] for w in withheld)}); nothing to answer from"
                if withheld
                else "no indexed chunk matches this tenant; nothing to answer from"
            )
            return
        notes = []
        if withheld:
            notes.append(
                "withheld as suspected prompt injections: "
                + "; ".join(
                    f"{w['chunk_id']} (score {w['score']:.2f}, rules: {', '.join(w['rules']) or 'none'})"
                    for w in withheld
                )
            )
        if self.generator is None:
            notes.append(CONTEXT_ONLY_NOTE)
        else:
            started = time.perf_counter()
            response["answer"] = await self.generator.generate(request.text, response["context"])
            timer.measure("generate", started)
            response["models"].append({"name": "generator", "version": self.generator.model, "stage": "external"})
        response["note"] = "; ".join(notes) or None

    def _compute(
        self,
        models: ModelSet,
        loaded: LoadedClassifier | None,
        request: InferenceRequest,
        response: dict[str, Any],
        timer: Timer,
        work: bool,
    ) -> Verdict:
        """The blocking part of a request, run in one worker thread: embed, screen, then the task if ``work``."""
        started = time.perf_counter()
        vectors = embed_query(models.embedder, request.text)
        timer.measure("embed", started)
        started = time.perf_counter()
        verdict = self.screen(request, vectors[0])
        timer.measure("screen", started)
        if not work or verdict.blocked:
            return verdict
        response["models"].append(models.embedder_ref())
        if loaded is None:
            assert models.store is not None
            started = time.perf_counter()
            hits = models.store.search(vectors[0].tolist(), request.top_k, request.tenant)
            timer.measure("search", started)
            if request.task == "rag":
                started = time.perf_counter()
                hits, response["withheld"] = self.screen_passages(hits)
                timer.measure("screen", started)
                response["context"] = assemble_context(hits)
            response["hits"] = [hit_dict(hit) for hit in hits]
            return verdict
        started = time.perf_counter()
        with classify_call(loaded):
            response["label"], response["probabilities"] = loaded.head.predict(vectors)[0]
        if request.explain:
            words, method = explain(loaded.head, models.embedder, request.text)
            response["explanation"] = [{"token": token, "weight": weight} for token, weight in words]
            response["explanation_method"] = method
        timer.measure("classify", started)
        response["models"].append(
            {"name": loaded.version.name, "version": loaded.version.version, "stage": loaded.version.stage.value}
        )
        return verdict

    async def shadow_answers(self, request: InferenceRequest, production: dict[str, Any]) -> list[dict[str, Any]]:
        """Answers of QA candidates that shadow the production classifier that answered ``production``."""
        if request.task != "classify" or production["status"] != "OK" or (request.model and "@" in request.model):
            return []
        models = self.models
        try:
            loaded = models.classifier_for(request)
        except RequestRejected:
            return []
        candidates = models.shadows_for(loaded)
        if not candidates:
            return []
        vectors = await self._run_blocking(embed_query, models.embedder, request.text)
        answers = []
        for candidate in candidates:
            started = time.perf_counter()
            with classify_call(candidate, shadow_of=loaded.version.version):
                label, probabilities = candidate.head.predict(vectors)[0]
            shadow = base_response(request.request_id, request.client_id, request.task, "OK", tenant=request.tenant)
            shadow.update(
                label=label,
                probabilities=probabilities,
                safety=production["safety"],
                models=[
                    models.embedder_ref(),
                    {"name": candidate.version.name, "version": candidate.version.version, "stage": "qa"},
                ],
                shadow_of=loaded.version.version,
                agrees=label == production["label"],
            )
            shadow["latency"]["classify_ms"] = (time.perf_counter() - started) * 1000
            answers.append(shadow)
        return answers


def embed_query(embedder: Embedder, text: str) -> Any:
    """The embedding of one request text, in a GenAI ``embeddings`` model-call span."""
    with model_call(genai.EMBEDDINGS, embedder.name, response_model=f"{embedder.name}@{embedder.version}"):
        return embedder.embed([text])


def classify_call(loaded: LoadedClassifier, **attributes: Any) -> Any:
    """The model-call span of one classifier head (a GenAI ``classify`` operation)."""
    version = loaded.version
    return model_call(
        genai.CLASSIFY,
        version.name,
        response_model=f"{version.name}@{version.version}",
        stage=version.stage.value,
        **attributes,
    )


async def _inline(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)
