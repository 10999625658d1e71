"""Every CoDi-2 task of the toy world, as a generator of samples with ground truth.

>>> from codi2.toy.tasks import make_samples, TASKS
>>> s = make_samples("image_exemplar", 1, seed=0)[0]
>>> s.prompt      # placeholder form
'Given the transformation between {a} and {b}, apply the same editing to {c}.'
>>> s.expected    # what a correct answer holds (ImageItem / AudioItem, or caption text)
[ImageItem(shape=..., colour=..., size=...)]
>>> s.conversation  # content-part messages, assistant answer included (for training)

A :class:`Sample` holds the user prompt(s) in placeholder form, the input media, the expected
outputs, their rendered ground truth and the training conversation. Answers are short and
fixed per task so that a tiny LLM learns them:

- media answers: ``"Here it is: "`` + the item; two media: ``"Here it is: "`` image
  ``" and its sound: "`` audio;
- text answers: the caption alone (``"a large red circle"``).

Multi-round samples (``multi_round``) have three user turns; earlier assistant images enter
the conversation with ``"target": false`` — as input features, exactly the way
:meth:`Conversation.ask <codi2.core.conversation.Conversation.ask>` records generated media —
and only the last round's image is a generation target. A *training* sample ends after a
random round from the second on (:func:`make_samples`), so every round is learnt as the
target of a chat in the form ``Conversation.ask`` builds; evaluation samples keep all rounds.

**Held-out rule**: ``make_samples(..., split="train")`` never returns a sample whose answer
(media or caption, in any round) is a held-out combination (:data:`codi2.toy.world.HELD_OUT`);
inputs may show them. ``split="eval"`` with ``held_out=True`` returns only held-out samples,
``held_out=False`` only seen ones, ``None`` the natural mix. Prompt templates are listed in
:data:`TASKS` (``<colour>`` marks a world word, ``{a}`` a media placeholder).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from codi2.core.types import Media
from codi2.toy import world as w
from codi2.toy.world import AudioItem, ImageItem, Item

Expected = ImageItem | AudioItem | str

ANSWER = "Here it is: "
ANSWER_SOUND = " and its sound: "


@dataclass(frozen=True)
class TaskInfo:
    """A task: its name, what it does, its prompt templates and what it answers with."""

    name: str
    title: str
    templates: tuple[str, ...]
    answer: str  # "image", "audio", "text", "image+audio" (per round)
    can_hold_out: bool  # whether a sample's answer can be a held-out combination
    exemplar: bool = False  # in-context exemplar task (has a no-examples ablation)


_EXEMPLAR = "Given the transformation between {a} and {b}, apply the same editing to {c}."

TASKS: dict[str, TaskInfo] = {t.name: t for t in (
    TaskInfo("text_to_image", "text -> image", ("Draw a <size> <colour> <shape>.",), "image", True),
    TaskInfo("text_to_audio", "text -> audio",
             ("Play a <waveform> tone at <pitch>.", "Play a <waveform> tone at <pitch> with rain.",
              "Play a <waveform> tone at <pitch> with bells."), "audio", True),
    TaskInfo("image_to_text", "image -> text", ("What is in {a}?",), "text", True),
    TaskInfo("audio_to_text", "audio -> text", ("What is in {a}?",), "text", True),
    TaskInfo("image_edit", "instruction editing, image",
             ("Make {a} <colour>.", "Turn {a} into a <shape>.", "Make {a} <size>."), "image", True),
    TaskInfo("audio_edit", "instruction editing, audio",
             ("Add rain to {a}.", "Add bells to {a}.", "Remove the rain from {a}.",
              "Replace the rain in {a} with bells."), "audio", True),
    TaskInfo("image_exemplar", "exemplar learning, image",
             (_EXEMPLAR,), "image", True, True),
    TaskInfo("audio_exemplar", "exemplar learning, audio",
             ("We overlaid a new sound to {a} and got {b}. Apply this same new sound to {c}.",), "audio", True, True),
    TaskInfo("composition", "composition", ("A {a} in the colour of {b}.",), "image", True),
    TaskInfo("image_to_audio", "cross-modal, image -> audio", ("What does {a} sound like?",), "audio", False),
    TaskInfo("audio_to_image", "cross-modal, audio -> image", ("Draw what {a} looks like.",), "image", True),
    TaskInfo("image_and_sound", "two media in one answer", ("Draw a <colour> <shape> and play its sound.",), "image+audio", True),
    TaskInfo("video_next", "reasoning over a clip",
             ("Given these frames {v}, what comes next? Draw it and play its sound.",), "image+audio", True),
    TaskInfo("multi_round", "multi-round editing",
             ("Draw a <size> <colour> <shape>.", "Make it <colour>.", "Now make it <size>."), "image", True),
    TaskInfo("sound_edit", "audio-conditioned image editing",
             ("Make {a} the colour that {b} sounds like.", "Turn {a} into the shape that {b} sounds like."), "image", True),
    TaskInfo("exemplar_image_to_audio", "cross-modal exemplar, image pair -> sound",
             (_EXEMPLAR,), "audio", True, True),
    TaskInfo("exemplar_audio_to_image", "cross-modal exemplar, sound pair -> image",
             (_EXEMPLAR,), "image", True, True),
    TaskInfo("interleaved", "text, video, audio and image in one turn",
             ("Draw the next frame of {v} in the colour that {a} sounds like and the size of {b}.",), "image", True),
)}  # fmt: skip

# the prompt of the "no in-context examples" baseline of the exemplar tasks
NO_EXAMPLES = {
    "image_exemplar": "Apply the same editing to {c}.",
    "audio_exemplar": "Apply this same new sound to {c}.",
    "exemplar_image_to_audio": "Apply the same editing to {c}.",
    "exemplar_audio_to_image": "Apply the same editing to {c}.",
}


@dataclass
class Sample:
    """One task instance with its ground truth.

    ``prompt`` is the first user turn in placeholder form and ``followups`` the later ones
    (multi-round only); ``media`` fills the placeholders; ``inputs`` are the world items behind
    them. ``expected`` lists what a correct answer holds, in order (world items for media, the
    caption for text answers); ``targets`` are the same rendered (``Media`` or ``str``);
    ``rounds`` says how many expected outputs each user turn answers. ``conversation`` is the
    training conversation in content-part form. ``variant`` names the sub-kind (e.g. "colour").
    """

    task: str
    prompt: str
    media: dict[str, Media]
    expected: list[Expected]
    conversation: list[dict[str, Any]]
    held_out: bool
    followups: list[str] = field(default_factory=list)
    inputs: dict[str, Item] = field(default_factory=dict)
    targets: list[Media | str] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    variant: str = ""

    @property
    def prompts(self) -> list[str]:
        return [self.prompt, *self.followups]

    def without_examples(self) -> tuple[str, dict[str, Media]] | None:
        """The exemplar task's prompt with the in-context examples removed (None for other tasks)."""
        if self.task not in NO_EXAMPLES:
            return None
        return NO_EXAMPLES[self.task], {"c": self.media["c"]}


