"""Index builds: every candidate index version on ``models.control`` is built here, beside the index agent.

Registering an index version (kind ``index``) starts its build (:class:`streams.index.rebuild.IndexBuild`,
one consumer group per version) in the worker that owns Milvus; archiving it stops the build (the
collection stays until it is dropped). The production index's collection gets the Milvus alias
``chunks_<ns>_production`` (one ``alter_alias`` per switch) for readers outside the workers; workers
themselves search the collection their snapshot names (see ``streams.inference.service``), so a
request that embedded its query with one index's embedder searches that index's collection.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

import faust

from streams.index.rebuild import IndexBuild
from streams.index.spec import INDEX_MODEL
from streams.index.vectorstore import production_alias
from streams.kafka.avro import codec_from_settings
from streams.logs import get_logger
from streams.models.indexes import index_embedder, index_store, spec_of
from streams.models.lifecycle import control_check_from_settings
from streams.models.registry import Kind, ModelVersion, RegistryFollower, Stage
from streams.settings import Settings
from streams.telemetry.metrics import set_index_builds

log = get_logger(__name__)
BUILT_STAGES = frozenset({Stage.REGISTERED, Stage.QA, Stage.PRODUCTION})


def register_index_builds(app: faust.App, settings: Settings) -> None:
    """Declare the index builder on ``app`` (a worker that runs the index agent)."""
    codec = codec_from_settings(settings)
    builds: dict[str, tuple[IndexBuild, asyncio.Task[None]]] = {}
    wake = asyncio.Event()

    def on_change(version: ModelVersion | None, key: str) -> None:
        wake.set()

    follower = RegistryFollower(settings, control_check_from_settings(settings, codec), on_change)

    def open_build(version: ModelVersion) -> IndexBuild:
        # One embedding thread: the build runs in the background, production search keeps the cores.
        embedder = index_embedder(settings, version)
        return IndexBuild(settings, version.version, spec_of(version), embedder, index_store(settings, version), codec)

    def point_production_alias(version: ModelVersion) -> None:
        store = index_store(settings, version)
        before = store.point_alias(production_alias(settings.namespace))
        if before != store.collection:
            log.info(
                "index_alias_switched", alias=production_alias(settings.namespace), to=store.collection, before=before
            )

    pointed: dict[str, str] = {}  # the production version the alias was last pointed at

    async def reconcile() -> None:
        loop = asyncio.get_running_loop()
        wanted = {
            v.version: v
            for v in follower.registry.all(INDEX_MODEL)
            if v.kind is Kind.INDEX and v.stage in BUILT_STAGES and not spec_of(v).live
        }
        for version in [v for v in builds if v not in wanted]:
            _, task = builds.pop(version)
            task.cancel()
            log.info("index_build_stopped", version=version[:12])
        for version, record in wanted.items():
            if version in builds:
                continue
            try:
                build = await loop.run_in_executor(None, open_build, record)
            except Exception as error:  # noqa: BLE001 - retried on the next registry event or tick
                log.warning("index_build_not_started", version=version[:12], error=repr(error))
                continue
            builds[version] = (build, asyncio.create_task(build.run(), name=f"index-build-{version[:12]}"))
            log.info(
                "index_build_started",
                version=version[:12],
                collection=getattr(build.store, "collection", None),
                group=build.group,
            )
        production = follower.registry.production(INDEX_MODEL)
        if production is not None and production.version != pointed.get("version"):
            try:
                await loop.run_in_executor(None, point_production_alias, production)
                pointed["version"] = production.version  # once per switch, not every tick
            except Exception as error:  # noqa: BLE001 - the alias is for outside readers; retried next tick
                log.warning("index_alias_not_switched", error=repr(error))

    @app.task  # type: ignore[untyped-decorator]  # faust's decorators are untyped
    async def follow_index_versions() -> None:
        """Start and stop builds as index versions are registered and archived; report progress."""
        await follower.start()
        await follower.ready.wait()
        while True:
            wake.clear()
            await reconcile()
            set_index_builds(build.progress.as_dict() for build, _ in builds.values())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), 2.0)

    async def stop(*_: Any, **__: Any) -> None:
        for _build, running in builds.values():
            running.cancel()
        await follower.stop()

    app.on_before_shutdown.connect(cast(Any, stop))
