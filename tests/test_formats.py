"""The source formats' registry as data (steps.shared.formats) against the readers it names."""

from __future__ import annotations

from steps.ingest.sources import FORMATS as SPECS
from steps.shared.formats import ALIASES, FORMATS, source_formats


def test_every_name_a_reader_answers_to_is_a_source_format_the_config_takes():
    from steps.shared.config.model import TableConfig

    assert set(ALIASES.values()) <= set(FORMATS)
    taken = source_formats()
    for name, spec in SPECS.items():
        assert set(spec.extensions.values()) <= set(taken), name
        assert set(spec.alias_defaults) <= set(taken), name
    for value in taken:
        assert TableConfig(table_name="t", mapping_file="m.csv", source_format=value)
