"""The paper's stack at its real sizes on one GPU: training throughput, MFU, memory, image latency.

Every backbone is built in memory with random weights at the published shapes (nothing is
downloaded): a Llama-2-7B-shaped LLM through the ``hf-causal-lm`` plugin (``init: random``,
bfloat16, LoRA r=32 on q/k/v/o, gradient checkpointing, SDPA), ImageBind-huge's vision tower
through the ``imagebind`` plugin (``random_init``, bfloat16), and SD-2.1-unCLIP (UNet, VAE,
OpenCLIP ViT-H/14 image and text encoders; configurations below) as a stock
``StableUnCLIPImg2ImgPipeline`` wrapped by the ``sd-unclip`` plugin's decoder class.

Training: ``--batch`` conversations of ``--seq`` tokens, each with an input image and an answer
of text + a 768 x 768 target image; one step = ``model(batch)`` under bfloat16 autocast (all three
loss terms), backward, fused AdamW on the trainable parameters. Reported: LLM tokens/s, step time,
peak GPU memory, and model FLOPs utilisation (MFU):

    MFU = model FLOPs of one step / step time / measured bf16 peak

- The peak is MEASURED on this device: the best of several timed 8192^3 bf16 matmuls.
- Model FLOPs (no recomputation counted; multiply-add = 2 FLOPs; attention counted as the full
  L x L square, as in the PaLM paper's MFU):
  LLM: ``4 N T + 3 A + 6 N_lora T`` — forward ``2 N T``; backward ``2 N T`` for the input
  gradients only (the base weights are frozen: no weight gradients), ``A = 4 layers B L^2 d`` the
  attention matmuls forward and ``2 A`` backward, and ``6 N_lora T`` for the trained adapters.
  ``N`` = weights of every linear map incl. the LM head (embeddings and norms excluded), ``T`` =
  B x L tokens. ImageBind vision and the decoder's CLIP ViT-H image encoder (frozen, forward
  only): ``2 x 12 D^2 x depth x 257 tokens + 4 depth 257^2 D`` + patch convolution + head, per
  image. Projectors and marker head: ``6 N T``. The UNet and VAE (convolutions at several
  resolutions) are counted per operator by ``torch.utils.flop_counter.FlopCounterMode`` on one
  isolated ``diffusion_loss`` forward + backward. The LLM and ViT formulas are cross-checked the
  same way (``*_counted`` in the details; the LLM with checkpointing switched off for the count).
- Goal: MFU >= 45 % on an H100.

Image generation: the ``sd-unclip`` decoder's ``generate`` vs the stock pipeline called directly
(``pipeline(image_embeds=..., num_inference_steps=20, guidance_scale=10)``), same embedding and
seed, interleaved. Goal: ratio <= 1.05.

    python benchmarks/gpu_realsize.py [--json]            # on a CUDA machine (< 5 minutes)
    python benchmarks/gpu_realsize.py --smoke [--json]    # the same code at tiny sizes on the CPU

Without CUDA (and without ``--smoke``) it prints that it was skipped and exits 0.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # first: it sets the offline environment before any model library loads
import _stack

LLAMA2_7B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
             "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False}
LLAMA_SMOKE = {**LLAMA2_7B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 1000, "max_position_embeddings": 1024}
IMAGEBIND_SMOKE = _stack.imagebind_size(32, 1, 2, 16)


def sd_unclip_pipeline(full: bool, device, dtype):
    """A randomly initialised ``StableUnCLIPImg2ImgPipeline``: SD-2.1-unCLIP-h's shapes (the
    published ``stabilityai/stable-diffusion-2-1-unclip`` configs), or diffusers' tiny test shapes."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableUnCLIPImg2ImgPipeline,
        UNet2DConditionModel,
    )
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import (
        StableUnCLIPImageNormalizer,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    from codi2.plugins.decoders.testing_components import tiny_clip_tokenizer

    if full:
        embed, crop = 1024, 224
        unet = dict(sample_size=96, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2,
                    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024)
        vae = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, sample_size=768,
                   down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
        vision = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, patch_size=14, image_size=224)
        text = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16, vocab_size=49408, projection_dim=512)
    else:  # the shapes of diffusers' own fast tests (16 x 16 images)
        embed, crop = 32, 32
        unet = dict(sample_size=8, block_out_channels=(32, 64), layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=(2, 4), cross_attention_dim=32)
        vae = dict(block_out_channels=(32, 64), layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * 2,
                   up_block_types=("UpDecoderBlock2D",) * 2)
        vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, patch_size=4, image_size=32)
        text = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, vocab_size=1000, projection_dim=32)
    with torch.device(device):
        parts = {
            "unet": UNet2DConditionModel(in_channels=4, out_channels=4, class_embed_type="projection",
                                         projection_class_embeddings_input_dim=2 * embed, use_linear_projection=True,
                                         upcast_attention=True, **unet),
            "vae": AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, **vae),
            "image_encoder": CLIPVisionModelWithProjection(CLIPVisionConfig(projection_dim=embed, hidden_act="gelu", **vision)),
            "text_encoder": CLIPTextModel(CLIPTextConfig(max_position_embeddings=77, hidden_act="gelu", bos_token_id=0,
                                                         eos_token_id=2, pad_token_id=1, **text)),
            "image_normalizer": StableUnCLIPImageNormalizer(embedding_dim=embed),
        }
    for name, module in parts.items():
        if name == "image_normalizer":  # diffusers overrides its .to(torch_device, torch_dtype)
            module.to(torch_dtype=dtype)
        else:
            module.to(dtype=dtype)
        module.eval()
    return StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(crop_size=crop, size=crop),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        tokenizer=tiny_clip_tokenizer(),  # the prompt is always empty: any CLIP tokenizer will do
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction",
                                set_alpha_to_one=False, steps_offset=1, clip_sample=False),
        **parts,
    )


