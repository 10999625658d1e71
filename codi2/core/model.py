"""The CoDi-2 model: encoders -> input projectors -> LLM -> slots -> output projectors -> decoders.

Read top to bottom: the modules, building a batch, the training losses, generation, and
saving. Components (encoders, LLM, decoders) come from plugins; everything else here is core:
the projectors, the learned output slots and the marker token rows.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from codi2.core.config import DEFAULT_MODALITIES, ModelConfig
from codi2.core.interfaces import LLM, Decoder, Encoder
from codi2.core.messages import MediaPart, Message, normalize_messages
from codi2.core.modality import Modalities, resolve_modalities
from codi2.core.sequence import Markers, TokenSequence, build_sequence
from codi2.core.types import Media
from codi2.errors import CheckpointError, ConfigError, MessageError, UnknownModalityError

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


class Projector(nn.Sequential):
    """The paper's MLP: Linear -> GELU -> LayerNorm -> Linear."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int):
        super().__init__(nn.Linear(dim_in, hidden), nn.GELU(), nn.LayerNorm(hidden), nn.Linear(hidden, dim_out))


@dataclass
class Batch:
    """Token ids and media spans of several conversations, right-padded to one length."""

    ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    label_mask: torch.Tensor  # [B, L] True where the token is a target
    inputs: dict[str, list[tuple[int, int, Media]]] = field(default_factory=dict)  # modality -> (row, start, media)
    outputs: dict[str, list[tuple[int, int, Media, Media | None]]] = field(default_factory=dict)  # + reference

    def to(self, device: torch.device | str) -> Batch:
        self.ids, self.attention_mask, self.label_mask = (t.to(device) for t in (self.ids, self.attention_mask, self.label_mask))
        return self


@dataclass
class Answer:
    """A generated answer: text and media in the order produced.

    ``parts`` interleaves ``str`` and :class:`Media`; ``text`` joins the strings, ``media``
    lists the items; ``tokens`` counts sampled tokens; ``finish_reason`` is "stop" or
    "length". ``save(out_dir)`` writes ``output0.png``, ``output1.wav``, ... (one counter over
    all media); :func:`codi2.answers.answer_to_dict` gives the JSON form.

    >>> answer = model.generate("Draw a square.", seed=0)    # doctest: +SKIP
    >>> answer.text, [m.modality for m in answer.media]       # doctest: +SKIP
    ('Here it is: ', ['image'])
    >>> answer.save("out")                                    # doctest: +SKIP
    [PosixPath('out/output0.png')]
    """

    parts: list[str | Media] = field(default_factory=list)
    tokens: int = 0
    finish_reason: str = "stop"  # "stop": the model ended its turn; "length": max_new_tokens reached
    # while generating, for ``progress`` hooks: text sampled since the last part, and the
    # (done, total) diffusion steps of the item being rendered
    draft: str = ""
    render_steps: tuple[int, int] | None = None
    #: the modalities of the model that answered (how ``save`` writes each item)
    modalities: Modalities | None = field(default=None, repr=False, compare=False)

    @property
    def text(self) -> str:
        return "".join(p for p in self.parts if isinstance(p, str))

    @property
    def media(self) -> list[Media]:
        return [p for p in self.parts if isinstance(p, Media)]

    def to_message(self) -> dict[str, Any]:
        """The answer as an assistant message in content-part form (for the history)."""
        content = [{"type": "text", "text": p} if isinstance(p, str) else {"type": p.modality, "data": p, "name": p.name} for p in self.parts]
        return {"role": "assistant", "content": content or [{"type": "text", "text": ""}]}

    def save(self, out_dir: str | Path, stem: str = "output", modalities: Modalities | None = None) -> list[Path]:
        """Write every media item as ``{stem}{k}`` plus its modality's suffix (``.png``,
        ``.wav``, ``.mp4``, ...); returns the paths."""
        modalities = resolve_modalities(modalities or self.modalities)
        return [modalities.save(m, Path(out_dir) / f"{stem}{k}") for k, m in enumerate(self.media)]


