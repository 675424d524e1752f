"""Deprecated alias of `bertlayers.analysis.probing`: probes saved before the move name their
classes here (`bertlayers.probing.LayerFeatures`), so that they still load (and say so)."""

from .analysis.probing import *  # noqa: F403
from .analysis.probing import LayerFeatures, load_probe, save_probe  # noqa: F401
from .errors import warn_deprecated

warn_deprecated(
    "bertlayers.probing is deprecated: use bertlayers.analysis.probing (a probe saved before "
    "0.1 names it: save it again to drop the warning)"
)