def main(argv: list[str] | None = None) -> dict:
    parser = _common.base_parser(__doc__.splitlines()[0], repeats=5, warmup=2, threads=None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (checks that the script runs)")
    parser.add_argument("--batch", type=int, default=None, help="conversations per step (default 4; smoke 2)")
    parser.add_argument("--seq", type=int, default=None, help="tokens per conversation (default 512; smoke 64)")
    parser.add_argument("--gen-steps", type=int, default=None, help="diffusion steps per image (default 20; smoke 2)")
    parser.add_argument("--gen-repeats", type=int, default=None, help="timed images per side (default 3; smoke 1)")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default=None,
                        help="weights of the backbones (default bfloat16; smoke float32)")
    parser.add_argument("--workdir", default=None, help="folder for the tokenizer files (default: a temp folder)")
    args = parser.parse_args(argv)
    if args.smoke and args.threads is None:
        args.threads = 1  # a shared CPU: one thread avoids OpenMP threads waiting on each other
    _common.setup(args)

    import torch

    report = _common.Report("gpu_realsize")
    if not args.smoke and not torch.cuda.is_available():
        report.notes.append("CUDA is not available: skipped (use --smoke for the tiny CPU run)")
        report.details["skipped"] = True
        return report.emit(args.json)
    smoke = args.smoke
    device = torch.device("cpu" if smoke else "cuda")
    dtype = getattr(torch, args.dtype or ("float32" if smoke else "bfloat16"))
    batch_size, seq = args.batch or (2 if smoke else 4), args.seq or (64 if smoke else 512)
    gen_steps, gen_repeats = args.gen_steps or (2 if smoke else 20), args.gen_repeats or (1 if smoke else 3)
    repeats, warmup = (1, 0) if smoke else (args.repeats, args.warmup)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    report.details.update({"smoke": smoke, "skipped": False, "batch": batch_size, "seq": seq, "device": str(device),
                           "dtype": str(dtype).removeprefix("torch.")})

    began = time.perf_counter()
    peak = measured_peak(device, torch.bfloat16 if device.type == "cuda" else torch.float32, smoke)
    report.details["peak"] = peak
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model = build(Path(args.workdir or tmp), smoke, device, dtype, gen_steps)
        report.details["build_s"] = time.perf_counter() - start
        train = training(model, batch_size, seq, device, dtype, smoke, repeats, warmup, sync)
        gen = generation(model.decoders["image"], device, dtype, gen_steps, gen_repeats, 0 if smoke else 1, sync)

    flops = train["flops"]
    step_s = _common.median(train["times"].wall["step"])
    llm_s = _common.median(train["times"].wall["llm_alone"])
    report.add("mfu", flops["model_total"] / step_s / peak["flops_per_s"], "", ">= 0.45",
               "model FLOPs / step time / measured peak (goal set for an H100)")
    report.add("tokens_per_s", train["tokens"] / step_s, "tok/s", note="LLM tokens trained per second")
    report.add("step_ms", 1000 * step_s, "ms")
    report.add("peak_memory_gib", train["peak_memory"][0] / 2**30, "GiB", note="torch.cuda.max_memory_allocated over the steps")
    report.add("peak_reserved_gib", train["peak_memory"][1] / 2**30, "GiB", note="torch.cuda.max_memory_reserved")
    report.add("llm_alone_mfu", flops["llm"] / llm_s / peak["flops_per_s"], "",
               note="the LLM's forward + backward alone on the same embeddings (reference)")
    report.add("measured_peak_tflops", peak["flops_per_s"] / 1e12, "TFLOP/s")
    report.compare("generation_ratio", gen["times"], "wall", ("plugin", "stock"), goal="<= 1.05",
                   note="sd-unclip decoder.generate / the stock pipeline call", other_clock=False)
    report.details.update({"flops": flops, "losses": train["losses"], "sequence_length": train["length"],
                           "trainable_parameters": train["trainable"], "generation": gen["details"],
                           "step_times_s": train["times"].wall, "generation_times_s": gen["times"].wall,
                           "total_s": time.perf_counter() - began})
    if smoke:
        report.notes.append("smoke run: tiny sizes on the CPU; the figures mean nothing")
    return report.emit(args.json)


