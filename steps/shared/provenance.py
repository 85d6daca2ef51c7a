"""Row provenance: the curated file's column holding each row's line in its source file.

Its name has a ':' that no target column can have (`names.IDENTIFIER`), so it never
collides with a mapped column; the loaders read the mapped columns by name and never load
it into the target (Redshift's COPY, which matches Parquet columns by position, stages it
and leaves it there). `diff` ignores it; `why` reports it.
"""

from __future__ import annotations

LINE_COLUMN = "refload:line"