# --- plans: the items of a sample, chosen before anything is rendered ------------------------


@dataclass
class _Plan:
    rounds: list[tuple[str, list[Expected]]]  # (user prompt, expected outputs of that turn)
    inputs: dict[str, Item] = field(default_factory=dict)
    variant: str = ""

    @property
    def expected(self) -> list[Expected]:
        return [e for _, exp in self.rounds for e in exp]


def _image(rng: random.Random) -> ImageItem:
    return ImageItem(rng.choice(w.SHAPES), rng.choice(list(w.COLOURS)), rng.choice(w.SIZES))


def _audio(rng: random.Random, overlay: str | None = None) -> AudioItem:
    return AudioItem(rng.choice(list(w.PITCHES)), rng.choice(w.WAVEFORMS), overlay or rng.choice(w.OVERLAYS))


def _other(rng: random.Random, values: Any, current: str) -> str:
    return rng.choice([v for v in values if v != current])


def _draw_text(item: ImageItem) -> str:
    return f"Draw a {item.size} {item.colour} {item.shape}."


def _play_text(item: AudioItem) -> str:
    extra = {"none": "", "rain": " with rain", "bell": " with bells"}[item.overlay]
    return f"Play a {item.waveform} tone at {item.pitch}{extra}."


def _plan_text_to_image(rng):
    item = _image(rng)
    return _Plan([(_draw_text(item), [item])])


def _plan_text_to_audio(rng):
    item = _audio(rng)
    return _Plan([(_play_text(item), [item])], variant=item.overlay)


def _plan_image_to_text(rng):
    item = _image(rng)
    return _Plan([("What is in {a}?", [w.caption(item)])], {"a": item})


def _plan_audio_to_text(rng):
    item = _audio(rng)
    return _Plan([("What is in {a}?", [w.caption(item)])], {"a": item}, item.overlay)


