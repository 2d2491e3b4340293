"""Hook functions: small objects that expand to ``fwd_hooks`` lists (readers, steering, knockout, neuron edits)."""

from .audio_attention import AudioAttention
from .knockout import Knockout
from .neurons import Deactivate, Gain, NeuronEdit
from .patch import Patch, PatchFromCache
from .steering import SteeringHook

__all__ = ["AudioAttention", "Deactivate", "Gain", "Knockout", "NeuronEdit", "Patch", "PatchFromCache", "SteeringHook"]
