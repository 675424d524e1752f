"""Ray: the Data runner for corpora that outgrow one machine, and the Serve deployment.

`embed_dataset(ds, ...)` embeds a Ray Dataset lazily; `extract_to_store` is
`bertlayers extract --engine ray` (input files to a resumable directory of Parquet shards).
`ray` is an optional dependency: `pip install 'bertlayers[ray]'`.
"""

from __future__ import annotations

from ..extras import require

require("ray", "ray", "the Ray runner")

from .plan import ReaderOptions  # noqa: E402
from .runner import embed_dataset, extract_to_store  # noqa: E402

__all__ = ["ReaderOptions", "embed_dataset", "extract_to_store"]