def _plan_image_edit(rng):
    a = _image(rng)
    variant = rng.choice(("colour", "shape", "size"))
    if variant == "colour":
        target = a.with_(colour=_other(rng, w.COLOURS, a.colour))
        prompt = f"Make {{a}} {target.colour}."
    elif variant == "shape":
        target = a.with_(shape=_other(rng, w.SHAPES, a.shape))
        prompt = f"Turn {{a}} into a {target.shape}."
    else:
        target = a.with_(size=_other(rng, w.SIZES, a.size))
        prompt = f"Make {{a}} {target.size}."
    return _Plan([(prompt, [target])], {"a": a}, variant)


_AUDIO_EDITS = {  # variant: (prompt, input overlay, output overlay)
    "add_rain": ("Add rain to {a}.", "none", "rain"),
    "add_bells": ("Add bells to {a}.", "none", "bell"),
    "remove_rain": ("Remove the rain from {a}.", "rain", "none"),
    "replace_rain": ("Replace the rain in {a} with bells.", "rain", "bell"),
}


def _plan_audio_edit(rng):
    variant = rng.choice(sorted(_AUDIO_EDITS))
    prompt, before, after = _AUDIO_EDITS[variant]
    a = _audio(rng, before)
    return _Plan([(prompt, [a.with_(overlay=after)])], {"a": a}, variant)


def _plan_image_exemplar(rng):
    attribute = rng.choice(("colour", "shape", "size"))
    values = {"colour": list(w.COLOURS), "shape": list(w.SHAPES), "size": list(w.SIZES)}[attribute]
    a = _image(rng)
    new = _other(rng, values, getattr(a, attribute))
    b = a.with_(**{attribute: new})
    while True:  # c must change under the edit, and its answer must not be the exemplar's b
        c = _image(rng)
        if getattr(c, attribute) != new and c.with_(**{attribute: new}) != b:
            break
    return _Plan([(_EXEMPLAR, [c.with_(**{attribute: new})])], {"a": a, "b": b, "c": c}, attribute)


def _plan_audio_exemplar(rng):
    overlay = rng.choice(("rain", "bell"))
    a = _audio(rng, "none")
    while True:
        c = _audio(rng, "none")
        if c != a:
            break
    prompt = "We overlaid a new sound to {a} and got {b}. Apply this same new sound to {c}."
    return _Plan([(prompt, [c.with_(overlay=overlay)])], {"a": a, "b": a.with_(overlay=overlay), "c": c}, overlay)


def _plan_composition(rng):
    a = _image(rng)
    while True:  # b's colour is new to a, and b is not itself the answer (no input to copy)
        b = _image(rng).with_(colour=_other(rng, w.COLOURS, a.colour))
        if (b.shape, b.size) != (a.shape, a.size):
            break
    return _Plan([("A {a} in the colour of {b}.", [a.with_(colour=b.colour)])], {"a": a, "b": b})


def _plan_image_to_audio(rng):
    a = _image(rng)
    return _Plan([("What does {a} sound like?", [w.sound_of(a)])], {"a": a})


def _plan_audio_to_image(rng):
    a = _audio(rng)
    return _Plan([("Draw what {a} looks like.", [w.look_of(a)])], {"a": a})


def _plan_image_and_sound(rng):
    item = ImageItem(rng.choice(w.SHAPES), rng.choice(list(w.COLOURS)), w.LOOK_SIZE)
    return _Plan([(f"Draw a {item.colour} {item.shape} and play its sound.", [item, w.sound_of(item)])])


def _plan_video_next(rng):
    rule = rng.choice(w.RULES)
    clip = w.video_sequence(_image(rng), rule, 4)
    nxt = clip.following
    prompt = "Given these frames {v}, what comes next? Draw it and play its sound."
    return _Plan([(prompt, [nxt, w.sound_of(nxt)])], {"v": clip}, rule)


def _plan_multi_round(rng):
    first = _image(rng)
    second = first.with_(colour=_other(rng, w.COLOURS, first.colour))
    third = second.with_(size=_other(rng, w.SIZES, second.size))
    return _Plan([
        (_draw_text(first), [first]),
        (f"Make it {second.colour}.", [second]),
        (f"Now make it {third.size}.", [third]),
    ])


