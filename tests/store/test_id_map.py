from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from sync.store import Connection, IdMap, Store


@pytest.fixture
def connections(store: Store) -> tuple[int, int]:
    with store.session() as s:
        kingdee = Connection(name="kingdee_prod", platform="kingdee")
        sap = Connection(name="sap_prod", platform="sap_b1")
        s.add_all([kingdee, sap])
        s.flush()
        ids = (kingdee.id, sap.id)
    with store.session() as s:
        s.add(IdMap(connection_id=ids[0], entity="item", canonical_id="SKU-1", external_id="100", external_code="M001"))
    return ids


def test_one_canonical_id_maps_to_one_external_id(store: Store, connections):
    kingdee, _ = connections
    # When the same canonical id is mapped to a second external id in the same connection
    # Then the database refuses it
    with pytest.raises(IntegrityError):
        with store.session() as s:
            s.add(IdMap(connection_id=kingdee, entity="item", canonical_id="SKU-1", external_id="101"))


def test_one_external_id_maps_to_one_canonical_id(store: Store, connections):
    kingdee, _ = connections
    # When a second canonical id claims the same external id in the same connection
    # Then the database refuses it
    with pytest.raises(IntegrityError):
        with store.session() as s:
            s.add(IdMap(connection_id=kingdee, entity="item", canonical_id="SKU-2", external_id="100"))


def test_the_same_ids_may_appear_in_other_connections_and_entities(store: Store, connections):
    kingdee, sap = connections
    # When the same ids are mapped for another connection and for another entity
    with store.session() as s:
        s.add(IdMap(connection_id=sap, entity="item", canonical_id="SKU-1", external_id="100"))
        s.add(IdMap(connection_id=kingdee, entity="warehouse", canonical_id="SKU-1", external_id="100"))
    # Then all three mappings exist
    with store.session() as s:
        assert len(s.scalars(select(IdMap)).all()) == 3
