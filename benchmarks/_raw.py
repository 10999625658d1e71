"""The baselines: the same components driven directly, without codi2's model code.

Each baseline is what a researcher would write by hand around the very same modules: it takes
the components out of a built :class:`~codi2.core.model.CoDi2Model` (the encoder, the
transformers model under the LLM plugin, the projectors, the slot and marker parameters, the
decoder) and runs the same mathematics in straight-line code, with every index computed once,
outside the timed region. The benchmarks check that a baseline gives the same numbers as the
codi2 call it is compared with, so the two sides provably do the same work.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F


class RawTrainStep:
    """The CoDi-2 objective on a collated batch, computed from the components directly:
    ``encoder.encode`` -> input projector -> the transformers model on ``inputs_embeds`` ->
    text cross-entropy (vocabulary + marker logits) -> output projector -> ``alpha * MSE`` to
    ``decoder.target_features`` + ``decoder.diffusion_loss``."""

    def __init__(self, model: Any, batch: Any):
        self.model = model
        ids = batch.ids
        vocab = model.markers.vocab_size
        self.vocab = vocab
        self.is_marker = (ids >= vocab)[..., None]
        self.text_ids = ids.masked_fill(ids >= vocab, 0)
        self.marker_ids = (ids - vocab).clamp(min=0)
        self.mask = batch.attention_mask
        targets = batch.label_mask[:, 1:] & batch.attention_mask[:, 1:].bool()
        self.targets = targets
        self.labels = ids[:, 1:][targets]
        self.inputs = {}
        for modality, entries in batch.inputs.items():
            tokens = model.encoder_for[modality].tokens_per_item(modality)
            rows, cols = _positions(entries, tokens)
            self.inputs[modality] = ([m for _, _, m in entries], rows, cols)
        self.outputs = {}
        count = sum(len(v) for v in batch.outputs.values())
        for modality, entries in batch.outputs.items():
            tokens = model.decoders[modality].condition.tokens
            rows, cols = _positions(entries, tokens)
            self.outputs[modality] = ([m for _, _, m, _ in entries], rows, cols, len(entries) / count)
        self.hf = model.llm.hf_model  # the transformers model (LoRA adapters injected in place)
        self.embedding = self.hf.get_input_embeddings()
        self.alpha = model.config.loss.alpha

    def losses(self, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        m = self.model
        embeds = self.embedding(self.text_ids)
        embeds = torch.where(self.is_marker, m.marker_embeddings(self.marker_ids), embeds)
        for modality, (media, rows, cols) in self.inputs.items():
            feats = m.encoder_for[modality].encode(media, modality)
            embeds = embeds.index_put((rows, cols), m.in_proj[modality](feats.float()))
        for modality, (_, rows, cols, _) in self.outputs.items():
            embeds = embeds.index_put((rows, cols), m.slots[modality].expand(len(rows), -1, -1))
        out = self.hf(inputs_embeds=embeds, attention_mask=self.mask, output_hidden_states=True, use_cache=False)
        hidden = out.hidden_states[-1]
        logits = torch.cat([out.logits[:, :-1][self.targets][..., : self.vocab].float(),
                            m.marker_head(hidden[:, :-1][self.targets].float())], -1)
        text = F.cross_entropy(logits, self.labels)
        feature = diffusion = hidden.new_zeros((), dtype=torch.float32)
        for modality, (media, rows, cols, weight) in self.outputs.items():
            decoder = m.decoders[modality]
            cond = m.out_proj[modality](hidden[rows, cols].float())
            with torch.no_grad():
                target = decoder.target_features(media)
            feature = feature + weight * F.mse_loss(cond, target)
            diffusion = diffusion + weight * decoder.diffusion_loss(cond, media, None, generator=generator)
        total = self.alpha * feature + diffusion + text
        return {"text": text, "feature": feature, "diffusion": diffusion, "total": total}


def cache_argument(hf_model: Any) -> str:
    """The name of the KV-cache argument and output field (``cache`` since transformers 5)."""
    import inspect

    return "cache" if "cache" in inspect.signature(hf_model.forward).parameters else "past_key_values"


def _positions(entries: list, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Index tensors ``[K, tokens]`` of the rows and columns of K media spans."""
    rows = torch.tensor([e[0] for e in entries])[:, None].expand(-1, tokens)
    cols = torch.tensor([e[1] for e in entries])[:, None] + torch.arange(tokens)
    return rows, cols


class RawAnswer:
    """Greedy generation of a text + image answer from the components directly: one prefill of
    the prompt's embeddings, one transformers forward per token with its KV cache, and at the
    image marker the slots, the output projector and the stock diffusers pipeline call."""

    def __init__(self, model: Any, prompt_ids: list[int], inputs: list[tuple[int, Any]], modality: str = "image"):
        self.model = model
        self.hf = model.llm.hf_model
        self.embedding = self.hf.get_input_embeddings()
        self.vocab = model.markers.vocab_size
        self.prompt = torch.tensor([prompt_ids])
        self.inputs = inputs  # (start, media) of the prompt's input items
        self.modality = modality
        self.open, self.close = model.markers.open(modality), model.markers.close(modality)
        self.eos = set(model.llm.eos_token_ids)
        self.decoder = model.decoders[modality]
        self.empty = self.decoder._empty_prompt(1)  # the empty-prompt embedding, computed once
        self.cache = cache_argument(self.hf)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        m = self.model
        marker = ids >= self.vocab
        text = self.embedding(ids.masked_fill(marker, 0))
        return torch.where(marker[..., None], m.marker_embeddings((ids - self.vocab).clamp(min=0)), text)

    def next_token(self, out: Any) -> int:
        hidden = out.hidden_states[-1][0, -1]
        logits = torch.cat([out.logits[0, -1, : self.vocab].float(), self.model.marker_head(hidden.float())])
        return int(logits.argmax())

    @torch.no_grad()
    def __call__(self, max_new_tokens: int, steps: int, guidance: float, seed: int = 0) -> tuple[list[int], Any]:
        m = self.model
        embeds = self.embed(self.prompt)
        for start, media in self.inputs:
            feats = m.encoder_for[media.modality].encode([media], media.modality)
            embeds[0, start : start + feats.shape[1]] = m.in_proj[media.modality](feats[0].float())
        out = self.hf(inputs_embeds=embeds, use_cache=True, output_hidden_states=True)
        tokens, image = [], None
        for _ in range(max_new_tokens):
            token = self.next_token(out)
            tokens.append(token)
            if token in self.eos:
                break
            step = self.embed(torch.tensor([[token]]))
            if token == self.open:
                step = torch.cat([step, m.slots[self.modality][None]], 1)
            out = self.hf(inputs_embeds=step, use_cache=True, output_hidden_states=True, **{self.cache: out[self.cache]})
            if token == self.open:
                n = self.decoder.condition.tokens
                cond = m.out_proj[self.modality](out.hidden_states[-1][:, 1 : 1 + n].float())
                image = self.decoder.pipeline(
                    image_embeds=cond[:, 0], prompt_embeds=self.empty, negative_prompt_embeds=self.empty,
                    height=self.decoder.height, width=self.decoder.width, num_inference_steps=steps,
                    guidance_scale=guidance, noise_level=self.decoder.options.noise_level,
                    generator=torch.Generator().manual_seed(seed + 1), output_type="np",
                ).images[0]
                out = self.hf(inputs_embeds=self.embed(torch.tensor([[self.close]])), use_cache=True,
                              output_hidden_states=True, **{self.cache: out[self.cache]})
        return tokens, image
