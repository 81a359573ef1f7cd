"""The table writer's changelog bytes are Faust's own: recovery and compaction read them as Faust
wrote them (a key written in other bytes would be another key to a compacted changelog)."""
import faust
import pytest

from faust.serializers import codecs

from streams.runtime.tables import TableWriter, encoder

VALUES = [
    [[1796553962.5, "-Qi_x"], [1796550000.0, "ab~c.d"]],  # a click history
    {"files": ["conversions_20261206_p000_000000000000-000000009999.csv"], "lines": {"Cab12": 7}, "more": False,
     "at": 1796553962.716},  # a taken order
    [[0, 41, {"impact ftp": "0123456789abcdef0123456789abcdef"}]],  # recorded cuts
    {"action_tracker_id": 4321, "currency": "EUR", "items": {"S-1": [2, "25.50"]}, "files": ["f.csv"],
     "first_offset": 3, "reported_at": "2026-12-06T10:00:00+00:00", "applied": {}, "changes": {}},
]


@pytest.mark.parametrize("store", ["memory://", "memory://batch-cuts"])
def test_the_writer_serializes_keys_and_values_as_faust_s_changelog_topic_does(store):
    app = faust.App("bytes", broker="kafka://127.0.0.1:1", store="memory://")
    table = app.Table("t", partitions=4, key_type=str, store=store)
    writer, topic = TableWriter(table), table.changelog_topic
    for key in ("O-1", "C\u00e9", "2"):
        assert writer._key_bytes(key) == topic.prepare_key(key, table.key_serializer)[0]
    for value in VALUES:
        assert writer._value_bytes(value) == topic.prepare_value(value, table.value_serializer)[0]


def test_a_float_orjson_writes_with_an_exponent_sign_reads_as_the_same_value():
    """The one difference from orjson's bytes (``1e16`` against ``1e+16``): the same number."""
    codec, value = codecs.get_codec("json"), {"big": [1e16, 1e300, -2.5e22], "small": 5e-324}
    assert encoder("json")(value) != codec.dumps(value)
    assert codec.loads(encoder("json")(value)) == value


def test_faust_s_json_codec_is_called_as_msgspec_and_any_other_codec_as_itself():
    assert encoder("json") != codecs.get_codec("json").dumps  # the short path, on this Faust
    assert encoder("raw") == codecs.get_codec("raw").dumps
    chained = codecs.get_codec("json") | codecs.get_codec("binary")
    codecs.register("json-binary-test", chained)
    assert encoder("json-binary-test") == chained.dumps
    assert encoder("json-binary-test")({"a": 1}) == chained.dumps({"a": 1})
