"""The built-in metrics plugin: DINO, CLIP-I, CLIP-T, CLIPSIM, CLIP score, FID, KID, LSD, KL, FD,
FAD and the CNN14 classifier.

Registered through the same ``codi2_register_metrics`` hook third-party plugins implement.
Light at import: pydantic option models and load functions only; each ``load`` imports the
module that pulls in torch/transformers.

Each metric's registration declares what it scores: ``modality="image"``, ``needs=("references",)``
or ``("texts",)`` (what its ``score`` requires), and ``default=True`` when ``codi2 eval score``
runs it on a folder of that modality without being asked (:func:`default_metrics`). A plugin
that adds a modality registers its default metrics the same way::

    register("pc-chamfer", load=load_chamfer, modality="pointcloud", needs=("references",),
             default=True, description="...")

Audio classifiers (what KL and FD classify with) are registered as metric components carrying
``role="audio-classifier"``; KL/FD name theirs with the ``classifier`` option. A plugin adds
one with::

    register("my-tagger", load=load_my_tagger, options=MyOptions, role="audio-classifier",
             description="...")

where ``load`` returns an :class:`~codi2.evaluation.audio.AudioClassifier`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from codi2.registry import hookimpl

CLASSIFIER_ROLE = "audio-classifier"


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DinoOptions(_Options):
    """DINO feature network: a hub id (offline: must be in the local HF cache) or a directory."""

    model: str = "facebook/dino-vits16"
    device: str | None = None
    batch_size: int = Field(32, ge=1)
    allow_download: bool = False


class ClipOptions(_Options):
    """CLIP network: transformers hub id/directory, or an open_clip architecture + weights file."""

    model: str = "openai/clip-vit-base-patch32"
    backend: Literal["transformers", "open_clip"] = "transformers"
    pretrained: str | None = Field(None, description="open_clip only: local weights file")
    device: str | None = None
    batch_size: int = Field(32, ge=1)
    allow_download: bool = False


class DistributionOptions(_Options):
    """The feature network of FID/KID: FID's InceptionV3 (a local weights file), or CLIP / DINO
    (the networks of CLIP-I and DINO, same options as those metrics)."""

    network: Literal["inception", "clip", "dino"] = "inception"
    weights: str | None = Field(None, description="inception: local weights file (default "
                                "$CODI2_INCEPTION_WEIGHTS or ~/.cache/codi2/eval/"
                                "weights-inception-2015-12-05-6726825d.pth)")
    feature: Literal[64, 192, 768, 2048] = Field(2048, description="inception: which pooled layer")
    model: str | None = Field(None, description="clip / dino: hub id or directory")
    device: str | None = None
    batch_size: int = Field(32, ge=1)
    allow_download: bool = False


class KIDOptions(DistributionOptions):
    subsets: int = Field(100, ge=1)
    subset_size: int = Field(1000, ge=2)
    degree: int = Field(3, ge=1)
    gamma: float | None = None
    coef0: float = 1.0
    seed: int = 0


class LSDOptions(_Options):
    sample_rate: int = Field(16000, gt=0)
    n_fft: int | None = Field(None, gt=0, description="default int(2048 * sample_rate / 44100)")
    hop_length: int | None = Field(None, gt=0, description="default int(sample_rate / 100)")
    eps: float = Field(1e-12, gt=0)
    normalize: bool = True
    time_offset: int = Field(0, ge=0, description="samples dropped from the generated clip's start")
    pad_mode: Literal["constant", "reflect"] = "constant"


class Cnn14Options(_Options):
    """PANNs CNN14: a local checkpoint (.pth or .safetensors); never downloaded."""

    checkpoint: str | None = Field(None, description="default $CODI2_CNN14_CHECKPOINT or "
                                   "~/.cache/codi2/eval/Cnn14_16k_mAP=0.438.pth")
    device: str | None = None
    sample_rate: int | None = None
    hop_length: int | None = None
    fmin: float | None = None
    fmax: float | None = None
    remove_mean: bool = Field(True, description="subtract each clip's mean first (audioldm_eval does)")
    min_seconds: float = Field(2.0, ge=0, description="zero-pad shorter clips (audioldm_eval: 2 s)")


class ClassifierMetricOptions(_Options):
    classifier: str = "panns-cnn14"
    classifier_options: dict[str, Any] = Field(default_factory=dict)
    # set by build_metric so a classifier is looked up in the caller's registry
    _registry: Any = PrivateAttr(default=None)


class KLOptions(ClassifierMetricOptions):
    activation: Literal["softmax", "sigmoid"] = "softmax"
    eps: float = Field(1e-6, ge=0)


class FDOptions(ClassifierMetricOptions):
    pass


class FADOptions(ClassifierMetricOptions):
    """FD on clips prepared as ``frechet_audio_distance`` does: for panns-cnn14, no mean removal
    and no padding unless ``classifier_options`` say otherwise."""


# --- loaders (heavy imports happen here) ------------------------------------------------------


def _dino(options: DinoOptions) -> Any:
    from codi2.evaluation.image import ImageSimilarity
    from codi2.evaluation.networks.vit import load_dino

    embedder = load_dino(options.model, device=options.device, allow_download=options.allow_download,
                         batch_size=options.batch_size)
    return ImageSimilarity("dino", embedder)


def _clip(options: ClipOptions) -> Any:
    from codi2.evaluation.networks.clip import load_clip

    return load_clip(options.model, backend=options.backend, pretrained=options.pretrained,
                     device=options.device, allow_download=options.allow_download,
                     batch_size=options.batch_size)


def _clip_i(options: ClipOptions) -> Any:
    from codi2.evaluation.image import ImageSimilarity

    return ImageSimilarity("clip-i", _clip(options))


def _clip_t(options: ClipOptions) -> Any:
    from codi2.evaluation.image import TextImageSimilarity

    return TextImageSimilarity("clip-t", _clip(options))


def _clipsim(options: ClipOptions) -> Any:
    from codi2.evaluation.image import TextImageSimilarity

    return TextImageSimilarity("clipsim", _clip(options))


def _clip_score(options: ClipOptions) -> Any:
    from codi2.evaluation.image import TextImageSimilarity

    return TextImageSimilarity("clip-score", _clip(options), scale=100.0, clamp=True)


def _set_embedder(options: DistributionOptions) -> Any:
    if options.network == "inception":
        from codi2.evaluation.networks.inception import load_inception

        return load_inception(options.weights, feature=options.feature, device=options.device,
                              batch_size=options.batch_size)
    common = {"device": options.device, "batch_size": options.batch_size,
              "allow_download": options.allow_download}
    if options.network == "clip":
        return _clip(ClipOptions(**common, **({"model": options.model} if options.model else {})))
    from codi2.evaluation.networks.vit import load_dino

    return load_dino(options.model or DinoOptions().model, **common)


def _fid(options: DistributionOptions) -> Any:
    from codi2.evaluation.distribution import FIDMetric

    return FIDMetric(_set_embedder(options))


def _kid(options: KIDOptions) -> Any:
    from codi2.evaluation.distribution import KIDMetric

    kernel = options.model_dump(include={"subsets", "subset_size", "degree", "gamma", "coef0", "seed"})
    return KIDMetric(_set_embedder(options), **kernel)


def _lsd(options: LSDOptions) -> Any:
    from codi2.evaluation.audio import LSDMetric

    return LSDMetric(**options.model_dump())


def _cnn14(options: Cnn14Options) -> Any:
    from codi2.evaluation.networks.cnn14 import load_cnn14_classifier

    front_end = options.model_dump(exclude={"checkpoint", "device", "remove_mean", "min_seconds"})
    return load_cnn14_classifier(options.checkpoint, device=options.device, remove_mean=options.remove_mean,
                                 min_seconds=options.min_seconds, **front_end)


def load_classifier(name: str, options: dict[str, Any] | None = None, registry: Any = None) -> Any:
    """The audio classifier ``name`` from ``registry`` (default: the command line's registry)."""
    from codi2.errors import ConfigError

    if registry is None:
        if name == "panns-cnn14":  # the built-in needs no registry
            return _cnn14(Cnn14Options.model_validate(options or {}))
        from codi2.registry import default_registry

        registry = default_registry()
    spec = registry.get("metric", name)
    if spec.extra.get("role") != CLASSIFIER_ROLE:
        raise ConfigError(f"metric component {name!r} is not an audio classifier "
                          f"(it was not registered with role={CLASSIFIER_ROLE!r})")
    return registry.load("metric", {"plugin": name, "options": options or {}})


def _kl(options: KLOptions) -> Any:
    from codi2.evaluation.audio import KLMetric

    classifier = load_classifier(options.classifier, options.classifier_options, options._registry)
    return KLMetric(classifier, activation=options.activation, eps=options.eps)


def _fd(options: FDOptions) -> Any:
    from codi2.evaluation.audio import FDMetric

    return FDMetric(load_classifier(options.classifier, options.classifier_options, options._registry))


def _fad(options: FADOptions) -> Any:
    from codi2.evaluation.audio import FADMetric

    classifier_options = dict(options.classifier_options)
    if options.classifier == "panns-cnn14":
        classifier_options = {"remove_mean": False, "min_seconds": 0.0, **classifier_options}
    return FADMetric(load_classifier(options.classifier, classifier_options, options._registry))


def build_metric(registry: Any, name: str, options: dict[str, Any] | None = None) -> Any:
    """Load metric ``name`` from ``registry`` (classifiers of KL/FD come from the same registry)."""
    from codi2.errors import Codi2Error, ComponentLoadError, ConfigError

    spec = registry.get("metric", name)
    if spec.extra.get("role") == CLASSIFIER_ROLE:
        raise ConfigError(f"{name!r} is an audio classifier, not a metric; use it as "
                          f"'classifier' of kl or fd")
    validated = spec.validate_options(options or {})
    if isinstance(validated, ClassifierMetricOptions):
        validated._registry = registry
    try:
        metric = spec.load_fn(validated)
    except Codi2Error:
        raise
    except Exception as exc:
        raise ComponentLoadError(f"metric {name!r} (plugin {spec.plugin!r}) failed to load: "
                                 f"{type(exc).__name__}: {exc}") from exc
    # what the registration declared is what picks defaults: it must be what the metric does
    for key, same in (("modality", lambda a, b: a == b), ("needs", lambda a, b: set(a) == set(b))):
        if key in spec.extra and not same(spec.extra[key], getattr(metric, key, ())):
            raise ComponentLoadError(f"metric {name!r} (plugin {spec.plugin!r}) was registered with "
                                     f"{key}={spec.extra[key]!r} but loads as {key}={getattr(metric, key, None)!r}")
    return metric


def default_metrics(registry: Any, modality: str, *, texts: bool = False) -> list[str]:
    """The metrics registered with ``modality=modality, default=True`` (name order): what
    ``codi2 eval score`` runs when no metric is named. Those whose ``needs`` include
    ``"texts"`` only when ``texts`` are given."""
    return [spec.name for spec in registry.specs("metric")
            if spec.extra.get("default") is True and spec.extra.get("modality") == modality
            and (texts or "texts" not in spec.extra.get("needs", ()))]


#: what each metric scores, declared where it is registered (see :func:`default_metrics`)
_IMAGE_PAIRS = {"modality": "image", "needs": ("references",)}
_IMAGE_TEXT = {"modality": "image", "needs": ("texts",)}
_AUDIO_PAIRS = {"modality": "audio", "needs": ("references",)}


@hookimpl
def codi2_register_metrics(register: Any) -> None:
    # default=True: what `codi2 eval score` runs on a folder of that modality when no metric is named
    register("dino", load=_dino, options=DinoOptions, **_IMAGE_PAIRS, default=True,
             description="DreamBench DINO: cosine of DINO ViT-S/16 CLS features, generated vs real image")
    register("clip-i", load=_clip_i, options=ClipOptions, **_IMAGE_PAIRS, default=True,
             description="DreamBench CLIP-I: cosine of CLIP image embeddings, generated vs real image")
    register("clip-t", load=_clip_t, options=ClipOptions, **_IMAGE_TEXT, default=True,
             description="DreamBench CLIP-T: cosine of CLIP image and prompt embeddings")
    register("clipsim", load=_clipsim, options=ClipOptions, **_IMAGE_TEXT,
             description="CLIPSIM: cosine of CLIP embeddings, edited image vs target caption")
    register("clip-score", load=_clip_score, options=ClipOptions, **_IMAGE_TEXT,
             description="CLIPScore as torchmetrics computes it: max(100 * mean cosine, 0), image vs text")
    register("fid", load=_fid, options=DistributionOptions, **_IMAGE_PAIRS,
             description="Fréchet Inception Distance of two image sets (torchmetrics / clean-fid)")
    register("kid", load=_kid, options=KIDOptions, **_IMAGE_PAIRS,
             description="Kernel Inception Distance of two image sets (torchmetrics / clean-fid)")
    register("lsd", load=_lsd, options=LSDOptions, **_AUDIO_PAIRS, default=True,
             description="log-spectral distance of paired clips (AudioLDM eval / ssr_eval definition)")
    register("kl", load=_kl, options=KLOptions, **_AUDIO_PAIRS, default=True,
             description="KL(reference || generated) of AudioSet classifier outputs (AudioLDM eval)")
    register("fd", load=_fd, options=FDOptions, **_AUDIO_PAIRS, default=True,
             description="Fréchet distance of audio classifier embeddings (AudioLDM eval)")
    register("fad", load=_fad, options=FADOptions, **_AUDIO_PAIRS,
             description="Fréchet audio distance of classifier embeddings (frechet_audio_distance, PANNs)")
    register("panns-cnn14", load=_cnn14, options=Cnn14Options, role=CLASSIFIER_ROLE,
             description="audio classifier for kl/fd: PANNs CNN14 from a local checkpoint")
