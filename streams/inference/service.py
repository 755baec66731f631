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
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from streams.index.embed import Embedder
from streams.index.retrieval import DocumentHit, RrfRanker, SearchStore, retrieve
from streams.index.spec import INDEX_MODEL
from streams.index.vectorstore import Hit
from streams.inference.answer import Answer, ExtractiveAnswerer, check_grounding, citations_for
from streams.inference.generator import GenerationResult, GeneratorClient
from streams.inference.injection import InjectionClassifier
from streams.inference.requests import InferenceRequest, RequestRejected
from streams.inference.safety import Verdict, screen
from streams.models.artifacts import DEFAULT_MAX_BYTES, verify_digest
from streams.models.classifier import OnnxClassifier, explain
from streams.models.ranker import Answerability, OnnxRanker
from streams.models.registry import Kind, ModelVersion, Registry, RegistryError, Stage
from streams.records import now_ms
from streams.telemetry import genai
from streams.telemetry.tracing import model_call

DEFAULT_CLASSIFIER = "stdlib-topic"
DEFAULT_RANKER = "retrieval-ranker"
UNCALIBRATED_NOTE = (
    "no abstention: the threshold is calibrated for the learned ranker's scores "
    "(ask with retrieval=ranked once a ranker is in production: `llmops models train-ranker`)"
)
INJECTION_SCREEN = "prompt-injection-screen"  # gen_ai.request.model of the injection classifier
PartialSink = Callable[[dict[str, Any]], None]  # takes each partial reply of a streamed answer (sends it)


# --- models ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedClassifier:
    """A registered classifier version with its ONNX session."""

    version: ModelVersion
    head: OnnxClassifier


@dataclass(frozen=True)
class LoadedRanker:
    """The production ranker version, its ONNX session, and the abstention threshold calibrated with it."""

    version: ModelVersion
    head: OnnxRanker
    abstain_below: float
    answerability: Answerability | None = None

    def confidence(self, documents: list[DocumentHit]) -> float:
        """The answerability logit of the top document (-inf when there is none)."""
        if not documents or self.answerability is None:
            return float("-inf")
        return self.answerability.logit({"score": documents[0].score, **documents[0].features})


@dataclass(frozen=True)
class LoadedIndex:
    """An index version with the embedder that built it and its open collection.

    A search embeds its query with ``embedder`` and searches ``store``, both from one snapshot: a
    query never meets vectors of another embedder, whatever switches meanwhile.
    """

    version: ModelVersion | None  # None: the live collection, before any index version was registered
    embedder: Embedder
    store: SearchStore | None

    def ref(self) -> dict[str, str] | None:
        if self.version is None:
            return None
        return {"name": self.version.name, "version": self.version.version, "stage": self.version.stage.value}


@dataclass(frozen=True)
class ModelSet:
    """What answers right now: an immutable snapshot, swapped whole on registry changes."""

    embedder: Embedder
    store: SearchStore | None
    registry: Registry = field(default_factory=Registry)
    classifiers: Mapping[str, LoadedClassifier] = field(default_factory=dict)  # by version key
    default_classifier: str = DEFAULT_CLASSIFIER
    ranker: LoadedRanker | None = None
    index: LoadedIndex | None = None  # the production index version (None: ``embedder`` and ``store``)
    indexes: Mapping[str, LoadedIndex] = field(default_factory=dict)  # every loaded index version, by key

    def embedder_ref(self, embedder: Embedder | None = None) -> dict[str, str]:
        embedder = embedder or self.embedder
        return {"name": embedder.name, "version": embedder.version, "stage": "production"}

    def index_for(self, request: InferenceRequest) -> LoadedIndex:
        """The index a search or rag request reads: the one it pins (``model``: ``chunks@VERSION``) or production.

        Raises:
            RequestRejected: UNKNOWN_MODEL for a pinned version that is not loaded, NO_INDEX without one.
        """
        if request.model and request.model.partition("@")[0] == INDEX_MODEL:
            try:
                version = self.registry.resolve(request.model)
            except RegistryError as error:
                raise RequestRejected("UNKNOWN_MODEL", str(error), request.request_id, request.client_id) from None
            pinned = self.indexes.get(version.key)
            if pinned is None or pinned.store is None:
                raise RequestRejected(
                    "UNKNOWN_MODEL",
                    f"{version.short} is {version.stage} and not open in this worker",
                    request.request_id,
                    request.client_id,
                )
            return pinned
        index = self.index or LoadedIndex(None, self.embedder, self.store)
        if index.store is None:
            raise RequestRejected("NO_INDEX", "the vector index is not open in this worker", request.request_id)
        return index

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