class CoDi2Model(nn.Module):
    """``modalities``: the modality specs media are read and written with (default: the
    registered ones). The model reads and writes only the modalities its config names
    (:meth:`ModelConfig.marker_modalities`), each with a marker row pair."""

    def __init__(self, config: ModelConfig, encoders: Sequence[Encoder], llm: LLM, decoders: Mapping[str, Decoder],
                 modalities: Modalities | None = None):
        super().__init__()
        self.config = config
        self.modalities = resolve_modalities(modalities)
        self.encoders = nn.ModuleList(encoders)
        self.llm = llm
        self.decoders = nn.ModuleDict(dict(decoders))
        self.markers = Markers(llm.vocab_size, config.marker_modalities())
        self.encoder_for: dict[str, Encoder] = {}
        for enc, enc_cfg in zip(encoders, config.encoders):
            for modality in enc_cfg.modalities or enc.modalities:
                if modality not in enc.modalities:
                    raise UnknownModalityError(f"encoder {enc.name!r} cannot encode {modality!r}; it encodes {', '.join(enc.modalities)}")
                if modality not in self.markers.modalities and not enc_cfg.modalities:
                    continue  # a modality this model's config does not name (e.g. one added to the encoder later)
                self.markers.open(modality)  # an explicit list must be covered by the config's modalities
                self.encoder_for.setdefault(modality, enc)
        for modality, dec in decoders.items():
            if dec.modality != modality:
                raise UnknownModalityError(f"decoder {dec.name!r} produces {dec.modality}, but is configured for {modality}")
            self.markers.open(modality)
        self.modalities.check([*self.encoder_for, *decoders], where="model")

        hidden = llm.hidden_size
        width = config.projector_hidden or hidden
        self.in_proj = nn.ModuleDict({m: Projector(e.embed_dim, width, hidden) for m, e in self.encoder_for.items()})
        self.out_proj = nn.ModuleDict({m: Projector(hidden, width, d.condition.dim) for m, d in decoders.items()})
        scale = self._embedding_scale()
        self.slots = nn.ParameterDict({m: nn.Parameter(torch.randn(d.condition.tokens, hidden) * scale) for m, d in decoders.items()})
        self.marker_embeddings = nn.Embedding(len(self.markers), hidden)
        nn.init.normal_(self.marker_embeddings.weight, std=scale)
        self.marker_head = nn.Linear(hidden, len(self.markers), bias=False)
        nn.init.normal_(self.marker_head.weight, std=hidden**-0.5)
        self.feature_cache: Any = None  # optional: get(key) -> Tensor | None, put(key, Tensor)
        #: why save_pretrained could not write a config that rebuilds this model (see from_components)
        self.unsaveable: list[str] = []
        for enc in encoders:
            enc.set_trainable("frozen")
        self.set_trainable()

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def from_components(cls, encoders: Sequence[Encoder], llm: LLM, decoders: Mapping[str, Decoder] | None = None, *,
                        modalities: Modalities | None = None, **settings: Any) -> CoDi2Model:
        """Compose already-built components (the integrator's path). ``settings`` are
        :class:`ModelConfig` fields such as ``loss`` or ``generation``. A component's ``name``
        and ``options`` attribute (if any) become its entry in the config, so a model built
        from registered plugins saves a config that rebuilds it. Modalities beyond the
        default four that the components handle get marker rows (config ``modalities``)."""
        decoders = dict(decoders or {})
        unsaveable: list[str] = []
        used = [m for e in encoders for m in e.modalities] + list(decoders)
        extra = [m for m in dict.fromkeys(used) if m not in DEFAULT_MODALITIES]
        if extra:
            settings.setdefault("modalities", [*DEFAULT_MODALITIES, *extra])

        def named(component: Any, where: str) -> dict[str, Any]:  # plugin name + the options it was built with
            name, options = getattr(component, "name", None), getattr(component, "options", None)
            if not isinstance(name, str) or not name:
                unsaveable.append(f"{where} ({type(component).__name__}) has no `name` attribute (its registered plugin name)")
            if options is None or not (hasattr(options, "model_dump") or isinstance(options, Mapping)):
                unsaveable.append(f"{where} ({type(component).__name__}) has no `options` attribute (the options it was built with)")
            options = options.model_dump(mode="json") if hasattr(options, "model_dump") else dict(options or {})
            return {"plugin": name if isinstance(name, str) and name else type(component).__name__, "options": options}

        config = ModelConfig.from_dict({
            "encoders": [named(e, f"encoder #{i}") for i, e in enumerate(encoders)],
            "llm": named(llm, "llm"),
            "decoders": {m: named(d, f"{m} decoder") for m, d in decoders.items()},
            **settings,
        }, source="CoDi2Model.from_components")
        model = cls(config, encoders, llm, decoders, modalities)
        model.unsaveable = unsaveable
        return model

    def _embedding_scale(self) -> float:
        with torch.no_grad():
            sample = torch.arange(min(self.llm.vocab_size, 1000), device=self.device)[None]
            return float(self.llm.embed(sample).float().std()) or 0.02

    @property
    def device(self) -> torch.device:
        return next(self.llm.parameters()).device

    def set_trainable(self, *, input_projectors: bool = True, output_side: bool = True, markers: bool = True, llm: str | None = None, decoders: str | None = None) -> None:
        """Choose what trains. ``llm``: frozen | lora | full; ``decoders``: frozen | adapters | full
        (None leaves a component as it is). Encoders are always frozen."""
        self.in_proj.requires_grad_(input_projectors)
        self.out_proj.requires_grad_(output_side)
        self.slots.requires_grad_(output_side)
        self.marker_embeddings.requires_grad_(markers)
        self.marker_head.requires_grad_(markers)
        if llm is not None:
            self.llm.set_trainable(llm)
        if decoders is not None:
            for dec in self.decoders.values():
                dec.set_trainable(decoders)

    # --- from messages to tensors --------------------------------------------------------------

    def sequence(self, messages: Sequence[Message], *, training: bool, add_generation_prompt: bool = False) -> TokenSequence:
        def input_tokens(modality: str) -> int:
            if modality not in self.encoder_for:
                raise UnknownModalityError(f"no encoder for {modality} input; this model reads {', '.join(sorted(self.encoder_for))}")
            return self.encoder_for[modality].tokens_per_item(modality)

        def output_tokens(modality: str) -> int | None:
            return self.decoders[modality].condition.tokens if modality in self.decoders else None

        seq = build_sequence(
            messages, tokenize=self.llm.tokenize, render=self.llm.render_chat, markers=self.markers,
            input_tokens=input_tokens, output_tokens=output_tokens, training=training, add_generation_prompt=add_generation_prompt,
        )
        if len(seq) > self.config.max_input_tokens:
            raise MessageError(f"the conversation is {len(seq)} tokens long; this model takes at most {self.config.max_input_tokens}")
        return seq

    def load_part(self, part: MediaPart) -> Media:
        """Read and validate a media part (through its encoder, which knows its sample rate)."""
        if isinstance(part.source, Media) and part.source.modality == part.modality and part.modality not in self.encoder_for:
            return part.source
        if part.modality in self.encoder_for:
            media = self.encoder_for[part.modality].load_media(part.source, part.modality, name=part.name)
        else:
            media = self.modalities.load(part.source, part.modality, name=part.name)
        if part.name and not media.name:
            media.name = part.name
        if part.caption is not None:
            media.meta["caption"] = part.caption
        return media

    def collate(self, conversations: Sequence[Any], *, training: bool = True) -> Batch:
        """Turn conversations (any form :func:`normalize_messages` accepts) into a :class:`Batch`."""
        seqs = []
        for i, conversation in enumerate(conversations):
            try:
                seqs.append(self.sequence(normalize_messages(conversation, modalities=self.modalities), training=training))
            except MessageError as exc:
                raise type(exc)(f"conversation {i}: {exc}") from None
        return self.batch(seqs)

    def batch(self, seqs: Sequence[TokenSequence]) -> Batch:
        """Pad token sequences into a :class:`Batch`, loading their media."""
        length = max(len(s) for s in seqs)
        ids = torch.zeros(len(seqs), length, dtype=torch.long)
        attention = torch.zeros(len(seqs), length, dtype=torch.long)
        labels = torch.zeros(len(seqs), length, dtype=torch.bool)
        batch = Batch(ids, attention, labels, defaultdict(list), defaultdict(list))
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = torch.tensor(seq.ids)
            attention[row, : len(seq)] = 1
            labels[row, : len(seq)] = torch.tensor(seq.labels)
            last_input: dict[str, Media] = {}
            spans = sorted([(s.start, "in", s) for s in seq.inputs] + [(s.start, "out", s) for s in seq.outputs], key=lambda x: x[0])
            for start, kind, span in spans:
                media = self.load_part(span.part)
                if kind == "in":
                    batch.inputs[span.part.modality].append((row, start, media))
                    last_input[span.part.modality] = media
                else:
                    batch.outputs[span.part.modality].append((row, start, media, last_input.get(span.part.modality)))
        batch.inputs, batch.outputs = dict(batch.inputs), dict(batch.outputs)
        return batch

    def encode_media(self, items: Sequence[Media], modality: str) -> torch.Tensor:
        """Frozen encoder features ``[B, T, D_enc]``, through the feature cache when one is set."""
        encoder = self.encoder_for[modality]
        if self.feature_cache is None:
            return encoder.encode(items, modality)
        keys = [f"{encoder.identity}/{modality}/{m.content_hash()}" for m in items]
        found = [self.feature_cache.get(k) for k in keys]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing:
            fresh = encoder.encode([items[i] for i in missing], modality)
            for i, feats in zip(missing, fresh):
                self.feature_cache.put(keys[i], feats.cpu())
                found[i] = feats
        return torch.stack([f.to(self.device) for f in found])

    def embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Embeddings of token ids, marker ids (>= the LLM's vocabulary) included."""
        is_marker = ids >= self.markers.vocab_size
        text = self.llm.embed(ids.masked_fill(is_marker, 0))
        marker = self.marker_embeddings((ids - self.markers.vocab_size).clamp(min=0)).to(text.dtype)
        return torch.where(is_marker[..., None], marker, text)

    def logits(self, llm_logits: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """The LLM's logits followed by the marker logits."""
        return torch.cat([llm_logits[..., : self.markers.vocab_size].float(), self.marker_head(hidden.float())], -1)

    def inputs_embeds(self, batch: Batch) -> torch.Tensor:
        embeds = self.embed_ids(batch.ids)
        for modality, entries in batch.inputs.items():
            feats = self.in_proj[modality](self.encode_media([m for _, _, m in entries], modality).to(self.device).float())
            for (row, start, _), f in zip(entries, feats):
                embeds[row, start : start + len(f)] = f.to(embeds.dtype)
        for modality, entries in batch.outputs.items():
            slots = self.slots[modality].to(embeds.dtype)
            for row, start, *_ in entries:
                embeds[row, start : start + len(slots)] = slots
        return embeds

    def output_conditions(self, hidden: torch.Tensor, modality: str, starts: Sequence[tuple[int, int]]) -> torch.Tensor:
        """Project the hidden states at each generated item's slots: ``[K, N, D_cond]``."""
        n = self.decoders[modality].condition.tokens
        states = torch.stack([hidden[row, start : start + n] for row, start in starts])
        return self.out_proj[modality](states.float())

    # --- training ------------------------------------------------------------------------------

    def forward(self, batch: Batch, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The CoDi-2 objective: ``{"text", "feature", "diffusion", "total"}`` with
        ``total = alpha * feature + diffusion + text`` over the enabled terms."""
        batch = batch.to(self.device)
        loss_cfg = self.config.loss
        out = self.llm.forward(self.inputs_embeds(batch), attention_mask=batch.attention_mask)
        zero = out.hidden.new_zeros((), dtype=torch.float32)
        losses = {"text": zero, "feature": zero, "diffusion": zero}

        targets = batch.label_mask[:, 1:] & batch.attention_mask[:, 1:].bool()
        if loss_cfg.text and targets.any():
            logits = self.logits(out.logits[:, :-1][targets], out.hidden[:, :-1][targets])
            losses["text"] = nn.functional.cross_entropy(logits, batch.ids[:, 1:][targets])

        count = sum(len(v) for v in batch.outputs.values())
        for modality, entries in batch.outputs.items():
            decoder, media = self.decoders[modality], [m for _, _, m, _ in entries]
            cond = self.output_conditions(out.hidden, modality, [(r, s) for r, s, *_ in entries])
            weight = len(entries) / count
            if loss_cfg.feature:
                with torch.no_grad():
                    target = decoder.target_features(media).to(cond.device, cond.dtype)
                losses["feature"] = losses["feature"] + weight * nn.functional.mse_loss(cond, target)
            if loss_cfg.diffusion:
                reference = [r for *_, r in entries] if self.config.fidelity and decoder.supports_reference else None
                losses["diffusion"] = losses["diffusion"] + weight * decoder.diffusion_loss(cond, media, reference, generator=generator)
        losses["total"] = loss_cfg.alpha * losses["feature"] + losses["diffusion"] + losses["text"]
        return losses

    # --- generation ----------------------------------------------------------------------------

    def generate(self, prompt: Any, media: Mapping[str, Any] | None = None, **options: Any) -> Answer:
        """Answer a prompt (placeholder string + ``media``, or a message list) with text and media.

        ``prompt``: ``"Make {a} purple."`` with ``media={"a": "square.png"}`` (a path, bytes,
        PIL image, array, tensor or :class:`Media`), or a conversation in content-part form
        (see :mod:`codi2.core.messages`). ``options`` (None keeps the model's
        ``config.generation`` default): ``seed`` (same seed, same answer), ``steps`` and
        ``guidance`` (the decoders' diffusion steps and guidance scale), ``max_new_tokens``,
        ``temperature`` (0 = greedy), ``top_p``, ``max_media``, and ``progress(event, answer)``
        (see :func:`codi2.core.generation.generate`). Returns an :class:`Answer`.

        >>> answer = model.generate("Make {a} purple.", media={"a": "square.png"}, seed=0, steps=20)  # doctest: +SKIP
        """
        from codi2.core.generation import generate

        return generate(self, normalize_messages(prompt, media, self.modalities), **options)

    def generate_batch(
        self, prompts: Sequence[Any], media: Sequence[Mapping[str, Any] | None] | Mapping[str, Any] | None = None, *,
        seeds: Sequence[int | None] | None = None, max_batch: int = 8, **options: Any,
    ) -> list[Answer]:
        """Answer several prompts together: one padded LLM batch with a KV cache (at most
        ``max_batch`` items at a time), each decoder run once per step over the items that
        asked for its modality. ``prompts`` are what :meth:`generate` takes; ``media`` is one
        mapping per prompt (or one shared mapping); ``seeds[i]`` gives item ``i`` the answer
        ``generate(prompts[i], seed=seeds[i])`` gives. ``progress(event, index, answer)``
        reports per item. Returns one :class:`Answer` per prompt, in order.

        >>> answers = model.generate_batch(["Draw a red circle.", "Play a sine tone at C4."], seeds=[0, 1])  # doctest: +SKIP
        """
        from codi2.core.generation import generate_batch

        if media is None or isinstance(media, Mapping):
            media = [media] * len(prompts)
        if len(media) != len(prompts):
            raise MessageError(f"generate_batch(): {len(prompts)} prompts but {len(media)} media mappings")
        conversations = []
        for i, (prompt, item_media) in enumerate(zip(prompts, media)):
            try:
                conversations.append(normalize_messages(prompt, item_media))
            except MessageError as exc:
                raise type(exc)(f"prompt {i}: {exc}") from None
        return generate_batch(self, conversations, seeds=seeds, max_batch=max_batch, **options)

    def chat(self, system: str | None = None) -> Any:
        """A multi-round :class:`~codi2.core.conversation.Conversation` with this model."""
        from codi2.core.conversation import Conversation

        return Conversation(self, system=system)

    # --- saving --------------------------------------------------------------------------------

    CORE_PREFIXES = ("in_proj.", "out_proj.", "slots.", "marker_embeddings.", "marker_head.")

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything training can change: core modules plus each component's trained state."""
        state = {f"core.{k}": v for k, v in self.state_dict().items() if k.startswith(self.CORE_PREFIXES)}
        state.update({f"llm.{k}": v for k, v in self.llm.trained_state_dict().items()})
        for m, dec in self.decoders.items():
            state.update({f"decoder.{m}.{k}": v for k, v in dec.trained_state_dict().items()})
        return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}

    def load_trained_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        groups: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
        for key, value in state.items():
            head, _, rest = key.partition(".")
            if head == "decoder":
                m, _, rest = rest.partition(".")
                head = f"decoder.{m}"
            groups[head][rest] = value
        own = {k: v for k, v in self.state_dict().items() if k.startswith(self.CORE_PREFIXES)}
        core = groups.pop("core", {})
        for key in own.keys() - core.keys():
            raise CheckpointError(f"checkpoint lacks core tensor {key!r}")
        for key, value in core.items():
            if key not in own:
                raise CheckpointError(f"checkpoint has unexpected core tensor {key!r} (does the config match?)")
            if own[key].shape != value.shape:
                raise CheckpointError(f"core tensor {key!r}: checkpoint shape {tuple(value.shape)}, model shape {tuple(own[key].shape)}")
        self.load_state_dict(core, strict=False)
        self.llm.load_trained_state_dict(groups.pop("llm", {}))
        for m, dec in self.decoders.items():
            dec.load_trained_state_dict(groups.pop(f"decoder.{m}", {}))
        if groups:
            raise CheckpointError(f"checkpoint holds tensors for components this model lacks: {sorted(groups)}")

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (trained parameters only), atomically.
        Refuses (ConfigError) a config that could not rebuild this model when loaded back."""
        from safetensors.torch import save_file

        config = self.saveable_config()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(directory / CONFIG_FILE, lambda p: p.write_text(json.dumps(config, indent=2) + "\n"))
        _atomic_write(directory / WEIGHTS_FILE, lambda p: save_file(self.trained_state_dict(), str(p), metadata={"format": "codi2"}))
        return directory

    def saveable_config(self) -> dict[str, Any]:
        """The config as JSON data, checked to load back: every component named by its plugin
        and options, every option JSON-serialisable, the whole valid as a ModelConfig."""
        if self.unsaveable:
            raise ConfigError(
                f"cannot save this model: its config.json could not rebuild it: {'; '.join(self.unsaveable)}; "
                "a component saves as {'plugin': component.name, 'options': component.options} (see docs/plugins.md)"
            )
        try:
            data = json.loads(json.dumps(self.config.model_dump(mode="json")))
        except (TypeError, ValueError) as exc:  # pydantic's serialisation errors are ValueErrors
            raise ConfigError(f"cannot save this model: its config is not JSON-serialisable: {str(exc).splitlines()[0]}") from None
        ModelConfig.from_dict(data, source="the config save_pretrained would write")
        return data

    @classmethod
    def from_pretrained(cls, directory: str | Path, components: Mapping[str, Any], *, device: str | None = None,
                        modalities: Modalities | None = None) -> CoDi2Model:
        """Compose prebuilt ``components`` (``{"encoders": [...], "llm": ..., "decoders": {...}}``)
        with the saved ``config.json`` and restore the trained weights. Building the components
        from their names is :func:`codi2.load`'s job (the one assembly path)."""
        directory = Path(directory)
        if not isinstance(components, Mapping):
            raise ConfigError("from_pretrained takes the components {'encoders', 'llm', 'decoders'}; "
                              "to build them from their names use codi2.load(directory, registry=...)")
        if not (directory / CONFIG_FILE).is_file():
            raise CheckpointError(f"{directory}: not a codi2 model directory (no {CONFIG_FILE})")
        config = ModelConfig.from_file(directory / CONFIG_FILE)
        model = cls(config, components["encoders"], components["llm"], components.get("decoders", {}), modalities)
        model.load_pretrained_weights(directory)
        return model.to(device) if device else model

    def load_pretrained_weights(self, directory: str | Path) -> None:
        """Restore the trained weights ``save_pretrained`` wrote into ``directory``."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        weights = Path(directory) / WEIGHTS_FILE
        if self.trained_state_dict():  # never run untrained by accident: the file must be there
            _check_weights_file(weights)
            try:
                state = load_file(str(weights))
            except (SafetensorError, OSError) as exc:
                raise CheckpointError(f"{weights}: unreadable weights file: {exc}") from None
            self.load_trained_state_dict(state)


def _check_weights_file(weights: Path) -> None:
    """A missing, empty or non-file ``model.safetensors`` is an error, not random weights."""
    if not weights.exists():
        raise CheckpointError(
            f"{weights}: missing; a saved codi2 model holds {CONFIG_FILE} and {WEIGHTS_FILE} "
            "(its trained weights), and without them it would answer with random ones"
        )
    if not weights.is_file():
        raise CheckpointError(f"{weights}: not a file (the trained weights must be a safetensors file)")
    if weights.stat().st_size == 0:
        raise CheckpointError(f"{weights}: empty (0 bytes); save the model again")


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


__all__ = ["Answer", "Batch", "CoDi2Model", "Projector"]