def measured_peak(device, dtype, smoke: bool) -> dict:
    """The best throughput of repeated square matmuls in ``dtype``: the denominator of MFU."""
    import torch

    n, iters, trials = (256, 4, 2) if smoke else (8192, 30, 5)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(trials + 1):  # the first trial warms up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iters):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = max(best, 2 * n**3 * iters / (time.perf_counter() - start))
    return {"flops_per_s": best, "matmul": f"{n}x{n}x{n} {str(dtype).removeprefix('torch.')}", "trials": trials}


def build(workdir: Path, smoke: bool, device, dtype, gen_steps: int):
    """The model, every component random-initialised in memory at the chosen sizes."""
    from codi2.core.model import CoDi2Model
    from codi2.plugins.decoders._sd_unclip_impl import SDUnCLIPDecoder
    from codi2.plugins.decoders.sd_unclip import SDUnCLIPOptions
    from codi2.registry import Registry

    registry = Registry.create(entry_points=False)
    dtype_name = str(dtype).removeprefix("torch.")
    encoder = registry.load("encoder", {"plugin": "imagebind", "options": {
        "size": IMAGEBIND_SMOKE if smoke else "huge", "random_init": True, "device": str(device), "dtype": dtype_name,
        "modalities": ["image"]}})
    llm = registry.load("llm", {"plugin": "hf-causal-lm", "options": {
        "model": str(_stack.tokenizer_dir(workdir)), "init": "random", "config": LLAMA_SMOKE if smoke else LLAMA2_7B,
        "dtype": dtype_name, "device": str(device), "trainable": "lora", "gradient_checkpointing": True,
        "attn_implementation": "sdpa", "local_files_only": True}})
    options = SDUnCLIPOptions(model="(random init, in memory)", dtype=dtype_name, device=str(device), steps=gen_steps)
    decoder = SDUnCLIPDecoder(sd_unclip_pipeline(not smoke, device, dtype), options)
    model = CoDi2Model.from_components([encoder], llm, {"image": decoder}).to(device)
    model.set_trainable(llm="lora")
    return model


def conversations(model, count: int, seq: int, side: int) -> tuple[list, int]:
    """``count`` conversations of at most ``seq`` tokens, all of the same length (no padding)."""
    from codi2.core.messages import normalize_messages

    words = ["the", "cat", "sat", "on", "the", "mat", "and", "looked", "at", "the", "red", "circle", "near", "a", "blue", "square"]
    sources, targets = _stack.images(count, seed=1, side=side), _stack.images(count, seed=2, side=side)

    def make(n: int, i: int = 0) -> list:
        return _stack.edit_conversation(sources[i], targets[i], answer=" ".join(words[k % len(words)] for k in range(n)))

    def length(n: int) -> int:
        return len(model.sequence(normalize_messages(make(n)), training=True))

    lo, hi = 0, seq
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if length(mid) <= seq else (lo, mid - 1)
    return [make(lo, i) for i in range(count)], length(lo)