def load_ranker(
    registry: Registry,
    previous: LoadedRanker | None,
    embedder_version: str,
    name: str = DEFAULT_RANKER,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> LoadedRanker | None:
    """The production version of ranker ``name`` trained for this embedder, or None.

    A ranker scores features that include the embedder's cosines, so one trained for another
    embedder is not loaded (search then orders candidates by RRF).
    """
    version = registry.production(name)
    if version is None or version.kind is not Kind.RANKER or not version.artifact:
        return None
    if version.embedder_version and version.embedder_version != embedder_version:
        return None
    if previous is not None and previous.version.key == version.key:
        return previous
    verify_digest("model.onnx", version.artifact, version.files)
    head = OnnxRanker(version.artifact, name=version.name, version=version.version, max_bytes=max_bytes)
    threshold = float(version.metrics.get("abstain_below", float("-inf")))
    return LoadedRanker(version, head, threshold, Answerability.from_metrics(version.metrics))


def load_indexes(
    registry: Registry, previous: Mapping[str, LoadedIndex], open_index: Callable[[ModelVersion], LoadedIndex]
) -> tuple[LoadedIndex | None, dict[str, LoadedIndex]]:
    """(the production index, every index version not archived), reusing what ``previous`` has open."""
    loaded = {}
    for version in registry.all(INDEX_MODEL):
        if version.kind is Kind.INDEX and version.stage is not Stage.ARCHIVED:
            old = previous.get(version.key)
            loaded[version.key] = replace(old, version=version) if old is not None else open_index(version)
    production = registry.production(INDEX_MODEL)
    return (loaded.get(production.key) if production is not None else None), loaded


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
        "retrieval": None,
        "citations": [],
        "grounded": None,
        "unsupported": [],
        "abstained": False,
        "confidence": None,
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
        "final": True,
        "sequence": 0,
        "delta": None,
        "input_tokens": None,
        "output_tokens": None,
    }


def partial_response(request: InferenceRequest, sequence: int, delta: str, model: str) -> dict[str, Any]:
    """A partial reply of a streamed rag answer: only the new text (no answer so far, no context, no hits).

    Each reply carries its delta alone, so a streamed answer costs its length once on the topic,
    not once per token; the final reply holds the whole answer.
    """
    partial = base_response(request.request_id, request.client_id, request.task, "OK", tenant=request.tenant)
    partial.update(
        final=False,
        sequence=sequence,
        delta=delta,
        models=[{"name": "generator", "version": model, "stage": "external"}],
    )
    return partial


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
    record = {name: value for name, value in asdict(hit).items() if name not in ("tenant", "text")}
    record.update(evidence=[], features={}, attributions={})
    return record


def document_dict(document: DocumentHit, explain: bool) -> dict[str, Any]:
    """A RetrievedChunk record for a document: its best chunk, its evidence, and (explain) why."""
    record = hit_dict(document.best)
    record["score"] = document.score
    record["evidence"] = [
        {"chunk_id": hit.chunk_id, "score": hit.score, "snippet": hit.snippet} for hit in document.evidence
    ]
    if explain:
        record["features"] = dict(document.features)
        record["attributions"] = dict(document.attributions)
    return record


