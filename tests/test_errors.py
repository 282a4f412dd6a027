"""Every error storygraph raises on purpose is a StorygraphError of one kind, importable where it always was."""

from __future__ import annotations

import importlib

import pytest

from storygraph.errors import Conflict, InvalidInput, NotFound, Refused, StorygraphError, Unavailable

KINDS = {
    "storygraph.graphdb.store:StoreError": StorygraphError,
    "storygraph.graphdb.store:RecordNotFound": NotFound,
    "storygraph.graphdb.store:DuplicateRecord": Conflict,
    "storygraph.graphdb.store:StoreInputError": InvalidInput,
    "storygraph.graphdb.store:GraphUnavailable": Unavailable,
    "storygraph.graphdb.store:ReadOnlyViolation": Refused,
    "storygraph.graphdb.store:QueryError": InvalidInput,
    "storygraph.graphdb:StoreError": StorygraphError,
    "storygraph.graphdb:ReadOnlyViolation": Refused,
    "storygraph.graphdb:QueryError": InvalidInput,
    "storygraph.config:ConfigError": InvalidInput,
    "storygraph.storyfile:StoryFileError": InvalidInput,
    "storygraph.timeline:TimelineError": InvalidInput,
    "storygraph.engine.engine:EngineError": StorygraphError,
    "storygraph.engine.engine:SceneNotFound": NotFound,
    "storygraph.engine.engine:SceneExists": Conflict,
    "storygraph.engine.engine:NotReady": Conflict,
    "storygraph.engine.engine:GenerationBusy": Conflict,
    "storygraph.engine.engine:InvalidRequest": InvalidInput,
    "storygraph.engine.engine:IndexNotSaved": Unavailable,
    "storygraph.rules:RuleError": InvalidInput,
    "storygraph.engine.encoders:ModelNotFound": Unavailable,
    "storygraph.engine.generators:GenerationFailed": StorygraphError,
    "storygraph.webviz.worker:JobConflict": Conflict,
    "storygraph.webviz.api:BadRequest": InvalidInput,
    "storygraph.webviz.security:MediaPathRefused": Refused,
    "storygraph.webviz.security:MediaNotFound": NotFound,
    "storygraph.webviz:RemoteBindRefused": InvalidInput,
}


@pytest.mark.parametrize("where", sorted(KINDS))
def test_each_error_has_its_kind(where):
    module, name = where.split(":")
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, KINDS[where]) and issubclass(cls, StorygraphError)


def test_kinds_carry_exit_codes_and_statuses():
    assert (StorygraphError.exit_code, StorygraphError.http_status) == (1, 500)
    assert [(k.exit_code, k.http_status) for k in (NotFound, Conflict, InvalidInput, Refused, Unavailable)] == [
        (1, 404), (1, 409), (2, 400), (3, 403), (1, 503)]
    from storygraph.graphdb.store import RecordNotFound, StoreError

    e = RecordNotFound("no scene 'x'")
    assert isinstance(e, StoreError) and isinstance(e, RuntimeError) and e.http_status == 404


def test_a_duplicate_key_from_the_database_is_a_conflict(store):
    """The backend's own error (a LadybugDB RuntimeError, a Neo4j ConstraintError) never escapes as such."""
    from storygraph.domain import Story
    from storygraph.graphdb.store import DuplicateRecord

    store.load_story(Story("dup", "Dup"))
    with pytest.raises(DuplicateRecord) as info:
        store.query("CREATE (:Story {id: $id})", {"id": "dup"}, read_only=False)
    assert info.value.http_status == 409 and not type(info.value).__module__.startswith(("ladybug", "neo4j"))
