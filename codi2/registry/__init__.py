"""Plugins and components: the pluggy hooks, the registry, the built-in plugin list.

A plugin module looks like this (see docs/plugins.md)::

    from codi2.registry import hookimpl

    @hookimpl
    def codi2_register_decoders(register):
        register("my-decoder", load=load_my_decoder, options=MyOptions)

Importing this package imports no torch, transformers or diffusers.
"""

from __future__ import annotations

from codi2.registry.builtin import BUILTIN_PLUGINS
from codi2.registry.components import KINDS, ComponentSpec, NoOptions
from codi2.registry.hookspecs import hookimpl, hookspec
from codi2.registry.manager import PluginInfo, Registry, default_registry

__all__ = [
    "BUILTIN_PLUGINS",
    "KINDS",
    "ComponentSpec",
    "NoOptions",
    "PluginInfo",
    "Registry",
    "default_registry",
    "hookimpl",
    "hookspec",
]
