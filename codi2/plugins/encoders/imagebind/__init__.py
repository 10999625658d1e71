"""The ``imagebind`` encoder: Meta's ImageBind, one embedding space for six modalities.

CoDi-2 (paper §3.2) reads every input medium through ImageBind, whose modality towers were
trained to land in one shared space. This module is only the registration and the options; it
imports no torch. The network is :mod:`~codi2.plugins.encoders.imagebind.model` (our own
code, with the parameter names of Meta's release so that ``imagebind_huge.pth`` loads
strictly), the input pipelines are :mod:`~codi2.plugins.encoders.imagebind.preprocess` and
the component is :class:`~codi2.plugins.encoders.imagebind.encoder.ImageBindEncoder`.

Choices worth knowing:

- Weights are never downloaded. Put Meta's ``imagebind_huge.pth`` (or a ``.safetensors``
  conversion) in ``$TORCH_HOME/checkpoints/`` (``~/.cache/torch/checkpoints/``) or pass
  ``checkpoint=/path/to/file``.
- ``image_tokens="pooled"`` gives one unit vector per item (1024-d for ``huge``): ImageBind's
  embedding without the contrastive logit scale. ``"sequence"`` gives the vision tower's
  257 output tokens (1280-d) as the official CoDi-2 code feeds them to the LLM; those are not
  in the shared space, so a sequence encoder serves image and video only (add a second,
  pooled ``imagebind`` encoder restricted to audio/text; each builds only the towers it uses).
- Audio and video follow the reference pipeline exactly: 3 clips of 2 s (audio) and 5 clips
  of 2 frames x 3 spatial crops (video), chosen by evenly spaced clip starts, embeddings
  averaged over clips.
- ``depth``, ``thermal`` and ``imu`` (ImageBind's other three towers) are served when named in
  ``modalities``; the default is the four CoDi-2 reads, so the 125 M parameters of the other
  towers are built only when asked for. Meta publishes no input pipeline for them: depth
  follows Omnivore's (metres -> disparity -> normalised), thermal and IMU are documented
  choices (see :mod:`~codi2.plugins.encoders.imagebind.preprocess`). The plugin also
  registers the three modalities (:mod:`~codi2.plugins.encoders.imagebind.modalities`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from codi2.registry.hookspecs import hookimpl

if TYPE_CHECKING:
    from codi2.plugins.encoders.imagebind.encoder import ImageBindEncoder
    from codi2.registry.components import RegisterCallback

NAME = "imagebind"
#: the file name of Meta's released checkpoint, looked for in the default places
CHECKPOINT_FILE = "imagebind_huge.pth"
#: every modality the encoder can serve, in the order it lists them
MODALITIES = ("image", "audio", "video", "text", "depth", "thermal", "imu")
#: what ``modalities=None`` serves: the four CoDi-2 reads (pooled) or the vision tower's two
DEFAULT_MODALITIES = {"pooled": ("image", "audio", "video", "text"), "sequence": ("image", "video")}
#: the modalities this plugin registers (ImageBind's towers beyond CoDi-2's four); the specs are
#: in :mod:`~codi2.plugins.encoders.imagebind.modalities`
MODALITY_DESCRIPTIONS = {
    "depth": "depth maps in metres (float32 [H, W]); .npy, 16-bit PNG in mm, float TIFF",
    "thermal": "thermal images, intensity in [0, 1] (float32 [H, W]); .npy, 8/16-bit images",
    "imu": "IMU series, accelerometer + gyroscope (float32 [samples, 6]); .npy, .csv",
}
#: IMU samples per second the IMU tower expects: 2000-sample windows of 5 s (the paper)
IMU_SAMPLE_RATE = 400
#: baseline (m) x focal length (px) of the Kinect v1 of NYU Depth v2 (0.075 x 518.857901), the
#: depth benchmark ImageBind reports: disparity = this / depth in metres
KINECT_DISPARITY_SCALE = 0.075 * 518.857901


class ImageBindSize(BaseModel):
    """Architecture widths and depths. The defaults are ``imagebind_huge``; a smaller config of
    the same architecture (tests, experiments) overrides some of them."""

    model_config = ConfigDict(extra="forbid")

    out_embed_dim: int = Field(1024, ge=1)
    vision_embed_dim: int = Field(1280, ge=1)
    vision_num_blocks: int = Field(32, ge=1)
    vision_num_heads: int = Field(16, ge=1)
    text_embed_dim: int = Field(1024, ge=1)
    text_num_blocks: int = Field(24, ge=1)
    text_num_heads: int = Field(16, ge=1)
    audio_embed_dim: int = Field(768, ge=1)
    audio_num_blocks: int = Field(12, ge=1)
    audio_num_heads: int = Field(12, ge=1)
    # the depth, thermal and IMU towers (built only when their modalities are served)
    depth_embed_dim: int = Field(384, ge=1)
    depth_num_blocks: int = Field(12, ge=1)
    depth_num_heads: int = Field(8, ge=1)
    thermal_embed_dim: int = Field(768, ge=1)
    thermal_num_blocks: int = Field(12, ge=1)
    thermal_num_heads: int = Field(12, ge=1)
    imu_embed_dim: int = Field(512, ge=1)
    imu_num_blocks: int = Field(6, ge=1)
    imu_num_heads: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _heads_divide_widths(self) -> ImageBindSize:
        for tower in ("vision", "text", "audio", "depth", "thermal", "imu"):
            dim, heads = getattr(self, f"{tower}_embed_dim"), getattr(self, f"{tower}_num_heads")
            if dim % heads:
                raise ValueError(f"{tower}_embed_dim={dim} is not divisible by {tower}_num_heads={heads}")
        return self


class ImageBindOptions(BaseModel):
    """Options of the ``imagebind`` encoder."""

    model_config = ConfigDict(extra="forbid")

    #: Meta's ``imagebind_huge.pth`` state dict or a ``.safetensors`` conversion; None = look in
    #: ``$TORCH_HOME/checkpoints``, ``$TORCH_HOME/hub/checkpoints`` and ``./.checkpoints``
    checkpoint: str | None = None
    #: "huge" or the dimensions of a smaller config of the same architecture
    size: Literal["huge"] | ImageBindSize = "huge"
    #: "pooled": 1 unit vector per item; "sequence": the vision tower's output tokens (image/video)
    image_tokens: Literal["pooled", "sequence"] = "pooled"
    #: which modalities to serve (only their towers are built); None = image, audio, video and
    #: text (pooled) or image and video (sequence). Add depth, thermal, imu to serve those too.
    modalities: list[Literal["image", "audio", "video", "text", "depth", "thermal", "imu"]] | None = Field(
        None, min_length=1
    )
    #: frames per video clip fed to the vision tower (2 for the released weights)
    video_frames: int = Field(2, ge=2, multiple_of=2)
    #: clips sampled per video, and spatial crops per clip (the reference: 5 clips x 3 crops)
    video_clips: int = Field(5, ge=1)
    video_crops: Literal[1, 3] = 3
    #: 2-second clips sampled per audio item (the reference: 3)
    audio_clips: int = Field(3, ge=1)
    #: baseline (m) x focal length (px) of the depth camera: disparity = this / depth (the
    #: default is NYU Depth v2's Kinect; the depth tower was trained on disparity)
    depth_disparity_scale: float = Field(KINECT_DISPARITY_SCALE, gt=0)
    #: at most this many distinct 2000-sample (5 s at 400 Hz) IMU windows per item, evenly spaced
    imu_clips: int = Field(3, ge=1)
    #: items per forward pass of a tower (clips of one video count as items)
    batch_size: int = Field(16, ge=1)
    #: torch device; None = "cuda" when available, else "cpu"
    device: str | None = None
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    #: build with random weights instead of loading a checkpoint (shape checks, tests only)
    random_init: bool = False

    @model_validator(mode="after")
    def _sequence_is_vision_only(self) -> ImageBindOptions:
        if self.image_tokens == "sequence" and self.modalities:
            other = sorted(set(self.modalities) - {"image", "video"})
            if other:
                raise ValueError(
                    f"image_tokens='sequence' gives vision-tower tokens, which are not in the space "
                    f"of {', '.join(other)}; use a second, pooled imagebind encoder for {', '.join(other)}"
                )
        return self

    def served_modalities(self) -> tuple[str, ...]:
        """The modalities this encoder serves, in a fixed order."""
        chosen = set(self.modalities or DEFAULT_MODALITIES[self.image_tokens])
        return tuple(m for m in MODALITIES if m in chosen)


def load(options: ImageBindOptions) -> ImageBindEncoder:
    """Build the encoder (imports torch; loads the checkpoint)."""
    from codi2.plugins.encoders.imagebind.encoder import ImageBindEncoder

    return ImageBindEncoder.from_options(options)


@hookimpl
def codi2_register_encoders(register: RegisterCallback) -> None:
    register(
        NAME,
        load=load,
        options=ImageBindOptions,
        description="Meta's ImageBind: image, audio, video, text (and depth, thermal, IMU) in one "
        "1024-d space (local imagebind_huge.pth; pooled vectors or vision-tower tokens)",
    )


@hookimpl
def codi2_register_modalities(register: RegisterCallback) -> None:
    for name, description in MODALITY_DESCRIPTIONS.items():
        register(name, load=lambda options, name=name: _modality_spec(name), description=description)


def _modality_spec(name: str) -> Any:
    from codi2.plugins.encoders.imagebind.modalities import spec

    return spec(name)


def __getattr__(name: str) -> Any:
    # ``from codi2.plugins.encoders.imagebind import ImageBindEncoder`` works, lazily
    if name == "ImageBindEncoder":
        from codi2.plugins.encoders.imagebind.encoder import ImageBindEncoder

        return ImageBindEncoder
    raise AttributeError(name)