def answer_fields(answer: Answer) -> dict[str, Any]:
    """The response fields of a rag answer."""
    return {
        "answer": answer.text,
        "citations": [
            {"n": c.n, "chunk_id": c.chunk_id, "doc_id": c.doc_id, "title": c.title} for c in answer.citations
        ],
        "grounded": answer.grounded,
        "unsupported": [s.text for s in answer.sentences if not s.supported],
        "abstained": answer.abstained,
        "confidence": answer.confidence if answer.confidence != float("-inf") else None,
    }


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

    def screen_passages(
        self, hits: list[Hit], store: SearchStore | None = None
    ) -> tuple[list[Hit], list[dict[str, Any]]]:
        """(passages that may reach a generator, withheld passages with their verdicts).

        ``store``: where the passages' stored vectors are read, so that the classifier does not
        embed again what the index embedded.
        """
        if not hits:
            return hits, []
        texts = [hit.text or hit.snippet for hit in hits]
        if self.injection is None:
            verdicts = [screen(text, self.block_at, self.flag_at) for text in texts]
        else:
            new = self.injection.unscreened(texts)  # the classifier remembers the verdicts of the others
            if new:
                with self._screen_call(texts=len(new)):
                    self.injection.screen_many(new, passage_vectors(hits, new, store))
            verdicts = self.injection.screen_many(texts)
        kept, withheld = [], []
        for hit, verdict in zip(hits, verdicts, strict=True):
            if verdict.score >= self.chunk_at:
                withheld.append({"chunk_id": hit.chunk_id, "doc_id": hit.doc_id, **verdict.to_avro()})
            else:
                kept.append(hit)
        return kept, withheld

    def screen_documents(
        self, documents: list[DocumentHit], store: SearchStore | None = None
    ) -> tuple[list[DocumentHit], list[dict[str, Any]]]:
        """Documents keeping only evidence that passed screening (and only documents with some left)."""
        kept_hits, withheld = self.screen_passages([hit for doc in documents for hit in doc.evidence], store)
        kept_ids = {hit.chunk_id for hit in kept_hits}
        screened = []
        for document in documents:
            evidence = tuple(hit for hit in document.evidence if hit.chunk_id in kept_ids)
            if evidence:
                screened.append(replace(document, evidence=evidence))
        return screened, withheld

    async def answer(
        self, request: InferenceRequest, received_ms: int, on_partial: PartialSink | None = None
    ) -> tuple[dict[str, Any], Verdict]:
        """The response to ``request`` (read from Kafka at ``received_ms``) and its safety verdict.

        A ``rag`` request with ``stream`` answered by a generator hands each partial reply to
        ``on_partial`` as its tokens arrive (the agent sends them); the returned response is the final one.
        """
        models = self.models  # this request's snapshot
        started_ms = now_ms()
        response = base_response(request.request_id, request.client_id, request.task, "OK", tenant=request.tenant)
        timer = Timer()
        late = request.deadline_ms is not None and started_ms > request.deadline_ms
        loaded: LoadedClassifier | None = None
        index: LoadedIndex | None = None
        rejected: RequestRejected | None = None
        try:
            if request.task == "classify":
                loaded = models.classifier_for(request)
            else:
                index = models.index_for(request)
        except RequestRejected as error:
            rejected = error
        documents: list[DocumentHit] = []
        if late:  # not answered either way: the cheap rule screen decides only the dead-letter reason
            verdict = screen(request.text, self.block_at, self.flag_at)
        else:
            # One hop to a worker thread for all the CPU work of a request (embed, screen, then
            # search or classify): every extra hand-off between the event loop and a thread costs latency.
            verdict, documents = await self._run_blocking(
                self._compute, models, loaded, index, request, response, timer, rejected is None
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
            await self._generate(request, response, timer, documents, on_partial)
        latency = response["latency"]
        latency["queue_ms"] = float(max(0, started_ms - received_ms))
        for stage, ms in timer.stages.items():
            latency[f"{stage}_ms"] = round(ms, 3)
        return response, verdict

    def finish(self, response: dict[str, Any], received_ms: int) -> None:
        """Stamp the total latency just before the response is produced."""
        response["created_at_ms"] = now_ms()
        response["latency"]["total_ms"] = float(max(0, response["created_at_ms"] - received_ms))

    async def _generate(
        self,
        request: InferenceRequest,
        response: dict[str, Any],
        timer: Timer,
        documents: list[DocumentHit],
        on_partial: PartialSink | None = None,
    ) -> None:
        """rag after retrieval: the generator's answer, checked for groundedness; notes on what was withheld.

        Without a generator the extractive answer was already made beside the search. The generator
        is awaited, never run here: its tokens come from another process (the local server or a
        hosted endpoint) over async HTTP, and the groundedness check runs on the worker threads, so
        the event loop keeps answering search and classify requests meanwhile.
        """
        withheld = response["withheld"]
        notes = []
        if not documents:
            notes.append(
                f"every retrieved chunk was withheld as a suspected prompt injection "
                f"({', '.join(w['chunk_id'] for w in withheld)}); nothing to answer from"
                if withheld
                else "no indexed chunk matches this tenant; nothing to answer from"
            )
        elif withheld:
            notes.append(
                "withheld as suspected prompt injections: "
                + "; ".join(
                    f"{w['chunk_id']} (score {w['score']:.2f}, rules: {', '.join(w['rules']) or 'none'})"
                    for w in withheld
                )
            )
        if self.generator is not None and documents:
            started = time.perf_counter()
            if request.stream and on_partial is not None:
                result, response["sequence"] = await self._stream(request, response["context"], on_partial)
            else:
                result = await self.generator.complete(request.text, response["context"])
            timer.measure("generate", started)
            text = result.text
            response["input_tokens"], response["output_tokens"] = result.input_tokens, result.output_tokens
            citations, passages = citations_for(documents)
            sentences, grounded = await self._run_blocking(check_grounding, text, passages)
            cited = {n for sentence in sentences for n in sentence.cited}
            answer = Answer(
                text,
                tuple(c for c in citations if c.n in cited),
                grounded,
                False,
                float("-inf"),
                sentences,
                "generator",
            )
            response.update(answer_fields(answer))
            response["models"].append({"name": "generator", "version": self.generator.model, "stage": "external"})
            if answer.grounded != "true":
                notes.append(f"{sum(not s.supported for s in sentences)} sentence(s) not supported by a cited passage")
        if response["note"]:
            notes.append(response["note"])
        response["note"] = "; ".join(notes) or None

    async def _stream(
        self, request: InferenceRequest, context: str, on_partial: PartialSink
    ) -> tuple[GenerationResult, int]:
        """The generator's answer streamed: one partial reply per delta; (result, partial replies sent)."""
        assert self.generator is not None
        answer = self.generator.stream(request.text, context)
        sequence = 0
        async for delta in answer:
            on_partial(partial_response(request, sequence, delta, self.generator.model))
            sequence += 1
        assert answer.result is not None, "set when the stream ends"
        return answer.result, sequence

    def _compute(
        self,
        models: ModelSet,
        loaded: LoadedClassifier | None,
        index: LoadedIndex | None,
        request: InferenceRequest,
        response: dict[str, Any],
        timer: Timer,
        work: bool,
    ) -> tuple[Verdict, list[DocumentHit]]:
        """The blocking part of a request, run in one worker thread: embed, screen, then the task if ``work``.

        Returns the verdict and, for rag, the screened documents a generator may answer from.
        """
        started = time.perf_counter()
        vectors = embed_query(models.embedder, request.text)
        timer.measure("embed", started)
        started = time.perf_counter()
        verdict = self.screen(request, vectors[0])
        timer.measure("screen", started)
        if not work or verdict.blocked:
            return verdict, []
        if loaded is not None:
            response["models"].append(models.embedder_ref())
            self._classify(models, loaded, request, response, timer, vectors)
            return verdict, []
        assert index is not None and index.store is not None
        # The query is embedded by the embedder of the index it searches (the screen's vector when the same).
        if index.embedder.version != models.embedder.version:
            started = time.perf_counter()
            vectors = embed_query(index.embedder, request.text)
            timer.measure("embed", started)
        response["models"].append(models.embedder_ref(index.embedder))
        if (index_ref := index.ref()) is not None:
            response["models"].append(index_ref)
        started = time.perf_counter()
        ranker = models.ranker
        if ranker is not None and ranker.version.embedder_version not in (None, index.embedder.version):
            ranker = None  # its features are cosines of another embedder: RRF orders this index's candidates
        ranker_name = ranker.version.name if ranker else RrfRanker.name
        ranker_ref = f"{ranker.version.name}@{ranker.version.version}" if ranker else "rrf@builtin"
        with model_call(genai.RERANK, ranker_name, response_model=ranker_ref, retrieval=request.retrieval):
            found = retrieve(
                index.store,
                vectors[0].tolist(),
                request.text,
                top_k=request.top_k,
                tenant=request.tenant,
                mode=request.retrieval,
                ranker=ranker.head if ranker else None,
                chunks=request.chunks and request.task == "search",
            )
        timer.measure("search", started)
        response["retrieval"] = found.mode
        if found.mode == "ranked":
            ref = ranker.version if ranker else None
            response["models"].append(
                {"name": ref.name, "version": ref.version, "stage": ref.stage.value}
                if ref
                else {"name": RrfRanker.name, "version": RrfRanker.version, "stage": "builtin"}
            )
        if found.chunks:
            response["hits"] = [hit_dict(hit) for hit in found.chunks]
            return verdict, []
        documents = found.documents
        if request.task == "rag":
            started = time.perf_counter()
            # Stored vectors of the index searched, when its embedder is the one the classifier reads.
            same_embedder = index.embedder.version == models.embedder.version
            documents, response["withheld"] = self.screen_documents(documents, index.store if same_embedder else None)
            timer.measure("screen", started)
            response["context"] = assemble_context([hit for doc in documents for hit in doc.evidence])
            if self.generator is None and documents:
                started = time.perf_counter()
                calibrated = ranker is not None and ranker.answerability is not None and found.mode == "ranked"
                if ranker is not None and calibrated:
                    answerer, confidence = ExtractiveAnswerer(ranker.abstain_below), ranker.confidence(documents)
                else:
                    answerer, confidence = ExtractiveAnswerer(float("-inf")), float("-inf")
                with model_call(
                    genai.EXTRACT, answerer.name, response_model=f"{answerer.name}@{answerer.version}"
                ) as span:
                    answer = answerer.answer(request.text, documents, confidence)
                    span.set_attribute("llmops.rag.grounded", answer.grounded)
                    span.set_attribute("llmops.rag.abstained", answer.abstained)
                response.update(answer_fields(answer))
                response["models"].append({"name": answerer.name, "version": answerer.version, "stage": "builtin"})
                if not calibrated:
                    response["note"] = UNCALIBRATED_NOTE
                timer.measure("generate", started)
        response["hits"] = [document_dict(doc, request.explain) for doc in documents]
        return verdict, documents

    def _classify(
        self,
        models: ModelSet,
        loaded: LoadedClassifier,
        request: InferenceRequest,
        response: dict[str, Any],
        timer: Timer,
        vectors: Any,
    ) -> None:
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


def passage_vectors(hits: list[Hit], texts: list[str], store: SearchStore | None) -> list[Any] | None:
    """The index's vector of each of ``texts`` (the full texts of ``hits``), None where it has none."""
    if store is None:
        return None
    wanted = set(texts)
    ids = {hit.text: hit.chunk_id for hit in hits if hit.text in wanted}
    found = store.chunk_vectors(list(dict.fromkeys(ids.values())))
    return [found.get(ids.get(text, "")) for text in texts]


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
