"""The built-in decoders. :class:`PipelineOptions` is the options model every decoder over a
diffusers pipeline shares (subclass it; torch-free, so a plugin's registration module may
import it); the base class is :class:`codi2.plugins.base.DiffusersDecoder`."""

from codi2.plugins.decoders._options import PipelineOptions

__all__ = ["PipelineOptions"]