def training(model, batch_size, seq, device, dtype, smoke, repeats, warmup, sync) -> dict:
    import torch

    decoder = model.decoders["image"]
    convs, length = conversations(model, batch_size, seq, side=decoder.height)
    batch = model.collate(convs)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")

    def autocast():  # bfloat16 mixed precision, as the trainer's mixed_precision="bf16" (also in the smoke run)
        return torch.autocast(device.type, dtype=torch.bfloat16)

    counter = [0]
    losses_seen = {}

    def step():
        counter[0] += 1
        with autocast():
            losses = model(batch, generator=torch.Generator().manual_seed(counter[0]))
        losses["total"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses_seen.update({k: float(v.detach()) for k, v in losses.items()})

    with torch.no_grad(), autocast():
        embeds = model.inputs_embeds(batch.to(device)).detach()
    labels = batch.ids[:, 1:].clamp(max=model.markers.vocab_size - 1).to(device)

    def llm_alone():
        x = embeds.clone().requires_grad_()
        with autocast():
            out = model.llm.forward(x, attention_mask=batch.attention_mask)
            loss = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), labels.flatten())
        loss.backward()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = _common.interleave({"step": step, "llm_alone": llm_alone}, repeats=repeats, warmup=warmup, sync=sync)
    cuda = device.type == "cuda"
    peak_memory = (torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()) if cuda else (0, 0)
    model.zero_grad(set_to_none=True)

    flops = analytic_flops(model, batch_size, length)
    # per-operator counts: the decoder's UNet + VAE (and, as cross-checks, the formulas above)
    media = [m for _, _, m, _ in batch.outputs["image"]]
    cond = torch.randn(batch_size, 1, decoder.condition.dim, device=device, requires_grad=True)
    with flop_counter() as clip_count, autocast():
        decoder.target_features(media)
    with flop_counter() as diffusion_count, autocast():
        decoder.diffusion_loss(cond, media, generator=torch.Generator().manual_seed(0)).backward()
    with flop_counter() as encoder_count, autocast():
        model.encoder_for["image"].encode([m for _, _, m in batch.inputs["image"]], "image")
    hf = model.llm.hf_model
    hf.gradient_checkpointing_disable()  # count model FLOPs, not the recomputation
    try:
        with flop_counter() as llm_count:
            llm_alone()
    finally:
        model.llm.enable_gradient_checkpointing()
    flops["unet_vae_counted"] = diffusion_count.get_total_flops()
    flops["model_total"] = flops["analytic_total"] + flops["unet_vae_counted"]
    flops["llm_counted"] = llm_count.get_total_flops()
    flops["image_encoders_counted"] = encoder_count.get_total_flops() + clip_count.get_total_flops()
    flops["llm_rel_diff"] = abs(flops["llm"] - flops["llm_counted"]) / flops["llm_counted"]
    flops["image_encoders_rel_diff"] = abs(flops["image_encoders"] - flops["image_encoders_counted"]) / flops["image_encoders_counted"]
    model.zero_grad(set_to_none=True)
    trainable = sum(p.numel() for p in params)
    return {"times": times, "flops": flops, "tokens": batch_size * length, "length": length, "peak_memory": peak_memory,
            "losses": losses_seen, "trainable": trainable}


