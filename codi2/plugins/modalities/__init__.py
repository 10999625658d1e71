"""The built-in modalities: image, audio, video and text, one module each.

Each module is an ordinary plugin: it registers one :class:`~codi2.core.modality.ModalitySpec`
through ``codi2_register_modalities``, exactly as a third-party modality plugin does. The
reading and writing code lives in :mod:`codi2.core.media`; the facts about the modality
(suffixes, MIME types, magic bytes, how it is shown) live here, in one place each.
"""
