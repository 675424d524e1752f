"""Deprecated alias of `bertlayers.analysis.probing`: probes saved before the move name their
classes here (`bertlayers.probing.LayerFeatures`), so that they still load."""

from .analysis.probing import *  # noqa: F403
from .analysis.probing import LayerFeatures, load_probe, save_probe  # noqa: F401