# the attributes the cross-modal rule shares: an image edit of one is a sound edit of the other
_SHARED = {"colour": "pitch", "shape": "waveform"}
_IMAGE_VALUE = {"colour": w.COLOUR_OF_PITCH, "shape": w.SHAPE_OF_WAVEFORM}  # sound value -> image value
_SOUND_VALUE = {"colour": w.PITCH_OF_COLOUR, "shape": w.WAVEFORM_OF_SHAPE}  # image value -> sound value


def _plan_sound_edit(rng):
    """Audio-conditioned image editing: the sound names a colour (its pitch) or a shape (its waveform)."""
    attribute = rng.choice(("colour", "shape"))
    a = _image(rng)
    b = _audio(rng)
    while _IMAGE_VALUE[attribute][getattr(b, _SHARED[attribute])] == getattr(a, attribute):
        b = _audio(rng)  # the edit must change the image
    new = _IMAGE_VALUE[attribute][getattr(b, _SHARED[attribute])]
    prompt = TASKS["sound_edit"].templates[0 if attribute == "colour" else 1]
    return _Plan([(prompt, [a.with_(**{attribute: new})])], {"a": a, "b": b}, attribute)


def _plan_exemplar_image_to_audio(rng):
    """An image pair shows a colour or shape edit; the sound gets the same edit through the rule
    (colour -> pitch, shape -> waveform), its other attributes (overlay included) kept."""
    attribute = rng.choice(("colour", "shape"))
    values = list(w.COLOURS) if attribute == "colour" else list(w.SHAPES)
    a = _image(rng)
    b = a.with_(**{attribute: _other(rng, values, getattr(a, attribute))})
    sound_value = _SOUND_VALUE[attribute][getattr(b, attribute)]
    c = _audio(rng)
    while getattr(c, _SHARED[attribute]) == sound_value:
        c = _audio(rng)
    return _Plan([(_EXEMPLAR, [c.with_(**{_SHARED[attribute]: sound_value})])], {"a": a, "b": b, "c": c}, attribute)


def _plan_exemplar_audio_to_image(rng):
    """A sound pair shows a pitch or waveform edit; the image gets the same edit through the rule."""
    attribute = rng.choice(("colour", "shape"))
    sound = _SHARED[attribute]
    values = list(w.PITCHES) if sound == "pitch" else list(w.WAVEFORMS)
    a = _audio(rng, "none")
    b = a.with_(**{sound: _other(rng, values, getattr(a, sound))})
    image_value = _IMAGE_VALUE[attribute][getattr(b, sound)]
    c = _image(rng)
    while getattr(c, attribute) == image_value:
        c = _image(rng)
    return _Plan([(_EXEMPLAR, [c.with_(**{attribute: image_value})])], {"a": a, "b": b, "c": c}, attribute)


def _plan_interleaved(rng):
    """Every modality decides one attribute: the clip (shape rule) the shape, the sound's pitch
    the colour, the image the size. The answer differs from every frame (another colour) and
    from the image ``b``."""
    clip = w.video_sequence(_image(rng), "shape", 4)
    nxt = clip.following
    a = _audio(rng)
    while w.COLOUR_OF_PITCH[a.pitch] == nxt.colour:
        a = _audio(rng)
    while True:
        b = _image(rng)
        answer = nxt.with_(colour=w.COLOUR_OF_PITCH[a.pitch], size=b.size)
        if b != answer:
            break
    return _Plan([(TASKS["interleaved"].templates[0], [answer])], {"v": clip, "a": a, "b": b})


_PLANNERS: dict[str, Callable[[random.Random], _Plan]] = {name: globals()[f"_plan_{name}"] for name in TASKS}


# --- building samples ------------------------------------------------------------------------


def expected_held_out(expected: Expected) -> bool:
    """Whether one expected output (item or caption) is a held-out combination."""
    return w.is_held_out(w.parse_caption(expected) if isinstance(expected, str) else expected)


def _user_content(prompt: str, media: dict[str, Media]) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = []
    pos = 0
    for m in re.finditer(r"\{(\w+)\}", prompt):
        if m.start() > pos:
            content.append({"type": "text", "text": prompt[pos : m.start()]})
        item = media[m.group(1)]
        content.append({"type": item.modality, "data": item, "name": m.group(1)})
        pos = m.end()
    if pos < len(prompt):
        content.append({"type": "text", "text": prompt[pos:]})
    return content