def flop_counter():
    """``FlopCounterMode`` that also counts the CPU flash-attention kernels (the smoke run),
    with the formulas torch registers for the CUDA ones."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, flop_registry

    aten = torch.ops.aten
    mapping = {aten._native_multi_head_attention: _fused_mha_flop}
    for cpu, cuda in (("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention"),
                      ("_scaled_dot_product_flash_attention_for_cpu_backward", "_scaled_dot_product_flash_attention_backward")):
        if hasattr(aten, cpu):
            formula = flop_registry[getattr(aten, cuda)]
            mapping[getattr(aten, cpu)] = getattr(formula, "__wrapped__", formula)  # FlopCounterMode wraps it again
    return FlopCounterMode(display=False, custom_mapping=mapping)


def _fused_mha_flop(query, key, value, embed_dim, num_heads, *args, out_shape=None, **kwargs) -> int:
    """``nn.MultiheadAttention``'s fused inference kernel (ImageBind's attention): the q, k, v and
    output projections plus the two attention matmuls. torch registers no formula for it."""
    b, length, width = query
    source = key[1]
    return 2 * b * width * width * (2 * length + 2 * source) + 4 * b * length * source * width


def analytic_flops(model, batch_size: int, length: int) -> dict:
    """Model FLOPs of one training step by formula (see the module docstring)."""
    cfg = model.llm.hf_model.config
    d, layers, vocab = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    head_dim = getattr(cfg, "head_dim", None) or d // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * head_dim, cfg.num_key_value_heads * head_dim
    n = layers * (d * q + 2 * d * kv + q * d + 3 * d * cfg.intermediate_size) + d * vocab
    lora = model.llm.options.lora
    dims = {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
            "gate_proj": (d, cfg.intermediate_size), "up_proj": (d, cfg.intermediate_size), "down_proj": (cfg.intermediate_size, d)}
    adapted = {t.rsplit(".", 1)[-1] for t in model.llm.lora_targets or ()}  # resolved, e.g. "self_attn.q_proj"
    n_lora = layers * sum(lora.r * sum(dims[m]) for m in adapted if m in dims)
    tokens = batch_size * length
    attention = 4 * layers * batch_size * length**2 * q
    llm = 4 * n * tokens + 3 * attention + 6 * n_lora * tokens

    def vit(width: int, depth: int, tokens_: int, patch_macs: int, head: int) -> int:
        return 2 * 12 * width**2 * depth * tokens_ + 4 * depth * tokens_**2 * width + 2 * patch_macs + 2 * head

    trunk = model.encoder_for["image"].model.modality_trunks["vision"]
    width, depth = trunk.blocks[0].norm_1.normalized_shape[0], len(trunk.blocks)
    conv = model.encoder_for["image"].model.modality_preprocessors["vision"].rgbt_stem.proj[1]
    patches = (224 // conv.kernel_size[1]) ** 2
    imagebind = vit(width, depth, patches + 1, conv.weight.numel() * patches, width * model.encoder_for["image"].embed_dim)
    vcfg = model.decoders["image"].image_encoder.config
    grid = (vcfg.image_size // vcfg.patch_size) ** 2
    clip = vit(vcfg.hidden_size, vcfg.num_hidden_layers, grid + 1, 3 * vcfg.patch_size**2 * vcfg.hidden_size * grid,
               vcfg.hidden_size * vcfg.projection_dim)
    if vcfg.intermediate_size != 4 * vcfg.hidden_size:  # the formula's 12 D^2 assumes a 4x MLP
        clip += 2 * 2 * vcfg.hidden_size * (vcfg.intermediate_size - 4 * vcfg.hidden_size) * vcfg.num_hidden_layers * (grid + 1)
    core = sum(p.numel() for name, p in model.named_parameters() if name.startswith(("in_proj.", "out_proj.")) and p.ndim == 2)
    core = 6 * core * batch_size + 6 * model.marker_head.weight.numel() * tokens
    image_encoders = batch_size * (imagebind + clip)
    return {"llm": llm, "llm_N": n, "llm_N_lora": n_lora, "tokens": tokens, "attention_fwd": attention,
            "image_encoders": image_encoders, "imagebind_per_image": imagebind, "clip_per_image": clip,
            "projectors": core, "analytic_total": llm + image_encoders + core}


def generation(decoder, device, dtype, steps: int, repeats: int, warmup: int, sync) -> dict:
    """The plugin's ``generate`` vs the stock pipeline call, same embedding and seed."""
    import numpy as np
    import torch

    cond = torch.randn(1, 1, decoder.condition.dim, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    guidance = decoder.options.guidance
    out = {}

    def plugin():
        out["plugin"] = decoder.generate(cond, steps=steps, guidance=guidance, generator=torch.Generator().manual_seed(1))[0].data

    def stock():
        images = decoder.pipeline(image_embeds=cond[:, 0], num_inference_steps=steps, guidance_scale=guidance,
                                  generator=torch.Generator().manual_seed(1), output_type="np").images
        out["stock"] = (np.asarray(images[0]) * 255).round().clip(0, 255).astype(np.uint8)

    times = _common.interleave({"plugin": plugin, "stock": stock}, repeats=repeats, warmup=warmup, sync=sync)
    decoder.image_normalizer.requires_grad_(False)  # the stock call re-creates these as trainable
    diff = int(np.abs(out["plugin"].astype(int) - out["stock"].astype(int)).max())
    return {"times": times, "details": {"steps": steps, "guidance": guidance, "image_shape": list(out["plugin"].shape),
                                        "max_abs_pixel_diff": diff}}


if __name__ == "__main__":
    main()