def answer_content(targets: list[Media | str], *, target: bool = True) -> list[dict[str, Any]]:
    """The fixed answer of a turn: the caption, ``Here it is: <m>`` or ``Here it is: <m> and its sound: <m>``."""
    if len(targets) == 1 and isinstance(targets[0], str):
        return [{"type": "text", "text": targets[0]}]
    content: list[dict[str, Any]] = []
    for k, item in enumerate(targets):
        content.append({"type": "text", "text": ANSWER if k == 0 else ANSWER_SOUND})
        content.append({"type": item.modality, "data": item, "name": f"output{k}", **({} if target else {"target": False})})
    return content


def _render(plan: _Plan, task: str, rng: random.Random) -> Sample:
    def media_of(item: Item | str, name: str) -> Media | str:
        return item if isinstance(item, str) else w.to_media(item, name=name, seed=rng.randrange(2**31))

    media = {name: media_of(item, name) for name, item in plan.inputs.items()}
    conversation: list[dict[str, Any]] = []
    targets: list[Media | str] = []
    for k, (prompt, expected) in enumerate(plan.rounds):
        rendered = [media_of(e, f"target{len(targets) + i}") for i, e in enumerate(expected)]
        targets.extend(rendered)
        last = k == len(plan.rounds) - 1
        conversation.append({"role": "user", "content": _user_content(prompt, media)})
        conversation.append({"role": "assistant", "content": answer_content(rendered, target=last)})
    expected = plan.expected
    return Sample(
        task=task, prompt=plan.rounds[0][0], media=media, expected=expected, conversation=conversation,
        held_out=any(expected_held_out(e) for e in expected), followups=[p for p, _ in plan.rounds[1:]],
        inputs=dict(plan.inputs), targets=targets, rounds=[len(e) for _, e in plan.rounds], variant=plan.variant,
    )


def make_samples(task: str, n: int, seed: int = 0, split: str = "train", held_out: bool | None = None) -> list[Sample]:
    """``n`` samples of ``task``, deterministic in ``seed``.

    ``split="train"`` never yields a held-out answer, and ends a conversation of more than two
    rounds after a random round from the second on. ``split="eval"``: ``held_out=True`` only
    held-out samples (``ValueError`` for a task whose answers cannot be held out),
    ``False`` only seen ones, ``None`` whatever comes.
    """
    if task not in TASKS:
        raise ValueError(f"unknown toy task {task!r}; tasks: {', '.join(TASKS)}")
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if split == "train":
        if held_out:
            raise ValueError("split='train' never holds held-out combinations; use split='eval'")
        held_out = False
    if held_out and not TASKS[task].can_hold_out:
        raise ValueError(f"task {task!r} has no held-out answers (its outputs never hit {w.HELD_OUT})")
    rng = random.Random(f"{task}/{split}/{seed}")
    plan_of = _PLANNERS[task]
    samples = []
    while len(samples) < n:
        for _ in range(100_000):  # held-out audio answers are rare (about 1 in 100 plans)
            plan = plan_of(rng)
            if held_out is None or any(expected_held_out(e) for e in plan.expected) == held_out:
                break
        else:  # pragma: no cover - the planners make every kind reachable
            raise RuntimeError(f"task {task!r}: no {'held-out' if held_out else 'seen'} sample found")
        if split == "train" and len(plan.rounds) > 2:
            # only the last round of a conversation is a target: end it after a random round, or
            # the LLM would learn every earlier round as history only (measured: with all three
            # rounds always, "Make it <colour>." on a small item came back large in 9 of 60 cases)
            plan.rounds = plan.rounds[: rng.randint(2, len(plan.rounds))]
        samples.append(_render(plan, task, rng))
    return samples


def vocabulary() -> list[str]:
    """Every word and punctuation mark that prompts and answers of the toy tasks use (sorted)."""
    texts = [t for info in TASKS.values() for t in info.templates]
    texts += list(NO_EXAMPLES.values()) + [ANSWER, ANSWER_SOUND, _play_text(AudioItem("C4", "sine", "rain"))]
    texts += [w.caption(i) for i in w.all_image_items() + w.all_audio_items()]
    texts += [" ".join(w.SHAPES + w.SIZES + w.WAVEFORMS + tuple(w.COLOURS) + tuple(w.PITCHES))]
    words: set[str] = set()
    for text in texts:
        words.update(re.findall(r"\w+|[^\w\s]", re.sub(r"<\w+>|\{\w+\}", " ", text)))
    return sorted(words)


__all__ = ["ANSWER", "ANSWER_SOUND", "NO_EXAMPLES", "TASKS", "Sample", "TaskInfo", "answer_content", "expected_held_out", "make_samples", "vocabulary"]
